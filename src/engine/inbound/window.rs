//! The window an inbound run reads: `[watermark − lookback, run_start − settle)` in whole
//! seconds, or everything (the first run, `--full-resync`, `incremental: off`, mirror).
//!
//! Whole seconds because Salesforce compares datetimes without their milliseconds; the
//! lower bound is rounded down and the upper bound too, so a second is never split between
//! two windows (a record stamped within the second at the upper bound is read next time).

use crate::plan::InboundRead;
use crate::state::Watermark;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// What one run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `cursor >= from`; `None`: no lower bound.
    pub from: Option<DateTime<Utc>>,
    /// `cursor < to`; `None` when the read has no cursor (`incremental: off`).
    pub to: Option<DateTime<Utc>>,
}

fn second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

impl Window {
    /// The window of a run started at `run_start`, after `last` (the stored watermark),
    /// unless `full` (a full resync, or a mirror, which must see every record).
    pub fn of(read: &InboundRead, last: Option<&Watermark>, run_start: DateTime<Utc>, full: bool) -> Window {
        if read.cursor.is_none() {
            return Window { from: None, to: None };
        }
        let settle = TimeDelta::from_std(read.settle).unwrap_or(TimeDelta::zero());
        let lookback = TimeDelta::from_std(read.lookback).unwrap_or(TimeDelta::zero());
        let to = second(run_start - settle);
        let from = match last {
            Some(w) if !full => Some(second(w.watermark - lookback).min(to)),
            _ => None,
        };
        Window { from, to: Some(to) }
    }

    /// `[from, to)` as a report shows it.
    pub fn describe(&self) -> String {
        let t = |d: &DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match (self.from, self.to) {
            (_, None) => "every record (no cursor)".to_string(),
            (None, Some(to)) => format!("[start, {})", t(&to)),
            (Some(from), Some(to)) => format!("[{}, {})", t(&from), t(&to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ReadApi;
    use std::time::Duration;

    fn read(cursor: Option<&str>) -> InboundRead {
        InboundRead {
            cursor: cursor.map(str::to_string),
            cursor_defaulted: false,
            lookback: Duration::from_secs(600),
            settle: Duration::from_secs(5),
            api: ReadApi::Auto,
            bulk_threshold: 10_000,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_are_whole_seconds_from_the_watermark_less_the_lookback() {
        let start = at("2026-12-03T04:00:00.750Z");
        let first = Window::of(&read(Some("SystemModstamp")), None, start, false);
        assert_eq!(
            first,
            Window {
                from: None,
                to: Some(at("2026-12-03T03:59:55Z"))
            }
        );
        let w = Watermark {
            watermark: at("2026-12-03T03:59:55Z"),
            from: None,
            to: at("2026-12-03T03:59:55Z"),
            newest: None,
            run_id: 1,
        };
        let next = Window::of(
            &read(Some("SystemModstamp")),
            Some(&w),
            at("2026-12-03T04:10:00.2Z"),
            false,
        );
        assert_eq!(next.from, Some(at("2026-12-03T03:49:55Z")));
        assert_eq!(next.to, Some(at("2026-12-03T04:09:55Z")));
        assert_eq!(next.describe(), "[2026-12-03T03:49:55Z, 2026-12-03T04:09:55Z)");
        // A full resync ignores the watermark; no cursor reads everything.
        assert_eq!(
            Window::of(&read(Some("SystemModstamp")), Some(&w), start, true).from,
            None
        );
        assert_eq!(
            Window::of(&read(None), Some(&w), start, false),
            Window { from: None, to: None }
        );
    }
}

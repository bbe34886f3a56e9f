//! When a model runs next: schedule slots, jitter, the overdue run at start-up and the
//! backoff after a failed run.
//!
//! Everything here is a pure function of a given "now" and a random fraction `u` in
//! `[0, 1)`, so the tests choose both; the scheduler ([`super::scheduler`]) passes the wall
//! clock and `rand`. Slots come from [`Schedule::next_after`] (croner, DST-correct, in the
//! model's timezone); this module only decides which slot and how far after it.

use crate::schedule::Schedule;
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// Jitter is at most this fraction of the gap between two slots…
pub const JITTER_RATIO: f64 = 0.1;
/// …and at most this long, so hourly models do not all start at :00 yet none starts late.
pub const MAX_JITTER: Duration = Duration::from_secs(60);
/// A model overdue at start-up starts within this delay (spread so that many overdue
/// models do not all start in the same instant).
pub const OVERDUE_SPREAD: Duration = Duration::from_secs(5);
/// The first retry of a failed run waits this long; each further failure doubles it…
pub const RETRY_BASE: Duration = Duration::from_secs(10);
/// …up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// Why a model fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireKind {
    /// Its schedule's slot.
    Slot,
    /// A slot passed while no daemon ran it: it runs once, soon.
    Overdue,
    /// A retry of a failed run, before the next slot.
    Retry { attempt: u32 },
}

impl FireKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FireKind::Slot => "schedule",
            FireKind::Overdue => "overdue",
            FireKind::Retry { .. } => "retry",
        }
    }
}

/// A planned start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    /// The schedule's slot this start belongs to (for a retry: the failed run's end).
    pub slot: DateTime<Utc>,
    /// When to start: the slot plus jitter, or the retry time.
    pub at: DateTime<Utc>,
    pub kind: FireKind,
}

/// The gap between `slot` and the slot after it (an hour for `hourly`, 23 or 25 hours for
/// `daily` across a DST change).
pub fn period(schedule: &Schedule, slot: DateTime<Utc>) -> Option<Duration> {
    let next = schedule.next_after(slot)?.with_timezone(&Utc);
    (next - slot).to_std().ok()
}

/// The most jitter a start at `slot` gets: 10% of the period, at most a minute.
pub fn max_jitter(schedule: &Schedule, slot: DateTime<Utc>) -> Duration {
    period(schedule, slot)
        .map(|p| p.mul_f64(JITTER_RATIO))
        .unwrap_or(Duration::ZERO)
        .min(MAX_JITTER)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn fraction(u: f64) -> f64 {
    if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The next start strictly after `after`: the next slot plus `u` × its maximum jitter.
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>, u: f64) -> Option<Fire> {
    let slot = schedule.next_after(after)?.with_timezone(&Utc);
    Some(Fire {
        slot,
        at: add(slot, max_jitter(schedule, slot).mul_f64(fraction(u))),
        kind: FireKind::Slot,
    })
}

/// The first start of a model the daemon just loaded (at start-up, or a model file added
/// or rescheduled while it runs), given when its last recorded run started. If a slot
/// passed since then, the model is overdue and runs once, within [`OVERDUE_SPREAD`]; the
/// slots it missed are not replayed. A model never run waits for its first slot.
pub fn first_fire(
    schedule: &Schedule,
    last_started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    u: f64,
) -> Option<Fire> {
    if let Some(last) = last_started {
        if let Some(slot) = schedule.next_after(last).map(|s| s.with_timezone(&Utc)) {
            if slot <= now {
                let spread = max_jitter(schedule, slot).min(OVERDUE_SPREAD);
                return Some(Fire {
                    slot,
                    at: add(now, spread.mul_f64(fraction(u))),
                    kind: FireKind::Overdue,
                });
            }
        }
    }
    next_fire(schedule, now, u)
}

/// How long to wait before retry `attempt` (1 for the first failure): [`RETRY_BASE`]
/// doubled per further failure, at most [`RETRY_MAX`], then between 80% and 100% of that
/// by `u` so that models failing together do not retry together.
pub fn backoff(attempt: u32, u: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let d = RETRY_BASE.saturating_mul(1 << doublings).min(RETRY_MAX);
    d.mul_f64(0.8 + 0.2 * fraction(u))
}

/// The start after a run that ended at `now`. `failures` counts the consecutive failed
/// runs up to this one (0: it did not fail). A failed run is retried after [`backoff`] if
/// that comes before the next slot; otherwise, and after any other run, the next slot
/// after `now` (a run that outlasted its period skips the slots it overlapped).
pub fn after_run(schedule: &Schedule, now: DateTime<Utc>, failures: u32, u: f64) -> Option<Fire> {
    let next = next_fire(schedule, now, u)?;
    if failures == 0 {
        return Some(next);
    }
    let retry = add(now, backoff(failures, u));
    if retry < next.slot {
        return Some(Fire {
            slot: now,
            at: retry,
            kind: FireKind::Retry { attempt: failures },
        });
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{parse_cron, parse_interval, parse_timezone};

    fn sched(interval: Option<&str>, cron: Option<&str>, tz: &str) -> Schedule {
        let kind = match (interval, cron) {
            (Some(i), _) => parse_interval(i).unwrap(),
            (None, Some(c)) => parse_cron(c).unwrap(),
            _ => unreachable!(),
        };
        Schedule {
            kind,
            tz: parse_timezone(tz).unwrap(),
            written: String::new(),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn jitter_is_at_most_a_tenth_of_the_period_and_at_most_a_minute() {
        let now = utc("2026-05-04T10:07:00Z");
        let fifteen = sched(Some("15m"), None, "UTC");
        assert_eq!(
            max_jitter(&fifteen, utc("2026-05-04T10:15:00Z")),
            Duration::from_secs(60)
        );
        let ten_s = sched(Some("10s"), None, "UTC");
        assert_eq!(max_jitter(&ten_s, utc("2026-05-04T10:07:10Z")), Duration::from_secs(1));
        let five_m = sched(Some("5m"), None, "UTC");
        assert_eq!(
            max_jitter(&five_m, utc("2026-05-04T10:10:00Z")),
            Duration::from_secs(30)
        );

        let hourly = sched(Some("hourly"), None, "UTC");
        let earliest = next_fire(&hourly, now, 0.0).unwrap();
        assert_eq!(earliest.slot, utc("2026-05-04T11:00:00Z"));
        assert_eq!(earliest.at, earliest.slot);
        let latest = next_fire(&hourly, now, 0.999_999).unwrap();
        assert!(
            latest.at > latest.slot && latest.at <= utc("2026-05-04T11:01:00Z"),
            "{latest:?}"
        );
        let mid = next_fire(&hourly, now, 0.5).unwrap();
        assert_eq!(mid.at, utc("2026-05-04T11:00:30Z"));
        // Out-of-range fractions are clamped, never earlier than the slot.
        assert_eq!(next_fire(&hourly, now, -3.0).unwrap().at, earliest.slot);
        assert_eq!(next_fire(&hourly, now, f64::NAN).unwrap().at, earliest.slot);
    }

    #[test]
    fn an_overdue_model_runs_once_soon_and_a_model_on_time_waits_for_its_slot() {
        let hourly = sched(Some("hourly"), None, "UTC");
        let now = utc("2026-05-04T10:07:00Z");
        // Last run three hours ago: three slots missed, one run within the spread.
        let f = first_fire(&hourly, Some(utc("2026-05-04T07:00:12Z")), now, 0.5).unwrap();
        assert_eq!(f.kind, FireKind::Overdue);
        assert_eq!(f.slot, utc("2026-05-04T08:00:00Z"));
        assert_eq!(f.at, now + TimeDelta::milliseconds(2500));
        // After that run, the next slot, not the missed ones.
        let after = after_run(&hourly, f.at + TimeDelta::seconds(3), 0, 0.0).unwrap();
        assert_eq!((after.kind, after.at), (FireKind::Slot, utc("2026-05-04T11:00:00Z")));
        // Last run in the current slot: not overdue.
        let f = first_fire(&hourly, Some(utc("2026-05-04T10:00:05Z")), now, 0.0).unwrap();
        assert_eq!((f.kind, f.at), (FireKind::Slot, utc("2026-05-04T11:00:00Z")));
        // Never run: the first slot.
        let f = first_fire(&hourly, None, now, 0.0).unwrap();
        assert_eq!((f.kind, f.at), (FireKind::Slot, utc("2026-05-04T11:00:00Z")));
        // A short interval's spread is its own jitter.
        let two_s = sched(Some("2s"), None, "UTC");
        let f = first_fire(&two_s, Some(utc("2026-05-04T10:00:00Z")), now, 0.999).unwrap();
        assert_eq!(f.kind, FireKind::Overdue);
        assert!(f.at - now < TimeDelta::milliseconds(200), "{f:?}");
    }

    #[test]
    fn cron_in_berlin_follows_the_dst_changes_with_jitter_capped_at_a_minute() {
        // 02:30 every day: on 2027-03-28 Berlin skips 02:00-03:00 (UTC+1 → UTC+2).
        let s = sched(None, Some("30 2 * * *"), "Europe/Berlin");
        let f = next_fire(&s, utc("2027-03-27T12:00:00Z"), 0.0).unwrap();
        assert_eq!(f.slot, utc("2027-03-28T01:00:00Z"), "03:00 CEST, right after the gap");
        let g = after_run(&s, f.at + TimeDelta::seconds(40), 0, 0.0).unwrap();
        assert_eq!(g.slot, utc("2027-03-29T00:30:00Z"), "02:30 CEST");
        let latest = next_fire(&s, utc("2027-03-27T12:00:00Z"), 0.999_999).unwrap();
        assert!(latest.at - latest.slot <= TimeDelta::seconds(60));
        // 09:00 on weekdays across the end of summer time (2027-10-31, UTC+2 → UTC+1).
        let s = sched(None, Some("0 9 * * MON-FRI"), "Europe/Berlin");
        let fires: Vec<DateTime<Utc>> = {
            let mut t = utc("2027-10-28T12:00:00Z");
            let mut out = Vec::new();
            for _ in 0..3 {
                let f = next_fire(&s, t, 0.0).unwrap();
                out.push(f.at);
                t = f.at;
            }
            out
        };
        assert_eq!(
            fires,
            [
                utc("2027-10-29T07:00:00Z"), // Friday 09:00 CEST
                utc("2027-11-01T08:00:00Z"), // Monday 09:00 CET
                utc("2027-11-02T08:00:00Z"),
            ]
        );
        // Hourly in Berlin on the night the clocks go back: the 25-hour day has 25 slots,
        // an hour apart in UTC.
        let s = sched(Some("hourly"), None, "Europe/Berlin");
        let slots = s.upcoming(utc("2027-10-30T22:00:00Z"), 25);
        assert_eq!(slots.last().unwrap().with_timezone(&Utc), utc("2027-10-31T23:00:00Z"));
        assert_eq!(period(&s, utc("2027-10-31T00:00:00Z")), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn a_failed_run_is_retried_with_backoff_before_its_next_slot() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(40));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(32));
        assert_eq!(backoff(30, 1.0), RETRY_MAX);
        let hourly = sched(Some("hourly"), None, "UTC");
        let ended = utc("2026-05-04T10:00:20Z");
        let mut at = ended;
        let mut retries = Vec::new();
        for attempt in 1..=20 {
            let f = after_run(&hourly, at, attempt, 1.0).unwrap();
            if f.kind == FireKind::Slot {
                assert_eq!(f.slot, utc("2026-05-04T11:00:00Z"));
                break;
            }
            assert_eq!(f.kind, FireKind::Retry { attempt });
            retries.push((f.at - at).num_seconds());
            at = f.at + TimeDelta::seconds(1); // each retry fails after a second
        }
        assert_eq!(retries, [10, 20, 40, 80, 160, 320, 600, 600, 600, 600]);
        // A success resets: back to the slot.
        let f = after_run(&hourly, at, 0, 0.0).unwrap();
        assert_eq!(f.kind, FireKind::Slot);
        // A retry that would come after the next slot is the next slot.
        let ten_s = sched(Some("10s"), None, "UTC");
        let f = after_run(&ten_s, utc("2026-05-04T10:00:01Z"), 1, 1.0).unwrap();
        assert_eq!((f.kind, f.slot), (FireKind::Slot, utc("2026-05-04T10:00:10Z")));
    }

    #[test]
    fn a_run_that_outlasts_its_interval_skips_the_slots_it_overlapped() {
        let one_s = sched(Some("1s"), None, "UTC");
        let started = next_fire(&one_s, utc("2026-05-04T10:00:00.500Z"), 0.0).unwrap();
        assert_eq!(started.at, utc("2026-05-04T10:00:01Z"));
        // It ran 3.4 s: the next start is the slot after its end, once.
        let next = after_run(&one_s, utc("2026-05-04T10:00:04.400Z"), 0, 0.0).unwrap();
        assert_eq!(next.at, utc("2026-05-04T10:00:05Z"));
    }
}

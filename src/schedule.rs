//! Schedules: when a model runs.
//!
//! `interval: hourly | daily | weekly` and `cron:` are wall-clock schedules in the model's
//! timezone, computed by `croner` (5-field crontab with 0–6 = Sunday–Saturday, names,
//! ranges, `L`; a time that falls in a DST gap fires at the first valid instant after it).
//! `<n>s`, `<n>m` and `<n>h` are fixed periods aligned on the Unix epoch, so `15m` fires
//! at :00, :15, :30 and :45; `<n>d` fires at local midnight every n days. The `cron`
//! crate named by the design card is not used: 0.17 rejects 5-field crontab, numbers
//! weekdays from 1 = Sunday and skips runs in DST gaps.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

/// A checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub tz: Tz,
    /// As written: `hourly`, `15m`, `0 6 * * *`.
    pub written: String,
}

#[derive(Debug, Clone)]
pub enum ScheduleKind {
    /// A wall-clock pattern (also what `hourly`, `daily` and `weekly` mean).
    Cron { expr: String, cron: Box<croner::Cron> },
    /// Every `secs` seconds, aligned on the Unix epoch.
    Every { secs: u64 },
    /// Local midnight every `days` days (days counted from 1970-01-01).
    EveryDays { days: u32 },
}

/// Why an interval, cron expression or timezone is rejected: message and help line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub message: String,
    pub help: String,
}

/// Parses `interval:`.
pub fn parse_interval(text: &str) -> Result<ScheduleKind, ScheduleError> {
    let named = match text {
        "hourly" => Some("0 * * * *"),
        "daily" => Some("0 0 * * *"),
        "weekly" => Some("0 0 * * MON"),
        _ => None,
    };
    if let Some(expr) = named {
        return parse_cron(expr);
    }
    let help = "write `hourly`, `daily`, `weekly` or a whole number with `s`, `m`, `h` or `d`, e.g. `15m`".to_string();
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = match num.parse() {
        Ok(n) => n,
        Err(_) => {
            let suggestion = match t.to_ascii_lowercase().as_str() {
                "hour" | "every hour" | "1 hour" | "@hourly" => Some("hourly"),
                "day" | "every day" | "1 day" | "@daily" => Some("daily"),
                "week" | "every week" | "1 week" | "@weekly" => Some("weekly"),
                _ => None,
            };
            return Err(ScheduleError {
                message: format!("`{text}` is not an interval"),
                help: match suggestion {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => help,
                },
            });
        }
    };
    if n == 0 {
        return Err(ScheduleError {
            message: format!("interval `{text}` is zero"),
            help,
        });
    }
    let secs = match unit.trim() {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => {
            return u32::try_from(n)
                .map(|days| ScheduleKind::EveryDays { days })
                .map_err(|_| ScheduleError {
                    message: format!("interval `{text}` is too long"),
                    help,
                })
        }
        other => {
            return Err(ScheduleError {
                message: format!("`{other}` is not an interval unit in `{text}`"),
                help,
            })
        }
    };
    Ok(ScheduleKind::Every { secs })
}

/// Parses a span of time written like a fixed interval, `<n>s`, `<n>m`, `<n>h` or `<n>d`
/// (an inbound source's `lookback` and `settle`, `what` names the key). Zero is allowed:
/// `settle: 0s` reads up to the run's start. At most 30 days, which no sane window exceeds.
pub fn parse_duration(text: &str, what: &str) -> Result<std::time::Duration, ScheduleError> {
    let help = format!("write `{what}` as a whole number with `s`, `m`, `h` or `d`, e.g. `10m` or `30s`");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = |message: String| ScheduleError {
        message,
        help: help.clone(),
    };
    let n: u64 = num.parse().map_err(|_| bad(format!("`{text}` is not a duration")))?;
    let unit_secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(bad(format!("`{text}` has no unit"))),
        other => return Err(bad(format!("`{other}` is not a duration unit in `{text}`"))),
    };
    let secs = n.saturating_mul(unit_secs);
    if secs > 30 * 86_400 {
        return Err(ScheduleError {
            message: format!("`{what}` `{text}` is longer than 30 days"),
            help: "a window is a few seconds to a few hours; use `incremental: off` to read everything".into(),
        });
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Parses `cron:`: 5 fields (minute hour day-of-month month day-of-week), or 6 with
/// seconds first.
pub fn parse_cron(expr: &str) -> Result<ScheduleKind, ScheduleError> {
    let help = "cron has 5 fields: minute hour day-of-month month day-of-week, e.g. `0 6 * * MON-FRI`".to_string();
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) && !expr.trim_start().starts_with('@') {
        return Err(ScheduleError {
            message: format!(
                "cron expression `{expr}` has {fields} field{}, expected 5",
                if fields == 1 { "" } else { "s" }
            ),
            help,
        });
    }
    if let Some(problem) = field_problem(expr) {
        return Err(ScheduleError {
            message: format!("invalid cron expression `{expr}`: {problem}"),
            help,
        });
    }
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build();
    match parser.parse(expr) {
        Ok(cron) => {
            // A pattern that never fires (e.g. 30 February) is as wrong as a bad one.
            let probe = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
            if cron.find_next_occurrence(&probe, false).is_err() {
                return Err(ScheduleError {
                    message: format!("cron expression `{expr}` never fires"),
                    help,
                });
            }
            Ok(ScheduleKind::Cron {
                expr: expr.to_string(),
                cron: Box::new(cron),
            })
        }
        Err(e) => Err(ScheduleError {
            message: format!("invalid cron expression `{expr}`: {}", describe_cron_error(&e)),
            help,
        }),
    }
}

/// Names each field and checks its numbers against the field's range, so that the
/// message says which field is wrong ("hour 25 is outside 0-23").
fn field_problem(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let specs: &[(&str, u32, u32)] = match fields.len() {
        5 => &[
            ("minute", 0, 59),
            ("hour", 0, 23),
            ("day-of-month", 1, 31),
            ("month", 1, 12),
            ("day-of-week", 0, 7),
        ],
        6 => &[
            ("second", 0, 59),
            ("minute", 0, 59),
            ("hour", 0, 23),
            ("day-of-month", 1, 31),
            ("month", 1, 12),
            ("day-of-week", 0, 7),
        ],
        _ => return None,
    };
    for (field, (name, lo, hi)) in fields.iter().zip(specs) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(0) | Err(_) => {
                        return Some(format!("{name} step `{step}` must be a whole number of at least 1"))
                    }
                    Ok(_) => {}
                }
            }
            for n in range.split('-') {
                // Names (JAN, MON), `*`, `?`, `L` and `#` forms are left to croner.
                if let Ok(v) = n.parse::<u32>() {
                    if v < *lo || v > *hi {
                        return Some(format!("{name} {v} is outside {lo}-{hi}"));
                    }
                }
            }
        }
    }
    None
}

fn describe_cron_error(e: &croner::errors::CronError) -> String {
    crate::diagnostics::lowercase_first(e.to_string().trim_end_matches('.'))
}

/// Parses `timezone:` (IANA names, e.g. `Europe/Berlin`; `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
        let exact_ci = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .map(|t| t.name());
        let close = exact_ci.or_else(|| crate::diagnostics::close_matches(name, names).first().copied());
        ScheduleError {
            message: format!("unknown timezone `{name}`"),
            help: match close {
                Some(c) => format!("did you mean `{c}`? timezones are IANA names like `Europe/Berlin` or `UTC`"),
                None => "timezones are IANA names like `Europe/Berlin`, `America/New_York` or `UTC`".into(),
            },
        }
    })
}

impl Schedule {
    /// The first run time strictly after `after`, in the schedule's timezone.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Tz>> {
        let local = after.with_timezone(&self.tz);
        match &self.kind {
            ScheduleKind::Cron { cron, .. } => cron.find_next_occurrence(&local, false).ok(),
            ScheduleKind::Every { secs } => {
                let secs = i64::try_from(*secs).ok()?;
                let t = after.timestamp();
                let next = (t.div_euclid(secs) + 1) * secs;
                Some(Utc.timestamp_opt(next, 0).single()?.with_timezone(&self.tz))
            }
            ScheduleKind::EveryDays { days } => {
                let days = i64::from(*days);
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
                let mut date = local.date_naive();
                for _ in 0..=days * 2 + 2 {
                    let n = (date - epoch).num_days();
                    if n.rem_euclid(days) == 0 {
                        if let Some(t) = local_midnight(&self.tz, date) {
                            if t.with_timezone(&Utc) > after {
                                return Some(t);
                            }
                        }
                    }
                    date = date.succ_opt()?;
                }
                None
            }
        }
    }

    /// The next `n` run times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    t = next.with_timezone(&Utc);
                    out.push(next);
                }
                None => break,
            }
        }
        out
    }
}

/// The first instant of `date` in `tz` (midnight, or just after a DST gap at midnight).
fn local_midnight(tz: &Tz, date: chrono::NaiveDate) -> Option<DateTime<Tz>> {
    let mut t = date.and_time(NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return Some(dt);
        }
        t += Duration::minutes(30);
    }
    None
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ScheduleKind::Cron { expr, .. } => write!(f, "cron `{expr}` in {}", self.tz.name()),
            ScheduleKind::Every { secs } => write!(f, "every {} (aligned on the epoch)", human_secs(*secs)),
            ScheduleKind::EveryDays { days } => write!(f, "every {days} days at midnight {}", self.tz.name()),
        }
    }
}

fn human_secs(s: u64) -> String {
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, tz: &str) -> Schedule {
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
    fn durations_parse_with_exact_errors() {
        use std::time::Duration as D;
        assert_eq!(parse_duration("10m", "lookback"), Ok(D::from_secs(600)));
        assert_eq!(parse_duration("30s", "settle"), Ok(D::from_secs(30)));
        assert_eq!(parse_duration("1h", "lookback"), Ok(D::from_secs(3600)));
        assert_eq!(parse_duration("2d", "lookback"), Ok(D::from_secs(172_800)));
        assert_eq!(parse_duration("0s", "settle"), Ok(D::ZERO));
        let e = parse_duration("10", "lookback").unwrap_err();
        assert_eq!(e.message, "`10` has no unit");
        assert!(e.help.contains("`lookback`"), "{}", e.help);
        assert_eq!(
            parse_duration("1.5h", "lookback").unwrap_err().message,
            "`.5h` is not a duration unit in `1.5h`"
        );
        assert_eq!(
            parse_duration("-5m", "lookback").unwrap_err().message,
            "`-5m` is not a duration"
        );
        assert_eq!(
            parse_duration("31d", "lookback").unwrap_err().message,
            "`lookback` `31d` is longer than 30 days"
        );
        assert!(parse_duration("99999999999999999d", "lookback").is_err());
    }

    #[test]
    fn intervals_parse() {
        assert!(matches!(
            parse_interval("15m").unwrap(),
            ScheduleKind::Every { secs: 900 }
        ));
        assert!(matches!(
            parse_interval("2d").unwrap(),
            ScheduleKind::EveryDays { days: 2 }
        ));
        assert!(matches!(parse_interval("hourly").unwrap(), ScheduleKind::Cron { .. }));
        assert!(parse_interval("0m").is_err());
        assert!(parse_interval("5 minutes").is_err());
        assert_eq!(parse_interval("every hour").unwrap_err().help, "did you mean `hourly`?");
    }

    #[test]
    fn five_field_cron_with_sunday_zero() {
        let s = sched(parse_cron("0 6 * * 0").unwrap(), "UTC");
        let next = s.next_after(utc("2026-11-28T00:00:00Z")).unwrap(); // a Saturday
        assert_eq!(next.to_rfc3339(), "2026-11-29T06:00:00+00:00"); // Sunday
        assert!(parse_cron("0 */6 * * *").is_ok());
        assert!(parse_cron("61 * * * *")
            .unwrap_err()
            .message
            .contains("minute 61 is outside 0-59"));
        assert!(parse_cron("0 25 * * *")
            .unwrap_err()
            .message
            .contains("hour 25 is outside 0-23"));
        assert!(parse_cron("*/0 * * * *").is_err());
        assert!(parse_cron("0 9 * * MON-FRI").is_ok());
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("0 0 30 2 *").is_err());
    }

    #[test]
    fn cron_in_a_dst_gap_fires_after_the_gap() {
        // Europe/Berlin skips 02:00-03:00 on 2027-03-28.
        let s = sched(parse_cron("30 2 * * *").unwrap(), "Europe/Berlin");
        let runs = s.upcoming(utc("2027-03-27T12:00:00Z"), 2);
        assert_eq!(runs[0].to_rfc3339(), "2027-03-28T03:00:00+02:00");
        assert_eq!(runs[1].to_rfc3339(), "2027-03-29T02:30:00+02:00");
    }

    #[test]
    fn daily_follows_local_midnight_across_dst() {
        let s = sched(parse_interval("daily").unwrap(), "America/New_York");
        let runs = s.upcoming(utc("2026-10-31T12:00:00Z"), 3);
        let got: Vec<String> = runs.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            got,
            [
                "2026-11-01T00:00:00-04:00",
                "2026-11-02T00:00:00-05:00",
                "2026-11-03T00:00:00-05:00"
            ]
        );
    }

    #[test]
    fn fixed_periods_align_on_the_epoch() {
        let s = sched(parse_interval("15m").unwrap(), "UTC");
        let runs = s.upcoming(utc("2026-11-28T10:07:00Z"), 2);
        assert_eq!(runs[0].to_rfc3339(), "2026-11-28T10:15:00+00:00");
        assert_eq!(runs[1].to_rfc3339(), "2026-11-28T10:30:00+00:00");
    }

    #[test]
    fn timezones_suggest_the_right_spelling() {
        assert!(parse_timezone("Europe/Berlin").is_ok());
        let e = parse_timezone("europe/berlin").unwrap_err();
        assert!(e.help.starts_with("did you mean `Europe/Berlin`?"), "{}", e.help);
        assert!(parse_timezone("Mars/Olympus").is_err());
    }
}

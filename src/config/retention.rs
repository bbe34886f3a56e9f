//! `retention:` of `ebb.yaml`: how long the state store keeps run history, row errors,
//! webhook events, conflicts and the audit log, and the defaults where it says nothing.
//! What a purge removes of each table is the state store's ([`crate::state::retention`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long each kind of record is kept: `<n>d` (days), `<n>w` (weeks), `<n>h` (hours,
/// at least 24) or `forever`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Finished runs (`ebb runs`). Each model's latest run and latest completed run are
    /// kept whatever their age. Default: `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<String>,
    /// Errors of rejected and invalid rows (`ebb errors`), by the age of the run that
    /// recorded them. Default: `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_errors: Option<String>,
    /// Webhook events applied, superseded, ignored or replayed, by when they were
    /// received. Pending events and dead letters are never purged. Default: `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<String>,
    /// Conflicts decided, resolved or superseded, by when they were decided. Open
    /// conflicts are never purged. Default: `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<String>,
    /// The audit log, by the time of each entry; the chain still verifies after a purge.
    /// Default: `365d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<String>,
}

/// The defaults, in days: runs, row errors, inbox, conflicts, audit.
pub const DEFAULT_DAYS: [(&str, u64); 5] = [
    ("runs", 90),
    ("row_errors", 30),
    ("inbox", 7),
    ("conflicts", 90),
    ("audit", 365),
];

/// The shortest period allowed: a purge runs once a day.
pub const MIN_PERIOD: Duration = Duration::from_secs(86_400);

/// Why a period is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("`{0}` is not a retention period")]
    Malformed(String),
    #[error("`{0}` is shorter than a day")]
    TooShort(String),
}

/// Parses a period: `Some(duration)`, or `None` for `forever`.
pub fn parse_period(text: &str) -> Result<Option<Duration>, PeriodError> {
    let t = text.trim();
    if t == "forever" {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| PeriodError::Malformed(text.to_string()))?;
    let unit_secs = match unit {
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(PeriodError::Malformed(text.to_string())),
    };
    let d = Duration::from_secs(n.saturating_mul(unit_secs));
    if d < MIN_PERIOD {
        return Err(PeriodError::TooShort(text.to_string()));
    }
    Ok(Some(d))
}

/// The periods in effect: each as written, else its default (`None`: kept forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub runs: Option<Duration>,
    pub row_errors: Option<Duration>,
    pub inbox: Option<Duration>,
    pub conflicts: Option<Duration>,
    pub audit: Option<Duration>,
}

impl Retention {
    /// The periods of `spec` (validated: a period that does not parse takes its default,
    /// `ebb validate` reports it).
    pub fn of(spec: Option<&RetentionSpec>) -> Retention {
        let get = |name: &str, v: Option<&String>| -> Option<Duration> {
            let default = DEFAULT_DAYS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, d)| Duration::from_secs(d * 86_400));
            match v.map(|t| parse_period(t)) {
                Some(Ok(p)) => p,
                _ => default,
            }
        };
        let s = spec.cloned().unwrap_or_default();
        Retention {
            runs: get("runs", s.runs.as_ref()),
            row_errors: get("row_errors", s.row_errors.as_ref()),
            inbox: get("inbox", s.inbox.as_ref()),
            conflicts: get("conflicts", s.conflicts.as_ref()),
            audit: get("audit", s.audit.as_ref()),
        }
    }
}

/// Each field of `spec` that is set, with its text (for validation).
pub fn fields(spec: &RetentionSpec) -> Vec<(&'static str, &str)> {
    [
        ("runs", &spec.runs),
        ("row_errors", &spec.row_errors),
        ("inbox", &spec.inbox),
        ("conflicts", &spec.conflicts),
        ("audit", &spec.audit),
    ]
    .into_iter()
    .filter_map(|(n, v)| v.as_deref().map(|v| (n, v)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_defaults_fill_in() {
        assert_eq!(parse_period("30d"), Ok(Some(Duration::from_secs(30 * 86_400))));
        assert_eq!(parse_period("2w"), Ok(Some(Duration::from_secs(14 * 86_400))));
        assert_eq!(parse_period("48h"), Ok(Some(Duration::from_secs(48 * 3600))));
        assert_eq!(parse_period("forever"), Ok(None));
        assert_eq!(parse_period("12h"), Err(PeriodError::TooShort("12h".into())));
        assert_eq!(parse_period("0d"), Err(PeriodError::TooShort("0d".into())));
        assert_eq!(parse_period("3 months"), Err(PeriodError::Malformed("3 months".into())));
        assert_eq!(parse_period("d"), Err(PeriodError::Malformed("d".into())));
        let r = Retention::of(Some(&RetentionSpec {
            inbox: Some("14d".into()),
            audit: Some("forever".into()),
            ..RetentionSpec::default()
        }));
        assert_eq!(r.runs, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(r.row_errors, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(r.inbox, Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(r.conflicts, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(r.audit, None);
    }
}

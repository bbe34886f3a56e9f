//! Reading times as CRMs and senders write them: Salesforce's `…+0000` and RFC 3339, and
//! Unix seconds or milliseconds. A leaf module: the Salesforce reader, webhook events and
//! the conflict check all read times through it.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A Salesforce datetime: REST's `…000+0000`, Bulk's `…000Z`, or any RFC 3339 form.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// An RFC 3339 time (or Salesforce's `…+0000`), or a Unix time: milliseconds when above
/// 10^11 (past 5138 in seconds), else seconds.
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_datetime(s).or_else(|| {
            let n: f64 = s.trim().parse().ok()?;
            unix(n)
        }),
        Value::Number(n) => unix(n.as_f64()?),
        _ => None,
    }
}

fn unix(n: f64) -> Option<DateTime<Utc>> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let ms = if n > 1e11 { n } else { n * 1000.0 };
    DateTime::from_timestamp_millis(ms as i64)
}

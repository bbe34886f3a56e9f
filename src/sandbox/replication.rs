//! The REST replication resources (docs/salesforce-protocol.md §6):
//! `GET sobjects/{Object}/updated/?start=&end=` → `{"ids", "latestDateCovered"}` and
//! `GET sobjects/{Object}/deleted/?start=&end=` → `{"deletedRecords": [{"id",
//! "deletedDate"}], "earliestDateAvailable", "latestDateCovered"}`.
//!
//! As documented: `start` and `end` are ISO 8601 with an offset, their seconds ignored
//! (12:30:15 is 12:30); `start` must come before `end` and lie within 30 days (`updated`)
//! or 15 days (`deleted`) of now, else 400 `INVALID_REPLICATION_DATE`; more than 600,000
//! ids is 400 `EXCEEDED_ID_LIMIT`. A record counts as updated by its `SystemModstamp`
//! (created or changed, not deleted), as deleted by its deletion time (its
//! `SystemModstamp` in the recycle bin); the window is `start <= t < end`.
//!
//! `latestDateCovered` is at most `end`: an `end` in the future covers up to the current
//! minute, and the changes of the current minute that are returned are returned again by
//! a call that starts from it, so a client that follows it misses nothing.
//! `earliestDateAvailable` is the minute the sandbox started (it never purges its delete
//! log). Choices where the documentation is silent ([U]): a missing `start` or `end` is 400
//! `MISSING_ARGUMENT`, one that does not parse `INVALID_REPLICATION_DATE`.

use super::api::{error, not_found, Shr};
use super::value::{format_datetime, parse_datetime};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

/// How far back each resource looks.
const UPDATED_DAYS: i64 = 30;
const DELETED_DAYS: i64 = 15;
/// The most ids one call returns.
const MAX_IDS: usize = 600_000;

#[derive(serde::Deserialize)]
pub(crate) struct Window {
    start: Option<String>,
    end: Option<String>,
}

pub(crate) fn floor_minute(d: DateTime<Utc>) -> DateTime<Utc> {
    let secs = d.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0).unwrap_or(d)
}

fn bad_date(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_REPLICATION_DATE", message)
}

/// A checked window: `[start, end)` truncated to minutes, and its `latestDateCovered`.
struct Span {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    covered: DateTime<Utc>,
}

#[allow(clippy::result_large_err)] // the error is the response to send, built once per request
fn window(w: &Window, days: i64) -> Result<Span, Response> {
    let parse = |name: &str, v: &Option<String>| -> Result<DateTime<Utc>, Response> {
        let Some(text) = v.as_deref() else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "MISSING_ARGUMENT",
                &format!("Required parameter '{name}' is missing"),
            ));
        };
        // A `+` sent unencoded arrives as a space.
        parse_datetime(&text.trim().replace(' ', "+"))
            .map(floor_minute)
            .ok_or_else(|| {
                bad_date(&format!(
                    "{name}: '{text}' is not an ISO 8601 date and time with an offset"
                ))
            })
    };
    let start = parse("start", &w.start)?;
    let end = parse("end", &w.end)?;
    if start >= end {
        return Err(bad_date("start date must chronologically precede the end date"));
    }
    let now = floor_minute(Utc::now());
    if start < now - Duration::days(days) {
        return Err(bad_date(&format!(
            "start date cannot be more than {days} days before the current date"
        )));
    }
    let covered = end.min(now).max(start);
    Ok(Span { start, end, covered })
}

fn too_many() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "EXCEEDED_ID_LIMIT",
        "Too many ids: choose start and end dates closer together",
    )
}

/// `GET sobjects/{Object}/updated/?start=&end=`.
pub(crate) async fn updated(
    axum::extract::State(shared): Shr,
    Path((_v, object)): Path<(String, String)>,
    Query(w): Query<Window>,
) -> Response {
    let state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    let Span { start, end, covered } = match window(&w, UPDATED_DAYS) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let ids: Vec<Value> = state.store.tables[t]
        .records
        .iter()
        .filter(|(_, r)| r.stamp >= start && r.stamp < end)
        .map(|(id, _)| Value::from(id.as_str()))
        .collect();
    if ids.len() > MAX_IDS {
        return too_many();
    }
    Json(json!({"ids": ids, "latestDateCovered": format_datetime(covered)})).into_response()
}

/// `GET sobjects/{Object}/deleted/?start=&end=`.
pub(crate) async fn deleted(
    axum::extract::State(shared): Shr,
    Path((_v, object)): Path<(String, String)>,
    Query(w): Query<Window>,
) -> Response {
    let state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    let Span { start, end, covered } = match window(&w, DELETED_DAYS) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let mut records: Vec<(&String, DateTime<Utc>)> = state.store.tables[t]
        .deleted
        .iter()
        .filter(|(_, r)| r.stamp >= start && r.stamp < end)
        .map(|(id, r)| (id, r.stamp))
        .collect();
    if records.len() > MAX_IDS {
        return too_many();
    }
    records.sort_by_key(|(id, at)| (*at, (*id).clone()));
    let list: Vec<Value> = records
        .into_iter()
        .map(|(id, at)| json!({"id": id, "deletedDate": format_datetime(at)}))
        .collect();
    Json(json!({
        "deletedRecords": list,
        "earliestDateAvailable": format_datetime(floor_minute(shared.settings.started)),
        "latestDateCovered": format_datetime(covered),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ignores_seconds_and_checks_its_bounds() {
        let now = Utc::now();
        let at = |d: DateTime<Utc>| Some(d.to_rfc3339());
        let w = Window {
            start: at(now - Duration::minutes(90) + Duration::seconds(59)),
            end: at(now - Duration::minutes(30)),
        };
        let Span { start, end, covered } = window(&w, UPDATED_DAYS).ok().unwrap();
        assert_eq!(start, floor_minute(now - Duration::minutes(90) + Duration::seconds(59)));
        assert_eq!(start.timestamp() % 60, 0);
        assert_eq!((end, covered), (floor_minute(now - Duration::minutes(30)), end));
        // An end in the future covers up to the current minute.
        let w = Window {
            start: at(now - Duration::hours(1)),
            end: at(now + Duration::hours(1)),
        };
        assert_eq!(window(&w, UPDATED_DAYS).ok().unwrap().covered, floor_minute(Utc::now()));
        for (s, e, days) in [
            (now, now, UPDATED_DAYS),
            (now, now - Duration::hours(1), UPDATED_DAYS),
            (now - Duration::days(16), now, DELETED_DAYS),
            (now - Duration::days(31), now, UPDATED_DAYS),
        ] {
            assert!(
                window(
                    &Window {
                        start: at(s),
                        end: at(e)
                    },
                    days
                )
                .is_err(),
                "{s} {e}"
            );
        }
        assert!(window(
            &Window {
                start: at(now - Duration::days(29)),
                end: at(now)
            },
            UPDATED_DAYS
        )
        .is_ok());
        let spaced = Window {
            start: Some("2030-01-01T00:00:00 00:00".into()),
            end: Some("2030-01-02T00:00:00+00:00".into()),
        };
        // The space was a `+` sent unencoded; a window in the future covers nothing yet,
        // and `latestDateCovered` does not go back before its start.
        let span = window(&spaced, UPDATED_DAYS).ok().unwrap();
        assert_eq!(span.covered, span.start);
    }
}

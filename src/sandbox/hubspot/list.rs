//! `GET /crm/v3/objects/{objectType}?limit&after&archived&properties`: the records in id
//! order, a page at a time. `archived=true` lists only the archived records; `after` is
//! the id to start from, and `paging.next.after` is there while more remain.

use super::{Hub, HubError};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub(crate) async fn list(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, HubError> {
    let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| HubError::validation(format!("limit `{l}` is not a positive integer")))?
            .min(MAX_LIMIT),
    };
    let after: u64 = match get("after") {
        None => 0,
        Some(a) => a
            .parse()
            .map_err(|_| HubError::validation(format!("after `{a}` is not a valid paging cursor")))?,
    };
    let archived = archived(get("archived").map(String::as_str))?;
    // `properties=a,b` or `properties=a&properties=b`, as the official clients send them.
    let mut listed = pairs.iter().filter(|(k, _)| k == "properties").peekable();
    let wanted: Option<Vec<String>> = listed.peek().is_some().then(|| {
        listed
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    });
    let state = hub.lock();
    let t = state.store.index(&object)?;
    let mut page = state
        .store
        .table(t)
        .range(after..)
        .filter(|(_, r)| r.archived.is_some() == archived)
        .map(|(id, _)| *id);
    let ids: Vec<u64> = page.by_ref().take(limit).collect();
    let more = page.next().is_some();
    let results: Vec<Value> = ids
        .iter()
        .map(|id| state.store.render(t, *id, wanted.as_deref(), &[]))
        .collect();
    let mut body = json!({ "results": results });
    if let (true, Some(last)) = (more, ids.last()) {
        let next = (last + 1).to_string();
        body["paging"] = json!({"next": {
            "after": next,
            "link": format!("/crm/v3/objects/{object}?limit={limit}&after={next}&archived={archived}"),
        }});
    }
    Ok(Json(body))
}

/// `archived=true|false`, whatever its case (clients send Python's `True`); absent, false.
pub(crate) fn archived(value: Option<&str>) -> Result<bool, HubError> {
    match value {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(other) => Err(HubError::validation(format!("archived `{other}` is not true or false"))),
    }
}

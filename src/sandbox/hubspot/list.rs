//! `GET /crm/v3/objects/{objectType}?limit&after&archived&properties`: the records in id
//! order, a page at a time. `archived=true` lists only the archived records; `after` is
//! the id to start from, and `paging.next.after` is there while more remain.

use super::{Hub, HubError};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub(crate) async fn list(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, HubError> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| HubError::validation(format!("limit `{l}` is not a positive integer")))?
            .min(MAX_LIMIT),
    };
    let after: u64 = match query.get("after") {
        None => 0,
        Some(a) => a
            .parse()
            .map_err(|_| HubError::validation(format!("after `{a}` is not a valid paging cursor")))?,
    };
    let archived = match query.get("archived").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(HubError::validation(format!("archived `{other}` is not true or false"))),
    };
    let wanted: Option<Vec<String>> = query.get("properties").map(|p| {
        p.split(',')
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

//! The API's part in the audit log ([`crate::audit`]): `GET /api/audit` (admin tokens),
//! and the entries of what the API does on a caller's behalf (runs triggered, dead letters
//! replayed, conflicts resolved) or refuses (401, 403).

use super::{error, Who};
use crate::audit::{Action, AuditQuery, NewAudit};
use crate::daemon::Shared;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// The actor of a request: `token:NAME`, or `api` on a daemon without tokens.
pub(super) fn actor(who: Option<&Who>) -> String {
    who.map_or_else(|| "api".to_string(), |w| w.0.clone())
}

/// Appends `entry`; a failure is logged (the request's outcome stands, and says nothing
/// of the log).
pub(super) async fn record(shared: &Shared, entry: NewAudit) {
    let Some(store) = shared.store.get().cloned() else {
        tracing::error!(
            event = "audit_failed",
            action = entry.action.as_str(),
            "cannot record an API action in the audit log: the state store is not open yet"
        );
        return;
    };
    if let Err(e) = store.audit_append(entry.clone()).await {
        tracing::error!(
            event = "audit_failed",
            action = entry.action.as_str(),
            error = %e,
            "cannot record an API action in the audit log"
        );
    }
}

/// A refused request (`status` 401 or 403), recorded with who asked (the token's name,
/// else `anonymous`) and from where.
pub(super) async fn refused(
    shared: &Shared,
    status: StatusCode,
    token: Option<&str>,
    method: &str,
    path: &str,
    detail: serde_json::Value,
) {
    let actor = token.map_or_else(|| "anonymous".to_string(), |t| format!("token:{t}"));
    let mut d = json!({ "status": status.as_u16(), "method": method, "path": path });
    if let (Some(o), serde_json::Value::Object(more)) = (d.as_object_mut(), detail) {
        o.extend(more);
    }
    record(shared, NewAudit::new(actor, Action::ApiRefused).detail(d)).await;
}

#[derive(serde::Deserialize)]
pub(super) struct AuditParams {
    /// RFC 3339, a date or a duration back from now (`24h`).
    since: Option<String>,
    model: Option<String>,
    action: Option<String>,
    /// Entries after this sequence number (paging).
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/audit?since=…&model=…&action=…&after=SEQ&limit=N`: entries oldest first (at
/// most 1000 a page; `next_after` pages on).
pub(super) async fn list(State(shared): State<Arc<Shared>>, Query(p): Query<AuditParams>) -> Response {
    let Some(store) = shared.store.get().cloned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the state store is not open yet");
    };
    let since_ms = match p
        .since
        .as_deref()
        .map(|s| crate::audit::parse_since(s, chrono::Utc::now().timestamp_millis()))
    {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Some(a) = p.action.as_deref().filter(|a| Action::parse(a).is_none()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "`{a}` is not an action; one of {}",
                Action::ALL.map(Action::as_str).join(", ")
            ),
        );
    }
    let limit = p.limit.unwrap_or(1000).clamp(1, 1000);
    let q = AuditQuery {
        since_ms,
        model: p.model,
        action: p.action,
        after_seq: p.after.unwrap_or(0),
        limit,
    };
    match store.audit_list(&q).await {
        Ok(rows) => {
            let next = (rows.len() as i64 == limit)
                .then(|| rows.last().map(|r| r.seq))
                .flatten();
            Json(json!({
                "entries": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
                "next_after": next,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, crate::redact::text(&e.to_string())),
    }
}

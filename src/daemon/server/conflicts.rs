//! `GET /api/conflicts` (the conflicts of models with `conflicts`, open ones by default)
//! and `POST /api/conflicts/{model}/resolve` (a person's decision on a held record), the
//! API's side of `ebb conflicts` (docs/conflicts.md).

use super::error;
use crate::daemon::Shared;
use crate::state::conflicts::{ConflictQuery, ConflictStatus, Side};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, serde::Deserialize)]
pub(super) struct ConflictsQuery {
    model: Option<String>,
    key: Option<String>,
    /// Comma-separated statuses, or `all` (default: `open`).
    status: Option<String>,
    limit: Option<i64>,
}

/// The conflicts as JSON, values of personal fields (`pii: true`) masked.
fn shown(shared: &Shared, list: &[crate::state::conflicts::Conflict]) -> Vec<serde_json::Value> {
    let t = shared.table();
    list.iter()
        .map(|c| {
            let pii = t.models.get(&c.model).map(|e| e.plan.pii_fields()).unwrap_or_default();
            c.shown(&pii).to_json()
        })
        .collect()
}

/// Whether `name` is a model of the daemon with `conflicts`.
fn conflict_model(shared: &Shared, name: &str) -> Result<(), Box<Response>> {
    let t = shared.table();
    match t.models.get(name).filter(|e| !e.removed) {
        Some(e) if e.plan.conflicts.is_some() => Ok(()),
        Some(_) => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("model `{name}` has no `conflicts`"),
        ))),
        None => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no model named `{name}`"),
        ))),
    }
}

fn statuses(s: Option<&str>) -> Result<Vec<ConflictStatus>, String> {
    match s.unwrap_or("open") {
        "all" => Ok(Vec::new()),
        s => s
            .split(',')
            .map(|x| ConflictStatus::parse(x.trim()).ok_or_else(|| format!("`{x}` is not a conflict status")))
            .collect(),
    }
}

pub(super) async fn list(State(shared): State<Arc<Shared>>, Query(q): Query<ConflictsQuery>) -> Response {
    let Some(store) = shared.store.get().cloned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the state store is not open yet");
    };
    if let Some(m) = &q.model {
        if let Err(r) = conflict_model(&shared, m) {
            return *r;
        }
    }
    let statuses = match statuses(q.status.as_deref()) {
        Ok(s) => s,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let query = ConflictQuery {
        model: q.model.clone(),
        key: q.key.clone(),
        statuses,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let result = async {
        store.conflicts_init().await?;
        let open = store.conflicts_open().await?;
        let list = store.conflicts(query).await?;
        Ok::<_, crate::state::StateError>((open, list))
    }
    .await;
    match result {
        Ok((open, list)) => Json(json!({
            "open": open.iter().map(|(m, n)| (m.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "conflicts": shown(&shared, &list),
        }))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ResolveBody {
    key: String,
    take: String,
}

pub(super) async fn resolve(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    who: Option<axum::Extension<super::Who>>,
    Json(body): Json<ResolveBody>,
) -> Response {
    let by = who.map_or_else(|| "api".to_string(), |w| w.0 .0.clone());
    let Some(store) = shared.store.get().cloned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the state store is not open yet");
    };
    if let Err(r) = conflict_model(&shared, &name) {
        return *r;
    }
    let Some(take) = Side::parse(&body.take) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`take` is `warehouse` or `crm`, not `{}`", body.take),
        );
    };
    let now = chrono::Utc::now().timestamp_millis();
    let result = async {
        store.conflicts_init().await?;
        store.conflict_resolve(&name, &body.key, take, &by, now).await
    }
    .await;
    match result {
        Ok(resolved) if resolved.is_empty() => error(
            StatusCode::NOT_FOUND,
            format!("record `{}` of `{name}` has no open conflict", body.key),
        ),
        Ok(resolved) => {
            // `take: crm`: the CRM's value written back to the inbound model's table.
            let found = {
                let t = shared.table();
                t.models.get(&name).map(|e| (e.plan.clone(), t.project.clone()))
            };
            let written = match (found, take) {
                (Some((plan, project)), Side::Crm) => {
                    crate::engine::conflict::write_back(&plan, &project, &shared.dir, &resolved).await
                }
                _ => Ok(None),
            };
            let entry = crate::audit::conflict_resolved(
                by.clone(),
                &name,
                &body.key,
                take.as_str(),
                resolved.iter().map(|c| c.field.clone()).collect(),
            );
            super::audit::record(&shared, entry).await;
            tracing::info!(
                event = "conflict_resolved",
                model = %name,
                key = %body.key,
                take = take.as_str(),
                fields = resolved.len(),
                "a held record's conflicts resolved through the API; the next run applies the decision"
            );
            Json(json!({
                "model": name,
                "key": body.key,
                "take": take.as_str(),
                "resolved": shown(&shared, &resolved),
                "written_back": match &written {
                    Ok(Some((table, rows))) => json!({"table": table, "rows": rows}),
                    Ok(None) => json!(null),
                    Err(e) => json!({"error": crate::redact::text(&e.to_string())}),
                },
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

//! The endpoints of the daemon's HTTP API: health and readiness, Prometheus metrics, the
//! models and their runs, and `POST /api/models/{name}/runs` to start one. Apart from the
//! transport (`server`) so an endpoint's answer is read without the connection handling.

use super::error;
use crate::daemon::scheduler::{self, Running, Trigger};
use crate::daemon::Shared;
use crate::state::{RunRecord, StateStore};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Runs listed by `/api/runs` unless `limit` says otherwise, and at most.
const DEFAULT_RUNS: i64 = 20;
const MAX_RUNS: i64 = 1000;
/// How long `POST …/runs` waits for the run's id before answering without it.
const RUN_ID_WAIT: Duration = Duration::from_secs(2);
/// A run still without a concurrency permit after this is answered `queued`.
const QUEUED_AFTER: Duration = Duration::from_millis(100);

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.not_ready() {
        None => Json(json!({ "ready": true })).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": why })),
        )
            .into_response(),
    }
}

fn store(shared: &Shared) -> Result<Arc<StateStore>, Box<Response>> {
    shared.store.get().cloned().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store is not open yet",
        ))
    })
}

fn unix(t: &str) -> Option<f64> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    /// A model: name, scheduled, running, next run, plan.
    type Listed = (String, bool, bool, Option<f64>, Arc<crate::plan::SyncPlan>);
    let names: Vec<Listed> = {
        let t = shared.table();
        t.models
            .iter()
            .filter(|(_, e)| !e.removed)
            .map(|(n, e)| {
                (
                    n.clone(),
                    e.plan.schedule.is_some(),
                    e.run.as_ref().is_some_and(|r| r.started_at.is_some()),
                    e.next.map(|f| f.at.timestamp_millis() as f64 / 1000.0),
                    e.plan.clone(),
                )
            })
            .collect()
    };
    // Open conflicts, when a model has `conflicts` (the tables exist once one has).
    let open: std::collections::HashMap<String, u64> = match shared.store.get() {
        Some(s) if names.iter().any(|n| n.4.conflicts.is_some()) => match s.conflicts_init().await {
            Ok(()) => s.conflicts_open().await.unwrap_or_default().into_iter().collect(),
            Err(_) => Default::default(),
        },
        _ => Default::default(),
    };
    let mut gauges = Vec::with_capacity(names.len());
    let now = Utc::now();
    for (model, scheduled, running, next_run, plan) in names {
        let conflicts_open = plan.conflicts.is_some().then(|| open.get(&model).copied().unwrap_or(0));
        let lag = match shared.store.get() {
            Some(s) => crate::alerts::figures::lag_minutes(s, &plan, now)
                .await
                .ok()
                .flatten()
                .map(|m| m * 60.0),
            None => None,
        };
        let last_success = match shared.store.get() {
            Some(s) => s
                .last_completed(&model)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.ended_at.as_deref().and_then(unix)),
            None => None,
        };
        gauges.push(crate::daemon::metrics::ModelGauges {
            model,
            scheduled,
            running,
            last_success,
            next_run,
            conflicts_open,
            lag,
        });
    }
    let text = shared.metrics.render(&gauges, shared.not_ready().is_none());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

fn run_json(r: &RunRecord) -> Value {
    let c = &r.counts;
    let duration = r
        .ended_at
        .as_deref()
        .and_then(unix)
        .zip(unix(&r.started_at))
        .map(|(e, s)| e - s);
    json!({
        "id": r.id, "model": r.model, "status": r.status,
        "started_at": r.started_at, "ended_at": r.ended_at, "duration_secs": duration,
        "counts": {
            "read": c.read, "added": c.added, "changed": c.changed, "removed": c.removed,
            "unchanged": c.unchanged, "invalid": c.invalid, "sent": c.sent,
            "confirmed": c.confirmed, "rejected": c.rejected, "api_calls": c.api_calls,
        },
        // (Stored masked; runs recorded by an older ebb are masked here.)
        "error": r.error.as_deref().map(crate::redact::text),
    })
}

fn running_json(r: &Running) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let p = &r.progress;
    json!({
        "trigger": r.trigger.as_str(),
        "requested_at": r.requested_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "started_at": r.started_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "state": if r.started_at.is_some() { "running" } else { "queued" },
        "run_id": r.run_id,
        "rows_read": p.read.load(Relaxed),
        "rows_to_send": p.to_send.load(Relaxed),
        "rows_sent": p.sent.load(Relaxed),
        "rows_confirmed": p.confirmed.load(Relaxed),
        "rows_rejected": p.rejected.load(Relaxed),
    })
}

pub(super) async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let store = match store(&shared) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let last_runs = match store.last_runs().await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let listed: Vec<Value> = {
        let t = shared.table();
        t.models
            .iter()
            .map(|(name, e)| {
                let s = e.plan.schedule.as_ref();
                json!({
                    "name": name,
                    "description": e.plan.description,
                    "file": e.plan.file.display().to_string(),
                    "schedule": s.map(|s| json!({
                        "written": s.written, "timezone": s.tz.name(), "description": s.to_string(),
                    })),
                    "next_run_at": e.next.map(|f| f.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                    "next_run_reason": e.next.map(|f| f.kind.as_str()),
                    "running": e.run.as_ref().map(running_json),
                    "consecutive_failures": e.failures,
                    "removed": e.removed,
                })
            })
            .collect()
    };
    let now = Utc::now();
    let me = crate::state::lock::me(0).id;
    let mut out = Vec::with_capacity(listed.len());
    for mut m in listed {
        let name = m["name"].as_str().unwrap_or_default().to_string();
        let last = last_runs.iter().find(|r| r.model == name);
        let ok = store.last_completed(&name).await.ok().flatten();
        let holder = store.lock_holder(&name).await.ok().flatten();
        let elsewhere = holder
            .as_ref()
            .filter(|h| !crate::state::holder_is_dead_here(h) && h.id != me);
        let running_here = m["running"]["state"] == "running";
        let health = crate::engine::health(last.map(|r| r.status.as_str()), running_here || elsewhere.is_some());
        let success_at = ok.as_ref().and_then(|r| r.ended_at.clone());
        let lag = success_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (now - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0);
        m["health"] = json!(health);
        // The lag and its level, as `ebb status`, the metrics and alerts have them.
        let plan = shared.table().models.get(&name).map(|e| e.plan.clone());
        if let Some(plan) = plan {
            let minutes = crate::alerts::figures::lag_minutes(&store, &plan, now)
                .await
                .ok()
                .flatten();
            m["lag_minutes"] = json!(minutes);
            m["lag_health"] = json!(plan.health.level(minutes));
        }
        m["last_run"] = last.map(run_json).unwrap_or(Value::Null);
        m["last_success_at"] = json!(success_at);
        m["lag_secs"] = json!(lag);
        m["held_by"] = elsewhere
            .map(|h| json!({"host": h.host, "pid": h.pid, "run_id": h.run_id, "since": h.acquired_at}))
            .unwrap_or(Value::Null);
        out.push(m);
    }
    let reload = shared.reload.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Json(json!({ "models": out, "reload": reload })).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct RunsQuery {
    model: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn runs(State(shared): State<Arc<Shared>>, Query(q): Query<RunsQuery>) -> Response {
    let store = match store(&shared) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let limit = q.limit.unwrap_or(DEFAULT_RUNS).clamp(1, MAX_RUNS);
    let models: Vec<String> = match q.model {
        Some(m) => vec![m],
        None => shared.table().models.keys().cloned().collect(),
    };
    let mut all = Vec::new();
    for m in &models {
        match store.runs(m, limit).await {
            Ok(r) => all.extend(r),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    all.sort_by_key(|r| std::cmp::Reverse(r.id));
    all.truncate(limit as usize);
    Json(json!({ "runs": all.iter().map(run_json).collect::<Vec<_>>() })).into_response()
}

pub(super) async fn trigger(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    who: Option<axum::Extension<super::Who>>,
) -> Response {
    let store = match store(&shared) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if *shared.stop.borrow() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down");
    }
    let busy = |since: String, by: String| {
        error(
            StatusCode::CONFLICT,
            format!("model `{name}` is running ({by}, since {since}); one run per model at a time"),
        )
    };
    let known = {
        let t = shared.table();
        match t.models.get(&name) {
            None => None,
            Some(e) if e.removed => None,
            Some(e) => Some(e.run.clone()),
        }
    };
    let webhook = shared
        .table()
        .models
        .get(&name)
        .is_some_and(|e| !e.removed && e.plan.source.webhook.is_some());
    if webhook {
        return error(
            StatusCode::CONFLICT,
            format!("model `{name}` is a webhook model: the daemon applies its events as they arrive (`ebb inbox {name}` shows them)"),
        );
    }
    match known {
        None => return error(StatusCode::NOT_FOUND, format!("no model named `{name}`")),
        Some(Some(r)) => {
            return busy(
                r.requested_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                format!("started by {}", r.trigger.as_str()),
            )
        }
        Some(None) => {}
    }
    // Another process sharing the store may be running it.
    if let Ok(Some(h)) = store.lock_holder(&name).await {
        let stale = crate::state::holder_is_dead_here(&h)
            || Utc::now().timestamp_millis() - h.heartbeat_ms > crate::state::lock::LEASE.as_millis() as i64;
        if !stale && h.id != crate::state::lock::me(0).id {
            return busy(h.acquired_at.clone(), format!("pid {} on {}", h.pid, h.host));
        }
    }
    let requested = {
        let mut t = shared.table();
        let Some(e) = t.models.get_mut(&name) else {
            return error(StatusCode::NOT_FOUND, format!("no model named `{name}`"));
        };
        if let Some(r) = &e.run {
            let since = r.requested_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            drop(t);
            return busy(since, "started by schedule".into());
        }
        let r = Running::new(Trigger::Api);
        let at = r.requested_at;
        e.run = Some(r);
        at
    };
    tracing::info!(event = "run_requested", model = %name, "run requested through the API");
    let entry = crate::audit::NewAudit::new(super::audit::actor(who.as_deref()), crate::audit::Action::RunTriggered)
        .model(name.clone())
        .detail(json!({ "via": "api" }));
    super::audit::record(&shared, entry).await;
    scheduler::spawn_run(&shared, &name);
    // Answer with the run's id when it is known soon (a free permit and a quick lock).
    // A run waiting for a concurrency permit is answered `queued` at once.
    let asked = tokio::time::Instant::now();
    let mut info = Value::Null;
    while asked.elapsed() < RUN_ID_WAIT {
        let (run, last) = {
            let t = shared.table();
            let e = t.models.get(&name);
            (
                e.and_then(|e| e.run.clone()),
                e.and_then(|e| e.last.clone()).filter(|l| l.ended_at >= requested),
            )
        };
        match (run, last) {
            (Some(r), _) if r.run_id.is_some() => {
                info = json!({"state": "running", "run_id": r.run_id, "running": running_json(&r)});
                break;
            }
            (None, Some(l)) => {
                info = json!({"state": "finished", "run_id": l.run_id, "status": l.status.as_str()});
                break;
            }
            (Some(r), _) if r.started_at.is_some() => info = json!({"state": "starting", "run_id": null}),
            (Some(_), _) => {
                info = json!({"state": "queued", "run_id": null});
                if asked.elapsed() >= QUEUED_AFTER {
                    break;
                }
            }
            (None, None) => {}
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut body = json!({
        "model": name,
        "trigger": "api",
        "requested_at": requested.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "runs": format!("/api/runs?model={name}"),
    });
    if let (Some(b), Some(i)) = (body.as_object_mut(), info.as_object()) {
        for (k, v) in i {
            b.insert(k.clone(), v.clone());
        }
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// The webhook model's plan, or the answer saying why there is none.
fn webhook_plan(shared: &Shared, name: &str) -> Result<Arc<crate::plan::SyncPlan>, Box<Response>> {
    let t = shared.table();
    match t.models.get(name).filter(|e| !e.removed) {
        Some(e) if e.plan.source.webhook.is_some() => Ok(e.plan.clone()),
        Some(_) => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("model `{name}` is not a webhook model"),
        ))),
        None => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no model named `{name}`"),
        ))),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct InboxQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/inbox/{model}`: counts, and the newest events of the statuses asked for
/// (default: pending and dead letters).
pub(super) async fn inbox(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<InboxQuery>,
) -> Response {
    use crate::state::inbox::InboxStatus;
    let store = match store(&shared) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = webhook_plan(&shared, &name) {
        return *r;
    }
    let mut statuses = Vec::new();
    for s in q.status.as_deref().unwrap_or("pending,dead,rejected").split(',') {
        match InboxStatus::parse(s.trim()) {
            Some(st) => statuses.push(st),
            None => return error(StatusCode::BAD_REQUEST, format!("`{s}` is not an inbox status")),
        }
    }
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_RUNS);
    let result = async {
        store.inbox_init().await?;
        let c = store.inbox_counts(&name).await?;
        let events = store.inbox_list(&name, statuses, None, limit).await?;
        Ok::<_, crate::state::StateError>((c, events))
    }
    .await;
    match result {
        Ok((c, events)) => {
            let t = |d: &DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            Json(json!({
                "model": name,
                "counts": {
                    "pending": c.pending, "applied": c.applied, "superseded": c.superseded,
                    "ignored": c.ignored, "dead": c.dead, "rejected": c.rejected, "replayed": c.replayed,
                    "oldest_pending": c.oldest_pending.as_ref().map(t),
                },
                "events": events.iter().map(|e| json!({
                    "seq": e.seq, "event_id": e.event_id, "type": e.event_type, "action": e.action,
                    "status": e.status.as_str(), "event_time": t(&e.event_time), "received": t(&e.received),
                    "settled": e.settled.as_ref().map(t), "key": e.key,
                    "reason": e.reason.as_deref().map(crate::redact::text),
                })).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ReplayBody {
    event_ids: Option<Vec<String>>,
}

/// `POST /api/inbox/{model}/replay` with `{"event_ids": […]}` (or no body: every dead
/// letter): dead letters back in the inbox.
pub(super) async fn replay(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    who: Option<axum::Extension<super::Who>>,
    body: Option<Json<ReplayBody>>,
) -> Response {
    let store = match store(&shared) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let plan = match webhook_plan(&shared, &name) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let ids = body.and_then(|Json(b)| b.event_ids);
    let asked = ids.as_ref().map(Vec::len);
    match crate::engine::webhook::replay(&store, &plan, ids).await {
        Ok(r) => {
            let entry =
                crate::audit::NewAudit::new(super::audit::actor(who.as_deref()), crate::audit::Action::InboxReplayed)
                    .model(name.clone())
                    .detail(json!({
                        "event_ids": asked, "requeued": r.requeued, "from_rejected": r.from_rejected,
                        "not_found": r.not_found.len(),
                    }));
            super::audit::record(&shared, entry).await;
            tracing::info!(
                event = "inbox_replayed",
                model = %name,
                requeued = r.requeued,
                from_rejected = r.from_rejected,
                "dead letters put back in a webhook model's inbox through the API"
            );
            Json(json!({
                "model": name, "requeued": r.requeued, "from_rejected": r.from_rejected,
                "still_rejected": r.still_rejected.iter().map(|(id, why)| json!({"event_id": id, "reason": why})).collect::<Vec<_>>(),
                "not_found": r.not_found,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, crate::redact::text(&e.to_string())),
    }
}

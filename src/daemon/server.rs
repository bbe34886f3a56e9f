//! The daemon's HTTP API (axum): `/healthz`, `/readyz`, `/metrics` and `/api/…`.
//!
//! Everything but `/healthz` requires `Authorization: Bearer <daemon.api_token>` when a
//! token is configured (the daemon refuses to listen beyond loopback without one).
//! Errors are JSON `{"error": "…"}` with the status that fits.
//!
//! Served by hyper's HTTP/1.1 connection builder on an accept loop of our own, with limits
//! against slow or abusive clients ([`HttpLimits`]): a client has `header_timeout` to send a
//! request's head (which also bounds an idle keep-alive connection: waiting for the next
//! request is waiting for its head), a request gets `request_timeout` to be answered, and at
//! most `max_connections` are open at once; a connection past the cap is closed as soon as
//! it is accepted, so `/healthz` answers again as soon as the slow ones time out.

use super::scheduler::{self, Running, Trigger};
use super::Shared;
use crate::state::{RunRecord, StateStore};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// The limits of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client has to send a request's complete head, from the moment the
    /// connection is ready for it (accepted, or the previous answer sent): slow or silent
    /// clients and idle keep-alive connections are closed after it.
    pub header_timeout: Duration,
    /// How long a request may take to be answered once its head is read (then 503).
    pub request_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

impl HttpLimits {
    /// The defaults, with `EBB_HTTP_HEADER_TIMEOUT_MS`, `EBB_HTTP_REQUEST_TIMEOUT_MS` and
    /// `EBB_HTTP_MAX_CONNECTIONS` from `env` where set to a positive number.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> HttpLimits {
        let num = |k: &str| env(k).and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0);
        let d = HttpLimits::default();
        HttpLimits {
            header_timeout: num("EBB_HTTP_HEADER_TIMEOUT_MS").map_or(d.header_timeout, Duration::from_millis),
            request_timeout: num("EBB_HTTP_REQUEST_TIMEOUT_MS").map_or(d.request_timeout, Duration::from_millis),
            max_connections: num("EBB_HTTP_MAX_CONNECTIONS").map_or(d.max_connections, |n| n as usize),
        }
    }
}

/// At most one log line per `every` for a recurring event (a flood of refused connections).
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    /// `Some(events skipped since the last line)` when a line is due.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < self.every) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// Serves the API on `listener` until `stop` turns `true`, then lets the requests in
/// progress finish (the caller bounds the wait).
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limits = shared.http;
    let app = router(shared.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused = Throttle {
        every: Duration::from_secs(10),
        last: None,
        skipped: 0,
    };
    let mut failed = Throttle {
        every: Duration::from_secs(10),
        last: None,
        skipped: 0,
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: wait a little rather than spin.
                if let Some(skipped) = failed.due() {
                    shared.log.error(
                        "http_accept_failed",
                        "cannot accept a connection",
                        &[("error", json!(e.to_string())), ("since_last", json!(skipped))],
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            shared.metrics.record_http_refused();
            if let Some(skipped) = refused.due() {
                shared.log.warn(
                    "http_connection_refused",
                    "too many connections open: a new one was closed at once",
                    &[
                        ("max_connections", json!(limits.max_connections)),
                        ("since_last", json!(skipped)),
                    ],
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                r = stop.wait_for(|s| *s) => r.is_ok(),
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
    drop(listener);
    // Every connection gives its slot back when it ends.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Runs listed by `/api/runs` unless `limit` says otherwise, and at most.
const DEFAULT_RUNS: i64 = 20;
const MAX_RUNS: i64 = 1000;
/// How long `POST …/runs` waits for the run's id before answering without it.
const RUN_ID_WAIT: Duration = Duration::from_secs(2);
/// A run still without a concurrency permit after this is answered `queued`.
const QUEUED_AFTER: Duration = Duration::from_millis(100);

/// The routes, with authentication and request counting.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/models", get(models))
        .route("/api/runs", get(runs))
        .route("/api/models/{name}/runs", post(trigger))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .route_layer(middleware::from_fn_with_state(shared.http.request_timeout, deadline))
        .route_layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

/// Answers 503 when a request takes longer than `request_timeout`.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {:.1} s and was abandoned",
                limit.as_secs_f64()
            ),
        ),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(token) = shared.token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <daemon.api_token>`",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

async fn count(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let response = next.run(req).await;
    shared.metrics.record_http(&route, response.status().as_u16());
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
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

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let names: Vec<(String, bool, bool, Option<f64>)> = {
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
                )
            })
            .collect()
    };
    let mut gauges = Vec::with_capacity(names.len());
    for (model, scheduled, running, next_run) in names {
        let last_success = match shared.store.get() {
            Some(s) => s
                .last_completed(&model)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.ended_at.as_deref().and_then(unix)),
            None => None,
        };
        gauges.push(super::metrics::ModelGauges {
            model,
            scheduled,
            running,
            last_success,
            next_run,
        });
    }
    let now = Utc::now().timestamp_millis() as f64 / 1000.0;
    let text = shared.metrics.render(&gauges, shared.not_ready().is_none(), now);
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

async fn models(State(shared): State<Arc<Shared>>) -> Response {
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
struct RunsQuery {
    model: Option<String>,
    limit: Option<i64>,
}

async fn runs(State(shared): State<Arc<Shared>>, Query(q): Query<RunsQuery>) -> Response {
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

async fn trigger(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
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
    shared.log.info(
        "run_requested",
        "run requested through the API",
        &[("model", json!(name))],
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::service::Service as _;

    #[tokio::test]
    async fn a_request_answered_too_late_gets_503() {
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }
        async fn quick() -> &'static str {
            "ok"
        }
        let app: Router = Router::new()
            .route("/slow", get(slow))
            .route("/quick", get(quick))
            .route_layer(middleware::from_fn_with_state(Duration::from_millis(100), deadline));
        let svc = hyper_util::service::TowerToHyperService::new(app);
        let ask = |path: &str| axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let started = std::time::Instant::now();
        let r = svc.call(ask("/slow")).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(svc.call(ask("/quick")).await.unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn limits_default_and_come_from_the_environment() {
        let d = HttpLimits::from_env(|_| None);
        assert_eq!(d, HttpLimits::default());
        assert_eq!(
            (d.header_timeout, d.request_timeout, d.max_connections),
            (Duration::from_secs(10), Duration::from_secs(30), 256)
        );
        let l = HttpLimits::from_env(|k| match k {
            "EBB_HTTP_HEADER_TIMEOUT_MS" => Some("1500".into()),
            "EBB_HTTP_MAX_CONNECTIONS" => Some("0".into()),
            _ => Some("x".into()),
        });
        assert_eq!(
            (l.header_timeout, l.request_timeout, l.max_connections),
            (Duration::from_millis(1500), Duration::from_secs(30), 256)
        );
    }
}

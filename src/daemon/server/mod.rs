//! The daemon's HTTP API (axum): `/healthz`, `/readyz`, `/metrics`, `/api/…`, and
//! `POST /webhooks/{model}` for signed events (`webhooks`).
//!
//! Everything but `/healthz` and the webhooks requires `Authorization: Bearer <daemon.api_token>` when a
//! token is configured (the daemon refuses to listen beyond loopback without one).
//! Errors are JSON `{"error": "…"}` with the status that fits. This file is the transport:
//! the accept loop, the limits, the router and its middleware (deadline, auth, counting);
//! what each endpoint answers is in `routes`.
//!
//! Served by hyper's HTTP/1.1 connection builder on an accept loop of our own, with limits
//! against slow or abusive clients ([`HttpLimits`]): a client has `header_timeout` to send a
//! request's head (which also bounds an idle keep-alive connection: waiting for the next
//! request is waiting for its head), a request gets `request_timeout` to be answered, and at
//! most `max_connections` are open at once; a connection past the cap is closed as soon as
//! it is accepted, so `/healthz` answers again as soon as the slow ones time out.

mod audit;
mod conflicts;
mod page;
mod routes;
mod webhooks;

use super::Shared;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use routes::{healthz, inbox, metrics, models, readyz, replay, runs, trigger};
use serde_json::json;
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
    fn every(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            skipped: 0,
        }
    }

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
    let limits = shared.http;
    let app = router(shared.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused = Throttle::every(Duration::from_secs(10));
    let mut failed = Throttle::every(Duration::from_secs(10));
    let mut not_allowed = Throttle::every(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer))
                if !crate::http::allow::allowed(&shared.allow, peer.ip())
                    && !shared.trusted.iter().any(|c| c.contains(peer.ip())) =>
            {
                // Not on `daemon.allow_ips`: closed before any HTTP is read.
                drop(stream);
                shared.metrics.record_http_not_allowed();
                if let Some(skipped) = not_allowed.due() {
                    tracing::warn!(
                        event = "http_connection_not_allowed",
                        peer = %peer.ip(),
                        since_last = skipped,
                        "a connection from an address not in `daemon.allow_ips` was closed"
                    );
                }
                continue;
            }
            Ok((stream, peer)) => (stream, peer.ip()),
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: wait a little rather than spin.
                if let Some(skipped) = failed.due() {
                    tracing::error!(
                        event = "http_accept_failed",
                        error = %e,
                        since_last = skipped,
                        "cannot accept a connection"
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
                tracing::warn!(
                    event = "http_connection_refused",
                    max_connections = limits.max_connections,
                    since_last = skipped,
                    "too many connections open: a new one was closed at once"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The handlers see the connection's peer (for `trusted_proxies`).
        let service = hyper_util::service::TowerToHyperService::new(app.clone().layer(axum::Extension(Peer(peer))));
        let stop = stop.clone();
        let tls = shared.tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(stream, service, limits, stop).await,
                // The handshake within the header timeout: a client that opens a connection
                // and says nothing holds a slot no longer than one that sends no headers.
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(tls, service, limits, stop).await,
                    Ok(Err(e)) => tracing::debug!(
                        event = "tls_handshake_failed",
                        %peer,
                        error = %e,
                        "a TLS handshake failed (an old TLS version, an untrusted certificate, plain HTTP on the HTTPS port)"
                    ),
                    Err(_) => tracing::debug!(event = "tls_handshake_failed", %peer, "a TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    // Every connection gives its slot back when it ends.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Serves one connection (plain or TLS) until it ends; when `stop` turns `true`, lets the
/// request in progress finish and closes.
async fn serve_connection<I>(
    io: I,
    service: hyper_util::service::TowerToHyperService<Router>,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        r = stop.wait_for(|s| *s) => r.is_ok(),
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// The routes, with authentication and request counting.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/models", get(models))
        .route("/api/runs", get(runs))
        .route("/api/models/{name}/runs", post(trigger))
        .route("/api/inbox/{name}", get(inbox))
        .route("/api/inbox/{name}/replay", post(replay))
        .route("/", get(page::status_page))
        .route("/api/conflicts", get(conflicts::list))
        .route("/api/conflicts/{name}/resolve", post(conflicts::resolve))
        .route("/api/audit", get(audit::list))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        // Signed by the sender: no bearer token; the body limit is the connection's.
        .route(
            "/webhooks/{model}",
            post(webhooks::receive).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .merge(api)
        .route_layer(middleware::from_fn_with_state(shared.http.request_timeout, deadline))
        .route_layer(middleware::from_fn_with_state(shared.clone(), count))
        .layer(middleware::from_fn_with_state(shared.clone(), forwarded))
        .with_state(shared)
}

/// The address a connection came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub std::net::IpAddr);

/// For a connection from a trusted proxy, `daemon.allow_ips` checked against the client
/// `X-Forwarded-For` names (403 when it is not allowed, or names no address to believe).
async fn forwarded(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(Peer(peer)) = req.extensions().get::<Peer>().copied() else {
        return next.run(req).await;
    };
    if shared.trusted.is_empty() || !shared.trusted.iter().any(|c| c.contains(peer)) {
        return next.run(req).await;
    }
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = crate::http::allow::client(peer, &shared.trusted, &hops);
    match client {
        Some(ip) if crate::http::allow::allowed(&shared.allow, ip) => next.run(req).await,
        _ => {
            shared.metrics.record_http_not_allowed();
            tracing::warn!(
                event = "http_request_not_allowed",
                proxy = %peer,
                client = client.map(|c| c.to_string()).as_deref(),
                "a request through a trusted proxy from an address not in `daemon.allow_ips` was refused (403)"
            );
            let detail =
                json!({ "proxy": peer.to_string(), "client": client.map(|c| c.to_string()), "rule": "allow_ips" });
            let (method, path) = (req.method().to_string(), req.uri().path().to_string());
            audit::refused(&shared, StatusCode::FORBIDDEN, None, &method, &path, detail).await;
            error(
                StatusCode::FORBIDDEN,
                "your address is not allowed (`daemon.allow_ips`)",
            )
        }
    }
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

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An API token the daemon takes: its name (logged, and recorded as who decided), the
/// secret, and its role.
#[derive(Clone)]
pub(crate) struct Caller {
    pub name: String,
    pub secret: String,
    pub role: crate::config::project::Role,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Caller({}, {})", self.name, self.role.as_str())
    }
}

/// Who made a request, for the handlers: `token:NAME`, or `api` on a daemon without
/// tokens.
#[derive(Clone, Debug)]
pub(crate) struct Who(pub String);

/// The role a request needs: reading is a viewer's (but the audit log is an admin's);
/// triggering runs, replaying dead letters and resolving conflicts an operator's; anything
/// else an admin's.
fn needs(method: &axum::http::Method, path: &str) -> crate::config::project::Role {
    use crate::config::project::Role;
    if path == "/api/audit" {
        return Role::Admin;
    }
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return Role::Viewer;
    }
    let operator = (path.starts_with("/api/models/") && path.ends_with("/runs"))
        || (path.starts_with("/api/inbox/") && path.ends_with("/replay"))
        || (path.starts_with("/api/conflicts/") && path.ends_with("/resolve"));
    if operator {
        Role::Operator
    } else {
        Role::Admin
    }
}

async fn auth(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    if shared.callers.is_empty() {
        req.extensions_mut().insert(Who("api".into()));
        return next.run(req).await;
    }
    let header_value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    // `Bearer <token>`, or for a browser (the status page) HTTP Basic with the token as
    // the password and any user name.
    let given: Option<String> = header_value.and_then(|v| {
        if let Some(b) = v.strip_prefix("Bearer ") {
            return Some(b.trim().to_string());
        }
        let basic = v.strip_prefix("Basic ")?;
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        text.split_once(':').map(|(_, p)| p.to_string())
    });
    // Every token is compared (in constant time), whichever matches.
    let caller = given.as_deref().and_then(|g| {
        let mut found = None;
        for c in &shared.callers {
            if same(g.as_bytes(), c.secret.as_bytes()) && found.is_none() {
                found = Some(c.clone());
            }
        }
        found
    });
    match caller {
        Some(c) => {
            let needed = needs(req.method(), req.uri().path());
            if c.role < needed {
                tracing::warn!(
                    event = "forbidden",
                    token = %c.name,
                    role = c.role.as_str(),
                    needs = needed.as_str(),
                    method = req.method().as_str(),
                    path = req.uri().path(),
                    "a token's role does not allow the request: refused (403)"
                );
                let detail = json!({ "role": c.role.as_str(), "needs": needed.as_str() });
                audit::refused(
                    &shared,
                    StatusCode::FORBIDDEN,
                    Some(&c.name),
                    req.method().as_str(),
                    req.uri().path(),
                    detail,
                )
                .await;
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "token `{}` is a {}: {} {} needs {}",
                        c.name,
                        c.role.as_str(),
                        req.method(),
                        req.uri().path(),
                        needed.as_str()
                    ),
                );
            }
            req.extensions_mut().insert(Who(format!("token:{}", c.name)));
            next.run(req).await
        }
        None => {
            let peer = req.extensions().get::<Peer>().map(|p| p.0.to_string());
            let detail = json!({ "peer": peer, "credentials": if given.is_some() { "wrong" } else { "missing" } });
            audit::refused(
                &shared,
                StatusCode::UNAUTHORIZED,
                None,
                req.method().as_str(),
                req.uri().path(),
                detail,
            )
            .await;
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <daemon.api_token>`",
            );
            // Two challenges: a bearer token for programs, HTTP Basic for a browser.
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ebb\""),
            );
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

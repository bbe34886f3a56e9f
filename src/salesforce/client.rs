//! One Salesforce connection: its token, its limits and what the org says of its daily API
//! allocation, shared by every sync on the connection in this process.
//!
//! Every request goes through [`Conn::request`], which waits for the connection's
//! concurrency slot and rate window, adds the token, reads `Sforce-Limit-Info`, replays once
//! with a new token on 401 `INVALID_SESSION_ID`, and sorts failures into transient (retried
//! by the caller) and fatal (the run stops, keeping what was confirmed): a [`CallError`],
//! which each direction turns into its own (the destination's `CallError`).

use super::auth::{Auth, AuthError, ConnectionError};
use crate::config::env;
use crate::config::project::SalesforceConnection;
use crate::http::limit::{Limits, Permit};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub const DEFAULT_VERSION: &str = "62.0";
pub const DEFAULT_CONCURRENCY: usize = 4;
pub const DEFAULT_BULK_THRESHOLD: u64 = 10_000;
pub const DEFAULT_DAILY_RESERVE: u64 = 1_000;

/// `Accept: text/csv`, sent when fetching Bulk results (query and ingest jobs), which are
/// CSV.
pub const ACCEPT_CSV: (HeaderName, HeaderValue) = (ACCEPT, HeaderValue::from_static("text/csv"));

/// A Salesforce connection, shared by every sync that names it.
pub struct Conn {
    pub name: String,
    pub version: String,
    auth: Auth,
    limits: Arc<Limits>,
    client: reqwest::Client,
    pub concurrency: usize,
    pub bulk_threshold: u64,
    reserve: u64,
    /// `(used, max)` from the latest `Sforce-Limit-Info`.
    usage: Mutex<Option<(u64, u64)>>,
    /// Data API requests made (the token endpoint is not counted: it is not an API call).
    calls: AtomicU64,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Worth retrying: timeouts, connection errors, 429, 5xx, a token endpoint unavailable,
    /// too many requests at once. `retry_after` is the org's `Retry-After`, when it sent one.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Not worth retrying: credentials refused, 4xx, a redirect, a malformed or oversized
    /// answer, the daily API allocation spent down to its reserve.
    #[error("{0}")]
    Fatal(String),
}

impl From<CallError> for crate::http::retry::Failed {
    fn from(e: CallError) -> Self {
        use crate::http::retry::Failed;
        match e {
            CallError::Transient { message, retry_after } => Failed::Transient { message, retry_after },
            CallError::Fatal(m) => Failed::Final(m),
        }
    }
}

/// A successful (2xx or 300) answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Conn {
    /// The connection `name`, shared within the process (a changed configuration makes a
    /// new one).
    pub fn shared(name: &str, c: &SalesforceConnection, project_dir: &Path) -> Result<Arc<Conn>, ConnectionError> {
        /// Connection name → (its configuration, the connection).
        type Registry = Mutex<HashMap<String, (String, Arc<Conn>)>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let fingerprint = format!("{c:?}");
        let registry = REGISTRY.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((fp, conn)) = map.get(name) {
            if *fp == fingerprint {
                return Ok(conn.clone());
            }
        }
        let conn = Arc::new(Conn::new(name, c, project_dir)?);
        map.insert(name.to_string(), (fingerprint, conn.clone()));
        Ok(conn)
    }

    fn new(name: &str, c: &SalesforceConnection, project_dir: &Path) -> Result<Conn, ConnectionError> {
        let instance = env::expand_env(&c.instance_url).map_err(|e| ConnectionError::setting(name, e.to_string()))?;
        let parsed = url::Url::parse(&instance)
            .map_err(|e| ConnectionError::setting(name, format!("`instance_url` `{instance}` is not a URL ({e})")))?;
        if parsed.scheme() != "https" && !is_loopback(&parsed) {
            return Err(ConnectionError::setting(
                name,
                "`instance_url` must be https (plain http only reaches a sandbox on this machine)",
            ));
        }
        let concurrency = c
            .max_concurrency
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);
        let rate = c.rate_limit.as_deref().and_then(crate::http::limit::parse_rate);
        Ok(Conn {
            name: name.to_string(),
            version: c.api_version.clone().unwrap_or_else(|| DEFAULT_VERSION.into()),
            auth: Auth::new(name, c, project_dir)?,
            limits: Limits::shared(name, rate, concurrency),
            client: crate::http::client().map_err(ConnectionError::client)?,
            concurrency,
            bulk_threshold: c.bulk_threshold.map(u64::from).unwrap_or(DEFAULT_BULK_THRESHOLD),
            reserve: c.daily_api_reserve.map(u64::from).unwrap_or(DEFAULT_DAILY_RESERVE),
            usage: Mutex::new(None),
            calls: AtomicU64::new(0),
        })
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `(used, max)` of the org's daily API allocation, as last reported.
    pub fn usage(&self) -> Option<(u64, u64)> {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note_usage(&self, headers: &reqwest::header::HeaderMap) {
        let Some(v) = headers.get("sforce-limit-info").and_then(|v| v.to_str().ok()) else {
            return;
        };
        if let Some(u) = parse_limit_info(v) {
            *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(u);
        }
    }

    fn daily_limit_message(&self, used: u64, max: u64) -> String {
        format!(
            "connection `{}`: the org's daily API allocation is spent down to its reserve (api-usage {used}/{max}, \
             `daily_api_reserve: {}`): no new requests are started; rows confirmed so far are kept and the next \
             run resumes",
            self.name, self.reserve
        )
    }

    /// `path` under `/services/data/vXX.X/`.
    pub fn data_path(&self, path: &str) -> String {
        format!("/services/data/v{}/{}", self.version, path.trim_start_matches('/'))
    }

    /// One API request. `path` starts with `/services/…` (or is a full URL on the
    /// instance). `extra` headers are sent besides the token and `Accept:
    /// application/json` (an `Accept` among them replaces that one). The answer's body is
    /// read up to [`crate::http::DATA_ANSWER_CAP`].
    pub async fn request(
        &self,
        counter: &AtomicU64,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        extra: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        // The request's slot is held while its answer arrives.
        let (resp, _permit) = self
            .request_raw(counter, method.clone(), path, body, extra, timeout)
            .await?;
        let status = resp.status();
        let body = crate::http::read_text(resp, crate::http::DATA_ANSWER_CAP)
            .await
            .map_err(|e| self.body_error(&method, path, e))?;
        Ok(Answer { status, body })
    }

    /// A failure to read a successful answer's body: a transfer cut short is transient (the
    /// request is retried), an oversized answer is fatal.
    pub fn body_error(&self, method: &Method, path: &str, e: crate::http::BodyError) -> CallError {
        let message = format!("{method} {path} on connection `{}`: {e}", self.name);
        if e.is_transient() {
            CallError::Transient {
                message,
                retry_after: None,
            }
        } else {
            CallError::Fatal(message)
        }
    }

    /// One API request, as [`Conn::request`], answering the successful response with its
    /// body unread (for answers read as a stream, such as Bulk results) and the request's
    /// slot on the connection, to hold until the body is read.
    pub async fn request_raw(
        &self,
        counter: &AtomicU64,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        extra: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<(reqwest::Response, Permit), CallError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
        // The token first: the rate window counts API requests, not token fetches.
        let mut token = self.auth.token().await.map_err(auth_error)?;
        let mut permit = self.limits.acquire().await;
        // Checked once the request may start, so it sees the usage the requests before it
        // were answered with.
        if let Some((used, max)) = self.usage() {
            if max.saturating_sub(used) <= self.reserve {
                return Err(CallError::Fatal(self.daily_limit_message(used, max)));
            }
        }
        let mut replayed = false;
        loop {
            // Paths come from ebb or from Salesforce's answers (`nextRecordsUrl`,
            // `contentUrl`): either way the token only goes to the instance it was issued for.
            let Some(url) = crate::http::join_same_origin(&token.instance_url, path) else {
                return Err(CallError::Fatal(format!(
                    "{method} on connection `{}`: `{}` is not a path on the instance {}; ebb sends the token nowhere else",
                    self.name,
                    crate::redact::url(path),
                    token.instance_url
                )));
            };
            let url = url.to_string();
            let mut req = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(&token.access_token)
                .headers(headers.clone())
                .timeout(timeout);
            if let Some((content_type, bytes)) = &body {
                req = req.header("Content-Type", *content_type).body(bytes.clone());
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            counter.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Err(CallError::Transient {
                        message: format!(
                            "{method} {url}: {}",
                            if e.is_timeout() {
                                format!("no answer within {} s", timeout.as_secs())
                            } else {
                                crate::diagnostics::root_cause(&e)
                            }
                        ),
                        retry_after: None,
                    })
                }
            };
            let status = resp.status();
            self.note_usage(resp.headers());
            if status.is_success() || status == StatusCode::MULTIPLE_CHOICES {
                self.limits.succeeded();
                return Ok((resp, permit));
            }
            if status.is_redirection() {
                return Err(CallError::Fatal(format!(
                    "{method} {path} on connection `{}`: {}",
                    self.name,
                    crate::http::redirect_message(status, resp.headers())
                )));
            }
            let text = crate::http::read_prefix(resp, crate::http::ERROR_ANSWER_CAP).await;
            let (code, message) = rest_error(&text);
            if status == StatusCode::UNAUTHORIZED && code == "INVALID_SESSION_ID" {
                if !replayed {
                    // The session expired: a new token, once, and the same request again.
                    token = self.auth.renew(&token.access_token).await.map_err(auth_error)?;
                    replayed = true;
                    continue;
                }
                // The new token expired too (other requests used it up, or the org's
                // session timeout is very short): the batch is retried with backoff, and
                // its next attempt renews again.
                self.auth.renew(&token.access_token).await.map_err(auth_error)?;
                return Err(CallError::Transient {
                    message: format!(
                        "{method} {path} on connection `{}`: the session expired again right after renewal",
                        self.name
                    ),
                    retry_after: None,
                });
            }
            let what = format!(
                "{method} {path} on connection `{}`: HTTP {}",
                self.name,
                status.as_u16()
            );
            let detail = if code.is_empty() {
                message.clone()
            } else {
                format!("{code}: {message}")
            };
            if status == StatusCode::FORBIDDEN && code == "REQUEST_LIMIT_EXCEEDED" {
                // Two causes share this code (docs/salesforce-protocol.md §5): the daily
                // allocation is spent (the usage header says so, or the message names
                // TotalRequests), which is not worth retrying today; or too many long
                // requests at once, which is.
                let spent = match self.usage() {
                    Some((used, max)) => used >= max,
                    None => message.contains("TotalRequests"),
                };
                if spent || message.contains("TotalRequests") {
                    let (used, max) = self.usage().unwrap_or((0, 0));
                    return Err(CallError::Fatal(format!(
                        "{} ({detail})",
                        self.daily_limit_message(used, max)
                    )));
                }
                self.limits.too_many(&mut permit);
                return Err(CallError::Transient {
                    message: format!("{what}: {detail} (too many requests at once)"),
                    retry_after: None,
                });
            }
            if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
            {
                return Err(CallError::Transient {
                    message: format!("{what}: {detail}"),
                    retry_after: None,
                });
            }
            return Err(CallError::Fatal(format!("{what}: {detail}")));
        }
    }

    /// A JSON request; the answer's body parsed.
    pub async fn json(
        &self,
        counter: &AtomicU64,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, serde_json::Value), CallError> {
        self.json_with(counter, method, path, body, &[]).await
    }

    /// A JSON request with `extra` headers (as [`Conn::request`]); the answer's body parsed.
    pub async fn json_with(
        &self,
        counter: &AtomicU64,
        method: Method,
        path: &str,
        body: Option<String>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<(StatusCode, serde_json::Value), CallError> {
        let a = self
            .request(
                counter,
                method.clone(),
                path,
                body.map(|b| ("application/json", b.into_bytes())),
                extra,
                Duration::from_secs(120),
            )
            .await?;
        if a.body.trim().is_empty() {
            return Ok((a.status, serde_json::Value::Null));
        }
        let v = serde_json::from_str(&a.body).map_err(|e| {
            CallError::Fatal(format!(
                "{method} {path} on connection `{}`: the answer is not JSON ({e}): {}",
                self.name,
                a.body.chars().take(200).collect::<String>()
            ))
        })?;
        Ok((a.status, v))
    }
}

fn auth_error(e: AuthError) -> CallError {
    match e {
        AuthError::Refused(m) => CallError::Fatal(m),
        AuthError::Unavailable(m) => CallError::Transient {
            message: m,
            retry_after: None,
        },
    }
}

/// `api-usage=18/5000` (possibly followed by `; per-app-api-usage=…`) → `(18, 5000)`.
pub fn parse_limit_info(v: &str) -> Option<(u64, u64)> {
    let rest = &v[v.find("api-usage=")? + "api-usage=".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit() && c != '/')
        .unwrap_or(rest.len());
    let (used, max) = rest[..end].split_once('/')?;
    Some((used.parse().ok()?, max.parse().ok()?))
}

/// The `errorCode` and `message` of a REST error body (an array of errors, or one object).
pub fn rest_error(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let first = match &v {
        serde_json::Value::Array(a) => a.first().cloned().unwrap_or_default(),
        other => other.clone(),
    };
    match (first["errorCode"].as_str(), first["message"].as_str()) {
        (code, Some(m)) => (code.unwrap_or("").to_string(), m.to_string()),
        _ => (String::new(), body.chars().take(300).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_info() {
        assert_eq!(parse_limit_info("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)"),
            Some((25, 5000))
        );
        assert_eq!(parse_limit_info("nothing"), None);
    }

    #[test]
    fn rest_errors() {
        assert_eq!(
            rest_error(r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#),
            ("INVALID_SESSION_ID".into(), "Session expired or invalid".into())
        );
        assert_eq!(rest_error("oops").1, "oops");
    }
}

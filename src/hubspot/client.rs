//! One HubSpot connection: its base URL, its token, its limits, shared by every sync on
//! the connection in this process (the destination's writes and the source's reads spend
//! one account's allocation).
//!
//! Every request goes through [`Conn::call`], which waits for the connection's concurrency
//! slot and configured `rate_limit`, then for room in the account's rate window as HubSpot
//! reports it on every answer ([`super::pace`]), adds the token, and sorts failures: 429 `SECONDLY` and
//! `TEN_SECONDLY_ROLLING` (or without a policy), 5xx, timeouts and connection errors are
//! transient (retried by the caller after `Retry-After`); 429 `DAILY` is [`CallError::Daily`]
//! (the run stops, the next one resumes); 401/403, other 4xx, redirects and answers that
//! are not JSON are fatal. Nothing of the token reaches a message.

use super::pace::{Pace, Report};
use crate::config::env::expand_env;
use crate::config::project::HubspotConnection;
use crate::http::limit::Limits;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Requests in flight unless the connection says otherwise.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
/// HubSpot's API, unless the connection names another base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Worth retrying: timeouts, connection errors, 429 of the short windows, 5xx.
    /// `retry_after` is HubSpot's `Retry-After`, when it sent one.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 429 `DAILY`: the account's daily allocation is spent; nothing more today.
    #[error("{0} (the daily allocation is spent: the run stops; the next one resumes)")]
    Daily(String),
    /// Not worth retrying: credentials refused, other 4xx, a redirect, an answer that is
    /// not JSON or is too large.
    #[error("{0}")]
    Fatal(String),
}

impl From<CallError> for crate::http::retry::Failed {
    fn from(e: CallError) -> Self {
        use crate::http::retry::Failed;
        match e {
            CallError::Transient { message, retry_after } => Failed::Transient { message, retry_after },
            daily @ CallError::Daily(_) => Failed::Final(daily.to_string()),
            CallError::Fatal(m) => Failed::Final(m),
        }
    }
}

/// Why a connection cannot be opened: a setting, named.
#[derive(Debug, Clone, thiserror::Error)]
#[error("connection `{connection}` (hubspot): {why}")]
pub struct ConnectionError {
    pub connection: String,
    pub why: String,
}

/// A HubSpot connection, shared by every sync that names it.
pub struct Conn {
    pub name: String,
    base: String,
    auth: super::auth::Auth,
    limits: Arc<Limits>,
    /// The account's rate window, from the `X-HubSpot-RateLimit-*` headers of the answers.
    pace: Pace,
    client: reqwest::Client,
    pub max_concurrency: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// The connection `name`, shared within the process (a changed configuration makes a
    /// new one).
    pub fn shared(name: &str, c: &HubspotConnection) -> Result<Arc<Conn>, ConnectionError> {
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
        let conn = Arc::new(Conn::new(name, c)?);
        map.insert(name.to_string(), (fingerprint, conn.clone()));
        Ok(conn)
    }

    fn new(name: &str, c: &HubspotConnection) -> Result<Conn, ConnectionError> {
        let setting = |why: String| ConnectionError {
            connection: name.to_string(),
            why,
        };
        let base = match &c.base_url {
            Some(u) => expand_env(u).map_err(|e| setting(format!("`base_url`: {e}")))?,
            None => DEFAULT_BASE_URL.to_string(),
        };
        let url = reqwest::Url::parse(&base).map_err(|e| setting(format!("`base_url`: {e}")))?;
        let loopback = url.host().is_some_and(|h| crate::http::is_loopback(&h));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(setting(format!(
                "`base_url` {base} must be https (plain http only on loopback)"
            )));
        }
        let base = base.trim_end_matches('/').to_string();
        let rate = match &c.rate_limit {
            Some(text) => Some(crate::http::limit::parse_rate(text).ok_or_else(|| {
                setting(format!(
                    "`rate_limit: {text}` is not a rate limit (write e.g. `19/second`)"
                ))
            })?),
            None => None,
        };
        let max_concurrency = c.max_concurrency.map_or(DEFAULT_MAX_CONCURRENCY, |n| n.max(1) as usize);
        let client = crate::http::client().map_err(|e| setting(e.to_string()))?;
        Ok(Conn {
            name: name.to_string(),
            auth: super::auth::Auth::new(name, c, &base, client.clone()).map_err(setting)?,
            base,
            limits: Limits::shared(name, rate, max_concurrency),
            pace: Pace::default(),
            client,
            max_concurrency,
        })
    }

    /// One request to `{base}/crm/v3/{path}` (`path` may carry a query), counted in
    /// `calls`; the answer's JSON (`null` for a 204). A 401 is replayed once with a new
    /// token when the connection can get one (OAuth).
    pub async fn call(
        &self,
        calls: &AtomicU64,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let target = format!(
            "{method} /crm/v3/{} (connection `{}`)",
            path.split('?').next().unwrap_or(path),
            self.name
        );
        let mut replayed = false;
        loop {
            match self.once(calls, &method, path, body, &target).await {
                Err(Unauthorized { token, .. }) if !replayed && self.auth.renewable() => {
                    self.auth.stale(&token);
                    replayed = true;
                    tracing::info!(
                        event = "token_renewed",
                        connection = %self.name,
                        "HubSpot refused the access token; a new one is fetched"
                    );
                }
                Err(Unauthorized { message, .. }) => return Err(CallError::Fatal(message)),
                Ok(r) => return r,
            }
        }
    }

    async fn once(
        &self,
        calls: &AtomicU64,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        target: &str,
    ) -> Result<Result<Value, CallError>, Unauthorized> {
        let url = format!("{}/crm/v3/{path}", self.base);
        let mut permit = self.limits.acquire().await;
        let mut ticket = self.pace.start().await;
        // The token is asked for once the request may go: requests waiting for a slot
        // when a token lapses then all get the renewed one, not a 401 each.
        let token = match self.auth.token(calls).await {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        calls.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&token)
            .timeout(TIMEOUT);
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Ok(Err(CallError::Transient {
                    message: format!("{target} failed: {}", e.without_url()),
                    retry_after: None,
                }))
            }
        };
        let status = response.status();
        let report = Report::from_headers(response.headers());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_redirection() {
            return Ok(Err(CallError::Fatal(format!(
                "{target} answered {}",
                crate::http::redirect_message(status, response.headers())
            ))));
        }
        if status != StatusCode::TOO_MANY_REQUESTS {
            ticket.answered(report);
        }
        if status == StatusCode::NO_CONTENT {
            self.limits.succeeded();
            return Ok(Ok(Value::Null));
        }
        if !status.is_success() {
            let text = crate::http::read_prefix(response, crate::http::ERROR_ANSWER_CAP).await;
            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let said = answer["message"]
                .as_str()
                .map_or_else(|| text.chars().take(300).collect(), str::to_string);
            let message = crate::redact::text(&format!("{target}: HTTP {status}: {said}"));
            if status == StatusCode::UNAUTHORIZED {
                return Err(Unauthorized { message, token });
            }
            return Ok(Err(match status.as_u16() {
                429 => match answer["policyName"].as_str() {
                    Some("DAILY") => {
                        ticket.answered(report);
                        CallError::Daily(message)
                    }
                    policy => {
                        let retry_after = retry_after.unwrap_or(Duration::from_secs(1));
                        if policy.is_none() {
                            self.limits.too_many(&mut permit);
                        }
                        // The search endpoints' second is theirs alone: only its caller waits.
                        let hold = if policy == Some("SECONDLY") {
                            Duration::ZERO
                        } else {
                            retry_after
                        };
                        ticket.refused(report, hold);
                        CallError::Transient {
                            message,
                            retry_after: Some(retry_after),
                        }
                    }
                },
                s if s >= 500 => CallError::Transient { message, retry_after },
                _ => CallError::Fatal(message),
            }));
        }
        let text = match crate::http::read_text(response, crate::http::DATA_ANSWER_CAP).await {
            Ok(t) => t,
            Err(e) => {
                let message = format!("{target}: HTTP {status}, but {e}");
                return Ok(Err(if e.is_transient() {
                    CallError::Transient {
                        message,
                        retry_after: None,
                    }
                } else {
                    CallError::Fatal(message)
                }));
            }
        };
        self.limits.succeeded();
        Ok(serde_json::from_str(&text)
            .map_err(|e| CallError::Fatal(format!("{target}: HTTP {status} with an answer that is not JSON ({e})"))))
    }
}

/// A 401, with its message: replayed with a new token when the connection can get one.
struct Unauthorized {
    message: String,
    /// The token refused.
    token: String,
}

//! A HubSpot connection's credentials: a private app's token, or a public app's OAuth
//! refresh token exchanged for short-lived access tokens; either is sent as
//! `Authorization: Bearer`.
//!
//! OAuth (docs/salesforce-protocol.md §9): `POST {base}/oauth/v1/token`, form-urlencoded
//! `grant_type=refresh_token&client_id&client_secret&refresh_token`, answers
//! `{access_token, refresh_token, expires_in, token_type}`. The access token is kept until
//! shortly before `expires_in` ends (a tenth of its life, at most a minute), and dropped
//! when HubSpot refuses it ([`Auth::stale`]: [`super::Conn::call`] replays the request
//! once). A refresh token in the answer replaces the one in use. One fetch at a time: the
//! requests that need a token meanwhile wait for it. A 4xx from the token endpoint
//! (`BAD_REFRESH_TOKEN`, a wrong client id or secret) is fatal and remembered, so a run does
//! not ask again; a 429, 5xx, timeout or lost connection is transient. No message holds the
//! client secret, the refresh token or an access token.

use super::client::CallError;
use crate::config::env::expand_env;
use crate::config::project::HubspotConnection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an access token's life given up to renew it early.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// How a connection authenticates.
pub(crate) enum Auth {
    /// A private app's token: it does not expire, so a 401 is final.
    Token(String),
    /// A public app's refresh token, exchanged for access tokens.
    Refresh(Box<Refresh>),
}

/// The OAuth refresh-token grant of one connection.
pub(crate) struct Refresh {
    connection: String,
    url: String,
    client_id: String,
    client_secret: String,
    client: reqwest::Client,
    cache: Mutex<Cache>,
    /// Held while a token is fetched, so that one request fetches and the others wait.
    fetching: tokio::sync::Mutex<()>,
}

struct Cache {
    /// The refresh token in use: the configured one, or the last one HubSpot gave.
    refresh_token: String,
    /// The access token and when to stop using it.
    access: Option<(String, Instant)>,
    /// Why the token endpoint refused the grant: every later request fails the same way.
    refused: Option<String>,
}

impl Auth {
    /// The credentials of connection `name`, whose API is at `base`: `Err` names the
    /// setting at fault.
    pub(crate) fn new(name: &str, c: &HubspotConnection, base: &str, client: reqwest::Client) -> Result<Auth, String> {
        let setting = |field: &str, value: &Option<String>| -> Result<Option<String>, String> {
            match value {
                None => Ok(None),
                Some(v) => match expand_env(v) {
                    Err(e) => Err(format!("`{field}`: {e}")),
                    Ok(v) if v.is_empty() => Err(format!("`{field}` is empty")),
                    Ok(v) => Ok(Some(v)),
                },
            }
        };
        let token = setting("token", &c.token)?;
        let oauth = [
            setting("client_id", &c.client_id)?,
            setting("client_secret", &c.client_secret)?,
            setting("refresh_token", &c.refresh_token)?,
        ];
        match (token, oauth) {
            (Some(t), [None, None, None]) => Ok(Auth::Token(t)),
            (None, [Some(client_id), Some(client_secret), Some(refresh_token)]) => {
                Ok(Auth::Refresh(Box::new(Refresh {
                    connection: name.to_string(),
                    url: format!("{}/oauth/v1/token", base.trim_end_matches('/')),
                    client_id,
                    client_secret,
                    client,
                    cache: Mutex::new(Cache {
                        refresh_token,
                        access: None,
                        refused: None,
                    }),
                    fetching: tokio::sync::Mutex::new(()),
                })))
            }
            (Some(_), _) => Err(
                "give `token` (a private app) or `client_id`, `client_secret` and `refresh_token` (OAuth), not both"
                    .into(),
            ),
            (None, _) => Err(
                "give `token` (a private app), or all of `client_id`, `client_secret` and `refresh_token` (OAuth)"
                    .into(),
            ),
        }
    }

    /// The token to send now; an OAuth connection fetches one when it has none that is
    /// fresh, counting the request in `calls`.
    pub(crate) async fn token(&self, calls: &AtomicU64) -> Result<String, CallError> {
        match self {
            Auth::Token(t) => Ok(t.clone()),
            Auth::Refresh(r) => r.token(calls).await,
        }
    }

    /// Whether a refused token can be replaced by another.
    pub(crate) fn renewable(&self) -> bool {
        matches!(self, Auth::Refresh(_))
    }

    /// `token` was refused: the next [`Auth::token`] fetches a new one (unless another
    /// request already has).
    pub(crate) fn stale(&self, token: &str) {
        if let Auth::Refresh(r) = self {
            let mut cache = r.lock();
            if cache.access.as_ref().is_some_and(|(t, _)| t == token) {
                cache.access = None;
            }
        }
    }
}

impl Refresh {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached access token while it is fresh, or the remembered refusal.
    fn cached(&self) -> Option<Result<String, CallError>> {
        let cache = self.lock();
        if let Some(why) = &cache.refused {
            return Some(Err(CallError::Fatal(why.clone())));
        }
        match &cache.access {
            Some((t, until)) if Instant::now() < *until => Some(Ok(t.clone())),
            _ => None,
        }
    }

    async fn token(&self, calls: &AtomicU64) -> Result<String, CallError> {
        if let Some(t) = self.cached() {
            return t;
        }
        let _one = self.fetching.lock().await;
        if let Some(t) = self.cached() {
            return t;
        }
        calls.fetch_add(1, Ordering::Relaxed);
        match self.fetch().await {
            Ok(t) => Ok(t),
            Err(CallError::Fatal(why)) => {
                self.lock().refused = Some(why.clone());
                Err(CallError::Fatal(why))
            }
            Err(e) => Err(e),
        }
    }

    /// `text` with the secrets this grant holds masked, should an answer echo one.
    fn scrub(&self, text: &str) -> String {
        let cache = self.lock();
        let mut out = text.to_string();
        let access = cache.access.as_ref().map(|(t, _)| t.as_str());
        for secret in [
            Some(self.client_secret.as_str()),
            Some(cache.refresh_token.as_str()),
            access,
        ]
        .into_iter()
        .flatten()
        .filter(|s| s.len() >= 4)
        {
            out = out.replace(secret, "…");
        }
        out
    }

    /// One token request: the new access token, cached with its deadline.
    async fn fetch(&self) -> Result<String, CallError> {
        let refresh_token = self.lock().refresh_token.clone();
        let who = format!(
            "connection `{}` (hubspot): the token endpoint POST /oauth/v1/token",
            self.connection
        );
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.client_secret)
            .append_pair("refresh_token", &refresh_token)
            .finish();
        let sent = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .timeout(TIMEOUT)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(CallError::Transient {
                    message: format!("{who} failed: {}", crate::diagnostics::root_cause(&e.without_url())),
                    retry_after: None,
                })
            }
        };
        let status = response.status();
        if status.is_redirection() {
            return Err(CallError::Fatal(format!(
                "{who} answered {}",
                crate::http::redirect_message(status, response.headers())
            )));
        }
        let text = match crate::http::read_text(response, crate::http::TOKEN_ANSWER_CAP).await {
            Ok(t) => t,
            Err(e) if e.is_transient() => {
                return Err(CallError::Transient {
                    message: format!("{who}: HTTP {status}, but {e}"),
                    retry_after: None,
                })
            }
            Err(e) => return Err(CallError::Fatal(format!("{who}: HTTP {status}, but {e}"))),
        };
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            // HubSpot: `{"status":"BAD_REFRESH_TOKEN","message":"missing or invalid refresh
            // token"}`; an OAuth server's `{"error":"invalid_grant",…}` is read too.
            let code = ["status", "error", "category"]
                .iter()
                .find_map(|k| answer[k].as_str().filter(|s| *s != "error"))
                .unwrap_or("");
            let said = answer["message"]
                .as_str()
                .or(answer["error_description"].as_str())
                .map_or_else(|| text.chars().take(200).collect(), str::to_string);
            let said = match code {
                "" => said,
                code => format!("{code}: {said}"),
            };
            let said = self.scrub(&crate::redact::text(&said));
            let message = format!("{who} answered HTTP {}: {}", status.as_u16(), said.trim());
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(CallError::Transient {
                    message,
                    retry_after: None,
                });
            }
            let hint = if code == "BAD_REFRESH_TOKEN" || code == "invalid_grant" {
                "the refresh token is revoked or wrong (the app was uninstalled?): install the app again and set the new one in `refresh_token`'s variable"
            } else {
                "check `client_id`, `client_secret` and `refresh_token`: HubSpot refuses them"
            };
            return Err(CallError::Fatal(format!("{message}; {hint}")));
        }
        let Some(access) = answer["access_token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(CallError::Fatal(format!(
                "{who} answered HTTP {status} without an access_token"
            )));
        };
        let life = answer["expires_in"]
            .as_u64()
            .or_else(|| answer["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .map_or(Duration::from_secs(1800), Duration::from_secs);
        let margin = (life / 10).min(MAX_MARGIN);
        let mut cache = self.lock();
        if let Some(rotated) = answer["refresh_token"].as_str().filter(|t| !t.is_empty()) {
            cache.refresh_token = rotated.to_string();
        }
        cache.access = Some((access.to_string(), Instant::now() + life - margin));
        tracing::debug!(
            event = "token_fetched",
            connection = %self.connection,
            expires_in = life.as_secs(),
            "HubSpot access token fetched"
        );
        Ok(access.to_string())
    }
}

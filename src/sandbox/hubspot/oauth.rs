//! OAuth on the sandbox's HubSpot API: `POST /oauth/v1/token` with the refresh-token grant,
//! the access tokens it issues, and how a bearer token is judged (the private app's token,
//! or an issued access token still alive).
//!
//! The token endpoint takes a form-urlencoded body
//! `grant_type=refresh_token&client_id&client_secret&refresh_token` and answers
//! `{"token_type":"bearer","refresh_token","access_token","expires_in"}`. A wrong refresh
//! token is 400 `{"status":"BAD_REFRESH_TOKEN","message":"missing or invalid refresh token"}`
//! (HubSpot's answer); a wrong client id or secret, a missing or other grant type are 400
//! with `BAD_CLIENT_ID`, `BAD_CLIENT_SECRET` and `BAD_GRANT_TYPE` in the same shape. An
//! access token lives [`super::HubSpotConfig::access_token_lifetime`] (HubSpot's 30
//! minutes); past it the API answers 401 `EXPIRED_AUTHENTICATION`, "The OAuth token used to
//! make this call expired N second(s) ago.". With
//! [`super::HubSpotConfig::rotate_refresh_tokens`] every refresh hands out a new refresh
//! token and forgets the one used (HubSpot itself returns the same one).

use super::{correlation_id, Hub};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tokens issued and the counts tests read.
pub(crate) struct OAuth {
    /// Refresh tokens accepted now.
    refresh_tokens: HashSet<String>,
    /// Access token → when it expires (instant, and wall-clock time for the message).
    issued: HashMap<String, (Instant, chrono::DateTime<chrono::Utc>)>,
    pub lifetime: Duration,
    rotate: bool,
    /// Token requests answered, granted or not.
    pub requests: u64,
    /// Token requests to answer 503 before serving again.
    pub unavailable_next: u64,
    /// API requests refused with 401 (no, unknown or expired token).
    pub unauthorized: u64,
}

/// What a bearer token is worth.
pub(crate) enum Judged {
    Valid,
    Unknown,
    /// An issued access token past its life: seconds since, and when it expired.
    Expired(u64, chrono::DateTime<chrono::Utc>),
}

impl OAuth {
    pub(crate) fn new(refresh_token: &str, lifetime: Duration, rotate: bool) -> OAuth {
        OAuth {
            refresh_tokens: HashSet::from([refresh_token.to_string()]),
            issued: HashMap::new(),
            lifetime,
            rotate,
            requests: 0,
            unavailable_next: 0,
            unauthorized: 0,
        }
    }

    /// An access token issued by the token endpoint.
    pub(crate) fn judge(&self, token: &str) -> Judged {
        match self.issued.get(token) {
            None => Judged::Unknown,
            Some((until, _)) if Instant::now() < *until => Judged::Valid,
            Some((until, at)) => Judged::Expired(until.elapsed().as_secs(), *at),
        }
    }

    /// Every access token issued so far expires now.
    pub(crate) fn expire_all(&mut self) {
        let (now, wall) = (Instant::now(), chrono::Utc::now());
        for v in self.issued.values_mut() {
            if v.0 > now {
                *v = (now, wall);
            }
        }
    }

    /// Access tokens issued so far.
    pub(crate) fn issued(&self) -> usize {
        self.issued.len()
    }

    fn issue(&mut self) -> String {
        let (now, wall) = (Instant::now(), chrono::Utc::now());
        // Tokens that expired an hour ago are not asked about again.
        self.issued
            .retain(|_, (until, _)| now.saturating_duration_since(*until) < Duration::from_secs(3600));
        let token = format!("sbx-oauth-{}", random_hex());
        let life = chrono::Duration::from_std(self.lifetime).unwrap_or(chrono::Duration::zero());
        self.issued.insert(token.clone(), (now + self.lifetime, wall + life));
        token
    }
}

fn random_hex() -> String {
    let b: [u8; 24] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// HubSpot's OAuth error: 400 `{"status": CODE, "message", "correlationId"}`.
fn refused(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": code, "message": message, "correlationId": correlation_id()})),
    )
        .into_response()
}

/// `POST /oauth/v1/token`.
pub(crate) async fn token(State(hub): State<Arc<Hub>>, body: Bytes) -> Response {
    let latency = hub.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut state = hub.lock();
    let oauth = &mut state.oauth;
    oauth.requests += 1;
    if oauth.unavailable_next > 0 {
        oauth.unavailable_next -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "message": "Service Unavailable", "correlationId": correlation_id()})),
        )
            .into_response();
    }
    if field("grant_type") != "refresh_token" {
        return refused(
            "BAD_GRANT_TYPE",
            "missing or unsupported grant_type: the sandbox serves refresh_token",
        );
    }
    if field("client_id") != hub.config.client_id {
        return refused("BAD_CLIENT_ID", "missing or unknown client id");
    }
    if field("client_secret") != hub.config.client_secret {
        return refused("BAD_CLIENT_SECRET", "missing or invalid client secret");
    }
    let used = field("refresh_token");
    if !oauth.refresh_tokens.contains(&used) {
        return refused("BAD_REFRESH_TOKEN", "missing or invalid refresh token");
    }
    let refresh_token = if oauth.rotate {
        oauth.refresh_tokens.remove(&used);
        let next = format!("sbx-refresh-{}", random_hex());
        oauth.refresh_tokens.insert(next.clone());
        next
    } else {
        used
    };
    let access_token = oauth.issue();
    Json(json!({
        "token_type": "bearer",
        "refresh_token": refresh_token,
        "access_token": access_token,
        "expires_in": oauth.lifetime.as_secs(),
    }))
    .into_response()
}

//! The sandbox's HubSpot CRM v3 API, served beside the Salesforce one on the same port
//! (../shared/reference/crm-apis.md §6 and inbound-and-alerts.md §2 hold the facts it
//! follows). It owns the server side only.
//!
//! Served under `/crm/v3/`, each request with `Authorization: Bearer <token>`: the
//! private-app token of [`HubSpotConfig::token`] (`pat-na1-ebb-sandbox` by default), or an
//! access token `POST /oauth/v1/token` issued for the app's refresh token ([`oauth`]); 401
//! `INVALID_AUTHENTICATION` otherwise, `EXPIRED_AUTHENTICATION` for an access token past
//! its life:
//!
//! - `GET properties/{objectType}`: the property schema ([`schema`]);
//! - `POST objects/{objectType}/batch/{upsert,create,update,archive,read}` ([`batch`]);
//! - `GET objects/{objectType}` with `limit`, `after`, `archived`, `properties` ([`list`]);
//! - `POST objects/{objectType}/search`: filters, sorts, paging, the 10,000-result cap
//!   ([`search`]).
//!
//! Objects are `contacts`, `companies`, `deals` and the custom object `p_subscriptions`
//! (`2-1234567`) ([`schema`]). Every answer carries the
//! `X-HubSpot-RateLimit-*` headers of a rolling 10-second window and a daily count
//! ([`limits`]), and searches a per-second limit of their own; a request past any of them
//! is 429 with its `policyName` and is not counted. Faults for tests, on the [`HubSpot`]
//! handle: latency on every request, every access token expired at once, 503 from the
//! token endpoint.

mod batch;
mod limits;
mod list;
mod oauth;
mod schema;
mod search;
mod store;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use schema::{PropType, Property};

/// The most bytes a request body may have: 100 inputs of a few hundred properties each.
const BODY_LIMIT: usize = 4 << 20;

/// What the HubSpot API of the sandbox serves ([`super::SandboxConfig::hubspot`]).
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// The private-app token accepted as `Authorization: Bearer` (default
    /// `pat-na1-ebb-sandbox`).
    pub token: String,
    /// Requests allowed in any rolling 10 seconds (default 190, a Professional or
    /// Enterprise private app).
    pub ten_second_limit: u64,
    /// Requests allowed per UTC day (default 1,000,000, Enterprise).
    pub daily_limit: u64,
    /// Search requests allowed per second, besides the other limits (default 5; HubSpot
    /// documents 4 and 5 in different places).
    pub search_per_second: u64,
    /// The OAuth app's client id (default `ebb-sandbox-hubspot`).
    pub client_id: String,
    /// The OAuth app's client secret (default `ebb-sandbox-hubspot-secret`).
    pub client_secret: String,
    /// The refresh token the token endpoint accepts (default `ebb-sandbox-hubspot-refresh`).
    pub refresh_token: String,
    /// How long an issued access token lives (default 30 minutes, as HubSpot's).
    pub access_token_lifetime: Duration,
    /// Each refresh answers a new refresh token and forgets the one used (default off:
    /// HubSpot answers the same one).
    pub rotate_refresh_tokens: bool,
    /// Added to every request (the token endpoint's too): half before it is handled, half
    /// before the answer leaves.
    pub latency: Duration,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        HubSpotConfig {
            token: "pat-na1-ebb-sandbox".into(),
            ten_second_limit: 190,
            daily_limit: 1_000_000,
            search_per_second: 5,
            client_id: "ebb-sandbox-hubspot".into(),
            client_secret: "ebb-sandbox-hubspot-secret".into(),
            refresh_token: "ebb-sandbox-hubspot-refresh".into(),
            access_token_lifetime: Duration::from_secs(1800),
            rotate_refresh_tokens: false,
            latency: Duration::ZERO,
        }
    }
}

/// An error answered in HubSpot's shape:
/// `{"status":"error","message","correlationId","category"[,"context"]}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    #[error("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")]
    NoCredentials,
    #[error("The access token provided is not valid.")]
    BadToken,
    #[error("The OAuth token used to make this call expired {ago} second(s) ago.")]
    Expired {
        ago: u64,
        at: chrono::DateTime<chrono::Utc>,
    },
    #[error("You have reached your {} limit.", policy.word())]
    RateLimited { policy: limits::Policy, retry_after: u64 },
    #[error("{message}")]
    Validation {
        message: String,
        context: Map<String, Value>,
    },
    #[error("Unable to infer object type from: {0}")]
    UnknownObject(String),
    #[error("resource not found")]
    NotFound,
}

impl HubError {
    pub(crate) fn validation(message: impl Into<String>) -> HubError {
        HubError::Validation {
            message: message.into(),
            context: Map::new(),
        }
    }
}

/// A HubSpot-style correlation id (a UUID's shape).
pub(crate) fn correlation_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let mut body = json!({"status": "error", "message": message, "correlationId": correlation_id()});
        let status = match &self {
            HubError::NoCredentials | HubError::BadToken => {
                body["category"] = json!("INVALID_AUTHENTICATION");
                StatusCode::UNAUTHORIZED
            }
            HubError::Expired { at, .. } => {
                body["category"] = json!("EXPIRED_AUTHENTICATION");
                body["context"] = json!({"expire time": [timestamp(*at)]});
                StatusCode::UNAUTHORIZED
            }
            HubError::RateLimited { policy, .. } => {
                body["errorType"] = json!("RATE_LIMIT");
                body["policyName"] = json!(policy.name());
                body["requestId"] = json!(correlation_id());
                StatusCode::TOO_MANY_REQUESTS
            }
            HubError::Validation { context, .. } => {
                body["category"] = json!("VALIDATION_ERROR");
                if !context.is_empty() {
                    body["context"] = Value::Object(context.clone());
                }
                StatusCode::BAD_REQUEST
            }
            HubError::UnknownObject(_) | HubError::NotFound => {
                body["category"] = json!("OBJECT_NOT_FOUND");
                StatusCode::NOT_FOUND
            }
        };
        let mut response = (status, Json(body)).into_response();
        if let HubError::RateLimited { retry_after, .. } = self {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after.max(1)));
        }
        response
    }
}

/// The HubSpot API's state, apart from the Salesforce one's.
pub(crate) struct Hub {
    config: HubSpotConfig,
    state: Mutex<HubState>,
}

pub(crate) struct HubState {
    pub store: store::Store,
    pub limits: limits::Limits,
    pub oauth: oauth::OAuth,
    pub latency: Duration,
}

impl Hub {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        // A handler that panicked left the state as consistent as any single write leaves it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The HubSpot side of a running sandbox ([`super::Sandbox::hubspot`]): inspection and
/// limits for tests.
#[derive(Clone)]
pub struct HubSpot(Arc<Hub>);

impl HubSpot {
    pub(crate) fn new(config: HubSpotConfig) -> HubSpot {
        let limits = limits::Limits::new(config.ten_second_limit, config.daily_limit, config.search_per_second);
        let oauth = oauth::OAuth::new(
            &config.refresh_token,
            config.access_token_lifetime,
            config.rotate_refresh_tokens,
        );
        let latency = config.latency;
        HubSpot(Arc::new(Hub {
            config,
            state: Mutex::new(HubState {
                store: store::Store::new(),
                limits,
                oauth,
                latency,
            }),
        }))
    }

    /// The OAuth app's client id, client secret and refresh token the token endpoint
    /// accepts.
    pub fn oauth_app(&self) -> (String, String, String) {
        let c = &self.0.config;
        (c.client_id.clone(), c.client_secret.clone(), c.refresh_token.clone())
    }

    /// Token requests answered so far (`POST /oauth/v1/token`, granted or not).
    pub fn token_requests(&self) -> u64 {
        self.0.lock().oauth.requests
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.0.lock().oauth.issued()
    }

    /// API requests refused with 401 so far (no token, an unknown or an expired one).
    pub fn unauthorized(&self) -> u64 {
        self.0.lock().oauth.unauthorized
    }

    /// Fault: every access token issued so far expires now (the next request with one is
    /// 401 `EXPIRED_AUTHENTICATION`).
    pub fn expire_tokens(&self) {
        self.0.lock().oauth.expire_all();
    }

    /// Sets how long the access tokens issued from now on live.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.0.lock().oauth.lifetime = lifetime;
    }

    /// Fault: the next `n` token requests are answered 503.
    pub fn fail_token_requests(&self, n: u64) {
        self.0.lock().oauth.unavailable_next = n;
    }

    /// Fault: latency added to every request from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.0.lock().latency = latency;
    }

    /// The private-app token the API accepts.
    pub fn token(&self) -> String {
        self.0.config.token.clone()
    }

    /// The records of `object_type` (`contacts`, `companies`, `deals`, `p_subscriptions`,
    /// or an `objectTypeId`) by id, archived ones included: `id`, `archived` and the
    /// properties that hold a value.
    pub fn records(&self, object_type: &str) -> Vec<Map<String, Value>> {
        self.0.lock().store.dump(object_type)
    }

    /// Requests counted against the limits so far (today's count).
    pub fn calls(&self) -> u64 {
        self.0.lock().limits.daily_used()
    }

    /// Requests refused with a 429 so far (any policy); refused requests are not in
    /// [`HubSpot::calls`].
    pub fn refused(&self) -> u64 {
        self.0.lock().limits.refused()
    }

    /// Sets the daily count: `used` requests of `max` today.
    pub fn set_daily(&self, used: u64, max: u64) {
        self.0.lock().limits.set_daily(used, max);
    }

    /// Sets the search requests allowed per second.
    pub fn set_search_per_second(&self, max: u64) {
        self.0.lock().limits.set_search_per_second(max);
    }

    /// Writes `props` to the record of `object` with id `id` (a new record when `None`),
    /// stamped `at` (its last-modified properties take that time, as a write committed
    /// late would give), without the API's checks or limits; the record's id. For tests and
    /// seeding.
    pub fn write_at(
        &self,
        object: &str,
        id: Option<u64>,
        props: &[(&str, &str)],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, String> {
        let mut state = self.0.lock();
        let t = state.store.index(object).map_err(|e| e.to_string())?;
        let props: Vec<(String, String)> = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let conflict = |c: store::Conflict| format!("`{}` is held by record {}", c.property, c.existing);
        match id {
            None => state.store.create(t, &props, at).map_err(conflict),
            Some(id) => match state.store.update(t, id, &props, at).map_err(conflict)? {
                true => Ok(id),
                false => Err(format!("{object} has no record {id} that is not archived")),
            },
        }
    }

    /// Archives record `id` of `object` as `batch/archive` would, at `at`.
    pub fn archive_at(&self, object: &str, id: u64, at: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        let mut state = self.0.lock();
        let t = state.store.index(object).map_err(|e| e.to_string())?;
        state.store.archive(t, id, at);
        Ok(())
    }

    /// Sets the requests allowed in any rolling 10 seconds.
    pub fn set_ten_second_limit(&self, max: u64) {
        self.0.lock().limits.set_ten_second_limit(max);
    }
}

/// The routes under `/crm/v3/`, each behind [`gate`], and the token endpoint. Other paths
/// are not matched here.
pub(crate) fn router(hub: &HubSpot) -> Router {
    Router::new()
        .route("/crm/v3/properties/{object}", get(schema::list_properties))
        .route("/crm/v3/objects/{object}", get(list::list))
        .route("/crm/v3/objects/{object}/batch/upsert", post(batch::upsert))
        .route("/crm/v3/objects/{object}/batch/create", post(batch::create))
        .route("/crm/v3/objects/{object}/batch/update", post(batch::update))
        .route("/crm/v3/objects/{object}/batch/archive", post(batch::archive))
        .route("/crm/v3/objects/{object}/batch/read", post(batch::read))
        .route("/crm/v3/objects/{object}/search", post(search::search))
        .route("/crm/v3/{*rest}", axum::routing::any(not_found))
        .route_layer(axum::middleware::from_fn_with_state(hub.0.clone(), gate))
        .route("/oauth/v1/token", post(oauth::token))
        .route_layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(hub.0.clone())
}

async fn not_found() -> HubError {
    HubError::NotFound
}

/// Latency, auth, then the daily count, then the 10-second window; every answer gets the
/// `X-HubSpot-RateLimit-*` headers as they stand after the request.
async fn gate(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let latency = hub.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency / 2).await;
    }
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim);
    let refused = {
        let mut state = hub.lock();
        let judged = match bearer {
            None => Some(HubError::NoCredentials),
            Some(t) if t == hub.config.token => None,
            Some(t) => match state.oauth.judge(t) {
                oauth::Judged::Valid => None,
                oauth::Judged::Unknown => Some(HubError::BadToken),
                oauth::Judged::Expired(ago, at) => Some(HubError::Expired { ago, at }),
            },
        };
        match judged {
            Some(e) => {
                state.oauth.unauthorized += 1;
                Some(e)
            }
            None => {
                let search = request.method() == axum::http::Method::POST && request.uri().path().ends_with("/search");
                state.limits.admit(search).err()
            }
        }
    };
    let mut response = match refused {
        Some(e) => e.into_response(),
        None => next.run(request).await,
    };
    let headers = hub.lock().limits.headers();
    for (name, value) in headers {
        response.headers_mut().insert(name, HeaderValue::from(value));
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency - latency / 2).await;
    }
    response
}

/// Parses a JSON body, answering HubSpot's 400 when it does not parse.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HubError> {
    serde_json::from_slice(body).map_err(|e| {
        HubError::validation(format!(
            "Invalid input JSON on line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// `2024-01-31T09:30:15.123Z`, HubSpot's timestamps.
pub(crate) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

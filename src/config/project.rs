//! `ProjectSpec`: the project file `ebb.yaml` as written, in its serde form.
//!
//! The directory holding `ebb.yaml` is the project. Secrets are never written literally:
//! `${VAR}` is read from the environment when a connection is opened, and `validate`
//! rejects a literal value in a secret field. The JSON schema
//! `schemas/project.schema.json` is generated from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::model::{ConnectionType, Headers};

/// The project file `ebb.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ebb project file")]
pub struct ProjectSpec {
    /// Version of the project file format. Only `1` exists.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Directory of the model files, relative to the project. Default: `models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<String>,
    /// Where ebb keeps its snapshots, run history and locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateSpec>,
    /// Named connections to warehouses and CRMs, used by models as sources and destinations.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSpec>,
    /// Settings of `ebb daemon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonSpec>,
    /// Conditions on the models' health that notify someone when they start and stop
    /// holding (`ebb daemon` evaluates them; docs/alerts.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<crate::config::alerts::AlertSpec>>,
    /// The channels alerts go to: Slack, PagerDuty, webhooks, email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::config::alerts::NotificationsSpec>,
    /// How long the state store keeps what ebb records; older rows are purged once a day by
    /// `ebb daemon` and on demand by `ebb purge` (docs/state.md, "Retention").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::config::retention::RetentionSpec>,
}

/// The state store.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// `sqlite://PATH` (relative to the project; default `sqlite://.ebb/state.db`) or
    /// `postgres://…` to share state between several daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A connection to a warehouse, CRM or other endpoint; `type` decides the other fields.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectionSpec {
    /// Embedded DuckDB database.
    Duckdb(DuckdbConnection),
    /// PostgreSQL database.
    Postgres(PostgresConnection),
    /// Snowflake through the SQL API v2 with key-pair (JWT) authentication.
    Snowflake(SnowflakeConnection),
    /// A Salesforce org.
    Salesforce(SalesforceConnection),
    /// A HubSpot account.
    Hubspot(HubspotConnection),
    /// A generic JSON webhook.
    Http(HttpConnection),
    /// JSON Lines files in a directory.
    File(FileConnection),
    /// Signed webhooks sent to `ebb daemon`.
    Webhook(WebhookConnection),
}

impl ConnectionSpec {
    pub fn kind(&self) -> ConnectionType {
        match self {
            ConnectionSpec::Duckdb(_) => ConnectionType::Duckdb,
            ConnectionSpec::Postgres(_) => ConnectionType::Postgres,
            ConnectionSpec::Snowflake(_) => ConnectionType::Snowflake,
            ConnectionSpec::Salesforce(_) => ConnectionType::Salesforce,
            ConnectionSpec::Hubspot(_) => ConnectionType::Hubspot,
            ConnectionSpec::Http(_) => ConnectionType::Http,
            ConnectionSpec::File(_) => ConnectionType::File,
            ConnectionSpec::Webhook(_) => ConnectionType::Webhook,
        }
    }
}

/// Embedded DuckDB.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuckdbConnection {
    /// Database file, relative to the project, or `:memory:`.
    pub path: String,
    /// Open the database read-only (recommended for a warehouse shared with other tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Memory DuckDB may use on ebb's connections, e.g. `512MB` or `2GB`. Reading a table
    /// fills DuckDB's buffer cache up to this limit. Default: DuckDB's own (80% of RAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// Let model queries read files anywhere ebb may (`read_csv('/data/x.csv')`) and load
    /// DuckDB extensions already installed on this machine. Default `false`: a query reads
    /// only the database and files inside the project directory, so it cannot read (and
    /// send to a destination) `/proc/self/environ`, keys or other projects' files. Either
    /// way ebb never downloads extensions, and a query cannot change DuckDB's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_access: Option<bool>,
}

/// PostgreSQL.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnection {
    /// Connection URL, `postgres://user:${PASSWORD}@host:5432/db?sslmode=require`. `sslmode`:
    /// `disable`, `prefer` (default), `require` (encrypted, certificate not verified),
    /// `verify-ca`, `verify-full` (verified against `sslrootcert=FILE`, else the system's
    /// authorities; `verify-full` also checks the host name).
    pub url: String,
    /// Rows fetched per round trip of the streaming cursor. Default: 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fetch_size: Option<u32>,
}

/// Snowflake SQL API v2.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConnection {
    /// Account identifier, e.g. `xy12345.eu-central-1` or `myorg-myaccount`.
    pub account: String,
    /// User the key pair belongs to.
    pub user: String,
    /// PEM private key (PKCS#8) of the user, as `${VAR}`. Exclusive with `private_key_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Path of the PEM private key file. Exclusive with `private_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_path: Option<String>,
    /// Default database of the statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Default schema of the statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Virtual warehouse that runs the statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// Role the statements run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Base URL of the API. Default: `https://{account}.snowflakecomputing.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A Salesforce org.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConnection {
    /// My Domain URL of the org, `https://acme.my.salesforce.com` (http only on loopback,
    /// for `ebb sandbox`).
    pub instance_url: String,
    /// REST API version, quoted: `"62.0"`. Default: `"62.0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{2}\.0$"))]
    pub api_version: Option<String>,
    /// How ebb obtains an access token.
    pub auth: SalesforceAuth,
    /// At most N requests in any sliding window of the length, shared by every sync on
    /// this connection: `N/second`, `N/minute`, `N/hour` or `N/day`. No limit unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Requests in flight at once on this connection. Default: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 25))]
    pub max_concurrency: Option<u32>,
    /// `api: auto` uses Bulk API 2.0 from this many rows of one operation (writes), or
    /// records of one read (inbound). Default: 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bulk_threshold: Option<u32>,
    /// Stop starting requests when fewer than this many of the org's daily API calls
    /// remain (read from `Sforce-Limit-Info`). Default: 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_api_reserve: Option<u32>,
}

/// Salesforce OAuth 2.0 flows.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SalesforceAuth {
    /// `client_credentials`, `jwt_bearer` or `refresh_token`.
    pub flow: SalesforceAuthFlow,
    /// Consumer key of the connected app.
    pub client_id: String,
    /// Consumer secret, as `${VAR}` (client_credentials; refresh_token if the app requires it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// jwt_bearer: the user the token is issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// jwt_bearer: PEM private key, as `${VAR}`. Exclusive with `private_key_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// jwt_bearer: path of the PEM private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_path: Option<String>,
    /// refresh_token: the refresh token, as `${VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Token endpoint host for jwt_bearer and refresh_token: `https://login.salesforce.com`
    /// (default), `https://test.salesforce.com` or the My Domain URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

/// Salesforce OAuth 2.0 flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SalesforceAuthFlow {
    /// Client credentials of a connected app with a run-as user.
    ClientCredentials,
    /// JWT bearer: an RS256 assertion signed with the app's certificate key.
    JwtBearer,
    /// A refresh token obtained once interactively.
    RefreshToken,
}

/// A HubSpot account, reached with a private app's token (`token`) or through a public
/// app's OAuth refresh token (`client_id`, `client_secret`, `refresh_token`): exactly one
/// of the two.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubspotConnection {
    /// Private-app access token, as `${VAR}`. Not with the OAuth settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// OAuth: the app's client id, as `${VAR}`; with `client_secret` and `refresh_token`
    /// instead of `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OAuth: the app's client secret, as `${VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// OAuth: the refresh token the app's installation gave, as `${VAR}`. ebb exchanges it
    /// at `{base_url}/oauth/v1/token` for access tokens (30 minutes each), renewed before
    /// they expire and when HubSpot refuses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// API base URL. Default: `https://api.hubapi.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// At most N requests per window: `N/second`, `N/minute`, `N/hour` or `N/day`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Requests in flight at once. Default: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrency: Option<u32>,
}

/// A generic JSON webhook: POSTs `{"model", "run_id", "records": […]}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConnection {
    /// Endpoint URL (https, or http on a loopback host).
    pub url: String,
    /// Extra request headers; put secrets in `${VAR}`: `Authorization: Bearer ${HOOK_TOKEN}`.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// Records per request. Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: Option<u32>,
    /// Requests in flight at once. Default: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrency: Option<u32>,
    /// At most N requests per window: `N/second`, `N/minute`, `N/hour` or `N/day`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Seconds before a request is abandoned and retried. Default: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_secs: Option<u32>,
}

/// JSON Lines output.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConnection {
    /// Directory the files are written to, relative to the project.
    pub path: String,
}

/// Webhooks a sender signs and POSTs to `ebb daemon` at `/webhooks/{model}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConnection {
    /// How the sender signs each request.
    pub signing: WebhookSigning,
    /// The signing secret, as `${VAR}`: Standard Webhooks `whsec_…`, the HubSpot app's
    /// client secret, or the shared HMAC key.
    pub secret: String,
    /// During a rotation, the secret being replaced, as `${VAR}`: requests signed with
    /// either are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    /// `hmac_sha256`: the header holding the signature, e.g. `X-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `hmac_sha256`: how the signature is written. Default: `hex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SignatureEncoding>,
    /// `hmac_sha256`: text before the signature in the header, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `hubspot_v3`: the scheme and host the sender calls (HubSpot signs the full URL),
    /// e.g. `https://hooks.example.com`. Default: `http://` and the request's `Host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// How old (or how far ahead) a signed timestamp may be: `<n>s` or `<n>m`. Default: `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
    /// The largest body accepted, in bytes (larger: 413). Default: 1048576 (1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_body_bytes: Option<u32>,
    /// Events waiting to be applied, per model, beyond which requests are answered 503
    /// with `Retry-After` (backpressure). Default: 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending: Option<u32>,
}

/// A webhook signing scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookSigning {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`.
    Standard,
    /// HubSpot signature v3: `X-HubSpot-Signature-v3`, `X-HubSpot-Request-Timestamp`.
    HubspotV3,
    /// HMAC-SHA256 of the body in one header (`header`, `encoding`, `prefix`).
    HmacSha256,
}

/// How an `hmac_sha256` signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// `ebb daemon` settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    /// Address of the HTTP server (`/healthz`, `/readyz`, `/metrics`, `/api/…`, `/webhooks/…`).
    /// Default: `127.0.0.1:7878`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Bearer token required by everything but `/healthz`, as `${VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// Runs in progress at once across all models. Default: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrent_runs: Option<u32>,
    /// Addresses allowed to connect to the HTTP server (API, metrics and webhooks alike):
    /// CIDRs such as `10.0.0.0/8` or single addresses. A connection from elsewhere is
    /// closed at once. Default: whoever can reach `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_ips: Option<Vec<String>>,
    /// Reverse proxies in front of the daemon (CIDRs): for a connection from one of them,
    /// `allow_ips` is checked against the client `X-Forwarded-For` names (the rightmost
    /// address that is not a trusted proxy), request by request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    /// Named API tokens, each with a role: `viewer` (read the API and the status page),
    /// `operator` (also trigger runs, replay dead letters, resolve conflicts), `admin`
    /// (everything). `api_token` keeps working as an admin token named `api_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<TokenSpec>>,
    /// Serve HTTPS (TLS 1.2 or 1.3) with this certificate and key. Without it the daemon
    /// speaks plain HTTP: for loopback, or behind a proxy that terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServeTlsSpec>,
}

/// The daemon's certificate and key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeTlsSpec {
    /// PEM file of the certificate chain, the server's certificate first; relative to the
    /// project directory.
    pub cert_file: String,
    /// PEM file of its private key (PKCS#8, PKCS#1 or SEC1); relative to the project
    /// directory. Keep it readable by the daemon's user only.
    pub key_file: String,
}

/// A named API token and what it may do.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Who holds it, as logged and recorded (`token:NAME`), e.g. `grafana`.
    pub name: String,
    /// The token, as `${VAR}`.
    pub token: String,
    /// `viewer`, `operator` or `admin`.
    pub role: Role,
}

/// What a token may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read: the API's GETs, `/metrics`, the status page.
    Viewer,
    /// Also act: trigger runs, replay dead letters, resolve conflicts.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

//! What the sandbox serves ([`SandboxConfig`]) and the faults it injects ([`Faults`]).

use super::hubspot::HubSpotConfig;
use super::schema::{default_contact, parse_objects, SObject, SeedRecords};
use super::webhook::WebhookTarget;
use std::collections::BTreeMap;
use std::time::Duration;

/// Faults to inject; all off by default. [`Sandbox::set_faults`] replaces them at run time.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added to every data-API request while it is in flight: half before the org handles
    /// it, half before the answer leaves (a network round trip).
    pub latency: Duration,
    /// Every data-API request takes at least this long from its arrival to its answer, the
    /// org's own work included: the service time of a remote org, where `latency` adds to
    /// whatever the sandbox itself takes (on the client's own cores, here).
    pub call_time: Duration,
    /// Probability (0-1) that a data-API request is answered 503 `SERVER_UNAVAILABLE`.
    pub unavailable_rate: f64,
    /// The next N data-API requests are answered 503 `SERVER_UNAVAILABLE`.
    pub unavailable_next: u64,
    /// A token expires after this many data-API calls made with it (then 401).
    pub token_ttl_calls: Option<u64>,
    /// More than this many data-API requests in flight at once: the extra ones are answered
    /// 403 `REQUEST_LIMIT_EXCEEDED` (the concurrency form; see [`api`]).
    pub max_concurrent: Option<usize>,
    /// Probability (0-1) that a record write fails with `UNABLE_TO_LOCK_ROW`.
    pub lock_row_rate: f64,
    /// The next N record writes fail with `UNABLE_TO_LOCK_ROW`.
    pub lock_row_next: u64,
    /// The next N Bulk API 2.0 query jobs end `Failed` (with an `errorMessage`).
    pub fail_query_jobs_next: u64,
    /// The next N query answers are malformed: a REST `query`/`queryAll` page is cut
    /// short (JSON that does not parse), a Bulk query results page loses the last cell of
    /// its first record.
    pub corrupt_query_next: u64,
}

/// What the sandbox serves.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The objects (default: [`default_contact`]).
    pub objects: Vec<SObject>,
    /// Records to start with, by object name.
    pub records: SeedRecords,
    /// The newest API version served (default `"66.0"`, the newest documented); v46.0 up
    /// to it are served, others are 404 as an org answers a version it does not have.
    pub api_version: String,
    /// The connected app's consumer key (default `ebb-sandbox`, as in the example ebb.yaml).
    pub client_id: String,
    /// The consumer secret (default `ebb-sandbox`).
    pub client_secret: String,
    /// The refresh token the `refresh_token` flow accepts.
    pub refresh_token: String,
    /// Refresh-token rotation: each refresh returns a new refresh token and invalidates the
    /// one used.
    pub rotate_refresh_tokens: bool,
    /// JWT bearer: the only `sub` accepted (default: any user).
    pub jwt_username: Option<String>,
    /// JWT bearer: PEM public key (`-----BEGIN PUBLIC KEY-----`) whose private key signs
    /// assertions; unset, signatures are not checked (the structure and claims still are).
    pub jwt_public_key: Option<String>,
    /// The daily API request allocation (default 100,000).
    pub daily_api_limit: u64,
    /// The most records per SOQL page (default 2,000, Salesforce's default batch size); a
    /// `Sforce-Query-Options: batchSize` asks for fewer.
    pub query_page_size: usize,
    /// How long a Bulk 2.0 job stays in each of `UploadComplete` and `InProgress`.
    pub bulk_step_delay: Duration,
    /// Faults to start with.
    pub faults: Faults,
    /// Print one line per request to stderr.
    pub log_requests: bool,
    /// Seed of the fault dice, the tokens and the shuffled Bulk results.
    pub seed: u64,
    /// Send a signed webhook for every record written (`ebb sandbox --webhook`).
    pub webhook: Option<WebhookTarget>,
    /// The HubSpot API's token and rate limits.
    pub hubspot: HubSpotConfig,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            objects: vec![default_contact()],
            records: BTreeMap::new(),
            api_version: "66.0".into(),
            client_id: "ebb-sandbox".into(),
            client_secret: "ebb-sandbox".into(),
            refresh_token: "ebb-sandbox-refresh-token".into(),
            rotate_refresh_tokens: false,
            jwt_username: None,
            jwt_public_key: None,
            daily_api_limit: 100_000,
            query_page_size: 2_000,
            bulk_step_delay: Duration::from_millis(100),
            faults: Faults::default(),
            log_requests: false,
            seed: 42,
            webhook: None,
            hubspot: HubSpotConfig::default(),
        }
    }
}

impl SandboxConfig {
    /// Replaces the objects (and adds the seeded records) with those of an objects file
    /// (format in the module documentation).
    pub fn with_objects_file(mut self, text: &str) -> Result<SandboxConfig, String> {
        let (objects, records) = parse_objects(text)?;
        self.objects = objects;
        self.records = records;
        Ok(self)
    }
}

//! `ebb sandbox`: a local Salesforce-compatible API that analysts, `ebb demo` and the tests
//! sync into. It follows the documented wire protocol (docs/salesforce-protocol.md §1-5):
//! paths, methods, status codes, bodies and header names, so that a client that works
//! against it works against a real org. It owns the server side only; the client is
//! `destination::salesforce`.
//!
//! Served, on the current tokio runtime ([`Sandbox::start`]) or a thread of its own
//! ([`Sandbox::start_in_thread`]):
//!
//! - `POST /services/oauth2/token`: client credentials, refresh token and JWT bearer
//!   ([`auth`]);
//! - under `/services/data/vXX.X/` (v46.0 up to the configured version), with a bearer
//!   token: `sobjects` (global describe), `sobjects/{Object}` (basic information) and
//!   `sobjects/{Object}/describe`, single records and single-record upsert by external ID,
//!   sObject Collections (`composite/sobjects`), Bulk API 2.0 ingest jobs (`jobs/ingest`)
//!   and query jobs (`jobs/query`, [`bulk_query`]), SOQL (`query`, and `queryAll` which
//!   includes the recycle bin) for the simple form `SELECT … FROM … [WHERE …] [ORDER BY …]
//!   [LIMIT n] [OFFSET n]` with pagination, the replication
//!   resources `sobjects/{Object}/updated` and `deleted` ([`replication`]), and `limits`.
//!   Resource names match whatever their case and a trailing slash is accepted, as real
//!   clients send them ([`api::canonical_path`]);
//! - `GET /services/data/`: the versions served.
//!
//! Every data-API request is counted against a daily allocation and answered with
//! `Sforce-Limit-Info: api-usage=N/MAX`; faults ([`Faults`]) add latency, 503s, token
//! expiry, a concurrent-request limit, `UNABLE_TO_LOCK_ROW` on records, failed Bulk query
//! jobs and malformed query answers. Inspection
//! methods let tests see the records, the calls per endpoint, and the requests in flight.
//!
//! The same server also serves a HubSpot-compatible CRM v3 API under `/crm/v3/`
//! ([`hubspot`], reached through [`Sandbox::hubspot`]).
//!
//! # Objects
//!
//! By default the sandbox has one object, `Contact` (key prefix `003`), modelled on the
//! seed: `FirstName`, `LastName` (required), `Email`, `Phone`, `LeadSource` (picklist),
//! `AccountId`, `Customer_Segment__c` (restricted picklist: Enterprise, Mid-Market, SMB,
//! Consumer), `LTV__c` (currency 18,2), `Upsell_Score__c` (double 18,6), `Churn_Risk__c`
//! (percent 5,2), `Last_Activity__c` (date), `Last_Update__c` (datetime), `Custom_Field__c`
//! (long text), and the unique external IDs `Crm_Id__c` (18) and `Warehouse_Id__c`; plus
//! `Id`, `IsDeleted`, `CreatedDate`, `LastModifiedDate` and `SystemModstamp`. It starts
//! empty. Numbers are stored rounded to their field's scale, as an org stores them.
//!
//! `ebb sandbox --objects FILE` (or [`SandboxConfig::with_objects_file`]) replaces the
//! objects with those of a JSON file in describe form, and may seed records:
//!
//! ```json
//! {
//!   "objects": [
//!     {"name": "Lead", "label": "Lead", "keyPrefix": "00Q", "fields": [
//!       {"name": "LastName", "type": "string", "length": 80, "nillable": false},
//!       {"name": "Rating__c", "type": "picklist", "restrictedPicklist": true,
//!        "picklistValues": [{"value": "Hot", "active": true}, "Cold"]},
//!       {"name": "Score__c", "type": "double", "precision": 18, "scale": 2},
//!       {"name": "Ext__c", "type": "string", "length": 40, "externalId": true, "unique": true}
//!     ]}
//!   ],
//!   "records": {"Lead": [{"Id": "00Q5g000001AbCdEAA", "LastName": "Doe", "Ext__c": "L-1"}]}
//! }
//! ```
//!
//! Field keys are describe's: `name` and `type` (`string`, `textarea`, `email`, `phone`,
//! `url`, `picklist`, `multipicklist`, `boolean`, `int`, `double`, `currency`, `percent`,
//! `date`, `datetime`, `reference`) are required; `label`, `length`, `precision`, `scale`,
//! `nillable`, `createable`, `updateable`, `defaultedOnCreate`, `externalId`, `unique`,
//! `caseSensitive`, `restrictedPicklist`, `filterable` (a `WHERE` on a field that is not is
//! `INVALID_FIELD`), `picklistValues` (strings or describe entries) and `referenceTo` are
//! optional; other describe keys are ignored, so a saved describe body
//! works as is. `Id` and the system fields are always added. Seeded records may carry an
//! `Id` (with the object's key prefix) and `CreatedDate`/`LastModifiedDate`.

mod api;
mod auth;
mod bulk;
mod bulk_job;
mod bulk_query;
mod collections;
mod config;
mod csv;
pub mod hubspot;
mod id;
mod records;
mod render;
mod replication;
mod schema;
mod soql;
mod soql_parse;
mod store;
mod value;
mod webhook;

pub use config::{Faults, SandboxConfig};
pub use hubspot::{HubSpot, HubSpotConfig};
pub use schema::{default_contact, parse_objects, Field, FieldType, SObject, SeedRecords};
pub use webhook::WebhookTarget;

use axum::Router;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use store::Store;

/// The settings that do not change while serving.
pub(crate) struct Settings {
    pub client_id: String,
    pub client_secret: String,
    pub jwt_username: Option<String>,
    pub jwt_key: Option<rsa::PublicKey>,
    /// `(major, minor)` of the newest version served.
    pub max_version: (u32, u32),
    pub page_size: usize,
    pub bulk_step_delay: Duration,
    pub rotate_refresh_tokens: bool,
    pub log_requests: bool,
    /// When the sandbox started: its delete log is complete from then on.
    pub started: chrono::DateTime<chrono::Utc>,
}

/// Everything a request handler reaches.
pub(crate) struct Shared {
    pub settings: Settings,
    pub url: String,
    pub state: Mutex<State>,
    pub in_flight: AtomicUsize,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked left the state as consistent as any single write leaves it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mutable state.
pub(crate) struct State {
    pub store: Store,
    /// Access token → data-API calls made with it.
    pub tokens: HashMap<String, u64>,
    pub refresh_tokens: HashSet<String>,
    pub faults: Faults,
    pub used: u64,
    pub max: u64,
    pub counts: BTreeMap<String, u64>,
    pub max_in_flight: usize,
    pub starts: Vec<Instant>,
    pub jobs: BTreeMap<String, bulk::Job>,
    pub query_jobs: BTreeMap<String, bulk_query::QueryJob>,
    pub cursors: HashMap<String, soql::Cursor>,
    pub rng: rand::rngs::StdRng,
    pub seq: u64,
}

impl State {
    /// Rolls the `UNABLE_TO_LOCK_ROW` dice for one record write.
    pub(crate) fn lock_fails(&mut self) -> bool {
        if self.faults.lock_row_next > 0 {
            self.faults.lock_row_next -= 1;
            return true;
        }
        self.faults.lock_row_rate > 0.0 && self.rng.random_bool(self.faults.lock_row_rate.min(1.0))
    }

    /// Whether this query answer is to be malformed ([`Faults::corrupt_query_next`]).
    pub(crate) fn corrupt_query(&mut self) -> bool {
        let corrupt = self.faults.corrupt_query_next > 0;
        if corrupt {
            self.faults.corrupt_query_next -= 1;
        }
        corrupt
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// A running sandbox. Clones share it.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    stop: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
    done: tokio::sync::watch::Receiver<bool>,
    hubspot: HubSpot,
}

impl Sandbox {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves on the current tokio runtime.
    pub async fn start(addr: &str, config: SandboxConfig) -> Result<Sandbox, String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let url = format!("http://{local}");
        let webhook = config.webhook.clone();
        let hubspot = HubSpot::new(config.hubspot.clone());
        let shared = Arc::new(build(config, url)?);
        if let Some(target) = webhook {
            shared.lock().store.journal = Some(Vec::new());
            tokio::spawn(webhook::sender(shared.clone(), target));
        }
        let app: Router = hubspot::router(&hubspot).fallback_service(api::router(shared.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("ebb sandbox: {e}");
            }
            let _ = done_tx.send(true);
        });
        Ok(Sandbox {
            shared,
            addr: local,
            stop: Arc::new(Mutex::new(Some(stop_tx))),
            done: done_rx,
            hubspot,
        })
    }

    /// Starts a sandbox on `127.0.0.1:0` on a thread with its own runtime, for tests that
    /// block their thread (for example on a child `ebb` process). It serves until
    /// [`Sandbox::stop`] or the end of the process.
    ///
    /// # Panics
    /// If the sandbox cannot start (no loopback port, an invalid configuration).
    pub fn start_in_thread(config: SandboxConfig) -> Sandbox {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                match Sandbox::start("127.0.0.1:0", config).await {
                    Ok(sandbox) => {
                        let mut done = sandbox.done.clone();
                        let _ = tx.send(Ok(sandbox));
                        let _ = done.wait_for(|d| *d).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        match rx.recv() {
            Ok(Ok(sandbox)) => sandbox,
            Ok(Err(e)) => panic!("the sandbox cannot start: {e}"),
            Err(_) => panic!("the sandbox thread ended before starting"),
        }
    }

    /// Stops accepting connections, lets requests in flight finish, and returns when the
    /// server has stopped.
    pub async fn stop(&self) {
        let tx = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// `http://127.0.0.1:PORT`: the instance URL (and the token endpoint's host).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HubSpot API served beside the Salesforce one.
    pub fn hubspot(&self) -> &HubSpot {
        &self.hubspot
    }

    /// The records of `object` in creation order: `Id` and the fields that hold a value
    /// (system timestamps are left out; SOQL shows them).
    pub fn records(&self, object: &str) -> Vec<Map<String, Value>> {
        let state = self.shared.lock();
        let Some(t) = state.store.table(object) else {
            return Vec::new();
        };
        let table = &state.store.tables[t];
        table
            .records
            .iter()
            .map(|(id, r)| render::render(table, id, r, false))
            .collect()
    }

    /// Adds records to `object` as if created through the API (an `Id` may be given) and
    /// returns their ids.
    pub fn insert(&self, object: &str, records: Vec<Map<String, Value>>) -> Result<Vec<String>, String> {
        let mut state = self.shared.lock();
        seed(&mut state.store, object, records)
    }

    /// Empties the recycle bin of `object`, as Salesforce does after 15 days (or on the
    /// `emptyRecycleBin()` call): its deleted records leave `queryAll` results too, so only
    /// a full read can tell they are gone. Returns how many were purged.
    pub fn empty_recycle_bin(&self, object: &str) -> usize {
        let mut state = self.shared.lock();
        let Some(t) = state.store.table(object) else {
            return 0;
        };
        let ids: Vec<String> = state.store.tables[t]
            .deleted
            .keys()
            .filter(|id| !state.store.tables[t].purged.contains(*id))
            .cloned()
            .collect();
        for id in &ids {
            state.store.purge(t, id);
        }
        ids.len()
    }

    /// Data-API calls counted against the allocation (not the token endpoint).
    pub fn calls(&self) -> u64 {
        let state = self.shared.lock();
        state
            .counts
            .iter()
            .filter(|(k, _)| *k != "token" && *k != "unavailable")
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests to one kind of endpoint: `token`, `collections`, `bulk`, `query`,
    /// `describe`, `sobject` (single records), `limits`. Data-API kinds count calls that
    /// were counted against the allocation; `token` counts every token request, and
    /// `unavailable` the 503s the faults served (not counted against the allocation).
    pub fn calls_to(&self, kind: &str) -> u64 {
        self.shared.lock().counts.get(kind).copied().unwrap_or(0)
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Invalidates every access token issued so far (the next data call gets 401).
    pub fn expire_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// Sets the allocation: `used` calls of `max` in the current 24 hours.
    pub fn set_allocation(&self, used: u64, max: u64) {
        let mut state = self.shared.lock();
        state.used = used;
        state.max = max;
    }

    /// The most data-API requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// When each data-API request arrived, in order.
    pub fn request_starts(&self) -> Vec<Instant> {
        self.shared.lock().starts.clone()
    }

    /// The most data-API requests that started within any window of length `window`: what
    /// a `rate_limit` of N per `window` must keep at or below N.
    pub fn max_starts_within(&self, window: Duration) -> usize {
        let starts = self.request_starts();
        let mut best = 0;
        let mut first = 0;
        for (i, t) in starts.iter().enumerate() {
            while t.duration_since(starts[first]) >= window {
                first += 1;
            }
            best = best.max(i + 1 - first);
        }
        best
    }
}

/// Parses `"62.0"`.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn build(config: SandboxConfig, url: String) -> Result<Shared, String> {
    let max_version = parse_version(&config.api_version)
        .filter(|v| *v >= (46, 0))
        .ok_or_else(|| format!("api version `{}` is not 46.0 or newer", config.api_version))?;
    let jwt_key = match &config.jwt_public_key {
        None => None,
        Some(pem) => Some(auth::public_key(pem)?),
    };
    let mut store = Store::new(config.objects);
    for (object, records) in config.records {
        seed(&mut store, &object, records)?;
    }
    let mut refresh_tokens = HashSet::new();
    refresh_tokens.insert(config.refresh_token);
    let state = State {
        store,
        tokens: HashMap::new(),
        refresh_tokens,
        faults: config.faults,
        used: 0,
        max: config.daily_api_limit,
        counts: BTreeMap::new(),
        max_in_flight: 0,
        starts: Vec::new(),
        jobs: BTreeMap::new(),
        query_jobs: BTreeMap::new(),
        cursors: HashMap::new(),
        rng: rand::rngs::StdRng::seed_from_u64(config.seed),
        seq: 0,
    };
    Ok(Shared {
        settings: Settings {
            client_id: config.client_id,
            client_secret: config.client_secret,
            jwt_username: config.jwt_username,
            jwt_key,
            max_version,
            page_size: config.query_page_size.max(1),
            bulk_step_delay: config.bulk_step_delay,
            rotate_refresh_tokens: config.rotate_refresh_tokens,
            log_requests: config.log_requests,
            started: chrono::Utc::now(),
        },
        url,
        state: Mutex::new(state),
        in_flight: AtomicUsize::new(0),
    })
}

/// Inserts seeded records: fields checked like a create; `Id`, `CreatedDate` and
/// `LastModifiedDate` may be given.
fn seed(store: &mut Store, object: &str, records: Vec<Map<String, Value>>) -> Result<Vec<String>, String> {
    let t = store
        .table(object)
        .ok_or_else(|| format!("no object `{object}` in the sandbox"))?;
    let mut ids = Vec::new();
    for (i, mut record) in records.into_iter().enumerate() {
        let at = |e: String| format!("{object} record {}: {e}", i + 1);
        let mut take = |name: &str| {
            let key = record.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
            key.and_then(|k| record.remove(&k))
        };
        let given_id = match take("Id") {
            Some(Value::String(s)) => {
                let id = store.parse_id(t, &s).map_err(|e| at(e.message))?;
                if store.tables[t].records.contains_key(&id) {
                    return Err(at(format!("id `{id}` used twice")));
                }
                Some(id)
            }
            Some(other) => return Err(at(format!("`Id` must be a string, not {other}"))),
            None => None,
        };
        let time = |v: Option<Value>| -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
            match v {
                None => Ok(None),
                Some(Value::String(s)) => value::parse_datetime(&s)
                    .map(Some)
                    .ok_or_else(|| at(format!("`{s}` is not a datetime"))),
                Some(other) => Err(at(format!("`{other}` is not a datetime"))),
            }
        };
        let created = time(take("CreatedDate"))?;
        let modified = time(take("LastModifiedDate"))?;
        let pairs: Vec<(String, Value)> = record.into_iter().collect();
        let values = store
            .prepare(
                t,
                store::Access::Create,
                pairs.iter().map(|(k, v)| (k.as_str(), value::Input::Json(v))),
            )
            .map_err(|e| at(e.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ")))?;
        let now = chrono::Utc::now();
        let mut undo = Vec::new();
        let id = store
            .create(t, values, created.unwrap_or(now), given_id, &mut undo)
            .map_err(|f| {
                at(f.errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "))
            })?;
        if let Some(m) = modified {
            if let Some(r) = store.tables[t].records.get_mut(&id) {
                r.modified = m;
                r.stamp = m.max(r.created);
            }
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Counts a data-API request as in flight until dropped, noting its start.
pub(crate) struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    /// Enters and returns the guard with the number in flight, this one included.
    pub(crate) fn enter(shared: &'a Shared) -> (InFlight<'a>, usize) {
        let n = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = shared.lock();
        state.max_in_flight = state.max_in_flight.max(n);
        state.starts.push(Instant::now());
        (InFlight(shared), n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

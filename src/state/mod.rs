//! The state store: what ebb remembers between runs.
//!
//! Per model: the snapshot (for each row key, the hash of the payload the destination
//! last confirmed and the destination's record id), the batches in flight, the run
//! history, the latest error of each rejected or invalid row, and the run lock. Two
//! backends with one interface and one format (`docs/state.md`): SQLite (the default,
//! `.ebb/state.db` in the project) and PostgreSQL (`state.url: postgres://…`, shared by
//! several daemons). The schema is versioned; migrations run on open, and a store written
//! by a newer ebb is refused rather than misread.

/// Calls the backend's method of the same name (`$s` is the backend).
macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            $crate::state::StateStore::Sqlite($s) => $e,
            $crate::state::StateStore::Postgres($s) => $e,
        }
    };
}

mod watermark;
pub use watermark::{Watermark, WatermarkError};
pub mod audit;
pub mod conflicts;
pub mod inbox;
mod seal;
pub use seal::Resealed;
mod postgres;
pub mod retention;
mod sqlite;

pub use postgres::ConnectError;

pub mod lock;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// The schema version this ebb writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The default store, relative to the project.
pub const DEFAULT_URL: &str = "sqlite://.ebb/state.db";

/// What went wrong with the store. The messages quote its URL: they are shown with every
/// password and secret parameter masked ([`crate::redact::text`]).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state store {}", crate::redact::text(.0))]
    Open(String),
    /// The PostgreSQL server could not be connected to when opening the store.
    #[error("cannot open the state store {}: {source}", crate::redact::text(.store))]
    Connect { store: String, source: ConnectError },
    /// A lost connection to the PostgreSQL server could not be made again.
    #[error(
        "the state store {} failed: the connection was lost and {attempts} attempts to connect again failed: {source}",
        crate::redact::text(.store)
    )]
    Reconnect {
        store: String,
        attempts: usize,
        source: ConnectError,
    },
    #[error(
        "the state store {} was written by a newer ebb (schema version {found}; this ebb reads up to {SCHEMA_VERSION}): upgrade ebb",
        crate::redact::text(.store)
    )]
    Newer { store: String, found: i64 },
    #[error("{} is not an ebb state store: {}", crate::redact::text(.0), crate::redact::text(.1))]
    Foreign(String, String),
    #[error("the state store {} failed: {}", crate::redact::text(.0), crate::redact::text(.1))]
    Query(String, String),
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
    #[error(
        "the state store {store} holds a corrupt in-flight record of model `{model}` (run {run_id}, batch {batch}): \
         {why}; which rows it held, and so which rows must be sent again, is unknown: `ebb reset {model}` makes \
         the next run send every row"
    )]
    CorruptInflight {
        store: String,
        model: String,
        run_id: i64,
        batch: i64,
        why: String,
    },
}

/// One run of a model, as recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub model: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `running`, `succeeded`, `partial`, `failed` or `aborted`.
    pub status: String,
    pub counts: RunCounts,
    pub error: Option<String>,
}

/// What a run did, row by row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub read: i64,
    pub added: i64,
    pub changed: i64,
    pub removed: i64,
    pub unchanged: i64,
    pub invalid: i64,
    pub sent: i64,
    pub confirmed: i64,
    pub rejected: i64,
    pub api_calls: i64,
}

/// A row of a model's snapshot: what the destination last confirmed for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub key: String,
    /// The hash of the payload the destination confirmed.
    pub hash: [u8; 16],
    /// The destination's id of the record (e.g. a Salesforce Id), when it returned one.
    pub record_id: Option<String>,
}

/// Rows of a batch that was sent and not yet settled: their state at the destination is
/// unknown (the run may have died before the answer came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightBatch {
    pub run_id: i64,
    pub batch: i64,
    /// `upsert`, `update`, `insert`, `delete` or `clear`.
    pub op: String,
    pub keys: Vec<String>,
}

/// One change to the state, applied with others in one transaction by [`StateStore::apply`].
#[derive(Debug, Clone)]
pub enum StateWrite {
    /// A batch is about to be sent: its keys are in flight.
    Inflight(InflightBatch),
    /// A batch was answered: its in-flight record goes.
    Settle { run_id: i64, batch: i64 },
    /// The destination confirmed these rows: their hash becomes the snapshot and their
    /// recorded error goes. A record id already known is kept when none is given.
    Confirm {
        run_id: i64,
        rows: Vec<(String, [u8; 16], Option<String>)>,
    },
    /// These rows left the model and the destination no longer holds them (or the model
    /// ignores removals): their snapshot entries and errors go.
    Remove { keys: Vec<String> },
    /// The latest error of these rows.
    Errors(Vec<RowErrorEntry>),
    /// Errors of kind `invalid` recorded by runs before this one go (a row fixed since is
    /// no longer reported).
    ClearInvalidBefore { run_id: i64 },
    /// Replaces the model's in-flight records written by runs before `run_id` with `keep`
    /// (the keys still unresolved), if any.
    ReplaceInflight { run_id: i64, keep: Option<InflightBatch> },
    /// Stamps the model's snapshot with a new token (`ebb_meta`, key `snapshot:MODEL`).
    /// Every transaction that changes the snapshot carries one, so a copy of the snapshot
    /// kept elsewhere (the engine's table file) is known current when the tokens agree.
    SnapshotToken(u64),
    /// What both sides of these records' two-way fields last agreed on (key, the base's
    /// JSON text, [`conflicts::base_to_text`]).
    ConflictBase(Vec<(String, String)>),
    /// Conflicts found: each is stored once (by its fingerprint); an open conflict of the
    /// same record and field with other values is superseded.
    Conflicts(Vec<conflicts::Conflict>),
    /// These records were settled without a conflict: their open conflicts are superseded.
    ConflictsGone { keys: Vec<String>, now_ms: i64 },
    /// An entry of the audit log ([`crate::audit`]), appended in the same transaction as
    /// the change it records.
    Audit(crate::audit::NewAudit),
}

/// The `ebb_meta` key of a model's snapshot token.
pub fn snapshot_token_key(model: &str) -> String {
    format!("snapshot:{model}")
}

/// The `ebb_meta` key of a model's watermark (inbound runs, [`Watermark`]).
pub fn watermark_key(model: &str) -> String {
    format!("watermark:{model}")
}

/// Who holds a model's run lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// `host:pid:nonce`, unique per process.
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The process's start time on its host (Linux: ticks since boot), so that a reused pid
    /// is not mistaken for the holder.
    pub started: String,
    pub run_id: i64,
    /// When the lock was taken, RFC 3339 UTC.
    pub acquired_at: String,
    /// The last renewal, milliseconds since the epoch by the store's clock where it has one.
    pub heartbeat_ms: i64,
}

/// The answer to [`StateStore::lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired {
        /// The holder whose lock was taken over (its process died or its lease ran out).
        took_over: Option<LockHolder>,
    },
    Held(LockHolder),
}

/// The latest problem with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowErrorEntry {
    pub key: String,
    pub run_id: i64,
    /// `invalid` (never sent) or `rejected` (the destination refused it).
    pub kind: String,
    pub code: String,
    pub message: String,
}

/// An open state store.
pub enum StateStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<postgres::PgStore>),
}

impl StateStore {
    /// Opens (creating and migrating as needed) the store at `url`, or the default one.
    pub async fn open(url: Option<&str>, project_dir: &Path) -> Result<StateStore, StateError> {
        // `${VAR}` anywhere, the whole URL included (`url: ${EBB_STATE_URL}`).
        let url =
            crate::config::env::expand_env(url.unwrap_or(DEFAULT_URL)).map_err(|e| StateError::Open(e.to_string()))?;
        let url = url.as_str();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = if path == ":memory:" {
                path.into()
            } else {
                project_dir.join(path)
            };
            return Ok(StateStore::Sqlite(sqlite::SqliteStore::open(path).await?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // (A password holding `@` would otherwise make its tail the host for libpq's parser.)
            let url = crate::redact::escape_userinfo(url);
            return Ok(StateStore::Postgres(Box::new(postgres::PgStore::open(&url).await?)));
        }
        Err(StateError::Open(format!(
            "`{url}`: the URL must start with `sqlite://` or `postgres://`"
        )))
    }

    /// A name for messages: the file or the URL without its password or secret parameters.
    pub fn name(&self) -> String {
        crate::redact::text(dispatch!(self, s => s.name()))
    }

    /// Whether this store created (or found) its `what` tables already: the status page,
    /// `/metrics` and the alert loop ask on every call, and the DDL (with PostgreSQL's
    /// advisory lock) need not run more than once per open store.
    fn created_already(&self, what: &'static str) -> bool {
        let created = dispatch!(self, s => &s.created);
        created.lock().unwrap_or_else(|p| p.into_inner()).contains(what)
    }

    fn mark_created(&self, what: &'static str) {
        let created = dispatch!(self, s => &s.created);
        created.lock().unwrap_or_else(|p| p.into_inner()).insert(what);
    }

    /// The schema version of the store.
    pub async fn schema_version(&self) -> Result<i64, StateError> {
        dispatch!(self, s => s.schema_version().await)
    }

    /// Records the start of a run; returns its id.
    pub async fn start_run(&self, model: &str) -> Result<i64, StateError> {
        dispatch!(self, s => s.start_run(model, &now()).await)
    }

    /// Records how a run ended. The error is stored with its credentials masked.
    pub async fn finish_run(
        &self,
        id: i64,
        status: &str,
        counts: RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        let error = error.map(crate::redact::text);
        let error = error.as_deref();
        dispatch!(self, s => s.finish_run(id, &now(), status, counts, error).await)
    }

    /// The latest `limit` runs of a model, newest first.
    pub async fn runs(&self, model: &str, limit: i64) -> Result<Vec<RunRecord>, StateError> {
        dispatch!(self, s => s.runs(model, limit).await)
    }

    /// The latest run of every model, by model name.
    pub async fn last_runs(&self) -> Result<Vec<RunRecord>, StateError> {
        dispatch!(self, s => s.last_runs().await)
    }

    /// The latest run of a model that ended `succeeded` or `partial`.
    pub async fn last_completed(&self, model: &str) -> Result<Option<RunRecord>, StateError> {
        dispatch!(self, s => s.last_completed(model).await)
    }

    /// The snapshot of a model, by key (for small models and tests; runs stream it with
    /// [`StateStore::scan_snapshot`]).
    pub async fn snapshot(&self, model: &str) -> Result<Vec<SnapshotEntry>, StateError> {
        dispatch!(self, s => s.snapshot(model).await)
    }

    /// The number of rows in a model's snapshot.
    pub async fn snapshot_len(&self, model: &str) -> Result<u64, StateError> {
        dispatch!(self, s => s.snapshot_len(model).await)
    }

    /// Streams a model's snapshot as `(key, hash)` chunks into `tx`, without holding it.
    pub async fn scan_snapshot(
        &self,
        model: &str,
        tx: mpsc::Sender<Vec<(String, [u8; 16])>>,
    ) -> Result<(), StateError> {
        dispatch!(self, s => s.scan_snapshot(model, str::to_string, tx).await)
    }

    /// As [`StateStore::scan_snapshot`], with each key hashed by `key_fn` where it is read
    /// (no key text crosses the channel).
    pub async fn scan_snapshot_keyed(
        &self,
        model: &str,
        key_fn: fn(&str) -> u128,
        tx: mpsc::Sender<Vec<(u128, [u8; 16])>>,
    ) -> Result<(), StateError> {
        dispatch!(self, s => s.scan_snapshot(model, key_fn, tx).await)
    }

    /// The destination's record ids of `keys`, where known.
    pub async fn record_ids(&self, model: &str, keys: &[String]) -> Result<HashMap<String, String>, StateError> {
        dispatch!(self, s => s.record_ids(model, keys).await)
    }

    /// The model's batches in flight (sent by a run that ended before they were answered).
    pub async fn inflight(&self, model: &str) -> Result<Vec<InflightBatch>, StateError> {
        dispatch!(self, s => s.inflight(model).await)
    }

    /// Applies `writes` in one transaction, in order. Row error messages are stored with
    /// their credentials masked.
    pub async fn apply(&self, model: &str, mut writes: Vec<StateWrite>) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        for w in &mut writes {
            if let StateWrite::Errors(entries) = w {
                for e in entries {
                    if e.message.contains("://") || e.message.contains('=') || e.message.contains("Bearer ") {
                        e.message = crate::redact::text(&e.message);
                    }
                }
            }
        }
        if writes.iter().any(|w| matches!(w, StateWrite::Audit(_))) {
            self.audit_init().await?;
        }
        dispatch!(self, s => s.apply(model, writes).await)
    }

    /// The latest error of each rejected or invalid row of a model, by key.
    pub async fn row_errors(&self, model: &str) -> Result<Vec<RowErrorEntry>, StateError> {
        dispatch!(self, s => s.row_errors(model).await)
    }

    /// The number of recorded row errors of a model.
    pub async fn row_error_count(&self, model: &str) -> Result<u64, StateError> {
        dispatch!(self, s => s.row_error_count(model).await)
    }

    /// The destination a model's snapshot belongs to (`None` before its first run).
    pub async fn model_destination(&self, model: &str) -> Result<Option<String>, StateError> {
        dispatch!(self, s => s.model_destination(model).await)
    }

    /// Records the destination a model's snapshot belongs to.
    pub async fn set_model_destination(&self, model: &str, destination: &str) -> Result<(), StateError> {
        dispatch!(self, s => s.set_model_destination(model, destination).await)
    }

    /// Takes the run lock of `model` for `me`, unless a live holder has it. A holder on this
    /// host whose process is gone is taken over at once; one elsewhere once its heartbeat is
    /// older than `lease`.
    pub async fn lock(&self, model: &str, me: &LockHolder, lease: Duration) -> Result<LockOutcome, StateError> {
        dispatch!(self, s => s.lock(model, me, lease).await)
    }

    /// Renews the lock; `false` if `me` no longer holds it.
    pub async fn heartbeat(&self, model: &str, me: &LockHolder) -> Result<bool, StateError> {
        dispatch!(self, s => s.heartbeat(model, me).await)
    }

    /// Releases the lock if `me` holds it.
    pub async fn unlock(&self, model: &str, me: &LockHolder) -> Result<(), StateError> {
        dispatch!(self, s => s.unlock(model, me).await)
    }

    /// The current holder of a model's lock, if any.
    pub async fn lock_holder(&self, model: &str) -> Result<Option<LockHolder>, StateError> {
        dispatch!(self, s => s.lock_holder(model).await)
    }

    /// Forgets a model's snapshot, in-flight batches and errors (runs are kept): the next
    /// run is a full sync. Returns how many snapshot rows were forgotten.
    pub async fn forget(&self, model: &str) -> Result<u64, StateError> {
        dispatch!(self, s => s.forget(model).await)
    }

    /// The model's watermark (inbound), if a run set one. A value that is not a watermark
    /// is an error naming the key: reading it as none would read everything again silently.
    pub async fn watermark(&self, model: &str) -> Result<Option<Watermark>, StateError> {
        let key = watermark_key(model);
        let text = dispatch!(self, s => s.meta(&key).await)?;
        match text {
            None => Ok(None),
            Some(t) => Watermark::from_json(&t).map(Some).map_err(|e| {
                StateError::Query(
                    self.name(),
                    format!("`ebb_meta` key `{key}` is not a watermark ({e}); `ebb reset {model}` forgets it"),
                )
            }),
        }
    }

    /// Sets the model's watermark (one transaction).
    pub async fn set_watermark(&self, model: &str, w: &Watermark) -> Result<(), StateError> {
        let text = w.to_json();
        dispatch!(self, s => s.set_meta(&watermark_key(model), &text).await)
    }

    /// An alert's state for one model (`ebb_meta` key `alert:NAME:MODEL`, JSON).
    pub async fn alert_state(&self, alert: &str, model: &str) -> Result<Option<String>, StateError> {
        dispatch!(self, s => s.meta(&format!("alert:{alert}:{model}")).await)
    }

    /// Sets an alert's state for one model.
    pub async fn set_alert_state(&self, alert: &str, model: &str, json: &str) -> Result<(), StateError> {
        dispatch!(self, s => s.set_meta(&format!("alert:{alert}:{model}"), json).await)
    }

    /// The token of the model's snapshot ([`StateWrite::SnapshotToken`]), if one was set.
    pub async fn snapshot_token(&self, model: &str) -> Result<Option<u64>, StateError> {
        dispatch!(self, s => s.snapshot_token(model).await)
    }
}

/// Whether `me` may take the lock `existing` holds: it is ours already, its process on this
/// host is gone, or its heartbeat is older than `lease`.
fn may_take(existing: &LockHolder, me: &LockHolder, now_ms: i64, lease: Duration) -> bool {
    existing.id == me.id || holder_is_dead_here(existing) || now_ms - existing.heartbeat_ms > lease.as_millis() as i64
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Whether the holder of a lock on this host is gone: no process with its pid, or one that
/// started at another time (the pid was reused).
pub fn holder_is_dead_here(h: &LockHolder) -> bool {
    if h.host != lock::host() {
        return false;
    }
    match lock::process_start(h.pid) {
        None => true,
        Some(started) => started != h.started,
    }
}

/// The DDL of schema version 1. `{blob}`, `{id}` and `{norowid}` differ between the backends.
fn schema_v1(blob: &str, id: &str, norowid: &str) -> String {
    format!(
        "CREATE TABLE ebb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE ebb_models (model TEXT PRIMARY KEY, destination TEXT NOT NULL);
         CREATE TABLE ebb_runs (
            id {id}, model TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, status TEXT NOT NULL,
            rows_read BIGINT NOT NULL DEFAULT 0, rows_added BIGINT NOT NULL DEFAULT 0,
            rows_changed BIGINT NOT NULL DEFAULT 0, rows_removed BIGINT NOT NULL DEFAULT 0,
            rows_unchanged BIGINT NOT NULL DEFAULT 0, rows_invalid BIGINT NOT NULL DEFAULT 0,
            rows_sent BIGINT NOT NULL DEFAULT 0, rows_confirmed BIGINT NOT NULL DEFAULT 0,
            rows_rejected BIGINT NOT NULL DEFAULT 0, api_calls BIGINT NOT NULL DEFAULT 0, error TEXT);
         CREATE INDEX ebb_runs_by_model ON ebb_runs (model, id);
         CREATE TABLE ebb_snapshot (
            model TEXT NOT NULL, key TEXT NOT NULL, hash {blob} NOT NULL, record_id TEXT,
            updated_run BIGINT NOT NULL, PRIMARY KEY (model, key)){norowid};
         CREATE TABLE ebb_inflight (
            model TEXT NOT NULL, run_id BIGINT NOT NULL, batch BIGINT NOT NULL, op TEXT NOT NULL,
            keys TEXT NOT NULL, PRIMARY KEY (model, run_id, batch));
         CREATE TABLE ebb_row_errors (
            model TEXT NOT NULL, key TEXT NOT NULL, run_id BIGINT NOT NULL, kind TEXT NOT NULL,
            code TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (model, key));
         CREATE TABLE ebb_locks (
            model TEXT PRIMARY KEY, holder TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT NOT NULL,
            started TEXT NOT NULL, run_id BIGINT NOT NULL, acquired_at TEXT NOT NULL,
            heartbeat_ms BIGINT NOT NULL);"
    )
}

/// The columns of `ebb_runs` in the order both backends read them into a `RunRecord`.
const RUN_COLUMNS: &str =
    "id, model, started_at, ended_at, status, rows_read, rows_added, rows_changed, rows_removed, \
     rows_unchanged, rows_invalid, rows_sent, rows_confirmed, rows_rejected, api_calls, error";

/// The columns of `ebb_locks` in the order both backends read them into a `LockHolder`.
const LOCK_COLUMNS: &str = "holder, host, pid, started, run_id, acquired_at, heartbeat_ms";

fn hash16(b: &[u8]) -> [u8; 16] {
    <[u8; 16]>::try_from(b).unwrap_or_default()
}

/// The keys of an in-flight batch as stored: a JSON array of strings.
fn keys_text(keys: &[String]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".into())
}

/// The operations an in-flight record may name (`unknown`: keys carried over from an
/// interrupted run).
const INFLIGHT_OPS: [&str; 6] = ["upsert", "update", "insert", "delete", "clear", "unknown"];

/// An in-flight record as read from the store. `op` and `keys` are `None` when the column
/// is not text (SQLite keeps any type in any column). A record that does not hold a known
/// operation and a JSON array of strings is an error, never an empty batch: its keys are
/// rows whose state at the destination is unknown, and they must be sent again.
fn inflight_record(
    store: &str,
    model: &str,
    run_id: i64,
    batch: i64,
    op: Option<String>,
    keys: Option<&str>,
) -> Result<InflightBatch, StateError> {
    let corrupt = |why: String| StateError::CorruptInflight {
        store: store.to_string(),
        model: model.to_string(),
        run_id,
        batch,
        why,
    };
    let op = match op {
        Some(op) if INFLIGHT_OPS.contains(&op.as_str()) => op,
        Some(op) => {
            let shown: String = op.chars().take(40).collect();
            return Err(corrupt(format!(
                "its operation `{shown}` is none of {}",
                INFLIGHT_OPS.join(", ")
            )));
        }
        None => return Err(corrupt("its operation is not text".into())),
    };
    let keys = keys.ok_or_else(|| corrupt("its keys are not text".into()))?;
    let keys = serde_json::from_str::<Vec<String>>(keys)
        .map_err(|e| corrupt(format!("its keys are not a JSON array of strings ({e})")))?;
    Ok(InflightBatch {
        run_id,
        batch,
        op,
        keys,
    })
}

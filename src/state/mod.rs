//! The state store: what ebb remembers between runs.
//!
//! Per model: the snapshot (for each row key, the hash of the payload the destination
//! last confirmed, a pending hash while a batch is in flight, the destination's record
//! id), the run history, and the latest error of each rejected or invalid row. Two
//! backends with one interface and one format (`docs/state.md`): SQLite (the default,
//! `.ebb/state.db` in the project) and PostgreSQL (`state.url: postgres://…`, shared by
//! several daemons). The schema is versioned; migrations run on open, and a store written
//! by a newer ebb is refused rather than misread.

mod postgres;
mod sqlite;

use std::path::Path;

/// The schema version this ebb writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The default store, relative to the project.
pub const DEFAULT_URL: &str = "sqlite://.ebb/state.db";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state store {0}")]
    Open(String),
    #[error(
        "the state store {store} was written by a newer ebb (schema version {found}; this ebb reads up to {SCHEMA_VERSION}): upgrade ebb"
    )]
    Newer { store: String, found: i64 },
    #[error("{0} is not an ebb state store: {1}")]
    Foreign(String, String),
    #[error("the state store {0} failed: {1}")]
    Query(String, String),
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

/// A row of a model's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub key: String,
    /// The payload hash the destination confirmed; `None` if it never confirmed one.
    pub hash: Option<[u8; 16]>,
    /// Set while a batch holding the row is in flight: its state at the destination is
    /// unknown until confirmed.
    pub pending: Option<[u8; 16]>,
    /// The destination's id of the record (e.g. a Salesforce Id), when it returned one.
    pub record_id: Option<String>,
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

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            StateStore::Sqlite($s) => $e,
            StateStore::Postgres($s) => $e,
        }
    };
}

impl StateStore {
    /// Opens (creating and migrating as needed) the store at `url`, or the default one.
    pub async fn open(url: Option<&str>, project_dir: &Path) -> Result<StateStore, StateError> {
        let url = url.unwrap_or(DEFAULT_URL);
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = if path == ":memory:" {
                path.into()
            } else {
                project_dir.join(path)
            };
            return Ok(StateStore::Sqlite(sqlite::SqliteStore::open(path).await?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let url = crate::config::env::expand_env(url).map_err(StateError::Open)?;
            return Ok(StateStore::Postgres(Box::new(postgres::PgStore::open(&url).await?)));
        }
        Err(StateError::Open(format!(
            "`{url}`: the URL must start with `sqlite://` or `postgres://`"
        )))
    }

    /// The schema version of the store.
    pub async fn schema_version(&self) -> Result<i64, StateError> {
        dispatch!(self, s => s.schema_version().await)
    }

    /// Records the start of a run; returns its id.
    pub async fn start_run(&self, model: &str) -> Result<i64, StateError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        dispatch!(self, s => s.start_run(model, &now).await)
    }

    /// Records how a run ended.
    pub async fn finish_run(
        &self,
        id: i64,
        status: &str,
        counts: RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        dispatch!(self, s => s.finish_run(id, &now, status, counts, error).await)
    }

    /// The latest `limit` runs of a model, newest first.
    pub async fn runs(&self, model: &str, limit: i64) -> Result<Vec<RunRecord>, StateError> {
        dispatch!(self, s => s.runs(model, limit).await)
    }

    /// The snapshot of a model.
    pub async fn snapshot(&self, model: &str) -> Result<Vec<SnapshotEntry>, StateError> {
        dispatch!(self, s => s.snapshot(model).await)
    }

    /// Marks rows as in flight with the payload hash being sent, durably, before the
    /// batch goes out.
    pub async fn mark_pending(&self, model: &str, rows: &[(String, [u8; 16])]) -> Result<(), StateError> {
        dispatch!(self, s => s.mark_pending(model, rows).await)
    }

    /// Commits the rows the destination confirmed: their hash becomes the snapshot, the
    /// pending mark and any recorded error go. One transaction.
    pub async fn confirm(
        &self,
        model: &str,
        run_id: i64,
        rows: &[(String, [u8; 16], Option<String>)],
    ) -> Result<(), StateError> {
        dispatch!(self, s => s.confirm(model, run_id, rows).await)
    }

    /// Records the latest error of rows (rejected or invalid); their snapshot entries stay.
    pub async fn record_errors(&self, model: &str, errors: &[RowErrorEntry]) -> Result<(), StateError> {
        dispatch!(self, s => s.record_errors(model, errors).await)
    }

    /// The recorded errors of a model, by key.
    pub async fn row_errors(&self, model: &str) -> Result<Vec<RowErrorEntry>, StateError> {
        dispatch!(self, s => s.row_errors(model).await)
    }

    /// Forgets a model's snapshot and errors (runs are kept): the next run is a full sync.
    pub async fn forget(&self, model: &str) -> Result<(), StateError> {
        dispatch!(self, s => s.forget(model).await)
    }
}

/// The DDL of schema version 1. `{blob}` and `{id}` differ between the backends.
fn schema_v1(blob: &str, id: &str) -> String {
    format!(
        "CREATE TABLE ebb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE ebb_runs (
            id {id}, model TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, status TEXT NOT NULL,
            rows_read BIGINT NOT NULL DEFAULT 0, rows_added BIGINT NOT NULL DEFAULT 0,
            rows_changed BIGINT NOT NULL DEFAULT 0, rows_removed BIGINT NOT NULL DEFAULT 0,
            rows_unchanged BIGINT NOT NULL DEFAULT 0, rows_invalid BIGINT NOT NULL DEFAULT 0,
            rows_sent BIGINT NOT NULL DEFAULT 0, rows_confirmed BIGINT NOT NULL DEFAULT 0,
            rows_rejected BIGINT NOT NULL DEFAULT 0, api_calls BIGINT NOT NULL DEFAULT 0, error TEXT);
         CREATE INDEX ebb_runs_by_model ON ebb_runs (model, id);
         CREATE TABLE ebb_snapshot (
            model TEXT NOT NULL, key TEXT NOT NULL, hash {blob}, pending_hash {blob}, record_id TEXT,
            updated_run BIGINT, PRIMARY KEY (model, key));
         CREATE TABLE ebb_row_errors (
            model TEXT NOT NULL, key TEXT NOT NULL, run_id BIGINT NOT NULL, kind TEXT NOT NULL,
            code TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (model, key));"
    )
}

/// The columns of `ebb_runs` in the order both backends read them into a `RunRecord`.
const RUN_COLUMNS: &str =
    "id, model, started_at, ended_at, status, rows_read, rows_added, rows_changed, rows_removed, \
     rows_unchanged, rows_invalid, rows_sent, rows_confirmed, rows_rejected, api_calls, error";

fn hash16(v: Option<Vec<u8>>) -> Option<[u8; 16]> {
    v.and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
}

//! Destinations: where a run delivers its batches.
//!
//! The engine hands a destination one [`Batch`] at a time (all records of a batch share an
//! [`Op`]); the destination answers with one [`Outcome`] per record, in order, or with a
//! [`SendError`] for the batch as a whole. A transient error is retried by
//! [`retry::deliver`] with exponential backoff and jitter, honouring `Retry-After`; a fatal
//! one stops the run. Requests on one connection share its concurrency and rate limits
//! ([`crate::http::limit`]), whichever model sends them.
//!
//! Destinations now: `http` (a generic JSON webhook), `file` (JSON Lines, one file per
//! run), `salesforce` and `hubspot`. [`table`] writes warehouse tables (DuckDB, PostgreSQL) for inbound syncs; it has
//! its own interface (rows of typed values, one transaction per call), not `Batch`.

pub mod file;
pub mod http;
pub mod hubspot;
pub mod retry;
pub mod salesforce;
pub mod table;

use crate::config::ConnectionSpec;
use std::path::Path;
use std::time::Duration;

/// What a record asks of the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Create or update by key.
    Upsert,
    /// Update an existing record only.
    Update,
    /// Create only.
    Insert,
    /// Delete the record.
    Delete,
    /// Set the mapped fields of the record to null (the row left the model,
    /// `on_removed: clear`).
    Clear,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Delete => "delete",
            Op::Clear => "clear",
        }
    }
}

/// One record of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The row's key (the `unique_identifier` value as text).
    pub key: String,
    /// The record as the destination receives it: a JSON object text. It holds the
    /// destination key field. For `Delete` it holds only the key field; for `Clear`, the
    /// key field and every mapped field as null.
    pub payload: String,
    /// The destination's id of the record, when a previous run learnt it.
    pub record_id: Option<String>,
}

/// Records sent in one request (or written in one go).
#[derive(Debug, Clone)]
pub struct Batch {
    pub model: String,
    pub run_id: i64,
    pub op: Op,
    /// The destination field that identifies a record.
    pub key_field: String,
    pub records: Vec<Record>,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; `record_id` is the destination's id when it returned one.
    Confirmed { record_id: Option<String> },
    /// Refused by the destination (validation, duplicate, …): not applied.
    Rejected { code: String, message: String },
}

/// Why a whole batch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: timeouts, connection errors, 429, 5xx. `retry_after` is the
    /// destination's `Retry-After`, when it sent one.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Not worth retrying (401, 403, 404, a malformed answer, a full disk, …): the run
    /// stops starting batches.
    #[error("{0}")]
    Fatal(String),
}

/// Why a destination could not be opened for a run (before anything is sent).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting of the connection is unusable (a URL, a header, a rate limit, a variable
    /// unset).
    #[error("connection `{connection}`: {why}")]
    Setting { connection: String, why: String },
    /// A Salesforce connection's settings give no credentials or client.
    #[error(transparent)]
    Salesforce(#[from] crate::salesforce::auth::ConnectionError),
    /// The export directory of a `file` connection.
    #[error(transparent)]
    File(#[from] file::FileError),
    /// The model names no Salesforce object to deliver to.
    #[error("connection `{connection}`: the model names no Salesforce object")]
    NoObject { connection: String },
    /// The connection is of a kind ebb does not deliver to.
    #[error("connection `{connection}`: delivering to a {kind} connection is not built yet")]
    Unsupported {
        connection: String,
        kind: crate::config::ConnectionType,
    },
}

impl OpenError {
    pub(crate) fn setting(connection: &str, why: impl Into<String>) -> OpenError {
        OpenError::Setting {
            connection: connection.to_string(),
            why: why.into(),
        }
    }
}

/// A batch's result: one outcome per record, in order, and the requests it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub outcomes: Vec<Outcome>,
    /// Requests made, retries included.
    pub api_calls: u64,
}

/// An open destination for one run of one model.
pub enum Destination {
    Http(http::HttpDestination),
    File(file::FileDestination),
    Salesforce(Box<salesforce::SalesforceDestination>),
    Hubspot(Box<hubspot::HubspotDestination>),
}

impl Destination {
    /// Opens the destination of connection `name` for run `run_id` of `model`.
    /// `${VAR}` references in the connection are expanded here.
    pub async fn open(
        name: &str,
        spec: &ConnectionSpec,
        project_dir: &Path,
        model: &str,
        run_id: i64,
    ) -> Result<Destination, OpenError> {
        match spec {
            ConnectionSpec::Http(c) => Ok(Destination::Http(http::HttpDestination::new(name, c)?)),
            ConnectionSpec::File(c) => Ok(Destination::File(
                file::FileDestination::open(c, project_dir, model, run_id).await?,
            )),
            other => Err(OpenError::Unsupported {
                connection: name.to_string(),
                kind: other.kind(),
            }),
        }
    }

    /// The destination of a model's plan, for run `run_id`.
    pub async fn open_for(
        plan: &crate::plan::SyncPlan,
        spec: &ConnectionSpec,
        project_dir: &Path,
        run_id: i64,
    ) -> Result<Destination, OpenError> {
        let d = &plan.destination;
        match spec {
            ConnectionSpec::Salesforce(c) => Ok(Destination::Salesforce(Box::new(
                salesforce::SalesforceDestination::new(&d.connection, c, project_dir, d)?,
            ))),
            ConnectionSpec::Hubspot(c) => Ok(Destination::Hubspot(Box::new(hubspot::HubspotDestination::new(
                &d.connection,
                c,
                d,
            )?))),
            _ => Destination::open(&d.connection, spec, project_dir, &plan.name, run_id).await,
        }
    }

    /// Records per batch for `op`, given how many records of it the run sends and the
    /// model's batch size (Salesforce switches to Bulk API 2.0 jobs for large change sets).
    pub fn batch_size(&self, op: Op, pending: u64, model_batch: usize) -> usize {
        match self {
            Destination::Salesforce(d) => d.batch_size(op, pending, model_batch),
            _ => model_batch.max(1),
        }
    }

    /// The CRM's current values of `fields` for the records of `keys` (with their record
    /// id), for the conflict check: a key without a record is missing. Only CRM
    /// destinations hold records to ask about.
    pub async fn current(
        &self,
        keys: &[&str],
        fields: &[String],
    ) -> Result<std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>>, SendError> {
        match self {
            Destination::Salesforce(d) => d.current(keys, fields).await,
            _ => Err(SendError::Fatal(
                "this destination cannot say what its records hold (conflicts need a CRM)".into(),
            )),
        }
    }

    /// Whether batches of `op` need the records' destination ids (from the snapshot).
    pub fn wants_record_ids(&self, op: Op) -> bool {
        match self {
            Destination::Salesforce(d) => d.wants_record_ids(op),
            Destination::Hubspot(d) => d.wants_record_ids(op),
            _ => false,
        }
    }

    /// Requests made so far, when the destination counts them itself (several requests per
    /// batch: Id lookups, Bulk jobs, per-record retries).
    pub fn calls(&self) -> Option<u64> {
        match self {
            Destination::Salesforce(d) => Some(d.calls.load(std::sync::atomic::Ordering::Relaxed)),
            Destination::Hubspot(d) => Some(d.calls.load(std::sync::atomic::Ordering::Relaxed)),
            _ => None,
        }
    }

    /// How many batches a run keeps awaiting their answer at once. Beyond the requests in
    /// flight (which the connection's limits cap), a batch may be recording its keys before
    /// its request: twice the concurrency keeps every request slot busy while that happens.
    /// Batches answered and awaiting their commit do not count (the engine bounds them
    /// apart). The file destination writes one batch at a time.
    pub fn pipeline(&self) -> usize {
        match self {
            Destination::File(_) => 1,
            _ => self.max_concurrency().max(1) * 2,
        }
    }

    pub fn max_concurrency(&self) -> usize {
        match self {
            Destination::Http(d) => d.max_concurrency(),
            Destination::File(_) => 1,
            Destination::Salesforce(d) => d.max_concurrency(),
            Destination::Hubspot(d) => d.max_concurrency(),
        }
    }

    /// Whether the destination can do `op` (`file` and `http` can do all).
    pub fn supports(&self, op: Op) -> bool {
        let _ = op;
        true
    }

    /// Sends one batch once (no retry; see [`retry::deliver`]).
    pub async fn send(&self, batch: &Batch) -> Result<Vec<Outcome>, SendError> {
        match self {
            Destination::Http(d) => d.send(batch).await,
            Destination::File(d) => d.send(batch).await,
            Destination::Salesforce(d) => d.send(batch).await,
            Destination::Hubspot(d) => d.send(batch).await,
        }
    }

    /// Ends the run's delivery (the file destination flushes and closes its file).
    pub async fn finish(&self) -> Result<(), file::FileError> {
        match self {
            Destination::Http(_) | Destination::Salesforce(_) | Destination::Hubspot(_) => Ok(()),
            Destination::File(d) => d.finish().await,
        }
    }
}

//! Salesforce as a source: one object read into the [`BatchStream`] of Arrow batches the
//! warehouse sources produce, so the mapping layer maps its rows as it maps warehouse rows
//! (docs/salesforce-protocol.md, "Reading").
//!
//! A read ([`SalesforceSource::read`]) describes the object ([`describe`]: typed columns,
//! a clear error for a field the object does not have), builds one SOQL query
//! (`SELECT <fields> FROM <object> [WHERE cursor >= from AND cursor < to]`, [`soql`]) and
//! runs it through one of two APIs:
//!
//! - REST ([`rest`]): `queryAll` (or `query`), pages of up to 2,000 records (the
//!   default page size) followed by `nextRecordsUrl`;
//! - Bulk API 2.0 ([`bulk`]): a `queryAll` (or `query`) job polled with backoff, its CSV
//!   results read page by page (`maxRecords`, `Sforce-Locator`) as a stream, the job
//!   deleted at the end, or aborted and deleted when the read fails or is cancelled;
//!
//! or `auto`, where `SELECT COUNT()` with the same filter picks Bulk at or above the
//! connection's `bulk_threshold`.
//!
//! Requests go through the connection layer the destination uses
//! (`salesforce::client::Conn`): one token per connection renewed on 401,
//! the connection's rate limit and concurrency, `Sforce-Limit-Info` and its daily reserve.
//! Transient failures (503, 429, timeouts, a body cut short, the concurrent form of
//! `REQUEST_LIMIT_EXCEEDED`) are retried with the engine's backoff
//! ([`crate::http::retry::RetryPolicy`]); a page whose body failed part way is read
//! again from its start, skipping the rows already delivered.
//!
//! Memory is bounded whatever the answer's size: a REST page is at most
//! [`crate::http::DATA_ANSWER_CAP`]; Bulk pages are parsed as they arrive and never held
//! whole. Dropping the stream cancels the read. An answer that is not what the protocol
//! says, or a value that is not of its field's type, ends the stream with an error that
//! names the object and the record or field; the batches before it were whole.

pub mod bulk;
pub mod describe;
pub mod rest;
pub mod rows;
pub mod soql;

use crate::config::project::SalesforceConnection;
use crate::http::retry::RetryPolicy;
use crate::salesforce::client::CallError;
use crate::salesforce::client::Conn;
use crate::source::{BatchSender, BatchStream, Producer, SourceError};
use chrono::{DateTime, Utc};
use describe::{Column, ObjectInfo};
use reqwest::Method;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Which API a read uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadApi {
    /// REST `query`/`queryAll` with `nextRecordsUrl` paging.
    Rest,
    /// A Bulk API 2.0 query job.
    Bulk,
    /// Bulk when `SELECT COUNT()` with the same filter reaches the connection's
    /// `bulk_threshold`, else REST.
    Auto,
}

/// What to read: one object, some fields, optionally a window of a cursor field.
#[derive(Debug, Clone)]
pub struct Extract {
    /// The object (`Contact`), whatever its case.
    pub object: String,
    /// The fields, in the order of the columns; named as the model names them (matched
    /// whatever their case; the columns take the describe's spelling). The reader adds
    /// none: name `Id`, `IsDeleted` and the cursor field when the caller needs them.
    pub fields: Vec<String>,
    /// The field the window applies to (`SystemModstamp`): a filterable datetime field.
    pub cursor: Option<String>,
    /// Records with `cursor >= from`, when set.
    pub from: Option<DateTime<Utc>>,
    /// Records with `cursor < to`, when set.
    pub to: Option<DateTime<Utc>>,
    /// Deleted records too (`queryAll`): they come with `IsDeleted = true`.
    pub include_deleted: bool,
    pub api: ReadApi,
    /// Rows per batch (about).
    pub batch_rows: usize,
}

impl Extract {
    /// Every record of `object` (deleted ones included), `fields` only, through `api`.
    pub fn all(object: &str, fields: &[&str], api: ReadApi) -> Extract {
        Extract {
            object: object.to_string(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            cursor: None,
            from: None,
            to: None,
            include_deleted: true,
            api,
            batch_rows: 10_000,
        }
    }
}

/// Tuning of the wire: page sizes and polling.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The records per REST query page asked for in `Sforce-Query-Options: batchSize`
    /// (default 2,000; Salesforce takes 200 to 2,000 and may send fewer).
    pub rest_batch_size: u16,
    /// `maxRecords` of a Bulk results page (default 50,000).
    pub bulk_page_records: usize,
    /// The first wait between two polls of a Bulk job; each wait is 1.5 times the last,
    /// up to `poll_max`.
    pub poll_first: Duration,
    pub poll_max: Duration,
    /// The longest a Bulk job is waited for.
    pub job_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            rest_batch_size: 2_000,
            bulk_page_records: 50_000,
            poll_first: Duration::from_millis(100),
            poll_max: Duration::from_secs(5),
            job_timeout: Duration::from_secs(3600),
            retry: RetryPolicy::from_env(),
        }
    }
}

/// The answer of a describe: the columns of the fields asked for, and what the reader
/// needs to know of the object.
#[derive(Debug, Clone)]
pub struct Described {
    pub info: ObjectInfo,
    pub columns: Vec<Column>,
    pub schema: arrow::datatypes::SchemaRef,
}

impl Described {
    /// Whether the object has `SystemModstamp` (`Some`), and whether it is filterable.
    pub fn system_modstamp(&self) -> Option<bool> {
        self.info.system_modstamp()
    }
}

/// A Salesforce connection as a source.
pub struct SalesforceSource {
    conn: Arc<Conn>,
    options: ReadOptions,
    calls: Arc<AtomicU64>,
}

/// Shared by a read's producer task.
struct Ctx {
    conn: Arc<Conn>,
    options: ReadOptions,
    calls: Arc<AtomicU64>,
}

impl SalesforceSource {
    /// The source for connection `name` (shared with the destination in this process: one
    /// token, one rate window).
    pub fn new(name: &str, c: &SalesforceConnection, project_dir: &Path) -> Result<SalesforceSource, SourceError> {
        Ok(SalesforceSource {
            conn: Conn::shared(name, c, project_dir).map_err(|e| SourceError::Connect(e.to_string()))?,
            options: ReadOptions::default(),
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Replaces the wire tuning.
    pub fn with_options(mut self, options: ReadOptions) -> SalesforceSource {
        self.options = options;
        self
    }

    /// API requests this source made (retries and token replays included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            conn: self.conn.clone(),
            options: self.options.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The describe of `object`, and the columns of `fields` typed from it.
    pub async fn describe(&self, object: &str, fields: &[String]) -> Result<Described, SourceError> {
        self.ctx().describe(object, fields).await
    }

    /// Reads `extract` as a stream of batches (module documentation).
    pub async fn read(&self, extract: &Extract) -> Result<BatchStream, SourceError> {
        let ctx = self.ctx();
        let described = ctx.describe(&extract.object, &extract.fields).await?;
        let query = soql::build(&described, extract)?;
        let bulk = match extract.api {
            ReadApi::Rest => false,
            ReadApi::Bulk => true,
            ReadApi::Auto => {
                let count = rest::count(&ctx, &query.count, extract.include_deleted).await?;
                count >= ctx.conn.bulk_threshold
            }
        };
        let (tx, mut stream) = crate::source::channel(described.schema.clone());
        let extract = extract.clone();
        let handle = tokio::spawn(
            async move {
                let result = if bulk {
                    bulk::read(&ctx, &described, &query.select, &extract, &tx).await
                } else {
                    rest::read(&ctx, &described, &query.select, &extract, &tx).await
                };
                finish(tx, result).await;
            }
            .in_current_span(),
        );
        stream.set_producer(Producer::Task(handle));
        Ok(stream)
    }
}

/// Ends the stream: its end marker, or the error that stopped it (nothing when the
/// consumer is gone).
async fn finish(tx: BatchSender, result: Result<(), SourceError>) {
    match result {
        Ok(()) => tx.end().await,
        Err(SourceError::Cancelled) => {}
        Err(e) => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

impl Ctx {
    async fn describe(&self, object: &str, fields: &[String]) -> Result<Described, SourceError> {
        if object.is_empty() || !object.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SourceError::Query(format!("`{object}` is not an sObject name")));
        }
        let path = self.conn.data_path(&format!("sobjects/{object}/describe"));
        let body = self
            .retry(&format!("the describe of `{object}`"), || async {
                match self.conn.json(&self.calls, Method::GET, &path, None).await {
                    // An object the org does not have is 404 NOT_FOUND.
                    Err(CallError::Fatal(m)) if m.contains("HTTP 404") => Err(CallError::Fatal(format!(
                        "the org has no object `{object}` (its describe is 404)"
                    ))),
                    other => other.map(|(_, v)| v),
                }
            })
            .await?;
        let info = ObjectInfo::parse(object, &body)?;
        let (columns, schema) = info.schema(fields)?;
        Ok(Described { info, columns, schema })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries run out.
    async fn retry<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        self.options
            .retry
            .run("a Salesforce read", what, attempt)
            .await
            .map_err(SourceError::Query)
    }
}

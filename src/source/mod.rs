//! Sources: run a model's query and stream its rows as Arrow record batches.
//!
//! A source runs its query on a task (or thread) of its own and hands batches over a
//! bounded channel, so memory stays bounded whatever the result size: a slow consumer
//! holds the producer back. Dropping the [`BatchStream`] cancels the query. Every type
//! the warehouses produce maps to an Arrow type: integers, exact decimals (`Decimal128`,
//! or text marked [`DECIMAL_TEXT`] when the precision is unbounded), floats, strings,
//! booleans, dates, timestamps with and without zone, JSON (text marked [`JSON_TEXT`]),
//! structs and lists, and NULL.

#[cfg(feature = "duckdb")]
pub mod duckdb;
#[cfg(feature = "duckdb")]
pub mod duckdb_files;
pub mod hubspot;
pub mod postgres;
pub(crate) mod postgres_tls;
pub mod salesforce;
pub mod snowflake;

use crate::config::project::ConnectionSpec;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Field metadata key marking a text column that holds JSON documents.
pub const JSON_TEXT: &str = "ebb.json";
/// Field metadata key marking a text column that holds exact decimal numbers.
pub const DECIMAL_TEXT: &str = "ebb.decimal";

/// Batches in flight between a source and its consumer.
const CHANNEL_BATCHES: usize = 4;

/// Why a source failed. Messages are one sentence, lowercase, without the model or
/// connection name (the caller adds those).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("the query failed: {0}")]
    Query(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the query was cancelled")]
    Cancelled,
    /// The producer stopped before the end of the result (it panicked, or its task was
    /// dropped): the rows read are not the whole result.
    #[error("the result stopped before its end ({0}); the rows read are not the whole result")]
    Incomplete(String),
}

/// What a producer hands over: a batch (or the error that ends the result), or the
/// explicit end of the result.
enum Msg {
    Batch(Result<RecordBatch, SourceError>),
    End,
}

/// The producer behind a [`BatchStream`], asked how it ended when its channel closes
/// without the end of the result.
pub(crate) enum Producer {
    Task(tokio::task::JoinHandle<()>),
    #[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
    Thread(std::thread::JoinHandle<()>),
}

impl Producer {
    /// Why the producer stopped, when it says (a panic's message).
    async fn why(self) -> Option<String> {
        let panic = match self {
            Producer::Task(h) => match h.await {
                Ok(()) => return None,
                Err(e) if e.is_panic() => e.into_panic(),
                Err(_) => return Some("its task was cancelled".into()),
            },
            Producer::Thread(h) => match tokio::task::spawn_blocking(move || h.join()).await {
                Ok(Err(panic)) => panic,
                _ => return None,
            },
        };
        Some(format!("its reader panicked (a bug in ebb): {}", panic_text(&*panic)))
    }
}

/// The message of a panic's payload.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// A running query: its schema and a stream of batches.
///
/// The end of the result is explicit: the producer says so. A producer that stops without
/// saying so (it panicked, its task was dropped) ends the stream with
/// [`SourceError::Incomplete`], never with `None`, so rows that were never read cannot
/// look like rows that left the model.
pub struct BatchStream {
    schema: SchemaRef,
    rx: mpsc::Receiver<Msg>,
    cancel: Arc<AtomicBool>,
    /// `None` has been returned, or the error of a producer that stopped early.
    finished: bool,
    producer: Option<Producer>,
}

impl BatchStream {
    /// The columns, known before the first batch arrives.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch; `None` only at the end of the result, as its producer said.
    pub async fn next(&mut self) -> Option<Result<RecordBatch, SourceError>> {
        if self.finished {
            return None;
        }
        match self.rx.recv().await {
            Some(Msg::Batch(b)) => Some(b),
            Some(Msg::End) => {
                self.finished = true;
                None
            }
            None => {
                self.finished = true;
                let why = match self.producer.take() {
                    Some(p) => p.why().await,
                    None => None,
                };
                Some(Err(incomplete(why)))
            }
        }
    }

    /// The next batch, for callers outside an async context.
    pub fn blocking_next(&mut self) -> Option<Result<RecordBatch, SourceError>> {
        if self.finished {
            return None;
        }
        match self.rx.blocking_recv() {
            Some(Msg::Batch(b)) => Some(b),
            Some(Msg::End) => {
                self.finished = true;
                None
            }
            None => {
                self.finished = true;
                Some(Err(incomplete(None)))
            }
        }
    }

    /// Stops the query; batches already sent may still be received.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Who produces the batches, asked how it ended if it stops without the end marker.
    pub(crate) fn set_producer(&mut self, p: Producer) {
        self.producer = Some(p);
    }
}

fn incomplete(why: Option<String>) -> SourceError {
    SourceError::Incomplete(why.unwrap_or_else(|| "its reader stopped without saying why".into()))
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The producer's half of a [`BatchStream`].
pub(crate) struct BatchSender {
    tx: mpsc::Sender<Msg>,
    cancel: Arc<AtomicBool>,
}

impl BatchSender {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.tx.is_closed()
    }

    /// Sends from a blocking thread; false when the consumer is gone.
    #[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
    pub(crate) fn blocking_send(&self, item: Result<RecordBatch, SourceError>) -> bool {
        !self.is_cancelled() && self.tx.blocking_send(Msg::Batch(item)).is_ok()
    }

    /// Sends from a task; false when the consumer is gone.
    pub(crate) async fn send(&self, item: Result<RecordBatch, SourceError>) -> bool {
        !self.is_cancelled() && self.tx.send(Msg::Batch(item)).await.is_ok()
    }

    /// Says, from a blocking thread, that the whole result was sent.
    #[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
    pub(crate) fn blocking_end(self) {
        let _ = self.tx.blocking_send(Msg::End);
    }

    /// Says, from a task, that the whole result was sent.
    pub(crate) async fn end(self) {
        let _ = self.tx.send(Msg::End).await;
    }
}

pub(crate) fn channel(schema: SchemaRef) -> (BatchSender, BatchStream) {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let cancel = Arc::new(AtomicBool::new(false));
    (
        BatchSender {
            tx,
            cancel: cancel.clone(),
        },
        BatchStream {
            schema,
            rx,
            cancel,
            finished: false,
            producer: None,
        },
    )
}

/// Faults injected into a source's own producer by tests, to show what a run does when
/// its source dies part-way through a result. Not part of ebb's interface: nothing arms
/// them but a test.
#[doc(hidden)]
pub mod fault {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static ARMED: AtomicBool = AtomicBool::new(false);
    static PANICS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

    /// The producer of every query whose text contains `marker` panics once it has handed
    /// `after` batches (at least 1) to its consumer.
    pub fn panic_after_batches(marker: &str, after: u64) {
        PANICS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((marker.to_string(), after.max(1)));
        ARMED.store(true, Ordering::SeqCst);
    }

    /// Called by producers after each batch handed over.
    pub(crate) fn after_batch(sql: &str, sent: u64) {
        if !ARMED.load(Ordering::Relaxed) {
            return;
        }
        let hit = PANICS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(m, n)| sql.contains(m.as_str()) && sent >= *n);
        if hit {
            panic!("a fault injected by a test after {sent} batches");
        }
    }
}

/// A connection a model can read from: a warehouse (read by a SQL query) or a CRM (read by
/// object, fields and a window). Both produce the same [`BatchStream`], so whatever comes
/// after the read (mapping, diffing, writing) does not depend on where rows come from
/// (docs/architecture.md).
pub enum Source {
    #[cfg(feature = "duckdb")]
    Duckdb(duckdb::DuckdbSource),
    Postgres(Box<postgres::PostgresSource>),
    Snowflake(Arc<snowflake::SnowflakeSource>),
    Salesforce(Box<salesforce::SalesforceSource>),
}

/// What to read from a [`Source`].
#[derive(Debug, Clone, Copy)]
pub enum Read<'a> {
    /// A warehouse query's rows, in batches of about `batch_rows`.
    Query { sql: &'a str, batch_rows: usize },
    /// A CRM object's records (fields, window, API: [`salesforce::Extract`]).
    Object(&'a salesforce::Extract),
}

impl Source {
    /// The source for connection `name` of the project in `project_dir`. Fails for
    /// connection types that cannot be read (or are not built into this binary).
    pub fn open(name: &str, spec: &ConnectionSpec, project_dir: &Path) -> Result<Source, SourceError> {
        match spec {
            #[cfg(feature = "duckdb")]
            ConnectionSpec::Duckdb(c) => Ok(Source::Duckdb(duckdb::DuckdbSource::new(c, project_dir))),
            #[cfg(not(feature = "duckdb"))]
            ConnectionSpec::Duckdb(_) => {
                let _ = project_dir;
                Err(SourceError::Unsupported(
                    "this ebb was built without DuckDB (the `duckdb` feature)".into(),
                ))
            }
            ConnectionSpec::Postgres(c) => Ok(Source::Postgres(Box::new(postgres::PostgresSource::new(c)?))),
            ConnectionSpec::Snowflake(c) => Ok(Source::Snowflake(Arc::new(snowflake::SnowflakeSource::new(
                c,
                project_dir,
            )?))),
            ConnectionSpec::Salesforce(c) => Ok(Source::Salesforce(Box::new(salesforce::SalesforceSource::new(
                name,
                c,
                project_dir,
            )?))),
            other => Err(SourceError::Unsupported(format!(
                "a {} connection is not a source ebb can read",
                other.kind()
            ))),
        }
    }

    /// Starts reading `what` (a query from a warehouse, an object from a CRM).
    pub async fn read(&self, what: Read<'_>) -> Result<BatchStream, SourceError> {
        match (self, what) {
            (Source::Salesforce(s), Read::Object(extract)) => s.read(extract).await,
            (Source::Salesforce(_), Read::Query { .. }) => Err(SourceError::Unsupported(
                "a salesforce source reads objects (`object`, `fields`), not SQL".into(),
            )),
            (_, Read::Query { sql, batch_rows }) => self.query(sql, batch_rows).await,
            (_, Read::Object(_)) => Err(SourceError::Unsupported(
                "a warehouse source reads a SQL `query`, not an object".into(),
            )),
        }
    }

    /// Runs `sql` on a warehouse and streams its rows in batches of about `batch_rows`.
    pub async fn query(&self, sql: &str, batch_rows: usize) -> Result<BatchStream, SourceError> {
        match self {
            #[cfg(feature = "duckdb")]
            Source::Duckdb(s) => s.query(sql, batch_rows).await,
            Source::Postgres(s) => s.query(sql, batch_rows).await,
            Source::Snowflake(s) => s.query(sql, batch_rows).await,
            Source::Salesforce(_) => Err(SourceError::Unsupported(
                "a salesforce source reads objects (`object`, `fields`), not SQL".into(),
            )),
        }
    }

    /// The columns `sql` returns on a warehouse, without reading its rows.
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef, SourceError> {
        match self {
            #[cfg(feature = "duckdb")]
            Source::Duckdb(s) => s.describe(sql).await,
            Source::Postgres(s) => s.describe(sql).await,
            Source::Snowflake(s) => s.describe(sql).await,
            Source::Salesforce(_) => Err(SourceError::Unsupported(
                "a salesforce source reads objects (`object`, `fields`), not SQL".into(),
            )),
        }
    }
}

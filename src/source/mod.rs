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
pub mod postgres;
pub(crate) mod postgres_tls;
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
}

/// A running query: its schema and a stream of batches.
pub struct BatchStream {
    schema: SchemaRef,
    rx: mpsc::Receiver<Result<RecordBatch, SourceError>>,
    cancel: Arc<AtomicBool>,
}

impl BatchStream {
    /// The columns, known before the first batch arrives.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch; `None` at the end of the result.
    pub async fn next(&mut self) -> Option<Result<RecordBatch, SourceError>> {
        self.rx.recv().await
    }

    /// The next batch, for callers outside an async context.
    pub fn blocking_next(&mut self) -> Option<Result<RecordBatch, SourceError>> {
        self.rx.blocking_recv()
    }

    /// Stops the query; batches already sent may still be received.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The producer's half of a [`BatchStream`].
pub(crate) struct BatchSender {
    tx: mpsc::Sender<Result<RecordBatch, SourceError>>,
    cancel: Arc<AtomicBool>,
}

impl BatchSender {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.tx.is_closed()
    }

    /// Sends from a blocking thread; false when the consumer is gone.
    #[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
    pub(crate) fn blocking_send(&self, item: Result<RecordBatch, SourceError>) -> bool {
        !self.is_cancelled() && self.tx.blocking_send(item).is_ok()
    }

    /// Sends from a task; false when the consumer is gone.
    pub(crate) async fn send(&self, item: Result<RecordBatch, SourceError>) -> bool {
        !self.is_cancelled() && self.tx.send(item).await.is_ok()
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
        BatchStream { schema, rx, cancel },
    )
}

/// A connection a model can read from.
pub enum Source {
    #[cfg(feature = "duckdb")]
    Duckdb(duckdb::DuckdbSource),
    Postgres(Box<postgres::PostgresSource>),
    Snowflake(Arc<snowflake::SnowflakeSource>),
}

impl Source {
    /// The source for a connection of the project in `project_dir`. Fails for connection
    /// types that are not warehouses (or not built into this binary).
    pub fn open(spec: &ConnectionSpec, project_dir: &Path) -> Result<Source, SourceError> {
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
            other => Err(SourceError::Unsupported(format!(
                "a {} connection is not a warehouse ebb can query",
                other.kind()
            ))),
        }
    }

    /// Runs `sql` and streams its rows in batches of about `batch_rows`.
    pub async fn query(&self, sql: &str, batch_rows: usize) -> Result<BatchStream, SourceError> {
        match self {
            #[cfg(feature = "duckdb")]
            Source::Duckdb(s) => s.query(sql, batch_rows).await,
            Source::Postgres(s) => s.query(sql, batch_rows).await,
            Source::Snowflake(s) => s.query(sql, batch_rows).await,
        }
    }

    /// The columns `sql` returns, without reading its rows.
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef, SourceError> {
        match self {
            #[cfg(feature = "duckdb")]
            Source::Duckdb(s) => s.describe(sql).await,
            Source::Postgres(s) => s.describe(sql).await,
            Source::Snowflake(s) => s.describe(sql).await,
        }
    }
}

//! PostgreSQL backend, for several daemons sharing one state. Tables live in their own
//! schema (`ebb` unless the URL says `ebb_schema=name`), so the database can be shared
//! with other applications.
//!
//! This module holds the store, its two connections (a writer, a reader for snapshot
//! scans), reconnection after a lost connection and the statement helpers; `connect.rs` opens
//! the store and migrates its schema, [`snapshot`] holds the snapshot, in-flight records and
//! a run's writes, [`runs`] the run history, row errors and the run lock.

use super::StateError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

/// How long one attempt to connect may take, unless the URL sets `connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long data sent may stay unacknowledged before the connection counts as lost (a
/// server gone without closing it), unless the URL sets `tcp_user_timeout`.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Silence on a connection after which keepalive probes start (tokio-postgres' default,
/// two hours, would leave a run waiting that long on a server gone without a word).
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);

/// The waits between attempts to reconnect once a connection is lost: five attempts in all.
const RECONNECT_BACKOFF: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// How long the store waits for the answer to one of its own transactions or statements
/// (or, in a snapshot scan, for the next rows), unless the URL sets `ebb_statement_timeout`
/// (seconds; `0` waits for ever). A server that accepts the connection but never answers
/// answers keepalive probes, so nothing else would end the wait. Long enough for the largest
/// commit of a run; the model's source query is not the store's and has no such limit.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// `fut`, unless it takes longer than `limit` (`None`: no limit).
async fn within<F: std::future::Future>(limit: Option<Duration>, fut: F) -> Option<F::Output> {
    match limit {
        Some(t) => tokio::time::timeout(t, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// The `application_name` of the store's connections, unless the URL sets one.
pub const APPLICATION_NAME: &str = "ebb";

pub struct PgStore {
    /// How to connect again when a connection is lost (the server restarted, or the
    /// connection was terminated).
    config: tokio_postgres::Config,
    /// The TLS connector the URL's `sslmode` asks for.
    tls: crate::source::postgres_tls::MakeRustls,
    /// One connection; the lock keeps a transaction's statements together when several
    /// tasks use the store.
    client: tokio::sync::Mutex<Client>,
    /// A second connection for snapshot scans, so a long scan does not hold up writes.
    reader: std::sync::Mutex<Arc<Client>>,
    schema: String,
    name: String,
    /// Statements of the write path, prepared once per connection (emptied when it is
    /// replaced).
    statements: std::sync::Mutex<HashMap<String, tokio_postgres::Statement>>,
    /// How long a transaction or statement of the store may wait for the server.
    statement_timeout: Option<Duration>,
    /// Lazily created tables known to exist ([`super::StateStore::inbox_init`]).
    pub(super) created: std::sync::Mutex<std::collections::HashSet<&'static str>>,
}

fn q(name: &str) -> impl Fn(tokio_postgres::Error) -> StateError + '_ {
    move |e| {
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| crate::diagnostics::root_cause(&e));
        StateError::Query(name.to_string(), crate::redact::text(&msg))
    }
}

/// Whether `e` means the connection is gone (closed, reset, or its backend terminated or
/// shutting down), so that the statement may be tried again on a new one.
fn lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 57P01..03: terminated by an administrator, crash
        // shutdown, cannot connect now.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// Runs `$body` (an expression yielding `Result<T, tokio_postgres::Error>`, with `$c` the
/// writer connection) and, if the connection was lost, once more on a new one. Every
/// statement run this way may run twice: it must be idempotent.
macro_rules! on_writer {
    ($self:ident, |$c:ident| $body:expr) => {{
        let mut guard = $self.writer().await?;
        let mut retried = false;
        loop {
            let $c: &mut Client = &mut guard;
            let outcome = within($self.statement_timeout, async { $body }).await;
            let Some(outcome): Option<Result<_, tokio_postgres::Error>> = outcome else {
                // The connection is in an unknown state: the next use starts on a new one.
                let _ = $self.replace_writer(&mut guard).await;
                break Err($self.no_answer());
            };
            match outcome {
                Ok(v) => break Ok(v),
                Err(e) if !retried && lost(&e) => {
                    retried = true;
                    $self.replace_writer(&mut guard).await?;
                }
                Err(e) => break Err(q(&$self.name)(e)),
            }
        }
    }};
}

mod audit;
mod conflicts;
mod connect;
mod inbox;
mod runs;
mod snapshot;

use connect::connect;
pub use connect::ConnectError;

impl PgStore {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error of a transaction or statement the server did not answer in time.
    fn no_answer(&self) -> StateError {
        let secs = self.statement_timeout.unwrap_or_default().as_secs();
        StateError::Query(
            self.name.clone(),
            format!(
                "the server did not answer within {secs} s (a server that accepts connections but does not \
                 answer; `ebb_statement_timeout=<seconds>` in the URL sets the wait)"
            ),
        )
    }

    /// `text` with `{s}` replaced by the store's schema.
    fn sql(&self, text: &str) -> String {
        text.replace("{s}", &self.schema)
    }

    /// A new connection, after a lost one: a few attempts, further and further apart.
    async fn reconnect(&self, writer: bool) -> Result<Client, StateError> {
        let mut last = None;
        for wait in std::iter::once(Duration::ZERO).chain(RECONNECT_BACKOFF) {
            tokio::time::sleep(wait).await;
            match connect(&self.config, &self.tls, writer).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(StateError::Reconnect {
            store: self.name.clone(),
            attempts: RECONNECT_BACKOFF.len() + 1,
            // Set: the loop makes at least one attempt.
            source: last.unwrap_or(ConnectError::Failed(String::new())),
        })
    }

    /// The write connection, connected again first if it was lost.
    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, StateError> {
        let mut c = self.client.lock().await;
        if c.is_closed() {
            self.replace_writer(&mut c).await?;
        }
        Ok(c)
    }

    async fn replace_writer(&self, c: &mut Client) -> Result<(), StateError> {
        *c = self.reconnect(true).await?;
        self.statements.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    /// The scan connection, connected again first if it was lost.
    async fn reader(&self, replace: bool) -> Result<Arc<Client>, StateError> {
        let current = self.reader.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !replace && !current.is_closed() {
            return Ok(current);
        }
        let fresh = Arc::new(self.reconnect(false).await?);
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    async fn query(&self, text: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StateError> {
        let sql = self.sql(text);
        on_writer!(self, |c| c.query(&sql, params).await)
    }

    /// Runs `ddl` (tables created if missing) with other processes doing the same taking
    /// turns: an advisory lock on `lock_key` within the transaction.
    async fn create_if_missing(&self, ddl: &str, lock_key: &str) -> Result<(), StateError> {
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
                .await?;
            tx.batch_execute(ddl).await?;
            tx.commit().await
        }
        .await)
    }

    async fn execute(&self, text: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StateError> {
        let sql = self.sql(text);
        on_writer!(self, |c| c.execute(&sql, params).await)
    }
}

//! PostgreSQL backend, for several daemons sharing one state. Tables live in their own
//! schema (`ebb` unless the URL says `ebb_schema=name`), so the database can be shared
//! with other applications.

use super::snapshot_token_key;
use super::{
    hash16, inflight_record, keys_text, may_take, schema_v1, InflightBatch, LockHolder, LockOutcome, RowErrorEntry,
    RunCounts, RunRecord, SnapshotEntry, StateError, StateWrite, LOCK_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION,
};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
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

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, StateError> {
        let shown = crate::redact::url(url);
        // `ebb_schema` is ours; the rest of the URL is PostgreSQL's.
        let mut parsed = url::Url::parse(url).map_err(|e| StateError::Open(format!("`{shown}`: {e}")))?;
        let mut schema = "ebb".to_string();
        let mut timeout = None;
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, v)| {
                if k == "ebb_schema" {
                    schema = v.to_string();
                    false
                } else if k == "ebb_statement_timeout" {
                    timeout = Some(v.to_string());
                    false
                } else {
                    true
                }
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.set_query(None);
        if !pairs.is_empty() {
            parsed.query_pairs_mut().extend_pairs(pairs);
        }
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || schema.is_empty() {
            return Err(StateError::Open(format!(
                "`ebb_schema={schema}` is not a plain schema name"
            )));
        }
        let statement_timeout = match timeout {
            None => Some(STATEMENT_TIMEOUT),
            Some(t) => match t.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(n) => Some(Duration::from_secs(n)),
                Err(_) => {
                    return Err(StateError::Open(format!(
                        "`ebb_statement_timeout={t}` is not a whole number of seconds"
                    )))
                }
            },
        };
        // Unquoted, PostgreSQL folds the name to lower case; the catalog holds it so.
        let schema = schema.to_ascii_lowercase();
        let name = format!("`{}` (schema `{schema}`)", crate::redact::url(parsed.as_str()));
        let mut config: tokio_postgres::Config =
            parsed
                .as_str()
                .trim_end_matches('?')
                .parse()
                .map_err(|e: tokio_postgres::Error| {
                    StateError::Open(format!("{name}: {}", crate::redact::text(&e.to_string())))
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        // A server gone silent (no reset: a network partition) while ebb waits for an
        // answer: keepalive probes after 30 s of silence, 3 of them 10 s apart.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(10));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let client = connect(&config, true)
            .await
            .map_err(|e| StateError::Open(format!("{name}: {e}")))?;
        let reader = connect(&config, false)
            .await
            .map_err(|e| StateError::Open(format!("{name}: {e}")))?;
        let store = PgStore {
            config,
            client: tokio::sync::Mutex::new(client),
            reader: std::sync::Mutex::new(Arc::new(reader)),
            statements: std::sync::Mutex::new(HashMap::new()),
            statement_timeout,
            schema,
            name,
        };
        store.migrate().await?;
        Ok(store)
    }

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
        let mut last = String::new();
        for wait in std::iter::once(Duration::ZERO).chain(RECONNECT_BACKOFF) {
            tokio::time::sleep(wait).await;
            match connect(&self.config, writer).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(StateError::Query(
            self.name.clone(),
            format!(
                "the connection was lost and {} attempts to connect again failed: {last}",
                RECONNECT_BACKOFF.len() + 1
            ),
        ))
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

    async fn execute(&self, text: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StateError> {
        let sql = self.sql(text);
        on_writer!(self, |c| c.execute(&sql, params).await)
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let s = &self.schema;
        let tables: Vec<String> = self
            .query(
                "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY 1",
                &[s],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let foreign = |why: String| StateError::Foreign(self.name.clone(), why);
        if tables.is_empty() {
            self.create().await?;
        } else if !tables.iter().any(|t| t == "ebb_meta") {
            let ours: Vec<&str> = tables
                .iter()
                .map(String::as_str)
                .filter(|t| EBB_TABLES.contains(t))
                .collect();
            return Err(foreign(if ours.is_empty() {
                format!(
                    "schema `{s}` holds {} other tables ({}) and no `ebb_meta`",
                    tables.len(),
                    shown_list(&tables)
                )
            } else {
                format!(
                    "schema `{s}` holds ebb's tables ({}) but no `ebb_meta`, as a damaged store would; ebb does \
                     not start it over, since every model's next run would then send every row again: restore \
                     the store from a backup, or drop the schema to start over with a new one",
                    ours.join(", ")
                )
            }));
        }
        let version: Option<String> = self
            .query("SELECT value FROM {s}.ebb_meta WHERE key = 'schema_version'", &[])
            .await?
            .first()
            .map(|r| r.get(0));
        let version: i64 = version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| foreign("its `ebb_meta` has no schema version".into()))?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Newer {
                store: self.name.clone(),
                found: version,
            });
        }
        // Migrations from older versions go here, one step at a time.
        if !tables.is_empty() {
            let missing: Vec<&str> = EBB_TABLES
                .into_iter()
                .filter(|t| !tables.iter().any(|x| x == t))
                .collect();
            if !missing.is_empty() {
                return Err(foreign(format!("its tables {} are missing", missing.join(", "))));
            }
        }
        Ok(())
    }

    /// Creates the tables in an empty (or missing) schema. Daemons opening the store at
    /// once take turns (an advisory lock on the schema's name); the one that comes second
    /// finds the tables there.
    async fn create(&self) -> Result<(), StateError> {
        let s = &self.schema;
        let ddl = schema_v1("BYTEA", "BIGSERIAL PRIMARY KEY", "");
        let script = format!(
            "CREATE SCHEMA IF NOT EXISTS {s}; SET LOCAL search_path = {s}; {ddl}
             INSERT INTO ebb_meta VALUES ('schema_version', '{SCHEMA_VERSION}'), ('created_by', 'ebb {}');",
            env!("CARGO_PKG_VERSION")
        );
        let lock_key = format!("ebb state store {s}");
        let meta = format!("{s}.ebb_meta");
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
                .await?;
            let exists: bool = tx
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&meta])
                .await?
                .get(0);
            if !exists {
                tx.batch_execute(&script).await?;
            }
            tx.commit().await
        }
        .await)
    }

    pub async fn schema_version(&self) -> Result<i64, StateError> {
        let rows = self
            .query("SELECT value FROM {s}.ebb_meta WHERE key = 'schema_version'", &[])
            .await?;
        rows.first()
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .ok_or_else(|| StateError::Foreign(self.name.clone(), "its schema version is not a number".into()))
    }

    pub async fn start_run(&self, model: &str, now: &str) -> Result<i64, StateError> {
        let insert =
            self.sql("INSERT INTO {s}.ebb_runs (model, started_at, status) VALUES ($1, $2, 'running') RETURNING id");
        // A second attempt (the connection was lost) first looks for the row the first one
        // may have committed.
        let find = self.sql(
            "SELECT id FROM {s}.ebb_runs WHERE model = $1 AND started_at = $2 AND status = 'running'
             ORDER BY id DESC LIMIT 1",
        );
        let attempts = std::sync::atomic::AtomicU32::new(0);
        on_writer!(self, |c| async {
            if attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                if let Some(r) = c.query_opt(&find, &[&model, &now]).await? {
                    return Ok(r.get(0));
                }
            }
            Ok(c.query_one(&insert, &[&model, &now]).await?.get(0))
        }
        .await)
    }

    pub async fn finish_run(
        &self,
        id: i64,
        now: &str,
        status: &str,
        k: RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        self.execute(
            "UPDATE {s}.ebb_runs SET ended_at = $2, status = $3, rows_read = $4, rows_added = $5, rows_changed = $6,
                rows_removed = $7, rows_unchanged = $8, rows_invalid = $9, rows_sent = $10, rows_confirmed = $11,
                rows_rejected = $12, api_calls = $13, error = $14 WHERE id = $1",
            &[
                &id,
                &now,
                &status,
                &k.read,
                &k.added,
                &k.changed,
                &k.removed,
                &k.unchanged,
                &k.invalid,
                &k.sent,
                &k.confirmed,
                &k.rejected,
                &k.api_calls,
                &error,
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn runs(&self, model: &str, limit: i64) -> Result<Vec<RunRecord>, StateError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM {{s}}.ebb_runs WHERE model = $1 ORDER BY id DESC LIMIT $2");
        let rows = self.query(&sql, &[&model, &limit]).await?;
        Ok(rows.iter().map(run_record).collect())
    }

    pub async fn last_runs(&self) -> Result<Vec<RunRecord>, StateError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM {{s}}.ebb_runs WHERE id IN (SELECT max(id) FROM {{s}}.ebb_runs GROUP BY model)
             ORDER BY model COLLATE \"C\""
        );
        let rows = self.query(&sql, &[]).await?;
        Ok(rows.iter().map(run_record).collect())
    }

    pub async fn last_completed(&self, model: &str) -> Result<Option<RunRecord>, StateError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM {{s}}.ebb_runs WHERE model = $1 AND status IN ('succeeded', 'partial')
             ORDER BY id DESC LIMIT 1"
        );
        let rows = self.query(&sql, &[&model]).await?;
        Ok(rows.first().map(run_record))
    }

    pub async fn snapshot(&self, model: &str) -> Result<Vec<SnapshotEntry>, StateError> {
        let rows = self
            .query(
                "SELECT key, hash, record_id FROM {s}.ebb_snapshot WHERE model = $1 ORDER BY key COLLATE \"C\"",
                &[&model],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SnapshotEntry {
                key: r.get(0),
                hash: hash16(r.get(1)),
                record_id: r.get(2),
            })
            .collect())
    }

    pub async fn snapshot_len(&self, model: &str) -> Result<u64, StateError> {
        let n: i64 = self
            .query("SELECT count(*) FROM {s}.ebb_snapshot WHERE model = $1", &[&model])
            .await?[0]
            .get(0);
        Ok(n as u64)
    }

    /// Streams the snapshot as `(key_fn(key), hash)` chunks: key text, or its hash computed
    /// where it is read.
    pub async fn scan_snapshot<K: Send + 'static>(
        &self,
        model: &str,
        key_fn: fn(&str) -> K,
        tx: mpsc::Sender<Vec<(K, [u8; 16])>>,
    ) -> Result<(), StateError> {
        let sql = self.sql("SELECT key, hash FROM {s}.ebb_snapshot WHERE model = $1");
        let mut reader = self.reader(false).await?;
        let mut retried = false;
        loop {
            let params: [&(dyn ToSql + Sync); 1] = [&model];
            let mut sent = false;
            let mut timed_out = false;
            let limit = self.statement_timeout;
            let scanned: Result<(), tokio_postgres::Error> = async {
                let Some(rows) = within(limit, reader.query_raw(&sql, params)).await else {
                    timed_out = true;
                    return Ok(());
                };
                let rows = rows?;
                futures_util::pin_mut!(rows);
                let mut chunk = Vec::with_capacity(8192);
                loop {
                    // The wait for the server's next rows, not for the consumer.
                    let Some(next) = within(limit, rows.try_next()).await else {
                        timed_out = true;
                        return Ok(());
                    };
                    let Some(r) = next? else { break };
                    chunk.push((key_fn(r.get::<_, &str>(0)), hash16(r.get(1))));
                    if chunk.len() == 8192 {
                        sent = true;
                        if tx
                            .send(std::mem::replace(&mut chunk, Vec::with_capacity(8192)))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(chunk).await;
                }
                Ok(())
            }
            .await;
            if timed_out {
                let _ = self.reader(true).await;
                return Err(self.no_answer());
            }
            match scanned {
                Ok(()) => return Ok(()),
                // Once chunks went out, a second scan would send them twice.
                Err(e) if !retried && !sent && lost(&e) => {
                    retried = true;
                    reader = self.reader(true).await?;
                }
                Err(e) => return Err(q(&self.name)(e)),
            }
        }
    }

    pub async fn record_ids(&self, model: &str, keys: &[String]) -> Result<HashMap<String, String>, StateError> {
        let rows = self
            .query(
                "SELECT key, record_id FROM {s}.ebb_snapshot WHERE model = $1 AND key = ANY($2) AND record_id IS NOT NULL",
                &[&model, &keys],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn inflight(&self, model: &str) -> Result<Vec<InflightBatch>, StateError> {
        let rows = self
            .query(
                "SELECT run_id, batch, op, keys FROM {s}.ebb_inflight WHERE model = $1 ORDER BY run_id, batch",
                &[&model],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let (op, keys) = (r.try_get(2).ok(), r.try_get::<_, &str>(3).ok());
                inflight_record(&self.name, model, r.get(0), r.get(1), op, keys)
            })
            .collect()
    }

    /// Every write is idempotent (upserts, deletes by key, the token set): if the connection
    /// is lost, even during the commit, the transaction runs again whole on a new one.
    pub async fn apply(&self, model: &str, writes: Vec<StateWrite>) -> Result<(), StateError> {
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            for w in &writes {
                self.apply_one(&tx, model, w).await?;
            }
            tx.commit().await
        }
        .await)
    }

    /// `text` (with `{s}` replaced) prepared once and reused.
    async fn prepared(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        text: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let sql = self.sql(text);
        if let Some(st) = self.statements.lock().unwrap_or_else(|p| p.into_inner()).get(&sql) {
            return Ok(st.clone());
        }
        let st = tx.prepare(&sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, st.clone());
        Ok(st)
    }

    async fn apply_one(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        model: &str,
        w: &StateWrite,
    ) -> Result<(), tokio_postgres::Error> {
        match w {
            StateWrite::Inflight(b) => {
                tx.execute(
                    &self
                        .prepared(
                            tx,
                            "INSERT INTO {s}.ebb_inflight (model, run_id, batch, op, keys) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (model, run_id, batch) DO UPDATE SET op = excluded.op, keys = excluded.keys",
                        )
                        .await?,
                    &[&model, &b.run_id, &b.batch, &b.op, &keys_text(&b.keys)],
                )
                .await?;
            }
            StateWrite::Settle { run_id, batch } => {
                tx.execute(
                    &self
                        .prepared(
                            tx,
                            "DELETE FROM {s}.ebb_inflight WHERE model = $1 AND run_id = $2 AND batch = $3",
                        )
                        .await?,
                    &[&model, run_id, batch],
                )
                .await?;
            }
            StateWrite::Confirm { run_id, rows } => {
                let keys: Vec<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
                let hashes: Vec<&[u8]> = rows.iter().map(|(_, h, _)| &h[..]).collect();
                let ids: Vec<Option<&str>> = rows.iter().map(|(_, _, id)| id.as_deref()).collect();
                tx.execute(
                    &self
                        .prepared(
                            tx,
                            "INSERT INTO {s}.ebb_snapshot (model, key, hash, record_id, updated_run)
                         SELECT $1, k, h, i, $5 FROM unnest($2::text[], $3::bytea[], $4::text[]) AS t(k, h, i)
                         ON CONFLICT (model, key) DO UPDATE SET hash = excluded.hash,
                            record_id = COALESCE(excluded.record_id, ebb_snapshot.record_id),
                            updated_run = excluded.updated_run",
                        )
                        .await?,
                    &[&model, &keys, &hashes, &ids, run_id],
                )
                .await?;
                tx.execute(
                    &self
                        .prepared(tx, "DELETE FROM {s}.ebb_row_errors WHERE model = $1 AND key = ANY($2)")
                        .await?,
                    &[&model, &keys],
                )
                .await?;
            }
            StateWrite::Remove { keys } => {
                for table in ["ebb_snapshot", "ebb_row_errors"] {
                    tx.execute(
                        &self
                            .prepared(
                                tx,
                                &format!("DELETE FROM {{s}}.{table} WHERE model = $1 AND key = ANY($2)"),
                            )
                            .await?,
                        &[&model, keys],
                    )
                    .await?;
                }
            }
            StateWrite::Errors(errors) => {
                let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
                let runs: Vec<i64> = errors.iter().map(|e| e.run_id).collect();
                let kinds: Vec<&str> = errors.iter().map(|e| e.kind.as_str()).collect();
                let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
                let msgs: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
                tx.execute(
                    &self.prepared(tx,
                        "INSERT INTO {s}.ebb_row_errors (model, key, run_id, kind, code, message)
                         SELECT $1, k, r, kd, c, m FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
                            AS t(k, r, kd, c, m)
                         ON CONFLICT (model, key) DO UPDATE SET run_id = excluded.run_id, kind = excluded.kind,
                            code = excluded.code, message = excluded.message",
                    ).await?,
                    &[&model, &keys, &runs, &kinds, &codes, &msgs],
                )
                .await?;
            }
            StateWrite::ClearInvalidBefore { run_id } => {
                tx.execute(
                    &self
                        .prepared(
                            tx,
                            "DELETE FROM {s}.ebb_row_errors WHERE model = $1 AND kind = 'invalid' AND run_id < $2",
                        )
                        .await?,
                    &[&model, run_id],
                )
                .await?;
            }
            StateWrite::SnapshotToken(token) => {
                tx.execute(
                    &self
                        .prepared(
                            tx,
                            "INSERT INTO {s}.ebb_meta (key, value) VALUES ($1, $2)
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        )
                        .await?,
                    &[&snapshot_token_key(model), &token.to_string()],
                )
                .await?;
            }
            StateWrite::ReplaceInflight { run_id, keep } => {
                tx.execute(
                    &self
                        .prepared(tx, "DELETE FROM {s}.ebb_inflight WHERE model = $1 AND run_id < $2")
                        .await?,
                    &[&model, run_id],
                )
                .await?;
                if let Some(b) = keep {
                    Box::pin(self.apply_one(tx, model, &StateWrite::Inflight(b.clone()))).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn row_errors(&self, model: &str) -> Result<Vec<RowErrorEntry>, StateError> {
        let rows = self
            .query(
                "SELECT key, run_id, kind, code, message FROM {s}.ebb_row_errors WHERE model = $1 ORDER BY key COLLATE \"C\"",
                &[&model],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| RowErrorEntry {
                key: r.get(0),
                run_id: r.get(1),
                kind: r.get(2),
                code: r.get(3),
                message: r.get(4),
            })
            .collect())
    }

    pub async fn row_error_count(&self, model: &str) -> Result<u64, StateError> {
        let n: i64 = self
            .query("SELECT count(*) FROM {s}.ebb_row_errors WHERE model = $1", &[&model])
            .await?[0]
            .get(0);
        Ok(n as u64)
    }

    pub async fn snapshot_token(&self, model: &str) -> Result<Option<u64>, StateError> {
        let rows = self
            .query(
                "SELECT value FROM {s}.ebb_meta WHERE key = $1",
                &[&snapshot_token_key(model)],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get::<_, String>(0).parse().ok()))
    }

    pub async fn model_destination(&self, model: &str) -> Result<Option<String>, StateError> {
        let rows = self
            .query("SELECT destination FROM {s}.ebb_models WHERE model = $1", &[&model])
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    pub async fn set_model_destination(&self, model: &str, destination: &str) -> Result<(), StateError> {
        self.execute(
            "INSERT INTO {s}.ebb_models (model, destination) VALUES ($1, $2)
             ON CONFLICT (model) DO UPDATE SET destination = excluded.destination",
            &[&model, &destination],
        )
        .await
        .map(drop)
    }

    pub async fn lock(&self, model: &str, me: &LockHolder, lease: Duration) -> Result<LockOutcome, StateError> {
        on_writer!(self, |c| {
            async {
            let tx = c.transaction().await?;
            // Other daemons rely on the lock: it waits for the disk.
            tx.batch_execute("SET LOCAL synchronous_commit = on")
                .await?;
            // The store's clock, so that hosts with skewed clocks agree on the lease.
            let now_ms: i64 = tx
                .query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[])
                .await?
                .get(0);
            let existing = tx
                .query_opt(
                    &self.sql(&format!(
                        "SELECT {LOCK_COLUMNS} FROM {{s}}.ebb_locks WHERE model = $1 FOR UPDATE"
                    )),
                    &[&model],
                )
                .await?
                .map(|r| lock_holder(&r));
            if let Some(h) = &existing {
                if !may_take(h, me, now_ms, lease) {
                    return Ok(LockOutcome::Held(h.clone()));
                }
            }
            // Two processes may both find no row: the primary key lets one insert win; the
            // other sees zero rows affected and reports the winner.
            let n = tx
                .execute(
                    &self.sql(
                        "INSERT INTO {s}.ebb_locks (model, holder, host, pid, started, run_id, acquired_at, heartbeat_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (model) DO UPDATE SET holder = excluded.holder, host = excluded.host,
                            pid = excluded.pid, started = excluded.started, run_id = excluded.run_id,
                            acquired_at = excluded.acquired_at, heartbeat_ms = excluded.heartbeat_ms
                         WHERE $9",
                    ),
                    &[
                        &model,
                        &me.id,
                        &me.host,
                        &me.pid,
                        &me.started,
                        &me.run_id,
                        &me.acquired_at,
                        &now_ms,
                        &existing.is_some(),
                    ],
                )
                .await?;
            if n == 0 {
                let winner = tx
                    .query_one(
                        &self.sql(&format!("SELECT {LOCK_COLUMNS} FROM {{s}}.ebb_locks WHERE model = $1")),
                        &[&model],
                    )
                    .await?;
                return Ok(LockOutcome::Held(lock_holder(&winner)));
            }
            tx.commit().await?;
            Ok(LockOutcome::Acquired {
                took_over: existing.filter(|h| h.id != me.id),
            })
        }
        .await
        })
    }

    pub async fn heartbeat(&self, model: &str, me: &LockHolder) -> Result<bool, StateError> {
        self.execute(
            "UPDATE {s}.ebb_locks SET heartbeat_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
             WHERE model = $1 AND holder = $2",
            &[&model, &me.id],
        )
        .await
        .map(|n| n == 1)
    }

    pub async fn unlock(&self, model: &str, me: &LockHolder) -> Result<(), StateError> {
        self.execute(
            "DELETE FROM {s}.ebb_locks WHERE model = $1 AND holder = $2",
            &[&model, &me.id],
        )
        .await
        .map(drop)
    }

    pub async fn lock_holder(&self, model: &str) -> Result<Option<LockHolder>, StateError> {
        let rows = self
            .query(
                &format!("SELECT {LOCK_COLUMNS} FROM {{s}}.ebb_locks WHERE model = $1"),
                &[&model],
            )
            .await?;
        Ok(rows.first().map(lock_holder))
    }

    pub async fn forget(&self, model: &str) -> Result<u64, StateError> {
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            let mut forgotten = 0;
            for table in ["ebb_snapshot", "ebb_inflight", "ebb_row_errors", "ebb_models"] {
                let n = tx
                    .execute(
                        &self.sql(&format!("DELETE FROM {{s}}.{table} WHERE model = $1")),
                        &[&model],
                    )
                    .await?;
                if table == "ebb_snapshot" {
                    forgotten = n;
                }
            }
            tx.execute(
                &self.sql("DELETE FROM {s}.ebb_meta WHERE key = $1"),
                &[&snapshot_token_key(model)],
            )
            .await?;
            tx.commit().await?;
            Ok(forgotten)
        }
        .await)
    }
}

fn run_record(r: &Row) -> RunRecord {
    RunRecord {
        id: r.get(0),
        model: r.get(1),
        started_at: r.get(2),
        ended_at: r.get(3),
        status: r.get(4),
        counts: RunCounts {
            read: r.get(5),
            added: r.get(6),
            changed: r.get(7),
            removed: r.get(8),
            unchanged: r.get(9),
            invalid: r.get(10),
            sent: r.get(11),
            confirmed: r.get(12),
            rejected: r.get(13),
            api_calls: r.get(14),
        },
        error: r.get(15),
    }
}

fn lock_holder(r: &Row) -> LockHolder {
    LockHolder {
        id: r.get(0),
        host: r.get(1),
        pid: r.get(2),
        started: r.get(3),
        run_id: r.get(4),
        acquired_at: r.get(5),
        heartbeat_ms: r.get(6),
    }
}

/// The tables of schema version 1.
const EBB_TABLES: [&str; 7] = [
    "ebb_meta",
    "ebb_models",
    "ebb_runs",
    "ebb_snapshot",
    "ebb_inflight",
    "ebb_row_errors",
    "ebb_locks",
];

/// Up to five names, then how many more.
fn shown_list(names: &[String]) -> String {
    let mut out = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        out.push_str(&format!(" and {} more", names.len() - 5));
    }
    out
}

/// One connection to the store. The writer's commits need not wait for the server's disk:
/// a commit is durable against a crash of ebb (the server has it) as SQLite's WAL is, and a
/// 5,000-batch run does not pay 10,000 fsyncs; the run lock keeps synchronous commits (see
/// `lock`). The error is text without secrets.
/// A connection, ready within the connect timeout: tokio-postgres bounds only the TCP
/// connect by it, so a server that accepts and then says nothing (not even to TLS or the
/// startup message) would be waited for for ever.
async fn connect(config: &tokio_postgres::Config, writer: bool) -> Result<Client, String> {
    let limit = config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
    let ready = async {
        let (client, conn) = config
            .connect(crate::source::postgres_tls::MakeRustls::new())
            .await
            .map_err(|e| crate::redact::text(&crate::diagnostics::root_cause(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if writer {
            client
                .batch_execute("SET synchronous_commit = off")
                .await
                .map_err(|e| crate::redact::text(&crate::diagnostics::root_cause(&e)))?;
        }
        Ok(client)
    };
    tokio::time::timeout(limit, ready).await.unwrap_or_else(|_| {
        Err(format!(
            "the server did not complete the connection within {} s (`connect_timeout`)",
            limit.as_secs_f64()
        ))
    })
}

//! PostgreSQL backend, for several daemons sharing one state. Tables live in their own
//! schema (`ebb` unless the URL says `ebb_schema=name`), so the database can be shared
//! with other applications.

use super::snapshot_token_key;
use super::{
    hash16, keys_from_text, keys_text, may_take, schema_v1, InflightBatch, LockHolder, LockOutcome, RowErrorEntry,
    RunCounts, RunRecord, SnapshotEntry, StateError, StateWrite, LOCK_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION,
};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

pub struct PgStore {
    /// One connection; the lock keeps a transaction's statements together when several
    /// tasks use the store.
    client: tokio::sync::Mutex<Client>,
    /// A second connection for snapshot scans, so a long scan does not hold up writes.
    reader: Client,
    schema: String,
    name: String,
    /// Statements of the write path, prepared once per connection.
    statements: std::sync::Mutex<HashMap<String, tokio_postgres::Statement>>,
}

fn q(name: &str) -> impl Fn(tokio_postgres::Error) -> StateError + '_ {
    move |e| {
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| crate::diagnostics::root_cause(&e));
        StateError::Query(name.to_string(), msg)
    }
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, StateError> {
        // `ebb_schema` is ours; the rest of the URL is PostgreSQL's.
        let mut parsed = url::Url::parse(url).map_err(|e| StateError::Open(format!("`{url}`: {e}")))?;
        let mut schema = "ebb".to_string();
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, v)| {
                if k == "ebb_schema" {
                    schema = v.to_string();
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
        let _ = parsed.set_password(None);
        let name = format!("`{}` (schema `{schema}`)", parsed);
        let config: tokio_postgres::Config = url
            .replace(&format!("ebb_schema={schema}"), "")
            .trim_end_matches(['?', '&'])
            .parse()
            .map_err(|e: tokio_postgres::Error| StateError::Open(format!("{name}: {e}")))?;
        let (client, conn) = config
            .connect(crate::source::postgres_tls::MakeRustls::new())
            .await
            .map_err(|e| StateError::Open(format!("{name}: {}", crate::diagnostics::root_cause(&e))))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let (reader, conn) = config
            .connect(crate::source::postgres_tls::MakeRustls::new())
            .await
            .map_err(|e| StateError::Open(format!("{name}: {}", crate::diagnostics::root_cause(&e))))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let store = PgStore {
            client: tokio::sync::Mutex::new(client),
            reader,
            statements: std::sync::Mutex::new(HashMap::new()),
            schema,
            name,
        };
        store.migrate().await?;
        // A commit need not wait for the server's disk: it is durable against a crash of
        // ebb (the server has it) as SQLite's WAL is, and a 5,000-batch run does not pay
        // 10,000 fsyncs. The run lock keeps synchronous commits (see `lock`).
        store
            .client
            .lock()
            .await
            .batch_execute("SET synchronous_commit = off")
            .await
            .map_err(q(&store.name))?;
        Ok(store)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `text` with `{s}` replaced by the store's schema.
    fn sql(&self, text: &str) -> String {
        text.replace("{s}", &self.schema)
    }

    async fn query(&self, text: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StateError> {
        let sql = self.sql(text);
        self.client
            .lock()
            .await
            .query(&sql, params)
            .await
            .map_err(q(&self.name))
    }

    async fn execute(&self, text: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StateError> {
        let sql = self.sql(text);
        self.client
            .lock()
            .await
            .execute(&sql, params)
            .await
            .map_err(q(&self.name))
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let s = &self.schema;
        let exists: bool = self
            .query(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'ebb_meta')",
                &[s],
            )
            .await?[0]
            .get(0);
        if !exists {
            let others: i64 = self
                .query(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                    &[s],
                )
                .await?[0]
                .get(0);
            if others > 0 {
                return Err(StateError::Foreign(
                    self.name.clone(),
                    format!("schema `{s}` holds {others} other tables and no `ebb_meta`"),
                ));
            }
            let ddl = schema_v1("BYTEA", "BIGSERIAL PRIMARY KEY", "");
            let script = format!(
                "BEGIN; CREATE SCHEMA IF NOT EXISTS {s}; SET LOCAL search_path = {s}; {ddl}
                 INSERT INTO ebb_meta VALUES ('schema_version', '{SCHEMA_VERSION}'), ('created_by', 'ebb {}'); COMMIT;",
                env!("CARGO_PKG_VERSION")
            );
            self.client
                .lock()
                .await
                .batch_execute(&script)
                .await
                .map_err(q(&self.name))?;
        }
        let version = self.schema_version().await?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Newer {
                store: self.name.clone(),
                found: version,
            });
        }
        // Migrations from older versions go here, one step at a time.
        Ok(())
    }

    pub async fn schema_version(&self) -> Result<i64, StateError> {
        let v: String = self
            .query("SELECT value FROM {s}.ebb_meta WHERE key = 'schema_version'", &[])
            .await?[0]
            .get(0);
        v.parse()
            .map_err(|_| StateError::Foreign(self.name.clone(), "its schema version is not a number".into()))
    }

    pub async fn start_run(&self, model: &str, now: &str) -> Result<i64, StateError> {
        let rows = self
            .query(
                "INSERT INTO {s}.ebb_runs (model, started_at, status) VALUES ($1, $2, 'running') RETURNING id",
                &[&model, &now],
            )
            .await?;
        Ok(rows[0].get(0))
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
        let params: [&(dyn ToSql + Sync); 1] = [&model];
        let rows = self.reader.query_raw(&sql, params).await.map_err(q(&self.name))?;
        futures_util::pin_mut!(rows);
        let mut chunk = Vec::with_capacity(8192);
        while let Some(r) = rows.try_next().await.map_err(q(&self.name))? {
            chunk.push((key_fn(r.get::<_, &str>(0)), hash16(r.get(1))));
            if chunk.len() == 8192
                && tx
                    .send(std::mem::replace(&mut chunk, Vec::with_capacity(8192)))
                    .await
                    .is_err()
            {
                return Ok(());
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(chunk).await;
        }
        Ok(())
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
        Ok(rows
            .iter()
            .map(|r| InflightBatch {
                run_id: r.get(0),
                batch: r.get(1),
                op: r.get(2),
                keys: keys_from_text(r.get(3)),
            })
            .collect())
    }

    pub async fn apply(&self, model: &str, writes: Vec<StateWrite>) -> Result<(), StateError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(q(&self.name))?;
        for w in &writes {
            self.apply_one(&tx, model, w).await.map_err(q(&self.name))?;
        }
        tx.commit().await.map_err(q(&self.name))
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
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(q(&self.name))?;
        // Other daemons rely on the lock: it waits for the disk.
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .await
            .map_err(q(&self.name))?;
        // The store's clock, so that hosts with skewed clocks agree on the lease.
        let now_ms: i64 = tx
            .query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[])
            .await
            .map_err(q(&self.name))?
            .get(0);
        let existing = tx
            .query_opt(
                &self.sql(&format!(
                    "SELECT {LOCK_COLUMNS} FROM {{s}}.ebb_locks WHERE model = $1 FOR UPDATE"
                )),
                &[&model],
            )
            .await
            .map_err(q(&self.name))?
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
            .await
            .map_err(q(&self.name))?;
        if n == 0 {
            let winner = tx
                .query_one(
                    &self.sql(&format!("SELECT {LOCK_COLUMNS} FROM {{s}}.ebb_locks WHERE model = $1")),
                    &[&model],
                )
                .await
                .map_err(q(&self.name))?;
            return Ok(LockOutcome::Held(lock_holder(&winner)));
        }
        tx.commit().await.map_err(q(&self.name))?;
        Ok(LockOutcome::Acquired {
            took_over: existing.filter(|h| h.id != me.id),
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
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(q(&self.name))?;
        let mut forgotten = 0;
        for table in ["ebb_snapshot", "ebb_inflight", "ebb_row_errors", "ebb_models"] {
            let n = tx
                .execute(
                    &self.sql(&format!("DELETE FROM {{s}}.{table} WHERE model = $1")),
                    &[&model],
                )
                .await
                .map_err(q(&self.name))?;
            if table == "ebb_snapshot" {
                forgotten = n;
            }
        }
        tx.execute(
            &self.sql("DELETE FROM {s}.ebb_meta WHERE key = $1"),
            &[&snapshot_token_key(model)],
        )
        .await
        .map_err(q(&self.name))?;
        tx.commit().await.map_err(q(&self.name))?;
        Ok(forgotten)
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

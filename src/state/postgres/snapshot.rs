//! A model's snapshot in PostgreSQL: read whole or scanned in chunks, record ids, the
//! batches in flight, the snapshot's token and destination, forgetting a model, and
//! [`PgStore::apply`], which commits a run's writes in one transaction.

use super::*;
use crate::state::{hash16, inflight_record, keys_text, InflightBatch, SnapshotEntry, StateError, StateWrite};
use crate::state::{snapshot_token_key, watermark_key};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

impl PgStore {
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
    pub(super) async fn prepared(
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
            StateWrite::ConflictBase(_) | StateWrite::Conflicts(_) | StateWrite::ConflictsGone { .. } => {
                self.apply_conflicts(tx, model, w).await?;
            }
            StateWrite::Audit(e) => self.audit_append_in(tx, e).await?,
        }
        Ok(())
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

    /// The value of an `ebb_meta` key.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let rows = self
            .query("SELECT value FROM {s}.ebb_meta WHERE key = $1", &[&key])
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Sets an `ebb_meta` key.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.execute(
            "INSERT INTO {s}.ebb_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await
        .map(drop)
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
            tx.execute(
                &self.sql("DELETE FROM {s}.ebb_meta WHERE key = $1"),
                &[&watermark_key(model)],
            )
            .await?;
            tx.commit().await?;
            Ok(forgotten)
        }
        .await)
    }
}

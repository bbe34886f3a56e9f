//! A model's snapshot in SQLite: read whole or scanned in chunks, record ids, the batches
//! in flight, the snapshot's token and destination, forgetting a model, and
//! [`SqliteStore::apply`], which commits a run's writes in one transaction.

use super::*;
use crate::state::{hash16, inflight_record, keys_text, InflightBatch, SnapshotEntry, StateError, StateWrite};
use crate::state::{snapshot_token_key, watermark_key};
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;
use tokio::sync::mpsc;

impl SqliteStore {
    pub async fn snapshot(&self, model: &str) -> Result<Vec<SnapshotEntry>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare("SELECT key, hash, record_id FROM ebb_snapshot WHERE model = ?1 ORDER BY key")?;
            let rows = stmt.query_map(params![model], |r| {
                Ok(SnapshotEntry {
                    key: r.get(0)?,
                    hash: hash16(r.get_ref(1)?.as_blob()?),
                    record_id: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn snapshot_len(&self, model: &str) -> Result<u64, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT count(*) FROM ebb_snapshot WHERE model = ?1",
                params![model],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n as u64)
    }

    /// Streams the snapshot as `(key_fn(key), hash)` chunks: key text, or its hash computed
    /// where it is read.
    pub async fn scan_snapshot<K: Send + 'static>(
        &self,
        model: &str,
        key_fn: fn(&str) -> K,
        tx: mpsc::Sender<Vec<(K, [u8; 16])>>,
    ) -> Result<(), StateError> {
        let conn = self.reader.clone().unwrap_or_else(|| self.conn.clone());
        let (model, name) = (model.to_string(), self.name.clone());
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            let scan = || -> rusqlite::Result<()> {
                let mut stmt = c.prepare("SELECT key, hash FROM ebb_snapshot WHERE model = ?1")?;
                let mut rows = stmt.query(params![model])?;
                let mut chunk = Vec::with_capacity(8192);
                while let Some(r) = rows.next()? {
                    chunk.push((key_fn(r.get_ref(0)?.as_str()?), hash16(r.get_ref(1)?.as_blob()?)));
                    if chunk.len() == 8192
                        && tx
                            .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(8192)))
                            .is_err()
                    {
                        return Ok(());
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(chunk);
                }
                Ok(())
            };
            scan().map_err(|e| StateError::Query(name, e.to_string()))
        })
        .await
        .map_err(|e| StateError::Query(self.name.clone(), e.to_string()))?
    }

    pub async fn record_ids(&self, model: &str, keys: &[String]) -> Result<HashMap<String, String>, StateError> {
        let (model, keys) = (model.to_string(), keys.to_vec());
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record_id FROM ebb_snapshot WHERE model = ?1 AND key = ?2 AND record_id IS NOT NULL",
            )?;
            let mut out = HashMap::new();
            for k in keys {
                if let Some(id) = stmt
                    .query_row(params![model, k], |r| r.get::<_, String>(0))
                    .optional()?
                {
                    out.insert(k, id);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn inflight(&self, model: &str) -> Result<Vec<InflightBatch>, StateError> {
        let m = model.to_string();
        let rows = self
            .with(move |c| {
                let mut stmt = c.prepare(
                    "SELECT run_id, batch, op, keys FROM ebb_inflight WHERE model = ?1 ORDER BY run_id, batch",
                )?;
                let rows = stmt.query_map(params![m], |r| {
                    let text = |i| r.get_ref(i).map(|v| v.as_str().ok().map(str::to_string));
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, text(2)?, text(3)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(run_id, batch, op, keys)| inflight_record(&self.name, model, run_id, batch, op, keys.as_deref()))
            .collect()
    }

    pub async fn apply(&self, model: &str, writes: Vec<StateWrite>) -> Result<(), StateError> {
        let model = model.to_string();
        // An audit entry reads the last row before it writes: the transaction takes the
        // write lock first, so processes sharing the file append in turn.
        let audited = writes.iter().any(|w| matches!(w, StateWrite::Audit(_)));
        self.with(move |c| {
            let tx = if audited {
                c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?
            } else {
                c.transaction()?
            };
            for w in &writes {
                apply_one(&tx, &model, w)?;
            }
            tx.commit()
        })
        .await
    }

    pub async fn snapshot_token(&self, model: &str) -> Result<Option<u64>, StateError> {
        let key = snapshot_token_key(model);
        let text: Option<String> = self
            .with(move |c| {
                c.query_row("SELECT value FROM ebb_meta WHERE key = ?1", params![key], |r| r.get(0))
                    .optional()
            })
            .await?;
        Ok(text.and_then(|t| t.parse().ok()))
    }

    /// The value of an `ebb_meta` key.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let key = key.to_string();
        self.with(move |c| {
            c.query_row("SELECT value FROM ebb_meta WHERE key = ?1", params![key], |r| r.get(0))
                .optional()
        })
        .await
    }

    /// Sets an `ebb_meta` key.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO ebb_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
        })
        .await
    }

    pub async fn model_destination(&self, model: &str) -> Result<Option<String>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT destination FROM ebb_models WHERE model = ?1",
                params![model],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    pub async fn set_model_destination(&self, model: &str, destination: &str) -> Result<(), StateError> {
        let (model, destination) = (model.to_string(), destination.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO ebb_models (model, destination) VALUES (?1, ?2)
                 ON CONFLICT (model) DO UPDATE SET destination = excluded.destination",
                params![model, destination],
            )
            .map(drop)
        })
        .await
    }

    pub async fn forget(&self, model: &str) -> Result<u64, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM ebb_snapshot WHERE model = ?1", params![model])?;
            tx.execute("DELETE FROM ebb_inflight WHERE model = ?1", params![model])?;
            tx.execute("DELETE FROM ebb_row_errors WHERE model = ?1", params![model])?;
            tx.execute("DELETE FROM ebb_models WHERE model = ?1", params![model])?;
            tx.execute(
                "DELETE FROM ebb_meta WHERE key = ?1",
                params![snapshot_token_key(&model)],
            )?;
            tx.execute("DELETE FROM ebb_meta WHERE key = ?1", params![watermark_key(&model)])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}

fn apply_one(tx: &rusqlite::Transaction, model: &str, w: &StateWrite) -> rusqlite::Result<()> {
    match w {
        StateWrite::Inflight(b) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO ebb_inflight (model, run_id, batch, op, keys) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![model, b.run_id, b.batch, b.op, keys_text(&b.keys)])?;
        }
        StateWrite::SnapshotToken(token) => {
            tx.prepare_cached(
                "INSERT INTO ebb_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![snapshot_token_key(model), token.to_string()])?;
        }
        StateWrite::Settle { run_id, batch } => {
            tx.prepare_cached("DELETE FROM ebb_inflight WHERE model = ?1 AND run_id = ?2 AND batch = ?3")?
                .execute(params![model, run_id, batch])?;
        }
        StateWrite::Confirm { run_id, rows } => {
            let mut up = tx.prepare_cached(
                "INSERT INTO ebb_snapshot (model, key, hash, record_id, updated_run) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (model, key) DO UPDATE SET hash = excluded.hash,
                    record_id = COALESCE(excluded.record_id, ebb_snapshot.record_id), updated_run = excluded.updated_run",
            )?;
            // Most runs have no row errors: then there is nothing to delete row by row.
            let any_errors: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM ebb_row_errors WHERE model = ?1)")?
                .query_row(params![model], |r| r.get(0))?;
            let mut err = tx.prepare_cached("DELETE FROM ebb_row_errors WHERE model = ?1 AND key = ?2")?;
            // The model and the run are bound once: bindings last from one execution to the
            // next, and a first sync writes a million rows here.
            up.raw_bind_parameter(1, model)?;
            up.raw_bind_parameter(5, run_id)?;
            for (key, hash, record_id) in rows {
                up.raw_bind_parameter(2, key)?;
                up.raw_bind_parameter(3, &hash[..])?;
                up.raw_bind_parameter(4, record_id)?;
                up.raw_execute()?;
                if any_errors {
                    err.execute(params![model, key])?;
                }
            }
        }
        StateWrite::Remove { keys } => {
            let mut snap = tx.prepare_cached("DELETE FROM ebb_snapshot WHERE model = ?1 AND key = ?2")?;
            let mut err = tx.prepare_cached("DELETE FROM ebb_row_errors WHERE model = ?1 AND key = ?2")?;
            for key in keys {
                snap.execute(params![model, key])?;
                err.execute(params![model, key])?;
            }
        }
        StateWrite::Errors(errors) => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO ebb_row_errors (model, key, run_id, kind, code, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (model, key) DO UPDATE SET run_id = excluded.run_id, kind = excluded.kind,
                    code = excluded.code, message = excluded.message",
            )?;
            for e in errors {
                stmt.execute(params![model, e.key, e.run_id, e.kind, e.code, e.message])?;
            }
        }
        StateWrite::ClearInvalidBefore { run_id } => {
            tx.prepare_cached("DELETE FROM ebb_row_errors WHERE model = ?1 AND kind = 'invalid' AND run_id < ?2")?
                .execute(params![model, run_id])?;
        }
        StateWrite::ReplaceInflight { run_id, keep } => {
            tx.prepare_cached("DELETE FROM ebb_inflight WHERE model = ?1 AND run_id < ?2")?
                .execute(params![model, run_id])?;
            if let Some(b) = keep {
                apply_one(tx, model, &StateWrite::Inflight(b.clone()))?;
            }
        }
        StateWrite::ConflictBase(_) | StateWrite::Conflicts(_) | StateWrite::ConflictsGone { .. } => {
            super::conflicts::apply_conflicts(tx, model, w)?;
        }
        StateWrite::Audit(e) => super::audit::append_in(tx, e)?,
    }
    Ok(())
}

//! The run history, the row errors of a model's runs, and the run lock (one run per model
//! across the processes sharing the store), in SQLite.

use super::*;
use crate::state::{
    may_take, LockHolder, LockOutcome, RowErrorEntry, RunCounts, RunRecord, StateError, LOCK_COLUMNS, RUN_COLUMNS,
};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::time::Duration;

impl SqliteStore {
    pub async fn start_run(&self, model: &str, now: &str) -> Result<i64, StateError> {
        let (model, now) = (model.to_string(), now.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO ebb_runs (model, started_at, status) VALUES (?1, ?2, 'running')",
                params![model, now],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    pub async fn finish_run(
        &self,
        id: i64,
        now: &str,
        status: &str,
        k: RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        let (now, status, error) = (now.to_string(), status.to_string(), error.map(str::to_string));
        self.with(move |c| {
            c.execute(
                "UPDATE ebb_runs SET ended_at = ?2, status = ?3, rows_read = ?4, rows_added = ?5, rows_changed = ?6,
                    rows_removed = ?7, rows_unchanged = ?8, rows_invalid = ?9, rows_sent = ?10, rows_confirmed = ?11,
                    rows_rejected = ?12, api_calls = ?13, error = ?14 WHERE id = ?1",
                params![
                    id,
                    now,
                    status,
                    k.read,
                    k.added,
                    k.changed,
                    k.removed,
                    k.unchanged,
                    k.invalid,
                    k.sent,
                    k.confirmed,
                    k.rejected,
                    k.api_calls,
                    error
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn runs(&self, model: &str, limit: i64) -> Result<Vec<RunRecord>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE model = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![model, limit], run_record)?;
            rows.collect()
        })
        .await
    }

    pub async fn last_runs(&self) -> Result<Vec<RunRecord>, StateError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE id IN (SELECT max(id) FROM ebb_runs GROUP BY model)
                 ORDER BY model"
            ))?;
            let rows = stmt.query_map([], run_record)?;
            rows.collect()
        })
        .await
    }

    pub async fn last_completed(&self, model: &str) -> Result<Option<RunRecord>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE model = ?1 AND status IN ('succeeded', 'partial')
                     ORDER BY id DESC LIMIT 1"
                ),
                params![model],
                run_record,
            )
            .optional()
        })
        .await
    }

    pub async fn row_errors(&self, model: &str) -> Result<Vec<RowErrorEntry>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut stmt =
                c.prepare("SELECT key, run_id, kind, code, message FROM ebb_row_errors WHERE model = ?1 ORDER BY key")?;
            let rows = stmt.query_map(params![model], |r| {
                Ok(RowErrorEntry {
                    key: r.get(0)?,
                    run_id: r.get(1)?,
                    kind: r.get(2)?,
                    code: r.get(3)?,
                    message: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn row_error_count(&self, model: &str) -> Result<u64, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT count(*) FROM ebb_row_errors WHERE model = ?1",
                params![model],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n as u64)
    }

    pub async fn lock(&self, model: &str, me: &LockHolder, lease: Duration) -> Result<LockOutcome, StateError> {
        let (model, me) = (model.to_string(), me.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = tx
                .query_row(
                    &format!("SELECT {LOCK_COLUMNS} FROM ebb_locks WHERE model = ?1"),
                    params![model],
                    lock_holder,
                )
                .optional()?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            if let Some(h) = &existing {
                if !may_take(h, &me, now_ms, lease) {
                    return Ok(LockOutcome::Held(h.clone()));
                }
            }
            tx.execute(
                "INSERT INTO ebb_locks (model, holder, host, pid, started, run_id, acquired_at, heartbeat_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (model) DO UPDATE SET holder = excluded.holder, host = excluded.host, pid = excluded.pid,
                    started = excluded.started, run_id = excluded.run_id, acquired_at = excluded.acquired_at,
                    heartbeat_ms = excluded.heartbeat_ms",
                params![
                    model,
                    me.id,
                    me.host,
                    me.pid,
                    me.started,
                    me.run_id,
                    me.acquired_at,
                    now_ms
                ],
            )?;
            tx.commit()?;
            Ok(LockOutcome::Acquired {
                took_over: existing.filter(|h| h.id != me.id),
            })
        })
        .await
    }

    pub async fn heartbeat(&self, model: &str, me: &LockHolder) -> Result<bool, StateError> {
        let (model, id) = (model.to_string(), me.id.clone());
        self.with(move |c| {
            c.execute(
                "UPDATE ebb_locks SET heartbeat_ms = ?3 WHERE model = ?1 AND holder = ?2",
                params![model, id, chrono::Utc::now().timestamp_millis()],
            )
            .map(|n| n == 1)
        })
        .await
    }

    pub async fn unlock(&self, model: &str, me: &LockHolder) -> Result<(), StateError> {
        let (model, id) = (model.to_string(), me.id.clone());
        self.with(move |c| {
            c.execute(
                "DELETE FROM ebb_locks WHERE model = ?1 AND holder = ?2",
                params![model, id],
            )
            .map(drop)
        })
        .await
    }

    pub async fn lock_holder(&self, model: &str) -> Result<Option<LockHolder>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {LOCK_COLUMNS} FROM ebb_locks WHERE model = ?1"),
                params![model],
                lock_holder,
            )
            .optional()
        })
        .await
    }
}

fn run_record(r: &rusqlite::Row) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        model: r.get(1)?,
        started_at: r.get(2)?,
        ended_at: r.get(3)?,
        status: r.get(4)?,
        counts: RunCounts {
            read: r.get(5)?,
            added: r.get(6)?,
            changed: r.get(7)?,
            removed: r.get(8)?,
            unchanged: r.get(9)?,
            invalid: r.get(10)?,
            sent: r.get(11)?,
            confirmed: r.get(12)?,
            rejected: r.get(13)?,
            api_calls: r.get(14)?,
        },
        error: r.get(15)?,
    })
}

fn lock_holder(r: &rusqlite::Row) -> rusqlite::Result<LockHolder> {
    Ok(LockHolder {
        id: r.get(0)?,
        host: r.get(1)?,
        pid: r.get(2)?,
        started: r.get(3)?,
        run_id: r.get(4)?,
        acquired_at: r.get(5)?,
        heartbeat_ms: r.get(6)?,
    })
}

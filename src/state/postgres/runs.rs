//! The run history, the row errors of a model's runs, and the run lock (one run per model
//! across the processes sharing the store), in PostgreSQL.

use super::*;
use crate::state::{
    may_take, LockHolder, LockOutcome, RowErrorEntry, RunCounts, RunRecord, StateError, LOCK_COLUMNS, RUN_COLUMNS,
};
use std::time::Duration;
use tokio_postgres::{Client, Row};

impl PgStore {
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

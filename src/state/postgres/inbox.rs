//! The webhook inbox in PostgreSQL ([`crate::state::inbox`]). The writer connection commits
//! asynchronously (`synchronous_commit = off`); the inbox's inserts commit synchronously,
//! since a 202 promises the event is kept even if the server crashes right after.

use super::*;
use crate::state::inbox::{
    inbox_ddl, micros, millis, InboxCounts, InboxEvent, InboxStatus, KeyVersion, NewEvent, Settled, INBOX_COLUMNS,
};
use std::collections::HashMap;

fn event(r: &Row) -> InboxEvent {
    let status: String = r.get(7);
    InboxEvent {
        seq: r.get(0),
        model: r.get(1),
        event_id: r.get(2),
        event_type: r.get(3),
        action: r.get(4),
        event_time: micros(r.get(5)),
        received: millis(r.get(6)),
        status: InboxStatus::parse(&status).unwrap_or(InboxStatus::Dead),
        reason: r.get(8),
        key: r.get(9),
        settled: r.get::<_, Option<i64>>(10).map(millis),
        body: r.get(11),
    }
}

impl PgStore {
    pub async fn inbox_init(&self) -> Result<(), StateError> {
        let ddl = inbox_ddl(&format!("{}.", self.schema), "BIGSERIAL PRIMARY KEY");
        let lock_key = format!("ebb inbox {}", self.schema);
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
                .await?;
            tx.batch_execute(&ddl).await?;
            tx.commit().await
        }
        .await)
    }

    /// A second attempt (the connection was lost during the first) finds the events the
    /// first one committed and says they were already there: both are acknowledged alike.
    pub async fn inbox_put(&self, events: Vec<NewEvent>) -> Result<Vec<bool>, StateError> {
        let insert = "INSERT INTO {s}.ebb_inbox (model, event_id, event_type, action, event_time_us, received_ms, status, reason, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (model, event_id) DO NOTHING";
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit = on").await?;
            let st = self.prepared(&tx, insert).await?;
            let mut stored = Vec::with_capacity(events.len());
            for e in &events {
                let n = tx
                    .execute(
                        &st,
                        &[
                            &e.model,
                            &e.event_id,
                            &e.event_type,
                            &e.action,
                            &e.event_time.timestamp_micros(),
                            &e.received.timestamp_millis(),
                            &e.status.as_str(),
                            &e.reason,
                            &e.body,
                        ],
                    )
                    .await?;
                stored.push(n == 1);
            }
            tx.commit().await?;
            Ok(stored)
        }
        .await)
    }

    pub async fn inbox_pending(&self, model: &str, limit: i64) -> Result<Vec<InboxEvent>, StateError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {INBOX_COLUMNS} FROM {{s}}.ebb_inbox WHERE model = $1 AND status = 'pending' ORDER BY seq LIMIT $2"
                ),
                &[&model, &limit],
            )
            .await?;
        Ok(rows.iter().map(event).collect())
    }

    pub async fn inbox_list(
        &self,
        model: &str,
        statuses: Vec<InboxStatus>,
        ids: Option<Vec<String>>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StateError> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = match ids {
            Some(ids) => {
                self.query(
                    &format!(
                        "SELECT {INBOX_COLUMNS} FROM {{s}}.ebb_inbox WHERE model = $1 AND status = ANY($2)
                         AND event_id = ANY($3) ORDER BY seq DESC LIMIT $4"
                    ),
                    &[&model, &statuses, &ids, &limit],
                )
                .await?
            }
            None => {
                self.query(
                    &format!(
                        "SELECT {INBOX_COLUMNS} FROM {{s}}.ebb_inbox WHERE model = $1 AND status = ANY($2)
                         ORDER BY seq DESC LIMIT $3"
                    ),
                    &[&model, &statuses, &limit],
                )
                .await?
            }
        };
        Ok(rows.iter().map(event).collect())
    }

    pub async fn inbox_versions(
        &self,
        model: &str,
        keys: Vec<String>,
    ) -> Result<HashMap<String, KeyVersion>, StateError> {
        let rows = self
            .query(
                "SELECT key, event_time_us, seq, deleted FROM {s}.ebb_inbox_keys WHERE model = $1 AND key = ANY($2)",
                &[&model, &keys],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    KeyVersion {
                        event_time: r.get(1),
                        seq: r.get(2),
                        deleted: r.get(3),
                    },
                )
            })
            .collect())
    }

    pub async fn inbox_settle(
        &self,
        model: &str,
        settled: Vec<Settled>,
        versions: Vec<(String, KeyVersion)>,
        now: i64,
    ) -> Result<(), StateError> {
        let update =
            "UPDATE {s}.ebb_inbox SET status = $2, reason = $3, record_key = $4, settled_ms = $5 WHERE seq = $1";
        let upsert =
            "INSERT INTO {s}.ebb_inbox_keys (model, key, event_time_us, seq, deleted) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (model, key) DO UPDATE SET event_time_us = excluded.event_time_us, seq = excluded.seq,
                deleted = excluded.deleted";
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            let st = self.prepared(&tx, update).await?;
            for s in &settled {
                tx.execute(&st, &[&s.seq, &s.status.as_str(), &s.reason, &s.key, &now])
                    .await?;
            }
            let st = self.prepared(&tx, upsert).await?;
            for (k, v) in &versions {
                tx.execute(&st, &[&model, k, &v.event_time, &v.seq, &v.deleted]).await?;
            }
            tx.commit().await
        }
        .await)
    }

    pub async fn inbox_counts(&self, model: &str) -> Result<InboxCounts, StateError> {
        let rows = self
            .query(
                "SELECT status, count(*) FROM {s}.ebb_inbox WHERE model = $1 GROUP BY status",
                &[&model],
            )
            .await?;
        let mut counts = InboxCounts::default();
        for r in &rows {
            counts.add(r.get::<_, &str>(0), r.get::<_, i64>(1) as u64);
        }
        let oldest = self
            .query(
                "SELECT min(received_ms) FROM {s}.ebb_inbox WHERE model = $1 AND status = 'pending'",
                &[&model],
            )
            .await?;
        counts.oldest_pending = oldest.first().and_then(|r| r.get::<_, Option<i64>>(0)).map(millis);
        Ok(counts)
    }

    pub async fn inbox_set_status(&self, model: &str, seqs: Vec<i64>, status: InboxStatus) -> Result<u64, StateError> {
        self.execute(
            "UPDATE {s}.ebb_inbox SET status = $3, reason = NULL, settled_ms = NULL WHERE model = $1 AND seq = ANY($2)",
            &[&model, &seqs, &status.as_str()],
        )
        .await
    }

    pub async fn inbox_purge(&self, before_ms: i64) -> Result<u64, StateError> {
        self.execute(
            "DELETE FROM {s}.ebb_inbox WHERE status IN ('applied', 'superseded', 'ignored', 'replayed') AND received_ms < $1",
            &[&before_ms],
        )
        .await
    }
}

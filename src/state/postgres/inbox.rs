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
        self.create_if_missing(&ddl, &format!("ebb inbox {}", self.schema))
            .await
    }

    /// One statement for all the events (arrays unnested: one round trip, however many).
    /// A second attempt (the connection was lost during the first) finds the events the
    /// first one committed and says they were already there: both are acknowledged alike.
    pub async fn inbox_put(&self, events: Vec<NewEvent>) -> Result<Vec<bool>, StateError> {
        let insert = "INSERT INTO {s}.ebb_inbox (model, event_id, event_type, action, event_time_us, received_ms, status, reason, body)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                                  $7::text[], $8::text[], $9::text[])
             ON CONFLICT (model, event_id) DO NOTHING RETURNING model, event_id";
        let col = |f: fn(&NewEvent) -> String| events.iter().map(f).collect::<Vec<String>>();
        let models = col(|e| e.model.clone());
        let ids = col(|e| e.event_id.clone());
        let types = col(|e| e.event_type.clone());
        let actions = col(|e| e.action.clone());
        let statuses = col(|e| e.status.as_str().to_string());
        let bodies = col(|e| e.body.clone());
        let times: Vec<i64> = events.iter().map(|e| e.event_time.timestamp_micros()).collect();
        let received: Vec<i64> = events.iter().map(|e| e.received.timestamp_millis()).collect();
        let reasons: Vec<Option<String>> = events.iter().map(|e| e.reason.clone()).collect();
        let inserted = on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit = on").await?;
            let st = self.prepared(&tx, insert).await?;
            let rows = tx
                .query(
                    &st,
                    &[
                        &models, &ids, &types, &actions, &times, &received, &statuses, &reasons, &bodies,
                    ],
                )
                .await?;
            tx.commit().await?;
            Ok(rows)
        }
        .await)?;
        // The first of the events with an id that was inserted is the stored one.
        let mut new: std::collections::HashSet<(String, String)> =
            inserted.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(events
            .iter()
            .map(|e| new.remove(&(e.model.clone(), e.event_id.clone())))
            .collect())
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

    /// Two statements (arrays unnested), in one transaction, however many events.
    pub async fn inbox_settle(
        &self,
        model: &str,
        settled: Vec<Settled>,
        versions: Vec<(String, KeyVersion)>,
        now: i64,
    ) -> Result<(), StateError> {
        let update = "UPDATE {s}.ebb_inbox AS i SET status = u.status, reason = u.reason, record_key = u.key,
                settled_ms = $5
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(seq, status, reason, key)
             WHERE i.seq = u.seq";
        let upsert = "INSERT INTO {s}.ebb_inbox_keys (model, key, event_time_us, seq, deleted)
             SELECT $1::text, * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::bool[])
             ON CONFLICT (model, key) DO UPDATE SET event_time_us = excluded.event_time_us, seq = excluded.seq,
                deleted = excluded.deleted";
        let seqs: Vec<i64> = settled.iter().map(|s| s.seq).collect();
        let statuses: Vec<&str> = settled.iter().map(|s| s.status.as_str()).collect();
        let reasons: Vec<Option<&str>> = settled.iter().map(|s| s.reason.as_deref()).collect();
        let keys: Vec<Option<&str>> = settled.iter().map(|s| s.key.as_deref()).collect();
        let vkeys: Vec<&str> = versions.iter().map(|(k, _)| k.as_str()).collect();
        let vtimes: Vec<i64> = versions.iter().map(|(_, v)| v.event_time).collect();
        let vseqs: Vec<i64> = versions.iter().map(|(_, v)| v.seq).collect();
        let vdeleted: Vec<bool> = versions.iter().map(|(_, v)| v.deleted).collect();
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            let st = self.prepared(&tx, update).await?;
            tx.execute(&st, &[&seqs, &statuses, &reasons, &keys, &now]).await?;
            if !vkeys.is_empty() {
                let st = self.prepared(&tx, upsert).await?;
                tx.execute(&st, &[&model, &vkeys, &vtimes, &vseqs, &vdeleted]).await?;
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

impl PgStore {
    /// Every row's ids and text of a sealed column ([`crate::state::seal`]).
    pub(crate) async fn sealed_texts(
        &self,
        col: &'static crate::state::seal::SealedColumn,
    ) -> Result<Vec<(Vec<String>, String)>, StateError> {
        let n = col.ids.len();
        let sql = format!(
            "SELECT {}, {} FROM {{s}}.{}",
            crate::state::seal::id_list(col),
            col.column,
            col.table
        );
        let rows = self.query(&sql, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| ((0..n).map(|i| r.get::<_, String>(i)).collect(), r.get::<_, String>(n)))
            .collect())
    }

    /// Puts each new text in place of the old one, where the row still holds the old one.
    pub(crate) async fn swap_texts(
        &self,
        col: &'static crate::state::seal::SealedColumn,
        swaps: Vec<crate::state::seal::Swap>,
    ) -> Result<(), StateError> {
        let wheres: Vec<String> = col
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| format!("CAST({id} AS TEXT) = ${}", i + 3))
            .collect();
        let sql = self.sql(&format!(
            "UPDATE {{s}}.{} SET {c} = $1 WHERE {c} = $2 AND {}",
            col.table,
            wheres.join(" AND "),
            c = col.column
        ));
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            let st = tx.prepare(&sql).await?;
            for (ids, old, new) in &swaps {
                let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![new, old];
                args.extend(ids.iter().map(|i| i as &(dyn tokio_postgres::types::ToSql + Sync)));
                tx.execute(&st, &args).await?;
            }
            tx.commit().await
        }
        .await)
    }
}

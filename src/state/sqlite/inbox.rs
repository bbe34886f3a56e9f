//! The webhook inbox in SQLite ([`crate::state::inbox`]).

use super::*;
use crate::state::inbox::{
    inbox_ddl, micros, millis, InboxCounts, InboxEvent, InboxStatus, KeyVersion, NewEvent, Settled, INBOX_COLUMNS,
};
use rusqlite::{params, params_from_iter, TransactionBehavior};
use std::collections::HashMap;

fn event(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboxEvent> {
    let status: String = r.get(7)?;
    Ok(InboxEvent {
        seq: r.get(0)?,
        model: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        action: r.get(4)?,
        event_time: micros(r.get(5)?),
        received: millis(r.get(6)?),
        status: InboxStatus::parse(&status).unwrap_or(InboxStatus::Dead),
        reason: r.get(8)?,
        key: r.get(9)?,
        settled: r.get::<_, Option<i64>>(10)?.map(millis),
        body: r.get(11)?,
    })
}

impl SqliteStore {
    pub async fn inbox_init(&self) -> Result<(), StateError> {
        self.with(|c| c.execute_batch(&inbox_ddl("", "INTEGER PRIMARY KEY AUTOINCREMENT")))
            .await
    }

    pub async fn inbox_put(&self, events: Vec<NewEvent>) -> Result<Vec<bool>, StateError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut stored = Vec::with_capacity(events.len());
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO ebb_inbox (model, event_id, event_type, action, event_time_us, received_ms, status, reason, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for e in &events {
                    let n = st.execute(params![
                        e.model,
                        e.event_id,
                        e.event_type,
                        e.action,
                        e.event_time.timestamp_micros(),
                        e.received.timestamp_millis(),
                        e.status.as_str(),
                        e.reason,
                        e.body
                    ])?;
                    stored.push(n == 1);
                }
            }
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    pub async fn inbox_pending(&self, model: &str, limit: i64) -> Result<Vec<InboxEvent>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {INBOX_COLUMNS} FROM ebb_inbox WHERE model = ?1 AND status = 'pending' ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![model, limit], event)?;
            let out: rusqlite::Result<Vec<InboxEvent>> = rows.collect();
            out
        })
        .await
    }

    pub async fn inbox_list(
        &self,
        model: &str,
        statuses: Vec<InboxStatus>,
        ids: Option<Vec<String>>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let marks: Vec<String> = statuses.iter().map(|s| format!("'{}'", s.as_str())).collect();
            let mut sql = format!(
                "SELECT {INBOX_COLUMNS} FROM ebb_inbox WHERE model = ?1 AND status IN ({})",
                marks.join(", ")
            );
            let mut args: Vec<rusqlite::types::Value> = vec![model.into()];
            if let Some(ids) = &ids {
                let qs: Vec<String> = (0..ids.len()).map(|i| format!("?{}", i + 2)).collect();
                sql.push_str(&format!(" AND event_id IN ({})", qs.join(", ")));
                args.extend(ids.iter().map(|i| rusqlite::types::Value::from(i.clone())));
            }
            sql.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params_from_iter(args), event)?;
            let out: rusqlite::Result<Vec<InboxEvent>> = rows.collect();
            out
        })
        .await
    }

    pub async fn inbox_versions(
        &self,
        model: &str,
        keys: Vec<String>,
    ) -> Result<HashMap<String, KeyVersion>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut out = HashMap::with_capacity(keys.len());
            let mut st = c.prepare_cached(
                "SELECT event_time_us, seq, deleted FROM ebb_inbox_keys WHERE model = ?1 AND key = ?2",
            )?;
            for k in keys {
                let mut rows = st.query(params![model, k])?;
                if let Some(r) = rows.next()? {
                    out.insert(
                        k,
                        KeyVersion {
                            event_time: r.get(0)?,
                            seq: r.get(1)?,
                            deleted: r.get(2)?,
                        },
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn inbox_settle(
        &self,
        model: &str,
        settled: Vec<Settled>,
        versions: Vec<(String, KeyVersion)>,
        now: i64,
    ) -> Result<(), StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE ebb_inbox SET status = ?2, reason = ?3, record_key = ?4, settled_ms = ?5 WHERE seq = ?1",
                )?;
                for s in &settled {
                    st.execute(params![s.seq, s.status.as_str(), s.reason, s.key, now])?;
                }
                let mut st = tx.prepare_cached(
                    "INSERT INTO ebb_inbox_keys (model, key, event_time_us, seq, deleted) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (model, key) DO UPDATE SET event_time_us = excluded.event_time_us,
                        seq = excluded.seq, deleted = excluded.deleted",
                )?;
                for (k, v) in &versions {
                    st.execute(params![model, k, v.event_time, v.seq, v.deleted])?;
                }
            }
            tx.commit()
        })
        .await
    }

    pub async fn inbox_counts(&self, model: &str) -> Result<InboxCounts, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut counts = InboxCounts::default();
            let mut st = c.prepare_cached("SELECT status, count(*) FROM ebb_inbox WHERE model = ?1 GROUP BY status")?;
            let mut rows = st.query(params![model])?;
            while let Some(r) = rows.next()? {
                counts.add(&r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64);
            }
            let oldest: Option<i64> = c.query_row(
                "SELECT min(received_ms) FROM ebb_inbox WHERE model = ?1 AND status = 'pending'",
                params![model],
                |r| r.get(0),
            )?;
            counts.oldest_pending = oldest.map(millis);
            Ok(counts)
        })
        .await
    }

    pub async fn inbox_set_status(&self, model: &str, seqs: Vec<i64>, status: InboxStatus) -> Result<u64, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE ebb_inbox SET status = ?3, reason = NULL, settled_ms = NULL WHERE model = ?1 AND seq = ?2",
                )?;
                for s in seqs {
                    n += st.execute(params![model, s, status.as_str()])? as u64;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    pub async fn inbox_purge(&self, before_ms: i64) -> Result<u64, StateError> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM ebb_inbox WHERE status IN ('applied', 'superseded', 'ignored', 'replayed') AND received_ms < ?1",
                params![before_ms],
            )? as u64)
        })
        .await
    }
}

impl SqliteStore {
    /// Every row's ids and text of a sealed column ([`crate::state::seal`]).
    pub(crate) async fn sealed_texts(
        &self,
        col: &'static crate::state::seal::SealedColumn,
    ) -> Result<Vec<(Vec<String>, String)>, StateError> {
        self.with(move |c| {
            let n = col.ids.len();
            let sql = format!(
                "SELECT {}, {} FROM {}",
                crate::state::seal::id_list(col),
                col.column,
                col.table
            );
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map([], |r| {
                let ids = (0..n)
                    .map(|i| r.get::<_, String>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((ids, r.get::<_, String>(n)?))
            })?;
            rows.collect()
        })
        .await
    }

    /// Puts each new text in place of the old one, where the row still holds the old one.
    pub(crate) async fn swap_texts(
        &self,
        col: &'static crate::state::seal::SealedColumn,
        swaps: Vec<crate::state::seal::Swap>,
    ) -> Result<(), StateError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let wheres: Vec<String> = col
                    .ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| format!("CAST({id} AS TEXT) = ?{}", i + 3))
                    .collect();
                let mut st = tx.prepare(&format!(
                    "UPDATE {} SET {c} = ?1 WHERE {c} = ?2 AND {}",
                    col.table,
                    wheres.join(" AND "),
                    c = col.column
                ))?;
                for (ids, old, new) in &swaps {
                    let mut args: Vec<&dyn rusqlite::ToSql> = vec![new, old];
                    args.extend(ids.iter().map(|i| i as &dyn rusqlite::ToSql));
                    st.execute(args.as_slice())?;
                }
            }
            tx.commit()
        })
        .await
    }
}

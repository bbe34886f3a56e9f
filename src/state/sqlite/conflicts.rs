//! Two-way fields' bases and conflicts in SQLite ([`crate::state::conflicts`]).

use super::*;
use crate::state::conflicts::{
    base_from_text, base_to_text, conflicts_ddl, resolve_base, resolved, value_of, value_text, Base, Conflict,
    ConflictQuery, ConflictStatus, Side, CONFLICT_COLUMNS,
};
use crate::state::StateWrite;
use rusqlite::{params, params_from_iter, TransactionBehavior};
use std::collections::HashMap;

pub(super) fn conflict(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conflict> {
    let status: String = r.get(9)?;
    let winner: Option<String> = r.get(10)?;
    Ok(Conflict {
        id: r.get(0)?,
        model: r.get(1)?,
        key: r.get(2)?,
        field: r.get(3)?,
        warehouse_value: value_of(&r.get::<_, String>(4)?),
        crm_value: value_of(&r.get::<_, String>(5)?),
        warehouse_time: r.get(6)?,
        crm_time: r.get(7)?,
        policy: r.get(8)?,
        status: ConflictStatus::parse(&status).unwrap_or(ConflictStatus::Open),
        winner: winner.as_deref().and_then(Side::parse),
        reason: r.get(11)?,
        run_id: r.get(12)?,
        detected_ms: r.get(13)?,
        decided_ms: r.get(14)?,
        decided_by: r.get(15)?,
    })
}

/// The writes of [`StateWrite::ConflictBase`], [`StateWrite::Conflicts`] and
/// [`StateWrite::ConflictsGone`] inside a run's transaction.
pub(super) fn apply_conflicts(tx: &rusqlite::Transaction, model: &str, w: &StateWrite) -> rusqlite::Result<()> {
    match w {
        StateWrite::ConflictBase(rows) => {
            let mut st = tx.prepare_cached(
                "INSERT INTO ebb_conflict_base (model, key, fields) VALUES (?1, ?2, ?3)
                 ON CONFLICT (model, key) DO UPDATE SET fields = excluded.fields",
            )?;
            for (key, fields) in rows {
                st.execute(params![model, key, fields])?;
            }
        }
        StateWrite::Conflicts(found) => {
            let mut supersede = tx.prepare_cached(
                "UPDATE ebb_conflicts SET status = 'superseded', decided_ms = ?5
                 WHERE model = ?1 AND key = ?2 AND field = ?3 AND status = 'open' AND fingerprint <> ?4",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO ebb_conflicts (model, key, field, fingerprint, warehouse_value, crm_value, warehouse_time,
                    crm_time, policy, status, winner, reason, run_id, detected_ms, decided_ms, decided_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (model, key, field, fingerprint) DO NOTHING",
            )?;
            for c in found {
                let fp = c.fingerprint();
                supersede.execute(params![model, c.key, c.field, fp, c.detected_ms])?;
                insert.execute(params![
                    model,
                    c.key,
                    c.field,
                    fp,
                    value_text(&c.warehouse_value),
                    value_text(&c.crm_value),
                    c.warehouse_time,
                    c.crm_time,
                    c.policy,
                    c.status.as_str(),
                    c.winner.map(Side::as_str),
                    c.reason,
                    c.run_id,
                    c.detected_ms,
                    c.decided_ms,
                    c.decided_by,
                ])?;
            }
        }
        StateWrite::ConflictsGone { keys, now_ms } => {
            let mut st = tx.prepare_cached(
                "UPDATE ebb_conflicts SET status = 'superseded', decided_ms = ?3
                 WHERE model = ?1 AND key = ?2 AND status = 'open'",
            )?;
            for key in keys {
                st.execute(params![model, key, now_ms])?;
            }
        }
        _ => {}
    }
    Ok(())
}

impl SqliteStore {
    pub async fn conflicts_init(&self) -> Result<(), StateError> {
        self.with(|c| c.execute_batch(&conflicts_ddl("", "INTEGER PRIMARY KEY AUTOINCREMENT")))
            .await
    }

    pub async fn conflict_bases(&self, model: &str, keys: Vec<String>) -> Result<HashMap<String, Base>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut out = HashMap::with_capacity(keys.len());
            let mut st = c.prepare_cached("SELECT fields FROM ebb_conflict_base WHERE model = ?1 AND key = ?2")?;
            for k in keys {
                let mut rows = st.query(params![model, k])?;
                if let Some(r) = rows.next()? {
                    let text: String = r.get(0)?;
                    out.insert(k, base_from_text(&text));
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn conflicts(&self, q: ConflictQuery) -> Result<Vec<Conflict>, StateError> {
        self.with(move |c| {
            let mut sql = format!("SELECT {CONFLICT_COLUMNS} FROM ebb_conflicts WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(m) = &q.model {
                args.push(m.clone().into());
                sql.push_str(&format!(" AND model = ?{}", args.len()));
            }
            if let Some(k) = &q.key {
                args.push(k.clone().into());
                sql.push_str(&format!(" AND key = ?{}", args.len()));
            }
            if !q.statuses.is_empty() {
                let marks: Vec<String> = q.statuses.iter().map(|s| format!("'{}'", s.as_str())).collect();
                sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit.max(0)));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params_from_iter(args), conflict)?;
            rows.collect()
        })
        .await
    }

    pub async fn conflicts_open(&self) -> Result<Vec<(String, u64)>, StateError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT model, COUNT(*) FROM ebb_conflicts WHERE status = 'open' GROUP BY model ORDER BY model",
            )?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
        .await
    }

    pub async fn conflict_resolve(
        &self,
        model: &str,
        key: &str,
        take: Side,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<Conflict>, StateError> {
        let (model, key, by) = (model.to_string(), key.to_string(), by.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let open: Vec<Conflict> = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {CONFLICT_COLUMNS} FROM ebb_conflicts WHERE model = ?1 AND key = ?2 AND status = 'open' ORDER BY id"
                ))?;
                let rows = st.query_map(params![model, key], conflict)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if open.is_empty() {
                return Ok(open);
            }
            let text: Option<String> = tx
                .prepare_cached("SELECT fields FROM ebb_conflict_base WHERE model = ?1 AND key = ?2")?
                .query_row(params![model, key], |r| r.get(0))
                .ok();
            let mut base = text.as_deref().map(base_from_text).unwrap_or_default();
            resolve_base(&mut base, &open, take);
            tx.execute(
                "INSERT INTO ebb_conflict_base (model, key, fields) VALUES (?1, ?2, ?3)
                 ON CONFLICT (model, key) DO UPDATE SET fields = excluded.fields",
                params![model, key, base_to_text(&base)],
            )?;
            tx.execute(
                "UPDATE ebb_conflicts SET status = 'resolved', winner = ?3, decided_ms = ?4, decided_by = ?5
                 WHERE model = ?1 AND key = ?2 AND status = 'open'",
                params![model, key, take.as_str(), now_ms, by],
            )?;
            tx.commit()?;
            Ok(resolved(open, take, &by, now_ms))
        })
        .await
    }
}

//! The audit log in SQLite ([`crate::state::audit`]). An append reads the last row and
//! inserts the next one in a write transaction (`BEGIN IMMEDIATE`), so processes sharing
//! the file take turns and the chain stays linear.

use super::*;
use crate::audit::{Anchor, AuditQuery, AuditRow, NewAudit, ANCHOR_KEY};
use crate::state::audit::{audit_ddl, next_after, AUDIT_COLUMNS};
use crate::state::retention::{cutoff_param, purge_entry, purge_where, set_count, CutoffParam, Cutoffs, Purged};
use rusqlite::{params, params_from_iter, OptionalExtension, TransactionBehavior};

pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        uid: r.get(1)?,
        at_ms: r.get(2)?,
        actor: r.get(3)?,
        action: r.get(4)?,
        model: r.get(5)?,
        run_id: r.get(6)?,
        destination: r.get(7)?,
        operation: r.get(8)?,
        count: r.get(9)?,
        keys: r.get(10)?,
        detail: r.get(11)?,
        prev_hash: r.get(12)?,
        hash: r.get(13)?,
    })
}

/// Appends `e` within `tx` (which must be a write transaction), unless an entry with its
/// uid is there already.
pub(super) fn append_in(tx: &rusqlite::Transaction, e: &NewAudit) -> rusqlite::Result<()> {
    let there: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM ebb_audit WHERE uid = ?1)")?
        .query_row(params![e.uid], |r| r.get(0))?;
    if there {
        return Ok(());
    }
    let last: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM ebb_audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let anchor: Option<String> = match last {
        Some(_) => None,
        None => tx
            .prepare_cached("SELECT value FROM ebb_meta WHERE key = ?1")?
            .query_row(params![ANCHOR_KEY], |r| r.get(0))
            .optional()?,
    };
    let after = next_after(last, anchor);
    let r = e.chain(after.seq + 1, &after.hash);
    tx.prepare_cached(&format!(
        "INSERT INTO ebb_audit ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        r.seq,
        r.uid,
        r.at_ms,
        r.actor,
        r.action,
        r.model,
        r.run_id,
        r.destination,
        r.operation,
        r.count,
        r.keys,
        r.detail,
        r.prev_hash,
        r.hash
    ])?;
    Ok(())
}

impl SqliteStore {
    pub async fn audit_init(&self) -> Result<(), StateError> {
        self.with(|c| c.execute_batch(&audit_ddl(""))).await
    }

    pub async fn audit_append(&self, e: NewAudit) -> Result<(), StateError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            append_in(&tx, &e)?;
            tx.commit()
        })
        .await
    }

    pub async fn audit_list(&self, q: AuditQuery) -> Result<Vec<AuditRow>, StateError> {
        self.with(move |c| {
            let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM ebb_audit WHERE seq > ?1");
            let mut args: Vec<rusqlite::types::Value> = vec![q.after_seq.into()];
            if let Some(t) = q.since_ms {
                args.push(t.into());
                sql.push_str(&format!(" AND at_ms >= ?{}", args.len()));
            }
            if let Some(m) = &q.model {
                args.push(m.clone().into());
                sql.push_str(&format!(" AND model = ?{}", args.len()));
            }
            if let Some(a) = &q.action {
                args.push(a.clone().into());
                sql.push_str(&format!(" AND action = ?{}", args.len()));
            }
            sql.push_str(&format!(" ORDER BY seq LIMIT {}", q.limit.max(1)));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params_from_iter(args), row)?;
            let out: rusqlite::Result<Vec<AuditRow>> = rows.collect();
            out
        })
        .await
    }
}

impl SqliteStore {
    pub async fn purge(&self, cutoffs: Cutoffs, dry_run: bool, actor: String) -> Result<Purged, StateError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut purged = Purged::default();
            for (table, clause) in purge_where("") {
                let Some(param) = cutoff_param(table, &cutoffs) else {
                    continue;
                };
                let param: rusqlite::types::Value = match param {
                    CutoffParam::Text(t) => t.into(),
                    CutoffParam::Ms(ms) => ms.into(),
                };
                let clause = clause.replace("$1", "?1");
                let n = if dry_run {
                    tx.query_row(&format!("SELECT count(*) FROM {clause}"), [&param], |r| {
                        r.get::<_, i64>(0)
                    })? as u64
                } else {
                    tx.execute(&format!("DELETE FROM {clause}"), [&param])? as u64
                };
                set_count(&mut purged, table, n);
            }
            if let Some(before) = cutoffs.audit {
                // The oldest rows up to the first one at or after the limit: a prefix of the
                // chain, whose last row becomes the anchor.
                let last: Option<(i64, String)> = tx
                    .query_row(
                        "SELECT seq, hash FROM ebb_audit WHERE seq < COALESCE(
                            (SELECT min(seq) FROM ebb_audit WHERE at_ms >= ?1), 9223372036854775807)
                         ORDER BY seq DESC LIMIT 1",
                        params![before],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((seq, hash)) = last {
                    let n = if dry_run {
                        tx.query_row("SELECT count(*) FROM ebb_audit WHERE seq <= ?1", params![seq], |r| {
                            r.get::<_, i64>(0)
                        })? as u64
                    } else {
                        tx.execute(
                            "INSERT INTO ebb_meta (key, value) VALUES (?1, ?2)
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            params![ANCHOR_KEY, Anchor { seq, hash }.to_text()],
                        )?;
                        tx.execute("DELETE FROM ebb_audit WHERE seq <= ?1", params![seq])? as u64
                    };
                    purged.audit = n;
                }
            }
            if !dry_run {
                append_in(&tx, &purge_entry(&actor, &cutoffs, &purged))?;
            }
            tx.commit()?;
            Ok(purged)
        })
        .await
    }
}

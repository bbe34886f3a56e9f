//! The audit log in PostgreSQL ([`crate::state::audit`]). Several daemons may append at
//! once: an append takes a transaction-scoped advisory lock before it reads the last row,
//! so appends take turns until their commits and the chain stays linear.

use super::*;
use crate::audit::{Anchor, AuditQuery, AuditRow, NewAudit, ANCHOR_KEY};
use crate::state::audit::{audit_ddl, next_after, AUDIT_COLUMNS};
use crate::state::retention::{cutoff_param, purge_entry, purge_where, set_count, CutoffParam, Cutoffs, Purged};

pub(super) fn row(r: &Row) -> AuditRow {
    AuditRow {
        seq: r.get(0),
        uid: r.get(1),
        at_ms: r.get(2),
        actor: r.get(3),
        action: r.get(4),
        model: r.get(5),
        run_id: r.get(6),
        destination: r.get(7),
        operation: r.get(8),
        count: r.get(9),
        keys: r.get(10),
        detail: r.get(11),
        prev_hash: r.get(12),
        hash: r.get(13),
    }
}

impl PgStore {
    /// The advisory lock's key: one chain per schema.
    pub(super) fn audit_lock_key(&self) -> String {
        format!("ebb audit {}", self.schema)
    }

    pub async fn audit_init(&self) -> Result<(), StateError> {
        let ddl = audit_ddl(&format!("{}.", self.schema));
        self.create_if_missing(&ddl, &format!("ebb audit ddl {}", self.schema))
            .await
    }

    /// Appends `e` within `tx`, unless an entry with its uid is there already (the
    /// transaction run again after a lost connection).
    pub(super) async fn audit_append_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        e: &NewAudit,
    ) -> Result<(), tokio_postgres::Error> {
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&self.audit_lock_key()])
            .await?;
        let st = self
            .prepared(tx, "SELECT EXISTS (SELECT 1 FROM {s}.ebb_audit WHERE uid = $1)")
            .await?;
        let there: bool = tx.query_one(&st, &[&e.uid]).await?.get(0);
        if there {
            return Ok(());
        }
        let st = self
            .prepared(tx, "SELECT seq, hash FROM {s}.ebb_audit ORDER BY seq DESC LIMIT 1")
            .await?;
        let last = tx.query_opt(&st, &[]).await?.map(|r| (r.get(0), r.get(1)));
        let anchor: Option<String> = match last {
            Some(_) => None,
            None => {
                let st = self
                    .prepared(tx, "SELECT value FROM {s}.ebb_meta WHERE key = $1")
                    .await?;
                tx.query_opt(&st, &[&ANCHOR_KEY]).await?.map(|r| r.get(0))
            }
        };
        let after = next_after(last, anchor);
        let r = e.chain(after.seq + 1, &after.hash);
        let st = self
            .prepared(
                tx,
                &format!(
                    "INSERT INTO {{s}}.ebb_audit ({AUDIT_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ),
            )
            .await?;
        tx.execute(
            &st,
            &[
                &r.seq,
                &r.uid,
                &r.at_ms,
                &r.actor,
                &r.action,
                &r.model,
                &r.run_id,
                &r.destination,
                &r.operation,
                &r.count,
                &r.keys,
                &r.detail,
                &r.prev_hash,
                &r.hash,
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn audit_append(&self, e: NewAudit) -> Result<(), StateError> {
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            self.audit_append_in(&tx, &e).await?;
            tx.commit().await
        }
        .await)
    }

    pub async fn audit_list(&self, q: AuditQuery) -> Result<Vec<AuditRow>, StateError> {
        let limit = q.limit.max(1);
        let rows = self
            .query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM {{s}}.ebb_audit WHERE seq > $1
                     AND ($2::bigint IS NULL OR at_ms >= $2) AND ($3::text IS NULL OR model = $3)
                     AND ($4::text IS NULL OR action = $4) ORDER BY seq LIMIT $5"
                ),
                &[&q.after_seq, &q.since_ms, &q.model, &q.action, &limit],
            )
            .await?;
        Ok(rows.iter().map(row).collect())
    }
}

impl PgStore {
    /// Every statement is idempotent or guarded (the anchor is set to the row deleted up
    /// to; the entry has its uid): the transaction may run again after a lost connection.
    pub async fn purge(&self, cutoffs: Cutoffs, dry_run: bool, actor: String) -> Result<Purged, StateError> {
        let entry_actor = actor;
        // One uid for every attempt, so a retried transaction appends the entry once.
        let uid = crate::audit::NewAudit::new(&entry_actor, crate::audit::Action::Purge).uid;
        on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            let mut purged = Purged::default();
            for (table, clause) in purge_where(&format!("{}.", self.schema)) {
                let Some(param) = cutoff_param(table, &cutoffs) else {
                    continue;
                };
                let boxed: Box<dyn ToSql + Sync + Send> = match param {
                    CutoffParam::Text(t) => Box::new(t),
                    CutoffParam::Ms(m) => Box::new(m),
                };
                let p: &(dyn ToSql + Sync) = &*boxed;
                let n = if dry_run {
                    tx.query_one(&format!("SELECT count(*) FROM {clause}"), &[p])
                        .await?
                        .get::<_, i64>(0) as u64
                } else {
                    tx.execute(&format!("DELETE FROM {clause}"), &[p]).await?
                };
                set_count(&mut purged, table, n);
            }
            if let Some(before) = cutoffs.audit {
                tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&self.audit_lock_key()])
                    .await?;
                let last = tx
                    .query_opt(
                        &self.sql(
                            "SELECT seq, hash FROM {s}.ebb_audit WHERE seq < COALESCE(
                                (SELECT min(seq) FROM {s}.ebb_audit WHERE at_ms >= $1), 9223372036854775807)
                             ORDER BY seq DESC LIMIT 1",
                        ),
                        &[&before],
                    )
                    .await?;
                if let Some(r) = last {
                    let (seq, hash): (i64, String) = (r.get(0), r.get(1));
                    let n = if dry_run {
                        tx.query_one(&self.sql("SELECT count(*) FROM {s}.ebb_audit WHERE seq <= $1"), &[&seq])
                            .await?
                            .get::<_, i64>(0) as u64
                    } else {
                        tx.execute(
                            &self.sql(
                                "INSERT INTO {s}.ebb_meta (key, value) VALUES ($1, $2)
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            ),
                            &[&ANCHOR_KEY, &Anchor { seq, hash }.to_text()],
                        )
                        .await?;
                        tx.execute(&self.sql("DELETE FROM {s}.ebb_audit WHERE seq <= $1"), &[&seq])
                            .await?
                    };
                    purged.audit = n;
                }
            }
            if !dry_run {
                let mut entry = purge_entry(&entry_actor, &cutoffs, &purged);
                entry.uid = uid.clone();
                self.audit_append_in(&tx, &entry).await?;
            }
            tx.commit().await?;
            Ok(purged)
        }
        .await)
    }
}

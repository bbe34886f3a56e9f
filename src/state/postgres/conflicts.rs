//! Two-way fields' bases and conflicts in PostgreSQL ([`crate::state::conflicts`]).

use super::*;
use crate::state::conflicts::{
    base_from_text, base_to_text, conflicts_ddl, resolve_base, resolved, value_of, value_text, Base, Conflict,
    ConflictQuery, ConflictStatus, Side, CONFLICT_COLUMNS,
};
use crate::state::StateWrite;

fn conflict(r: &Row) -> Conflict {
    let status: String = r.get(9);
    let winner: Option<String> = r.get(10);
    Conflict {
        id: r.get(0),
        model: r.get(1),
        key: r.get(2),
        field: r.get(3),
        warehouse_value: value_of(&r.get::<_, String>(4)),
        crm_value: value_of(&r.get::<_, String>(5)),
        warehouse_time: r.get(6),
        crm_time: r.get(7),
        policy: r.get(8),
        status: ConflictStatus::parse(&status).unwrap_or(ConflictStatus::Open),
        winner: winner.as_deref().and_then(Side::parse),
        reason: r.get(11),
        run_id: r.get(12),
        detected_ms: r.get(13),
        decided_ms: r.get(14),
        decided_by: r.get(15),
    }
}

const INSERT_CONFLICT: &str =
    "INSERT INTO {s}.ebb_conflicts (model, key, field, fingerprint, warehouse_value, crm_value, warehouse_time,
        crm_time, policy, status, winner, reason, run_id, detected_ms, decided_ms, decided_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
     ON CONFLICT (model, key, field, fingerprint) DO NOTHING";

const UPSERT_BASE: &str = "INSERT INTO {s}.ebb_conflict_base (model, key, fields) VALUES ($1, $2, $3)
     ON CONFLICT (model, key) DO UPDATE SET fields = excluded.fields";

impl PgStore {
    /// The writes of [`StateWrite::ConflictBase`], [`StateWrite::Conflicts`] and
    /// [`StateWrite::ConflictsGone`] inside a run's transaction.
    pub(super) async fn apply_conflicts(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        model: &str,
        w: &StateWrite,
    ) -> Result<(), tokio_postgres::Error> {
        match w {
            StateWrite::ConflictBase(rows) => {
                let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
                let fields: Vec<&str> = rows.iter().map(|(_, f)| f.as_str()).collect();
                let st = self
                    .prepared(
                        tx,
                        "INSERT INTO {s}.ebb_conflict_base (model, key, fields)
                         SELECT $1, k, f FROM unnest($2::text[], $3::text[]) AS t(k, f)
                         ON CONFLICT (model, key) DO UPDATE SET fields = excluded.fields",
                    )
                    .await?;
                tx.execute(&st, &[&model, &keys, &fields]).await?;
            }
            StateWrite::Conflicts(found) => {
                let supersede = self
                    .prepared(
                        tx,
                        "UPDATE {s}.ebb_conflicts SET status = 'superseded', decided_ms = $5
                         WHERE model = $1 AND key = $2 AND field = $3 AND status = 'open' AND fingerprint <> $4",
                    )
                    .await?;
                let insert = self.prepared(tx, INSERT_CONFLICT).await?;
                for c in found {
                    let fp = c.fingerprint();
                    tx.execute(&supersede, &[&model, &c.key, &c.field, &fp, &c.detected_ms])
                        .await?;
                    tx.execute(
                        &insert,
                        &[
                            &model,
                            &c.key,
                            &c.field,
                            &fp,
                            &value_text(&c.warehouse_value),
                            &value_text(&c.crm_value),
                            &c.warehouse_time,
                            &c.crm_time,
                            &c.policy,
                            &c.status.as_str(),
                            &c.winner.map(Side::as_str),
                            &c.reason,
                            &c.run_id,
                            &c.detected_ms,
                            &c.decided_ms,
                            &c.decided_by,
                        ],
                    )
                    .await?;
                }
            }
            StateWrite::ConflictsGone { keys, now_ms } => {
                let st = self
                    .prepared(
                        tx,
                        "UPDATE {s}.ebb_conflicts SET status = 'superseded', decided_ms = $3
                         WHERE model = $1 AND key = ANY($2) AND status = 'open'",
                    )
                    .await?;
                tx.execute(&st, &[&model, keys, now_ms]).await?;
            }
            _ => {}
        }
        Ok(())
    }

    pub async fn conflicts_init(&self) -> Result<(), StateError> {
        let ddl = conflicts_ddl(&format!("{}.", self.schema), "BIGSERIAL PRIMARY KEY");
        self.create_if_missing(&ddl, &format!("ebb conflicts {}", self.schema))
            .await
    }

    pub async fn conflict_bases(&self, model: &str, keys: Vec<String>) -> Result<HashMap<String, Base>, StateError> {
        let rows = self
            .query(
                "SELECT key, fields FROM {s}.ebb_conflict_base WHERE model = $1 AND key = ANY($2)",
                &[&model, &keys],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), base_from_text(&r.get::<_, String>(1))))
            .collect())
    }

    pub async fn conflicts(&self, q: ConflictQuery) -> Result<Vec<Conflict>, StateError> {
        let statuses: Vec<&str> = if q.statuses.is_empty() {
            ConflictStatus::ALL.iter().map(|s| s.as_str()).collect()
        } else {
            q.statuses.iter().map(|s| s.as_str()).collect()
        };
        let sql = format!(
            "SELECT {CONFLICT_COLUMNS} FROM {{s}}.ebb_conflicts
             WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR key = $2) AND status = ANY($3)
             ORDER BY id DESC LIMIT $4"
        );
        let rows = self
            .query(&sql, &[&q.model, &q.key, &statuses, &q.limit.max(0)])
            .await?;
        Ok(rows.iter().map(conflict).collect())
    }

    pub async fn conflicts_open(&self) -> Result<Vec<(String, u64)>, StateError> {
        let rows = self
            .query(
                "SELECT model, count(*) FROM {s}.ebb_conflicts WHERE status = 'open' GROUP BY model ORDER BY model",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    pub async fn conflict_resolve(
        &self,
        model: &str,
        key: &str,
        take: Side,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<Conflict>, StateError> {
        let select = self.sql(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM {{s}}.ebb_conflicts WHERE model = $1 AND key = $2 AND status = 'open'
             ORDER BY id FOR UPDATE"
        ));
        let base_sql = self.sql("SELECT fields FROM {s}.ebb_conflict_base WHERE model = $1 AND key = $2 FOR UPDATE");
        let upsert = self.sql(UPSERT_BASE);
        let update = self.sql(
            "UPDATE {s}.ebb_conflicts SET status = 'resolved', winner = $3, decided_ms = $4, decided_by = $5
             WHERE model = $1 AND key = $2 AND status = 'open'",
        );
        let open: Vec<Conflict> = on_writer!(self, |c| async {
            let tx = c.transaction().await?;
            let open: Vec<Conflict> = tx.query(&select, &[&model, &key]).await?.iter().map(conflict).collect();
            if open.is_empty() {
                tx.commit().await?;
                return Ok(open);
            }
            let text: Option<String> = tx.query_opt(&base_sql, &[&model, &key]).await?.map(|r| r.get(0));
            let mut base = text.as_deref().map(base_from_text).unwrap_or_default();
            resolve_base(&mut base, &open, take);
            tx.execute(&upsert, &[&model, &key, &base_to_text(&base)]).await?;
            tx.execute(&update, &[&model, &key, &take.as_str(), &now_ms, &by])
                .await?;
            tx.commit().await?;
            Ok(open)
        }
        .await)?;
        Ok(resolved(open, take, by, now_ms))
    }
}

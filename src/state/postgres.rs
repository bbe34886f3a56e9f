//! PostgreSQL backend, for several daemons sharing one state. Tables live in their own
//! schema (`ebb` unless the URL says `ebb_schema=name`), so the database can be shared
//! with other applications.

use super::{
    hash16, schema_v1, RowErrorEntry, RunCounts, RunRecord, SnapshotEntry, StateError, RUN_COLUMNS, SCHEMA_VERSION,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

pub struct PgStore {
    /// One connection; the lock keeps a transaction's statements together when several
    /// tasks use the store.
    client: tokio::sync::Mutex<Client>,
    schema: String,
    name: String,
}

fn q(name: &str) -> impl Fn(tokio_postgres::Error) -> StateError + '_ {
    move |e| {
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| crate::diagnostics::root_cause(&e));
        StateError::Query(name.to_string(), msg)
    }
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, StateError> {
        // `ebb_schema` is ours; the rest of the URL is PostgreSQL's.
        let mut parsed = url::Url::parse(url).map_err(|e| StateError::Open(format!("`{url}`: {e}")))?;
        let mut schema = "ebb".to_string();
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, v)| {
                if k == "ebb_schema" {
                    schema = v.to_string();
                    false
                } else {
                    true
                }
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.set_query(None);
        if !pairs.is_empty() {
            parsed.query_pairs_mut().extend_pairs(pairs);
        }
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || schema.is_empty() {
            return Err(StateError::Open(format!(
                "`ebb_schema={schema}` is not a plain schema name"
            )));
        }
        let _ = parsed.set_password(None);
        let name = format!("`{}` (schema `{schema}`)", parsed);
        let config: tokio_postgres::Config = url
            .replace(&format!("ebb_schema={schema}"), "")
            .trim_end_matches(['?', '&'])
            .parse()
            .map_err(|e: tokio_postgres::Error| StateError::Open(format!("{name}: {e}")))?;
        let (client, conn) = config
            .connect(crate::source::postgres_tls::MakeRustls::new())
            .await
            .map_err(|e| StateError::Open(format!("{name}: {}", crate::diagnostics::root_cause(&e))))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let store = PgStore {
            client: tokio::sync::Mutex::new(client),
            schema,
            name,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// `text` with `{s}` replaced by the store's schema.
    fn sql(&self, text: &str) -> String {
        text.replace("{s}", &self.schema)
    }

    async fn query(&self, text: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StateError> {
        let sql = self.sql(text);
        self.client
            .lock()
            .await
            .query(&sql, params)
            .await
            .map_err(q(&self.name))
    }

    async fn execute(&self, text: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StateError> {
        let sql = self.sql(text);
        self.client
            .lock()
            .await
            .execute(&sql, params)
            .await
            .map_err(q(&self.name))
    }

    /// Runs the statements in one transaction.
    async fn transaction(&self, statements: &[(&str, &[&(dyn ToSql + Sync)])]) -> Result<(), StateError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(q(&self.name))?;
        for (text, params) in statements {
            tx.execute(&self.sql(text), params).await.map_err(q(&self.name))?;
        }
        tx.commit().await.map_err(q(&self.name))
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let s = &self.schema;
        let exists: bool = self
            .query(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'ebb_meta')",
                &[s],
            )
            .await?[0]
            .get(0);
        if !exists {
            let others: i64 = self
                .query(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                    &[s],
                )
                .await?[0]
                .get(0);
            if others > 0 {
                return Err(StateError::Foreign(
                    self.name.clone(),
                    format!("schema `{s}` holds {others} other tables and no `ebb_meta`"),
                ));
            }
            let ddl = schema_v1("BYTEA", "BIGSERIAL PRIMARY KEY");
            let script = format!(
                "BEGIN; CREATE SCHEMA IF NOT EXISTS {s}; SET LOCAL search_path = {s}; {ddl}
                 INSERT INTO ebb_meta VALUES ('schema_version', '{SCHEMA_VERSION}'), ('created_by', 'ebb {}'); COMMIT;",
                env!("CARGO_PKG_VERSION")
            );
            self.client
                .lock()
                .await
                .batch_execute(&script)
                .await
                .map_err(q(&self.name))?;
        }
        let version = self.schema_version().await?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Newer {
                store: self.name.clone(),
                found: version,
            });
        }
        Ok(())
    }

    pub async fn schema_version(&self) -> Result<i64, StateError> {
        let v: String = self
            .query("SELECT value FROM {s}.ebb_meta WHERE key = 'schema_version'", &[])
            .await?[0]
            .get(0);
        v.parse()
            .map_err(|_| StateError::Foreign(self.name.clone(), "its schema version is not a number".into()))
    }

    pub async fn start_run(&self, model: &str, now: &str) -> Result<i64, StateError> {
        let rows = self
            .query(
                "INSERT INTO {s}.ebb_runs (model, started_at, status) VALUES ($1, $2, 'running') RETURNING id",
                &[&model, &now],
            )
            .await?;
        Ok(rows[0].get(0))
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
        Ok(rows
            .iter()
            .map(|r| RunRecord {
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
            })
            .collect())
    }

    pub async fn snapshot(&self, model: &str) -> Result<Vec<SnapshotEntry>, StateError> {
        let rows = self
            .query(
                "SELECT key, hash, pending_hash, record_id FROM {s}.ebb_snapshot WHERE model = $1 ORDER BY key COLLATE \"C\"",
                &[&model],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SnapshotEntry {
                key: r.get(0),
                hash: hash16(r.get(1)),
                pending: hash16(r.get(2)),
                record_id: r.get(3),
            })
            .collect())
    }

    pub async fn mark_pending(&self, model: &str, rows: &[(String, [u8; 16])]) -> Result<(), StateError> {
        let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|(_, h)| &h[..]).collect();
        self.execute(
            "INSERT INTO {s}.ebb_snapshot (model, key, pending_hash)
             SELECT $1, k, h FROM unnest($2::text[], $3::bytea[]) AS t(k, h)
             ON CONFLICT (model, key) DO UPDATE SET pending_hash = excluded.pending_hash",
            &[&model, &keys, &hashes],
        )
        .await?;
        Ok(())
    }

    pub async fn confirm(
        &self,
        model: &str,
        run_id: i64,
        rows: &[(String, [u8; 16], Option<String>)],
    ) -> Result<(), StateError> {
        let keys: Vec<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|(_, h, _)| &h[..]).collect();
        let ids: Vec<Option<&str>> = rows.iter().map(|(_, _, id)| id.as_deref()).collect();
        self.transaction(&[
            (
                "INSERT INTO {s}.ebb_snapshot (model, key, hash, record_id, updated_run)
                 SELECT $1, k, h, i, $5 FROM unnest($2::text[], $3::bytea[], $4::text[]) AS t(k, h, i)
                 ON CONFLICT (model, key) DO UPDATE SET hash = excluded.hash, pending_hash = NULL,
                    record_id = COALESCE(excluded.record_id, ebb_snapshot.record_id), updated_run = excluded.updated_run",
                &[&model, &keys, &hashes, &ids, &run_id],
            ),
            ("DELETE FROM {s}.ebb_row_errors WHERE model = $1 AND key = ANY($2)", &[&model, &keys]),
        ])
        .await
    }

    pub async fn record_errors(&self, model: &str, errors: &[RowErrorEntry]) -> Result<(), StateError> {
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        let runs: Vec<i64> = errors.iter().map(|e| e.run_id).collect();
        let kinds: Vec<&str> = errors.iter().map(|e| e.kind.as_str()).collect();
        let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
        let msgs: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        self.execute(
            "INSERT INTO {s}.ebb_row_errors (model, key, run_id, kind, code, message)
             SELECT $1, k, r, kd, c, m FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
                AS t(k, r, kd, c, m)
             ON CONFLICT (model, key) DO UPDATE SET run_id = excluded.run_id, kind = excluded.kind,
                code = excluded.code, message = excluded.message",
            &[&model, &keys, &runs, &kinds, &codes, &msgs],
        )
        .await?;
        Ok(())
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

    pub async fn forget(&self, model: &str) -> Result<(), StateError> {
        self.transaction(&[
            ("DELETE FROM {s}.ebb_snapshot WHERE model = $1", &[&model]),
            ("DELETE FROM {s}.ebb_row_errors WHERE model = $1", &[&model]),
        ])
        .await
    }
}

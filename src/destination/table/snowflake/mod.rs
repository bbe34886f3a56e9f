//! The table writer on Snowflake, through the SQL API (crate::snowflake): no driver, no
//! stage files (the API takes neither PUT nor COPY from a local file).
//!
//! A write is sent as multi-statement requests of at most [`REQUEST_BYTES`] of rows each
//! (Snowflake takes 1 MB of statement text a request). Each request is one transaction:
//! the rows, as one JSON array in a dollar-quoted literal (values never pasted into SQL
//! otherwise; a `$` in a value is escaped in the JSON, so the literal cannot end early),
//! land in a temporary table by `PARSE_JSON` + `FLATTEN`, then `BEGIN`, an `UPDATE … FROM`
//! of the rows whose values differ and an `INSERT … WHERE NOT EXISTS` of the new keys
//! (Snowflake has no `ON CONFLICT`; `MERGE` would not say how many rows it updated versus
//! deleted), the deletes, `COMMIT`. The counts come from each statement's own result.
//!
//! Snowflake does not enforce keys: one row per key is kept by these statements, ebb being
//! the table's writer. Names written without double quotes follow Snowflake's rule and are
//! upper-cased when ebb creates the table; an existing table's names are matched ignoring
//! case (docs/tables.md).

use super::types::{ColumnType, DbType};
use super::{
    check_found, quote_ident, resolve_found, sql, stage, staged_columns, Existing, ExistingColumn, Mode, OnDeleted,
    Resolved, TableCheck, TableError, TableName, TableRow, TableSpec, WriteCounts,
};
use crate::config::project::SnowflakeConnection;
use crate::snowflake::Client;
use crate::source::SourceError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use std::path::Path;

/// The most row data one request carries (JSON text), under the API's 1 MB of statement
/// text with room for the SQL around it.
pub const REQUEST_BYTES: usize = 640 * 1024;
mod rows;

use rows::{dml_count, first_text, json_rows, requests_of, rows, select_rows, snowflake_type, stored};

const STAGE: &str = "EBB_STAGE";
const DELETES: &str = "EBB_DELETE";

/// A Snowflake table being written.
pub struct SnowflakeWriter {
    spec: TableSpec,
    name: TableName,
    /// Names are used exactly as written (the table name has a quoted part).
    exact: bool,
    api: Client,
    /// The connection's schema, for a table named without one.
    schema: Option<String>,
    resolved: Option<Resolved>,
    /// Mirror mode: the transient table of the keys written since `mirror_begin`.
    seen: Option<String>,
}

impl SnowflakeWriter {
    pub fn open(
        spec: TableSpec,
        name: TableName,
        c: &SnowflakeConnection,
        project_dir: &Path,
    ) -> Result<SnowflakeWriter, TableError> {
        let api = Client::new(c, project_dir).map_err(|e| TableError::Connect {
            connection: spec.connection.clone(),
            message: e.to_string(),
        })?;
        let schema = match &c.schema {
            Some(s) => Some(crate::config::env::expand_env(s).map_err(|source| TableError::Env {
                connection: spec.connection.clone(),
                source,
            })?),
            None => None,
        };
        Ok(SnowflakeWriter {
            exact: spec.table.contains('"'),
            spec,
            name,
            api,
            schema,
            resolved: None,
            seen: None,
        })
    }

    fn named(&self, n: &str) -> String {
        if self.exact {
            n.to_string()
        } else {
            stored(n)
        }
    }

    fn fail(&self, e: SourceError) -> TableError {
        match e {
            SourceError::Auth(message) | SourceError::Connect(message) => TableError::Connect {
                connection: self.spec.connection.clone(),
                message,
            },
            SourceError::Query(message) => TableError::Database {
                table: self.spec.table.clone(),
                message,
            },
            other => TableError::Database {
                table: self.spec.table.clone(),
                message: other.to_string(),
            },
        }
    }

    async fn current_schema(&self) -> Result<String, TableError> {
        if let Some(s) = self.name.schema.as_deref().or(self.schema.as_deref()) {
            return Ok(self.named(s));
        }
        let rs = self
            .api
            .execute("SELECT CURRENT_SCHEMA()")
            .await
            .map_err(|e| self.fail(e))?;
        first_text(&rs).ok_or_else(|| TableError::Database {
            table: self.spec.table.clone(),
            message: "the table names no schema and the session has none (set `schema` on the connection)".into(),
        })
    }

    pub async fn check(&mut self) -> Result<TableCheck, TableError> {
        Ok(check_found(&self.spec, self.existing().await?))
    }

    pub async fn ensure(&mut self) -> Result<(), TableError> {
        self.resolve().await.map(|_| ())
    }

    async fn resolve(&mut self) -> Result<Resolved, TableError> {
        if let Some(r) = &self.resolved {
            return Ok(r.clone());
        }
        let found = match self.existing().await? {
            Some(e) => Some(e),
            None => {
                let schema = self.current_schema().await?;
                let qualified = format!(
                    "{}.{}",
                    quote_ident(&schema),
                    quote_ident(&self.named(&self.name.table))
                );
                let exact = self.exact;
                let ddl = sql::create_table(
                    &self.spec,
                    &qualified,
                    |t| t.snowflake(),
                    "TIMESTAMP_TZ",
                    |n| {
                        if exact {
                            n.to_string()
                        } else {
                            stored(n)
                        }
                    },
                );
                let statements = format!(
                    "CREATE SCHEMA IF NOT EXISTS {}; {}",
                    quote_ident(&schema),
                    ddl.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
                );
                self.api.submit(&statements, 2, &[]).await.map_err(|e| self.fail(e))?;
                self.existing().await?
            }
        };
        let r = resolve_found(&self.spec, found)?;
        self.resolved = Some(r.clone());
        Ok(r)
    }

    /// The table as it is, `None` when missing.
    async fn existing(&self) -> Result<Option<Existing>, TableError> {
        let schema = self.current_schema().await?;
        let table = self.named(&self.name.table);
        let found = self
            .api
            .submit(
                "SELECT table_schema, table_name FROM information_schema.tables \
                 WHERE UPPER(table_schema) = UPPER(?) AND UPPER(table_name) = UPPER(?) AND table_type = 'BASE TABLE'",
                1,
                &[&schema, &table],
            )
            .await
            .map_err(|e| self.fail(e))?;
        let found: Vec<(String, String)> = rows(&found)
            .into_iter()
            .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?)))
            .collect();
        let pick = found
            .iter()
            .find(|(s, t)| *s == schema && *t == table)
            .or_else(|| (found.len() == 1).then(|| &found[0]));
        let Some((schema, tname)) = pick.cloned() else {
            return Ok(None);
        };
        let columns = self
            .api
            .submit(
                "SELECT column_name, data_type, numeric_precision, numeric_scale, is_nullable, column_default \
                 FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                1,
                &[&schema, &tname],
            )
            .await
            .map_err(|e| self.fail(e))?;
        let columns: Vec<ExistingColumn> = rows(&columns)
            .into_iter()
            .filter_map(|r| {
                let text = |i: usize| r.get(i).cloned().flatten();
                let number = |i: usize| text(i).and_then(|v| v.parse::<u8>().ok());
                Some(ExistingColumn {
                    name: text(0)?,
                    ty: DbType::from_snowflake(&text(1)?, number(2), number(3)),
                    required: text(4).as_deref() == Some("NO") && text(5).is_none(),
                })
            })
            .collect();
        // Snowflake does not enforce keys: the writer keeps one row per key itself.
        let key = columns
            .iter()
            .find(|c| c.name == self.spec.key)
            .or_else(|| columns.iter().find(|c| c.name.eq_ignore_ascii_case(&self.spec.key)))
            .map(|c| vec![vec![c.name.clone()]])
            .unwrap_or_default();
        Ok(Some(Existing {
            schema,
            table: tname,
            columns,
            unique: key,
        }))
    }

    pub async fn write(&mut self, rows: Vec<TableRow>, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        let r = self.resolve().await?;
        let spec = self.spec.clone();
        let (requests, collapsed) = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
            let staged = stage(&spec, rows)?;
            let live = json_rows(&staged.batch);
            let keys =
                RecordBatch::try_from_iter([("k", staged.delete_keys.clone())]).map_err(|e| TableError::Database {
                    table: spec.table.clone(),
                    message: e.to_string(),
                })?;
            let deletes = json_rows(&keys);
            Ok((requests_of(live, deletes), staged.collapsed))
        })
        .await
        .map_err(|e| TableError::Database {
            table: self.spec.table.clone(),
            message: format!("the encoding thread failed: {e}"),
        })??;
        let extracted = format!(
            "CAST('{}' AS TIMESTAMPTZ)",
            extracted_at.format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        );
        let cols = staged_columns(&self.spec);
        let types: Vec<ColumnType> = cols.iter().map(|c| c.ty).collect();
        let key_ty = self.key_type();
        let mut counts = if requests.len() == 1 {
            // One request: the rows in temporary tables of its session.
            let (live, deletes) = requests.into_iter().next().unwrap_or_default();
            let (n_live, n_deletes) = (live.len() as u64, deletes.len() as u64);
            let mut prelude = vec![format!(
                "CREATE TEMPORARY TABLE {STAGE} AS {}",
                select_rows(&r.columns, &types, live)
            )];
            if n_deletes > 0 {
                prelude.push(format!(
                    "CREATE TEMPORARY TABLE {DELETES} AS {}",
                    select_rows(&["k".to_string()], &[key_ty], deletes)
                ));
            }
            self.merge(&r, prelude, (STAGE, DELETES), (n_live, n_deletes), &extracted, &[])
                .await?
        } else {
            // Rows past one request's size: staged in transient tables by one request each,
            // then merged by one more, so that the write stays one transaction.
            let schema = self.schema_of(&r);
            let tag = format!("{:016X}", rand::random::<u64>());
            let stage_t = format!("{schema}{}", quote_ident(&format!("_EBB_STAGE_{tag}")));
            let deletes_t = format!("{schema}{}", quote_ident(&format!("_EBB_DELETE_{tag}")));
            let (mut n_live, mut n_deletes) = (0u64, 0u64);
            let staged = async {
                for (i, (live, deletes)) in requests.into_iter().enumerate() {
                    n_live += live.len() as u64;
                    n_deletes += deletes.len() as u64;
                    let mut statements = Vec::new();
                    for (table, columns, types, rows) in [
                        (&stage_t, r.columns.clone(), types.clone(), live),
                        (&deletes_t, vec!["k".to_string()], vec![key_ty], deletes),
                    ] {
                        let select = select_rows(&columns, &types, rows);
                        statements.push(if i == 0 {
                            format!("CREATE TRANSIENT TABLE {table} AS {select}")
                        } else {
                            format!("INSERT INTO {table} {select}")
                        });
                    }
                    self.run(&statements).await?;
                }
                let drops = [format!("DROP TABLE {stage_t}"), format!("DROP TABLE {deletes_t}")];
                self.merge(
                    &r,
                    Vec::new(),
                    (&stage_t, &deletes_t),
                    (n_live, n_deletes),
                    &extracted,
                    &drops,
                )
                .await
            }
            .await;
            if staged.is_err() {
                // Best effort: a failed write leaves no staging table behind.
                let _ = self
                    .run(&[
                        format!("DROP TABLE IF EXISTS {stage_t}"),
                        format!("DROP TABLE IF EXISTS {deletes_t}"),
                    ])
                    .await;
            }
            staged?
        };
        counts.skipped += collapsed;
        Ok(counts)
    }

    fn key_type(&self) -> ColumnType {
        self.spec
            .columns
            .iter()
            .find(|c| c.name == self.spec.key)
            .map_or(ColumnType::Text, |c| c.ty)
    }

    /// `"schema".` of the resolved table.
    fn schema_of(&self, r: &Resolved) -> String {
        r.table
            .split_once("\".\"")
            .map_or(String::new(), |(s, _)| format!("{s}\"."))
    }

    /// One transaction over the staged rows (`stage`) and keys (`keys`), after `prelude`
    /// and before `after`, in one request: the rows upserted or appended, the keys deleted
    /// or marked deleted. `n` counts the staged rows and keys.
    async fn merge(
        &self,
        r: &Resolved,
        prelude: Vec<String>,
        (stage, keys): (&str, &str),
        (n_live, n_deletes): (u64, u64),
        extracted: &str,
        after: &[String],
    ) -> Result<WriteCounts, TableError> {
        let spec = &self.spec;
        let soft = spec.on_deleted == OnDeleted::Soft;
        let mut statements = prelude;
        statements.push("BEGIN".into());
        let with_time = |q: String| q.replace("CAST($1 AS TIMESTAMPTZ)", extracted);
        // (statement, what its count is): the counted statements' positions.
        let mut counted: Vec<(usize, Counted)> = Vec::new();
        let mut push = |statements: &mut Vec<String>, q: String, c: Option<Counted>| {
            if let Some(c) = c {
                counted.push((statements.len(), c));
            }
            statements.push(q);
        };
        for (filter, kind) in [(soft.then_some(false), Counted::Live), (Some(true), Counted::Gone)] {
            if filter == Some(true) && !soft {
                continue;
            }
            match spec.mode {
                Mode::Upsert | Mode::Mirror => {
                    push(
                        &mut statements,
                        sql::update_from(r, stage, filter, extracted),
                        Some(kind),
                    );
                    push(
                        &mut statements,
                        sql::insert_missing(r, stage, filter, extracted),
                        Some(kind),
                    );
                }
                Mode::Append => push(&mut statements, with_time(sql::append(r, stage, filter)), Some(kind)),
            }
        }
        if n_deletes > 0 {
            match soft.then(|| sql::mark_deleted(r, keys)).flatten() {
                Some(q) => push(&mut statements, with_time(q), Some(Counted::Marked)),
                None => {
                    push(&mut statements, sql::count_present(r, keys), Some(Counted::Present));
                    push(&mut statements, sql::delete_keys(r, keys), None);
                }
            }
        }
        if let Some(seen) = &self.seen {
            push(&mut statements, sql::remember(r, stage, seen), None);
        }
        statements.push("COMMIT".into());
        statements.extend_from_slice(after);
        let handles = self.run(&statements).await?;
        let mut counts = WriteCounts::default();
        let (mut live_n, mut gone_n, mut marked) = (0, 0, 0);
        for (at, kind) in counted {
            let handle = handles.get(at).ok_or_else(|| TableError::Database {
                table: spec.table.clone(),
                message: format!(
                    "Snowflake answered {} statement handles for {} statements",
                    handles.len(),
                    statements.len()
                ),
            })?;
            let rs = self.api.result(handle).await.map_err(|e| self.fail(e))?;
            let n = dml_count(&rs).ok_or_else(|| TableError::Database {
                table: spec.table.clone(),
                message: format!("Snowflake sent no row count for statement {}", at + 1),
            })?;
            match kind {
                Counted::Live => live_n += n,
                Counted::Gone => gone_n += n,
                Counted::Marked | Counted::Present => marked += n,
            }
        }
        match spec.mode {
            Mode::Append => counts.appended = live_n,
            _ => counts.upserted = live_n,
        }
        counts.deleted = gone_n + marked;
        counts.skipped = n_live.saturating_sub(live_n + gone_n) + n_deletes.saturating_sub(marked);
        Ok(counts)
    }

    /// Runs `statements` as one request; the handles of its statements, in order.
    async fn run(&self, statements: &[String]) -> Result<Vec<String>, TableError> {
        let rs = self
            .api
            .submit(&statements.join(";\n"), statements.len(), &[])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(rs.statement_handles.unwrap_or_else(|| vec![rs.statement_handle]))
    }

    /// `UPDATE … SET` `values` (text, cast to each column's type; `None`: null) on the rows
    /// whose `key_column` reads `key` as text. Returns how many rows changed.
    pub async fn set_where(
        &mut self,
        key_column: String,
        key: String,
        values: Vec<(String, Option<String>)>,
    ) -> Result<u64, TableError> {
        self.resolve().await?;
        let existing = self.existing().await?.ok_or_else(|| TableError::Database {
            table: self.spec.table.clone(),
            message: "the table is gone".into(),
        })?;
        let types = existing
            .columns
            .iter()
            .map(|c| (c.name.to_ascii_lowercase(), snowflake_type(&c.ty)))
            .collect();
        let (q, params) = super::set_sql(
            &existing.schema,
            &existing.table,
            &types,
            &key_column,
            key,
            values,
            |_| "?".to_string(),
        )?;
        // Nulls are bound as SQL NULL by a NULL literal in place of the placeholder.
        let mut binds = Vec::new();
        let mut text = String::new();
        let mut parts = q.split('?');
        text.push_str(parts.next().unwrap_or(""));
        for (part, p) in parts.zip(&params) {
            match p {
                Some(v) => {
                    text.push('?');
                    binds.push(v.as_str());
                }
                None => text.push_str("NULL"),
            }
            text.push_str(part);
        }
        let rs = self.api.submit(&text, 1, &binds).await.map_err(|e| self.fail(e))?;
        dml_count(&rs).ok_or_else(|| TableError::Database {
            table: self.spec.table.clone(),
            message: "Snowflake sent no row count for the UPDATE".into(),
        })
    }

    pub async fn mirror_begin(&mut self) -> Result<(), TableError> {
        let r = self.resolve().await?;
        let key_ty = self.key_type();
        let schema = self.schema_of(&r);
        let seen = format!(
            "{schema}{}",
            quote_ident(&format!("_EBB_SEEN_{:016X}", rand::random::<u64>()))
        );
        self.run(&[format!("CREATE TRANSIENT TABLE {seen} (k {})", key_ty.snowflake())])
            .await?;
        self.seen = Some(seen);
        Ok(())
    }

    pub async fn mirror_end(&mut self, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        let Some(seen) = self.seen.clone() else {
            return Err(TableError::Spec {
                table: self.spec.table.clone(),
                reason: super::SpecError::MirrorEndWithoutBegin,
            });
        };
        let r = self.resolve().await?;
        let soft = self.spec.on_deleted == OnDeleted::Soft;
        let extracted = format!(
            "CAST('{}' AS TIMESTAMPTZ)",
            extracted_at.format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        );
        let unseen = sql::unseen(&r, &seen, soft).replace("CAST($1 AS TIMESTAMPTZ)", &extracted);
        let handles = self
            .run(&["BEGIN".into(), unseen, "COMMIT".into(), format!("DROP TABLE {seen}")])
            .await?;
        let rs = self
            .api
            .result(handles.get(1).map(String::as_str).unwrap_or_default())
            .await
            .map_err(|e| self.fail(e))?;
        self.seen = None;
        Ok(WriteCounts {
            deleted: dml_count(&rs).unwrap_or(0),
            ..WriteCounts::default()
        })
    }
}

/// What a counted statement's rows are.
#[derive(Debug, Clone, Copy)]
enum Counted {
    /// Rows upserted or appended.
    Live,
    /// Soft-deleted rows written.
    Gone,
    /// Rows marked deleted by key.
    Marked,
    /// Keys present before a hard delete (a `SELECT count(*)`).
    Present,
}

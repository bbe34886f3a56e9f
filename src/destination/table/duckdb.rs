//! The table writer on DuckDB: a read-write connection leased from the process's one
//! instance of the file (`duckdb_files`, shared with the source's queries), rows staged
//! into a temporary table through the Appender (Arrow chunks, no SQL per row), merged with
//! `INSERT … ON CONFLICT` in the same transaction. Every call runs on a blocking thread.

use super::types::DbType;
use super::{
    quote_ident, resolve, sql, stage, staged_columns, Existing, ExistingColumn, Mode, OnDeleted, Resolved, TableCheck,
    TableError, TableName, TableRow, TableSpec, WriteCounts,
};
use crate::config::project::DuckdbConnection;
use crate::source::duckdb_files::{self, Lease};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use duckdb::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};

const STAGE: &str = "ebb_stage";
const DELETES: &str = "ebb_delete";
const SEEN: &str = "ebb_mirror_seen";

struct Inner {
    spec: TableSpec,
    name: TableName,
    lease: Lease,
    resolved: Option<Resolved>,
    mirroring: bool,
}

/// A DuckDB table being written.
pub struct DuckdbWriter {
    inner: Arc<Mutex<Inner>>,
}

impl DuckdbWriter {
    pub async fn open(
        spec: TableSpec,
        name: TableName,
        c: &DuckdbConnection,
        project_dir: &Path,
    ) -> Result<DuckdbWriter, TableError> {
        let fail = |message: String| TableError::Connect {
            connection: spec.connection.clone(),
            message,
        };
        if c.path == ":memory:" {
            return Err(fail(
                "an in-memory database (`:memory:`) cannot be written by a model".into(),
            ));
        }
        if c.read_only == Some(true) {
            return Err(fail("the connection is `read_only: true`".into()));
        }
        let path = project_dir.join(&c.path);
        let (project_dir, memory_limit, external) = (
            project_dir.to_path_buf(),
            c.memory_limit.clone(),
            c.external_access == Some(true),
        );
        let lease = tokio::task::spawn_blocking(move || {
            duckdb_files::write(&path, duckdb_files::READERS_WAIT, |conn| {
                crate::source::duckdb::configure(conn, &project_dir, memory_limit.as_deref(), external)
            })
        })
        .await
        .map_err(|e| fail(format!("the opening thread failed: {e}")))?
        .map_err(|source| TableError::File {
            connection: spec.connection.clone(),
            source,
        })?;
        Ok(DuckdbWriter {
            inner: Arc::new(Mutex::new(Inner {
                spec,
                name,
                lease,
                resolved: None,
                mirroring: false,
            })),
        })
    }

    /// Runs `f` on a blocking thread with the writer's state.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, TableError> + Send + 'static,
    ) -> Result<T, TableError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .unwrap_or_else(|e| {
            Err(TableError::Database {
                table: String::new(),
                message: format!("the writing thread failed: {e}"),
            })
        })
    }

    pub async fn check(&mut self) -> Result<TableCheck, TableError> {
        self.run(|w| {
            Ok(match w.existing()? {
                None => TableCheck::Missing,
                Some(e) => match resolve(&w.spec, &e) {
                    Ok(_) => TableCheck::Compatible,
                    Err(reason) => TableCheck::Incompatible(reason),
                },
            })
        })
        .await
    }

    pub async fn ensure(&mut self) -> Result<(), TableError> {
        self.run(|w| w.ensure().map(|_| ())).await
    }

    pub async fn write(&mut self, rows: Vec<TableRow>, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        self.run(move |w| {
            let r = w.ensure()?;
            let staged = stage(&w.spec, rows)?;
            let table = w.spec.table.clone();
            let (spec, mirroring) = (w.spec.clone(), w.mirroring);
            let conn = w.lease.conn();
            transaction(conn, &table, |conn| {
                write(conn, &spec, &r, staged, extracted_at, mirroring)
            })
        })
        .await
    }

    /// `UPDATE … SET` `values` (text, cast to each column's type; `None`: null) on the rows
    /// whose `key_column` reads `key` as text. Returns how many rows changed.
    pub async fn set_where(
        &mut self,
        key_column: String,
        key: String,
        values: Vec<(String, Option<String>)>,
    ) -> Result<u64, TableError> {
        self.run(move |w| {
            let table = w.spec.table.clone();
            let conn = w.lease.conn();
            let schema = match &w.name.schema {
                Some(s) => s.clone(),
                None => conn
                    .query_row("SELECT current_schema()", [], |r| r.get::<_, String>(0))
                    .map_err(|e| db(&table, &e))?,
            };
            let mut types = std::collections::HashMap::new();
            let mut st = conn
                .prepare(
                    "SELECT column_name, data_type FROM information_schema.columns
                     WHERE table_schema = ? AND table_name = ?",
                )
                .map_err(|e| db(&table, &e))?;
            let rows = st
                .query_map(duckdb::params![schema, w.name.table], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(|e| db(&table, &e))?;
            for r in rows {
                let (c, t) = r.map_err(|e| db(&table, &e))?;
                types.insert(c.to_ascii_lowercase(), t);
            }
            let (sql, params) =
                super::set_sql(&schema, &w.name.table, &types, &key_column, key, values, |_| "?".into())?;
            conn.execute(&sql, duckdb::params_from_iter(params.iter()))
                .map(|n| n as u64)
                .map_err(|e| db(&table, &e))
        })
        .await
    }

    pub async fn mirror_begin(&mut self) -> Result<(), TableError> {
        self.run(|w| {
            w.ensure()?;
            let key_ty = key_type(&w.spec);
            let table = w.spec.table.clone();
            exec(
                w.lease.conn(),
                &table,
                &format!(
                    "DROP TABLE IF EXISTS temp.{SEEN}; CREATE TEMP TABLE {SEEN} (k {})",
                    key_ty.duckdb()
                ),
            )?;
            w.mirroring = true;
            Ok(())
        })
        .await
    }

    pub async fn mirror_end(&mut self, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        self.run(move |w| {
            if !w.mirroring {
                return Err(TableError::Spec {
                    table: w.spec.table.clone(),
                    reason: super::SpecError::MirrorEndWithoutBegin,
                });
            }
            let r = w.ensure()?;
            let soft = w.spec.on_deleted == OnDeleted::Soft;
            let table = w.spec.table.clone();
            let at = extracted_at.to_rfc3339();
            let counts = transaction(w.lease.conn(), &table, |conn| {
                let n = conn
                    .execute(
                        &sql::unseen(&r, SEEN, soft),
                        duckdb::params_from_iter(soft.then_some(&at)),
                    )
                    .map_err(|e| db(&table, &e))?;
                conn.execute_batch(&format!("DROP TABLE temp.{SEEN}"))
                    .map_err(|e| db(&table, &e))?;
                Ok(WriteCounts {
                    deleted: n as u64,
                    ..WriteCounts::default()
                })
            })?;
            w.mirroring = false;
            Ok(counts)
        })
        .await
    }
}

impl Inner {
    /// The table as it is, `None` when missing.
    fn existing(&self) -> Result<Option<Existing>, TableError> {
        let conn = self.lease.conn();
        let table = &self.spec.table;
        let schema = match &self.name.schema {
            Some(s) => s.clone(),
            None => conn
                .query_row("SELECT current_schema()", [], |r| r.get::<_, String>(0))
                .map_err(|e| db(table, &e))?,
        };
        // The exact name, else the one name equal ignoring case (DuckDB's own rule).
        let mut stmt = conn
            .prepare(
                "SELECT schema_name, table_name, table_oid FROM duckdb_tables() \
                 WHERE database_name = current_database() AND lower(schema_name) = lower($1) \
                 AND lower(table_name) = lower($2) AND NOT temporary",
            )
            .map_err(|e| db(table, &e))?;
        let found: Vec<(String, String, i64)> = stmt
            .query_map([&schema, &self.name.table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| db(table, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| db(table, &e))?;
        let pick = found
            .iter()
            .find(|(s, t, _)| *s == schema && *t == self.name.table)
            .or_else(|| (found.len() == 1).then(|| &found[0]));
        let Some((schema, tname, oid)) = pick.cloned() else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare(
                "SELECT column_name, data_type, is_nullable, column_default IS NOT NULL FROM duckdb_columns() \
                 WHERE table_oid = $1 ORDER BY column_index",
            )
            .map_err(|e| db(table, &e))?;
        let columns = stmt
            .query_map([oid], |r| {
                let nullable: bool = r.get(2)?;
                let has_default: bool = r.get(3)?;
                Ok(ExistingColumn {
                    name: r.get(0)?,
                    ty: DbType::from_duckdb(&r.get::<_, String>(1)?),
                    required: !nullable && !has_default,
                })
            })
            .map_err(|e| db(table, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| db(table, &e))?;
        let mut stmt = conn
            .prepare(
                "SELECT CAST(constraint_column_names AS VARCHAR[]) FROM duckdb_constraints() \
                 WHERE table_oid = $1 AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
            )
            .map_err(|e| db(table, &e))?;
        let unique = stmt
            .query_map([oid], |r| {
                let v: duckdb::types::Value = r.get(0)?;
                Ok(match v {
                    duckdb::types::Value::List(items) => items
                        .into_iter()
                        .filter_map(|i| match i {
                            duckdb::types::Value::Text(s) => Some(s),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                })
            })
            .map_err(|e| db(table, &e))?
            .collect::<Result<Vec<Vec<String>>, _>>()
            .map_err(|e| db(table, &e))?;
        Ok(Some(Existing {
            schema,
            table: tname,
            columns,
            unique,
        }))
    }

    /// Creates the table when missing; the resolved names.
    fn ensure(&mut self) -> Result<Resolved, TableError> {
        if let Some(r) = &self.resolved {
            return Ok(r.clone());
        }
        let table = self.spec.table.clone();
        let existing = match self.existing()? {
            Some(e) => e,
            None => {
                let conn = self.lease.conn();
                let schema = match &self.name.schema {
                    Some(s) => s.clone(),
                    None => conn
                        .query_row("SELECT current_schema()", [], |r| r.get::<_, String>(0))
                        .map_err(|e| db(&table, &e))?,
                };
                let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&self.name.table));
                let ddl = format!(
                    "BEGIN; CREATE SCHEMA IF NOT EXISTS {}; {}; COMMIT",
                    quote_ident(&schema),
                    sql::create_table(&self.spec, &qualified, |t| t.duckdb(), "TIMESTAMPTZ")
                );
                if let Err(e) = conn.execute_batch(&ddl) {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(db(&table, &e));
                }
                self.existing()?.ok_or_else(|| TableError::Database {
                    table: table.clone(),
                    message: "the table is not there after CREATE TABLE".into(),
                })?
            }
        };
        let r = resolve(&self.spec, &existing).map_err(|reason| TableError::Incompatible {
            table: table.clone(),
            reason,
        })?;
        self.resolved = Some(r.clone());
        Ok(r)
    }
}

fn key_type(spec: &TableSpec) -> super::types::ColumnType {
    spec.columns
        .iter()
        .find(|c| c.name == spec.key)
        .map(|c| c.ty)
        .unwrap_or(super::types::ColumnType::Text)
}

/// Runs `f` in a transaction, committed when it succeeds, rolled back otherwise.
fn transaction<T>(
    conn: &Connection,
    table: &str,
    f: impl FnOnce(&Connection) -> Result<T, TableError>,
) -> Result<T, TableError> {
    conn.execute_batch("BEGIN TRANSACTION").map_err(|e| db(table, &e))?;
    match f(conn) {
        Ok(v) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(v),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(db(table, &e))
            }
        },
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// One call's statements, inside its transaction.
fn write(
    conn: &Connection,
    spec: &TableSpec,
    r: &Resolved,
    staged: super::Staged,
    extracted_at: DateTime<Utc>,
    mirroring: bool,
) -> Result<WriteCounts, TableError> {
    let table = spec.table.as_str();
    let at = extracted_at.to_rfc3339();
    let cols = staged_columns(spec);
    let defs: Vec<String> = r
        .columns
        .iter()
        .zip(&cols)
        // JSON is staged as text (the Appender takes Arrow strings as VARCHAR only) and
        // cast by the insert.
        .map(|(name, c)| {
            let ty = if c.ty == super::types::ColumnType::Json {
                "VARCHAR".to_string()
            } else {
                c.ty.duckdb()
            };
            format!("{name} {ty}")
        })
        .collect();
    let mut counts = WriteCounts {
        skipped: staged.collapsed,
        ..WriteCounts::default()
    };
    let rows = staged.batch.num_rows() as u64;
    exec(
        conn,
        table,
        &format!(
            "CREATE OR REPLACE TEMP TABLE {STAGE} ({}); CREATE OR REPLACE TEMP TABLE {DELETES} (k {})",
            defs.join(", "),
            key_type(spec).duckdb()
        ),
    )?;
    append(conn, table, STAGE, staged.batch)?;
    let deletes = staged.delete_keys.len() as u64;
    if deletes > 0 {
        let schema = Schema::new(vec![Field::new("k", staged.delete_keys.data_type().clone(), true)]);
        let batch =
            RecordBatch::try_new(Arc::new(schema), vec![staged.delete_keys]).map_err(|e| TableError::Database {
                table: table.to_string(),
                message: e.to_string(),
            })?;
        append(conn, table, DELETES, batch)?;
    }
    let run = |sql: &str| -> Result<u64, TableError> {
        conn.execute(sql, [&at]).map(|n| n as u64).map_err(|e| db(table, &e))
    };
    let soft = spec.on_deleted == OnDeleted::Soft;
    let (live, gone) = match spec.mode {
        Mode::Upsert | Mode::Mirror => (
            run(&sql::upsert(r, STAGE, soft.then_some(false), false))?,
            if soft {
                run(&sql::upsert(r, STAGE, Some(true), false))?
            } else {
                0
            },
        ),
        Mode::Append => (
            run(&sql::append(r, STAGE, soft.then_some(false)))?,
            if soft {
                run(&sql::append(r, STAGE, Some(true)))?
            } else {
                0
            },
        ),
    };
    match spec.mode {
        Mode::Append => counts.appended = live,
        _ => counts.upserted = live,
    }
    counts.deleted = gone;
    counts.skipped += rows - live - gone;
    if deletes > 0 {
        let marked = match soft.then(|| sql::mark_deleted(r, DELETES)).flatten() {
            Some(q) => run(&q)?,
            None => {
                let present: i64 = conn
                    .query_row(&sql::count_present(r, DELETES), [], |row| row.get(0))
                    .map_err(|e| db(table, &e))?;
                conn.execute(&sql::delete_keys(r, DELETES), [])
                    .map_err(|e| db(table, &e))?;
                present as u64
            }
        };
        counts.deleted += marked;
        counts.skipped += deletes - marked;
    }
    if mirroring {
        conn.execute(&sql::remember(r, STAGE, SEEN), [])
            .map_err(|e| db(table, &e))?;
    }
    exec(
        conn,
        table,
        &format!("DROP TABLE temp.{STAGE}; DROP TABLE temp.{DELETES}"),
    )?;
    Ok(counts)
}

/// Appends `batch` to the temporary table `name` through the Appender.
fn append(conn: &Connection, table: &str, name: &str, batch: RecordBatch) -> Result<(), TableError> {
    if batch.num_rows() == 0 {
        return Ok(());
    }
    let mut app = conn
        .appender_to_catalog_and_db(name, "temp", "main")
        .map_err(|e| db(table, &e))?;
    app.append_record_batch(batch).map_err(|e| db(table, &e))?;
    app.flush().map_err(|e| db(table, &e))
}

fn exec(conn: &Connection, table: &str, sql: &str) -> Result<(), TableError> {
    conn.execute_batch(sql).map_err(|e| db(table, &e))
}

fn db(table: &str, e: &duckdb::Error) -> TableError {
    let msg = e.to_string();
    TableError::Database {
        table: table.to_string(),
        message: msg.lines().next().unwrap_or(&msg).trim().to_string(),
    }
}

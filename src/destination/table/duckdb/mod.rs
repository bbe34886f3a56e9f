//! The table writer on DuckDB: a read-write connection leased from the process's one
//! instance of the file (`duckdb_files`, shared with the source's queries), rows staged
//! into a temporary table through the Appender (Arrow chunks, no SQL per row), merged in
//! the same transaction (write.rs). Every call runs on a blocking thread.
//!
//! A first load ([`DuckdbWriter::defer_key`], asked by an inbound run) creates the table
//! without its primary key, marked by a comment, inserts rows outright while their keys are
//! new, and adds the key at [`DuckdbWriter::finish`]; a table left marked (a run killed
//! before the end) gets its key when a writer next opens it.

use super::types::DbType;
use super::{
    check_found, quote_ident, resolve_found, sql, stage, Existing, ExistingColumn, Mode, OnDeleted, Resolved,
    TableCheck, TableError, TableName, TableRow, TableSpec, WriteCounts,
};
use crate::config::project::DuckdbConnection;
use crate::source::duckdb_files::{self, Lease};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::sync::{Arc, Mutex};

mod write;

use write::{db, exec, transaction, write, Pending};

const SEEN: &str = "ebb_mirror_seen";
/// The comment of a table whose primary key is deferred to the end of its first load.
const KEY_PENDING: &str = "ebb: primary key pending (first load)";

struct Inner {
    spec: TableSpec,
    name: TableName,
    lease: Lease,
    resolved: Option<Resolved>,
    mirroring: bool,
    /// Create the table without its key when missing ([`DuckdbWriter::defer_key`]).
    defer_key: bool,
    /// The table's key is deferred: a first load is under way.
    pending: Option<Pending>,
}

/// The `checkpoint_threshold` of the instance a writer opens, unless the connection sets a
/// `memory_limit`. DuckDB checkpoints when its log passes the threshold (16 MiB by
/// default), and each checkpoint decompresses and compresses again the table's last,
/// partly filled row group: a first load of 1M rows in writes of 50,000 spent more time
/// there than inserting (Python's duckdb 2.0.1: 1M rows in 20 commits 3.88 s at the
/// default, 1.74 s at a threshold above the load). Rows committed but not checkpointed are
/// held by the instance, and the log is replayed when the file opens after a crash, so the
/// threshold bounds both; the instance checkpoints when the last writer closes it.
const WRITER_CHECKPOINT_THRESHOLD: &str = "256MiB";

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
                if memory_limit.is_none() {
                    // Before `configure` locks the configuration.
                    conn.execute_batch(&format!(
                        "SET GLOBAL checkpoint_threshold = '{WRITER_CHECKPOINT_THRESHOLD}'"
                    ))
                    .map_err(|e| crate::source::duckdb::ConfigureError::Confine(e.to_string()))?;
                }
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
                defer_key: false,
                pending: None,
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
        self.run(|w| Ok(check_found(&w.spec, w.existing()?))).await
    }

    pub async fn ensure(&mut self) -> Result<(), TableError> {
        self.run(|w| w.ensure().map(|_| ())).await
    }

    /// When the table is missing, create it without its primary key and load it as a
    /// first load (the module's doc); [`DuckdbWriter::finish`] adds the key.
    pub fn defer_key(&mut self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).defer_key = true;
    }

    /// Ends a first load: adds the deferred primary key.
    pub async fn finish(&mut self) -> Result<(), TableError> {
        self.run(|w| w.add_key()).await
    }

    pub async fn write(&mut self, rows: Vec<TableRow>, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        self.run(move |w| {
            let r = w.ensure()?;
            if w.pending.as_ref().is_some_and(Pending::full) {
                w.add_key()?;
            }
            let staged = stage(&w.spec, rows)?;
            let table = w.spec.table.clone();
            let (spec, mirroring) = (w.spec.clone(), w.mirroring);
            let mut pending = w.pending.take();
            let conn = w.lease.conn();
            // A rolled-back write leaves hashes of keys the table does not hold: their rows
            // go through the merge later, which is right, only slower.
            let result = transaction(conn, &table, |conn| {
                write(conn, &spec, &r, staged, extracted_at, mirroring, pending.as_mut())
            });
            w.pending = pending;
            result
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
    /// The table as it is, `None` when missing. A table whose key is deferred counts its
    /// key as unique (ebb keeps it so until the key is added).
    fn existing(&self) -> Result<Option<Existing>, TableError> {
        Ok(self.existing_pending()?.map(|(mut e, pending)| {
            if pending {
                if let Some(k) = e.columns.iter().find(|c| c.name.eq_ignore_ascii_case(&self.spec.key)) {
                    e.unique.push(vec![k.name.clone()]);
                }
            }
            e
        }))
    }

    /// The table as it is and whether its key is deferred, `None` when missing.
    fn existing_pending(&self) -> Result<Option<(Existing, bool)>, TableError> {
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
                "SELECT schema_name, table_name, table_oid, coalesce(comment, '') = $3 FROM duckdb_tables() \
                 WHERE database_name = current_database() AND lower(schema_name) = lower($1) \
                 AND lower(table_name) = lower($2) AND NOT temporary",
            )
            .map_err(|e| db(table, &e))?;
        let found: Vec<(String, String, i64, bool)> = stmt
            .query_map([&schema, &self.name.table, KEY_PENDING], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(|e| db(table, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| db(table, &e))?;
        let pick = found
            .iter()
            .find(|(s, t, _, _)| *s == schema && *t == self.name.table)
            .or_else(|| (found.len() == 1).then(|| &found[0]));
        let Some((schema, tname, oid, pending)) = pick.cloned() else {
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
        Ok(Some((
            Existing {
                schema,
                table: tname,
                columns,
                unique,
            },
            pending,
        )))
    }

    /// Gives a table whose key was deferred its primary key (one bulk index build), and
    /// ends the first load.
    fn add_key(&mut self) -> Result<(), TableError> {
        self.pending = None;
        let Some((e, true)) = self.existing_pending()? else {
            return Ok(());
        };
        let table = self.spec.table.clone();
        let Some(key) = e.columns.iter().find(|c| c.name.eq_ignore_ascii_case(&self.spec.key)) else {
            return Ok(());
        };
        let qualified = format!("{}.{}", quote_ident(&e.schema), quote_ident(&e.table));
        let conn = self.lease.conn();
        transaction(conn, &table, |conn| {
            exec(
                conn,
                &table,
                &format!(
                    "ALTER TABLE {qualified} ADD PRIMARY KEY ({}); COMMENT ON TABLE {qualified} IS NULL",
                    quote_ident(&key.name)
                ),
            )
        })
        .map_err(|e| match e {
            TableError::Database { table, message } => TableError::Database {
                table,
                message: format!("adding the primary key after the first load failed: {message}"),
            },
            other => other,
        })
    }

    /// Creates the table when missing; the resolved names.
    fn ensure(&mut self) -> Result<Resolved, TableError> {
        if let Some(r) = &self.resolved {
            return Ok(r.clone());
        }
        let table = self.spec.table.clone();
        if self.pending.is_none() && self.existing_pending()?.is_some_and(|(_, pending)| pending) {
            // A first load that did not reach its end.
            self.add_key()?;
        }
        let found = match self.existing()? {
            Some(e) => Some(e),
            None => {
                let conn = self.lease.conn();
                let schema = match &self.name.schema {
                    Some(s) => s.clone(),
                    None => conn
                        .query_row("SELECT current_schema()", [], |r| r.get::<_, String>(0))
                        .map_err(|e| db(&table, &e))?,
                };
                let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&self.name.table));
                let defer = self.defer_key && self.spec.mode != Mode::Append;
                let mut shape = self.spec.clone();
                if defer {
                    // Append mode's DDL: the same columns, no primary key.
                    shape.mode = Mode::Append;
                }
                let ddl = format!(
                    "BEGIN; CREATE SCHEMA IF NOT EXISTS {}; {};{} COMMIT",
                    quote_ident(&schema),
                    sql::create_table(&shape, &qualified, |t| t.duckdb(), "TIMESTAMPTZ", str::to_string),
                    if defer {
                        format!(" COMMENT ON TABLE {qualified} IS '{KEY_PENDING}';")
                    } else {
                        String::new()
                    }
                );
                if let Err(e) = conn.execute_batch(&ddl) {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(db(&table, &e));
                }
                if defer {
                    self.pending = Some(Pending::default());
                }
                self.existing()?
            }
        };
        let r = resolve_found(&self.spec, found)?;
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

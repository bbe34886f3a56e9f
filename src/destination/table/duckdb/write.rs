//! One call's rows into the table, inside its transaction: staged through the Appender,
//! then merged (an update of the rows that differ and an insert of the new keys), or,
//! while the table's key is deferred (a first load, [`Pending`]), inserted outright.

use super::super::types::ColumnType;
use super::super::{sql, staged_columns, Mode, OnDeleted, Resolved, Staged, TableError, TableSpec, WriteCounts};
use super::{key_type, SEEN};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use duckdb::Connection;
use std::sync::Arc;

const STAGE: &str = "ebb_stage";
const FRESH: &str = "ebb_fresh";
const DELETES: &str = "ebb_delete";
/// The most keys a first load remembers before it gives the table its key (about 16 bytes
/// a key): past this, rows are merged as usual.
pub(super) const PENDING_MAX_KEYS: usize = 4_000_000;

/// A first load into a table ebb just created without its primary key: the hashes of the
/// keys written so far. A row whose key hash is not among them cannot be in the table (ebb
/// is its only writer, and it was empty), so it is inserted outright, without the merge's
/// join or an index to maintain; the key is added at the end (`ALTER TABLE … ADD PRIMARY
/// KEY`, one bulk index build). A hash seen before (the same key again, or a collision)
/// goes through the merge.
#[derive(Default)]
pub(super) struct Pending {
    hashes: std::collections::HashSet<u64>,
}

impl Pending {
    pub(super) fn full(&self) -> bool {
        self.hashes.len() >= PENDING_MAX_KEYS
    }

    /// Splits `batch` into rows whose key is new (first) and the others; remembers the
    /// keys.
    fn split(
        &mut self,
        batch: RecordBatch,
        key_at: usize,
    ) -> Result<(RecordBatch, RecordBatch), arrow::error::ArrowError> {
        use std::hash::{Hash, Hasher};
        let keys = batch.column(key_at);
        let fresh: arrow::array::BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let mut h = std::hash::DefaultHasher::new();
                super::super::cell::text_at(keys.as_ref(), i).hash(&mut h);
                Some(self.hashes.insert(h.finish()))
            })
            .collect();
        let rest = arrow::compute::not(&fresh)?;
        Ok((
            arrow::compute::filter_record_batch(&batch, &fresh)?,
            arrow::compute::filter_record_batch(&batch, &rest)?,
        ))
    }
}
/// The extract time, bound.
const TIME: &str = "CAST(? AS TIMESTAMPTZ)";

/// Runs `f` in a transaction, committed when it succeeds, rolled back otherwise.
pub(super) fn transaction<T>(
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
pub(super) fn write(
    conn: &Connection,
    spec: &TableSpec,
    r: &Resolved,
    staged: Staged,
    extracted_at: DateTime<Utc>,
    mirroring: bool,
    pending: Option<&mut Pending>,
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
            let ty = if c.ty == ColumnType::Json {
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
            "CREATE OR REPLACE TEMP TABLE {STAGE} ({defs}); CREATE OR REPLACE TEMP TABLE {FRESH} ({defs}); \
             CREATE OR REPLACE TEMP TABLE {DELETES} (k {})",
            key_type(spec).duckdb(),
            defs = defs.join(", "),
        ),
    )?;
    let (fresh, merged) = match pending {
        Some(p) => {
            let key_at = spec.columns.iter().position(|c| c.name == spec.key).unwrap_or(0);
            p.split(staged.batch, key_at).map_err(|e| TableError::Database {
                table: table.to_string(),
                message: e.to_string(),
            })?
        }
        None => (RecordBatch::new_empty(staged.batch.schema()), staged.batch),
    };
    // How many rows of each stage each pass would read: a pass over an empty stage is
    // skipped, since DuckDB still scans the whole table to join it with nothing.
    let soft = spec.on_deleted == OnDeleted::Soft;
    let deleted_at = cols.iter().position(|c| c.name == spec.deleted_column).filter(|_| soft);
    let (fresh_rows, merged_rows) = (rows_by_filter(&fresh, deleted_at), rows_by_filter(&merged, deleted_at));
    append(conn, table, FRESH, fresh)?;
    append(conn, table, STAGE, merged)?;
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
    let (live, gone) = match spec.mode {
        // An update of the rows whose values differ, then an insert of the new keys:
        // DuckDB's `INSERT … ON CONFLICT DO UPDATE` took 8× as long over rows that were
        // all there already (a replayed window, a mirror's full read).
        Mode::Upsert | Mode::Mirror => {
            let upsert = |filter: Option<bool>| -> Result<u64, TableError> {
                let mut n = 0;
                if fresh_rows.of(filter) > 0 {
                    n += run(&sql::insert_all(r, FRESH, filter, TIME))?;
                }
                if merged_rows.of(filter) > 0 {
                    n += run(&sql::update_from(r, STAGE, filter, TIME))?;
                    n += run(&sql::insert_missing(r, STAGE, filter, TIME))?;
                }
                Ok(n)
            };
            (
                upsert(soft.then_some(false))?,
                if soft { upsert(Some(true))? } else { 0 },
            )
        }
        Mode::Append => (
            run(&sql::append(r, STAGE, soft.then_some(false)))?,
            if soft {
                run(&sql::append(r, STAGE, Some(true)))?
            } else {
                0
            },
        ),
    };
    counts.count_rows(spec.mode, rows, live, gone);
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
        for stage in [STAGE, FRESH] {
            conn.execute(&sql::remember(r, stage, SEEN), [])
                .map_err(|e| db(table, &e))?;
        }
    }
    exec(
        conn,
        table,
        &format!("DROP TABLE temp.{STAGE}; DROP TABLE temp.{FRESH}; DROP TABLE temp.{DELETES}"),
    )?;
    Ok(counts)
}

/// A stage's rows by their deleted flag (`IS TRUE`, and not).
struct StageRows {
    live: usize,
    deleted: usize,
}

impl StageRows {
    /// The rows a pass with `filter` reads (as [`sql::update_from`]'s filter).
    fn of(&self, filter: Option<bool>) -> usize {
        match filter {
            None => self.live + self.deleted,
            Some(true) => self.deleted,
            Some(false) => self.live,
        }
    }
}

/// Counts `batch`'s rows by the boolean column at `deleted_at` (none: every row live; a
/// column that is not boolean: every row may be either, so no pass is skipped).
fn rows_by_filter(batch: &RecordBatch, deleted_at: Option<usize>) -> StageRows {
    let n = batch.num_rows();
    match deleted_at.map(|i| batch.column(i).as_any().downcast_ref::<arrow::array::BooleanArray>()) {
        None => StageRows { live: n, deleted: 0 },
        Some(Some(a)) => StageRows {
            live: n - a.true_count(),
            deleted: a.true_count(),
        },
        Some(None) => StageRows { live: n, deleted: n },
    }
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

pub(super) fn exec(conn: &Connection, table: &str, sql: &str) -> Result<(), TableError> {
    conn.execute_batch(sql).map_err(|e| db(table, &e))
}

pub(super) fn db(table: &str, e: &duckdb::Error) -> TableError {
    let msg = e.to_string();
    TableError::Database {
        table: table.to_string(),
        message: msg.lines().next().unwrap_or(&msg).trim().to_string(),
    }
}

//! Warehouse tables as a destination: rows of an inbound sync (CRM → warehouse), or of any
//! model, written into a DuckDB, PostgreSQL or Snowflake table.
//!
//! A [`TableWriter`] owns one table for one run. [`TableWriter::check`] says whether the
//! table is missing, compatible or not (and why, naming the table and the column), which is
//! what `validate --connect` reports before anything runs; [`TableWriter::ensure`] creates
//! it when missing. [`TableWriter::write`] applies a slice of rows in ONE transaction, all
//! or nothing: rows are converted to the columns' types first (a value that does not fit
//! fails the call with its key and column before the database sees anything), staged in a
//! temporary table in bulk (DuckDB's Appender, PostgreSQL's binary `COPY`), and merged with
//! one statement per kind of change (`INSERT … ON CONFLICT`, `DELETE`). Replaying the same
//! rows changes nothing: an upsert skips rows whose values are already there and an
//! append skips versions it already holds, so a replayed window is counted as `skipped`.
//!
//! [`TableWriter::mirror_begin`] … [`TableWriter::mirror_end`] make the rows of a full read
//! replace the table: keys not written in between are deleted (or marked deleted) at the
//! end, in one transaction; a run that fails before the end deletes nothing.
//!
//! What this module does not do: reading the CRM, the watermark and the sync log (the
//! engine's), or deciding the columns (the caller derives them from the mapping with
//! [`types::ColumnType`]). The type mappings and the DuckDB single-writer rules are in
//! docs/tables.md.

mod cell;
#[cfg(feature = "duckdb")]
pub mod duckdb;
mod error;
pub mod postgres;
mod resolve;
pub mod snowflake;
mod spec;
mod stage;
#[cfg(test)]
mod tests;
pub mod types;

pub use error::{Mismatch, NameError, SpecError, TableCheck, TableError};
pub(crate) use resolve::{check_found, resolve_found, sql, Existing, ExistingColumn, Resolved};
pub(crate) use spec::{check_spec, staged_columns};
pub use spec::{quote_ident, Column, Mode, OnDeleted, TableName, TableRow, TableSpec, WriteCounts};
pub(crate) use stage::{stage, Staged};

use crate::config::project::ConnectionSpec;
use crate::map::value::Val;
use arrow::array::{ArrayRef, BooleanArray};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use types::{Cell, CellError, ColumnType, TypeError};

/// The column ebb stamps with the time of the extract that wrote a row (the seed's
/// `extracted_timestamp`).
pub const EXTRACTED_AT: &str = "_ebb_extracted_at";
/// The default name of the column that marks soft-deleted rows.
pub const DELETED_COLUMN: &str = "is_deleted";

/// A table being written by one run.
pub enum TableWriter {
    #[cfg(feature = "duckdb")]
    Duckdb(Box<duckdb::DuckdbWriter>),
    Postgres(Box<postgres::PostgresWriter>),
    Snowflake(Box<snowflake::SnowflakeWriter>),
}

impl fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TableWriter")
    }
}

impl TableWriter {
    /// Opens the table of `spec` on the connection `connection` (of the project in
    /// `project_dir`). Checks the spec; does not look at the table yet.
    pub async fn open(
        spec: TableSpec,
        connection: &ConnectionSpec,
        project_dir: &Path,
    ) -> Result<TableWriter, TableError> {
        let name = check_spec(&spec)?;
        match connection {
            #[cfg(feature = "duckdb")]
            ConnectionSpec::Duckdb(c) => Ok(TableWriter::Duckdb(Box::new(
                duckdb::DuckdbWriter::open(spec, name, c, project_dir).await?,
            ))),
            ConnectionSpec::Postgres(c) => Ok(TableWriter::Postgres(Box::new(
                postgres::PostgresWriter::open(spec, name, c).await?,
            ))),
            ConnectionSpec::Snowflake(c) => Ok(TableWriter::Snowflake(Box::new(snowflake::SnowflakeWriter::open(
                spec,
                name,
                c,
                project_dir,
            )?))),
            other => {
                let _ = project_dir;
                Err(TableError::NotBuilt {
                    connection: spec.connection.clone(),
                    kind: other.kind().to_string(),
                })
            }
        }
    }

    /// Whether the table is missing, can take the rows, or cannot (and why).
    pub async fn check(&mut self) -> Result<TableCheck, TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.check().await,
            TableWriter::Postgres(w) => w.check().await,
            TableWriter::Snowflake(w) => w.check().await,
        }
    }

    /// Creates the schema and the table when missing; refuses an incompatible table with
    /// [`TableWriter::check`]'s reason.
    pub async fn ensure(&mut self) -> Result<(), TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.ensure().await,
            TableWriter::Postgres(w) => w.ensure().await,
            TableWriter::Snowflake(w) => w.ensure().await,
        }
    }

    /// Writes `rows` in one transaction, stamped `extracted_at`; all or nothing.
    pub async fn write(&mut self, rows: Vec<TableRow>, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.write(rows, extracted_at).await,
            TableWriter::Postgres(w) => w.write(rows, extracted_at).await,
            TableWriter::Snowflake(w) => w.write(rows, extracted_at).await,
        }
    }

    /// Sets columns of the rows whose `key_column` holds `key` (as text): each value is
    /// text cast to the column's type, `None` is null. The rows changed. For a person's
    /// decision written back to an inbound model's table (`ebb conflicts resolve`).
    pub async fn set_where(
        &mut self,
        key_column: &str,
        key: &str,
        values: Vec<(String, Option<String>)>,
    ) -> Result<u64, TableError> {
        let (k, key) = (key_column.to_string(), key.to_string());
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.set_where(k, key, values).await,
            TableWriter::Postgres(w) => w.set_where(k, key, values).await,
            TableWriter::Snowflake(w) => w.set_where(k, key, values).await,
        }
    }

    /// Asks for a first load when the table is missing: DuckDB creates it without its
    /// primary key, inserts rows whose keys are new without merging them, and adds the key
    /// at [`TableWriter::finish`] (docs/tables.md). Nothing on the other warehouses.
    pub fn defer_key(&mut self) {
        #[cfg(feature = "duckdb")]
        if let TableWriter::Duckdb(w) = self {
            w.defer_key();
        }
    }

    /// The end of a run's writes: a deferred primary key is added.
    pub async fn finish(&mut self) -> Result<(), TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.finish().await,
            _ => Ok(()),
        }
    }

    /// Starts a full read whose rows replace the table (mode `mirror`).
    pub async fn mirror_begin(&mut self) -> Result<(), TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.mirror_begin().await,
            TableWriter::Postgres(w) => w.mirror_begin().await,
            TableWriter::Snowflake(w) => w.mirror_begin().await,
        }
    }

    /// Ends the full read: deletes (or marks deleted) the rows whose key was not written
    /// since [`TableWriter::mirror_begin`], in one transaction. `deleted` counts them.
    pub async fn mirror_end(&mut self, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.mirror_end(extracted_at).await,
            TableWriter::Postgres(w) => w.mirror_end(extracted_at).await,
            TableWriter::Snowflake(w) => w.mirror_end(extracted_at).await,
        }
    }
}

/// The `UPDATE` of [`TableWriter::set_where`] and its parameters (the values, then the
/// key): `mark(n)` writes the n-th placeholder; `types` maps lowercase column names to
/// their SQL types.
#[allow(clippy::type_complexity)]
pub(crate) fn set_sql(
    schema: &str,
    table: &str,
    types: &HashMap<String, String>,
    key_column: &str,
    key: String,
    values: Vec<(String, Option<String>)>,
    mark: impl Fn(usize) -> String,
) -> Result<(String, Vec<Option<String>>), TableError> {
    let missing = |column: &str| TableError::Database {
        table: format!("{schema}.{table}"),
        message: format!("the table has no column `{column}`"),
    };
    let mut sets = Vec::new();
    let mut params = Vec::new();
    for (column, value) in values {
        let Some(ty) = types.get(&column.to_ascii_lowercase()) else {
            return Err(missing(&column));
        };
        sets.push(format!(
            "{} = CAST({} AS {ty})",
            quote_ident(&column),
            mark(params.len() + 1)
        ));
        params.push(value);
    }
    if !types.contains_key(&key_column.to_ascii_lowercase()) {
        return Err(missing(key_column));
    }
    let sql = format!(
        "UPDATE {}.{} SET {} WHERE CAST({} AS VARCHAR) = {}",
        quote_ident(schema),
        quote_ident(table),
        sets.join(", "),
        quote_ident(key_column),
        mark(params.len() + 1)
    );
    params.push(Some(key));
    Ok((sql, params))
}

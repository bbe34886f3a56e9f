//! Warehouse tables as a destination: rows of an inbound sync (CRM → warehouse), or of any
//! model, written into a DuckDB or PostgreSQL table.
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

#[cfg(feature = "duckdb")]
pub mod duckdb;
pub mod postgres;
pub mod types;

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

/// How rows land in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One row per key: inserted or updated (`INSERT … ON CONFLICT (key) DO UPDATE`).
    Upsert,
    /// Every version of a record, told apart by the version column; a version already in
    /// the table is not added again.
    Append,
    /// Upsert, and at [`TableWriter::mirror_end`] the keys not written since
    /// [`TableWriter::mirror_begin`] are deleted.
    Mirror,
}

/// What a deleted record does to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeleted {
    /// The row stays, with the deleted column set to true.
    Soft,
    /// The row (every version, in append mode) is deleted.
    Hard,
}

/// One column the mapping writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// The table a model writes and how.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The connection's name, for messages.
    pub connection: String,
    /// `schema.table` or `table` (the connection's default schema). A part in double quotes
    /// may hold a dot (`"my.schema".t`). Names are used as written; an existing table or
    /// column whose name differs only in case is used when it is the only such one.
    pub table: String,
    /// The column that identifies a record (the mapping target of `unique_identifier`).
    pub key: String,
    pub mode: Mode,
    pub on_deleted: OnDeleted,
    /// The boolean column set on soft-deleted rows; it may also be a mapped column.
    pub deleted_column: String,
    /// Append mode: the column that tells versions of a record apart (the cursor, e.g.
    /// the modification stamp). Required in append mode.
    pub version_column: Option<String>,
    /// The mapped columns, in the order of [`TableRow::values`].
    pub columns: Vec<Column>,
}

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// One value per [`TableSpec::columns`], in order.
    pub values: Vec<Val>,
    /// The record was deleted in the CRM.
    pub deleted: bool,
}

/// What one [`TableWriter::write`] (or [`TableWriter::mirror_end`]) did. Every row given
/// is counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Rows inserted or changed (upsert, mirror).
    pub upserted: u64,
    /// Versions added (append).
    pub appended: u64,
    /// Rows deleted, or marked deleted, that were not already.
    pub deleted: u64,
    /// Rows that changed nothing: the same values already there, a version already
    /// held, a deletion of a key the table does not have, or an earlier row of a key
    /// written again later in the same call (the last one wins).
    pub skipped: u64,
}

impl std::ops::AddAssign for WriteCounts {
    fn add_assign(&mut self, o: WriteCounts) {
        self.upserted += o.upserted;
        self.appended += o.appended;
        self.deleted += o.deleted;
        self.skipped += o.skipped;
    }
}

/// What [`TableWriter::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableCheck {
    /// No such table: [`TableWriter::ensure`] creates it.
    Missing,
    Compatible,
    /// The table exists but cannot take the rows; the reason names the column.
    Incompatible(Mismatch),
}

/// Why an existing table cannot take the rows of a spec (`table` is the resolved
/// `` `schema.table` ``, quoted for messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{table} has no column `{column}` (mapped as {ty})")]
    NoColumn {
        table: String,
        column: String,
        ty: ColumnType,
    },
    #[error("column `{column}` of {table}: {why}")]
    Column {
        table: String,
        column: String,
        #[source]
        why: Box<TypeError>,
    },
    #[error("{table} has no column `{EXTRACTED_AT}` (timestamptz, the time of the extract that wrote each row)")]
    NoExtractedAt { table: String },
    #[error("column `{column}` of {table} is NOT NULL without a default and is not mapped")]
    Required { table: String, column: String },
    #[error(
        "{table} has no primary key or unique constraint on the key column `{key}` alone \
         ({mode} mode updates rows by key)"
    )]
    NoUniqueKey {
        table: String,
        key: String,
        mode: &'static str,
    },
}

/// Why a spec, or the rows given with it, cannot be written (before any database is
/// touched).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no columns to write")]
    NoColumns,
    #[error("`{0}` cannot be a mapped column name")]
    ReservedName(String),
    #[error("column `{0}` is mapped twice")]
    MappedTwice(String),
    #[error("the key `{0}` is not one of the mapped columns")]
    KeyNotMapped(String),
    #[error("the deleted column `{column}` is mapped as {ty}, not boolean")]
    DeletedNotBoolean { column: String, ty: ColumnType },
    #[error("append mode needs a version column (the cursor that tells versions apart) to stay idempotent")]
    NoVersion,
    #[error("the version column `{0}` is not one of the mapped columns")]
    VersionNotMapped(String),
    #[error("row {row} has {values} values for {columns} columns")]
    RowWidth { row: usize, values: usize, columns: usize },
    #[error("mirror_end without mirror_begin")]
    MirrorEndWithoutBegin,
    #[error("cannot stage the rows: {0}")]
    Stage(#[source] arrow::error::ArrowError),
}

/// Why a table name does not parse (`name` is the text given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{name}`: a quoted name is not closed")]
    Unclosed { name: String },
    #[error("`{name}`: an empty name part")]
    EmptyPart { name: String },
    #[error("`{name}`: unexpected `{found}` after a quoted name")]
    AfterQuote { name: String, found: char },
    #[error("`{name}`: expected `schema.table` or `table` (a database part is not supported)")]
    TooManyParts { name: String },
}

/// Why a table could not be written. Messages name the table, and the column and key
/// when one is at fault; nothing of the call was committed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("connection `{connection}`: {message}")]
    Connect { connection: String, message: String },
    #[error("connection `{connection}`: writing tables to a {kind} connection is not built yet")]
    NotBuilt { connection: String, kind: String },
    #[error("connection `{connection}`: {source}")]
    Env {
        connection: String,
        #[source]
        source: crate::config::env::EnvError,
    },
    #[error("connection `{connection}`: {source}")]
    File {
        connection: String,
        #[source]
        source: crate::source::duckdb_files::FileError,
    },
    #[error("table `{table}`: {reason}")]
    Spec {
        table: String,
        #[source]
        reason: SpecError,
    },
    #[error("table `{table}`: {source}")]
    Name {
        table: String,
        #[source]
        source: NameError,
    },
    #[error("table `{table}` cannot take these rows: {reason}")]
    Incompatible {
        table: String,
        #[source]
        reason: Mismatch,
    },
    #[error("table `{table}`, row with key `{key}`, column `{column}`: {reason}; nothing of this call was written")]
    Value {
        table: String,
        key: String,
        column: String,
        #[source]
        reason: CellError,
    },
    #[error("table `{table}`: row {row} has no key (`{column}` is null); nothing of this call was written")]
    NullKey { table: String, row: usize, column: String },
    #[error("table `{table}`: {message}")]
    Database { table: String, message: String },
}

/// A schema-qualified table name, parsed from [`TableSpec::table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    /// `schema.table`, `table`, with parts in double quotes to hold a dot or a quote
    /// (doubled).
    pub fn parse(s: &str) -> Result<TableName, NameError> {
        let name = || s.to_string();
        let mut parts = Vec::new();
        let mut chars = s.trim().chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(NameError::Unclosed { name: name() }),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    part.push(c);
                    chars.next();
                }
                part = part.trim().to_string();
            }
            if part.is_empty() {
                return Err(NameError::EmptyPart { name: name() });
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(found) => return Err(NameError::AfterQuote { name: name(), found }),
            }
        }
        match parts.len() {
            1 => Ok(TableName {
                schema: None,
                table: parts.remove(0),
            }),
            2 => Ok(TableName {
                schema: Some(parts.remove(0)),
                table: parts.remove(0),
            }),
            _ => Err(NameError::TooManyParts { name: name() }),
        }
    }
}

/// `name` as a quoted SQL identifier (the same rule in DuckDB and PostgreSQL).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns a table of `spec` has, as the writer resolved them against the database:
/// quoted names, ready for SQL.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// `"schema"."table"`.
    pub table: String,
    /// The staged columns' names in the table, in the order of [`Staged::batch`].
    pub columns: Vec<String>,
    pub key: String,
    pub version: Option<String>,
    pub deleted: Option<String>,
    pub extracted_at: String,
    /// Staged columns that hold JSON (compared as text: PostgreSQL's `json` has no `=`).
    pub json: Vec<bool>,
}

/// The columns staged per row: the mapped ones, then the deleted column when soft deletes
/// need it and the mapping does not write it.
pub(crate) fn staged_columns(spec: &TableSpec) -> Vec<Column> {
    let mut cols = spec.columns.clone();
    if spec.on_deleted == OnDeleted::Soft && !cols.iter().any(|c| c.name == spec.deleted_column) {
        cols.push(Column {
            name: spec.deleted_column.clone(),
            ty: ColumnType::Boolean,
        });
    }
    cols
}

/// Checks a spec before anything touches a database.
pub(crate) fn check_spec(spec: &TableSpec) -> Result<TableName, TableError> {
    let bad = |reason: SpecError| TableError::Spec {
        table: spec.table.clone(),
        reason,
    };
    let name = TableName::parse(&spec.table).map_err(|source| TableError::Name {
        table: spec.table.clone(),
        source,
    })?;
    let find = |n: &str| spec.columns.iter().find(|c| c.name == n);
    if spec.columns.is_empty() {
        return Err(bad(SpecError::NoColumns));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &spec.columns {
        if c.name.is_empty() || c.name == EXTRACTED_AT {
            return Err(bad(SpecError::ReservedName(c.name.clone())));
        }
        if !seen.insert(c.name.to_lowercase()) {
            return Err(bad(SpecError::MappedTwice(c.name.clone())));
        }
    }
    if find(&spec.key).is_none() {
        return Err(bad(SpecError::KeyNotMapped(spec.key.clone())));
    }
    if spec.on_deleted == OnDeleted::Soft {
        if let Some(c) = find(&spec.deleted_column) {
            if c.ty != ColumnType::Boolean {
                return Err(bad(SpecError::DeletedNotBoolean {
                    column: c.name.clone(),
                    ty: c.ty,
                }));
            }
        }
    }
    match (&spec.mode, &spec.version_column) {
        (Mode::Append, None) => return Err(bad(SpecError::NoVersion)),
        (Mode::Append, Some(v)) if find(v).is_none() => return Err(bad(SpecError::VersionNotMapped(v.clone()))),
        _ => {}
    }
    Ok(name)
}

/// Rows of one call, converted to the staged columns' types, one key (or key and version)
/// once: what both warehouses merge.
pub(crate) struct Staged {
    /// Rows to insert or upsert (soft-deleted ones among them), staged columns in order.
    pub batch: RecordBatch,
    /// Keys to delete (hard deletes), as the key column's array.
    pub delete_keys: ArrayRef,
    /// Earlier rows of a key (or key and version) dropped for a later one.
    pub collapsed: u64,
}

/// Converts and collapses `rows` (the last row of a key, or of a key and version in
/// append mode, wins).
pub(crate) fn stage(spec: &TableSpec, rows: Vec<TableRow>) -> Result<Staged, TableError> {
    let cols = staged_columns(spec);
    let key_at = spec.columns.iter().position(|c| c.name == spec.key).unwrap_or(0);
    let key_ty = spec.columns[key_at].ty;
    let version_at = match spec.mode {
        Mode::Append => spec
            .version_column
            .as_ref()
            .and_then(|v| spec.columns.iter().position(|c| &c.name == v)),
        _ => None,
    };
    let deleted_at = (spec.on_deleted == OnDeleted::Soft)
        .then(|| cols.iter().position(|c| c.name == spec.deleted_column))
        .flatten();
    let n = rows.len();
    // Convert every row first, straight into columns: a bad value fails the call before
    // anything is staged.
    let mut columns: Vec<Vec<Cell>> = (0..cols.len()).map(|_| Vec::with_capacity(n)).collect();
    let mut hard_deleted = Vec::with_capacity(n);
    let mut last: HashMap<String, usize> = HashMap::with_capacity(n);
    for (i, row) in rows.into_iter().enumerate() {
        if row.values.len() != spec.columns.len() {
            return Err(TableError::Spec {
                table: spec.table.clone(),
                reason: SpecError::RowWidth {
                    row: i,
                    values: row.values.len(),
                    columns: spec.columns.len(),
                },
            });
        }
        let mut values = row.values;
        let key_val = std::mem::replace(&mut values[key_at], Val::Null);
        let key = key_val.as_text();
        let key_cell = types::cell(key_ty, key_val).map_err(|reason| TableError::Value {
            table: spec.table.clone(),
            key: key.clone().unwrap_or_else(|| "null".into()),
            column: spec.key.clone(),
            reason,
        })?;
        let Some(key) = key.filter(|_| key_cell != Cell::Null) else {
            return Err(TableError::NullKey {
                table: spec.table.clone(),
                row: i,
                column: spec.key.clone(),
            });
        };
        let mut key_cell = Some(key_cell);
        for (j, (v, c)) in values.into_iter().zip(&spec.columns).enumerate() {
            let cell = if j == key_at {
                key_cell.take().unwrap_or(Cell::Null)
            } else {
                types::cell(c.ty, v).map_err(|reason| TableError::Value {
                    table: spec.table.clone(),
                    key: key.clone(),
                    column: c.name.clone(),
                    reason,
                })?
            };
            columns[j].push(cell);
        }
        if let Some(extra) = columns.get_mut(spec.columns.len()) {
            extra.push(Cell::Null);
        }
        if let Some(d) = deleted_at {
            let mapped = columns[d][i] == Cell::Bool(true);
            columns[d][i] = Cell::Bool(row.deleted || mapped);
        }
        let identity = match version_at {
            Some(v) => format!("{key}\u{0}{}", columns[v][i].key_text()),
            None => key,
        };
        last.insert(identity, i);
        hard_deleted.push(spec.on_deleted == OnDeleted::Hard && row.deleted);
    }
    let mut keep = vec![false; n];
    for &i in last.values() {
        keep[i] = true;
    }
    let collapsed = (n - last.len()) as u64;
    let fail = |e: arrow::error::ArrowError| TableError::Spec {
        table: spec.table.clone(),
        reason: SpecError::Stage(e),
    };
    let fields: Vec<Field> = cols
        .iter()
        .map(|c| Field::new(c.name.clone(), c.ty.arrow(), true))
        .collect();
    let arrays: Vec<ArrayRef> = cols
        .iter()
        .zip(&columns)
        .map(|(c, cells)| types::to_arrow(c.ty, cells))
        .collect();
    let all = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(fail)?;
    let live: BooleanArray = keep.iter().zip(&hard_deleted).map(|(k, h)| Some(*k && !h)).collect();
    let gone: BooleanArray = keep.iter().zip(&hard_deleted).map(|(k, h)| Some(*k && *h)).collect();
    let batch = if live.true_count() == n {
        all.clone()
    } else {
        arrow::compute::filter_record_batch(&all, &live).map_err(fail)?
    };
    let delete_keys = arrow::compute::filter(all.column(key_at), &gone).map_err(fail)?;
    Ok(Staged {
        batch,
        delete_keys,
        collapsed,
    })
}

/// A table being written by one run.
pub enum TableWriter {
    #[cfg(feature = "duckdb")]
    Duckdb(Box<duckdb::DuckdbWriter>),
    Postgres(Box<postgres::PostgresWriter>),
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
        }
    }

    /// Creates the schema and the table when missing; refuses an incompatible table with
    /// [`TableWriter::check`]'s reason.
    pub async fn ensure(&mut self) -> Result<(), TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.ensure().await,
            TableWriter::Postgres(w) => w.ensure().await,
        }
    }

    /// Writes `rows` in one transaction, stamped `extracted_at`; all or nothing.
    pub async fn write(&mut self, rows: Vec<TableRow>, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.write(rows, extracted_at).await,
            TableWriter::Postgres(w) => w.write(rows, extracted_at).await,
        }
    }

    /// Starts a full read whose rows replace the table (mode `mirror`).
    pub async fn mirror_begin(&mut self) -> Result<(), TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.mirror_begin().await,
            TableWriter::Postgres(w) => w.mirror_begin().await,
        }
    }

    /// Ends the full read: deletes (or marks deleted) the rows whose key was not written
    /// since [`TableWriter::mirror_begin`], in one transaction. `deleted` counts them.
    pub async fn mirror_end(&mut self, extracted_at: DateTime<Utc>) -> Result<WriteCounts, TableError> {
        match self {
            #[cfg(feature = "duckdb")]
            TableWriter::Duckdb(w) => w.mirror_end(extracted_at).await,
            TableWriter::Postgres(w) => w.mirror_end(extracted_at).await,
        }
    }
}

/// An existing column: its name in the table, its type, whether it may be left null.
#[derive(Debug, Clone)]
pub(crate) struct ExistingColumn {
    pub name: String,
    pub ty: types::DbType,
    /// NOT NULL without a default.
    pub required: bool,
}

/// What the database says about the table.
#[derive(Debug, Clone)]
pub(crate) struct Existing {
    pub schema: String,
    pub table: String,
    pub columns: Vec<ExistingColumn>,
    /// The column sets of its primary key and unique constraints/indexes.
    pub unique: Vec<Vec<String>>,
}

/// The table's column for `name`: the same name, else the one name equal ignoring case.
fn find_column<'e>(existing: &'e Existing, name: &str) -> Option<&'e ExistingColumn> {
    existing.columns.iter().find(|c| c.name == name).or_else(|| {
        let mut same = existing.columns.iter().filter(|c| c.name.eq_ignore_ascii_case(name));
        match (same.next(), same.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    })
}

/// Checks an existing table against `spec`; the resolved names when it can take the rows.
pub(crate) fn resolve(spec: &TableSpec, existing: &Existing) -> Result<Resolved, Mismatch> {
    let table_name = format!("`{}.{}`", existing.schema, existing.table);
    let mut columns = Vec::new();
    let mut json = Vec::new();
    let mut named = Vec::new();
    for c in staged_columns(spec) {
        let Some(e) = find_column(existing, &c.name) else {
            return Err(Mismatch::NoColumn {
                table: table_name,
                column: c.name,
                ty: c.ty,
            });
        };
        e.ty.holds(c.ty).map_err(|why| Mismatch::Column {
            table: table_name.clone(),
            column: e.name.clone(),
            why: Box::new(why),
        })?;
        columns.push(quote_ident(&e.name));
        json.push(c.ty == ColumnType::Json);
        named.push(e.name.clone());
    }
    let Some(extracted) = find_column(existing, EXTRACTED_AT) else {
        return Err(Mismatch::NoExtractedAt { table: table_name });
    };
    extracted
        .ty
        .holds(ColumnType::Timestamp)
        .map_err(|why| Mismatch::Column {
            table: table_name.clone(),
            column: extracted.name.clone(),
            why: Box::new(why),
        })?;
    named.push(extracted.name.clone());
    for e in &existing.columns {
        if e.required && !named.contains(&e.name) {
            return Err(Mismatch::Required {
                table: table_name,
                column: e.name.clone(),
            });
        }
    }
    let resolved_name = |n: &str| find_column(existing, n).map(|c| c.name.clone()).unwrap_or_default();
    let key = resolved_name(&spec.key);
    if spec.mode != Mode::Append && !existing.unique.iter().any(|u| u.len() == 1 && u[0] == key) {
        return Err(Mismatch::NoUniqueKey {
            table: table_name,
            key,
            mode: if spec.mode == Mode::Mirror { "mirror" } else { "upsert" },
        });
    }
    Ok(Resolved {
        table: format!("{}.{}", quote_ident(&existing.schema), quote_ident(&existing.table)),
        columns,
        key: quote_ident(&key),
        version: spec.version_column.as_deref().map(|v| quote_ident(&resolved_name(v))),
        deleted: (spec.on_deleted == OnDeleted::Soft).then(|| quote_ident(&resolved_name(&spec.deleted_column))),
        extracted_at: quote_ident(&extracted.name),
        json,
    })
}

/// The SQL both warehouses run, built from quoted names only (values are bound or staged).
pub(crate) mod sql {
    use super::{quote_ident, Mode, Resolved, TableSpec};

    /// `CREATE TABLE` for `spec` with `type_of` giving each type's DDL.
    pub fn create_table(
        spec: &TableSpec,
        table: &str,
        type_of: impl Fn(super::ColumnType) -> String,
        timestamptz: &str,
    ) -> String {
        let mut defs: Vec<String> = super::staged_columns(spec)
            .iter()
            .map(|c| {
                let mut d = format!("{} {}", quote_ident(&c.name), type_of(c.ty));
                if c.name == spec.key {
                    d.push_str(" NOT NULL");
                }
                if spec.on_deleted == super::OnDeleted::Soft && c.name == spec.deleted_column {
                    d.push_str(" NOT NULL DEFAULT false");
                }
                d
            })
            .collect();
        defs.push(format!("{} {timestamptz}", quote_ident(super::EXTRACTED_AT)));
        match spec.mode {
            Mode::Upsert | Mode::Mirror => defs.push(format!("PRIMARY KEY ({})", quote_ident(&spec.key))),
            Mode::Append => {}
        }
        format!("CREATE TABLE {table} (\n  {}\n)", defs.join(",\n  "))
    }

    /// Inserts the staged rows (`only_deleted`: the soft-deleted ones, or the others),
    /// updating a key's row when its values differ. `$1` is the extract time; `cast_json`
    /// wraps a JSON column for comparison.
    pub fn upsert(r: &Resolved, stage: &str, deleted_filter: Option<bool>, target_alias: bool) -> String {
        let cols = r.columns.join(", ");
        let filter = match (deleted_filter, &r.deleted) {
            (Some(d), Some(col)) => format!(" WHERE {col} IS {}", if d { "TRUE" } else { "NOT TRUE" }),
            _ => String::new(),
        };
        let set: Vec<String> = r
            .columns
            .iter()
            .filter(|c| **c != r.key)
            .map(|c| format!("{c} = excluded.{c}"))
            .chain(std::iter::once(format!("{e} = excluded.{e}", e = r.extracted_at)))
            .collect();
        let t = if target_alias { "ebb_t." } else { "" };
        let differs: Vec<String> = r
            .columns
            .iter()
            .zip(&r.json)
            .filter(|(c, _)| **c != r.key)
            .map(|(c, json)| {
                if *json {
                    format!("CAST({t}{c} AS TEXT) IS DISTINCT FROM CAST(excluded.{c} AS TEXT)")
                } else {
                    format!("{t}{c} IS DISTINCT FROM excluded.{c}")
                }
            })
            .collect();
        let where_ = if differs.is_empty() {
            "FALSE".to_string()
        } else {
            differs.join(" OR ")
        };
        format!(
            "INSERT INTO {table}{alias} ({cols}, {ex}) SELECT {cols}, CAST($1 AS TIMESTAMPTZ) FROM {stage}{filter} \
             ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {where_}",
            table = r.table,
            alias = if target_alias { " AS ebb_t" } else { "" },
            ex = r.extracted_at,
            key = r.key,
            set = set.join(", "),
        )
    }

    /// Inserts the staged versions the table does not hold yet.
    pub fn append(r: &Resolved, stage: &str, deleted_filter: Option<bool>) -> String {
        let cols = r.columns.join(", ");
        let version = r.version.as_deref().unwrap_or("NULL");
        let filter = match (deleted_filter, &r.deleted) {
            (Some(d), Some(col)) => format!(" AND s.{col} IS {}", if d { "TRUE" } else { "NOT TRUE" }),
            _ => String::new(),
        };
        let scols: Vec<String> = r.columns.iter().map(|c| format!("s.{c}")).collect();
        format!(
            "INSERT INTO {table} ({cols}, {ex}) SELECT {scols}, CAST($1 AS TIMESTAMPTZ) FROM {stage} s \
             WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{key} = s.{key} \
             AND t.{version} IS NOT DISTINCT FROM s.{version}){filter}",
            table = r.table,
            ex = r.extracted_at,
            key = r.key,
            scols = scols.join(", "),
        )
    }

    /// Counts the keys of `keys_table` (column `k`) present in the table.
    pub fn count_present(r: &Resolved, keys_table: &str) -> String {
        format!(
            "SELECT count(*) FROM {keys_table} WHERE k IN (SELECT {key} FROM {table})",
            table = r.table,
            key = r.key
        )
    }

    /// Deletes every row whose key is in `keys_table` (column `k`).
    pub fn delete_keys(r: &Resolved, keys_table: &str) -> String {
        format!(
            "DELETE FROM {table} WHERE {key} IN (SELECT k FROM {keys_table})",
            table = r.table,
            key = r.key
        )
    }

    /// Remembers the staged keys as written since `mirror_begin`.
    pub fn remember(r: &Resolved, stage: &str, seen: &str) -> String {
        format!("INSERT INTO {seen} (k) SELECT {} FROM {stage}", r.key)
    }

    /// Mirror's end: deletes (`soft`: marks deleted, `$1` the extract time) the rows whose
    /// key was not written. Keys are never null, so `NOT IN` is the anti-join it reads as.
    pub fn unseen(r: &Resolved, seen: &str, soft: bool) -> String {
        let unseen = format!("{key} NOT IN (SELECT k FROM {seen})", key = r.key);
        match (&r.deleted, soft) {
            (Some(d), true) => format!(
                "UPDATE {table} SET {d} = TRUE, {ex} = CAST($1 AS TIMESTAMPTZ) WHERE {d} IS NOT TRUE AND {unseen}",
                table = r.table,
                ex = r.extracted_at
            ),
            _ => format!("DELETE FROM {table} WHERE {unseen}", table = r.table),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert_eq!(
            TableName::parse("raw.crm_customers"),
            Ok(TableName {
                schema: Some("raw".into()),
                table: "crm_customers".into()
            })
        );
        assert_eq!(
            TableName::parse(r#""my.schema"."Odd ""name""""#),
            Ok(TableName {
                schema: Some("my.schema".into()),
                table: "Odd \"name\"".into()
            })
        );
        assert_eq!(
            TableName::parse("t"),
            Ok(TableName {
                schema: None,
                table: "t".into()
            })
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a..c").is_err());
        assert!(TableName::parse("\"a").is_err());
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    fn spec(mode: Mode, on_deleted: OnDeleted) -> TableSpec {
        TableSpec {
            connection: "w".into(),
            table: "raw.t".into(),
            key: "id".into(),
            mode,
            on_deleted,
            deleted_column: DELETED_COLUMN.into(),
            version_column: Some("v".into()),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Text,
                },
                Column {
                    name: "v".into(),
                    ty: ColumnType::Bigint,
                },
            ],
        }
    }

    fn row(id: &str, v: i64, deleted: bool) -> TableRow {
        TableRow {
            values: vec![Val::Str(id.into()), Val::Int(v)],
            deleted,
        }
    }

    #[test]
    fn the_last_row_of_a_key_wins_and_hard_deletes_are_set_apart() {
        let s = stage(
            &spec(Mode::Upsert, OnDeleted::Hard),
            vec![
                row("a", 1, false),
                row("b", 1, false),
                row("a", 2, false),
                row("c", 1, true),
            ],
        )
        .unwrap();
        assert_eq!(s.collapsed, 1);
        assert_eq!(s.batch.num_rows(), 2);
        assert_eq!(s.delete_keys.len(), 1);
        let s = stage(
            &spec(Mode::Append, OnDeleted::Soft),
            vec![row("a", 1, false), row("a", 2, false), row("a", 2, true)],
        )
        .unwrap();
        assert_eq!((s.collapsed, s.batch.num_rows(), s.batch.num_columns()), (1, 2, 3));
    }

    #[test]
    fn a_bad_value_names_key_and_column() {
        let e = stage(
            &spec(Mode::Upsert, OnDeleted::Soft),
            vec![
                row("a", 1, false),
                TableRow {
                    values: vec![Val::Str("b".into()), Val::Str("x".into())],
                    deleted: false,
                },
            ],
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "table `raw.t`, row with key `b`, column `v`: text cannot be written to a bigint column; \
             nothing of this call was written"
        );
        let e = stage(
            &spec(Mode::Upsert, OnDeleted::Soft),
            vec![TableRow {
                values: vec![Val::Null, Val::Int(1)],
                deleted: false,
            }],
        )
        .err()
        .unwrap();
        assert!(matches!(e, TableError::NullKey { row: 0, .. }));
    }

    #[test]
    fn specs_are_checked() {
        let mut s = spec(Mode::Append, OnDeleted::Soft);
        s.version_column = None;
        assert!(check_spec(&s)
            .unwrap_err()
            .to_string()
            .contains("append mode needs a version column"));
        let mut s = spec(Mode::Upsert, OnDeleted::Soft);
        s.key = "nope".into();
        assert!(check_spec(&s).is_err());
    }
}

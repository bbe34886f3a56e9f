//! Why a table cannot be written: what `check` found ([`TableCheck`], [`Mismatch`]), a spec
//! that does not hold together ([`SpecError`]), a name that does not parse ([`NameError`]),
//! and [`TableError`], which names the table (and the key and column of a value at fault).

use super::*;

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

//! What a writer is asked to do: the table, its key, mode and columns ([`TableSpec`]), the
//! rows ([`TableRow`]), what a write did ([`WriteCounts`]), and the checks of a spec before
//! any database is asked (a table name that parses, a key that is mapped).

use super::*;

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
    /// A deleted row carries only its key (a webhook's delete event): a soft delete marks
    /// the table's row deleted and keeps its other values, instead of writing the row.
    pub delete_by_key: bool,
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

impl WriteCounts {
    /// Counts a call's `rows` given, of which `live` were written as live rows (upserted
    /// or appended, by `mode`) and `gone` newly marked deleted; the rest were skipped.
    pub(crate) fn count_rows(&mut self, mode: Mode, rows: u64, live: u64, gone: u64) {
        match mode {
            Mode::Append => self.appended = live,
            _ => self.upserted = live,
        }
        self.deleted = gone;
        self.skipped += rows - live - gone;
    }
}

impl std::ops::AddAssign for WriteCounts {
    fn add_assign(&mut self, o: WriteCounts) {
        self.upserted += o.upserted;
        self.appended += o.appended;
        self.deleted += o.deleted;
        self.skipped += o.skipped;
    }
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

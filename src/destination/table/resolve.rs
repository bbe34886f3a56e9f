//! An existing table checked against a spec: its columns found by name (exactly, else the one
//! equal ignoring case), their types judged against what the rows hold, the key's unique
//! constraint required, and the SQL names of what the merge statements write.

use super::*;

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

/// What `check()` says of the table as found (`None`: missing).
pub(crate) fn check_found(spec: &TableSpec, found: Option<Existing>) -> TableCheck {
    match found {
        None => TableCheck::Missing,
        Some(e) => match resolve(spec, &e) {
            Ok(_) => TableCheck::Compatible,
            Err(reason) => TableCheck::Incompatible(reason),
        },
    }
}

/// The table found by `ensure()` (after creating it when missing; `None`: still not
/// there), resolved against `spec` or refused with the reason.
pub(crate) fn resolve_found(spec: &TableSpec, found: Option<Existing>) -> Result<Resolved, TableError> {
    let existing = found.ok_or_else(|| TableError::Database {
        table: spec.table.clone(),
        message: "the table is not there after CREATE TABLE".into(),
    })?;
    resolve(spec, &existing).map_err(|reason| TableError::Incompatible {
        table: spec.table.clone(),
        reason,
    })
}

/// The SQL both warehouses run, built from quoted names only (values are bound or staged).
pub(crate) mod sql {
    use super::{quote_ident, Mode, Resolved, TableSpec};

    /// `CREATE TABLE` for `spec` with `type_of` giving each type's DDL and `name` each
    /// column's name as the table gets it.
    pub fn create_table(
        spec: &TableSpec,
        table: &str,
        type_of: impl Fn(super::ColumnType) -> String,
        timestamptz: &str,
        name: impl Fn(&str) -> String,
    ) -> String {
        let mut defs: Vec<String> = super::staged_columns(spec)
            .iter()
            .map(|c| {
                let mut d = format!("{} {}", quote_ident(&name(&c.name)), type_of(c.ty));
                if c.name == spec.key {
                    d.push_str(" NOT NULL");
                }
                if spec.on_deleted == super::OnDeleted::Soft && c.name == spec.deleted_column {
                    d.push_str(" NOT NULL DEFAULT false");
                }
                d
            })
            .collect();
        defs.push(format!("{} {timestamptz}", quote_ident(&name(super::EXTRACTED_AT))));
        match spec.mode {
            Mode::Upsert | Mode::Mirror => defs.push(format!("PRIMARY KEY ({})", quote_ident(&name(&spec.key)))),
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
        let where_ = differs(r, t, "excluded.");
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

    /// `t.c IS DISTINCT FROM s.c OR …` over the non-key columns (`FALSE` when there are
    /// none), JSON compared as text.
    fn differs(r: &Resolved, t: &str, s: &str) -> String {
        let differs: Vec<String> = r
            .columns
            .iter()
            .zip(&r.json)
            .filter(|(c, _)| **c != r.key)
            .map(|(c, json)| {
                if *json {
                    format!("CAST({t}{c} AS TEXT) IS DISTINCT FROM CAST({s}{c} AS TEXT)")
                } else {
                    format!("{t}{c} IS DISTINCT FROM {s}{c}")
                }
            })
            .collect();
        if differs.is_empty() {
            "FALSE".to_string()
        } else {
            differs.join(" OR ")
        }
    }

    /// The first half of an upsert without `ON CONFLICT` (Snowflake): updates the rows whose
    /// key is staged and whose values differ. `extracted` is the extract time's SQL.
    pub fn update_from(r: &Resolved, stage: &str, deleted_filter: Option<bool>, extracted: &str) -> String {
        let set: Vec<String> = r
            .columns
            .iter()
            .filter(|c| **c != r.key)
            .map(|c| format!("{c} = s.{c}"))
            .chain(std::iter::once(format!("{} = {extracted}", r.extracted_at)))
            .collect();
        format!(
            "UPDATE {table} AS ebb_t SET {set} FROM {stage} AS s WHERE ebb_t.{key} = s.{key}{filter} AND ({differs})",
            table = r.table,
            set = set.join(", "),
            key = r.key,
            filter = filter(r, "s.", deleted_filter),
            differs = differs(r, "ebb_t.", "s."),
        )
    }

    /// The second half: inserts the staged rows whose key the table does not have.
    pub fn insert_missing(r: &Resolved, stage: &str, deleted_filter: Option<bool>, extracted: &str) -> String {
        let scols: Vec<String> = r.columns.iter().map(|c| format!("s.{c}")).collect();
        format!(
            "INSERT INTO {table} ({cols}, {ex}) SELECT {scols}, {extracted} FROM {stage} AS s \
             WHERE NOT EXISTS (SELECT 1 FROM {table} AS ebb_t WHERE ebb_t.{key} = s.{key}){filter}",
            table = r.table,
            cols = r.columns.join(", "),
            ex = r.extracted_at,
            scols = scols.join(", "),
            key = r.key,
            filter = filter(r, "s.", deleted_filter),
        )
    }

    /// Inserts every staged row (of `deleted_filter`): rows known not to be in the table.
    pub fn insert_all(r: &Resolved, stage: &str, deleted_filter: Option<bool>, extracted: &str) -> String {
        let scols: Vec<String> = r.columns.iter().map(|c| format!("s.{c}")).collect();
        format!(
            "INSERT INTO {table} ({cols}, {ex}) SELECT {scols}, {extracted} FROM {stage} AS s WHERE TRUE{filter}",
            table = r.table,
            cols = r.columns.join(", "),
            ex = r.extracted_at,
            scols = scols.join(", "),
            filter = filter(r, "s.", deleted_filter),
        )
    }

    /// ` AND s.deleted IS [NOT] TRUE` when soft deletes split the staged rows.
    fn filter(r: &Resolved, s: &str, deleted_filter: Option<bool>) -> String {
        match (deleted_filter, &r.deleted) {
            (Some(d), Some(col)) => format!(" AND {s}{col} IS {}", if d { "TRUE" } else { "NOT TRUE" }),
            _ => String::new(),
        }
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

    /// Marks deleted every row whose key is in `keys_table` and is not marked yet; `$1` is
    /// the extract time. (Soft deletes by key: the other values stay.)
    pub fn mark_deleted(r: &Resolved, keys_table: &str) -> Option<String> {
        let deleted = r.deleted.as_ref()?;
        Some(format!(
            "UPDATE {table} SET {deleted} = TRUE, {ex} = CAST($1 AS TIMESTAMPTZ) \
             WHERE {key} IN (SELECT k FROM {keys_table}) AND {deleted} IS NOT TRUE",
            table = r.table,
            key = r.key,
            ex = r.extracted_at,
        ))
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

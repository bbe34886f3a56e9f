//! One call's rows converted to the staged columns' types and collapsed (the last row of a
//! key, or of a key and version in append mode, wins): the Arrow batch both warehouses
//! load into a temporary table, and the keys of hard deletes.

use super::*;

/// Rows of one call, converted to the staged columns' types, one key (or key and version)
/// once: what both warehouses merge.
pub(crate) struct Staged {
    /// Rows to insert or upsert (soft-deleted ones among them), staged columns in order.
    pub batch: RecordBatch,
    /// Keys to delete (hard deletes) or to mark deleted (soft deletes by key,
    /// [`TableSpec::delete_by_key`]), as the key column's array.
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
        hard_deleted.push((spec.on_deleted == OnDeleted::Hard || spec.delete_by_key) && row.deleted);
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

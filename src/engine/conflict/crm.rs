//! The CRM's side of the conflict check: its current values, read from the CRM (one SOQL
//! query per 200 keys, through the destination) or from the `crm_state` model's table; and
//! a person's `--take crm` written back to the inbound model's table.

use super::CrmRecord;
use crate::destination::Destination;
use crate::http::retry::RetryPolicy;
use crate::plan::{ConflictPlan, CrmState};
use crate::source::Source;
use crate::state::conflicts::{Conflict, Side};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Why the conflict check (or a write-back) could not read or write the CRM's values.
#[derive(Debug, thiserror::Error)]
pub enum ConflictError {
    /// The CRM's answer to the lookup, after its retries.
    #[error("the CRM's records: {0}")]
    Crm(#[source] crate::destination::retry::Failed),
    /// The `crm_state` (or write-back) model's table.
    #[error("`{table}` (the table of `{model}`): {source}; `ebb run {model}` creates and refreshes it")]
    Table {
        table: String,
        model: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("connection `{0}` is not defined")]
    NoConnection(String),
}

impl ConflictError {
    fn table(s: &CrmState, e: impl std::error::Error + Send + Sync + 'static) -> ConflictError {
        ConflictError::Table {
            table: s.table.clone(),
            model: s.model.clone(),
            source: Box::new(e),
        }
    }
}

/// Where the CRM's current values are read.
pub(in crate::engine) enum Lookup {
    /// The `crm_state` model's table.
    Table { source: Box<Source>, state: CrmState },
    /// The CRM itself (one SOQL query per 200 keys).
    Api,
}

/// Quotes an identifier for DuckDB and PostgreSQL (`schema.table` quoted part by part).
fn ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Lookup {
    /// The CRM's records of `keys` (a key without a record is missing).
    pub(super) async fn records(
        &self,
        plan: &ConflictPlan,
        dest: &Destination,
        keys: &[&str],
        policy: &RetryPolicy,
    ) -> Result<HashMap<String, CrmRecord>, ConflictError> {
        match self {
            Lookup::Api => {
                let mut fields = plan.fields.clone();
                fields.push(plan.destination_modified.clone());
                let fields = &fields;
                let found = crate::destination::retry::call(policy, move || dest.current(keys, fields))
                    .await
                    .map_err(ConflictError::Crm)?;
                Ok(found
                    .into_iter()
                    .map(|(k, values)| {
                        let modified = values
                            .iter()
                            .find(|(f, _)| f.eq_ignore_ascii_case(&plan.destination_modified))
                            .map(|(_, v)| v.clone());
                        (k, CrmRecord { values, modified })
                    })
                    .collect())
            }
            Lookup::Table { source, state } => table_records(source, state, keys)
                .await
                .map_err(|e| ConflictError::table(state, e)),
        }
    }
}

async fn table_records(
    source: &Source,
    s: &CrmState,
    keys: &[&str],
) -> Result<HashMap<String, CrmRecord>, crate::source::SourceError> {
    let mut out = HashMap::new();
    let mut cols = vec![format!("CAST({} AS VARCHAR)", ident(&s.key_column))];
    cols.extend(s.columns.iter().map(|(_, c)| ident(c)));
    if let Some(m) = &s.modified_column {
        cols.push(ident(m));
    }
    for chunk in keys.chunks(200) {
        let list: Vec<String> = chunk.iter().map(|k| literal(k)).collect();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE CAST({} AS VARCHAR) IN ({})",
            cols.join(", "),
            ident(&s.table),
            ident(&s.key_column),
            list.join(", ")
        );
        if let Some(d) = &s.deleted_column {
            sql.push_str(&format!(" AND NOT COALESCE({}, FALSE)", ident(d)));
        }
        let mut stream = source.query(&sql, 1000).await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let schema = batch.schema();
            let cell = |col: usize, row: usize| -> Value {
                crate::map::value::read(batch.column(col), schema.field(col), row)
                    .ok()
                    .and_then(|v| v.to_json().ok())
                    .unwrap_or(Value::Null)
            };
            for row in 0..batch.num_rows() {
                let Value::String(key) = cell(0, row) else { continue };
                let mut values = Map::new();
                for (i, (field, _)) in s.columns.iter().enumerate() {
                    values.insert(field.clone(), cell(i + 1, row));
                }
                let modified = s.modified_column.as_ref().map(|_| cell(s.columns.len() + 1, row));
                out.insert(key, CrmRecord { values, modified });
            }
        }
    }
    Ok(out)
}

/// A person's `--take crm` written back to the warehouse: each resolved field's CRM value
/// set in the inbound model's table (`write_back`) on the record's row, so the warehouse
/// holds the decided value before the inbound model's next run. Returns the table and
/// the rows changed, or `None` when the model has no such table.
pub async fn write_back(
    plan: &crate::plan::SyncPlan,
    project: &crate::config::project::ProjectSpec,
    project_dir: &std::path::Path,
    resolved: &[Conflict],
) -> Result<Option<(String, u64)>, ConflictError> {
    use crate::destination::table::types::ColumnType;
    use crate::destination::table::{Column, Mode, OnDeleted, TableSpec, TableWriter};
    let Some(state) = plan.conflicts.as_ref().and_then(|c| c.write_back.as_ref()) else {
        return Ok(None);
    };
    let values: Vec<(String, Option<String>)> = resolved
        .iter()
        .filter(|c| c.winner == Some(Side::Crm))
        .filter_map(|c| {
            let (_, column) = state.columns.iter().find(|(f, _)| *f == c.field)?;
            let text = match &c.crm_value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            Some((column.clone(), text))
        })
        .collect();
    let Some(key) = resolved.first().map(|c| c.key.clone()).filter(|_| !values.is_empty()) else {
        return Ok(None);
    };
    let spec = project
        .connections
        .get(&state.connection)
        .ok_or_else(|| ConflictError::NoConnection(state.connection.clone()))?;
    let column = |name: &str| Column {
        name: name.to_string(),
        ty: ColumnType::Text,
    };
    let table_spec = TableSpec {
        connection: state.connection.clone(),
        table: state.table.clone(),
        key: state.key_column.clone(),
        mode: Mode::Upsert,
        on_deleted: OnDeleted::Hard,
        deleted_column: crate::destination::table::DELETED_COLUMN.into(),
        version_column: None,
        columns: std::iter::once(column(&state.key_column))
            .chain(values.iter().map(|(c, _)| column(c)))
            .collect(),
        delete_by_key: false,
    };
    let mut w = TableWriter::open(table_spec, spec, project_dir)
        .await
        .map_err(|e| ConflictError::table(state, e))?;
    if w.check().await.map_err(|e| ConflictError::table(state, e))? == crate::destination::table::TableCheck::Missing {
        // The inbound model has not run yet: its first run brings the CRM's value.
        return Ok(Some((state.table.clone(), 0)));
    }
    let n = w
        .set_where(&state.key_column, &key, values)
        .await
        .map_err(|e| ConflictError::table(state, e))?;
    Ok(Some((state.table.clone(), n)))
}

//! Mapping: a source row becomes the record a destination receives.
//!
//! A [`RowMapper`] is built once per run from a plan and the source's schema: column
//! names are resolved to indices (exactly, else ignoring case, since Snowflake reports
//! unquoted names in upper case), paths are pre-split, transforms pre-parsed. Mapping a
//! row then does no lookups by name. A row whose key is null, or whose value a transform
//! cannot handle, is invalid with a reason; the others are unaffected.

mod apply;
pub mod encode;
pub mod error;
pub mod value;

use crate::path::{FieldPath, Segment};
use crate::plan::{SyncPlan, ValueSource};
use crate::transform::Transform;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use error::RowCause;
use value::Val;

/// Why one row cannot be sent, as the state store keeps it and `ebb errors` shows it. Made
/// from a typed [`RowCause`] (`RowError::from`), which words the message and picks the code;
/// the engine also makes `duplicate_key` ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Stable code: `null_key`, `duplicate_key`, `bad_value`, `transform_failed`.
    pub code: &'static str,
    pub message: String,
}

enum Src {
    Column {
        index: usize,
        steps: Vec<Segment>,
    },
    Query {
        index: Option<usize>,
        column: Option<String>,
        query: Box<jsonpath_rust::parser::model::JpQuery>,
    },
    Constant(Val),
}

struct FieldMap {
    destination: String,
    source: Src,
    transforms: Vec<Transform>,
    /// `pii: true`: a value quoted in an error is masked.
    pii: bool,
}

impl FieldMap {
    /// `v` through the mapping's transforms, in order.
    fn transform(&self, mut v: Val) -> Result<Val, RowError> {
        for t in &self.transforms {
            v = t.apply(v).map_err(|cause| RowCause::Transform {
                field: self.destination.clone(),
                cause: if self.pii { cause.masked() } else { cause },
            })?;
        }
        Ok(v)
    }
}

/// A plan's mappings bound to one schema.
pub struct RowMapper {
    key_index: usize,
    key_column: String,
    fields: Vec<FieldMap>,
    schema: arrow::datatypes::SchemaRef,
    /// The order in which a payload's fields are written ([`payload_order`]).
    order: Vec<usize>,
    /// `"name":` for each mapping, then for the destination key field.
    names_json: Vec<String>,
    /// The destination field the key is written to when no mapping writes it.
    key_field: String,
    /// The payload is the key alone (`mode: delete`).
    delete_only: bool,
    /// For each mapping from a constant: its JSON after transforms, or why it fails.
    constants: Vec<Option<Result<String, RowError>>>,
}

/// The order in which a payload's fields are written: by name. Index `mappings.len()`
/// stands for the destination key field when no mapping writes it.
pub fn payload_order(plan: &SyncPlan) -> Vec<usize> {
    let key_field = plan.destination.key_field.as_str();
    let mut names: Vec<(&str, usize)> = plan
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| (m.destination.as_str(), i))
        .collect();
    if !names.iter().any(|(n, _)| *n == key_field) {
        names.push((key_field, plan.mappings.len()));
    }
    names.sort_by(|a, b| a.0.cmp(b.0));
    names.into_iter().map(|(_, i)| i).collect()
}

/// Finds `name` in `schema`: exact match first, else the one match ignoring case.
pub fn column_index(schema: &Schema, name: &str) -> Option<usize> {
    if let Some((i, _)) = schema.column_with_name(name) {
        return Some(i);
    }
    let mut found = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().eq_ignore_ascii_case(name));
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

impl RowMapper {
    /// Binds `plan` to the columns of `schema`. Fails with the names the schema lacks.
    pub fn new(plan: &SyncPlan, schema: arrow::datatypes::SchemaRef) -> Result<RowMapper, Vec<String>> {
        let mut missing = Vec::new();
        let key_column = plan.destination.key_column.clone();
        let key_index = column_index(&schema, &key_column);
        if key_index.is_none() {
            missing.push(key_column.clone());
        }
        let mut fields = Vec::with_capacity(plan.mappings.len());
        for m in &plan.mappings {
            let source = match &m.value {
                ValueSource::Constant(c) => Src::Constant(Val::from_json(c.clone())),
                ValueSource::Path(FieldPath::Simple { column, steps }) => match column_index(&schema, column) {
                    Some(index) => Src::Column {
                        index,
                        steps: steps.clone(),
                    },
                    None => {
                        missing.push(column.clone());
                        continue;
                    }
                },
                ValueSource::Path(FieldPath::Query { column, query, .. }) => {
                    let index = column.as_deref().and_then(|c| column_index(&schema, c));
                    if column.is_some() && index.is_none() {
                        missing.push(column.clone().unwrap_or_default());
                        continue;
                    }
                    Src::Query {
                        index,
                        column: column.clone(),
                        query: query.clone(),
                    }
                }
            };
            fields.push(FieldMap {
                destination: m.destination.clone(),
                source,
                transforms: m.transforms.clone(),
                pii: m.pii,
            });
        }
        let mut names_json: Vec<String> = fields
            .iter()
            .map(|f| f.destination.as_str())
            .chain([plan.destination.key_field.as_str()])
            .map(|name| {
                let mut t = String::new();
                value::write_json_string(name, &mut t);
                t.push(':');
                t
            })
            .collect();
        names_json.shrink_to_fit();
        let constants = fields
            .iter()
            .map(|f| match &f.source {
                Src::Constant(c) => Some(f.transform(c.clone()).and_then(|v| {
                    let mut json = String::new();
                    v.write_json(&mut json).map(|()| json).map_err(|cause| {
                        RowCause::Field {
                            field: f.destination.clone(),
                            cause,
                        }
                        .into()
                    })
                })),
                _ => None,
            })
            .collect();
        match key_index {
            Some(key_index) if missing.is_empty() => Ok(RowMapper {
                key_index,
                key_column,
                order: payload_order(plan),
                key_field: plan.destination.key_field.clone(),
                delete_only: plan.destination.mode == crate::config::Mode::Delete,
                names_json,
                constants,
                fields,
                schema,
            }),
            _ => Err(missing),
        }
    }

    /// The destination field the key is written to.
    pub fn key_field(&self) -> &str {
        &self.key_field
    }

    /// The row's key as text; null keys are invalid.
    pub fn key(&self, batch: &RecordBatch, row: usize) -> Result<String, RowError> {
        let field = self.schema.field(self.key_index);
        let v = value::read(batch.column(self.key_index), field, row).map_err(|cause| RowCause::Column {
            column: self.key_column.clone(),
            cause,
        })?;
        match v.into_text() {
            Some(k) => Ok(k),
            None => Err(RowCause::NullKey {
                column: self.key_column.clone(),
            }
            .into()),
        }
    }

    /// The destination fields of one row, in mapping order.
    pub fn map_row(&self, batch: &RecordBatch, row: usize) -> Result<Vec<(&str, Val)>, RowError> {
        let mut out = Vec::with_capacity(self.fields.len());
        self.map_row_into(batch, row, &mut out)?;
        Ok(out)
    }

    /// As [`RowMapper::map_row`], into `out` (cleared first), so a caller mapping many rows
    /// reuses one vector.
    pub fn map_row_into<'a>(
        &'a self,
        batch: &RecordBatch,
        row: usize,
        out: &mut Vec<(&'a str, Val)>,
    ) -> Result<(), RowError> {
        out.clear();
        for f in &self.fields {
            let v = self.field_value(f, batch, row)?;
            out.push((f.destination.as_str(), v));
        }
        Ok(())
    }

    /// The value of one mapping for one row, transforms applied.
    fn field_value(&self, f: &FieldMap, batch: &RecordBatch, row: usize) -> Result<Val, RowError> {
        let v = match &f.source {
            Src::Constant(c) => c.clone(),
            Src::Column { index, steps } => {
                let field = self.schema.field(*index);
                let cell = value::read(batch.column(*index), field, row).map_err(|cause| RowCause::Column {
                    column: field.name().clone(),
                    cause,
                })?;
                if steps.is_empty() {
                    cell
                } else {
                    let doc = cell.as_document().map_err(|cause| RowCause::Path {
                        column: field.name().clone(),
                        field: f.destination.clone(),
                        cause,
                    })?;
                    Val::from_json(follow(&doc, steps))
                }
            }
            Src::Query { index, column, query } => {
                let root = match (index, column) {
                    (Some(i), Some(c)) => {
                        let field = self.schema.field(*i);
                        let cell = value::read(batch.column(*i), field, row)
                            .and_then(|c| c.as_document())
                            .map_err(|cause| RowCause::Column {
                                column: field.name().clone(),
                                cause,
                            })?;
                        serde_json::json!({ c.as_str(): cell })
                    }
                    _ => self.row_document(batch, row)?,
                };
                let found =
                    jsonpath_rust::query::js_path_process(query, &root).map_err(|cause| RowCause::JsonPath {
                        field: f.destination.clone(),
                        cause,
                    })?;
                let mut values: Vec<serde_json::Value> = found.into_iter().map(|q| q.val().clone()).collect();
                match values.len() {
                    0 => Val::Null,
                    1 => Val::from_json(values.remove(0)),
                    _ => Val::Json(serde_json::Value::Array(values)),
                }
            }
        };
        f.transform(v)
    }

    /// The whole row as a JSON object (the `$` of a JSONPath that starts with no column).
    fn row_document(&self, batch: &RecordBatch, row: usize) -> Result<serde_json::Value, RowError> {
        let mut m = serde_json::Map::new();
        for (i, field) in self.schema.fields().iter().enumerate() {
            let v = value::read(batch.column(i), field, row)
                .and_then(|v| match v {
                    Val::Str(s) => Ok(serde_json::Value::String(s)),
                    other => other.to_json(),
                })
                .map_err(|cause| RowCause::Column {
                    column: field.name().clone(),
                    cause,
                })?;
            m.insert(field.name().clone(), v);
        }
        Ok(serde_json::Value::Object(m))
    }

    /// Appends a mapped row to `out` as a JSON object, fields in `order`: indices into
    /// `fields`, where `fields.len()` stands for `extra` (a text field not mapped, such as the
    /// destination key).
    pub fn write_object(
        fields: &[(&str, Val)],
        order: &[usize],
        extra: Option<(&str, &str)>,
        out: &mut String,
    ) -> Result<(), RowError> {
        out.push('{');
        for (n, &i) in order.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            match fields.get(i) {
                Some((name, v)) => {
                    value::write_json_string(name, out);
                    out.push(':');
                    v.write_json(out).map_err(|cause| RowCause::Field {
                        field: name.to_string(),
                        cause,
                    })?;
                }
                None => {
                    let (name, text) = extra.unwrap_or(("", ""));
                    value::write_json_string(name, out);
                    out.push(':');
                    value::write_json_string(text, out);
                }
            }
        }
        out.push('}');
        Ok(())
    }

    /// A mapped row as a JSON object text, fields in mapping order.
    pub fn to_json_object(fields: &[(&str, Val)]) -> Result<String, RowError> {
        let mut out = String::with_capacity(64 + fields.len() * 24);
        out.push('{');
        for (i, (name, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            value::write_json_string(name, &mut out);
            out.push(':');
            v.write_json(&mut out).map_err(|cause| RowCause::Field {
                field: name.to_string(),
                cause,
            })?;
        }
        out.push('}');
        Ok(out)
    }
}

/// Follows key and index steps into a JSON document; a missing step gives null.
fn follow(doc: &serde_json::Value, steps: &[Segment]) -> serde_json::Value {
    let mut cur = doc;
    for s in steps {
        let next = match (s, cur) {
            (Segment::Key(k), serde_json::Value::Object(m)) => m.get(k),
            (Segment::Key(k), serde_json::Value::Array(a)) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
            (Segment::Index(i), serde_json::Value::Array(a)) => a.get(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return serde_json::Value::Null,
        }
    }
    cur.clone()
}

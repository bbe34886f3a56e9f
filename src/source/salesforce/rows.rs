//! Records → typed Arrow columns, from either wire form: the JSON records of a REST query
//! page ([`Rows::push_json`]) and the CSV cells of a Bulk API 2.0 query result
//! ([`Rows::push_cells`]). Both give the same values: REST text `""` and Bulk's empty cell
//! are both null (Salesforce stores no empty strings), REST datetimes
//! `2024-01-31T09:30:00.000+0000` and Bulk's `2024-01-31T09:30:00.000Z` the same instant.
//!
//! A value that is not of its field's type fails the record: the error names the object,
//! the record (its number in the read, and its `Id` when the read has one) and the field.

use super::describe::{Column, Kind};
use crate::source::SourceError;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use serde_json::{Map, Value};
use std::sync::Arc;

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    DateTime(TimestampMicrosecondBuilder),
}

/// A parsed, non-null value.
enum Typed<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i32),
    DateTime(i64),
}

/// The rows of one batch being built.
pub struct Rows {
    object: String,
    columns: Vec<Column>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    len: usize,
    /// Records pushed before this batch (for numbering records in messages).
    before: u64,
    /// Where `Id` is among the columns, to name a record in messages.
    id_column: Option<usize>,
    /// Webhook records ([`Rows::lenient`]): a missing field is null, text takes numbers
    /// and booleans, a datetime takes Unix seconds or milliseconds.
    lenient: bool,
}

fn new_builder(kind: Kind, capacity: usize) -> Builder {
    match kind {
        Kind::Text => Builder::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
        Kind::Int => Builder::Int(Int64Builder::with_capacity(capacity)),
        Kind::Float => Builder::Float(Float64Builder::with_capacity(capacity)),
        Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
        Kind::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
        Kind::DateTime => Builder::DateTime(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC")),
        Kind::Json => Builder::Text(StringBuilder::with_capacity(capacity, capacity * 32)),
    }
}

fn parse_date(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

pub(crate) use crate::time::parse_datetime;

impl Rows {
    pub fn new(object: &str, columns: &[Column], schema: SchemaRef, capacity: usize) -> Rows {
        Rows {
            object: object.to_string(),
            builders: columns.iter().map(|c| new_builder(c.kind, capacity)).collect(),
            id_column: columns.iter().position(|c| c.name == "Id"),
            columns: columns.to_vec(),
            schema,
            len: 0,
            before: 0,
            lenient: false,
        }
    }

    /// For records not read from Salesforce (webhooks): a field the record lacks is null,
    /// a text field takes a number or boolean as its text, and a datetime field Unix
    /// seconds or milliseconds; `id_field` names the record in messages.
    pub fn lenient(mut self, id_field: Option<&str>) -> Rows {
        self.lenient = true;
        self.id_column = id_field.and_then(|f| self.columns.iter().position(|c| c.name == f));
        self
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records pushed so far, all batches included.
    pub fn total(&self) -> u64 {
        self.before + self.len as u64
    }

    fn error(&self, id: Option<&str>, column: usize, why: String) -> SourceError {
        let record = match id {
            Some(id) => format!("record {} (Id {id})", self.total() + 1),
            None => format!("record {}", self.total() + 1),
        };
        SourceError::Query(format!(
            "`{}` {record}, field `{}`: {why}",
            self.object, self.columns[column].name
        ))
    }

    /// A REST record: one value per column, by name. A field the record does not carry
    /// is not what the protocol says (every selected field comes, null or not).
    pub fn push_json(&mut self, record: &Map<String, Value>) -> Result<(), SourceError> {
        let id = self
            .id_column
            .and_then(|i| record.get(&self.columns[i].name))
            .and_then(Value::as_str);
        let mut values = Vec::with_capacity(self.columns.len());
        let mut owned: Vec<(usize, String)> = Vec::new();
        for (i, c) in self.columns.iter().enumerate() {
            let Some(v) = record.get(&c.name) else {
                if self.lenient {
                    values.push(None);
                    continue;
                }
                return Err(self.error(id, i, "the record does not carry the field".into()));
            };
            if self.lenient {
                let text = match (c.kind, v) {
                    (_, Value::Null) => None,
                    (Kind::Json, v) => Some(v.to_string()),
                    (Kind::Text, Value::Number(n)) => Some(n.to_string()),
                    (Kind::Text, Value::Bool(b)) => Some(b.to_string()),
                    _ => None,
                };
                if let Some(t) = text {
                    owned.push((i, t));
                    values.push(None);
                    continue;
                }
                if let (Kind::DateTime, Value::Number(_)) = (c.kind, v) {
                    match crate::time::parse_time(v) {
                        Some(t) => values.push(Some(Typed::DateTime(t.timestamp_micros()))),
                        None => {
                            return Err(self.error(
                                id,
                                i,
                                format!("{} is not a {}", shorten(&v.to_string()), kind_name(c.kind)),
                            ))
                        }
                    }
                    continue;
                }
            }
            let typed = match (c.kind, v) {
                (_, Value::Null) => None,
                (Kind::Text, Value::String(s)) if s.is_empty() => None,
                (Kind::Text, Value::String(s)) => Some(Typed::Text(s)),
                (Kind::Int, Value::Number(n)) => n
                    .as_i64()
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                            .map(|f| f as i64)
                    })
                    .map(Typed::Int),
                (Kind::Float, Value::Number(n)) => n.as_f64().map(Typed::Float),
                (Kind::Bool, Value::Bool(b)) => Some(Typed::Bool(*b)),
                (Kind::Date, Value::String(s)) => parse_date(s).map(Typed::Date),
                (Kind::DateTime, Value::String(s)) => parse_datetime(s).map(|d| Typed::DateTime(d.timestamp_micros())),
                _ => None,
            };
            if typed.is_none() && !v.is_null() && !(c.kind == Kind::Text && v.as_str() == Some("")) {
                return Err(self.error(
                    id,
                    i,
                    format!("{} is not a {}", shorten(&v.to_string()), kind_name(c.kind)),
                ));
            }
            values.push(typed);
        }
        for (i, t) in &owned {
            values[*i] = Some(Typed::Text(t));
        }
        self.append(values);
        Ok(())
    }

    /// A Bulk CSV record: one cell per column, in column order (the header was checked).
    pub fn push_cells(&mut self, cells: &[String]) -> Result<(), SourceError> {
        let id = self.id_column.and_then(|i| cells.get(i)).map(String::as_str);
        if cells.len() != self.columns.len() {
            return Err(SourceError::Query(format!(
                "`{}` record {}{}: the CSV row has {} cells for {} fields; the answer is not what the protocol says",
                self.object,
                self.total() + 1,
                id.map(|i| format!(" (Id {i})")).unwrap_or_default(),
                cells.len(),
                self.columns.len()
            )));
        }
        let mut values = Vec::with_capacity(cells.len());
        for (i, (c, cell)) in self.columns.iter().zip(cells).enumerate() {
            if cell.is_empty() {
                values.push(None);
                continue;
            }
            let typed = match c.kind {
                Kind::Text | Kind::Json => Some(Typed::Text(cell.as_str())),
                Kind::Int => cell.parse::<i64>().ok().map(Typed::Int),
                Kind::Float => cell.parse::<f64>().ok().filter(|f| f.is_finite()).map(Typed::Float),
                Kind::Bool => match cell.as_str() {
                    "true" => Some(Typed::Bool(true)),
                    "false" => Some(Typed::Bool(false)),
                    _ => None,
                },
                Kind::Date => parse_date(cell).map(Typed::Date),
                Kind::DateTime => parse_datetime(cell).map(|d| Typed::DateTime(d.timestamp_micros())),
            };
            match typed {
                Some(t) => values.push(Some(t)),
                None => return Err(self.error(id, i, format!("`{}` is not a {}", shorten(cell), kind_name(c.kind)))),
            }
        }
        self.append(values);
        Ok(())
    }

    fn append(&mut self, values: Vec<Option<Typed<'_>>>) {
        for (b, v) in self.builders.iter_mut().zip(values) {
            match (b, v) {
                (Builder::Text(b), Some(Typed::Text(s))) => b.append_value(s),
                (Builder::Int(b), Some(Typed::Int(n))) => b.append_value(n),
                (Builder::Float(b), Some(Typed::Float(n))) => b.append_value(n),
                (Builder::Bool(b), Some(Typed::Bool(x))) => b.append_value(x),
                (Builder::Date(b), Some(Typed::Date(d))) => b.append_value(d),
                (Builder::DateTime(b), Some(Typed::DateTime(t))) => b.append_value(t),
                (Builder::Text(b), _) => b.append_null(),
                (Builder::Int(b), _) => b.append_null(),
                (Builder::Float(b), _) => b.append_null(),
                (Builder::Bool(b), _) => b.append_null(),
                (Builder::Date(b), _) => b.append_null(),
                (Builder::DateTime(b), _) => b.append_null(),
            }
        }
        self.len += 1;
    }

    /// The batch of the rows pushed since the last one; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch, SourceError> {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Text(b) => Arc::new(b.finish()),
                    Builder::Int(b) => Arc::new(b.finish()),
                    Builder::Float(b) => Arc::new(b.finish()),
                    Builder::Bool(b) => Arc::new(b.finish()),
                    Builder::Date(b) => Arc::new(b.finish()),
                    Builder::DateTime(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.before += self.len as u64;
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| SourceError::Query(format!("internal: cannot build a batch of `{}`: {e}", self.object)))
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text value",
        Kind::Int => "whole number",
        Kind::Float => "number",
        Kind::Bool => "boolean (`true` or `false`)",
        Kind::Date => "date (YYYY-MM-DD)",
        Kind::DateTime => "datetime (ISO 8601 with an offset)",
        Kind::Json => "JSON value",
    }
}

/// At most 80 characters of a value, for a message.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(80).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
    use serde_json::json;

    fn rows() -> Rows {
        let columns = vec![
            Column {
                name: "Id".into(),
                kind: Kind::Text,
            },
            Column {
                name: "N__c".into(),
                kind: Kind::Float,
            },
            Column {
                name: "At__c".into(),
                kind: Kind::DateTime,
            },
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("Id", DataType::Utf8, true),
            Field::new("N__c", DataType::Float64, true),
            Field::new(
                "At__c",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        Rows::new("Contact", &columns, schema, 4)
    }

    #[test]
    fn json_and_csv_give_the_same_values() {
        let mut r = rows();
        let rec = json!({"Id": "003A", "N__c": 12.35, "At__c": "2024-01-31T09:30:00.250+0000"});
        r.push_json(rec.as_object().unwrap()).unwrap();
        r.push_cells(&["003A".into(), "12.35".into(), "2024-01-31T09:30:00.250Z".into()])
            .unwrap();
        r.push_json(json!({"Id": "003B", "N__c": null, "At__c": null}).as_object().unwrap())
            .unwrap();
        r.push_cells(&["003B".into(), "".into(), "".into()]).unwrap();
        let b = r.finish().unwrap();
        let n = b.column(1).as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!((n.value(0), n.value(1)), (12.35, 12.35));
        assert!(n.is_null(2) && n.is_null(3));
        let t = b.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.value(0), t.value(1));
        assert_eq!(t.value(0), 1_706_693_400_250_000);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_object_record_and_field() {
        let mut r = rows();
        r.push_cells(&["003A".into(), "1".into(), "".into()]).unwrap();
        let e = r
            .push_cells(&["003B".into(), "abc".into(), "".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the query failed: `Contact` record 2 (Id 003B), field `N__c`: `abc` is not a number"
        );
        let e = r
            .push_json(json!({"Id": "003C", "N__c": "1", "At__c": null}).as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `N__c`: \"1\" is not a number"), "{e}");
        let e = r
            .push_json(json!({"Id": "003C", "N__c": 1}).as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `At__c`: the record does not carry the field"), "{e}");
        let e = r.push_cells(&["003C".into()]).unwrap_err().to_string();
        assert!(e.contains("1 cells for 3 fields"), "{e}");
    }
}

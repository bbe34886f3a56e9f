//! How a stored record is shown: field by field, the system fields (`Id`, `IsDeleted`,
//! `CreatedDate`, `LastModifiedDate`, `SystemModstamp`) computed from the record's
//! timestamps and where it lives (table or recycle bin). The REST API and inspection show
//! JSON ([`render`]); Bulk API 2.0 query results show CSV cells ([`Row::csv_cell`]).
//!
//! A query reads rows through [`Row`] without building a map per record, so filtering and
//! sorting 100,000 records costs no more than the fields the query names.

use super::schema::{FieldType, SObject};
use super::store::{Record, Table};
use super::value;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// A record as a query sees it: live, or in the recycle bin (`deleted`).
#[derive(Clone, Copy)]
pub(crate) struct Row<'a> {
    pub id: &'a str,
    pub record: &'a Record,
    pub deleted: bool,
}

impl<'a> Row<'a> {
    /// The time of a system datetime field (`None` for any other field).
    pub(crate) fn system_time(&self, name: &str) -> Option<DateTime<Utc>> {
        match name {
            "CreatedDate" => Some(self.record.created),
            "LastModifiedDate" => Some(self.record.modified),
            "SystemModstamp" => Some(self.record.stamp),
            _ => None,
        }
    }

    /// The value of field `name` (its canonical name) as the REST API shows it; Null
    /// when the record holds none.
    pub(crate) fn get(&self, name: &str) -> Value {
        if let Some(t) = self.system_time(name) {
            return Value::from(value::format_datetime(t));
        }
        match name {
            "Id" => Value::from(self.id),
            "IsDeleted" => Value::Bool(self.deleted),
            other => self.record.fields.get(other).cloned().unwrap_or(Value::Null),
        }
    }

    /// The field's value borrowed, for the fields the record stores (not system fields).
    pub(crate) fn stored(&self, name: &str) -> Option<&'a Value> {
        self.record.fields.get(name)
    }

    /// One cell of a Bulk API 2.0 query result (unquoted): empty for null, datetimes as
    /// `2024-01-31T09:30:00.000Z`, dates `2024-01-31`, booleans `true`/`false`, numbers as
    /// stored, text as is.
    pub(crate) fn csv_cell(&self, name: &str, kind: FieldType) -> String {
        if let Some(t) = self.system_time(name) {
            return bulk_datetime(t);
        }
        match name {
            "Id" => return self.id.to_string(),
            "IsDeleted" => return self.deleted.to_string(),
            _ => {}
        }
        match self.record.fields.get(name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if kind == FieldType::Datetime => {
                value::parse_datetime(s).map(bulk_datetime).unwrap_or_else(|| s.clone())
            }
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => other.to_string(),
        }
    }
}

/// `2024-01-31T09:30:00.000Z`, the datetime form of Bulk API 2.0 query results.
pub(crate) fn bulk_datetime(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A record as inspection and the REST API show it: `Id`, then the set fields in the
/// object's field order; with `system`, the system fields and nulls for unset fields too.
pub(crate) fn render(table: &Table, id: &str, record: &Record, system: bool) -> Map<String, Value> {
    render_row(
        &table.object,
        Row {
            id,
            record,
            deleted: false,
        },
        system,
    )
}

/// [`render`] for a live record or one in the recycle bin.
pub(crate) fn render_row(object: &SObject, row: Row<'_>, system: bool) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("Id".into(), Value::from(row.id));
    for f in &object.fields {
        let is_system = matches!(
            f.name.as_str(),
            "IsDeleted" | "CreatedDate" | "LastModifiedDate" | "SystemModstamp"
        );
        if f.name == "Id" || (is_system && !system) {
            continue;
        }
        let v = row.get(&f.name);
        if !v.is_null() || system {
            out.insert(f.name.clone(), v);
        }
    }
    out
}

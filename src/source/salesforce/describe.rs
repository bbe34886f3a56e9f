//! An sObject's describe (`GET sobjects/{Object}/describe`, docs/salesforce-protocol.md §5)
//! read into what the reader needs: each field's canonical name, type and whether it is
//! filterable; and the Arrow schema of the fields a model reads, typed from the describe.
//!
//! Types: `datetime` → `Timestamp(µs, "UTC")`, `date` → `Date32`, `int` → `Int64`,
//! `double`/`currency`/`percent` → `Float64`, `boolean` → `Boolean`, every textual type
//! (`id`, `reference`, `string`, `email`, `phone`, `picklist`, `multipicklist`, `combobox`,
//! `textarea`, `url`, `encryptedstring`) → `Utf8`. Numbers are `Float64` rather than exact
//! decimal text because the REST API sends them as JSON numbers, which every client reads as
//! doubles: an exact type on one path would be a promise the other cannot keep, and both
//! paths must give identical rows. Each column carries the describe's type, precision, scale
//! and length as field metadata (`salesforce.type`, …), so a table writer can declare
//! `DECIMAL(p, s)` and round to the scale, which is exact for every value under 2^53 / 10^s.
//!
//! Compound fields (`address`, `location`) are refused, as Bulk API 2.0 refuses them: the
//! model names their components (`MailingStreet`, `MailingCity`, …). Other types (`time`,
//! `base64`, `anyType`, …) are refused by name.

use crate::source::SourceError;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The kind of Arrow column a Salesforce field becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
    Bool,
    Date,
    DateTime,
    /// Any JSON value, as its JSON text (webhook records; Salesforce has no such field).
    Json,
}

impl Kind {
    pub(crate) fn data_type(self) -> DataType {
        match self {
            Kind::Text => DataType::Utf8,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Date => DataType::Date32,
            Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Json => DataType::Utf8,
        }
    }
}

/// One field of the describe.
#[derive(Debug, Clone)]
pub struct FieldInfo {
    /// The canonical name (`LastName`, `Crm_Id__c`).
    pub name: String,
    /// The describe's `type`.
    pub sf_type: String,
    pub filterable: bool,
    pub precision: u64,
    pub scale: u64,
    pub length: u64,
}

/// What the describe of one object says.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The canonical object name.
    pub name: String,
    pub fields: Vec<FieldInfo>,
    by_lower: HashMap<String, usize>,
}

/// A column the reader produces: the field and its Arrow kind.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

impl ObjectInfo {
    /// Reads a describe answer. `object` is the name the request used (for messages).
    pub fn parse(object: &str, body: &Value) -> Result<ObjectInfo, SourceError> {
        let bad = |why: &str| {
            SourceError::Query(format!(
                "the describe of `{object}` is not what the protocol says: {why}"
            ))
        };
        let name = body["name"].as_str().ok_or_else(|| bad("it has no `name`"))?;
        let list = body["fields"]
            .as_array()
            .ok_or_else(|| bad("it has no `fields` list"))?;
        let mut fields = Vec::with_capacity(list.len());
        for (i, f) in list.iter().enumerate() {
            let (Some(fname), Some(sf_type)) = (f["name"].as_str(), f["type"].as_str()) else {
                return Err(bad(&format!("field {} has no `name` or `type`", i + 1)));
            };
            let num = |k: &str| f[k].as_u64().unwrap_or(0);
            fields.push(FieldInfo {
                name: fname.to_string(),
                sf_type: sf_type.to_string(),
                // Absent means filterable: only the fields that are not say so.
                filterable: f["filterable"].as_bool().unwrap_or(true),
                precision: num("precision"),
                scale: num("scale"),
                length: num("length"),
            });
        }
        let by_lower = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.to_ascii_lowercase(), i))
            .collect();
        Ok(ObjectInfo {
            name: name.to_string(),
            fields,
            by_lower,
        })
    }

    /// The field called `name` (whatever its case).
    pub fn field(&self, name: &str) -> Option<&FieldInfo> {
        self.by_lower.get(&name.to_ascii_lowercase()).map(|&i| &self.fields[i])
    }

    /// Whether the object has `SystemModstamp`, and whether it is filterable (some objects
    /// have it unfilterable, and filtering on it is then `INVALID_FIELD`).
    pub fn system_modstamp(&self) -> Option<bool> {
        self.field("SystemModstamp").map(|f| f.filterable)
    }

    /// The field `name` or the error that names the object and the field.
    pub fn require(&self, name: &str) -> Result<&FieldInfo, SourceError> {
        self.field(name).ok_or_else(|| {
            SourceError::Query(format!(
                "object `{}` has no field `{name}` (its describe lists {} fields; custom fields end in `__c`)",
                self.name,
                self.fields.len()
            ))
        })
    }

    /// The columns and the Arrow schema of `fields`, in that order, named as the describe
    /// names them.
    pub fn schema(&self, fields: &[String]) -> Result<(Vec<Column>, SchemaRef), SourceError> {
        if fields.is_empty() {
            return Err(SourceError::Query(format!(
                "no fields to read from `{}`: name at least one",
                self.name
            )));
        }
        let mut columns = Vec::with_capacity(fields.len());
        let mut arrow_fields = Vec::with_capacity(fields.len());
        for name in fields {
            let f = self.require(name)?;
            if columns.iter().any(|c: &Column| c.name == f.name) {
                return Err(SourceError::Query(format!(
                    "field `{}` of `{}` is named twice",
                    f.name, self.name
                )));
            }
            let kind = kind_of(&self.name, f)?;
            let metadata = HashMap::from([
                ("salesforce.type".to_string(), f.sf_type.clone()),
                ("salesforce.precision".to_string(), f.precision.to_string()),
                ("salesforce.scale".to_string(), f.scale.to_string()),
                ("salesforce.length".to_string(), f.length.to_string()),
            ]);
            arrow_fields.push(Field::new(&f.name, kind.data_type(), true).with_metadata(metadata));
            columns.push(Column {
                name: f.name.clone(),
                kind,
            });
        }
        Ok((columns, Arc::new(Schema::new(arrow_fields))))
    }
}

/// The Arrow kind of a field, or why it cannot be read.
fn kind_of(object: &str, f: &FieldInfo) -> Result<Kind, SourceError> {
    Ok(match f.sf_type.as_str() {
        "datetime" => Kind::DateTime,
        "date" => Kind::Date,
        "int" | "long" => Kind::Int,
        "double" | "currency" | "percent" => Kind::Float,
        "boolean" => Kind::Bool,
        "id" | "reference" | "string" | "email" | "phone" | "picklist" | "multipicklist" | "combobox" | "textarea"
        | "url" | "encryptedstring" => Kind::Text,
        "address" | "location" => {
            return Err(SourceError::Unsupported(format!(
                "field `{}` of `{object}` is a compound {} field, which Bulk API 2.0 cannot read: name its \
                 components instead (e.g. `MailingStreet`, `MailingCity`; `Latitude__s`, `Longitude__s`)",
                f.name, f.sf_type
            )))
        }
        other => {
            return Err(SourceError::Unsupported(format!(
                "field `{}` of `{object}` has the type `{other}`, which ebb does not read yet",
                f.name
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn describe() -> Value {
        json!({"name": "Contact", "fields": [
            {"name": "Id", "type": "id", "length": 18},
            {"name": "LastName", "type": "string", "length": 80},
            {"name": "LTV__c", "type": "currency", "precision": 18, "scale": 2},
            {"name": "Visits__c", "type": "int", "digits": 9},
            {"name": "IsDeleted", "type": "boolean"},
            {"name": "Birthdate", "type": "date"},
            {"name": "SystemModstamp", "type": "datetime", "filterable": false},
            {"name": "MailingAddress", "type": "address"},
            {"name": "Opens_At__c", "type": "time"}
        ]})
    }

    #[test]
    fn types_follow_the_describe() {
        let info = ObjectInfo::parse("contact", &describe()).unwrap();
        let fields: Vec<String> = [
            "id",
            "LastName",
            "ltv__c",
            "Visits__c",
            "IsDeleted",
            "Birthdate",
            "SystemModstamp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (columns, schema) = info.schema(&fields).unwrap();
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            [
                "Id Utf8",
                "LastName Utf8",
                "LTV__c Float64",
                "Visits__c Int64",
                "IsDeleted Boolean",
                "Birthdate Date32",
                "SystemModstamp Timestamp(µs, \"UTC\")"
            ]
        );
        assert_eq!(columns[2].kind, Kind::Float);
        let ltv = schema.field(2).metadata();
        assert_eq!(
            (ltv["salesforce.precision"].as_str(), ltv["salesforce.scale"].as_str()),
            ("18", "2")
        );
        assert_eq!(info.system_modstamp(), Some(false));
    }

    #[test]
    fn unknown_compound_and_unsupported_fields_are_named() {
        let info = ObjectInfo::parse("Contact", &describe()).unwrap();
        let err = |f: &str| info.schema(&[f.to_string()]).unwrap_err().to_string();
        assert!(
            err("Nope__c").contains("object `Contact` has no field `Nope__c`"),
            "{}",
            err("Nope__c")
        );
        assert!(
            err("MailingAddress").contains("compound address field"),
            "{}",
            err("MailingAddress")
        );
        assert!(err("Opens_At__c").contains("type `time`"), "{}", err("Opens_At__c"));
        assert!(info
            .schema(&["Id".into(), "ID".into()])
            .unwrap_err()
            .to_string()
            .contains("named twice"));
        assert!(ObjectInfo::parse("X", &json!({"fields": []})).is_err());
    }
}

//! The SOQL of a read: `SELECT <fields> FROM <object> [WHERE <cursor> >= <from> AND
//! <cursor> < <to>]`, and the `SELECT COUNT()` with the same filter that `api: auto`
//! decides by. Names are the describe's; no ORDER BY (Bulk API 2.0 advises against it,
//! and the caller needs no order).
//!
//! Datetime literals are written in the form the SOQL guide documents,
//! `2024-01-31T09:30:00Z`, unquoted (docs/salesforce-protocol.md, "Reading"). Whole
//! seconds: a bound with a fraction is floored to its second. Flooring both bounds keeps
//! consecutive windows `[a, b)`, `[b, c)` without gap or overlap, since `b` is floored the
//! same way in both; a lower bound moved earlier only re-reads.

use super::{Described, Extract};
use crate::source::SourceError;
use chrono::{DateTime, Utc};

/// The queries of one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub select: String,
    pub count: String,
}

/// `2024-01-31T09:30:00Z`: a SOQL datetime literal, floored to the second.
pub fn datetime_literal(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The queries for `extract` over the described object.
pub fn build(d: &Described, extract: &Extract) -> Result<Query, SourceError> {
    let object = &d.info.name;
    let fields: Vec<&str> = d.columns.iter().map(|c| c.name.as_str()).collect();
    let mut filter = Vec::new();
    if extract.from.is_some() || extract.to.is_some() {
        let Some(cursor) = &extract.cursor else {
            return Err(SourceError::Query(format!(
                "a window on `{object}` needs a cursor field"
            )));
        };
        let f = d.info.require(cursor)?;
        if f.sf_type != "datetime" {
            return Err(SourceError::Query(format!(
                "the cursor field `{}` of `{object}` is a {} field; a window needs a datetime field such as \
                 `SystemModstamp`",
                f.name, f.sf_type
            )));
        }
        if !f.filterable {
            return Err(SourceError::Query(format!(
                "the cursor field `{}` of `{object}` is not filterable (its describe says so): read the object \
                 whole, or choose another datetime field",
                f.name
            )));
        }
        if let Some(from) = extract.from {
            filter.push(format!("{} >= {}", f.name, datetime_literal(from)));
        }
        if let Some(to) = extract.to {
            filter.push(format!("{} < {}", f.name, datetime_literal(to)));
        }
    }
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filter.join(" AND "))
    };
    Ok(Query {
        select: format!("SELECT {} FROM {object}{filter}", fields.join(", ")),
        count: format!("SELECT COUNT() FROM {object}{filter}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::describe::ObjectInfo;
    use super::super::ReadApi;
    use super::*;
    use serde_json::json;

    fn described(fields: &[&str]) -> Described {
        let info = ObjectInfo::parse(
            "contact",
            &json!({"name": "Contact", "fields": [
                {"name": "Id", "type": "id"},
                {"name": "LastName", "type": "string"},
                {"name": "Birthdate", "type": "date"},
                {"name": "SystemModstamp", "type": "datetime"},
                {"name": "Hidden__c", "type": "datetime", "filterable": false}
            ]}),
        )
        .unwrap();
        let (columns, schema) = info
            .schema(&fields.iter().map(|f| f.to_string()).collect::<Vec<_>>())
            .unwrap();
        Described { info, columns, schema }
    }

    #[test]
    fn windows_are_half_open_in_documented_literals() {
        let d = described(&["id", "lastname"]);
        let mut e = Extract::all("contact", &["id", "lastname"], ReadApi::Rest);
        assert_eq!(build(&d, &e).unwrap().select, "SELECT Id, LastName FROM Contact");
        e.cursor = Some("systemmodstamp".into());
        e.from = Some("2024-01-31T09:30:00.750Z".parse().unwrap());
        e.to = Some("2024-01-31T10:30:00+01:00".parse().unwrap());
        let q = build(&d, &e).unwrap();
        assert_eq!(
            q.select,
            "SELECT Id, LastName FROM Contact WHERE SystemModstamp >= 2024-01-31T09:30:00Z AND SystemModstamp < \
             2024-01-31T09:30:00Z"
        );
        assert_eq!(
            q.count,
            "SELECT COUNT() FROM Contact WHERE SystemModstamp >= 2024-01-31T09:30:00Z AND SystemModstamp < \
             2024-01-31T09:30:00Z"
        );
        e.cursor = Some("Birthdate".into());
        assert!(build(&d, &e).unwrap_err().to_string().contains("is a date field"));
        e.cursor = Some("Hidden__c".into());
        assert!(build(&d, &e).unwrap_err().to_string().contains("not filterable"));
        e.cursor = Some("Nope__c".into());
        assert!(build(&d, &e)
            .unwrap_err()
            .to_string()
            .contains("object `Contact` has no field `Nope__c`"));
        e.cursor = None;
        assert!(build(&d, &e).unwrap_err().to_string().contains("needs a cursor field"));
    }
}

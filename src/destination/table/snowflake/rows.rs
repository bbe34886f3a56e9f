//! What the Snowflake writer sends and reads back, without IO: names as Snowflake stores
//! them, rows as JSON cut into requests, the `SELECT` that casts them, DML counts.

use super::super::cell::text_at;
use super::super::types::{ColumnType, DbType};
use super::REQUEST_BYTES;
use crate::snowflake::ResultSet;
use arrow::record_batch::RecordBatch;

/// A name as Snowflake stores it when written without quotes: upper case, for a plain
/// identifier (letters, digits, `_`, `$`, not starting with a digit); else as written.
pub(super) fn stored(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    }
}

/// The type to cast a text to, for a column of `ty` (`set_where`).
pub(super) fn snowflake_type(ty: &DbType) -> String {
    match ty {
        DbType::Text => "VARCHAR".into(),
        DbType::Integer(_) | DbType::Decimal(None) => "NUMERIC(38,0)".into(),
        DbType::Decimal(Some((p, s))) => format!("NUMERIC({p},{s})"),
        DbType::Double | DbType::Real => "FLOAT".into(),
        DbType::Boolean => "BOOLEAN".into(),
        DbType::Date => "DATE".into(),
        DbType::Timestamp => "TIMESTAMP_NTZ".into(),
        DbType::TimestampTz => "TIMESTAMP_TZ".into(),
        DbType::Json => "VARIANT".into(),
        DbType::Other(n) => n.clone(),
    }
}

/// A DML statement's count: `stats`, else its first cell (`number of rows …`, or a
/// `SELECT count(*)`).
pub(super) fn dml_count(rs: &ResultSet) -> Option<u64> {
    if let Some(s) = &rs.stats {
        if let Some(n) = s.num_rows_inserted.or(s.num_rows_updated).or(s.num_rows_deleted) {
            return Some(n);
        }
    }
    first_text(rs)?.parse().ok()
}

pub(super) fn first_text(rs: &ResultSet) -> Option<String> {
    rs.data.as_ref()?.first()?.first()?.clone()
}

pub(super) fn rows(rs: &ResultSet) -> Vec<Vec<Option<String>>> {
    rs.data.clone().unwrap_or_default()
}

/// Each row of `batch` as a JSON object of its non-null cells' text forms, keyed by the
/// column's position. A `$` is written `\u0024`, so that no row holds `$$`.
pub(super) fn json_rows(batch: &RecordBatch) -> Vec<String> {
    (0..batch.num_rows())
        .map(|i| {
            let mut row = serde_json::Map::new();
            for (j, a) in batch.columns().iter().enumerate() {
                if let Some(text) = text_at(a.as_ref(), i) {
                    row.insert(j.to_string(), text.into());
                }
            }
            serde_json::Value::Object(row).to_string().replace('$', "\\u0024")
        })
        .collect()
}

/// The rows and delete keys cut into requests of at most [`REQUEST_BYTES`] (a row larger
/// than that goes alone).
pub(super) fn requests_of(live: Vec<String>, deletes: Vec<String>) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = vec![(Vec::new(), Vec::new())];
    let mut size = 0;
    for (row, is_delete) in live
        .into_iter()
        .map(|r| (r, false))
        .chain(deletes.into_iter().map(|d| (d, true)))
    {
        if size + row.len() > REQUEST_BYTES && size > 0 {
            out.push((Vec::new(), Vec::new()));
            size = 0;
        }
        size += row.len() + 1;
        let last = out.last_mut().expect("one request at least");
        if is_delete {
            last.1.push(row);
        } else {
            last.0.push(row);
        }
    }
    out
}

/// `SELECT …` of the JSON rows, each column cast from the text of its position's key.
pub(super) fn select_rows(columns: &[String], types: &[ColumnType], rows: Vec<String>) -> String {
    let select: Vec<String> = columns
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (c, ty))| {
            let text = format!("AS_VARCHAR(GET(f.value, '{i}'))");
            match ty {
                ColumnType::Json => format!("PARSE_JSON({text}) AS {c}"),
                _ => format!("CAST({text} AS {}) AS {c}", ty.snowflake()),
            }
        })
        .collect();
    format!(
        "SELECT {} FROM (SELECT PARSE_JSON($$[{}]$$) AS j) AS p, LATERAL FLATTEN(INPUT => p.j) AS f",
        select.join(", "),
        rows.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_stored_upper_case() {
        assert_eq!(stored("crm_customers"), "CRM_CUSTOMERS");
        assert_eq!(stored("_ebb_extracted_at"), "_EBB_EXTRACTED_AT");
        assert_eq!(stored("First Name"), "First Name");
        assert_eq!(stored("1st"), "1st");
    }

    #[test]
    fn dollars_cannot_end_the_literal() {
        let batch = RecordBatch::try_from_iter([(
            "a",
            std::sync::Arc::new(arrow::array::StringArray::from(vec![
                Some("$$; DROP TABLE x; $$"),
                None,
            ])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let rows = json_rows(&batch);
        assert_eq!(
            rows,
            vec![
                r#"{"0":"\u0024\u0024; DROP TABLE x; \u0024\u0024"}"#.to_string(),
                "{}".into()
            ]
        );
        let back: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
        assert_eq!(back["0"], "$$; DROP TABLE x; $$");
    }

    #[test]
    fn requests_hold_at_most_the_cap() {
        let row = "x".repeat(1000);
        let live = vec![row.clone(); 1500];
        let reqs = requests_of(live, vec!["\"k\"".into()]);
        assert!(reqs.len() >= 3);
        assert_eq!(reqs.iter().map(|r| r.0.len()).sum::<usize>(), 1500);
        assert_eq!(reqs.iter().map(|r| r.1.len()).sum::<usize>(), 1);
        for (l, d) in &reqs {
            assert!(l.iter().chain(d).map(|r| r.len() + 1).sum::<usize>() <= REQUEST_BYTES + 1);
        }
    }
}

//! `ebb validate --connect` against a real warehouse (PostgreSQL): columns, paths and
//! transforms checked against what the query returns, reported at model positions.

use crate::support::{ebb, pg_project, stdout};

fn project(url: &str, model: &str) -> tempfile::TempDir {
    pg_project(url, model)
}

/// (code, line, col) of each diagnostic in `validate --connect --format json`.
fn diagnostics(dir: &std::path::Path) -> (i32, Vec<(String, u64, u64)>) {
    let o = ebb(dir, &["validate", "--connect", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let list = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
            )
        })
        .collect();
    (o.status.code().unwrap(), list)
}

const MODEL: &str = "models:
  - name: contacts
    source:
      type: postgres
      query: SELECT * FROM (VALUES (1, 'Ada', 12.5::numeric(6,2), 7)) AS t(id, name, ltv, visits)
    destination:
      type: file
      unique_identifier: id
    mappings:
      - source: name
        destination: name
        transform: lower
      - source: ltv
        destination: ltv
        transform: lower
      - source: visits.count
        destination: visits
      - source: email
        destination: email
";

#[test]
fn columns_paths_and_transforms_are_checked_against_the_query() {
    require_postgres!();
    let dir = project(&crate::source_postgres::url(), MODEL);
    // Offline, `SELECT *` hides all of this: a note only.
    let o = ebb(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let (code, found) = diagnostics(dir.path());
    assert_eq!(code, 1);
    let want = [
        ("N305".to_string(), 5, 14),
        ("E904".to_string(), 15, 20), // lower on a numeric column
        ("E904".to_string(), 16, 17), // a path into an integer column
        ("E903".to_string(), 18, 17), // email is not returned
    ];
    assert_eq!(found, want);
    let o = ebb(dir.path(), &["validate", "--connect"]);
    let out = stdout(&o);
    assert!(
        out.contains("`lower` needs text, but `ltv` is a number here (Decimal128(6, 2))"),
        "{out}"
    );
    assert!(
        out.contains("column `email` is not among the columns the query returns"),
        "{out}"
    );
}

#[test]
fn a_query_the_warehouse_rejects_is_reported_at_the_query() {
    require_postgres!();
    let model = MODEL.replace(
        "SELECT * FROM (VALUES (1, 'Ada', 12.5::numeric(6,2), 7)) AS t(id, name, ltv, visits)",
        "SELECT id, name, ltv, visits, email FROM ebb_missing_table",
    );
    let dir = project(&crate::source_postgres::url(), &model);
    let (code, found) = diagnostics(dir.path());
    assert_eq!(code, 1);
    assert_eq!(found, [("E902".to_string(), 5, 14)]);
}

#[test]
fn an_unreachable_connection_is_reported_at_the_source() {
    let dir = project("postgres://postgres@127.0.0.1:1/postgres", MODEL);
    let (code, found) = diagnostics(dir.path());
    assert_eq!(code, 1);
    assert_eq!(found, [("E901".to_string(), 4, 13), ("N305".to_string(), 5, 14)]);
}

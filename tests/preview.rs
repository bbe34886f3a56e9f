//! `ebb preview` end to end: a real warehouse (PostgreSQL here), the query, the mapping
//! with paths and transforms, and invalid rows reported with their reason.

use crate::support::{ebb, pg_project, stderr, stdout};

fn project(url: &str, query: &str) -> tempfile::TempDir {
    pg_project(
        url,
        &format!(
            "models:
  - name: contacts
    source:
      type: postgres
      query: |
        {query}
    destination:
      type: file
      unique_identifier: id
    mappings:
      - source: name
        destination: Name
        transform: initcap
      - source: email
        destination: Email
        transform: [trim, lower]
      - source: ltv
        destination: LTV__c
        transform: round(1)
      - source: scores.upsell
        destination: Upsell__c
        transform:
          - scale(0, 1, 0, 100)
      - source: seen
        destination: Seen__c
        transform: date('%Y-%m-%d')
      - constant: warehouse
        destination: LeadSource
"
        ),
    )
}

const QUERY: &str = "SELECT * FROM (VALUES \
    (1, 'ada LOVELACE', ' Ada@Example.COM ', 1234.56::numeric(10,2), '{\"upsell\": 0.25}'::jsonb, '2026-11-28'), \
    (2, 'alan turing', 'alan@example.com', 10.04::numeric(10,2), '{\"upsell\": 1}'::jsonb, 'not a date'), \
    (NULL, 'nobody', 'x@example.com', 0::numeric(10,2), NULL, NULL)) AS t(id, name, email, ltv, scores, seen) ORDER BY id";

#[test]
fn preview_maps_rows_and_reports_invalid_ones() {
    require_postgres!();
    let dir = project(&crate::source_postgres::url(), QUERY);
    let o = ebb(dir.path(), &["preview", "contacts", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{}", stdout(&o));
    assert_eq!(
        lines[0],
        serde_json::json!({"key": "1", "record": {"Name": "Ada Lovelace", "Email": "ada@example.com", "LTV__c": 1234.6,
            "Upsell__c": 25.0, "Seen__c": "2026-11-28", "LeadSource": "warehouse"}})
    );
    assert_eq!(lines[1]["invalid"]["code"], "transform_failed");
    assert_eq!(
        lines[1]["invalid"]["message"],
        "`Seen__c`: `date`: `not a date` is not a date or timestamp"
    );
    assert_eq!(lines[2]["invalid"]["code"], "null_key");
    // Decimals are exact on the wire: 1234.6, not 1234.5999999.
    assert!(stdout(&o).contains("\"LTV__c\":1234.6,"), "{}", stdout(&o));
}

#[test]
fn preview_table_and_limit() {
    require_postgres!();
    let dir = project(&crate::source_postgres::url(), QUERY);
    let o = ebb(dir.path(), &["preview", "contacts", "-n", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("id (key)  Name            Email              LTV__c  Upsell__c  Seen__c       LeadSource\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "1         \"Ada Lovelace\"  \"ada@example.com\"  1234.6  25.0       \"2026-11-28\"  \"warehouse\""
        ),
        "{out}"
    );
    assert!(out.ends_with("1 row shown, 0 invalid\n"), "{out}");
}

#[test]
fn preview_of_an_unreachable_warehouse_is_one_sentence_and_exit_1() {
    let dir = project("postgres://postgres@127.0.0.1:1/postgres", QUERY);
    let o = ebb(dir.path(), &["preview", "contacts"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: model `contacts`, connection `pg` (postgres): cannot connect: 127.0.0.1:1/postgres: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn preview_of_a_query_error_names_model_and_connection() {
    require_postgres!();
    let dir = project(
        &crate::source_postgres::url(),
        "SELECT id, name, email, ltv, scores, seen FROM ebb_no_such_table",
    );
    let o = ebb(dir.path(), &["preview", "contacts"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("model `contacts`, connection `pg` (postgres): the query failed: relation \"ebb_no_such_table\" does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn preview_with_bad_credentials_is_one_sentence_naming_model_and_connection() {
    require_postgres!();
    let url = crate::source_postgres::url().replacen("postgres@", "ebb_no_such_role@", 1);
    let dir = project(&url, QUERY);
    let o = ebb(dir.path(), &["preview", "contacts"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: model `contacts`, connection `pg` (postgres): authentication failed: "),
        "{err}"
    );
    assert!(err.contains("ebb_no_such_role"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[cfg(feature = "duckdb")]
#[test]
fn preview_of_a_missing_duckdb_file_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(crate::support::repo().join("ebb.yaml"), dir.path().join("ebb.yaml")).unwrap();
    crate::support::copy_tree(&crate::support::repo().join("models"), &dir.path().join("models"));
    let o = ebb(dir.path(), &["preview", "customer_segments"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with(
            "error: model `customer_segments`, connection `warehouse` (duckdb): cannot connect: the database file `"
        ),
        "{err}"
    );
    assert!(
        err.contains("warehouse.duckdb` does not exist (the demo warehouse is built by `ebb demo`)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn pii_fields_are_masked_in_previews_and_dry_runs_unless_asked() {
    require_postgres!();
    let dir = project(&crate::source_postgres::url(), QUERY);
    let model = dir.path().join("models/m.yaml");
    let text = std::fs::read_to_string(&model).unwrap().replace(
        "        destination: Email\n        transform: [trim, lower]\n",
        "        destination: Email\n        transform: [trim, lower]\n        pii: true\n",
    );
    std::fs::write(&model, text).unwrap();
    let o = ebb(dir.path(), &["preview", "contacts", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(first["record"]["Email"], "a***@example.com");
    assert_eq!(first["record"]["Name"], "Ada Lovelace", "only pii fields are masked");
    let o = ebb(dir.path(), &["preview", "contacts"]);
    assert!(
        stdout(&o).contains("a***@example.com") && !stdout(&o).contains("ada@example.com"),
        "{}",
        stdout(&o)
    );
    let o = ebb(dir.path(), &["preview", "contacts", "--format", "json", "--show-pii"]);
    assert!(stdout(&o).contains("\"Email\":\"ada@example.com\""), "{}", stdout(&o));
    let o = ebb(dir.path(), &["run", "contacts", "--dry-run", "--format", "json"]);
    let out = stdout(&o);
    assert!(
        out.contains("a***@example.com") && !out.contains("ada@example.com"),
        "{out}"
    );
}

//! The `hubspot` destination's other modes against the sandbox over real HTTP: `update`
//! (`batch/update` by the unique property: a key without a record is rejected, matched to
//! its row) and `insert` (`batch/create`, each row once); and 429 `SECONDLY` (the search
//! API's own limit) met by an inbound read, waited out and retried.

use crate::support::{run_json, stderr};
use chrono::{Duration as D, Utc};
use ebb::sandbox::{Sandbox, SandboxConfig};
use std::path::Path;

fn project(sandbox: &Sandbox, model: &str) -> tempfile::TempDir {
    crate::support::hubspot_project(&sandbox.url(), "m.yaml", model)
}

fn outbound(mode: &str) -> String {
    format!(
        "models:
  - name: m
    source:
      type: duckdb
      query: SELECT email, first_name FROM customers
    destination:
      type: hubspot
      object: contacts
      unique_identifier: email
      mode: {mode}
    mappings:
      - source: email
        destination: email
      - source: first_name
        destination: firstname
"
    )
}

fn sql(dir: &Path, sql: &str) {
    let c = duckdb::Connection::open(dir.join("warehouse.duckdb")).unwrap();
    c.execute_batch(sql).unwrap();
}

fn firstnames(sandbox: &Sandbox) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = sandbox
        .hubspot()
        .records("contacts")
        .into_iter()
        .filter(|r| r["archived"] != true)
        .map(|r| {
            (
                r["email"].as_str().unwrap_or_default().to_string(),
                r["firstname"].as_str().map(str::to_string),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn update_writes_only_records_that_exist_and_rejects_the_others_by_row() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let hub = sandbox.hubspot();
    for e in ["a@x.com", "b@x.com", "c@x.com"] {
        hub.write_at("contacts", None, &[("email", e), ("firstname", "old")], Utc::now())
            .unwrap();
    }
    let p = project(&sandbox, &outbound("update"));
    let dir = p.path();
    sql(
        dir,
        "CREATE TABLE customers AS SELECT * FROM (VALUES
           ('a@x.com', 'Ann'), ('b@x.com', 'Bob'), ('c@x.com', 'Cy'), ('d@x.com', 'Dee'), ('e@x.com', 'Eve'))
           t(email, first_name)",
    );
    let (code, s) = run_json(dir, "m", &[], &[("EBB_TEST_HUBSPOT_TOKEN", &token)]);
    assert_eq!((code, s["status"].as_str()), (3, Some("partial")), "{s:#}");
    assert_eq!(s["counts"]["confirmed"], 3, "{s:#}");
    assert_eq!(s["counts"]["rejected"], 2, "{s:#}");
    assert_eq!(s["counts"]["api_calls"], 1, "one batch/update: {s:#}");
    assert_eq!(
        firstnames(&sandbox),
        [
            ("a@x.com".to_string(), Some("Ann".to_string())),
            ("b@x.com".to_string(), Some("Bob".to_string())),
            ("c@x.com".to_string(), Some("Cy".to_string())),
        ],
        "no record created"
    );
    // Each rejection is its own row's, with HubSpot's category.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["errors", "m", "--format", "json"])
        .current_dir(dir)
        .output()
        .unwrap();
    let errors: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}{}", stderr(&o))))
        .collect();
    let mut keys: Vec<&str> = errors.iter().map(|e| e["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["d@x.com", "e@x.com"], "{errors:#?}");
    assert!(errors.iter().all(|e| e["code"] == "OBJECT_NOT_FOUND"), "{errors:#?}");
}

#[test]
fn insert_creates_each_row_once() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox, &outbound("insert"));
    let dir = p.path();
    sql(
        dir,
        "CREATE TABLE customers AS SELECT 'n' || range || '@x.com' AS email, 'N' || range AS first_name FROM range(150)",
    );
    let (code, s) = run_json(dir, "m", &[], &[("EBB_TEST_HUBSPOT_TOKEN", &token)]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["confirmed"], 150, "{s:#}");
    assert_eq!(s["counts"]["api_calls"], 2, "two batch/create calls: {s:#}");
    assert_eq!(firstnames(&sandbox).len(), 150);
    // One row more: only it is created.
    sql(dir, "INSERT INTO customers VALUES ('new@x.com', 'New')");
    let (code, s) = run_json(dir, "m", &[], &[("EBB_TEST_HUBSPOT_TOKEN", &token)]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["sent"], 1, "{s:#}");
    assert_eq!(s["counts"]["api_calls"], 1, "{s:#}");
    assert_eq!(firstnames(&sandbox).len(), 151);
}

#[test]
fn the_search_apis_secondly_limit_is_waited_out() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let model = "models:
  - name: m
    source:
      type: hubspot
      object: contacts
      fields: [id, email]
    destination:
      type: duckdb
      table: hs
      unique_identifier: id
    mappings:
      - source: id
        destination: hubspot_id
      - source: email
        destination: email
";
    let p = project(&sandbox, model);
    let dir = p.path();
    let env = [("EBB_TEST_HUBSPOT_TOKEN", token.as_str())];
    let (code, s) = run_json(dir, "m", &[], &env);
    assert_eq!(code, 0, "{s:#}");
    // 1,000 records in the next window: five searches, at most one a second allowed.
    let hub = sandbox.hubspot();
    let at = Utc::now() - D::seconds(30);
    for i in 0..1_000 {
        let email = format!("s{i}@x.com");
        hub.write_at("contacts", None, &[("email", email.as_str())], at)
            .unwrap();
    }
    hub.set_search_per_second(1);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "m", "--format", "json"])
        .current_dir(dir)
        .env("EBB_TEST_HUBSPOT_TOKEN", &token)
        .env("EBB_RETRY_BASE_MS", "5")
        .output()
        .unwrap();
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &out["runs"][0];
    assert_eq!(o.status.code(), Some(0), "{s:#}{}", stderr(&o));
    assert_eq!(s["counts"]["read"], 1_000, "{s:#}");
    // Refused searches were sent again: more calls than the properties, five searches and
    // the archived list.
    assert!(s["counts"]["api_calls"].as_u64().unwrap() > 7, "{s:#}");
    assert!(
        stderr(&o).contains("429") && stderr(&o).contains("secondly"),
        "{}",
        stderr(&o)
    );
    let c = duckdb::Connection::open(dir.join("warehouse.duckdb")).unwrap();
    let n: i64 = c.query_row("SELECT count(*) FROM hs", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1_000);
}

/// `validate --connect`: a column whose values are not all options of an enumeration, and a
/// boolean mapped to a date property, are reported where they are mapped.
#[test]
fn validate_connect_checks_types_and_the_values_a_column_gives_an_enumeration() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let model = "models:
  - name: m
    source:
      type: duckdb
      query: SELECT email, segment, active FROM customers
    destination:
      type: hubspot
      object: contacts
      unique_identifier: email
    mappings:
      - source: email
        destination: email
      - source: segment
        destination: customer_segment
      - source: active
        destination: last_activity_date
";
    let p = project(&sandbox, model);
    let dir = p.path();
    sql(
        dir,
        "CREATE TABLE customers AS SELECT * FROM (VALUES
           ('a@x.com', 'SMB', true), ('b@x.com', 'Enterprise', false), ('c@x.com', 'Bogus', true))
           t(email, segment, active)",
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["validate", "--connect"])
        .current_dir(dir)
        .env("EBB_TEST_HUBSPOT_TOKEN", &token)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the query returns values that are not options of `contacts.customer_segment`: `Bogus`"),
        "{text}"
    );
    assert!(
        text.contains("models/m.yaml:13:17"),
        "the segment mapping's line: {text}"
    );
    assert!(
        text.contains("models/m.yaml:15:17"),
        "the boolean mapping's line: {text}"
    );
    assert!(
        text.contains("`contacts.last_activity_date` is a date property, but this mapping gives"),
        "{text}"
    );
    assert_eq!(text.matches("E916").count(), 2, "{text}");
    // Fixed in the query: no error.
    sql(dir, "UPDATE customers SET segment = 'SMB' WHERE segment = 'Bogus'");
    std::fs::write(
        dir.join("models/m.yaml"),
        model.replace("destination: last_activity_date", "destination: firstname"),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["validate", "--connect"])
        .current_dir(dir)
        .env("EBB_TEST_HUBSPOT_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

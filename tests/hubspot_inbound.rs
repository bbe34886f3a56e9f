//! HubSpot as an inbound source (`src/source/hubspot.rs`) against the sandbox's HubSpot
//! API over real HTTP, into a DuckDB table through `ebb run`: the first run lists every
//! record, the next searches only its window, archived records are soft-deleted, a record
//! stamped late inside the lookback is read, a window of more than 10,000 records that all
//! share one stamp is read whole by keyset paging, the daily limit mid-pull leaves the
//! watermark for the next run, a property the object lacks is a clear error, and answers
//! that break the protocol (cursors in a circle, no `results`, a value not of its type) end
//! the read with one.

use crate::support::{run_json, stderr, stdout};
use chrono::{Duration as D, Utc};
use ebb::sandbox::{Sandbox, SandboxConfig};
use std::path::Path;

const MODEL: &str = "contacts_from_hs";

/// The project; `first` is the property read for the first name (in `fields` and its
/// mapping).
fn project(sandbox: &Sandbox, first: &str) -> tempfile::TempDir {
    crate::support::hubspot_project(&sandbox.url(), "contacts.yaml", &model(first))
}

/// The model, reading property `first` for the first name.
fn model(first: &str) -> String {
    format!(
        "models:
  - name: {MODEL}
    source:
      type: hubspot
      object: contacts
      fields: [id, email, {first}, ltv, last_activity_date, hs_lastmodifieddate]
    destination:
      type: duckdb
      table: raw.hs_contacts
      unique_identifier: id
      mode: upsert
    mappings:
      - source: id
        destination: hs_id
      - source: email
        destination: email
        transform: lower
      - source: {first}
        destination: first_name
        transform: initcap
      - source: ltv
        destination: ltv
      - source: last_activity_date
        destination: last_activity
      - source: hs_lastmodifieddate
        destination: modified_at
"
    )
}

const FIELDS: &str = "firstname";

fn run(dir: &Path, token: &str, args: &[&str]) -> (i32, serde_json::Value) {
    run_json(dir, MODEL, args, &[("EBB_TEST_HUBSPOT_TOKEN", token)])
}

/// `(hs_id, email, first_name, ltv, last_activity, is_deleted)` by id.
type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<bool>,
);

fn rows(dir: &Path) -> Vec<Row> {
    let c = duckdb::Connection::open(dir.join("warehouse.duckdb")).unwrap();
    let mut s = c
        .prepare(
            "SELECT hs_id, email, first_name, ltv, CAST(last_activity AS VARCHAR), is_deleted
             FROM raw.hs_contacts ORDER BY CAST(hs_id AS BIGINT)",
        )
        .unwrap();
    s.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn seed(sandbox: &Sandbox, n: usize, at: chrono::DateTime<Utc>) -> Vec<u64> {
    let hub = sandbox.hubspot();
    (0..n)
        .map(|i| {
            let email = format!("C{i}@Example.com");
            let ltv = format!("{}.5", i * 10);
            hub.write_at(
                "contacts",
                None,
                &[
                    ("email", email.as_str()),
                    ("firstname", "ada"),
                    ("ltv", ltv.as_str()),
                    ("last_activity_date", "2024-01-31"),
                ],
                at,
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn the_first_run_lists_everything_and_the_next_searches_only_its_window() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let ids = seed(&sandbox, 250, Utc::now() - D::hours(2));
    sandbox
        .hubspot()
        .archive_at("contacts", ids[7], Utc::now() - D::hours(1))
        .unwrap();
    let p = project(&sandbox, FIELDS);
    let dir = p.path();

    let before = sandbox.hubspot().calls();
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    // The properties, 3 list pages of live records, 1 of archived ones.
    assert_eq!(s["counts"]["api_calls"], 5, "{s:#}");
    assert_eq!(sandbox.hubspot().calls() - before, 5);
    assert_eq!(s["counts"]["read"], 250, "{s:#}");
    let all = rows(dir);
    assert_eq!(all.len(), 250);
    let first = &all[0];
    assert_eq!(first.0, ids[0].to_string());
    assert_eq!(first.1.as_deref(), Some("c0@example.com"), "lower applied");
    assert_eq!(first.2.as_deref(), Some("Ada"), "initcap applied");
    assert_eq!(first.3, Some(0.5));
    assert_eq!(first.4.as_deref(), Some("2024-01-31"), "a date column");
    let archived: Vec<&Row> = all.iter().filter(|r| r.5 == Some(true)).collect();
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].0, ids[7].to_string());

    // Nothing changed: one search, one archived list, nothing read.
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["read"], 0, "{s:#}");
    assert_eq!(s["counts"]["api_calls"], 3, "{s:#}");

    // Two edits now, one stamped late (a minute before the last run's window closed, as a
    // slow commit shows up), and an archive: exactly those, in one search.
    let hub = sandbox.hubspot();
    hub.write_at("contacts", Some(ids[3]), &[("firstname", "GRACE")], Utc::now())
        .unwrap();
    hub.write_at("contacts", Some(ids[4]), &[("ltv", "99")], Utc::now() - D::seconds(70))
        .unwrap();
    hub.archive_at("contacts", ids[5], Utc::now()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(6_500)); // past the settle
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["read"], 3, "{s:#}");
    let all = rows(dir);
    assert_eq!(all.len(), 250);
    let by_id = |id: u64| all.iter().find(|r| r.0 == id.to_string()).unwrap();
    assert_eq!(by_id(ids[3]).2.as_deref(), Some("Grace"));
    assert_eq!(by_id(ids[4]).3, Some(99.0));
    assert_eq!(by_id(ids[5]).5, Some(true));
    assert_eq!(by_id(ids[6]).5, Some(false));
}

#[test]
fn a_window_past_10000_records_with_one_stamp_is_read_whole_by_keyset_paging() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox, FIELDS);
    let dir = p.path();
    seed(&sandbox, 3, Utc::now() - D::hours(1));
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    // 10,250 records written in one second (an import), all inside the next window.
    let n = 10_250;
    let hub = sandbox.hubspot();
    let at = Utc::now() - D::seconds(30);
    for i in 0..n {
        let email = format!("bulk{i}@example.com");
        hub.write_at("contacts", None, &[("email", email.as_str())], at)
            .unwrap();
    }
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["read"], n, "{s:#}");
    // The properties, ceil(10,250 / 200) = 52 searches (the last one short), the archived list.
    assert_eq!(s["counts"]["api_calls"], 1 + 52 + 1, "{s:#}");
    let all = rows(dir);
    assert_eq!(all.len(), n + 3);
    let mut ids: Vec<&String> = all.iter().map(|r| &r.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), n + 3, "no record twice");
}

#[test]
fn the_daily_limit_mid_pull_keeps_the_watermark_and_the_next_run_converges() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    seed(&sandbox, 350, Utc::now() - D::hours(1));
    let p = project(&sandbox, FIELDS);
    let dir = p.path();
    // Three calls left today: the properties and two list pages of four.
    sandbox.hubspot().set_daily(0, 3);
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 1, "{s:#}");
    assert!(s["error"].as_str().unwrap_or("").contains("daily"), "{s:#}");
    assert!(rows(dir).len() <= 200, "at most the pages read are written");
    // A new day: the whole read again (no watermark was set), nothing twice.
    sandbox.hubspot().set_daily(0, 1_000);
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["read"], 350, "{s:#}");
    assert_eq!(rows(dir).len(), 350);
}

#[test]
fn a_property_the_object_lacks_is_a_clear_error_before_anything_is_written() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    seed(&sandbox, 5, Utc::now() - D::hours(1));
    let p = project(&sandbox, "firstnme");
    let dir = p.path();
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 1, "{s:#}");
    let error = s["error"].as_str().unwrap_or("");
    assert!(error.contains(MODEL), "{s:#}");
    assert!(error.contains("has no property `firstnme`"), "{s:#}");
    assert!(error.contains("did you mean `firstname`"), "{s:#}");
    assert_eq!(rows_or_none(dir), None, "no table is made");

    // `validate --connect` says the same, with its code and where.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["validate", "--connect"])
        .current_dir(dir)
        .env("EBB_TEST_HUBSPOT_TOKEN", &token)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("E916"), "{text}");
    assert!(text.contains("firstnme"), "{text}");

    // A wrong token: 401, said, nothing written.
    let p = project(&sandbox, FIELDS);
    let (code, s) = run(p.path(), "pat-wrong", &[]);
    assert_eq!(code, 1, "{s:#}");
    assert!(s["error"].as_str().unwrap_or("").contains("401"), "{s:#}");
    assert!(!s["error"].as_str().unwrap_or("").contains("pat-wrong"), "{s:#}");
}

/// The table's rows, or `None` when it does not exist.
fn rows_or_none(dir: &Path) -> Option<usize> {
    let c = duckdb::Connection::open(dir.join("warehouse.duckdb")).ok()?;
    c.query_row("SELECT count(*) FROM raw.hs_contacts", [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n as usize)
}

/// The same reads into the real PostgreSQL (table and state store in a schema of the
/// test's own): the first run lists, an edit and an archive arrive by the window.
#[test]
fn into_postgres_the_first_run_lists_and_the_next_reads_the_window() {
    require_postgres!();
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let ids = seed(&sandbox, 120, Utc::now() - D::hours(2));
    let p = project(&sandbox, FIELDS);
    let dir = p.path();
    let schema = format!("hs_in_{}", std::process::id());
    let url = crate::source_postgres::url();
    let yaml = std::fs::read_to_string(dir.join("ebb.yaml"))
        .unwrap()
        .replace(
            "  warehouse:\n    type: duckdb\n    path: warehouse.duckdb\n",
            &format!("  warehouse:\n    type: postgres\n    url: {url}\n"),
        )
        .replace(
            "version: 1\n",
            &format!("version: 1\nstate:\n  url: {url}?ebb_schema={schema}_state\n"),
        );
    std::fs::write(dir.join("ebb.yaml"), yaml).unwrap();
    let model = std::fs::read_to_string(dir.join("models/contacts.yaml"))
        .unwrap()
        .replace("type: duckdb", "type: postgres")
        .replace("table: raw.hs_contacts", &format!("table: {schema}.hs_contacts"));
    std::fs::write(dir.join("models/contacts.yaml"), model).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = crate::support::pg_client(&rt);
    let rows = || -> Vec<(String, Option<String>, Option<bool>)> {
        rt.block_on(client.query(
            &format!("SELECT hs_id, first_name, is_deleted FROM {schema}.hs_contacts ORDER BY hs_id::bigint"),
            &[],
        ))
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };

    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["read"], 120, "{s:#}");
    assert_eq!(rows().len(), 120);

    let hub = sandbox.hubspot();
    hub.write_at(
        "contacts",
        Some(ids[0]),
        &[("firstname", "LIN")],
        Utc::now() - D::seconds(20),
    )
    .unwrap();
    hub.archive_at("contacts", ids[1], Utc::now() - D::seconds(20)).unwrap();
    let (code, s) = run(dir, &token, &[]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["read"], 2, "{s:#}");
    let all = rows();
    assert_eq!(all.len(), 120);
    assert_eq!(all[0], (ids[0].to_string(), Some("Lin".to_string()), Some(false)));
    assert_eq!(all[1].2, Some(true));
    rt.block_on(client.batch_execute(&format!(
        "DROP SCHEMA {schema} CASCADE; DROP SCHEMA IF EXISTS {schema}_state CASCADE"
    )))
    .unwrap();
}

/// A list answer for a request's `after`.
type Page = fn(Option<&str>) -> serde_json::Value;

/// A server that speaks HubSpot's shape but not its protocol, answering the list endpoint
/// with `page`: given the request's `after`, the answer.
fn hostile(page: Page) -> String {
    use axum::extract::Query;
    use axum::routing::get;
    use serde_json::json;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/crm/v3/properties/{object}",
                    get(|| async {
                        axum::Json(json!({"results": [
                            {"name": "email", "type": "string"},
                            {"name": "firstname", "type": "string"},
                            {"name": "ltv", "type": "number"},
                            {"name": "last_activity_date", "type": "date"},
                            {"name": "hs_lastmodifieddate", "type": "datetime"},
                            {"name": "hs_object_id", "type": "number"},
                        ]}))
                    }),
                )
                .route(
                    "/crm/v3/objects/{object}",
                    get(
                        move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                            axum::Json(page(q.get("after").map(String::as_str)))
                        },
                    ),
                );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// Answers that break the protocol end the read with a clear error naming the model, and
/// bounded: cursors that go round in a circle, a page without `results`, a value that is
/// not of its property's type. Nothing is written.
#[test]
fn answers_that_break_the_protocol_end_the_read_with_a_clear_error() {
    use serde_json::json;
    let cases: [(Page, &str); 3] = [
        (
            |after| {
                // A → B → A → …
                let next = if after == Some("A") { "B" } else { "A" };
                json!({"results": [{"id": "1", "archived": false, "properties": {"email": "a@x.com"}}],
                       "paging": {"next": {"after": next}}})
            },
            "answered the paging cursor `A` a second time",
        ),
        (|_| json!({"status": "COMPLETE"}), "has no `results` list"),
        (
            |_| {
                json!({"results": [{"id": "7", "archived": false, "properties": {
                    "email": "a@x.com", "ltv": "lots", "hs_lastmodifieddate": "2024-01-31T09:30:00Z"}}]})
            },
            "field `ltv`: `lots` is not a number",
        ),
    ];
    for (page, says) in cases {
        let url = hostile(page);
        let p = crate::support::hubspot_project(&url, "contacts.yaml", &model(FIELDS));
        let (code, s) = run(p.path(), "pat-anything", &[]);
        assert_eq!(code, 1, "{s:#}");
        let error = s["error"].as_str().unwrap_or("");
        assert!(error.contains(MODEL) && error.contains(says), "{says}: {s:#}");
        assert_eq!(rows_or_none(p.path()).unwrap_or(0), 0, "nothing written: {s:#}");
    }
}

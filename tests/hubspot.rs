//! The `hubspot` destination against the sandbox's HubSpot API over real HTTP: batch
//! upserts of 100 (calls exact), a 207 matched to its row, two keys that differ only in
//! case never in one call, nothing sent when nothing changed, archived when removed, the
//! daily limit stopping a run that the next one resumes, a run paced by the rate-limit
//! headers without refusals, and dates sent as HubSpot keeps them.

use crate::support::{run_json, stderr, stdout};
use ebb::sandbox::{Sandbox, SandboxConfig};
use std::path::Path;

fn project(sandbox: &Sandbox) -> tempfile::TempDir {
    let dir = crate::support::hubspot_project(
        &sandbox.url(),
        "contacts.yaml",
        "models:
  - name: contacts_hs
    source:
      type: duckdb
      query: SELECT email, first_name, ltv FROM customers
    destination:
      type: hubspot
      object: contacts
      unique_identifier: email
      on_removed: delete
    mappings:
      - source: email
        destination: email
      - source: first_name
        destination: firstname
      - source: ltv
        destination: ltv
",
    );
    sql(
        dir.path(),
        "CREATE TABLE customers AS
           SELECT 'c' || range || '@x.com' AS email, 'Name ' || range AS first_name, (range * 10)::VARCHAR AS ltv
           FROM range(250)",
    );
    dir
}

fn sql(dir: &Path, sql: &str) {
    let c = duckdb::Connection::open(dir.join("warehouse.duckdb")).unwrap();
    c.execute_batch(sql).unwrap();
}

fn run(dir: &Path, token: &str) -> (i32, serde_json::Value) {
    run_json(dir, "contacts_hs", &[], &[("EBB_TEST_HUBSPOT_TOKEN", token)])
}

fn live(sandbox: &Sandbox) -> Vec<serde_json::Map<String, serde_json::Value>> {
    sandbox
        .hubspot()
        .records("contacts")
        .into_iter()
        .filter(|r| r["archived"] != true)
        .collect()
}

#[test]
fn contacts_are_upserted_in_batches_of_100_and_rejections_are_matched_to_their_rows() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox);
    let dir = p.path();

    // 250 contacts: three calls.
    let (code, s) = run(dir, &token);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(
        (s["counts"]["confirmed"].as_i64(), s["counts"]["api_calls"].as_i64()),
        (Some(250), Some(3)),
        "{s:#}"
    );
    let records = live(&sandbox);
    assert_eq!(records.len(), 250);
    let c7 = records.iter().find(|r| r["email"] == "c7@x.com").unwrap();
    assert_eq!(
        (c7["firstname"].as_str(), c7["ltv"].as_str()),
        (Some("Name 7"), Some("70")),
        "{c7:?}"
    );

    // Nothing changed: nothing sent.
    let (code, s) = run(dir, &token);
    assert_eq!((code, s["counts"]["api_calls"].as_i64()), (0, Some(0)), "{s:#}");

    // One value HubSpot refuses (ltv is a number property), and two keys differing only in
    // case: a 207 matched to its row; the second address in a call of its own.
    sql(
        dir,
        "UPDATE customers SET ltv = 'lots' WHERE email = 'c3@x.com';
         UPDATE customers SET first_name = 'Changed' WHERE email = 'c4@x.com';
         INSERT INTO customers VALUES ('New@x.com', 'Upper', '1'), ('new@x.com', 'Lower', '2');",
    );
    let (code, s) = run(dir, &token);
    assert_eq!(code, 3, "{s:#}");
    assert_eq!(s["counts"]["rejected"], 1, "{s:#}");
    assert_eq!(s["counts"]["confirmed"], 3, "{s:#}");
    assert_eq!(
        s["counts"]["api_calls"], 2,
        "the repeated address went in a call of its own: {s:#}"
    );
    let o = crate::support::ebb(dir, &["errors", "contacts_hs", "--format", "json"]);
    let errors = stdout(&o);
    assert!(
        errors.contains("c3@x.com") && errors.contains("VALIDATION_ERROR"),
        "{errors}"
    );
    assert!(!errors.contains("c4@x.com"), "{errors}");
    let records = live(&sandbox);
    let c4 = records.iter().find(|r| r["email"] == "c4@x.com").unwrap();
    assert_eq!(c4["firstname"], "Changed");
    for e in ["New@x.com", "new@x.com"] {
        assert!(
            records
                .iter()
                .any(|r| r["email"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(e))),
            "{e}"
        );
    }

    // Removed rows are archived (by the record ids the upserts returned).
    sql(dir, "DELETE FROM customers WHERE email IN ('c0@x.com', 'c1@x.com'); UPDATE customers SET ltv = '30' WHERE email = 'c3@x.com'");
    let (code, s) = run(dir, &token);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["removed"], 2, "{s:#}");
    let records = live(&sandbox);
    assert!(records
        .iter()
        .all(|r| r["email"] != "c0@x.com" && r["email"] != "c1@x.com"));
    assert!(records.iter().any(|r| r["email"] == "c3@x.com" && r["ltv"] == "30"));
}

#[test]
fn the_daily_limit_stops_a_run_and_the_next_one_resumes() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox);
    let dir = p.path();
    // Two calls left today: two of the three batches (in flight together, either two),
    // then the limit.
    sandbox.hubspot().set_daily(0, 2);
    let (code, s) = run(dir, &token);
    assert_eq!(code, 1, "{s:#}");
    let confirmed = s["counts"]["confirmed"].as_u64().unwrap();
    assert!(confirmed == 150 || confirmed == 200, "{s:#}");
    assert!(s["error"].as_str().unwrap_or("").contains("daily"), "{s:#}");
    assert_eq!(live(&sandbox).len() as u64, confirmed);
    // A new day: the rest, and only the rest, in one call.
    sandbox.hubspot().set_daily(0, 1000);
    let (code, s) = run(dir, &token);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["sent"].as_u64(), Some(250 - confirmed), "{s:#}");
    assert_eq!(s["counts"]["api_calls"], 1, "{s:#}");
    assert_eq!(live(&sandbox).len(), 250);
    // A wrong token: the run stops at once, saying so.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "contacts_hs", "--full-resync"])
        .current_dir(dir)
        .env("EBB_TEST_HUBSPOT_TOKEN", "pat-wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        format!("{}{}", stdout(&o), stderr(&o)).contains("401"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn validate_connect_checks_the_objects_properties() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox);
    let dir = p.path();
    let validate = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["validate", "--connect", "--format", "json"])
            .current_dir(dir)
            .env("EBB_TEST_HUBSPOT_TOKEN", &token)
            .output()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(stdout(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
        v["diagnostics"]
            .as_array()
            .expect("a diagnostics list")
            .iter()
            .filter(|d| d["severity"] == "error")
            .map(|d| {
                let text = |k: &str| d[k].as_str().unwrap_or("").to_string();
                (text("code"), d["line"].as_u64().unwrap_or(0), text("message"))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(validate(), vec![], "the model fits the object");
    let model = dir.join("models/contacts.yaml");
    let text = std::fs::read_to_string(&model).unwrap();
    // A property that does not exist (with a suggestion), a read-only one, a key property
    // whose values are not unique, a constant that is not an enumeration's option.
    std::fs::write(
        &model,
        text.replace("destination: firstname", "destination: first_name")
            .replace("      unique_identifier: email\n", "      unique_identifier: email\n      external_id_field: lastname\n")
            + "      - source: first_name\n        destination: lastname\n      - constant: nope\n        destination: lifecyclestage\n      - source: ltv\n        destination: hs_object_id\n",
    )
    .unwrap();
    let found = validate();
    let codes: Vec<&str> = found.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(codes, ["E916"; 4], "{found:#?}");
    let messages: Vec<&str> = found.iter().map(|(_, _, m)| m.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("no property `first_name`")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`contacts.lastname` does not hold unique values")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`nope` is not an option of `contacts.lifecyclestage`")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`contacts.hs_object_id` is read-only")),
        "{messages:?}"
    );
    // An object HubSpot does not have.
    std::fs::write(&model, text.replace("object: contacts", "object: contactz")).unwrap();
    let found = validate();
    assert_eq!(
        found.iter().map(|(c, _, _)| c.as_str()).collect::<Vec<_>>(),
        ["E915"],
        "{found:#?}"
    );
}

/// Spends `n` requests of the sandbox's window from outside ebb (another integration on
/// the account).
fn spend(sandbox: &Sandbox, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = ebb::http::client().unwrap();
        for _ in 0..n {
            let r = http
                .get(format!("{}/crm/v3/properties/contacts", sandbox.url()))
                .bearer_auth(sandbox.hubspot().token())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
}

/// Someone else spent the ten-second window: HubSpot's 429 `TEN_SECONDLY_ROLLING` is
/// waited out (its `Retry-After`) and retried; every row lands, and the calls count the
/// retry.
#[test]
fn the_ten_second_limit_is_waited_out() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox);
    sandbox.hubspot().set_ten_second_limit(3);
    spend(&sandbox, 3);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "contacts_hs", "--format", "json"])
        .current_dir(p.path())
        .env("EBB_TEST_HUBSPOT_TOKEN", &token)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(live(&sandbox).len(), 250);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let calls = v["runs"][0]["counts"]["api_calls"].as_u64().unwrap();
    assert!(calls >= 4, "three batches and at least one refused call: {v:#}");
    assert!(sandbox.hubspot().refused() >= 1);
    // The refusal is logged as a retry, with HubSpot's reason.
    assert!(
        stderr(&o).contains("a request failed and is sent again") && stderr(&o).contains("429"),
        "{}",
        stderr(&o)
    );
}

/// At a limit of 10 requests per 10 seconds, 2,500 contacts (25 calls: three windows) are
/// paced by the `X-HubSpot-RateLimit-*` headers: not one request refused, and the run
/// takes about what the limit allows (20 seconds: 10 at once, 10 more 10 s later, then 5),
/// not a storm of retries.
#[test]
fn a_run_is_paced_by_the_rate_limit_headers_without_refusals() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox);
    sql(
        p.path(),
        "INSERT INTO customers SELECT 'm' || range || '@x.com', 'More ' || range, '1' FROM range(2250)",
    );
    sandbox.hubspot().set_ten_second_limit(10);
    let started = std::time::Instant::now();
    let (code, s) = run(p.path(), &token);
    let took = started.elapsed();
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(
        (s["counts"]["confirmed"].as_i64(), s["counts"]["api_calls"].as_i64()),
        (Some(2500), Some(25)),
        "{s:#}"
    );
    assert_eq!(sandbox.hubspot().refused(), 0, "requests were refused: {s:#}");
    assert_eq!(live(&sandbox).len(), 2500);
    // Not a timing test: the limit cannot be beaten (≥ 20 s), and a generous bound catches
    // a run that waits whole windows it need not (or backs off after refusals).
    assert!(took >= std::time::Duration::from_secs(20), "{took:?}");
    assert!(took < std::time::Duration::from_secs(45), "{took:?}");
}

/// Dates go as HubSpot keeps them: a `date` property gets the midnight UTC of its day in
/// epoch milliseconds, a `datetime` its epoch milliseconds; a time of day bound for a
/// `date` property rejects its row, saying why. The property types cost one call, made
/// because values needed them.
#[test]
fn dates_are_sent_as_hubspot_keeps_them_and_a_time_of_day_rejects_its_row() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let token = sandbox.hubspot().token();
    let p = project(&sandbox);
    let dir = p.path();
    std::fs::write(
        dir.join("models/dated.yaml"),
        "models:
  - name: dated_hs
    source:
      type: duckdb
      query: SELECT email, seen_on, seen_at, updated_at FROM dated
    destination:
      type: hubspot
      object: contacts
      unique_identifier: email
    mappings:
      - source: email
        destination: email
      - source: seen_on
        destination: last_activity_date
      - source: seen_at
        destination: company
      - source: updated_at
        destination: last_update
",
    )
    .unwrap();
    sql(
        dir,
        "CREATE TABLE dated AS
           SELECT 'd' || range || '@x.com' AS email, DATE '2024-01-01' + range::INT AS seen_on,
                  TIMESTAMP '2024-01-01 00:00:00' + to_days(range::INT) AS seen_at,
                  TIMESTAMP '2024-01-31 09:30:15' + to_seconds(range) AS updated_at
           FROM range(150);
         -- One row's day given as a timestamp with a time of day.
         ALTER TABLE dated ALTER seen_on TYPE VARCHAR;
         UPDATE dated SET seen_on = '2024-02-03T09:30:00Z' WHERE email = 'd7@x.com';",
    );
    let (code, s) = run_json(dir, "dated_hs", &[], &[("EBB_TEST_HUBSPOT_TOKEN", &token)]);
    assert_eq!(code, 3, "a row was rejected: {s:#}");
    assert_eq!(
        (
            s["counts"]["confirmed"].as_i64(),
            s["counts"]["rejected"].as_i64(),
            s["counts"]["api_calls"].as_i64()
        ),
        (Some(149), Some(1), Some(3)),
        "two upserts and the properties: {s:#}"
    );
    let records = live(&sandbox);
    let d2 = records.iter().find(|r| r["email"] == "d2@x.com").unwrap();
    assert_eq!(
        (
            d2["last_activity_date"].as_str(),
            d2["last_update"].as_str(),
            d2["company"].as_str()
        ),
        (
            Some("2024-01-03"),
            Some("2024-01-31T09:30:17.000Z"),
            Some("2024-01-03T00:00:00")
        ),
        "a text property keeps the warehouse's text: {d2:?}"
    );
    assert!(records.iter().all(|r| r["email"] != "d7@x.com"));
    let o = crate::support::ebb(dir, &["errors", "dated_hs", "--format", "json"]);
    let errors = stdout(&o);
    assert!(
        errors.contains("d7@x.com")
            && errors.contains("INVALID_DATE")
            && errors.contains("`last_activity_date` is a HubSpot date property"),
        "{errors}"
    );
    // Fixed in the warehouse: the row goes, its date as a day.
    sql(dir, "UPDATE dated SET seen_on = '2024-02-03' WHERE email = 'd7@x.com'");
    let (code, s) = run_json(dir, "dated_hs", &[], &[("EBB_TEST_HUBSPOT_TOKEN", &token)]);
    assert_eq!((code, s["counts"]["confirmed"].as_i64()), (0, Some(1)), "{s:#}");
    let records = live(&sandbox);
    let d7 = records.iter().find(|r| r["email"] == "d7@x.com").unwrap();
    assert_eq!(d7["last_activity_date"], "2024-02-03");
}

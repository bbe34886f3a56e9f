//! Two-way fields (docs/conflicts.md): a DuckDB warehouse, the `ebb` binary and the sandbox
//! over real HTTP. Both sides change the same field (each policy), only one side changes,
//! the CRM changes a field ebb does not own, ties, resolving each way, `crm_state` against
//! the API, and a kill -9 between the decision and the write.

use crate::support::{ebb, run_json, stderr, stdout};
use chrono::{Duration as D, Utc};
use ebb::sandbox::{Faults, Sandbox, SandboxConfig};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const OUT: &str = "customers_out";
const IN: &str = "contacts_in";

struct TwoWay {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
    rt: tokio::runtime::Runtime,
}

/// A warehouse time `minutes` from now (UTC), as DuckDB `TIMESTAMP` text.
fn at(minutes: i64) -> String {
    (Utc::now() + D::minutes(minutes))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

impl TwoWay {
    /// Customers C1..C4 in the warehouse (modified two hours ago), the outbound model with
    /// `policy`, and the inbound model of the same Contacts; `crm_state`: the outbound model
    /// reads the CRM's values from the inbound model's table.
    fn new(policy: &str, crm_state: bool) -> TwoWay {
        let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ebb.yaml"),
            format!(
                "version: 1
models_dir: models
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  salesforce:
    type: salesforce
    instance_url: {}
    api_version: \"62.0\"
    auth:
      flow: client_credentials
      client_id: ebb-sandbox
      client_secret: ${{SF_SECRET_CONFLICT_TEST:-ebb-sandbox}}
",
                sandbox.url()
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let state = if crm_state {
            format!("\n      crm_state: {IN}")
        } else {
            String::new()
        };
        std::fs::write(
            dir.path().join("models/out.yaml"),
            format!(
                "models:
  - name: {OUT}
    source:
      type: duckdb
      query: SELECT customer_id, last_name, email, phone, modified_date FROM dp.customers
    destination:
      type: salesforce
      object: Contact
      mode: upsert
      unique_identifier: customer_id
      external_id_field: Warehouse_Id__c
    mappings:
      - source: last_name
        destination: LastName
      - source: email
        destination: Email
      - source: phone
        destination: Phone
    conflicts:
      policy: {policy}
      fields: [Email, Phone]
      source_modified: modified_date{state}
"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("models/in.yaml"),
            format!(
                "models:
  - name: {IN}
    source:
      type: salesforce
      object: Contact
      fields: [Id, Warehouse_Id__c, Email, Phone, LastModifiedDate]
      incremental: off
    destination:
      type: duckdb
      table: raw.crm_contacts
      mode: upsert
      unique_identifier: Id
    mappings:
      - source: Id
        destination: crm_id
      - source: Warehouse_Id__c
        destination: warehouse_id
      - source: Email
        destination: email
      - source: Phone
        destination: phone
      - source: LastModifiedDate
        destination: modified
"
            ),
        )
        .unwrap();
        let t = TwoWay {
            dir,
            sandbox,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let old = at(-120);
        t.sql(&format!(
            "CREATE SCHEMA dp;
             CREATE TABLE dp.customers (customer_id VARCHAR, last_name VARCHAR, email VARCHAR, phone VARCHAR,
                                        modified_date TIMESTAMP);
             INSERT INTO dp.customers VALUES
               ('C1', 'One', 'one@x.com', '+1 555 0001', '{old}'),
               ('C2', 'Two', 'two@x.com', '+1 555 0002', '{old}'),
               ('C3', 'Three', 'three@x.com', '+1 555 0003', '{old}'),
               ('C4', 'Four', 'four@x.com', '+1 555 0004', '{old}');"
        ));
        t
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn sql(&self, sql: &str) {
        let c = duckdb::Connection::open(self.path().join("warehouse.duckdb")).unwrap();
        c.execute_batch(sql).unwrap();
    }

    /// `ebb run MODEL`: succeeded, its summary.
    fn run(&self, model: &str) -> Value {
        let (code, summary) = run_json(self.path(), model, &[], &[]);
        assert_eq!(code, 0, "{summary:#}");
        summary
    }

    /// The first sync: every customer created in the CRM (with `crm_state`, the inbound
    /// model's table made first).
    fn first_sync(&self) {
        if std::fs::read_to_string(self.path().join("models/out.yaml"))
            .unwrap()
            .contains("crm_state")
        {
            self.run(IN);
        }
        let s = self.run(OUT);
        assert_eq!(s["counts"]["confirmed"], 4, "{s:#}");
    }

    /// The Contact of warehouse key `key`.
    fn contact(&self, key: &str) -> serde_json::Map<String, Value> {
        self.sandbox
            .records("Contact")
            .into_iter()
            .find(|r| r.get("Warehouse_Id__c") == Some(&json!(key)))
            .unwrap_or_else(|| panic!("no Contact {key}"))
    }

    /// A change made in the CRM (its `LastModifiedDate` becomes now).
    fn crm_edit(&self, key: &str, fields: Value) {
        let url = self.sandbox.url();
        let status = self.rt.block_on(async {
            let http = ebb::http::client().unwrap();
            let token = crate::support::sandbox_token(&http, &url).await;
            http.patch(format!(
                "{url}/services/data/v62.0/sobjects/Contact/Warehouse_Id__c/{key}"
            ))
            .bearer_auth(&token)
            .json(&fields)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        });
        assert!(status == 200 || status == 204, "PATCH {key}: {status}");
    }

    /// `ebb conflicts [MODEL] --status S --format json`.
    fn conflicts(&self, status: &str) -> Vec<Value> {
        let o = ebb(
            self.path(),
            &["conflicts", OUT, "--status", status, "--format", "json", "-n", "1000"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// (key, field, status, winner) of every conflict, sorted.
    fn decisions(&self) -> Vec<(String, String, String, Value)> {
        let mut d: Vec<_> = self
            .conflicts("all")
            .iter()
            .map(|c| {
                (
                    c["key"].as_str().unwrap().to_string(),
                    c["field"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                    c["winner"].clone(),
                )
            })
            .collect();
        d.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        d
    }

    fn resolve(&self, key: &str, take: &str) -> std::process::Output {
        ebb(self.path(), &["conflicts", "resolve", OUT, key, "--take", take])
    }
}

/// Both sides change C1's Email; C2 changes in the warehouse only; C3's Phone changes in
/// the CRM only while its LastName changes in the warehouse; C4's FirstName (not mapped)
/// changes in the CRM while its LastName (mapped, one-way) changes in the warehouse.
fn diverge(t: &TwoWay, warehouse_minutes: i64) {
    t.crm_edit("C1", json!({"Email": "one@crm.com"}));
    t.crm_edit("C3", json!({"Phone": "+1 555 9993"}));
    t.crm_edit("C4", json!({"FirstName": "Quatre"}));
    let when = at(warehouse_minutes);
    t.sql(&format!(
        "UPDATE dp.customers SET email = 'one@warehouse.com', modified_date = '{when}' WHERE customer_id = 'C1';
         UPDATE dp.customers SET email = 'two@warehouse.com', modified_date = '{when}' WHERE customer_id = 'C2';
         UPDATE dp.customers SET last_name = 'Trois', modified_date = '{when}' WHERE customer_id = 'C3';
         UPDATE dp.customers SET last_name = 'Quattro', modified_date = '{when}' WHERE customer_id = 'C4';"
    ));
}

/// What holds in every policy: the one-sided changes.
fn one_sided_changes_sync_normally(t: &TwoWay) {
    assert_eq!(t.contact("C2")["Email"], json!("two@warehouse.com"));
    let c3 = t.contact("C3");
    assert_eq!(c3["LastName"], json!("Trois"), "the warehouse's change is written");
    assert_eq!(c3["Phone"], json!("+1 555 9993"), "the CRM's change is not overwritten");
    let c4 = t.contact("C4");
    assert_eq!(
        c4["FirstName"],
        json!("Quatre"),
        "a field ebb does not own is left alone"
    );
    assert_eq!(c4["LastName"], json!("Quattro"));
    assert_eq!(c4["Email"], json!("four@x.com"));
    // Only C1's Email conflicted (and C2's Phone, where a test makes it).
    let d = t.decisions();
    assert!(
        d.iter()
            .all(|d| (d.0 == "C1" && d.1 == "Email") || (d.0 == "C2" && d.1 == "Phone")),
        "{d:?}"
    );
}

#[test]
fn manual_review_holds_the_row_changed_on_both_sides_until_a_person_decides() {
    let t = TwoWay::new("manual_review", false);
    t.first_sync();
    assert!(t.decisions().is_empty(), "records created by ebb conflict with nothing");
    diverge(&t, -60);
    // A dry run shows the rows as they would be sent, without the check's modification time.
    let (code, dry) = run_json(t.path(), OUT, &["--dry-run"], &[]);
    assert_eq!(code, 0, "{dry:#}");
    let shown = dry.to_string();
    assert!(
        shown.contains("two@warehouse.com") && !shown.contains("$ebb_modified"),
        "{dry:#}"
    );
    let s = t.run(OUT);
    one_sided_changes_sync_normally(&t);
    // C1 is held: the CRM keeps its value, the review queue has both values and times.
    assert_eq!(t.contact("C1")["Email"], json!("one@crm.com"));
    let open = t.conflicts("open");
    assert_eq!(open.len(), 1, "{open:#?}");
    let c = &open[0];
    assert_eq!(c["key"], "C1");
    assert_eq!(c["warehouse_value"], "one@warehouse.com");
    assert_eq!(c["crm_value"], "one@crm.com");
    assert_eq!(c["master_source"], "MANUAL_REVIEW");
    assert!(
        c["warehouse_modified"].is_string() && c["crm_modified"].is_string(),
        "{c:#}"
    );
    let notes = s["notes"].to_string();
    assert!(notes.contains("1 row held for review"), "{notes}");
    // Held again, not twice, by the next run.
    t.run(OUT);
    assert_eq!(t.conflicts("open").len(), 1);
    assert_eq!(t.conflicts("all").len(), 1);
    // `ebb status` says so.
    let o = ebb(t.path(), &["status", OUT, "--format", "json"]);
    let status: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(status["conflicts_open"], 1, "{status:#}");
    assert_eq!(status["health"], "conflicts to review");

    // Resolved for the warehouse: the next run writes its value.
    let o = t.resolve("C1", "warehouse");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("takes the warehouse value one@warehouse.com"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        t.contact("C1")["Email"],
        json!("one@crm.com"),
        "nothing is written before the run"
    );
    t.run(OUT);
    assert_eq!(t.contact("C1")["Email"], json!("one@warehouse.com"));
    assert!(t.conflicts("open").is_empty());
    let resolved = t.conflicts("resolved");
    assert_eq!(resolved[0]["master_source"], "DATA_PLATFORM");
    assert!(resolved[0]["decided_by"].as_str().unwrap().starts_with("os:"));
    let audit = stdout(&ebb(t.path(), &["audit", "--action", "conflict_resolved"]));
    assert!(
        audit.contains("\"actor\":\"os:") && audit.contains("\"take\":\"warehouse\""),
        "{audit}"
    );
    assert!(resolved[0]["resolution_timestamp"].is_string());
    // A record without an open conflict cannot be resolved.
    let o = t.resolve("C1", "crm");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

    // Both sides change C2's Phone; resolved for the CRM: the CRM's value is written back to
    // the inbound model's table at once, and the next run leaves the CRM alone.
    t.run(IN);
    t.crm_edit("C2", json!({"Phone": "+1 555 7772"}));
    t.sql(&format!(
        "UPDATE dp.customers SET phone = '+1 555 8882', modified_date = '{}' WHERE customer_id = 'C2'",
        at(-30)
    ));
    t.run(OUT);
    assert_eq!(t.contact("C2")["Phone"], json!("+1 555 7772"));
    let o = t.resolve("C2", "crm");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("written back to `raw.crm_contacts` (1 row)"),
        "{}",
        stderr(&o)
    );
    let c = duckdb::Connection::open(t.path().join("warehouse.duckdb")).unwrap();
    let phone: String = c
        .query_row(
            "SELECT phone FROM raw.crm_contacts WHERE warehouse_id = 'C2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(c);
    assert_eq!(phone, "+1 555 7772");
    let calls = t.sandbox.calls_to("collections");
    let s = t.run(OUT);
    assert_eq!(
        t.contact("C2")["Phone"],
        json!("+1 555 7772"),
        "the CRM keeps its value"
    );
    assert_eq!(s["counts"]["sent"], 0, "nothing is written: {s:#}");
    assert_eq!(t.sandbox.calls_to("collections"), calls);
    assert!(t.conflicts("open").is_empty());
    // Settled: a later run neither writes nor finds the conflict again.
    let s = t.run(OUT);
    assert_eq!(s["counts"]["changed"], 0, "{s:#}");
    assert_eq!(t.conflicts("all").len(), 2);
}

#[test]
fn each_policy_decides_a_conflict_and_records_it() {
    // (policy, warehouse modified relative to now in minutes, C1's Email after, winner)
    let cases = [
        ("warehouse_wins", -60, "one@warehouse.com", "warehouse"),
        ("crm_wins", 60, "one@crm.com", "crm"),
        ("newest_wins", -60, "one@crm.com", "crm"),
        ("newest_wins", 60, "one@warehouse.com", "warehouse"),
    ];
    for (policy, minutes, email, winner) in cases {
        let t = TwoWay::new(policy, false);
        t.first_sync();
        diverge(&t, minutes);
        t.run(OUT);
        one_sided_changes_sync_normally(&t);
        assert_eq!(t.contact("C1")["Email"], json!(email), "{policy} {minutes}");
        let all = t.conflicts("all");
        assert_eq!(all.len(), 1, "{policy}: {all:#?}");
        assert_eq!(all[0]["status"], "decided");
        assert_eq!(all[0]["winner"], winner, "{policy} {minutes}: {:#}", all[0]);
        assert_eq!(all[0]["policy"], policy);
        // Decided once: the next run neither writes C1 nor records the conflict again.
        let calls = t.sandbox.calls_to("collections");
        let s = t.run(OUT);
        assert_eq!(s["counts"]["sent"], 0, "{policy}: {s:#}");
        assert_eq!(t.sandbox.calls_to("collections"), calls);
        assert_eq!(t.conflicts("all").len(), 1);
        assert_eq!(t.contact("C1")["Email"], json!(email));
    }
}

#[test]
fn a_tie_or_a_record_ebb_never_wrote_goes_to_review_under_newest_wins() {
    let t = TwoWay::new("newest_wins", false);
    // C1 exists in the CRM already (created there), modified at the very second the
    // warehouse row was; their Emails differ.
    let same = (Utc::now() - D::minutes(10)).format("%Y-%m-%dT%H:%M:%S").to_string();
    t.sandbox
        .insert(
            "Contact",
            vec![
                json!({"LastName": "One", "Warehouse_Id__c": "C1", "Email": "one@crm.com",
                        "Phone": "+1 555 0001", "CreatedDate": format!("{same}Z"),
                        "LastModifiedDate": format!("{same}Z")})
                .as_object()
                .unwrap()
                .clone(),
            ],
        )
        .unwrap();
    t.sql(&format!(
        "UPDATE dp.customers SET modified_date = '{}' WHERE customer_id = 'C1'",
        same.replace('T', " ")
    ));
    let s = t.run(OUT);
    assert_eq!(s["counts"]["confirmed"], 3, "the others are created: {s:#}");
    assert_eq!(t.contact("C1")["Email"], json!("one@crm.com"));
    let open = t.conflicts("open");
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["field"], "Email");
    assert!(open[0]["reason"].as_str().unwrap().starts_with("tie"), "{:#}", open[0]);
    // The Phone was the same on both sides: no conflict on it.
    assert!(t.conflicts("all").iter().all(|c| c["field"] == "Email"));
}

#[test]
fn crm_state_and_api_lookups_decide_the_same() {
    let mut seen = Vec::new();
    for crm_state in [false, true] {
        let t = TwoWay::new("newest_wins", crm_state);
        t.first_sync();
        diverge(&t, -60);
        t.crm_edit("C2", json!({"Phone": "+1 555 7772"}));
        t.sql("UPDATE dp.customers SET phone = '+1 555 8882' WHERE customer_id = 'C2'");
        if crm_state {
            let s = t.run(IN);
            assert_eq!(s["counts"]["read"], 4, "{s:#}");
        }
        let o = ebb(t.path(), &["plan", OUT]);
        let plan = stdout(&o);
        assert!(plan.contains("conflicts:    newest_wins on Email, Phone"), "{plan}");
        assert_eq!(
            plan.contains("CRM values: table raw.crm_contacts of `contacts_in`"),
            crm_state,
            "{plan}"
        );
        let queries = t.sandbox.calls_to("query");
        t.run(OUT);
        let made = t.sandbox.calls_to("query") - queries;
        if crm_state {
            assert_eq!(made, 0, "crm_state reads the table, not the CRM");
        } else {
            assert_eq!(made, 1, "one SOQL query for the batch's keys");
        }
        one_sided_changes_sync_normally(&t);
        assert_eq!(t.contact("C2")["Phone"], json!("+1 555 7772"), "CRM newer");
        seen.push(t.decisions());
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0].len(), 2, "{:?}", seen[0]);
}

#[test]
fn a_conflicts_export_lands_in_a_warehouse_table() {
    let t = TwoWay::new("crm_wins", false);
    t.first_sync();
    diverge(&t, -60);
    t.run(OUT);
    for _ in 0..2 {
        let o = ebb(
            t.path(),
            &[
                "conflicts",
                "export",
                "--connection",
                "warehouse",
                "--table",
                "audit.customer_master",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let c = duckdb::Connection::open(t.path().join("warehouse.duckdb")).unwrap();
    let rows: Vec<(String, String, String, String)> = c
        .prepare("SELECT record_key, field, master_source, crm_value FROM audit.customer_master")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![("C1".into(), "Email".into(), "CRM".into(), "one@crm.com".into())]
    );
}

#[test]
fn kill_9_between_the_decision_and_the_write_converges_on_the_rerun() {
    let t = TwoWay::new("newest_wins", false);
    t.first_sync();
    diverge(&t, 60); // the warehouse is newer: C1 is to be written
                     // Every data call takes 1.5 s: the run is killed while its write is on the way.
    t.sandbox.set_faults(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", OUT])
        .current_dir(t.path())
        .env_remove("EBB_PROJECT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let decided = loop {
        let d = t.decisions();
        if !d.is_empty() {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no decision recorded");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        decided,
        vec![("C1".into(), "Email".into(), "decided".into(), json!("warehouse"))]
    );
    assert_eq!(
        t.contact("C1")["Email"],
        json!("one@crm.com"),
        "killed before the write"
    );
    t.sandbox.set_faults(Faults::default());
    t.run(OUT);
    one_sided_changes_sync_normally(&t);
    assert_eq!(t.contact("C1")["Email"], json!("one@warehouse.com"));
    assert_eq!(t.decisions(), decided, "the same decision, recorded once");
    let s = t.run(OUT);
    assert_eq!(s["counts"]["sent"], 0, "{s:#}");
}

#[test]
fn the_daemon_lists_and_resolves_conflicts_and_counts_the_open_ones() {
    let t = TwoWay::new("manual_review", false);
    t.first_sync();
    diverge(&t, -60);
    t.run(OUT);
    let d = crate::daemon::Daemon::start(t.path(), &[], &[]);
    let base = format!("http://{}", d.addr);
    let gauge = format!("ebb_conflicts_open{{model=\"{OUT}\"}}");
    t.rt.block_on(async {
        let http = ebb::http::client().unwrap();
        let get = |path: String| {
            let http = http.clone();
            async move { http.get(path).send().await.unwrap() }
        };
        let list: Value = get(format!("{base}/api/conflicts?model={OUT}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["open"][OUT], 1, "{list:#}");
        assert_eq!(list["conflicts"][0]["key"], "C1");
        assert_eq!(list["conflicts"][0]["status"], "open");
        let metrics = get(format!("{base}/metrics")).await.text().await.unwrap();
        assert!(metrics.lines().any(|l| l == format!("{gauge} 1")), "{metrics}");
        let bad = get(format!("{base}/api/conflicts?status=nope")).await;
        assert_eq!(bad.status().as_u16(), 400);
        let resolve = |key: &str, take: &str| {
            let http = http.clone();
            let url = format!("{base}/api/conflicts/{OUT}/resolve");
            let body = json!({"key": key, "take": take});
            async move { http.post(url).json(&body).send().await.unwrap() }
        };
        assert_eq!(resolve("C1", "both").await.status().as_u16(), 400);
        let r = resolve("C1", "warehouse").await;
        assert_eq!(r.status().as_u16(), 200);
        let r: Value = r.json().await.unwrap();
        assert_eq!(r["resolved"][0]["decided_by"], "api");
        assert_eq!(r["resolved"][0]["master_source"], "DATA_PLATFORM");
        assert_eq!(
            resolve("C1", "warehouse").await.status().as_u16(),
            404,
            "nothing left open"
        );
        let metrics = get(format!("{base}/metrics")).await.text().await.unwrap();
        assert!(metrics.lines().any(|l| l == format!("{gauge} 0")), "{metrics}");
    });
    drop(d);
    t.run(OUT);
    assert_eq!(t.contact("C1")["Email"], json!("one@warehouse.com"));
}

#[test]
fn validate_connect_checks_both_modification_times() {
    let t = TwoWay::new("newest_wins", false);
    std::fs::write(
        t.path().join("models/out.yaml"),
        format!(
            "models:
  - name: {OUT}
    source:
      type: duckdb
      query: SELECT customer_id, email, 1 AS version FROM dp.customers
    destination:
      type: salesforce
      object: Contact
      unique_identifier: customer_id
      external_id_field: Warehouse_Id__c
    mappings:
      - source: email
        destination: Email
    conflicts:
      policy: newest_wins
      source_modified: version
      destination_modified: Phone
"
        ),
    )
    .unwrap();
    let o = ebb(t.path(), &["validate", "--connect", "--format", "json"]);
    let text = stdout(&o);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let found: Vec<(String, u64, u64)> = crate::support::json_errors(&report)
        .into_iter()
        .map(|(c, l, col, _)| (c, l, col))
        .collect();
    assert_eq!(found, vec![("E904".into(), 16, 24), ("E909".into(), 17, 29)], "{text}");
}

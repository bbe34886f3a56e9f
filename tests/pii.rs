//! Personal data (docs/security.md): values of a `pii: true` field planted in a row the CRM
//! rejects (quoting it, as Salesforce does), in a dry run and in a conflict are found
//! nowhere in clear: not in what `ebb` prints, not in the API's answers or the status page,
//! not in the daemon's log, not in the state store's files (sealed under
//! `EBB_ENCRYPTION_KEY`). `ebb keys rotate` seals them anew under a new key.

use crate::daemon::Daemon;
use crate::support::{stderr, stdout};
use ebb::sandbox::{Sandbox, SandboxConfig};
use std::path::Path;
use std::process::{Command, Output};

const REJECTED: &str = "planted.zq9@@pii.example";
const WAREHOUSE: &str = "wh.planted.k7@pii.example";
const CRM: &str = "crm.planted.k7@pii.example";
const PLANTED: [&str; 3] = [REJECTED, WAREHOUSE, CRM];

fn project(sandbox: &Sandbox) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1
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
      client_secret: ${{SF_SECRET_PII_TEST:-ebb-sandbox}}
",
            sandbox.url()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/out.yaml"),
        "models:
  - name: contacts_out
    source:
      type: duckdb
      query: SELECT customer_id, last_name, email, modified_date FROM customers
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
        pii: true
    conflicts:
      policy: manual_review
      fields: [Email]
      source_modified: modified_date
",
    )
    .unwrap();
    sql(
        dir.path(),
        &format!(
            "CREATE TABLE customers (customer_id VARCHAR, last_name VARCHAR, email VARCHAR, modified_date TIMESTAMP);
             INSERT INTO customers VALUES
               ('C1', 'One', 'one@x.com', now()::TIMESTAMP - INTERVAL 2 HOUR),
               ('C2', 'Two', '{REJECTED}', now()::TIMESTAMP - INTERVAL 2 HOUR);"
        ),
    );
    dir
}

fn sql(dir: &Path, sql: &str) {
    let c = duckdb::Connection::open(dir.join("warehouse.duckdb")).unwrap();
    c.execute_batch(sql).unwrap();
}

fn ebb_env(dir: &Path, args: &[&str], key: &str, old: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .current_dir(dir)
        .env_remove("EBB_PROJECT")
        .env("NO_COLOR", "1")
        .env("EBB_RETRY_BASE_MS", "5")
        .env("EBB_ENCRYPTION_KEY", key)
        .env("EBB_ENCRYPTION_KEYS_OLD", old)
        .output()
        .unwrap()
}

/// Every file under `dir/.ebb` (the state store, its WAL, the kept tables) as bytes.
fn state_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.join(".ebb")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_clean(what: &str, text: &str) {
    for v in PLANTED {
        assert!(!text.contains(v), "{what} holds `{v}` in clear:\n{text}");
    }
}

#[test]
fn a_planted_personal_value_is_nowhere_in_clear() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let p = project(&sandbox);
    let dir = p.path();
    let k1 = ebb_env(dir, &["keys", "generate", "--id", "k1"], "", "");
    let k1 = stdout(&k1).trim().to_string();
    assert!(k1.starts_with("k1:"), "{k1}");
    let ebb = |args: &[&str]| ebb_env(dir, args, &k1, "");
    let mut printed = String::new();
    let mut keep = |o: &Output| printed.push_str(&format!("{}{}", stdout(o), stderr(o)));

    // 1. The CRM refuses C2's address, quoting it.
    let o = ebb(&["run", "contacts_out"]);
    keep(&o);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let o = ebb(&["errors", "contacts_out"]);
    keep(&o);
    assert!(stdout(&o).contains("INVALID_EMAIL_ADDRESS"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("p***@pii.example"),
        "masked, still telling: {}",
        stdout(&o)
    );

    // 2. Both sides change C1's address: a conflict held for review.
    let url = sandbox.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = ebb::http::client().unwrap();
        let token = crate::support::sandbox_token(&http, &url).await;
        let status = http
            .patch(format!("{url}/services/data/v62.0/sobjects/Contact/Warehouse_Id__c/C1"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "Email": CRM }))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    });
    sql(
        dir,
        &format!(
            "UPDATE customers SET email = '{WAREHOUSE}', modified_date = now()::TIMESTAMP WHERE customer_id = 'C1'"
        ),
    );
    // 3. A dry run shows the change, masked.
    let o = ebb(&["run", "contacts_out", "--dry-run", "--format", "json"]);
    keep(&o);
    assert!(stdout(&o).contains("w***@pii.example"), "{}", stdout(&o));
    let o = ebb(&["run", "contacts_out"]);
    keep(&o);
    let o = ebb(&["conflicts", "contacts_out", "--format", "json"]);
    keep(&o);
    let held: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(held.len(), 1, "{}", stdout(&o));
    assert_eq!(held[0]["warehouse_value"], "w***@pii.example");
    assert_eq!(held[0]["crm_value"], "c***@pii.example");
    for args in [
        &["status"][..],
        &["runs", "contacts_out"],
        &["conflicts"],
        &["preview", "contacts_out"],
    ] {
        keep(&ebb(args));
    }
    assert_clean("ebb's output", &printed);

    // 4. The daemon: its API, its page and its log.
    let d = Daemon::start(dir, &[], &[("EBB_ENCRYPTION_KEY", &k1)]);
    for path in ["/api/conflicts", "/", "/api/models", "/api/runs"] {
        let r = d.get(path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_clean(path, &r.body);
    }
    assert!(d.get("/", None).body.contains("w***@pii.example"));
    // A run through the daemon too: its log holds none of them either.
    assert_eq!(d.post("/api/models/contacts_out/runs", None).status, 202);
    d.wait_for("the run", 1, std::time::Duration::from_secs(30), |e| {
        e["event"] == "run_finished" && e["model"] == "contacts_out"
    });
    assert_clean("the daemon's log", &d.log());
    drop(d);

    // 5. The state store's files: sealed, not in clear.
    let files = state_bytes(dir);
    for (name, bytes) in &files {
        for v in PLANTED {
            assert!(!contains(bytes, v), "{name} holds `{v}` in clear");
        }
    }
    assert!(
        files.iter().any(|(_, b)| contains(b, "ebb:enc:v1:k1:")),
        "values are sealed under k1"
    );

    // 6. Rotation: a new key, the old one only to open; afterwards only the new one.
    let k2 = stdout(&ebb(&["keys", "generate", "--id", "k2"])).trim().to_string();
    let o = ebb_env(dir, &["keys", "rotate"], &k2, &k1);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("ebb_conflicts.warehouse_value: 1 sealed anew under `k2`"),
        "{}",
        stdout(&o)
    );
    let o = ebb_env(dir, &["conflicts", "contacts_out", "--format", "json"], &k2, "");
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("w***@pii.example"),
        "opens under k2 alone: {}",
        stdout(&o)
    );
    let o = ebb_env(dir, &["keys", "rotate"], &k2, "");
    assert!(
        stdout(&o).contains("ebb_conflicts.warehouse_value: 0 sealed anew under `k2`, 1 already under it"),
        "{}",
        stdout(&o)
    );
    // The rotations are in the audit log, with who ran them.
    let o = ebb_env(dir, &["audit", "--action", "keys_rotated"], &k2, "");
    let rotations: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rotations.len(), 2, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(rotations[0]["detail"]["key_id"], "k2", "{:?}", rotations[0]);
    assert!(rotations[0]["actor"].as_str().unwrap().starts_with("os:"));
    // Without the key the values do not open, and say so (nothing else breaks).
    let o = ebb_env(dir, &["conflicts", "contacts_out", "--format", "json"], "", "");
    assert!(
        stdout(&o).contains("sealed under key `k2`"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // A key that does not parse stops a command that reads the store, and a run, before
    // anything is read or written.
    let o = ebb_env(dir, &["conflicts", "contacts_out"], "k3:short", "");
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("EBB_ENCRYPTION_KEY"), "{}", stderr(&o));
    let o = ebb_env(dir, &["run", "contacts_out"], "k3:short", "");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("EBB_ENCRYPTION_KEY") || stdout(&o).contains("EBB_ENCRYPTION_KEY"));
    assert!(!stderr(&o).contains("short") && !stdout(&o).contains("k3:short"));
}

/// Webhook bodies (pending, applied and dead letters) are sealed in the inbox: the state
/// store's files hold no planted address, while the events land in the table.
#[test]
fn webhook_bodies_are_sealed_in_the_inbox() {
    use crate::webhooks::{duckdb_project, event, post, signed, MODEL, SECRET, TOKEN};
    // (`TOKEN` is the project's API token, read by `settled`.)
    let dir = tempfile::tempdir().unwrap();
    duckdb_project(dir.path());
    // `score` is personal here: a value of it quoted in a dead letter's reason is masked.
    let models = dir.path().join("models/customers.yaml");
    let text = std::fs::read_to_string(&models).unwrap().replace(
        "      - source: score\n        destination: score\n",
        "      - source: score\n        destination: score\n        pii: true\n",
    );
    assert!(text.contains("pii: true"));
    std::fs::write(&models, text).unwrap();
    let key = ebb::crypt::generate("w1");
    let d = Daemon::start(
        dir.path(),
        &[],
        &[
            ("EBB_ENCRYPTION_KEY", &key),
            ("CRM_WEBHOOK_SECRET", SECRET),
            ("EBB_API_TOKEN", TOKEN),
        ],
    );
    let path = format!("/webhooks/{MODEL}");
    let good = event("created", "c1", "inbox.planted.q4@pii.example", 1, 0);
    assert_eq!(post(&d.addr, &path, &signed(SECRET, "e1", &good), &good).0, 202);
    // A value that does not fit its type: refused, and kept with its body as a dead letter.
    let bad = serde_json::json!({"event_type": "customer.created",
        "data": {"id": "c2", "email": "dead.planted.q4@pii.example", "score": 1.5}})
    .to_string()
    .into_bytes();
    assert_eq!(post(&d.addr, &path, &signed(SECRET, "e2", &bad), &bad).0, 400);
    // A score that is not a whole number: a dead letter once applied.
    let odd = serde_json::json!({"event_type": "customer.created",
        "data": {"id": "c3", "email": "odd.planted.q4@pii.example", "score": 12345.5,
                 "modified_date": "2026-12-01T10:00:00Z"}})
    .to_string()
    .into_bytes();
    assert_eq!(post(&d.addr, &path, &signed(SECRET, "e3", &odd), &odd).0, 202);
    let v = crate::webhooks::settled(&d);
    assert_eq!(v["counts"]["applied"], 1, "{v}");
    assert_eq!(v["counts"]["rejected"], 1, "{v}");
    assert_eq!(v["counts"]["dead"], 1, "{v}");
    let text = v.to_string();
    assert!(text.contains("field `score`: 1***") && !text.contains("12345.5"), "{v}");
    drop(d);
    let db = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    let email: String = db
        .query_row("SELECT email FROM raw.customers WHERE customer_id = 'c1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(email, "inbox.planted.q4@pii.example");
    let files = state_bytes(dir.path());
    for (name, bytes) in &files {
        for v in ["inbox.planted.q4", "dead.planted.q4", "odd.planted.q4", "12345.5"] {
            assert!(!contains(bytes, v), "{name} holds `{v}` in clear");
        }
    }
    assert!(files.iter().any(|(_, b)| contains(b, "ebb:enc:v1:w1:")));
    // `ebb inbox replay` opens the dead letter with the key: it reads the event again (and
    // finds it still refused, for what the event says, not for being unreadable).
    let o = ebb_env(dir.path(), &["inbox", "replay", MODEL], &key, "");
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("still refused") && said.contains("the event time at `$.data.modified_date`"),
        "{said}"
    );
}

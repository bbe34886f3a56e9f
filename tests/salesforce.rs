//! The Salesforce destination end to end: a real PostgreSQL warehouse, the `ebb` binary and
//! the sandbox (`ebb::sandbox`) over real HTTP, speaking Salesforce's documented protocol.

use crate::sink::{Raw, Sink};
use crate::support::{ebb, stderr, stdout};
use ebb::config::model::{ConnectionType, Mode, OnRemoved, SalesforceApi};
use ebb::config::project::SalesforceConnection;
use ebb::destination::retry::deliver;
use ebb::destination::salesforce::SalesforceDestination;
use ebb::destination::{Batch, Destination, Op, Outcome, Record};
use ebb::http::retry::RetryPolicy;
use ebb::plan::DestinationPlan;
use ebb::sandbox::{Faults, Sandbox, SandboxConfig};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct SfFixture {
    dir: tempfile::TempDir,
    schema: String,
    sandbox: Sandbox,
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl SfFixture {
    /// `rows` contacts in the warehouse; the project's `salesforce` connection points at a
    /// fresh sandbox, with `connection_extra` added to it.
    fn new(tag: &str, rows: usize, connection_extra: &str, config: SandboxConfig) -> SfFixture {
        let auth = "      flow: client_credentials
      client_id: ${SF_CLIENT_ID:-ebb-sandbox}
      client_secret: ${SF_CLIENT_SECRET:-ebb-sandbox}
";
        SfFixture::with_auth(tag, rows, auth, connection_extra, config)
    }

    /// As `new`, with the connection's `auth:` block given (its lines, indented by 6).
    fn with_auth(tag: &str, rows: usize, auth: &str, connection_extra: &str, config: SandboxConfig) -> SfFixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = crate::source_postgres::url();
        let client = crate::support::pg_client(&rt);
        let schema = format!("ebb_sf_{tag}_{}", std::process::id());
        let sandbox = Sandbox::start_in_thread(config);
        let f = SfFixture {
            dir: tempfile::tempdir().unwrap(),
            schema,
            sandbox,
            rt,
            client,
        };
        let s = &f.schema;
        f.sql(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
             CREATE TABLE {s}.contacts (id INT, last_name TEXT, email TEXT, segment TEXT, ltv NUMERIC(12, 3), churn DOUBLE PRECISION);
             INSERT INTO {s}.contacts SELECT i, 'Name' || i, 'User' || i || '@Example.com',
                (ARRAY['Enterprise', 'Mid-Market', 'SMB', 'Consumer'])[1 + i % 4], i * 10.125, (i % 100) / 100.0
                FROM generate_series(1, {rows}) AS i;"
        ));
        std::fs::write(
            f.dir.path().join("ebb.yaml"),
            format!(
                "version: 1
connections:
  pg:
    type: postgres
    url: {url}
  salesforce:
    type: salesforce
    instance_url: {}
    auth:
{auth}{connection_extra}",
                f.sandbox.url(),
                auth = auth.replace("{SANDBOX}", &f.sandbox.url()),
            ),
        )
        .unwrap();
        std::fs::create_dir(f.dir.path().join("models")).unwrap();
        f.model("upsert", "Warehouse_Id__c", "");
        f
    }

    /// The model: contacts to Contact, keyed on `key_field`.
    fn model(&self, mode: &str, key_field: &str, extra: &str) {
        std::fs::write(
            self.dir.path().join("models/contacts.yaml"),
            format!(
                "models:
  - name: contacts
    source:
      type: postgres
      query: SELECT id, last_name, email, segment, ltv, churn FROM {s}.contacts
    destination:
      type: salesforce
      object: Contact
      mode: {mode}
      unique_identifier: id
      external_id_field: {key_field}
{extra}    mappings:
      - source: id
        destination: {key_field}
      - source: last_name
        destination: LastName
      - source: email
        destination: Email
        transform: lower
      - source: segment
        destination: Customer_Segment__c
      - source: ltv
        destination: LTV__c
        transform: round(2)
      - source: churn
        destination: Churn_Risk__c
        transform: scale(0, 1, 0, 100)
",
                s = self.schema
            ),
        )
        .unwrap();
    }

    fn sql(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["run", "contacts", "--format", "json"])
            .args(args)
            .current_dir(self.path())
            .env_remove("EBB_PROJECT")
            .env("EBB_RETRY_BASE_MS", "5")
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let summary: Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("exit {code}: {e}\n{}\n{}", stdout(&out), stderr(&out)));
        (code, summary["runs"][0].clone())
    }

    /// The model's rows as the sandbox should hold them, by warehouse id.
    fn expected(&self) -> BTreeMap<String, Value> {
        let rows = self
            .rt
            .block_on(self.client.query(
                &format!(
                    "SELECT id, last_name, lower(email), segment, round(ltv, 2)::float8, round((churn * 100)::numeric, 9)::float8 FROM {}.contacts",
                    self.schema
                ),
                &[],
            ))
            .unwrap();
        rows.iter()
            .map(|r| {
                let id: i32 = r.get(0);
                (
                    id.to_string(),
                    json!({
                        "LastName": r.get::<_, String>(1),
                        "Email": r.get::<_, String>(2),
                        "Customer_Segment__c": r.get::<_, String>(3),
                        "LTV__c": r.get::<_, f64>(4),
                        "Churn_Risk__c": r.get::<_, f64>(5),
                    }),
                )
            })
            .collect()
    }

    /// The sandbox's Contacts, by `Warehouse_Id__c`, with the fields the model writes.
    fn held(&self) -> BTreeMap<String, Value> {
        self.sandbox
            .records("Contact")
            .into_iter()
            .map(|r| {
                let key = match &r["Warehouse_Id__c"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let pick = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
                (
                    key,
                    json!({
                        "LastName": pick("LastName"),
                        "Email": pick("Email"),
                        "Customer_Segment__c": pick("Customer_Segment__c"),
                        "LTV__c": pick("LTV__c").as_f64().map(Value::from).unwrap_or(Value::Null),
                        "Churn_Risk__c": pick("Churn_Risk__c").as_f64().map(Value::from).unwrap_or(Value::Null),
                    }),
                )
            })
            .collect()
    }

    #[track_caller]
    fn assert_synced(&self, context: &str) {
        let (held, want) = (self.held(), self.expected());
        if held == want {
            return;
        }
        let diff: Vec<String> = want
            .keys()
            .chain(held.keys())
            .filter(|k| held.get(*k) != want.get(*k))
            .take(5)
            .map(|k| format!("  {k}: sandbox {:?}, model {:?}", held.get(k), want.get(k)))
            .collect();
        panic!(
            "{context}: the sandbox ({} Contacts) does not hold the model ({} rows):\n{}",
            held.len(),
            want.len(),
            diff.join("\n")
        );
    }
}

impl Drop for SfFixture {
    fn drop(&mut self) {
        let _ = self.rt.block_on(
            self.client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)),
        );
    }
}

fn count(v: &Value, what: &str) -> i64 {
    v["counts"][what]
        .as_i64()
        .unwrap_or_else(|| panic!("no count {what} in {v}"))
}

#[test]
fn upserts_by_external_id_in_collections_of_200_then_only_what_changed() {
    require_postgres!();
    let f = SfFixture::new("upsert", 450, "", SandboxConfig::default());
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!((count(&run, "sent"), count(&run, "confirmed")), (450, 450));
    assert_eq!(count(&run, "api_calls"), 3, "ceil(450 / 200) collections calls: {run}");
    assert_eq!(f.sandbox.calls_to("collections"), 3);
    f.assert_synced("first sync");
    // 1%: 5 rows change → one call.
    f.sql(&format!(
        "UPDATE {}.contacts SET segment = 'SMB' WHERE id % 90 = 1 AND segment <> 'SMB'",
        f.schema
    ));
    let before = f.sandbox.calls();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "api_calls"), 1, "{run}");
    assert_eq!(f.sandbox.calls() - before, 1);
    f.assert_synced("after a 1% change");
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "api_calls")), (0, 0), "no change, no call: {run}");
}

#[test]
fn a_large_change_set_goes_through_bulk_api_2_with_the_same_final_state() {
    require_postgres!();
    let f = SfFixture::new("bulk", 1500, "    bulk_threshold: 1000\n", SandboxConfig::default());
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "confirmed"), 1500);
    assert!(f.sandbox.calls_to("bulk") >= 5, "create, upload, close, poll, results");
    assert_eq!(f.sandbox.calls_to("collections"), 0);
    f.assert_synced("after a Bulk API 2.0 job");
    // Under the threshold: Collections again.
    f.sql(&format!(
        "UPDATE {}.contacts SET last_name = 'Changed' WHERE id <= 10",
        f.schema
    ));
    let (code, _) = f.run(&[]);
    assert_eq!(code, 0);
    assert_eq!(f.sandbox.calls_to("collections"), 1);
    f.assert_synced("after a small change");
    // A rejected row in a Bulk job is reported like any other.
    f.sql(&format!(
        "UPDATE {}.contacts SET segment = 'Gold', last_name = last_name || '!' WHERE id = 77",
        f.schema
    ));
    f.sql(&format!(
        "UPDATE {}.contacts SET last_name = last_name || '.' WHERE id > 100",
        f.schema
    ));
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    assert_eq!(count(&run, "rejected"), 1);
    let errors = stdout(&ebb(f.path(), &["errors", "contacts", "--format", "json"]));
    assert!(
        errors.contains("\"key\":\"77\"") && errors.contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "{errors}"
    );
}

#[test]
fn token_expiry_mid_run_is_invisible() {
    require_postgres!();
    let config = SandboxConfig {
        faults: Faults {
            token_ttl_calls: Some(2),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    let f = SfFixture::new("token", 1000, "", config);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert!(
        f.sandbox.calls_to("token") >= 3,
        "tokens renewed: {}",
        f.sandbox.calls_to("token")
    );
    f.assert_synced("with tokens expiring every 2 calls");
}

#[test]
fn a_restricted_picklist_violation_rejects_just_that_row_with_salesforces_code_and_message() {
    require_postgres!();
    let f = SfFixture::new("picklist", 300, "", SandboxConfig::default());
    f.sql(&format!(
        "UPDATE {}.contacts SET segment = 'Gold' WHERE id = 42",
        f.schema
    ));
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    assert_eq!((count(&run, "confirmed"), count(&run, "rejected")), (299, 1));
    let text = stdout(&ebb(f.path(), &["errors", "contacts"]));
    assert!(
        text.contains("42") && text.contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "{text}"
    );
    assert!(
        text.contains("Gold") || text.to_lowercase().contains("picklist"),
        "{text}"
    );
    // Fixed in the warehouse: sent once more and accepted.
    f.sql(&format!(
        "UPDATE {}.contacts SET segment = 'SMB' WHERE id = 42",
        f.schema
    ));
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "sent")), (0, 1), "{run}");
    f.assert_synced("after the fix");
}

#[test]
fn a_spent_daily_allocation_ends_the_run_failed_keeping_what_was_confirmed_and_the_next_run_finishes() {
    require_postgres!();
    let f = SfFixture::new(
        "daily",
        1000,
        "    daily_api_reserve: 2\n    max_concurrency: 1\n",
        SandboxConfig::default(),
    );
    // 5 calls left; ebb keeps 2 in reserve: 3 batches go, then the run stops.
    f.sandbox.set_allocation(99_995, 100_000);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 1, "{run}");
    assert_eq!(run["status"], "failed");
    let err = run["error"].as_str().unwrap();
    assert!(
        err.contains("daily API allocation is spent down to its reserve (api-usage 99998/100000"),
        "{err}"
    );
    assert_eq!(count(&run, "confirmed"), 600, "{run}");
    assert_eq!(f.held().len(), 600, "what the sandbox holds is what was committed");
    // The allocation resets: the next run sends the rest, and only the rest.
    f.sandbox.set_allocation(0, 100_000);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "sent"), 400, "{run}");
    f.assert_synced("after the allocation reset");

    // An allocation already spent when the run starts: Salesforce's own 403
    // REQUEST_LIMIT_EXCEEDED (the daily form) stops the run the same way.
    f.sql(&format!(
        "UPDATE {}.contacts SET last_name = last_name || '+'",
        f.schema
    ));
    std::fs::write(
        f.path().join("ebb.yaml"),
        std::fs::read_to_string(f.path().join("ebb.yaml"))
            .unwrap()
            .replace("daily_api_reserve: 2", "daily_api_reserve: 0"),
    )
    .unwrap();
    f.sandbox.set_allocation(100_000, 100_000);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 1, "{run}");
    assert_eq!(count(&run, "confirmed"), 0, "{run}");
    let err = run["error"].as_str().unwrap();
    // Two batches wait for the one request slot: the one that gets it is answered the 403,
    // the other then sees the spent allocation in the usage header before it starts. The
    // run reports the lower batch number's error, which may be either.
    assert!(
        err.contains("daily API allocation")
            && (err.contains("REQUEST_LIMIT_EXCEEDED") || err.contains("(api-usage 100000/100000")),
        "{err}"
    );
}

#[test]
fn the_concurrent_request_form_of_request_limit_exceeded_is_retried() {
    require_postgres!();
    let config = SandboxConfig {
        faults: Faults {
            max_concurrent: Some(1),
            latency: Duration::from_millis(30),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    let f = SfFixture::new("concurrent", 1000, "    max_concurrency: 4\n", config);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert!(
        count(&run, "api_calls") > 5,
        "some calls were refused and retried: {run}"
    );
    f.assert_synced("after retries");
}

#[test]
fn the_rate_limit_is_never_exceeded_in_any_window() {
    require_postgres!();
    let f = SfFixture::new("rate", 3000, "    rate_limit: 10/second\n", SandboxConfig::default());
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "api_calls"), 15);
    assert!(
        f.sandbox.max_starts_within(Duration::from_secs(1)) <= 10,
        "{} requests started within one second",
        f.sandbox.max_starts_within(Duration::from_secs(1))
    );
}

#[test]
fn mirror_deletes_by_the_ids_upserts_returned() {
    require_postgres!();
    let f = SfFixture::new("mirror", 250, "", SandboxConfig::default());
    f.model("mirror", "Warehouse_Id__c", "");
    assert_eq!(f.run(&[]).0, 0);
    f.sql(&format!("DELETE FROM {}.contacts WHERE id > 240", f.schema));
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!((count(&run, "removed"), count(&run, "confirmed")), (10, 10));
    assert_eq!(
        f.sandbox.calls_to("query"),
        0,
        "the Ids came from the snapshot, not SOQL"
    );
    f.assert_synced("after deletes");
}

#[test]
fn update_by_id_touches_existing_records_and_rejects_unknown_ids() {
    require_postgres!();
    let f = SfFixture::new("byid", 0, "", SandboxConfig::default());
    // Contacts that exist in the org, and a warehouse table keyed by their Ids.
    let mut seed = Vec::new();
    for i in 1..=20 {
        let mut r = Map::new();
        r.insert("LastName".into(), json!(format!("Before{i}")));
        r.insert("Warehouse_Id__c".into(), json!(i.to_string()));
        seed.push(r);
    }
    let ids = f.sandbox.insert("Contact", seed).unwrap();
    let s = &f.schema;
    f.sql(&format!("CREATE TABLE {s}.by_id (crm_id TEXT, segment TEXT)"));
    for id in &ids {
        f.sql(&format!("INSERT INTO {s}.by_id VALUES ('{id}', 'Enterprise')"));
    }
    f.sql(&format!("INSERT INTO {s}.by_id VALUES ('003000000000000AAA', 'SMB')"));
    std::fs::write(
        f.path().join("models/contacts.yaml"),
        format!(
            "models:
  - name: contacts
    source:
      type: postgres
      query: SELECT crm_id, segment FROM {s}.by_id
    destination:
      type: salesforce
      object: Contact
      mode: update
      unique_identifier: crm_id
    mappings:
      - source: crm_id
        destination: Id
      - source: segment
        destination: Customer_Segment__c
"
        ),
    )
    .unwrap();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    assert_eq!((count(&run, "confirmed"), count(&run, "rejected")), (20, 1), "{run}");
    let held = f.sandbox.records("Contact");
    assert_eq!(held.len(), 20, "update creates nothing");
    assert!(held.iter().all(|r| r["Customer_Segment__c"] == "Enterprise"));
    let errors = stdout(&ebb(f.path(), &["errors", "contacts"]));
    assert!(errors.contains("003000000000000AAA"), "{errors}");
}

#[test]
fn validate_connect_checks_the_model_against_the_described_object() {
    require_postgres!();
    let f = SfFixture::new("connect", 10, "", SandboxConfig::default());
    f.sql(&format!(
        "UPDATE {}.contacts SET segment = 'Gold' WHERE id = 3",
        f.schema
    ));
    let s = &f.schema;
    std::fs::write(
        f.path().join("models/contacts.yaml"),
        format!(
            "models:
  - name: contacts
    source:
      type: postgres
      query: SELECT id, last_name, email, segment, ltv, churn, churn > 0.5 AS at_risk FROM {s}.contacts
    destination:
      type: salesforce
      object: Contact
      mode: upsert
      unique_identifier: id
      external_id_field: Email
    mappings:
      - source: email
        destination: Email
      - source: segment
        destination: Customer_Segment__c
      - source: ltv
        destination: LTV__cc
      - source: at_risk
        destination: Last_Activity__c
      - constant: \"2024-01-01T00:00:00Z\"
        destination: CreatedDate
  - name: constant_picklist
    source:
      type: postgres
      query: SELECT id FROM {s}.contacts
    destination:
      type: salesforce
      object: Contact
      mode: update
      unique_identifier: id
      external_id_field: Warehouse_Id__c
    mappings:
      - source: id
        destination: Warehouse_Id__c
      - constant: Platinum
        destination: Customer_Segment__c
  - name: missing_object
    source:
      type: postgres
      query: SELECT id FROM {s}.contacts
    destination:
      type: salesforce
      object: Contct
      mode: upsert
      unique_identifier: id
      external_id_field: Warehouse_Id__c
    mappings:
      - source: id
        destination: Warehouse_Id__c
"
        ),
    )
    .unwrap();
    let out = ebb(f.path(), &["validate", "--connect", "--format", "json"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let diags: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let codes: Vec<(String, u64)> = diags["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["code"].as_str().unwrap().to_string(), d["line"].as_u64().unwrap()))
        .collect();
    let has = |code: &str, line: u64| codes.contains(&(code.to_string(), line));
    assert!(has("E908", 11), "Email is not an external ID: {codes:?}");
    assert!(
        has("W911", 15),
        "the query returns Gold for a restricted picklist: {codes:?}"
    );
    assert!(has("E906", 18), "LTV__cc: {codes:?}");
    assert!(has("E909", 19), "a boolean into a date field: {codes:?}");
    assert!(has("E907", 22), "CreatedDate is not writable: {codes:?}");
    assert!(has("W912", 9), "LastName is required to create a Contact: {codes:?}");
    assert!(has("E910", 36), "a constant outside the picklist: {codes:?}");
    assert!(has("E905", 44), "no object Contct: {codes:?}");
    let human = stdout(&ebb(f.path(), &["validate", "--connect"]));
    assert!(human.contains("did you mean `LTV__c`?"), "{human}");
}

#[test]
fn jwt_bearer_and_refresh_token_flows_get_tokens_the_sandbox_accepts() {
    require_postgres!();
    // An RSA key pair: the private key signs the assertion, the sandbox checks the signature.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(ok.success());
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    let config = SandboxConfig {
        jwt_public_key: Some(String::from_utf8(public.stdout).unwrap()),
        jwt_username: Some("integration@acme.example".into()),
        ..SandboxConfig::default()
    };
    let auth = format!(
        "      flow: jwt_bearer
      client_id: ebb-sandbox
      username: integration@acme.example
      private_key_path: {}
      login_url: {{SANDBOX}}
",
        key.display()
    );
    let f = SfFixture::with_auth("jwt", 250, &auth, "", config);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(f.sandbox.calls_to("token"), 1);
    f.assert_synced("with a JWT bearer token");

    let auth = "      flow: refresh_token
      client_id: ebb-sandbox
      client_secret: ${SF_CLIENT_SECRET:-ebb-sandbox}
      refresh_token: ${SF_REFRESH_TOKEN:-ebb-sandbox-refresh-token}
      login_url: {SANDBOX}
";
    let f = SfFixture::with_auth("refresh", 250, auth, "", SandboxConfig::default());
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    f.assert_synced("with a refreshed token");
    // A wrong secret is refused at the token endpoint: a clear, fatal error.
    let auth = "      flow: client_credentials
      client_id: ebb-sandbox
      client_secret: ${SF_WRONG_SECRET:-nope}
";
    let f = SfFixture::with_auth("badsecret", 5, auth, "", SandboxConfig::default());
    let (code, run) = f.run(&[]);
    assert_eq!(code, 1, "{run}");
    let err = run["error"].as_str().unwrap();
    assert!(err.contains("token endpoint") && err.contains("HTTP 400"), "{err}");
}

#[test]
fn unable_to_lock_row_is_retried_record_by_record() {
    require_postgres!();
    let config = SandboxConfig {
        faults: Faults {
            lock_row_next: 5,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    let f = SfFixture::new("lockrow", 300, "", config);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!((count(&run, "confirmed"), count(&run, "rejected")), (300, 0), "{run}");
    assert!(
        count(&run, "api_calls") > 2,
        "the locked records were sent again: {run}"
    );
    f.assert_synced("after lock retries");
}

#[test]
fn insert_creates_and_clear_nulls_the_fields_of_rows_that_leave() {
    require_postgres!();
    let f = SfFixture::new("insert", 50, "", SandboxConfig::default());
    f.model("insert", "Warehouse_Id__c", "");
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(f.sandbox.records("Contact").len(), 50);
    f.assert_synced("after inserts");
    // Changed rows are not updated in insert mode.
    f.sql(&format!(
        "UPDATE {}.contacts SET last_name = 'Renamed' WHERE id = 1",
        f.schema
    ));
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "sent")), (0, 0), "{run}");
    // Upsert with on_removed: clear: a row that leaves the model has its mapped fields
    // nulled (LastName is required, so this model leaves it out).
    std::fs::write(
        f.path().join("models/contacts.yaml"),
        format!(
            "models:
  - name: contacts
    source:
      type: postgres
      query: SELECT id, email, segment FROM {}.contacts
    destination:
      type: salesforce
      object: Contact
      mode: upsert
      unique_identifier: id
      external_id_field: Warehouse_Id__c
      on_removed: clear
    mappings:
      - source: id
        destination: Warehouse_Id__c
      - source: email
        destination: Email
        transform: lower
      - source: segment
        destination: Customer_Segment__c
",
            f.schema
        ),
    )
    .unwrap();
    f.sql(&format!("DELETE FROM {}.contacts WHERE id = 2", f.schema));
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    let two = f
        .sandbox
        .records("Contact")
        .into_iter()
        .find(|r| r["Warehouse_Id__c"] == "2")
        .expect("the record stays");
    assert!(two.get("Customer_Segment__c").is_none_or(Value::is_null), "{two:?}");
    assert!(two.get("Email").is_none_or(Value::is_null), "{two:?}");
}

#[test]
fn a_bulk_insert_keyed_on_id_is_confirmed_once_and_never_sent_again() {
    require_postgres!();
    let f = SfFixture::new("bulkins", 300, "    bulk_threshold: 100\n", SandboxConfig::default());
    // Keyed on `Id` (the key column is not mapped): Salesforce makes the Ids, so the Id
    // column is not uploaded, and results are joined on the rest of the row.
    std::fs::write(
        f.path().join("models/contacts.yaml"),
        format!(
            "models:
  - name: contacts
    source:
      type: postgres
      query: SELECT id, id AS wid, last_name, lower(email) AS email FROM {}.contacts
    destination:
      type: salesforce
      object: Contact
      mode: insert
      unique_identifier: id
    mappings:
      - source: wid
        destination: Warehouse_Id__c
      - source: last_name
        destination: LastName
      - source: email
        destination: Email
",
            f.schema
        ),
    )
    .unwrap();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!((count(&run, "sent"), count(&run, "confirmed")), (300, 300), "{run}");
    assert!(f.sandbox.calls_to("bulk") >= 5, "a Bulk API 2.0 job");
    assert_eq!(f.sandbox.calls_to("collections"), 0);
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "sent")), (0, 0), "nothing is sent twice: {run}");
    let held = f.sandbox.records("Contact");
    assert_eq!(held.len(), 300, "no duplicates in the org");
    let keys: std::collections::BTreeSet<String> = held.iter().map(|r| r["Warehouse_Id__c"].to_string()).collect();
    assert_eq!(keys.len(), 300);
}

/// A minimal org for answers the sandbox does not give: a token endpoint whose
/// `instance_url` is chosen by the test, and scripted data-API answers.
struct FakeOrg {
    url: String,
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    /// The token answer's `instance_url` (default: the org's own URL).
    instance_url: Option<String>,
    /// The next data-API answers, in order; with none left, 500.
    answers: VecDeque<FakeAnswer>,
    /// Data-API requests: method and path.
    log: Vec<(String, String)>,
}

enum FakeAnswer {
    Json(u16, String),
    Raw(Raw),
}

impl FakeOrg {
    async fn start() -> FakeOrg {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let own = url.clone();
        let s = state.clone();
        let token = move || {
            let instance = s.lock().unwrap().instance_url.clone().unwrap_or(own.clone());
            async move {
                axum::Json(json!({"access_token": "00Dfake!token", "instance_url": instance,
                    "token_type": "Bearer", "issued_at": "1708058728442", "id": "x", "signature": "y"}))
            }
        };
        let s = state.clone();
        let data = move |method: axum::http::Method, uri: axum::http::Uri| {
            let next = {
                let mut st = s.lock().unwrap();
                st.log.push((method.to_string(), uri.to_string()));
                st.answers.pop_front()
            };
            async move {
                use axum::response::IntoResponse;
                match next {
                    Some(FakeAnswer::Json(status, body)) => (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body,
                    )
                        .into_response(),
                    Some(FakeAnswer::Raw(raw)) => raw.response(Default::default()),
                    None => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no answer scripted").into_response(),
                }
            }
        };
        let app = axum::Router::new()
            .route("/services/oauth2/token", axum::routing::post(token))
            .fallback(data);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeOrg { url, state }
    }

    fn answer(&self, a: FakeAnswer) {
        self.state.lock().unwrap().answers.push_back(a);
    }

    fn log(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }

    /// A Salesforce destination on this org, upserting Contacts by `Warehouse_Id__c`
    /// through Collections, for connection `name` (one per test: connections are shared by
    /// name).
    fn destination(&self, name: &str, mode: Mode) -> Destination {
        self.destination_with(name, mode, SalesforceApi::Collections)
    }

    fn destination_with(&self, name: &str, mode: Mode, api: SalesforceApi) -> Destination {
        let c: SalesforceConnection = serde_json::from_value(json!({
            "instance_url": self.url,
            "auth": {"flow": "client_credentials", "client_id": "fake", "client_secret": "fake-secret"},
        }))
        .unwrap();
        let plan = DestinationPlan {
            connection: name.into(),
            kind: ConnectionType::Salesforce,
            object: Some("Contact".into()),
            table: None,
            mode,
            key_column: "id".into(),
            key_field: "Warehouse_Id__c".into(),
            api: Some(api),
            on_removed: OnRemoved::Ignore,
            batch_size: 200,
            on_deleted: None,
            deleted_column: None,
            deleted_column_added: false,
            version_column: None,
        };
        let d = SalesforceDestination::new(name, &c, Path::new("."), &plan).unwrap();
        Destination::Salesforce(Box::new(d))
    }
}

fn sf_batch(op: Op, keys: &[&str]) -> Batch {
    Batch {
        model: "contacts".into(),
        run_id: 1,
        op,
        key_field: "Warehouse_Id__c".into(),
        records: keys
            .iter()
            .map(|k| Record {
                key: k.to_string(),
                payload: format!(r#"{{"Warehouse_Id__c":"{k}","LastName":"N{k}"}}"#),
                record_id: None,
            })
            .collect(),
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

const TWO_UPSERTED: &str = r#"[{"id":"003A","success":true,"errors":[],"created":true},{"id":"003B","success":true,"errors":[],"created":false}]"#;

#[tokio::test]
async fn a_token_answer_naming_a_foreign_instance_is_refused_before_the_token_is_used() {
    let spy = Sink::start("id").await;
    let spy_origin = spy.elsewhere().trim_end_matches("/elsewhere").to_string();
    for (n, foreign) in [
        spy_origin.clone(),
        "https://evil.example".to_string(),
        "http://acme.my.salesforce.com".to_string(),
        "https://acme.my.salesforce.com.evil.example".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let org = FakeOrg::start().await;
        org.state.lock().unwrap().instance_url = Some(foreign.clone());
        let d = org.destination(&format!("sf-foreign-{n}"), Mode::Upsert);
        let failed = deliver(&d, &sf_batch(Op::Upsert, &["1", "2"]), &fast())
            .await
            .expect_err(&foreign);
        assert_eq!(failed.attempts, 1, "{foreign}: {failed}");
        assert!(
            failed.message.contains("the token endpoint")
                && failed.message.contains(&format!(
                    "answered the instance_url `{foreign}`, which ebb does not trust"
                )),
            "{foreign}: {failed}"
        );
        assert!(org.log().is_empty(), "{foreign}: {:?}", org.log());
    }
    assert!(spy.strays().is_empty(), "the token went to {:?}", spy.strays());
}

#[tokio::test]
async fn collections_results_of_the_wrong_shape_confirm_nothing() {
    for (n, body) in [
        r#"[{"id":"003A","success":true,"errors":[]},7]"#,
        r#"[{"id":"003A","success":"true"},{"id":"003B","success":true}]"#,
        r#"[{"id":"003A","success":true},{"id":42,"success":true}]"#,
        r#"[{"id":"003A","success":true}]"#,
        r#"{"results":[]}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let org = FakeOrg::start().await;
        org.answer(FakeAnswer::Json(200, body.into()));
        let d = org.destination(&format!("sf-shape-{n}"), Mode::Upsert);
        let failed = deliver(&d, &sf_batch(Op::Upsert, &["1", "2"]), &fast())
            .await
            .expect_err(body);
        assert_eq!(failed.attempts, 1, "{body}: {failed}");
        assert!(failed.message.contains("connection `sf-shape-"), "{body}: {failed}");
    }
}

#[tokio::test]
async fn a_salesforce_answer_cut_off_mid_body_is_retried() {
    let org = FakeOrg::start().await;
    org.answer(FakeAnswer::Raw(Raw::ResetMidBody));
    org.answer(FakeAnswer::Json(200, TWO_UPSERTED.into()));
    let d = org.destination("sf-reset", Mode::Upsert);
    let delivered = deliver(&d, &sf_batch(Op::Upsert, &["1", "2"]), &fast()).await.unwrap();
    assert_eq!(
        delivered.outcomes,
        vec![
            Outcome::Confirmed {
                record_id: Some("003A".into())
            },
            Outcome::Confirmed {
                record_id: Some("003B".into())
            }
        ]
    );
    assert_eq!(org.log().len(), 2, "sent again: {:?}", org.log());
}

#[tokio::test]
async fn salesforce_redirects_and_endless_answers_fail_the_batch() {
    let spy = Sink::start("id").await;
    for status in [301, 302, 307, 308] {
        let org = FakeOrg::start().await;
        org.answer(FakeAnswer::Raw(Raw::Redirect {
            status,
            location: spy.elsewhere(),
        }));
        let d = org.destination(&format!("sf-redirect-{status}"), Mode::Upsert);
        let failed = deliver(&d, &sf_batch(Op::Upsert, &["1", "2"]), &fast())
            .await
            .unwrap_err();
        assert_eq!(failed.attempts, 1, "{failed}");
        assert!(
            failed
                .message
                .contains(&format!("HTTP {status} redirects to `{}`", spy.elsewhere())),
            "{failed}"
        );
    }
    assert!(spy.strays().is_empty(), "followed: {:?}", spy.strays());

    let org = FakeOrg::start().await;
    org.answer(FakeAnswer::Raw(Raw::Endless));
    let d = org.destination("sf-endless", Mode::Upsert);
    let failed = deliver(&d, &sf_batch(Op::Upsert, &["1", "2"]), &fast())
        .await
        .unwrap_err();
    assert_eq!(failed.attempts, 1, "{failed}");
    assert!(failed.message.contains("larger than 64 MiB"), "{failed}");
}

#[tokio::test]
async fn a_soql_answer_without_records_does_not_count_deletes_as_done() {
    let org = FakeOrg::start().await;
    org.answer(FakeAnswer::Json(200, r#"{"totalSize":0,"done":true}"#.into()));
    let d = org.destination("sf-soql-shape", Mode::Mirror);
    let failed = deliver(&d, &sf_batch(Op::Delete, &["1"]), &fast()).await.unwrap_err();
    assert!(failed.message.contains("no `records` list"), "{failed}");
    assert_eq!(org.log().len(), 1, "no delete was sent: {:?}", org.log());
}

#[tokio::test]
async fn a_next_page_url_off_the_instance_is_not_followed() {
    let spy = Sink::start("id").await;
    let org = FakeOrg::start().await;
    let next = format!(
        "{}/services/data/v62.0/query/01gNEXT-2000",
        spy.elsewhere().trim_end_matches("/elsewhere")
    );
    org.answer(FakeAnswer::Json(
        200,
        json!({"totalSize": 1, "done": false, "nextRecordsUrl": next, "records": []}).to_string(),
    ));
    let d = org.destination("sf-next-page", Mode::Mirror);
    let failed = deliver(&d, &sf_batch(Op::Delete, &["1"]), &fast()).await.unwrap_err();
    assert!(failed.message.contains("is not a path on the instance"), "{failed}");
    assert!(spy.strays().is_empty(), "{:?}", spy.strays());
}

/// The answers of a Bulk job up to its results: created, uploaded, closed, then `poll`.
fn bulk_job(org: &FakeOrg, poll: &str) {
    org.answer(FakeAnswer::Json(
        200,
        r#"{"id":"750A","state":"Open","contentUrl":"services/data/v62.0/jobs/ingest/750A/batches"}"#.into(),
    ));
    org.answer(FakeAnswer::Json(201, String::new()));
    org.answer(FakeAnswer::Json(
        200,
        r#"{"id":"750A","state":"UploadComplete"}"#.into(),
    ));
    org.answer(FakeAnswer::Json(200, poll.into()));
}

#[tokio::test]
async fn bulk_answers_that_are_not_the_protocols_confirm_nothing() {
    let keys: Vec<String> = (0..201).map(|i| i.to_string()).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    // A job without a known state is not waited on for an hour.
    let org = FakeOrg::start().await;
    bulk_job(&org, r#"{"id":"750A","status":"done"}"#);
    let d = org.destination_with("sf-bulk-state", Mode::Insert, SalesforceApi::Bulk);
    let started = std::time::Instant::now();
    let failed = deliver(&d, &sf_batch(Op::Insert, &keys), &fast()).await.unwrap_err();
    assert!(failed.message.contains("has no known `state`"), "{failed}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Inserts the results say nothing of may have been created: the batch fails (its rows
    // stay in flight, held back) rather than being rejected and sent again.
    let org = FakeOrg::start().await;
    bulk_job(&org, r#"{"id":"750A","state":"JobComplete"}"#);
    let mut ok = String::from("\"sf__Id\",\"sf__Created\",Warehouse_Id__c,LastName\n");
    for k in &keys[1..] {
        ok.push_str(&format!("003{k},true,{k},N{k}\n"));
    }
    org.answer(FakeAnswer::Json(200, ok));
    org.answer(FakeAnswer::Json(
        200,
        "\"sf__Id\",\"sf__Error\",Warehouse_Id__c,LastName\n".into(),
    ));
    org.answer(FakeAnswer::Json(200, "Warehouse_Id__c,LastName\n".into()));
    let d = org.destination_with("sf-bulk-unanswered", Mode::Insert, SalesforceApi::Bulk);
    let failed = deliver(&d, &sf_batch(Op::Insert, &keys), &fast()).await.unwrap_err();
    assert_eq!(failed.attempts, 1, "{failed}");
    assert!(
        failed.message.contains("reported nothing for 1 of 201 records"),
        "{failed}"
    );
}

//! Inbound runs (`src/engine/inbound/`): Salesforce (the sandbox, over real HTTP) into a
//! DuckDB file, the real PostgreSQL or Snowflake (the SQL API test server), through `engine::run` as `ebb run` calls it: the
//! first run loads everything, the next reads only its window, deletes (soft and hard),
//! late commits within the lookback, replays without duplicates, REST and Bulk alike,
//! faults mid-pull, and a bad field that commits nothing.

use chrono::{Duration as D, Utc};
use ebb::engine::{self, Progress, RunOptions, RunReport, Status};
use ebb::sandbox::{Faults, Sandbox, SandboxConfig};
use ebb::state::StateStore;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

/// A project with the sandbox as connection `salesforce` and a warehouse, one model.
pub(crate) struct Inbound {
    dir: tempfile::TempDir,
    pub(crate) sandbox: Sandbox,
    pub(crate) rt: tokio::runtime::Runtime,
    /// The PostgreSQL schema of the table and the store, when on PostgreSQL.
    pub(crate) pg_schema: Option<String>,
    /// The Snowflake SQL API server, when the warehouse is Snowflake.
    sf: Option<crate::snowflake_server::Server>,
}

/// The warehouse an inbound test writes to.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Warehouse {
    Duckdb,
    Postgres,
    Snowflake,
}

pub(crate) const MODEL: &str = "contacts_in";

/// A table row: `crm_id`, `last_name`, `email`, `stamp` as text, `is_deleted`.
type Row = (String, Option<String>, Option<String>, Option<String>, Option<bool>);

pub(crate) fn model(table: &str, extra_source: &str, on_deleted: &str) -> String {
    format!(
        "models:
  - name: {MODEL}
    source:
      type: salesforce
      object: Contact
      fields: [Id, LastName, Email, SystemModstamp]
      incremental: SystemModstamp
      lookback: 1m
      settle: 0s
{extra_source}    destination:
      type: {{dest}}
      table: {table}
      mode: upsert
      unique_identifier: Id
      on_deleted: {on_deleted}
      batch_size: 7
    mappings:
      - source: Id
        destination: crm_id
      - source: LastName
        destination: last_name
      - source: Email
        destination: email
        transform: [trim, lower]
      - source: SystemModstamp
        destination: stamp
"
    )
}

impl Inbound {
    /// `model_yaml` with `{dest}` the destination type; on PostgreSQL (`pg`) the table's
    /// schema and the state store are a schema of their own.
    pub(crate) fn new(name: &str, model_yaml: &str, pg: bool) -> Inbound {
        Inbound::on(
            name,
            model_yaml,
            if pg { Warehouse::Postgres } else { Warehouse::Duckdb },
        )
    }

    /// `model_yaml` into `warehouse`; Snowflake's tables are upper case (`RAW.CONTACTS`).
    pub(crate) fn on(name: &str, model_yaml: &str, warehouse: Warehouse) -> Inbound {
        let pg = warehouse == Warehouse::Postgres;
        let sandbox = Sandbox::start_in_thread(SandboxConfig {
            query_page_size: 20,
            bulk_step_delay: Duration::from_millis(10),
            ..SandboxConfig::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sf = (warehouse == Warehouse::Snowflake).then(|| {
            rt.block_on(crate::snowflake_server::Server::start_postgres(
                "XY12345",
                "EBB_SYNC",
                crate::table_snowflake::KEY,
                &format!("inbound_{name}"),
            ))
        });
        let pg_schema = pg.then(|| format!("inb_{name}_{}", std::process::id()));
        let (warehouse, state, dest) = match &pg_schema {
            None if sf.is_some() => {
                let key = dir.path().join("sf.p8");
                std::fs::write(&key, crate::table_snowflake::KEY).unwrap();
                (
                    format!(
                        "type: snowflake\n    account: xy12345.eu-central-1\n    user: ebb_sync\n    \
                         private_key_path: sf.p8\n    database: ANALYTICS\n    schema: PUBLIC\n    url: {}",
                        sf.as_ref().map(|s| s.url.clone()).unwrap_or_default()
                    ),
                    String::new(),
                    "snowflake",
                )
            }
            Some(s) => {
                let url = crate::source_postgres::url();
                (
                    format!("type: postgres\n    url: {url}"),
                    format!("state:\n  url: {url}?ebb_schema={s}_state\n"),
                    "postgres",
                )
            }
            None => (
                "type: duckdb\n    path: warehouse.duckdb".to_string(),
                String::new(),
                "duckdb",
            ),
        };
        std::fs::write(
            dir.path().join("ebb.yaml"),
            format!(
                "version: 1\nmodels_dir: models\n{state}connections:\n  warehouse:\n    {warehouse}\n  salesforce:
    type: salesforce
    instance_url: {}
    api_version: \"62.0\"
    auth:
      flow: client_credentials
      client_id: ebb-sandbox
      client_secret: ${{SF_SECRET_INBOUND_TEST:-ebb-sandbox}}
    bulk_threshold: 30
",
                sandbox.url()
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let yaml = model_yaml.replace("{dest}", dest);
        let yaml = match &pg_schema {
            Some(s) => yaml.replace("table: raw.", &format!("table: {s}.")),
            None => yaml,
        };
        std::fs::write(dir.path().join("models/m.yaml"), yaml).unwrap();
        Inbound {
            dir,
            sandbox,
            rt,
            pg_schema,
            sf,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `n` Contacts stamped an hour ago.
    pub(crate) fn seed(&self, n: usize) -> Vec<String> {
        let old = (Utc::now() - D::hours(1)).to_rfc3339();
        let records = (0..n)
            .map(|i| {
                json!({"LastName": format!("Name{i}"), "Email": format!("P{i}@Example.COM"),
                       "CreatedDate": old, "LastModifiedDate": old})
                .as_object()
                .unwrap()
                .clone()
            })
            .collect();
        self.sandbox.insert("Contact", records).unwrap()
    }

    fn store(&self) -> StateStore {
        let report = ebb::validate::validate(self.path(), &[]).unwrap();
        let url = report
            .project
            .as_ref()
            .unwrap()
            .state
            .as_ref()
            .and_then(|s| s.url.clone());
        self.rt.block_on(StateStore::open(url.as_deref(), self.path())).unwrap()
    }

    pub(crate) fn run(&self, opts: RunOptions) -> RunReport {
        let report = ebb::validate::validate(self.path(), &[]).unwrap();
        let plan = report
            .plans
            .iter()
            .find(|p| p.name == MODEL)
            .unwrap_or_else(|| panic!("the model compiles: {:#?}", report.diagnostics));
        let project = report.project.as_ref().unwrap();
        let store = self.store();
        self.rt.block_on(engine::run(
            &report.project_dir,
            project,
            &store,
            plan,
            &opts,
            &Progress::default(),
        ))
    }

    pub(crate) fn ok(&self) -> RunReport {
        let r = self.run(RunOptions::default());
        assert_eq!(r.status, Status::Succeeded, "{:?} {:?}", r.error, r.notes);
        r
    }

    fn watermark(&self) -> Option<ebb::state::Watermark> {
        self.rt.block_on(self.store().watermark(MODEL)).unwrap()
    }

    /// The table's rows, `crm_id → (last_name, email, stamp text, deleted)`.
    pub(crate) fn rows(&self, table: &str) -> Vec<Row> {
        let sql = |t: &str| {
            format!("SELECT crm_id, last_name, email, CAST(stamp AS VARCHAR), is_deleted FROM {t} ORDER BY crm_id")
        };
        if let Some(client) = self.snowflake_db() {
            let sql = format!(
                "SELECT \"CRM_ID\", \"LAST_NAME\", \"EMAIL\", CAST(\"STAMP\" AS VARCHAR), \"IS_DELETED\" FROM {} \
                 ORDER BY \"CRM_ID\"",
                upper(table)
            );
            return self
                .rt
                .block_on(client.query(&sql, &[]))
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect();
        }
        match &self.pg_schema {
            None => {
                let c = duckdb::Connection::open(self.path().join("warehouse.duckdb")).unwrap();
                let mut st = c.prepare(&sql(table)).unwrap();
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Some(s) => {
                let client = crate::support::pg_client(&self.rt);
                let t = table.replace("raw.", &format!("{s}."));
                self.rt
                    .block_on(client.query(&sql(&t), &[]))
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect()
            }
        }
    }

    /// The table's `crm_id`s.
    fn keys(&self, table: &str) -> Vec<String> {
        if let Some(client) = self.snowflake_db() {
            let sql = format!("SELECT \"CRM_ID\" FROM {}", upper(table));
            let rows = self.rt.block_on(client.query(&sql, &[])).unwrap();
            return rows.iter().map(|r| r.get(0)).collect();
        }
        match &self.pg_schema {
            None => {
                let c = duckdb::Connection::open(self.path().join("warehouse.duckdb")).unwrap();
                let mut st = c.prepare(&format!("SELECT crm_id FROM {table}")).unwrap();
                st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            }
            Some(s) => {
                let client = crate::support::pg_client(&self.rt);
                let t = table.replace("raw.", &format!("{s}."));
                let rows = self
                    .rt
                    .block_on(client.query(&format!("SELECT crm_id FROM {t}"), &[]))
                    .unwrap();
                rows.iter().map(|r| r.get(0)).collect()
            }
        }
    }

    /// A connection to the Snowflake server's database, when on Snowflake.
    fn snowflake_db(&self) -> Option<tokio_postgres::Client> {
        let url = self.sf.as_ref()?.database_url();
        Some(self.rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        }))
    }

    /// Runs `sql` on the Snowflake server's database directly (behind ebb's back).
    pub(crate) fn snowflake_sql(&self, sql: &str) {
        let client = self.snowflake_db().expect("a Snowflake warehouse");
        self.rt.block_on(client.batch_execute(sql)).unwrap();
    }

    /// A data-API call to the sandbox with a fresh token.
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let url = self.sandbox.url();
        self.rt.block_on(async {
            let http = ebb::http::client().unwrap();
            let token = crate::support::sandbox_token(&http, &url).await;
            let mut req = http
                .request(method, format!("{url}/services/data/v62.0/{path}"))
                .bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send().await.unwrap().status().as_u16()
        })
    }

    fn update(&self, id: &str, last_name: &str) {
        let s = self.call(
            reqwest::Method::PATCH,
            &format!("sobjects/Contact/{id}"),
            Some(json!({"LastName": last_name})),
        );
        assert_eq!(s, 204);
    }

    fn delete(&self, id: &str) {
        assert_eq!(
            self.call(reqwest::Method::DELETE, &format!("sobjects/Contact/{id}"), None),
            204
        );
    }

    pub(crate) fn drop_pg(&self) {
        if let Some(s) = &self.pg_schema {
            let client = crate::support::pg_client(&self.rt);
            self.rt
                .block_on(client.batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {s} CASCADE; DROP SCHEMA IF EXISTS {s}_state CASCADE"
                )))
                .unwrap();
        }
    }
}

/// `raw.contacts` as Snowflake stores it: `"RAW"."CONTACTS"`.
fn upper(table: &str) -> String {
    table
        .split('.')
        .map(|p| format!("\"{}\"", p.to_ascii_uppercase()))
        .collect::<Vec<_>>()
        .join(".")
}

/// Sleeps past the current second: a window ends at a whole second.
fn next_second() {
    let ms = Utc::now().timestamp_subsec_millis();
    std::thread::sleep(Duration::from_millis(u64::from(1000 - ms.min(999)) + 20));
}

/// The whole story on one table: a full first read, then only the window, an update, a
/// soft delete, a record committed late with a stamp behind the watermark (within the
/// lookback), and a full replay that writes no duplicate.
fn incremental_story(t: &Inbound) {
    let ids = t.seed(45);
    let r = t.ok();
    assert_eq!(r.counts.read, 45, "{:?}", r.notes);
    assert_eq!(r.counts.added, 45);
    assert!(r.counts.api_calls >= 3, "{:?}", r.counts);
    let w1 = t.watermark().expect("a watermark after the first run");
    assert_eq!(w1.from, None);
    assert_eq!(w1.watermark, w1.to);
    assert_eq!(Some(w1.run_id), r.run_id);
    let rows = t.rows("raw.contacts");
    assert_eq!(rows.len(), 45);
    // Each batch written to the table is in the audit log, keys hashed.
    let q = ebb::audit::AuditQuery {
        action: Some("write".into()),
        limit: 100,
        ..Default::default()
    };
    let writes = t.rt.block_on(t.store().audit_list(&q)).unwrap();
    let counts: i64 = writes.iter().map(|w| w.count.unwrap_or(0)).sum();
    assert_eq!(counts, 45, "{writes:?}");
    assert!(
        writes
            .iter()
            .all(|w| w.destination.as_deref().is_some_and(|d| d.contains("contacts"))),
        "{writes:?}"
    );
    assert!(!writes.iter().any(|w| w.keys.contains(&ids[0])), "no key in clear");
    assert!(rows.iter().all(|r| r
        .2
        .as_deref()
        .is_some_and(|e| e.starts_with('p') && e.ends_with("@example.com"))));
    assert!(rows.iter().all(|r| r.4 == Some(false)));

    // Nothing changed: the window reads nothing.
    next_second();
    let r = t.ok();
    assert_eq!((r.counts.read, r.counts.added), (0, 0), "{:?}", r.notes);
    let w2 = t.watermark().unwrap();
    assert!(w2.watermark > w1.watermark);
    assert_eq!(w2.from, Some(w1.watermark - D::minutes(1)));

    // Two updates, a soft delete, and a record committed late: stamped 30 seconds behind
    // the watermark, within the 1-minute lookback.
    t.update(&ids[3], "Changed3");
    t.update(&ids[4], "Changed4");
    t.delete(&ids[5]);
    let late = (w2.watermark - D::seconds(30)).to_rfc3339();
    let late_id = t
        .sandbox
        .insert(
            "Contact",
            vec![
                json!({"LastName": "Late", "Email": "late@example.com", "CreatedDate": late, "LastModifiedDate": late})
                    .as_object()
                    .unwrap()
                    .clone(),
            ],
        )
        .unwrap()
        .remove(0);
    next_second();
    let queries = t.sandbox.calls_to("query");
    let r = t.ok();
    assert_eq!(r.counts.read, 4, "only the window is read: {:?}", r.notes);
    assert_eq!((r.counts.added, r.counts.removed), (3, 1), "the delete counts as one");
    assert!(t.sandbox.calls_to("query") - queries <= 2, "a count and one page");
    let rows = t.rows("raw.contacts");
    assert_eq!(rows.len(), 46);
    let row = |id: &str| rows.iter().find(|r| r.0 == id).unwrap().clone();
    assert_eq!(row(&ids[3]).1.as_deref(), Some("Changed3"));
    assert_eq!(row(&ids[5]).4, Some(true), "soft-deleted, kept");
    assert_eq!(row(&late_id).1.as_deref(), Some("Late"));
    assert_eq!(row(&ids[6]).4, Some(false));

    // Windows overlap and a full resync reads everything again: no duplicate, nothing
    // rewritten.
    let r = t.run(RunOptions {
        full_resync: true,
        ..RunOptions::default()
    });
    assert_eq!(r.status, Status::Succeeded, "{:?}", r.error);
    assert_eq!((r.counts.read, r.counts.added, r.counts.unchanged), (46, 0, 46));
    assert_eq!(t.rows("raw.contacts"), rows);
}

#[test]
fn duckdb_first_run_loads_all_then_reads_only_the_window() {
    let t = Inbound::new("duck", &model("raw.contacts", "", "soft"), false);
    incremental_story(&t);
    // `ebb reset` forgets the watermark: the next run reads everything.
    assert!(t.watermark().is_some());
    t.rt.block_on(t.store().forget(MODEL)).unwrap();
    assert_eq!(t.watermark(), None);
    let r = t.ok();
    assert_eq!(r.counts.read, 46);
}

#[test]
fn postgres_table_and_store_first_run_then_the_window() {
    require_postgres!();
    let t = Inbound::new("pg", &model("raw.contacts", "", "soft"), true);
    incremental_story(&t);
    t.drop_pg();
}

fn hard_delete(t: &Inbound) {
    let ids = t.seed(10);
    t.ok();
    t.delete(&ids[2]);
    next_second();
    let r = t.ok();
    assert_eq!((r.counts.read, r.counts.removed), (1, 1), "{:?}", r.notes);
    let rows = t.keys("raw.contacts");
    assert_eq!(rows.len(), 9);
    assert!(!rows.contains(&ids[2]));
    // Read again (a replayed window): the record stays gone.
    let r = t.run(RunOptions {
        full_resync: true,
        ..RunOptions::default()
    });
    assert_eq!((r.status, r.counts.read), (Status::Succeeded, 10), "{:?}", r.error);
    assert_eq!(t.keys("raw.contacts").len(), 9);
}

/// The same story into Snowflake: the SQL API writer, its tables upper case.
#[test]
fn snowflake_table_first_run_then_the_window() {
    require_postgres!();
    let t = Inbound::on("sf", &model("raw.contacts", "", "soft"), Warehouse::Snowflake);
    incremental_story(&t);
}

#[test]
fn a_hard_delete_removes_the_row_on_snowflake() {
    require_postgres!();
    hard_delete(&Inbound::on(
        "sfhard",
        &model("raw.contacts", "", "hard"),
        Warehouse::Snowflake,
    ));
}

#[test]
fn a_mirror_on_snowflake_marks_purged_records_deleted() {
    require_postgres!();
    mirror(
        &Inbound::on("sfmirror", &mirror_model("soft"), Warehouse::Snowflake),
        false,
    );
}

#[test]
fn a_hard_delete_removes_the_row() {
    hard_delete(&Inbound::new("hard", &model("raw.contacts", "", "hard"), false));
}

#[test]
fn a_hard_delete_removes_the_row_on_postgres() {
    require_postgres!();
    let t = Inbound::new("hardpg", &model("raw.contacts", "", "hard"), true);
    hard_delete(&t);
    t.drop_pg();
}

/// The third kill point: inside the watermark's commit. The test holds the watermark's row
/// (`SELECT … FOR UPDATE` on the PostgreSQL store), so the run, once its rows are
/// committed to the table, blocks in the statement that sets the watermark, and is killed
/// there (SIGKILL). Whether the statement lands or not, the next run reads the window
/// again (its lookback covers it) and the table converges without a duplicate.
#[test]
fn kill_9_during_the_watermark_commit_then_a_rerun_converges_exactly() {
    require_postgres!();
    let t = Inbound::new("wmkill", &model("raw.contacts", "      api: rest\n", "soft"), true);
    let ids = t.seed(30);
    t.ok();
    let before = t.watermark().expect("a watermark after the first run");
    for id in &ids[..4] {
        t.update(id, "Moved");
    }
    next_second();
    let schema = format!("{}_state", t.pg_schema.as_deref().unwrap());
    let holder = crate::support::pg_client(&t.rt);
    let watcher = crate::support::pg_client(&t.rt);
    t.rt.block_on(async {
        holder.batch_execute("BEGIN").await.unwrap();
        let held = holder
            .query(
                &format!("SELECT value FROM {schema}.ebb_meta WHERE key = $1 FOR UPDATE"),
                &[&format!("watermark:{MODEL}")],
            )
            .await
            .unwrap();
        assert_eq!(held.len(), 1, "the watermark's row");
    });
    let mut child = spawn_run(&t, &[]);
    // Waiting for the row: the run is inside the watermark's statement.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = t.rt.block_on(async {
            watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND query LIKE '%ebb_meta%' AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get(0)
        });
        if waiting > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended without waiting for the watermark"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached the watermark"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Its rows are in the table already: the kill lands after the write, in the commit.
    let moved = t
        .rows("raw.contacts")
        .iter()
        .filter(|r| r.1.as_deref() == Some("Moved"))
        .count();
    assert_eq!(moved, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    t.rt.block_on(holder.batch_execute("ROLLBACK")).unwrap();

    // PostgreSQL finishes a statement whose client died once the lock is free (it learns of
    // the death only when it answers), so the watermark is the old one or the killed run's:
    // both are right, since the rows it covers were committed before it.
    let after = t.watermark().unwrap();
    assert!(after == before || after.run_id > before.run_id, "{after:?}");
    let r = t.ok();
    assert_eq!(r.counts.read, 4, "the window is read again: {:?}", r.notes);
    assert!(t.watermark().unwrap().watermark > before.watermark);
    let rows = t.rows("raw.contacts");
    assert_eq!(rows.len(), 30, "no duplicate");
    let crm: std::collections::BTreeMap<String, Option<String>> = t
        .sandbox
        .records("Contact")
        .into_iter()
        .map(|r| {
            (
                r["Id"].as_str().unwrap().to_string(),
                r.get("LastName").and_then(|v| v.as_str()).map(String::from),
            )
        })
        .collect();
    let table: std::collections::BTreeMap<String, Option<String>> = rows.into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(table, crm);
    t.drop_pg();
}

#[test]
fn rest_and_bulk_write_the_same_table() {
    let rest = Inbound::new("rest", &model("raw.contacts", "      api: rest\n", "soft"), false);
    let bulk = Inbound::new("bulk", &model("raw.contacts", "      api: bulk\n", "soft"), false);
    let ids = rest.seed(60);
    // The same records (ids and stamps) in both orgs.
    let records: Vec<Map<String, Value>> = rest.sandbox.records("Contact");
    assert_eq!(records.len(), ids.len());
    let stamp = (Utc::now() - D::hours(1)).to_rfc3339();
    bulk.sandbox
        .insert(
            "Contact",
            records
                .into_iter()
                .map(|mut r| {
                    r.insert("CreatedDate".into(), json!(stamp));
                    r.insert("LastModifiedDate".into(), json!(stamp));
                    r
                })
                .collect(),
        )
        .unwrap();
    // The stamps differ between the orgs (seeded at different times): compare the rest.
    let strip = |rows: Vec<Row>| rows.into_iter().map(|r| (r.0, r.1, r.2, r.4)).collect::<Vec<_>>();
    let (br, rr) = (bulk.ok(), rest.ok());
    assert_eq!((br.counts.read, rr.counts.read), (60, 60));
    assert!(bulk.sandbox.calls_to("bulk") > 0, "read by a Bulk job");
    assert_eq!(rest.sandbox.calls_to("bulk"), 0);
    assert_eq!(strip(rest.rows("raw.contacts")), strip(bulk.rows("raw.contacts")));
}

#[test]
fn a_503_and_a_token_expiry_mid_pull_still_converge() {
    let t = Inbound::new("faults", &model("raw.contacts", "      api: rest\n", "soft"), false);
    t.seed(100);
    // A count and five pages, 30 ms each; after the second page, the tokens expire and
    // the next two requests are answered 503.
    t.sandbox.set_faults(Faults {
        latency: Duration::from_millis(30),
        ..Faults::default()
    });
    let (tokens, queries) = (t.sandbox.calls_to("token"), t.sandbox.calls_to("query"));
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while t.sandbox.calls_to("query") < queries + 3 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            t.sandbox.set_faults(Faults {
                latency: Duration::from_millis(30),
                unavailable_next: 2,
                ..Faults::default()
            });
            t.sandbox.expire_tokens();
        });
        t.run(RunOptions::default())
    });
    assert_eq!(r.status, Status::Succeeded, "{:?}", r.error);
    assert_eq!((r.counts.read, r.counts.added), (100, 100));
    assert!(t.sandbox.calls_to("token") >= tokens + 2, "a token renewed mid-pull");
    // (503 answers are not counted as served calls: the run succeeding is the proof.)
    assert_eq!(t.rows("raw.contacts").len(), 100);
    // The same again from the start: nothing new, nothing duplicated.
    t.sandbox.set_faults(Faults {
        unavailable_next: 2,
        ..Faults::default()
    });
    let r = t.run(RunOptions {
        full_resync: true,
        ..RunOptions::default()
    });
    assert_eq!(r.status, Status::Succeeded, "{:?}", r.error);
    assert_eq!((r.counts.read, r.counts.unchanged), (100, 100));
    assert_eq!(t.rows("raw.contacts").len(), 100);
}

#[test]
fn a_field_the_object_lacks_fails_naming_model_and_field_and_commits_nothing() {
    let yaml = model("raw.contacts", "", "soft").replace(
        "fields: [Id, LastName, Email, SystemModstamp]",
        "fields: [Id, LastName, Email, SystemModstamp, Nope__c]",
    );
    let t = Inbound::new("badfield", &yaml, false);
    t.seed(5);
    let r = t.run(RunOptions::default());
    assert_eq!(r.status, Status::Failed);
    let e = r.error.unwrap();
    eprintln!("{e}");
    assert!(
        e.contains("model `contacts_in`") && e.contains("`salesforce`") && e.contains("Nope__c"),
        "{e}"
    );
    assert_eq!(t.watermark(), None);
    let c = duckdb::Connection::open(t.path().join("warehouse.duckdb")).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'contacts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "no table created");
    // The run is recorded as failed, with the message.
    let runs = t.rt.block_on(t.store().runs(MODEL, 5)).unwrap();
    assert_eq!(runs[0].status, "failed");
    assert_eq!(runs[0].error.as_deref(), Some(e.as_str()));
}

#[test]
fn a_dry_run_reads_and_maps_and_writes_nothing() {
    let t = Inbound::new("dry", &model("raw.contacts", "", "soft"), false);
    t.seed(8);
    let r = t.run(RunOptions {
        dry_run: true,
        ..RunOptions::default()
    });
    assert_eq!(r.status, Status::DryRun, "{:?}", r.error);
    assert_eq!((r.counts.read, r.counts.added), (8, 0));
    assert_eq!(t.watermark(), None);
}

#[test]
fn rows_that_cannot_be_mapped_are_recorded_and_not_written() {
    // `parse_json` of a last name: "42" is JSON, "Name…" is not.
    let yaml = model("raw.contacts", "", "soft").replace(
        "      - source: LastName\n        destination: last_name\n",
        "      - source: LastName\n        destination: last_name\n        transform: parse_json\n",
    );
    let t = Inbound::new("invalid", &yaml, false);
    let old = (Utc::now() - D::hours(1)).to_rfc3339();
    let ids = t
        .sandbox
        .insert(
            "Contact",
            (0..6)
                .map(|i| {
                    let name = if i % 2 == 0 {
                        "42".to_string()
                    } else {
                        format!("Name{i}")
                    };
                    json!({"LastName": name, "CreatedDate": old, "LastModifiedDate": old})
                        .as_object()
                        .unwrap()
                        .clone()
                })
                .collect(),
        )
        .unwrap();
    let r = t.run(RunOptions::default());
    assert_eq!(r.status, Status::Partial, "{:?}", r.error);
    assert_eq!((r.counts.read, r.counts.added, r.counts.invalid), (6, 3, 3));
    let e = r.error.unwrap();
    assert!(
        e.contains("3 rows invalid") && e.contains("ebb errors contacts_in"),
        "{e}"
    );
    let errors = t.rt.block_on(t.store().row_errors(MODEL)).unwrap();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec![ids[1].as_str(), ids[3].as_str(), ids[5].as_str()]);
    assert!(
        errors
            .iter()
            .all(|e| e.kind == "invalid" && e.code == "transform_failed"),
        "{errors:?}"
    );
    let c = duckdb::Connection::open(t.path().join("warehouse.duckdb")).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM raw.contacts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    // The window was read whole: the watermark moves (the invalid rows wait for a fix of
    // the model or of the records; a changed record is read again).
    assert!(t.watermark().is_some());
}

/// `mode: mirror` reads everything every run; a record deleted and then purged from the
/// recycle bin (which `queryAll` no longer returns) is found gone by the full read: marked
/// deleted (`soft`) or removed (`hard`).
fn mirror(t: &Inbound, hard: bool) {
    let ids = t.seed(12);
    let r = t.ok();
    assert_eq!((r.counts.read, r.counts.added), (12, 12));
    let r = t.ok();
    assert_eq!((r.counts.read, r.counts.added, r.counts.unchanged), (12, 0, 12));
    assert_eq!(t.watermark(), None, "no cursor, no watermark");
    assert_eq!(t.keys("raw.contacts").len(), 12);

    t.delete(&ids[3]);
    assert_eq!(t.sandbox.empty_recycle_bin("Contact"), 1);
    let r = t.ok();
    assert_eq!((r.counts.read, r.counts.removed), (11, 1), "{:?}", r.notes);
    if hard {
        let keys = t.keys("raw.contacts");
        assert_eq!(keys.len(), 11);
        assert!(!keys.contains(&ids[3]));
    } else {
        let rows = t.rows("raw.contacts");
        assert_eq!(rows.len(), 12);
        for r in rows {
            assert_eq!(r.4, Some(r.0 == ids[3]), "{r:?}");
        }
    }
    // Nothing more to find gone.
    let r = t.ok();
    assert_eq!((r.counts.read, r.counts.removed), (11, 0), "{:?}", r.notes);
}

fn mirror_model(on_deleted: &str) -> String {
    model("raw.contacts", "", on_deleted)
        .replace("      incremental: SystemModstamp\n", "      incremental: off\n")
        .replace("mode: upsert", "mode: mirror")
}

#[test]
fn a_mirror_reads_everything_every_run_and_marks_purged_records_deleted() {
    mirror(&Inbound::new("mirror", &mirror_model("soft"), false), false);
}

#[test]
fn a_mirror_on_postgres_removes_purged_records_when_hard() {
    require_postgres!();
    let t = Inbound::new("mirrorpg", &mirror_model("hard"), true);
    mirror(&t, true);
    t.drop_pg();
}

/// `ebb run` tells an inbound run in the sync log's words (extracted, written, deleted,
/// skipped), not in the outbound run's (sent, confirmed).
#[test]
fn ebb_run_reports_an_inbound_run_in_its_own_words() {
    let t = Inbound::new("words", &model("raw.contacts", "      api: rest\n", "soft"), false);
    let ids = t.seed(9);
    let run = |args: &[&str]| {
        let out = crate::support::ebb(t.path(), args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run(&["run", MODEL]);
    assert!(
        out.contains("extracted 9  written 9  deleted 0  skipped 0  invalid 0"),
        "{out}"
    );
    assert!(!out.contains("confirmed"), "{out}");
    t.delete(&ids[0]);
    next_second();
    let out = run(&["run", MODEL]);
    assert!(out.contains("extracted 1  written 0  deleted 1  skipped 0"), "{out}");
}

/// `ebb run MODEL ARGS` as a process of its own, its output dropped.
fn spawn_run(t: &Inbound, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", MODEL])
        .args(args)
        .current_dir(t.path())
        .env_remove("EBB_PROJECT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `ebb run --full-resync` as a process (a count and six pages), killed (SIGKILL) once the
/// sandbox has served `pages` query requests since `before` (polled every 2 ms), then
/// `delay` later.
fn run_and_kill(t: &Inbound, before: u64, pages: u64, delay: Duration) -> std::process::ExitStatus {
    let mut child = spawn_run(t, &["--full-resync"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while t.sandbox.calls_to("query") < before + pages && std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL (the run may have ended already)
    child.wait().unwrap()
}

#[test]
fn kill_9_during_the_read_or_before_the_watermark_then_a_rerun_converges_exactly() {
    let t = Inbound::new("kill", &model("raw.contacts", "      api: rest\n", "soft"), false);
    let ids = t.seed(120);
    // Six pages of 20; each request takes 40 ms, so a kill lands mid-read (3 requests:
    // the count and two pages), or once the last page is served (7: writing the last
    // batches, or setting the watermark).
    t.sandbox.set_faults(Faults {
        latency: Duration::from_millis(40),
        ..Faults::default()
    });
    let mut killed_mid = 0;
    for (round, (pages, delay)) in [(3u64, 0u64), (7, 0), (7, 15), (5, 5)].into_iter().enumerate() {
        // Each round changes some records first.
        for id in ids.iter().skip(round * 7).take(5) {
            t.update(id, &format!("Round{round}"));
        }
        next_second();
        let before = t.sandbox.calls_to("query");
        let watermark = t.watermark();
        let status = run_and_kill(&t, before, pages, Duration::from_millis(delay));
        if status.code().is_none() {
            killed_mid += 1;
            if pages < 7 {
                assert_eq!(
                    t.watermark(),
                    watermark,
                    "round {round}: killed mid-read, the watermark stays"
                );
            }
        }
        // The rerun, in this process, converges on exactly what the org holds.
        let r = t.ok();
        assert!(
            r.counts.read > 0 || status.code() == Some(0),
            "round {round}: {:?}",
            r.notes
        );
        let org: std::collections::BTreeMap<String, String> = t
            .sandbox
            .records("Contact")
            .into_iter()
            .map(|r| {
                (
                    r["Id"].as_str().unwrap().to_string(),
                    r["LastName"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let rows = t.rows("raw.contacts");
        assert_eq!(rows.len(), org.len(), "round {round}: no duplicate, nothing missing");
        for row in &rows {
            assert_eq!(row.1.as_ref(), org.get(&row.0), "round {round}: {}", row.0);
        }
        let w = t.watermark().expect("a watermark after the rerun");
        assert_eq!(Some(w.run_id), r.run_id, "round {round}");
        // The first load defers the table's key; whoever ends it, killed or not, the table
        // has its key after the rerun.
        let c = duckdb::Connection::open(t.path().join("warehouse.duckdb")).unwrap();
        let key: String = c
            .query_row(
                "SELECT constraint_column_names[1] FROM duckdb_constraints() \
                 WHERE table_name = 'contacts' AND constraint_type = 'PRIMARY KEY'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("round {round}: no primary key: {e}"));
        assert_eq!(key, "crm_id");
    }
    assert!(killed_mid >= 2, "the kills landed before the runs ended: {killed_mid}");
}

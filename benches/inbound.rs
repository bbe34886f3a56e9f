//! Benchmark: inbound runs (Salesforce → a DuckDB table), ebb side by side with a Python
//! peer written the obvious way (`benches/peer/inbound_peer.py`: simple-salesforce
//! `query_all` plus a DuckDB insert), on the same sandbox.
//!
//! This process serves the Salesforce sandbox (`ebb::sandbox`, real HTTP on loopback) in
//! a thread and seeds it with N Contacts (default 1M), their `SystemModstamp`s spread over
//! the 30 days before two hours ago. Then, for each tool on a DuckDB file of its own:
//! - **full pull**: the first run reads every Contact. ebb's model says `api: auto`, which
//!   counts the window first and, above the connection's `bulk_threshold` (10,000), reads
//!   through a Bulk API 2.0 `queryAll` job (CSV pages of 50,000 by `Sforce-Locator`); the
//!   peer pages through `queryAll` over REST (`nextRecordsUrl`, 2,000 records a page);
//! - **1% change**: 1% of the Contacts (every hundredth) get a new `LastName` through
//!   sObject Collections, which moves their `SystemModstamp` to now; 6 s later (past both
//!   tools' 5 s settle) each tool reads its window, and must read the changed rows and
//!   nothing else but what its lookback re-reads (ebb: the window starts 10 minutes
//!   before the end of the last one; the peer: 10 minutes before the newest stamp it
//!   loaded, so it re-reads the seeds stamped in those 10 minutes).
//!
//! After each scenario the two tables are compared row for row (every column but
//! `_ebb_extracted_at`): the peer is the oracle of what ebb should have written, and the
//! other way round. Both transform as the seed's "CRM to Data Platform" table says
//! (`initcap`, `trim` + `lower`, `phone`).
//!
//! Each tool runs in a process of its own (ebb: this executable with `--child`, as `ebb run`
//! makes the run; the peer in the venv of `benches/peer/setup.sh`), so its wall time and
//! peak RSS are its alone; the sandbox's time serving them is this process's, on the same
//! two cores. Printed per scenario and tool: wall time, the tool's own time, rows read,
//! rows/s, API calls, peak RSS, ebb's phases and the peer's (query, write).
//!
//! Run: `cargo bench --bench inbound`. Environment: `EBB_BENCH_INBOUND_ROWS` (default
//! 1000000), `EBB_BENCH_PEER=0` (ebb alone), `EBB_BENCH_KEEP=1` (keep the directories).

use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

mod common;
#[path = "common/runs.rs"]
mod runs;
use runs::{env_usize, measure, mib, peer_python, phases, rate};

/// The allocator of the `ebb` binary (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL: &str = "contacts_in";
const TABLE: &str = "raw.crm_customers";

fn project(dir: &Path, sandbox_url: &str) {
    // `EBB_BENCH_INBOUND_BATCH`: the model's `batch_size` (rows a write), unset by default.
    let batch = std::env::var("EBB_BENCH_INBOUND_BATCH")
        .map(|b| format!("      batch_size: {b}\n"))
        .unwrap_or_default();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(
        dir.join("ebb.yaml"),
        format!(
            "version: 1
models_dir: models
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  salesforce:
    type: salesforce
    instance_url: {sandbox_url}
    api_version: \"62.0\"
    auth:
      flow: client_credentials
      client_id: ebb-sandbox
      client_secret: ${{EBB_BENCH_SF_SECRET:-ebb-sandbox}}
"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("models/contacts.yaml"),
        format!(
            "models:
  - name: {MODEL}
    source:
      type: salesforce
      object: Contact
      fields: [Id, FirstName, LastName, Email, Phone, AccountId, SystemModstamp, IsDeleted]
      incremental: SystemModstamp
      lookback: 10m
      settle: 5s
      api: auto
    destination:
      type: duckdb
      table: {TABLE}
      mode: upsert
      unique_identifier: Id
      on_deleted: soft
{batch}    mappings:
      - source: Id
        destination: crm_id
      - source: FirstName
        destination: first_name
        transform: initcap
      - source: LastName
        destination: last_name
        transform: initcap
      - source: Email
        destination: email
        transform: [trim, lower]
      - source: Phone
        destination: phone_primary
        transform: phone
      - source: AccountId
        destination: account_id
      - source: SystemModstamp
        destination: modified_date
      - source: IsDeleted
        destination: is_deleted
"
        ),
    )
    .unwrap();
}

/// `n` Contacts, stamped from 30 days before two hours ago up to two hours ago.
fn seed(sandbox: &ebb::sandbox::Sandbox, n: usize) {
    let newest = chrono::Utc::now() - chrono::Duration::hours(2);
    let span_ms = chrono::Duration::days(30).num_milliseconds();
    for start in (0..n).step_by(50_000) {
        let records = (start..(start + 50_000).min(n))
            .map(|i| {
                let at = newest - chrono::Duration::milliseconds(span_ms - span_ms * i as i64 / n.max(1) as i64);
                let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let mut r = Map::new();
                r.insert("FirstName".into(), json!(format!("ann-marie {i}")));
                r.insert("LastName".into(), json!(format!("o'neil smith{}", i % 977)));
                r.insert("Email".into(), json!(format!("Person.{i}@Example.COM")));
                r.insert(
                    "Phone".into(),
                    json!(format!("(555) {:03}-{:04}", i % 1000, i % 10_000)),
                );
                r.insert("CreatedDate".into(), json!(at));
                r.insert("LastModifiedDate".into(), json!(at));
                r
            })
            .collect();
        sandbox.insert("Contact", records).unwrap();
    }
}

/// Changes every hundredth Contact's `LastName` through sObject Collections, as a user's
/// edits would; returns how many.
fn change_one_percent(sandbox: &ebb::sandbox::Sandbox) -> usize {
    let ids: Vec<String> = sandbox
        .records("Contact")
        .iter()
        .step_by(100)
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    let url = sandbox.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = ebb::http::client().unwrap();
        let token: Value = http
            .post(format!("{url}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&client_id=ebb-sandbox&client_secret=ebb-sandbox")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = token["access_token"].as_str().unwrap().to_string();
        for chunk in ids.chunks(200) {
            let records: Vec<Value> = chunk
                .iter()
                .map(|id| json!({"attributes": {"type": "Contact"}, "Id": id, "LastName": format!("changed {id}")}))
                .collect();
            let answer: Value = http
                .patch(format!("{url}/services/data/v62.0/composite/sobjects"))
                .bearer_auth(&bearer)
                .json(&json!({"allOrNone": true, "records": records}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ok = answer
                .as_array()
                .is_some_and(|a| a.len() == chunk.len() && a.iter().all(|r| r["success"] == json!(true)));
            assert!(ok, "the change was refused: {answer}");
        }
    });
    ids.len()
}

struct Outcome {
    wall: f64,
    own: f64,
    read: u64,
    calls: u64,
    peak_rss: u64,
    detail: String,
}

/// Runs one tool's process (which prints its JSON line last) and counts the sandbox's
/// data calls it made; `detail` says its phases.
fn run(cmd: Command, what: &str, sandbox: &ebb::sandbox::Sandbox, detail: fn(&Value) -> String) -> Outcome {
    let before = sandbox.calls();
    let (v, wall, _) = measure(cmd, what, || None);
    Outcome {
        wall,
        own: v["secs"].as_f64().unwrap(),
        read: v["read"].as_u64().unwrap(),
        calls: sandbox.calls() - before,
        peak_rss: v["peak_rss"].as_u64().unwrap(),
        detail: detail(&v),
    }
}

fn run_ebb(dir: &Path, sandbox: &ebb::sandbox::Sandbox) -> Outcome {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--child", &dir.display().to_string(), MODEL]);
    run(cmd, "ebb", sandbox, phases)
}

fn run_peer(python: &Path, dir: &Path, sandbox: &ebb::sandbox::Sandbox) -> Outcome {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer/inbound_peer.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--salesforce", &sandbox.url()])
        .arg("--warehouse")
        .arg(dir.join("warehouse.duckdb"))
        .arg("--state")
        .arg(dir.join("peer-state.json"));
    run(cmd, "peer", sandbox, |v| {
        format!(
            "query {:.2} s, write {:.2} s",
            v["query_secs"].as_f64().unwrap_or(f64::NAN),
            v["write_secs"].as_f64().unwrap_or(f64::NAN)
        )
    })
}

/// Rows that differ between the two tables (every column but `_ebb_extracted_at`), and
/// the rows of ebb's.
fn compare(ebb_dir: &Path, peer_dir: &Path) -> (u64, u64) {
    let db = duckdb::Connection::open_in_memory().unwrap();
    db.execute_batch(&format!(
        "ATTACH '{}' AS e (READ_ONLY); ATTACH '{}' AS p (READ_ONLY);",
        ebb_dir.join("warehouse.duckdb").display(),
        peer_dir.join("warehouse.duckdb").display()
    ))
    .unwrap();
    let differ = [
        "first_name",
        "last_name",
        "email",
        "phone_primary",
        "account_id",
        "is_deleted",
    ]
    .iter()
    .map(|c| format!("a.{c} IS DISTINCT FROM b.{c}"))
    .chain(["a.modified_date::TIMESTAMP IS DISTINCT FROM b.modified_date::TIMESTAMP".to_string()])
    .collect::<Vec<_>>()
    .join(" OR ");
    let sql = format!(
        "SELECT count(*) FILTER (WHERE a.crm_id IS NULL OR b.crm_id IS NULL OR {differ}),
                count(a.crm_id)
         FROM e.{TABLE} a FULL OUTER JOIN p.{TABLE} b ON a.crm_id = b.crm_id"
    );
    db.query_row(&sql, [], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })
    .unwrap()
}

fn print(title: &str, expect_read: usize, ebb: &Outcome, peer: Option<&Outcome>) {
    println!("\n{title}");
    println!(
        "  {:<5} {:>8} {:>8} {:>10} {:>11} {:>6} {:>9}  phases",
        "tool", "wall s", "own s", "read", "rows/s", "calls", "peak RSS"
    );
    for (name, o) in std::iter::once(("ebb", ebb)).chain(peer.map(|p| ("peer", p))) {
        println!(
            "  {:<5} {:>8.2} {:>8.2} {:>10} {:>11} {:>6} {:>9}  {}",
            name,
            o.wall,
            o.own,
            o.read,
            rate(o.read as f64, o.wall),
            o.calls,
            mib(o.peak_rss),
            o.detail
        );
    }
    if ebb.read as usize != expect_read {
        println!("  ! ebb read {} rows, the window holds {expect_read}", ebb.read);
    }
    if let Some(p) = peer {
        println!("  peer/ebb: wall {:.1}×", p.wall / ebb.wall);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        runs::child(Path::new(&args[i + 1]), &args[i + 2], &Default::default());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let rows = env_usize("EBB_BENCH_INBOUND_ROWS", 1_000_000);
    let python = if std::env::var("EBB_BENCH_PEER").as_deref() == Ok("0") {
        None
    } else {
        peer_python("duckdb, requests, simple_salesforce")
    };
    let sandbox = ebb::sandbox::Sandbox::start_in_thread(ebb::sandbox::SandboxConfig {
        bulk_step_delay: std::time::Duration::from_millis(50),
        daily_api_limit: 10_000_000,
        ..Default::default()
    });
    let started = Instant::now();
    seed(&sandbox, rows);
    println!(
        "sandbox: {} Contacts seeded in {:.1} s",
        rows,
        started.elapsed().as_secs_f64()
    );
    let root = tempfile::tempdir().unwrap();
    let (ebb_dir, peer_dir) = (root.path().join("ebb"), root.path().join("peer"));
    project(&ebb_dir, &sandbox.url());
    std::fs::create_dir_all(&peer_dir).unwrap();
    let mut summary = Vec::new();

    let peer = python.as_deref().map(|p| run_peer(p, &peer_dir, &sandbox));
    let ebb = run_ebb(&ebb_dir, &sandbox);
    print(&format!("full pull, {rows} Contacts"), rows, &ebb, peer.as_ref());
    if let Some(p) = &peer {
        let (differ, n) = compare(&ebb_dir, &peer_dir);
        println!("  tables: {n} rows in ebb's, {differ} differing from the peer's");
        assert_eq!((differ, n), (0, rows as u64), "the tables differ");
        let ratio = p.wall / ebb.wall;
        summary.push(format!(
            "  [{}] full pull ≥ 10× the peer: {ratio:.1}× ({:.2} s vs {:.2} s)",
            if ratio >= 10.0 { "met" } else { "MISSED" },
            ebb.wall,
            p.wall
        ));
    }

    let changed = change_one_percent(&sandbox);
    std::thread::sleep(std::time::Duration::from_secs(6));
    let peer = python.as_deref().map(|p| run_peer(p, &peer_dir, &sandbox));
    let ebb = run_ebb(&ebb_dir, &sandbox);
    print(
        &format!("1% change, {changed} Contacts edited"),
        changed,
        &ebb,
        peer.as_ref(),
    );
    summary.push(format!(
        "  [{}] the incremental run reads only the changed rows: ebb read {} of {changed}",
        if ebb.read as usize == changed { "met" } else { "MISSED" },
        ebb.read
    ));
    if let Some(p) = &peer {
        let (differ, n) = compare(&ebb_dir, &peer_dir);
        println!("  tables: {n} rows in ebb's, {differ} differing from the peer's");
        assert_eq!((differ, n), (0, rows as u64), "the tables differ");
        summary.push(format!(
            "  [info] 1% change: ebb {:.2} s, peer {:.2} s ({:.1}×)",
            ebb.wall,
            p.wall,
            p.wall / ebb.wall
        ));
    }
    println!("\nsummary\n{}", summary.join("\n"));
    if std::env::var("EBB_BENCH_KEEP").as_deref() == Ok("1") {
        println!("kept: {}", root.keep().display());
    }
}

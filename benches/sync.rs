//! Benchmark: whole runs of the sync engine (DESIGN §6).
//!
//! Scenarios, each run in a child process of its own so that its time and peak resident
//! memory are its alone:
//! - `first sync`: N rows (default 1M) from DuckDB to a local HTTP sink (batches of 200,
//!   4 in flight), SQLite state: rows/s, requests, and the seconds the 5,000 grouped
//!   commits add up to;
//! - `1% change`: 1% of those rows updated in the warehouse: requests (must be exactly
//!   ceil(changed/200)) and seconds;
//! - `no change`: a second run over M rows (default 10M) with nothing changed: seconds, peak
//!   RSS, and the bytes per row of the diff table;
//! - `API-bound`: 20,000 rows to a sink answering each request after 50 ms, 4 in flight:
//!   seconds against the ideal ceil(calls / concurrency) × 50 ms.
//!
//! Run: `cargo bench --bench sync` (release build). `EBB_BENCH_ROWS=1000000` and
//! `EBB_BENCH_NOCHANGE_ROWS=10000000` change the sizes; `EBB_BENCH_STATE=postgres` uses a
//! PostgreSQL state store (`EBB_TEST_POSTGRES_URL`) instead of SQLite.

use axum::routing::post;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::peak_rss;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Child: one run of `model` in `project`; prints a JSON line with the seconds, the peak
/// RSS and the run's counts.
fn child(project: &Path, model: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = ebb::validate::validate(project, &[]).unwrap();
    let plan = report
        .plans
        .iter()
        .find(|p| p.name == model)
        .unwrap_or_else(|| panic!("model {model}: {:?}", report.diagnostics));
    let spec = report.project.as_ref().unwrap();
    let url = spec.state.as_ref().and_then(|s| s.url.clone());
    let started = Instant::now();
    let r = rt.block_on(async {
        let store = ebb::state::StateStore::open(url.as_deref(), project).await.unwrap();
        let progress = ebb::engine::Progress::default();
        ebb::engine::run(
            project,
            spec,
            &store,
            plan,
            &ebb::engine::RunOptions::default(),
            &progress,
        )
        .await
    });
    let secs = started.elapsed().as_secs_f64();
    assert!(
        matches!(r.status, ebb::engine::Status::Succeeded),
        "{:?}: {:?}",
        r.status,
        r.error
    );
    let k = r.counts;
    println!(
        "{}",
        serde_json::json!({
            "secs": secs, "rss": peak_rss(), "read": k.read, "sent": k.sent, "changed": k.changed,
            "unchanged": k.unchanged, "calls": k.api_calls,
            "timings": r.timings.iter().map(|(k, d)| format!("{k} {:.2} s", d.as_secs_f64())).collect::<Vec<_>>(),
        })
    );
}

/// Runs the child for one scenario.
fn measure(project: &Path, model: &str) -> Value {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", &project.display().to_string(), model])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("{model}: {}\n{}", text, String::from_utf8_lossy(&out.stderr)))
}

/// A sink that confirms every batch, after `delay`.
fn start_sink(delay: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/hook",
                    post(move |body: axum::body::Bytes| async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        std::hint::black_box(body.len());
                        "{}"
                    }),
                )
                .layer(axum::extract::DefaultBodyLimit::disable());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/hook", rx.recv().unwrap())
}

/// A project over a DuckDB warehouse of `rows` rows, syncing to the sink at `hook`.
fn project(dir: &Path, rows: usize, hook: &str, batch: usize, state: Option<&str>) {
    let db = duckdb::Connection::open(dir.join("warehouse.duckdb")).unwrap();
    db.execute_batch(&format!(
        "CREATE TABLE customers AS SELECT i AS id, 'First' || i AS first_name, 'Last' || (i % 9973) AS last_name,
            'User' || i || '@Example.com' AS email, ['bronze', 'silver', 'gold'][1 + i % 3] AS segment,
            round((i % 10007) * 1.37, 2)::DECIMAL(12, 2) AS lifetime_value, (i % 101) / 100.0 AS churn,
            TIMESTAMP '2024-01-01' + to_seconds(i) AS updated_at
         FROM range(1, {rows} + 1) AS t(i)"
    ))
    .unwrap();
    drop(db);
    let state = state.map(|u| format!("state:\n  url: {u}\n")).unwrap_or_default();
    std::fs::write(
        dir.join("ebb.yaml"),
        format!(
            "version: 1\n{state}connections:\n  warehouse:\n    type: duckdb\n    path: warehouse.duckdb\n  hook:\n    type: http\n    url: {hook}\n    batch_size: {batch}\n    max_concurrency: 4\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(
        dir.join("models/customers.yaml"),
        "models:
  - name: customers
    source:
      type: duckdb
      query: SELECT id, first_name, last_name, email, segment, lifetime_value, churn, updated_at FROM customers
    destination:
      type: http
      mode: upsert
      unique_identifier: id
    mappings:
      - source: id
        destination: id
      - source: first_name
        destination: FirstName
      - source: last_name
        destination: LastName
      - source: email
        destination: Email
        transform: lower
      - source: segment
        destination: Segment__c
      - source: lifetime_value
        destination: LTV__c
        transform: round(2)
      - source: churn
        destination: Churn_Risk__c
        transform: scale(0, 1, 0, 100)
      - source: updated_at
        destination: Last_Update__c
",
    )
    .unwrap();
}

fn state_url(tag: &str) -> Option<String> {
    (std::env::var("EBB_BENCH_STATE").as_deref() == Ok("postgres")).then(|| {
        let base = std::env::var("EBB_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let sep = if base.contains('?') { '&' } else { '?' };
        let schema = format!("ebb_bench_{tag}_{}", std::process::id());
        format!("{base}{sep}ebb_schema={schema}")
    })
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&PathBuf::from(&args[i + 1]), &args[i + 2]);
        return;
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` asks; there is nothing to test
    }
    let rows = env_usize("EBB_BENCH_ROWS", 1_000_000);
    let nochange_rows = env_usize("EBB_BENCH_NOCHANGE_ROWS", 10_000_000);
    let state_kind = if state_url("x").is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("sync engine, release build, {state_kind} state");

    // First sync, then 1% change.
    let sink = start_sink(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), rows, &sink, 200, state_url("first").as_deref());
    let first = measure(dir.path(), "customers");
    let secs = first["secs"].as_f64().unwrap();
    println!(
        "first sync      {rows:>10} rows  {secs:>7.2} s  {:>9.0} rows/s  {} requests  peak RSS {}",
        rows as f64 / secs,
        first["calls"],
        mib(first["rss"].as_f64().unwrap())
    );
    let db = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    db.execute_batch("UPDATE customers SET segment = 'platinum' WHERE id % 100 = 0")
        .unwrap();
    drop(db);
    let changed = rows / 100;
    let one = measure(dir.path(), "customers");
    println!(
        "1% change       {rows:>10} rows  {:>7.2} s  changed {}  requests {} (ceil({changed}/200) = {})",
        one["secs"].as_f64().unwrap(),
        one["changed"],
        one["calls"],
        changed.div_ceil(200)
    );
    drop(dir);

    // No change over a large model.
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), nochange_rows, &sink, 1000, state_url("nochange").as_deref());
    let setup = measure(dir.path(), "customers");
    println!(
        "  (setup: first sync of {nochange_rows} rows in {:.1} s)",
        setup["secs"].as_f64().unwrap()
    );
    let none = measure(dir.path(), "customers");
    let table = ebb::engine::table::SnapTable::with_rows(nochange_rows).bytes() as f64 / nochange_rows as f64;
    println!("  (no change, by phase: {})", none["timings"]);
    println!(
        "no change       {nochange_rows:>10} rows  {:>7.2} s  sent {}  peak RSS {} ({:.0} B/row; diff table {table:.1} B/row)",
        none["secs"].as_f64().unwrap(),
        none["sent"],
        mib(none["rss"].as_f64().unwrap()),
        none["rss"].as_f64().unwrap() / nochange_rows as f64
    );
    drop(dir);

    // API-bound: 50 ms a call, 4 in flight.
    let slow = start_sink(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), 20_000, &slow, 200, state_url("api").as_deref());
    let api = measure(dir.path(), "customers");
    let calls = api["calls"].as_u64().unwrap();
    let ideal = calls.div_ceil(4) as f64 * 0.05;
    let got = api["secs"].as_f64().unwrap();
    println!(
        "API-bound       {:>10} rows  {got:>7.2} s  {calls} calls, ideal ceil({calls}/4) × 50 ms = {ideal:.2} s ({:+.1}%)",
        20_000,
        (got / ideal - 1.0) * 100.0
    );
}

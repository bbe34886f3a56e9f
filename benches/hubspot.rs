//! Benchmark: a first sync of 100,000 contacts from DuckDB to the sandbox's HubSpot API
//! (`ebb::sandbox`, real HTTP on loopback, the `hubspot` destination, 100 inputs a
//! `batch/upsert`, 4 in flight), at HubSpot's limit and well above it.
//!
//! HubSpot allows a private app N requests in any rolling 10 seconds (190 for Professional
//! and Enterprise) and tells every answer how many are left (`X-HubSpot-RateLimit-*`); ebb
//! paces a connection by those headers (`src/hubspot/pace.rs`). Calls are exactly
//! ceil(rows / 100) when nothing is refused, so the limit sets a floor on the run: call k
//! (from 0) cannot start before floor(k / N) × 10 s, and the run cannot end before its last
//! call starts, floor((calls − 1) / N) × 10 s (1,000 calls at 190: 5 full windows, 50 s).
//! Two cases, each on fresh data, state and sandbox:
//!
//! - **at the limit** (default 190 per 10 s): the target is a run within 10% of that floor,
//!   with no request refused (429);
//! - **10× the limit** (1,900 per 10 s): the limit does not bind (the floor is 0), so the run
//!   shows what ebb and the sandbox take of themselves.
//!
//! ebb runs in a process of its own (this executable with `--child`, as `ebb run` makes
//! the run); the sandbox serves from this process, on the same cores. Printed per case: the
//! calls (checked: exactly ceil(rows / 100)), the 429s the sandbox answered, the run's own
//! time and the process's wall time, records/s, the floor and the ratio of the run to it,
//! and ebb's phases.
//!
//! Run: `cargo bench --bench hubspot` (release build). Environment:
//! `EBB_BENCH_HUBSPOT_ROWS` (default 100000), `EBB_BENCH_HUBSPOT_LIMIT` (default 190),
//! `EBB_BENCH_KEEP=1` (keep the work directories).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
#[path = "common/runs.rs"]
#[allow(dead_code)]
mod runs;
use runs::{env_usize, measure, phases, rate};

/// The allocator of the `ebb` binary (src/main.rs), so that runs here are runs as `ebb run`
/// makes them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Inputs a `batch/upsert` takes.
const BATCH: u64 = 100;
/// HubSpot's rolling window.
const WINDOW: Duration = Duration::from_secs(10);
const TOKEN_VAR: &str = "EBB_BENCH_HUBSPOT_TOKEN";

/// The earliest a run of `calls` requests can end under `limit` requests per [`WINDOW`]:
/// the first `limit` at once, then `limit` more each window, the last starting at
/// floor((calls − 1) / limit) windows.
fn floor_secs(calls: u64, limit: u64) -> f64 {
    (calls.saturating_sub(1) / limit.max(1)) as f64 * WINDOW.as_secs_f64()
}

/// A project in `dir`: a warehouse of `rows` contacts, and a model upserting them to the
/// HubSpot API at `url` by email.
fn project(dir: &Path, rows: usize, url: &str) {
    let c = duckdb::Connection::open(dir.join("warehouse.duckdb")).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE contacts AS
           SELECT 'user' || i || '@example.com' AS email, 'First' || i AS first_name,
                  'Last' || (i % 9973) AS last_name, ((i % 10007) * 1.37)::DECIMAL(12, 2) AS ltv,
                  ['lead', 'customer', 'opportunity'][1 + i % 3] AS stage
           FROM range({rows}) AS t(i)"
    ))
    .unwrap();
    drop(c);
    std::fs::write(
        dir.join("ebb.yaml"),
        format!(
            "version: 1
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  hubspot:
    type: hubspot
    token: ${{{TOKEN_VAR}}}
    base_url: {url}
"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(
        dir.join("models/contacts.yaml"),
        "models:
  - name: contacts
    source:
      type: duckdb
      query: SELECT email, first_name, last_name, ltv, stage FROM contacts
    destination:
      type: hubspot
      object: contacts
      unique_identifier: email
    mappings:
      - source: email
        destination: email
      - source: first_name
        destination: firstname
      - source: last_name
        destination: lastname
      - source: ltv
        destination: ltv
      - source: stage
        destination: lifecyclestage
",
    )
    .unwrap();
}

/// What one case measured.
struct Case {
    limit: u64,
    calls: u64,
    refused: u64,
    /// The run's own time (engine run, after loading the project).
    run: f64,
    /// The process's, start to exit.
    wall: f64,
    floor: f64,
    phases: String,
}

/// A first sync of `rows` contacts against a sandbox allowing `limit` requests per window.
fn case(rows: usize, limit: u64) -> Case {
    let sandbox = ebb::sandbox::Sandbox::start_in_thread(ebb::sandbox::SandboxConfig {
        hubspot: ebb::sandbox::HubSpotConfig {
            ten_second_limit: limit,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut dir = Some(tempfile::Builder::new().prefix("ebb-bench-hs-").tempdir().unwrap());
    let path = dir.as_ref().unwrap().path().to_path_buf();
    if std::env::var("EBB_BENCH_KEEP").as_deref() == Ok("1") {
        let _ = dir.take().map(tempfile::TempDir::keep);
        println!("  (work directory kept: {})", path.display());
    }
    project(&path, rows, &sandbox.url());
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--child", &path.display().to_string(), "contacts"])
        .env(TOKEN_VAR, sandbox.hubspot().token());
    let (v, wall, _) = measure(cmd, "ebb", || None);
    let hub = sandbox.hubspot();
    let live = hub.records("contacts").iter().filter(|r| r["archived"] != true).count();
    assert_eq!(live, rows, "contacts in the sandbox after the run");
    let expected = (rows as u64).div_ceil(BATCH);
    let calls = hub.calls();
    assert_eq!(
        calls, expected,
        "calls counted by the sandbox (ceil({rows} / {BATCH}) expected)"
    );
    drop(dir);
    Case {
        limit,
        calls,
        refused: hub.refused(),
        run: v["secs"].as_f64().unwrap(),
        wall,
        floor: floor_secs(calls, limit),
        phases: phases(&v),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        runs::child(Path::new(&args[i + 1]), &args[i + 2], &Default::default());
        return;
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` asks; there is nothing to test
    }
    let rows = env_usize("EBB_BENCH_HUBSPOT_ROWS", 100_000);
    let limit = env_usize("EBB_BENCH_HUBSPOT_LIMIT", 190) as u64;
    println!(
        "ebb HubSpot benchmark: release build, {} cores, first sync of {rows} contacts, {BATCH} a call, 4 in flight",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let cases = [case(rows, limit), case(rows, limit * 10)];
    println!(
        "\n{:<22} {:>6} {:>5} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "limit", "calls", "429s", "run", "wall", "records/s", "floor", "run/floor"
    );
    for c in &cases {
        let ratio = if c.floor > 0.0 {
            format!("{:.3}", c.run / c.floor)
        } else {
            "-".into()
        };
        println!(
            "{:<22} {:>6} {:>5} {:>8.2}s {:>8.2}s {:>10} {:>8.1}s {:>9}",
            format!("{} per 10 s", c.limit),
            c.calls,
            c.refused,
            c.run,
            c.wall,
            rate(rows as f64, c.run),
            c.floor,
            ratio
        );
    }
    for c in &cases {
        println!("  {} per 10 s, ebb phases: {}", c.limit, c.phases);
    }
    let at = &cases[0];
    let met = at.floor > 0.0 && at.run <= at.floor * 1.1 && at.refused == 0;
    println!(
        "\nTarget\n  [{}] at {} per 10 s: exact calls, no 429, within 10% of the floor: {:.2} s against floor(({} − 1) / {}) × 10 s = {:.0} s ({:+.1}%), {} refused",
        if met { "met" } else { "MISSED" },
        at.limit,
        at.run,
        at.calls,
        at.limit,
        at.floor,
        (at.run / at.floor.max(f64::MIN_POSITIVE) - 1.0) * 100.0,
        at.refused
    );
    let free = &cases[1];
    println!(
        "  [info] at {} per 10 s (not binding): {:.2} s, {}; the limit's share at {}: {:.2} s of {:.2} s",
        free.limit,
        free.run,
        rate(rows as f64, free.run),
        at.limit,
        at.run - free.run,
        at.run
    );
}

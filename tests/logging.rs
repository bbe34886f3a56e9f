//! The log (`tracing`, README "Logs"): what a destination logs deep inside a run carries
//! the run's `model` and `run_id`; the daemon's JSON lines and the CLI's human lines;
//! `EBB_LOG` filters like `RUST_LOG`; no secret reaches a line.

use crate::daemon::Daemon;
use crate::sink::Sink;
use crate::support::{stderr, stdout};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A DuckDB table of 20 rows to an `http` destination at `sink`, whose URL carries a
/// secret query parameter.
fn project(sink: &Sink) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  hook:
    type: http
    url: \"{}?api_key=${{EBB_TEST_HOOK_KEY}}\"
    batch_size: 50
",
            sink.url()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/people.yaml"),
        "models:
  - name: people
    source:
      type: duckdb
      query: SELECT id, name FROM people
    destination:
      type: http
      connection: hook
      unique_identifier: id
    mappings:
      - source: name
        destination: name
",
    )
    .unwrap();
    let c = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    c.execute_batch("CREATE TABLE people AS SELECT range AS id, 'person ' || range AS name FROM range(20)")
        .unwrap();
    dir
}

const KEY: &str = "hook-key-0123456789";

#[test]
fn a_retry_inside_a_daemon_run_is_logged_with_the_runs_model_and_id() {
    let sink = Sink::start_in_thread("id");
    let p = project(&sink);
    let d = Daemon::start(p.path(), &[], &[("EBB_TEST_HOOK_KEY", KEY)]);
    sink.fail_next(1, 503, None);
    assert_eq!(d.post("/api/models/people/runs", None).status, 202);
    let done = d.wait_for("the run", 1, Duration::from_secs(30), |e| {
        e["event"] == "run_finished" && e["model"] == "people"
    });
    assert_eq!(done[0]["status"], "succeeded", "{}", d.log());
    let run_id = done[0]["run_id"].as_i64().unwrap();
    let retried: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|e| e["event"] == "request_retried")
        .collect();
    assert_eq!(retried.len(), 1, "{}", d.log());
    let r = &retried[0];
    assert_eq!(
        (r["level"].as_str(), r["model"].as_str()),
        (Some("warn"), Some("people")),
        "{r}"
    );
    assert_eq!(r["run_id"].as_i64(), Some(run_id), "{r}");
    assert_eq!(r["attempt"], 1);
    assert!(r["cause"].as_str().unwrap().contains("503"), "{r}");
    assert!(r["delay_ms"].is_u64(), "{r}");
    assert!(!d.log().contains(KEY), "{}", d.log());
    assert_eq!(sink.records().len(), 20);
}

fn run(dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args(["run", "people", "--full-resync"])
        .current_dir(dir)
        .env_remove("EBB_LOG")
        .env_remove("RUST_LOG")
        .env("EBB_TEST_HOOK_KEY", KEY)
        .env("EBB_RETRY_BASE_MS", "5");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn the_cli_shows_warnings_and_ebb_log_chooses_what_else() {
    let sink = Sink::start_in_thread("id");
    let p = project(&sink);
    // By default a command shows warnings: the retry, in the human form, with its run.
    sink.fail_next(1, 503, None);
    let o = run(p.path(), &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let line = stderr(&o)
        .lines()
        .find(|l| l.contains("a request failed and is sent again"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no retry line in:\n{}", stderr(&o)));
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("model=people") && line.contains("run_id=1"), "{line}");
    assert!(line.contains("cause=\"HTTP 503"), "{line}");
    // `EBB_LOG=error` hides it.
    sink.fail_next(1, 503, None);
    let o = run(p.path(), &[("EBB_LOG", "error")]);
    assert!(o.status.success());
    assert!(!stderr(&o).contains("sent again"), "{}", stderr(&o));
    // A filter that does not parse is said, and the default applies.
    sink.fail_next(1, 503, None);
    let o = run(p.path(), &[("EBB_LOG", "ebb=loud")]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("`EBB_LOG` is not a valid log filter"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("sent again"), "{}", stderr(&o));
    // Everything, libraries' debug included: still no secret.
    let o = run(p.path(), &[("EBB_LOG", "debug")]);
    assert!(o.status.success());
    assert!(!stderr(&o).contains(KEY) && !stdout(&o).contains(KEY), "{}", stderr(&o));
}

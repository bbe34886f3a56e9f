//! Shared by the whole-run benchmarks (`sync`, `inbound`): the child process that makes one
//! run of ebb, measuring a process, the peer's interpreter, and how figures print.

use crate::common::peak_rss;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Child: one run of `model` in `project` (as `ebb run` makes it, SQLite state unless the
/// project says otherwise); prints a JSON line with the run's own seconds,
/// the peak RSS, the counts and the phase timings.
pub fn child(project: &Path, model: &str, options: &ebb::engine::RunOptions) {
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
        ebb::engine::run(project, spec, &store, plan, options, &progress).await
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
            "secs": secs, "peak_rss": peak_rss(), "read": k.read, "sent": k.sent, "changed": k.changed,
            "added": k.added, "removed": k.removed, "calls": k.api_calls,
            "timings": r.timings.iter().map(|(k, d)| format!("{k} {:.2} s", d.as_secs_f64())).collect::<Vec<_>>(),
        })
    );
}

/// Runs `cmd`, which prints one JSON line last; `first` tells when the destination saw its
/// first request.
pub fn measure(mut cmd: Command, what: &str, first: impl Fn() -> Option<Instant>) -> (Value, f64, Option<f64>) {
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|_| {
        panic!(
            "{what}: no result line (exit {:?})\n{text}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "{what} failed (exit {:?}): {v}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let first = first().map(|t| t.saturating_duration_since(started).as_secs_f64());
    (v, wall, first)
}

/// ebb's phase timings from a child's result line, as one text.
pub fn phases(v: &Value) -> String {
    v["timings"]
        .as_array()
        .map(|t| t.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// The peers' interpreter (able to import `modules`), after making its venv if need be; `None` when it cannot be had.
pub fn peer_python(modules: &str) -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer");
    let python = here.join(".venv/bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", &format!("import {modules}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&python) {
        eprintln!("preparing the peer's venv (benches/peer/setup.sh)…");
        let ok = Command::new(here.join("setup.sh")).status().is_ok_and(|s| s.success());
        if !ok || !ready(&python) {
            eprintln!("the peer's venv could not be made: ebb runs alone");
            return None;
        }
    }
    Some(python)
}

pub fn rate(n: f64, secs: f64) -> String {
    let r = n / secs;
    if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

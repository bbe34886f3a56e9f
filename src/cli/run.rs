//! `ebb run`: validates the project, runs the models asked for one after another with a
//! progress line on a terminal, and prints each run's report (or JSON). What a run leaves
//! behind is read back by `history` (`ebb runs`, `ebb errors`, `ebb status`, `ebb reset`).

use super::PlanFormat;
use crate::config::env::Scrubber;
use crate::diagnostics::{render, terminal_safe, Severity};
use crate::engine::{self, Progress, RunOptions, RunReport, Status};
use crate::plan::SyncPlan;
use crate::state::StateStore;
use crate::validate::Report;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Validates the project; the plans of `wanted` (all if empty), or the exit code after
/// printing why not.
fn load(project: Option<PathBuf>, wanted: &[String], color: bool) -> anyhow::Result<Result<(Report, Vec<String>), u8>> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    if report.io_error {
        eprint!("{}", render::render(&report.diagnostics, render::Format::Human, color));
        return Ok(Err(2));
    }
    let known = report.model_names();
    for m in wanted {
        if !known.contains(&m.as_str()) {
            if report.has_errors() {
                // The model may be in a file that does not parse.
                eprint!("{}", render::render(&report.diagnostics, render::Format::Human, color));
            }
            eprintln!(
                "error: no model named `{m}`; {}",
                crate::plan::compile::suggest_model(m, &known)
            );
            return Ok(Err(2));
        }
    }
    let names: Vec<String> = if wanted.is_empty() {
        known.iter().map(|s| s.to_string()).collect()
    } else {
        wanted.to_vec()
    };
    // Errors in the project file, or in the files of the models asked for, stop here.
    let files: Vec<&PathBuf> = report
        .models
        .iter()
        .filter(|(n, _)| names.contains(n))
        .map(|(_, f)| f)
        .collect();
    let errors: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .filter(|d| d.span.file.path.ends_with(crate::config::PROJECT_FILE) || files.contains(&&d.span.file.path))
        .cloned()
        .collect();
    if !errors.is_empty() {
        eprint!(
            "{}",
            crate::redact::text(&render::render(&errors, render::Format::Human, color))
        );
        eprintln!(
            "error: fix the {} above first (`ebb validate` lists every problem)",
            if errors.len() == 1 { "error" } else { "errors" }
        );
        return Ok(Err(1));
    }
    Ok(Ok((report, names)))
}

pub(super) async fn open_store(report: &Report) -> Result<StateStore, String> {
    let url = report
        .project
        .as_ref()
        .and_then(|p| p.state.as_ref())
        .and_then(|s| s.url.as_deref());
    StateStore::open(url, &report.project_dir)
        .await
        .map_err(|e| crate::redact::text(&e.to_string()))
}

pub fn run(
    project: Option<PathBuf>,
    models: &[String],
    all: bool,
    opts: RunOptions,
    format: PlanFormat,
    color: bool,
) -> anyhow::Result<u8> {
    if models.is_empty() && !all {
        eprintln!("error: name the models to run, or `--all`");
        return Ok(2);
    }
    let (report, names) = match load(project, models, color)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let rt = runtime()?;
    let store = match rt.block_on(open_store(&report)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e));
            return Ok(1);
        }
    };
    let Some(spec) = report.project.as_ref() else {
        return Ok(2);
    };
    let tty = std::io::stderr().is_terminal() && format == PlanFormat::Human;
    let mut reports = Vec::new();
    for name in &names {
        let Some(plan) = report.plans.iter().find(|p| &p.name == name) else {
            continue;
        };
        if !opts.dry_run {
            let entry = crate::audit::NewAudit::new(crate::audit::cli_actor(), crate::audit::Action::RunTriggered)
                .model(name.clone())
                .detail(serde_json::json!({
                    "via": "cli", "full_resync": opts.full_resync, "force": opts.force,
                }));
            if let Err(code) = super::audit::record(&rt, &store, &report.secrets, entry) {
                return Ok(code);
            }
        }
        let progress = Arc::new(Progress::default());
        let bar = tty.then(|| progress_bar(name, progress.clone()));
        let r = rt.block_on(engine::run(&report.project_dir, spec, &store, plan, &opts, &progress));
        if let Some((bar, stop)) = bar {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = bar.join();
        }
        if format == PlanFormat::Human {
            print_one(&r, plan, color, &report.secrets);
        }
        reports.push(r);
    }
    let code = reports.iter().map(|r| r.status.exit_code()).fold(0, worst);
    let mut out = std::io::stdout().lock();
    match format {
        PlanFormat::Json => {
            let runs: Vec<serde_json::Value> = reports.iter().map(|r| report_json(r, &report.secrets)).collect();
            writeln!(out, "{}", serde_json::json!({ "runs": runs }))?;
        }
        PlanFormat::Human => {
            if reports.len() > 1 {
                out.write_all(summary_table(&reports).as_bytes())?;
            }
        }
    }
    Ok(code)
}

/// Text from a run, a store or a destination as printed for a person: the project's
/// variable values masked, URL credentials redacted, control characters escaped.
pub(super) fn shown(secrets: &Scrubber, text: &str) -> String {
    terminal_safe(&secrets.scrub(text), true).into_owned()
}

/// Failure (1) outranks rejected rows (3), which outrank success (0).
fn worst(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        0 => 0,
        3 => 1,
        _ => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// A progress line on standard error, redrawn until `stop` is set.
fn progress_bar(name: &str, p: Arc<Progress>) -> (std::thread::JoinHandle<()>, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering::Relaxed;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let name = name.to_string();
    let handle = std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name);
        bar.enable_steady_tick(Duration::from_millis(120));
        while !s.load(Relaxed) {
            let msg = if p.delivering.load(Relaxed) {
                format!(
                    "sent {}/{} · confirmed {} · rejected {}",
                    p.sent.load(Relaxed),
                    p.to_send.load(Relaxed),
                    p.confirmed.load(Relaxed),
                    p.rejected.load(Relaxed)
                )
            } else {
                format!(
                    "read {} rows · {} to send",
                    p.read.load(Relaxed),
                    p.to_send.load(Relaxed)
                )
            };
            bar.set_message(msg);
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
    (handle, stop)
}

fn status_word(s: Status, color: bool) -> String {
    let (word, code) = match s {
        Status::Succeeded => ("succeeded", "32"),
        Status::Partial => ("partial", "33"),
        Status::Failed => ("failed", "31"),
        Status::Aborted => ("aborted", "31"),
        Status::Busy => ("busy", "33"),
        Status::DryRun => ("dry run", "36"),
    };
    if color {
        format!("\x1b[1;{code}m{word}\x1b[0m")
    } else {
        word.to_string()
    }
}

fn print_one(r: &RunReport, plan: &SyncPlan, color: bool, secrets: &Scrubber) {
    let k = &r.counts;
    let mut s = String::new();
    let run = r.run_id.map(|id| format!(" (run {id})")).unwrap_or_default();
    s.push_str(&format!(
        "{} {}{run} → {} `{}` in {:.2}s\n",
        status_word(r.status, color),
        r.model,
        plan.destination.kind,
        plan.destination.connection,
        r.elapsed.as_secs_f64()
    ));
    let inbound = plan.direction() == crate::plan::Direction::Inbound;
    if r.status != Status::Busy && inbound {
        // The seed's sync log: extracted, written (upserted or appended), deleted, skipped.
        s.push_str(&format!(
            "  extracted {}  written {}  deleted {}  skipped {}  invalid {}  requests {}\n",
            k.read, k.added, k.removed, k.unchanged, k.invalid, k.api_calls
        ));
    } else if r.status != Status::Busy {
        s.push_str(&format!(
            "  read {}  added {}  changed {}  removed {}  unchanged {}  invalid {}\n",
            k.read, k.added, k.changed, k.removed, k.unchanged, k.invalid
        ));
        if r.status != Status::DryRun {
            s.push_str(&format!(
                "  sent {}  confirmed {}  rejected {}  requests {}\n",
                k.sent, k.confirmed, k.rejected, k.api_calls
            ));
        }
    }
    for note in &r.notes {
        s.push_str(&format!("  note: {}\n", shown(secrets, note)));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(
            "  {}: {}\n",
            if r.status == Status::Partial {
                "warning"
            } else {
                "error"
            },
            shown(secrets, e)
        ));
    }
    for (kind, samples) in &r.samples {
        s.push_str(&format!("  {kind} (up to 5):\n"));
        for x in samples {
            s.push_str(&format!("    {}\n", terminal_safe(x, false)));
        }
    }
    if r.status == Status::DryRun {
        s.push_str("  dry run: nothing was sent or recorded\n");
    }
    print!("{s}");
}

fn summary_table(reports: &[RunReport]) -> String {
    let header: Vec<String> = [
        "model",
        "status",
        "read",
        "added",
        "changed",
        "removed",
        "invalid",
        "sent",
        "confirmed",
        "rejected",
        "time",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let k = &r.counts;
            vec![
                r.model.clone(),
                r.status.as_str().to_string(),
                k.read.to_string(),
                k.added.to_string(),
                k.changed.to_string(),
                k.removed.to_string(),
                k.invalid.to_string(),
                k.sent.to_string(),
                k.confirmed.to_string(),
                k.rejected.to_string(),
                format!("{:.2}s", r.elapsed.as_secs_f64()),
            ]
        })
        .collect();
    format!("\n{}", super::text_table(&header, &rows, None))
}

pub(super) fn counts_json(k: &crate::state::RunCounts) -> serde_json::Value {
    serde_json::json!({
        "read": k.read, "added": k.added, "changed": k.changed, "removed": k.removed,
        "unchanged": k.unchanged, "invalid": k.invalid, "sent": k.sent, "confirmed": k.confirmed,
        "rejected": k.rejected, "api_calls": k.api_calls,
    })
}

fn report_json(r: &RunReport, secrets: &Scrubber) -> serde_json::Value {
    let mut v = serde_json::json!({
        "model": r.model,
        "run_id": r.run_id,
        "status": r.status.as_str(),
        "counts": counts_json(&r.counts),
        "error": r.error.as_deref().map(|e| secrets.scrub(e)),
        "notes": r.notes.iter().map(|n| secrets.scrub(n)).collect::<Vec<_>>(),
        "elapsed_ms": r.elapsed.as_millis() as u64,
        "timings_ms": r.timings.iter().map(|(k, d)| (k.to_string(), serde_json::Value::from(d.as_millis() as u64)))
            .collect::<serde_json::Map<_, _>>(),
    });
    if r.status == Status::DryRun {
        let samples: serde_json::Map<String, serde_json::Value> = r
            .samples
            .iter()
            .map(|(k, list)| {
                let items = list
                    .iter()
                    .map(|s| serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.clone())))
                    .collect();
                (k.to_string(), serde_json::Value::Array(items))
            })
            .collect();
        v["samples"] = serde_json::Value::Object(samples);
    }
    v
}

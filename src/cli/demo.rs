//! `ebb demo`: the quickstart. Builds the demo warehouse (embedded DuckDB) with seeded
//! customer data, checks every model against it and shows what each would send.

use crate::config::project::ConnectionSpec;
use crate::diagnostics::{render, Severity};
use std::io::Write;
use std::path::PathBuf;

pub fn run(project: Option<PathBuf>, customers: usize, seed: u64, rebuild: bool, color: bool) -> anyhow::Result<u8> {
    let dir = super::project_dir(project)?;
    let mut report = crate::validate::validate(&dir, &[])?;
    let Some(spec) = report.project.clone() else {
        eprint!("{}", render::render(&report.diagnostics, render::Format::Human, color));
        anyhow::bail!("`ebb.yaml` has errors; fix them first");
    };
    let duckdb: Vec<(&String, &crate::config::project::DuckdbConnection)> = spec
        .connections
        .iter()
        .filter_map(|(n, c)| match c {
            ConnectionSpec::Duckdb(d) => Some((n, d)),
            _ => None,
        })
        .collect();
    let (name, conn) = match duckdb
        .iter()
        .find(|(n, _)| n.as_str() == "warehouse")
        .or(duckdb.first())
    {
        Some(x) => *x,
        None => anyhow::bail!("the project has no duckdb connection to hold the demo warehouse"),
    };
    if conn.path == ":memory:" {
        anyhow::bail!("connection `{name}` is in memory; the demo warehouse needs a file");
    }
    let path = dir.join(&conn.path);
    let mut out = std::io::stdout().lock();
    if rebuild || !path.exists() {
        let built = crate::demo::build_warehouse(&path, customers, seed).map_err(|e| anyhow::anyhow!(e))?;
        writeln!(
            out,
            "built the demo warehouse {} (connection `{name}`): {} customers, {} flagged sync_to_crm",
            crate::validate::display_path(&path).display(),
            built.customers,
            built.synced_to_crm
        )?;
    } else {
        writeln!(
            out,
            "using the demo warehouse {} (`ebb demo --rebuild` makes a fresh one)",
            crate::validate::display_path(&path).display()
        )?;
    }
    // Every model, checked against the warehouse as `validate --connect` would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(crate::validate::connect::check(&mut report));
    let problems: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
        .cloned()
        .collect();
    if !problems.is_empty() {
        out.write_all(render::render(&problems, render::Format::Human, color).as_bytes())?;
    }
    let errors = problems.iter().filter(|d| d.severity == Severity::Error).count();
    writeln!(
        out,
        "validated {} models against the warehouse: {errors} error{}\n",
        report.models.len(),
        if errors == 1 { "" } else { "s" }
    )?;
    for plan in &report.plans {
        if plan.source.query.is_none() {
            writeln!(
                out,
                "model {} reads {} `{}` into {}: inbound syncs run once the {} connector lands\n",
                plan.name,
                plan.source.kind,
                plan.source.object.as_deref().unwrap_or("?"),
                plan.destination.table.as_deref().unwrap_or("?"),
                plan.source.kind
            )?;
            continue;
        }
        let target = plan
            .destination
            .object
            .as_deref()
            .or(plan.destination.table.as_deref())
            .unwrap_or("records");
        writeln!(
            out,
            "model {} → {} {target} (connection `{}`), first rows as they would be sent:",
            plan.name, plan.destination.kind, plan.destination.connection
        )?;
        match super::preview::fetch(&report, plan, &dir, 3) {
            Ok((batches, mapper)) => {
                let (table, _, _) = super::preview::human_table(plan, &batches, &mapper);
                out.write_all(table.as_bytes())?;
                writeln!(out)?;
            }
            Err(e) => writeln!(out, "  cannot preview: {e}\n")?,
        }
    }
    // A real run of every model whose destination is already built (file, http).
    let runnable: Vec<&crate::plan::SyncPlan> = report
        .plans
        .iter()
        .filter(|p| p.source.query.is_some())
        .filter(|p| {
            matches!(
                p.destination.kind,
                crate::config::ConnectionType::File | crate::config::ConnectionType::Http
            )
        })
        .collect();
    let mut failed = false;
    if !runnable.is_empty() {
        let url = spec.state.as_ref().and_then(|s| s.url.clone());
        let store = rt.block_on(crate::state::StateStore::open(url.as_deref(), &dir));
        match store {
            Err(e) => {
                writeln!(out, "cannot open the state store: {e}")?;
                failed = true;
            }
            Ok(store) => {
                for plan in runnable {
                    let progress = crate::engine::Progress::default();
                    let r = rt.block_on(crate::engine::run(
                        &dir,
                        &spec,
                        &store,
                        plan,
                        &crate::engine::RunOptions::default(),
                        &progress,
                    ));
                    let k = r.counts;
                    writeln!(
                        out,
                        "ebb run {}: {} in {:.2}s: read {}, added {}, changed {}, removed {}, unchanged {}, sent {}, confirmed {}{}",
                        plan.name,
                        r.status.as_str(),
                        r.elapsed.as_secs_f64(),
                        k.read,
                        k.added,
                        k.changed,
                        k.removed,
                        k.unchanged,
                        k.sent,
                        k.confirmed,
                        r.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                    )?;
                    failed |= r.status.exit_code() != 0;
                }
                writeln!(
                    out,
                    "(run `ebb demo` again: nothing changed, so nothing is sent; `ebb status` shows each model's health)\n"
                )?;
            }
        }
    }
    writeln!(
        out,
        "next: `ebb plan <model>` shows a compiled model, `ebb preview <model> -n 20` more rows,\n\
         `ebb run <model> --dry-run` what a run would send. Sending to the Salesforce sandbox\n\
         arrives with the Salesforce connector."
    )?;
    Ok(if errors > 0 || failed { 1 } else { 0 })
}

//! `ebb audit` (the audit log as JSON lines), `ebb audit verify` (its hash chain checked)
//! and `ebb purge` (retention applied on demand). docs/security.md, docs/state.md.

use super::run::{open_store, runtime, shown};
use crate::audit::{cli_actor, parse_since, verify as verify_rows, Action, AuditQuery, ChainError};
use crate::config::retention::Retention;
use crate::state::retention::Cutoffs;
use crate::state::StateStore;
use crate::validate::Report;
use std::io::Write;
use std::path::PathBuf;

/// Records an administrative action of the command line in the audit log; on failure, says
/// so and gives the exit code (1): an action that cannot be audited is reported failed.
pub(super) fn record(
    rt: &tokio::runtime::Runtime,
    store: &StateStore,
    secrets: &crate::config::env::Scrubber,
    entry: crate::audit::NewAudit,
) -> Result<(), u8> {
    rt.block_on(store.audit_append(entry)).map_err(|e| {
        eprintln!(
            "error: cannot record the action in the audit log: {}",
            shown(secrets, &e.to_string())
        );
        1
    })
}

/// Rows read from the store at a time.
const PAGE: i64 = 5000;

/// The project's report and its store, or the exit code.
fn open(project: Option<PathBuf>) -> anyhow::Result<Result<(Report, StateStore, tokio::runtime::Runtime), u8>> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    if report.project.is_none() {
        eprintln!("error: `ebb.yaml` cannot be read (`ebb validate` says why)");
        return Ok(Err(2));
    }
    let rt = runtime()?;
    match rt.block_on(open_store(&report)) {
        Ok(s) => Ok(Ok((report, s, rt))),
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e));
            Ok(Err(1))
        }
    }
}

/// `ebb audit [--since …] [--model M] [--action A]`: JSON lines, oldest first.
pub fn show(
    project: Option<PathBuf>,
    since: Option<&str>,
    model: Option<String>,
    action: Option<String>,
) -> anyhow::Result<u8> {
    let since_ms = match since.map(|s| parse_since(s, chrono::Utc::now().timestamp_millis())) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    if let Some(a) = action.as_deref().filter(|a| Action::parse(a).is_none()) {
        eprintln!(
            "error: `--action {a}` is not an action; one of {}",
            Action::ALL.map(Action::as_str).join(", ")
        );
        return Ok(2);
    }
    let (report, store, rt) = match open(project)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let mut q = AuditQuery {
        since_ms,
        model,
        action,
        after_seq: 0,
        limit: PAGE,
    };
    let mut out = std::io::stdout().lock();
    loop {
        let rows = match rt.block_on(store.audit_list(&q)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
                return Ok(1);
            }
        };
        for r in &rows {
            writeln!(out, "{}", r.to_json())?;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => q.after_seq = last.seq,
            _ => break,
        }
    }
    Ok(0)
}

/// `ebb audit verify`: the chain recomputed from its anchor; 0 and the count when intact,
/// 1 naming the first row where it breaks.
pub fn verify(project: Option<PathBuf>) -> anyhow::Result<u8> {
    let (report, store, rt) = match open(project)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let checked = rt.block_on(async {
        let anchor = store.audit_anchor().await?;
        let mut state = anchor.clone();
        let mut q = AuditQuery {
            limit: PAGE,
            ..AuditQuery::default()
        };
        let mut count = 0u64;
        loop {
            let rows = store.audit_list(&q).await?;
            if let Err(e) = verify_rows(&mut state, &rows) {
                return Ok::<_, crate::state::StateError>(Err(e));
            }
            count += rows.len() as u64;
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => q.after_seq = last.seq,
                _ => break,
            }
        }
        Ok(Ok((anchor, state, count)))
    });
    match checked {
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
            Ok(1)
        }
        Ok(Err(e)) => {
            eprintln!("error: the audit log is not intact: {e}");
            if let ChainError::Gap { .. } | ChainError::Broken { .. } = e {
                eprintln!("note: entries purged by retention leave an anchor; these were removed otherwise");
            }
            Ok(1)
        }
        Ok(Ok((anchor, head, count))) => {
            let from = if anchor.seq == 0 {
                "from the first entry".to_string()
            } else {
                format!("from the anchor left by a purge (entry {})", anchor.seq)
            };
            println!(
                "audit log intact: {count} entr{} verified {from}; head {} (entry {})",
                if count == 1 { "y" } else { "ies" },
                head.hash,
                head.seq
            );
            Ok(0)
        }
    }
}

/// `ebb purge [--dry-run]`: what retention no longer keeps, removed (or counted), per table.
pub fn purge(project: Option<PathBuf>, dry_run: bool) -> anyhow::Result<u8> {
    let (report, store, rt) = match open(project)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if report
        .diagnostics
        .iter()
        .any(|d| d.code == crate::diagnostics::Code::BadRetention)
    {
        eprintln!("error: `retention:` in `ebb.yaml` has errors; fix them first (`ebb validate` lists them)");
        return Ok(1);
    }
    let retention = Retention::of(report.project.as_ref().and_then(|p| p.retention.as_ref()));
    let cutoffs = Cutoffs::of(&retention, chrono::Utc::now().timestamp_millis());
    let purged = match rt.block_on(store.purge(&cutoffs, dry_run, &cli_actor())) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
            return Ok(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let verb = if dry_run { "would remove" } else { "removed" };
    for (table, n) in purged.tables() {
        writeln!(out, "{table}: {verb} {n}")?;
    }
    if dry_run {
        writeln!(out, "dry run: nothing was removed")?;
    }
    Ok(0)
}

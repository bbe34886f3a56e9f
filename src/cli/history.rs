//! What a run leaves behind, read back from the state store: `ebb runs` (the history),
//! `ebb errors` (rejected and invalid rows), `ebb status` (health and lag) and `ebb reset`
//! (forget the snapshot). Apart from `ebb run` because none of them runs anything: they
//! open the store, read or clear one model's records, and print.

use super::run::{counts_json, open_store, runtime, shown};
use super::PlanFormat;
use crate::config::env::Scrubber;
use crate::engine::{self, plural};
use crate::state::{RunRecord, StateStore};
use crate::validate::Report;
use std::io::Write;
use std::path::PathBuf;

/// One model name that the project defines, with the store; or the exit code.
pub(super) fn one_model(
    project: Option<PathBuf>,
    model: &str,
) -> anyhow::Result<Result<(Report, StateStore, tokio::runtime::Runtime), u8>> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    let known = report.model_names();
    if !known.contains(&model) && !model.is_empty() {
        eprintln!(
            "error: no model named `{model}`; {}",
            crate::plan::compile::suggest_model(model, &known)
        );
        return Ok(Err(2));
    }
    // A key that does not parse: nothing is read or written that it should open or seal.
    if let Err(e) = crate::crypt::Keys::global() {
        eprintln!("error: {e}");
        return Ok(Err(2));
    }
    let rt = runtime()?;
    match rt.block_on(open_store(&report)) {
        Ok(store) => Ok(Ok((report, store, rt))),
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e));
            Ok(Err(1))
        }
    }
}

fn run_json(r: &RunRecord, secrets: &Scrubber) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "model": r.model, "started_at": r.started_at, "ended_at": r.ended_at,
        "status": r.status, "counts": counts_json(&r.counts), "error": r.error.as_deref().map(|e| secrets.scrub(e)),
    })
}

/// Seconds between two RFC 3339 times.
fn duration_between(start: &str, end: Option<&str>) -> Option<f64> {
    let s = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let e = chrono::DateTime::parse_from_rfc3339(end?).ok()?;
    Some((e - s).num_milliseconds() as f64 / 1000.0)
}

/// `ebb runs MODEL`: the run history, newest first.
pub fn runs(project: Option<PathBuf>, model: &str, limit: usize, format: PlanFormat) -> anyhow::Result<u8> {
    let (report, store, rt) = match one_model(project, model)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let secrets = &report.secrets;
    let runs = match rt.block_on(store.runs(model, limit as i64)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", shown(secrets, &e.to_string()));
            return Ok(1);
        }
    };
    let mut out = std::io::stdout().lock();
    if format == PlanFormat::Json {
        for r in &runs {
            writeln!(out, "{}", run_json(r, secrets))?;
        }
        return Ok(0);
    }
    if runs.is_empty() {
        writeln!(out, "`{model}` has not run yet (`ebb run {model}`)")?;
        return Ok(0);
    }
    let header: Vec<String> = [
        "run",
        "started",
        "took",
        "status",
        "read",
        "added",
        "changed",
        "removed",
        "invalid",
        "sent",
        "confirmed",
        "rejected",
        "requests",
        "error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let k = &r.counts;
            vec![
                r.id.to_string(),
                r.started_at.clone(),
                duration_between(&r.started_at, r.ended_at.as_deref())
                    .map(|s| format!("{s:.1}s"))
                    .unwrap_or_else(|| "-".into()),
                r.status.clone(),
                k.read.to_string(),
                k.added.to_string(),
                k.changed.to_string(),
                k.removed.to_string(),
                k.invalid.to_string(),
                k.sent.to_string(),
                k.confirmed.to_string(),
                k.rejected.to_string(),
                k.api_calls.to_string(),
                r.error.as_deref().map(|e| secrets.scrub(e)).unwrap_or_default(),
            ]
        })
        .collect();
    out.write_all(super::text_table(&header, &rows, None).as_bytes())?;
    Ok(0)
}

/// `ebb errors MODEL`: the latest error of each rejected or invalid row.
pub fn errors(project: Option<PathBuf>, model: &str, limit: usize, format: PlanFormat) -> anyhow::Result<u8> {
    let (report, store, rt) = match one_model(project, model)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let secrets = &report.secrets;
    let errors = match rt.block_on(store.row_errors(model)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", shown(secrets, &e.to_string()));
            return Ok(1);
        }
    };
    let mut out = std::io::stdout().lock();
    if format == PlanFormat::Json {
        for e in errors.iter().take(limit) {
            writeln!(
                out,
                "{}",
                serde_json::json!({"key": e.key, "kind": e.kind, "code": e.code, "message": secrets.scrub(&e.message), "run_id": e.run_id})
            )?;
        }
        return Ok(0);
    }
    if errors.is_empty() {
        writeln!(out, "`{model}` has no rejected or invalid rows")?;
        return Ok(0);
    }
    let header: Vec<String> = ["key", "kind", "code", "message", "run"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = errors
        .iter()
        .take(limit)
        .map(|e| {
            vec![
                e.key.clone(),
                e.kind.clone(),
                e.code.clone(),
                secrets.scrub(&e.message),
                e.run_id.to_string(),
            ]
        })
        .collect();
    out.write_all(super::text_table(&header, &rows, None).as_bytes())?;
    if errors.len() > limit {
        writeln!(out, "… and {} more (`--limit`)", errors.len() - limit)?;
    }
    Ok(0)
}

/// `ebb reset MODEL`: forget the snapshot; the next run is a full sync.
pub fn reset(project: Option<PathBuf>, model: &str) -> anyhow::Result<u8> {
    let (report, store, rt) = match one_model(project, model)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if let Ok(Some(h)) = rt.block_on(store.lock_holder(model)) {
        if !crate::state::holder_is_dead_here(&h) {
            eprintln!(
                "error: `{model}` is being run by pid {} on {} (run {}); reset it once that run ends",
                h.pid, h.host, h.run_id
            );
            return Ok(1);
        }
    }
    match rt.block_on(store.forget(model)) {
        Ok(n) => {
            let entry = crate::audit::NewAudit::new(crate::audit::cli_actor(), crate::audit::Action::Reset)
                .model(model)
                .detail(serde_json::json!({ "snapshot_rows": n }));
            if let Err(code) = super::audit::record(&rt, &store, &report.secrets, entry) {
                return Ok(code);
            }
            println!(
                "forgot {} of `{model}`'s snapshot: the next run sends every row again",
                plural(n as i64, "row")
            );
            if report
                .plans
                .iter()
                .any(|p| p.name == model && p.destination.mode == crate::config::Mode::Insert)
            {
                println!("note: `{model}` inserts: records already in the destination will be created again");
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
            Ok(1)
        }
    }
}

/// `ebb status [MODEL]`: health, lag and the last run of each model.
pub fn status(project: Option<PathBuf>, model: Option<&str>, format: PlanFormat) -> anyhow::Result<u8> {
    let (report, store, rt) = match one_model(project, model.unwrap_or(""))? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let names: Vec<String> = match model {
        Some(m) => vec![m.to_string()],
        None => report.model_names().iter().map(|s| s.to_string()).collect(),
    };
    let now = chrono::Utc::now();
    let mut lines = Vec::new();
    for name in &names {
        let got = rt.block_on(async {
            let last = store.runs(name, 1).await?.into_iter().next();
            let ok = store.last_completed(name).await?;
            let rows = store.snapshot_len(name).await?;
            let inflight: usize = store.inflight(name).await?.iter().map(|b| b.keys.len()).sum();
            let errors = store.row_error_count(name).await?;
            let holder = store.lock_holder(name).await?;
            let watermark = store.watermark(name).await?;
            Ok::<_, crate::state::StateError>((last, ok, rows, inflight, errors, holder, watermark))
        });
        let (last, ok, rows, inflight, errors, holder, watermark) = match got {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
                return Ok(1);
            }
        };
        let plan = report.plans.iter().find(|p| &p.name == name);
        // A webhook model: its inbox (events waiting, dead letters, the oldest waiting).
        let inbox = match plan.filter(|p| p.source.webhook.is_some()) {
            Some(p) => match rt.block_on(async {
                store.inbox_init().await?;
                store.inbox_counts(&p.name).await
            }) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
                    return Ok(1);
                }
            },
            None => None,
        };
        // A model with `conflicts`: the rows held for review.
        let held = match plan.filter(|p| p.conflicts.is_some()) {
            Some(p) => match rt.block_on(async {
                store.conflicts_init().await?;
                store.conflicts_open().await
            }) {
                Ok(open) => Some(open.into_iter().find(|(m, _)| *m == p.name).map_or(0, |(_, n)| n)),
                Err(e) => {
                    eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
                    return Ok(1);
                }
            },
            None => None,
        };
        // The lag and its level (the model's `health` thresholds), as the API, the metrics
        // and alerts have them.
        let lag_minutes = match plan {
            Some(p) => rt
                .block_on(crate::alerts::figures::lag_minutes(&store, p, now))
                .ok()
                .flatten(),
            None => None,
        };
        let lag_health = plan.map(|p| p.health.level(lag_minutes));
        // Alerts firing for the model, and what could not be delivered.
        let mut firing = Vec::new();
        let mut undelivered = Vec::new();
        if let Some(project) = report.project.as_ref() {
            for a in crate::alerts::eval::Alert::compile(project)
                .iter()
                .filter(|a| a.watches(name))
            {
                let st = rt
                    .block_on(store.alert_state(&a.spec.name, name))
                    .ok()
                    .flatten()
                    .and_then(|t| serde_json::from_str::<crate::alerts::eval::AlertState>(&t).ok());
                if let Some(st) = st {
                    if st.firing {
                        firing.push(a.spec.name.clone());
                    }
                    undelivered.extend(st.undelivered.iter().map(|u| format!("{}: {u}", a.spec.name)));
                }
            }
        }
        let next = plan
            .and_then(|p| p.schedule.as_ref())
            .and_then(|s| s.next_after(now))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let running = holder.as_ref().filter(|h| !crate::state::holder_is_dead_here(h));
        let health = match &inbox {
            // A webhook model is applied continuously, not run: its inbox tells its health.
            Some(c) if c.dead_letters() > 0 => "dead letters",
            Some(c) if c.oldest_pending.is_some_and(|t| (now - t).num_seconds() > 60) => "behind",
            Some(c) if c.applied + c.superseded + c.ignored + c.pending == 0 => "no events yet",
            Some(_) => "healthy",
            None => match engine::health(last.as_ref().map(|r| r.status.as_str()), running.is_some()) {
                "healthy" if held.is_some_and(|n| n > 0) => "conflicts to review",
                "healthy" if lag_health == Some("CRITICAL") => "lag critical",
                "healthy" if lag_health == Some("WARNING") => "lag warning",
                h => h,
            },
        };
        let ago = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| human_age(now.signed_duration_since(t.with_timezone(&chrono::Utc))))
        };
        lines.push(serde_json::json!({
            "model": name,
            "health": health,
            "valid": plan.is_some(),
            "last_run": last.as_ref().map(|r| run_json(r, &report.secrets)),
            "last_success_at": ok.as_ref().and_then(|r| r.ended_at.clone()),
            "lag": ok.as_ref().and_then(|r| r.ended_at.as_deref().and_then(ago)),
            "snapshot_rows": rows,
            "rows_in_flight": inflight,
            "row_errors": errors,
            "running": running.map(|h| serde_json::json!({"pid": h.pid, "host": h.host, "run_id": h.run_id, "since": h.acquired_at})),
            "next_run_at": next,
            // Inbound: the watermark, and how far behind the CRM the table is (now − the
            // newest CRM stamp loaded).
            "watermark": watermark.as_ref().map(|w| w.watermark.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "inbound_lag": watermark
                .as_ref()
                .and_then(|w| w.newest)
                .map(|t| human_age(now.signed_duration_since(t)))
                .or_else(|| inbox.as_ref().and_then(|c| c.oldest_pending).map(|t| human_age(now.signed_duration_since(t)))),
            "conflicts_open": held,
            "lag_minutes": lag_minutes,
            "lag_health": lag_health,
            "alerts_firing": firing,
            "alerts_undelivered": undelivered,
            "inbox": inbox.as_ref().map(|c| serde_json::json!({
                "pending": c.pending, "applied": c.applied, "dead_letters": c.dead_letters(),
                "oldest_pending": c.oldest_pending.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            })),
        }));
    }
    let mut out = std::io::stdout().lock();
    if format == PlanFormat::Json {
        super::json_lines(&mut out, &lines)?;
        return Ok(0);
    }
    let header = super::header(&[
        "model",
        "health",
        "last run",
        "status",
        "since success",
        "rows",
        "in flight",
        "errors",
        "CRM lag",
        "next run",
    ]);
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let s = super::cell;
            let last = &l["last_run"];
            vec![
                s(&l["model"]),
                s(&l["health"]),
                last["id"].as_i64().map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                s(&last["status"]),
                s(&l["lag"]),
                l["snapshot_rows"].to_string(),
                // A webhook model's events waiting, and its dead letters.
                l["inbox"]["pending"]
                    .as_u64()
                    .map_or_else(|| l["rows_in_flight"].to_string(), |p| format!("{p} events")),
                match (l["inbox"]["dead_letters"].as_u64(), l["conflicts_open"].as_u64()) {
                    (Some(d), _) => format!("{d} dead"),
                    (None, Some(h)) if h > 0 => format!("{} + {h} held", l["row_errors"]),
                    _ => l["row_errors"].to_string(),
                },
                s(&l["inbound_lag"]),
                s(&l["next_run_at"]),
            ]
        })
        .collect();
    out.write_all(super::text_table(&header, &rows, None).as_bytes())?;
    Ok(0)
}

fn human_age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

//! `ebb inbox [MODEL]` (webhook models: events pending, applied and dead letters) and
//! `ebb inbox replay MODEL [EVENT_ID…]` (dead letters put back in the inbox).

use super::run::{open_store, runtime, shown};
use super::PlanFormat;
use crate::plan::SyncPlan;
use crate::state::inbox::{InboxCounts, InboxEvent, InboxStatus};
use crate::state::StateStore;
use std::io::Write;
use std::path::PathBuf;

/// The validated project, its webhook models (or the one named), the store and a runtime.
type Opened = (
    crate::validate::Report,
    Vec<SyncPlan>,
    StateStore,
    tokio::runtime::Runtime,
);

/// The webhook models of the project (or the one named), with the store; or the exit code.
fn webhook_models(project: Option<PathBuf>, model: Option<&str>) -> anyhow::Result<Result<Opened, u8>> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    let plans: Vec<SyncPlan> = report
        .plans
        .iter()
        .filter(|p| p.source.webhook.is_some())
        .filter(|p| model.is_none_or(|m| p.name == m))
        .cloned()
        .collect();
    if let Some(m) = model {
        if plans.is_empty() {
            let known = report.model_names();
            if known.contains(&m) {
                eprintln!("error: `{m}` is not a webhook model (its source is not `type: webhook`)");
            } else {
                eprintln!(
                    "error: no model named `{m}`; {}",
                    crate::plan::compile::suggest_model(m, &known)
                );
            }
            return Ok(Err(2));
        }
    }
    let rt = runtime()?;
    match rt.block_on(open_store(&report)) {
        Ok(store) => Ok(Ok((report, plans, store, rt))),
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e));
            Ok(Err(1))
        }
    }
}

fn counts_json(c: &InboxCounts) -> serde_json::Value {
    serde_json::json!({
        "pending": c.pending, "applied": c.applied, "superseded": c.superseded, "ignored": c.ignored,
        "dead": c.dead, "rejected": c.rejected, "replayed": c.replayed,
        "oldest_pending": c.oldest_pending.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    })
}

fn event_json(e: &InboxEvent) -> serde_json::Value {
    let t = |d: &chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({
        "seq": e.seq, "event_id": e.event_id, "type": e.event_type, "action": e.action,
        "status": e.status.as_str(), "event_time": t(&e.event_time), "received": t(&e.received),
        "settled": e.settled.as_ref().map(t), "key": e.key, "reason": e.reason,
    })
}

/// `ebb inbox [MODEL]`.
pub fn show(
    project: Option<PathBuf>,
    model: Option<&str>,
    statuses: &[String],
    limit: usize,
    format: PlanFormat,
) -> anyhow::Result<u8> {
    let mut wanted = Vec::new();
    for s in statuses {
        match InboxStatus::parse(s) {
            Some(st) => wanted.push(st),
            None => {
                eprintln!(
                    "error: `{s}` is not a status; one of {}",
                    InboxStatus::ALL.map(|s| s.as_str()).join(", ")
                );
                return Ok(2);
            }
        }
    }
    if wanted.is_empty() {
        wanted = vec![InboxStatus::Pending, InboxStatus::Dead, InboxStatus::Rejected];
    }
    let (report, plans, store, rt) = match webhook_models(project, model)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let secrets = &report.secrets;
    let mut out = std::io::stdout().lock();
    if plans.is_empty() {
        writeln!(out, "the project has no webhook models (`source: {{type: webhook}}`)")?;
        return Ok(0);
    }
    let listed = rt.block_on(async {
        store.inbox_init().await?;
        let mut all = Vec::new();
        for p in &plans {
            let counts = store.inbox_counts(&p.name).await?;
            let events = match model {
                Some(_) => store.inbox_list(&p.name, wanted.clone(), None, limit as i64).await?,
                None => Vec::new(),
            };
            all.push((p.name.clone(), counts, events));
        }
        Ok::<_, crate::state::StateError>(all)
    });
    let listed = match listed {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {}", shown(secrets, &e.to_string()));
            return Ok(1);
        }
    };
    if format == PlanFormat::Json {
        for (name, counts, events) in &listed {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "model": name, "counts": counts_json(counts),
                    "events": events.iter().map(event_json).collect::<Vec<_>>(),
                })
            )?;
        }
        return Ok(0);
    }
    let header: Vec<String> = [
        "model",
        "pending",
        "applied",
        "superseded",
        "ignored",
        "dead letters",
        "oldest pending",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|(name, c, _)| {
            vec![
                name.clone(),
                c.pending.to_string(),
                c.applied.to_string(),
                c.superseded.to_string(),
                c.ignored.to_string(),
                c.dead_letters().to_string(),
                c.oldest_pending
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.write_all(super::text_table(&header, &rows, None).as_bytes())?;
    if let Some((name, _, events)) = listed.first().filter(|_| model.is_some()) {
        writeln!(out)?;
        if events.is_empty() {
            writeln!(
                out,
                "no {} events",
                wanted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
            )?;
            return Ok(0);
        }
        let header: Vec<String> = [
            "seq",
            "event id",
            "type",
            "status",
            "received",
            "event time",
            "key",
            "reason",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.event_id.clone(),
                    e.event_type.clone(),
                    e.status.as_str().to_string(),
                    e.received.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    e.event_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    e.key.clone().unwrap_or_default(),
                    e.reason.as_deref().map(|r| secrets.scrub(r)).unwrap_or_default(),
                ]
            })
            .collect();
        out.write_all(super::text_table(&header, &rows, Some(80)).as_bytes())?;
        if events.iter().any(|e| e.status.is_dead_letter()) {
            writeln!(
                out,
                "\n`ebb inbox replay {name}` puts the dead letters back in the inbox"
            )?;
        }
    }
    Ok(0)
}

/// `ebb inbox replay MODEL [EVENT_ID…]`.
pub fn replay(project: Option<PathBuf>, model: &str, ids: &[String], format: PlanFormat) -> anyhow::Result<u8> {
    let (report, plans, store, rt) = match webhook_models(project, Some(model))? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let plan = &plans[0];
    let ids = (!ids.is_empty()).then(|| ids.to_vec());
    let asked = ids.as_ref().map(Vec::len);
    let r = match rt.block_on(crate::engine::webhook::replay(&store, plan, ids)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
            return Ok(1);
        }
    };
    let entry = crate::audit::NewAudit::new(crate::audit::cli_actor(), crate::audit::Action::InboxReplayed)
        .model(model)
        .detail(serde_json::json!({
            "event_ids": asked, "requeued": r.requeued, "from_rejected": r.from_rejected,
            "not_found": r.not_found.len(),
        }));
    if let Err(code) = super::audit::record(&rt, &store, &report.secrets, entry) {
        return Ok(code);
    }
    let mut out = std::io::stdout().lock();
    if format == PlanFormat::Json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "model": model, "requeued": r.requeued, "from_rejected": r.from_rejected,
                "still_rejected": r.still_rejected.iter().map(|(id, why)| serde_json::json!({"event_id": id, "reason": why})).collect::<Vec<_>>(),
                "not_found": r.not_found,
            })
        )?;
    } else {
        writeln!(
            out,
            "{model}: {} dead letters back in the inbox, {} events read again from refused requests",
            r.requeued, r.from_rejected
        )?;
        for (id, why) in &r.still_rejected {
            writeln!(out, "  still refused: {id}: {}", report.secrets.scrub(why))?;
        }
        for id in &r.not_found {
            writeln!(out, "  not a dead letter of `{model}`: {id}")?;
        }
        if r.requeued + r.from_rejected > 0 {
            writeln!(
                out,
                "a running daemon applies them within a second; without one, `ebb run {model}` does"
            )?;
        }
    }
    Ok(if r.not_found.is_empty() && r.still_rejected.is_empty() {
        0
    } else {
        1
    })
}

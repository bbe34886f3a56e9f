//! The reload loop: polls the project files, reloads when one changed, hands what was
//! accepted to the scheduler, and tells of each load: a log line per event, the reload
//! metrics, and the record `/api/models` shows. What a load accepts or rejects is decided
//! in `reload`; this is when loads happen and how their outcome is reported.

use super::reload::{self, diagnostic_json, one_line, Event, Loader};
use super::{scheduler, Shared, RELOAD_POLL};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// Loads (or reloads) the project off the async threads.
pub(super) async fn load(loader: &Arc<Mutex<Loader>>) -> (Vec<Event>, Option<reload::Accepted>) {
    let loader = loader.clone();
    tokio::task::spawn_blocking(move || {
        let mut l = loader.lock().unwrap_or_else(|e| e.into_inner());
        let events = l.load();
        (events, l.accepted())
    })
    .await
    .unwrap_or_else(|e| {
        (
            vec![Event::Unreadable {
                error: format!("loading the project failed: {e}"),
            }],
            None,
        )
    })
}

/// Polls the project files; on a change, reloads and applies what was accepted.
pub(super) async fn reloader(shared: Arc<Shared>, loader: Arc<Mutex<Loader>>) {
    loop {
        tokio::time::sleep(RELOAD_POLL).await;
        let l = loader.clone();
        let changed = tokio::task::spawn_blocking(move || l.lock().unwrap_or_else(|e| e.into_inner()).changed())
            .await
            .unwrap_or(false);
        if !changed {
            continue;
        }
        let (events, accepted) = load(&loader).await;
        let any_accepted = events.iter().any(|e| {
            matches!(
                e,
                Event::Accepted { .. } | Event::Removed { .. } | Event::ProjectAccepted { .. }
            )
        });
        // The new plans take over first: once a reload is logged as accepted, it is in
        // effect (a webhook replayed after it reads the new rules).
        if let (true, Some(a)) = (any_accepted, accepted) {
            scheduler::apply(&shared, a.project, a.plans).await;
        }
        for e in &events {
            report_event(&shared, e);
        }
        record_reload(&shared, &events);
        super::audit::reloaded(&shared, &events).await;
    }
}

/// Keeps the outcome of a load for `/api/models`: `accepted`, `partial` (at start-up, some
/// files left out) or `rejected` (nothing changed), with the errors and the changes held.
pub(super) fn record_reload(shared: &Shared, events: &[Event]) {
    let mut errors = Vec::new();
    let mut held = Vec::new();
    let mut applied = false;
    for e in events {
        match e {
            Event::Rejected { diagnostics, .. } | Event::ProjectRejected { diagnostics } => {
                errors.extend(diagnostics.iter().map(diagnostic_json));
            }
            Event::Unreadable { error } => errors.push(json!({ "message": error })),
            Event::Held { files } => held.extend(files.iter().map(|f| f.display().to_string())),
            Event::Accepted { .. } | Event::Removed { .. } | Event::ProjectAccepted { .. } => applied = true,
        }
    }
    let result = match (errors.is_empty(), applied) {
        (true, _) => "accepted",
        (false, true) => "partial",
        (false, false) => "rejected",
    };
    let value = json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "result": result,
        "errors": errors,
        "held": held,
    });
    let mut last = shared.reload.lock().unwrap_or_else(|e| e.into_inner());
    if events.is_empty() && !last.is_null() && last["result"] != "accepted" {
        // (An edit undone: nothing to apply, but the errors reported before are gone.)
        shared.metrics.record_reload("accepted");
        tracing::info!(
            event = "reload_accepted",
            "the project validates again: nothing to change"
        );
    }
    *last = crate::logging::redacted(&value);
}

/// Logs one event of a load and counts it in the reload metrics.
pub(super) fn report_event(shared: &Shared, e: &Event) {
    // An array in JSON lines; one readable line in human ones.
    let diagnostics = |ds: &[crate::diagnostics::Diagnostic]| {
        if crate::logging::json_output() {
            json!(ds.iter().map(diagnostic_json).collect::<Vec<_>>()).to_string()
        } else {
            json!(ds.iter().map(one_line).collect::<Vec<_>>().join("; ")).to_string()
        }
    };
    match e {
        Event::Accepted {
            file,
            models,
            warnings,
            added,
        } => {
            shared.metrics.record_reload("accepted");
            tracing::info!(
                event = "reload_accepted",
                file = %file.display(),
                models = %models.join(","),
                warnings = *warnings,
                "{}",
                if *added {
                    "model file loaded"
                } else {
                    "model file changed: new version loaded"
                }
            );
        }
        Event::Rejected {
            file,
            kept,
            diagnostics: ds,
        } => {
            shared.metrics.record_reload("rejected");
            tracing::error!(
                event = "reload_rejected",
                file = %file.display(),
                kept = %kept.join(","),
                json.diagnostics = %diagnostics(ds),
                "{}",
                if kept.is_empty() {
                    "model file rejected: it has errors and is not loaded"
                } else {
                    "model file rejected: it has errors; its models keep their previous plans"
                }
            );
        }
        Event::Removed { file, models } => {
            shared.metrics.record_reload("accepted");
            tracing::info!(
                event = "reload_removed",
                file = %file.display(),
                models = %models.join(","),
                "model file removed: its models stop after any run in progress"
            );
        }
        Event::ProjectAccepted { restart_needed } => {
            shared.metrics.record_reload("accepted");
            tracing::info!(event = "reload_accepted", "ebb.yaml changed: new version loaded");
            if !restart_needed.is_empty() {
                tracing::warn!(
                    event = "restart_needed",
                    settings = %restart_needed.join(","),
                    "ebb.yaml changed settings that apply only after a restart of the daemon"
                );
            }
        }
        Event::ProjectRejected { diagnostics: ds } => {
            shared.metrics.record_reload("rejected");
            tracing::error!(
                event = "reload_rejected",
                json.diagnostics = %diagnostics(ds),
                "ebb.yaml rejected: it has errors; nothing changes"
            );
        }
        Event::Unreadable { error } => {
            shared.metrics.record_reload("rejected");
            tracing::error!(event = "reload_rejected", error = %error, "the project cannot be read; nothing changes");
        }
        Event::Held { files } => tracing::warn!(
            event = "reload_held",
            changed = %files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            "the project has errors: no change is applied until they are fixed; every model keeps its previous plan"
        ),
    }
}

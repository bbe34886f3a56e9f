//! The daemon's own entries in the audit log ([`crate::audit`]): a reload of the project
//! files, and the retention purge it runs at start and then once a day
//! ([`crate::state::retention`]; `ebb purge` runs the same on demand).

use super::reload::Event;
use super::Shared;
use crate::audit::{Action, NewAudit, DAEMON_ACTOR};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How often the daemon purges.
pub const PURGE_EVERY: Duration = Duration::from_secs(86_400);

/// Records a reload that changed something or was refused (a poll that found nothing
/// changed records nothing).
pub(super) async fn reloaded(shared: &Shared, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let mut accepted = Vec::new();
    let mut removed = Vec::new();
    let mut rejected = Vec::new();
    let mut project = None;
    for e in events {
        match e {
            Event::Accepted { file, models, .. } => accepted.push(json!({ "file": file, "models": models })),
            Event::Removed { file, models } => removed.push(json!({ "file": file, "models": models })),
            Event::Rejected { file, diagnostics, .. } => {
                rejected.push(json!({ "file": file, "errors": diagnostics.len() }))
            }
            Event::ProjectAccepted { .. } => project = Some("accepted"),
            Event::ProjectRejected { .. } | Event::Unreadable { .. } => project = Some("rejected"),
            Event::Held { .. } => {}
        }
    }
    let entry = NewAudit::new(DAEMON_ACTOR, Action::ConfigReloaded).detail(json!({
        "accepted": accepted, "removed": removed, "rejected": rejected, "project": project,
    }));
    append(shared, entry).await;
}

async fn append(shared: &Shared, entry: NewAudit) {
    let Some(store) = shared.store.get() else { return };
    if let Err(e) = store.audit_append(entry.clone()).await {
        tracing::error!(
            event = "audit_failed",
            action = entry.action.as_str(),
            error = %e,
            "cannot record an action in the audit log"
        );
    }
}

/// Purges what the project's `retention:` no longer keeps, now and then every day, until
/// the daemon stops.
pub(super) async fn purger(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        if let Some(store) = shared.store.get() {
            let retention = {
                let t = shared.table();
                crate::config::retention::Retention::of(t.project.retention.as_ref())
            };
            let cutoffs = crate::state::retention::Cutoffs::of(&retention, chrono::Utc::now().timestamp_millis());
            match store.purge(&cutoffs, false, DAEMON_ACTOR).await {
                Ok(p) => tracing::info!(
                    event = "purged",
                    json.removed = %p.to_json(),
                    total = p.total(),
                    "retention: rows older than their limit purged"
                ),
                Err(e) => tracing::error!(
                    event = "purge_failed",
                    error = %e,
                    "retention: the purge failed; the next one is in a day"
                ),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

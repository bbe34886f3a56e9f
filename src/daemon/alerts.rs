//! The daemon's alert loop (docs/alerts.md): evaluates every alert after each run ends and
//! every minute (more often when an alert's `repeat` is shorter), notifies the changes,
//! and logs and counts every notification, with what could not be delivered.

use super::Shared;
use crate::alerts::eval::{evaluate, Alert};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How often the alerts are evaluated at least.
pub const EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn alerts(shared: Arc<Shared>) {
    let http = match crate::http::client() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(event = "alerts_unavailable", error = %e, "no HTTP client for alert notifications");
            return;
        }
    };
    let mut stop = shared.stop.subscribe();
    loop {
        let (project, plans) = {
            let t = shared.table();
            let plans: Vec<_> = t
                .models
                .values()
                .filter(|e| !e.removed)
                .map(|e| e.plan.clone())
                .collect();
            (t.project.clone(), plans)
        };
        let compiled = Alert::compile(&project);
        let tick = compiled
            .iter()
            .filter_map(|a| a.repeat)
            .min()
            .map_or(EVERY, |r| r.min(EVERY))
            .max(Duration::from_secs(1));
        if let (false, Some(store)) = (compiled.is_empty(), shared.store.get()) {
            match evaluate(&project, &plans, store, &http, &shared.dir, chrono::Utc::now()).await {
                Ok(sent) => {
                    for s in sent {
                        let m = &s.message;
                        let firing = m.kind != crate::alerts::channel::Kind::Resolved;
                        shared.metrics.record_alert(&m.alert, &m.model, firing, &s.results);
                        let failed: Vec<String> = s
                            .results
                            .iter()
                            .filter_map(|(t, e)| e.as_ref().map(|e| format!("{t}: {}", crate::redact::text(e))))
                            .collect();
                        let channels = json!(s.results.iter().map(|(t, _)| t).collect::<Vec<_>>()).to_string();
                        let undelivered = json!(failed).to_string();
                        // One event at the level the outcome deserves (`tracing` levels are constants).
                        macro_rules! notified {
                            ($level:ident, $event:literal, $suffix:literal) => {
                                tracing::$level!(
                                    event = $event,
                                    alert = %m.alert,
                                    model = %m.model,
                                    state = m.kind.as_str(),
                                    value = m.value,
                                    json.channels = %channels,
                                    json.undelivered = %undelivered,
                                    "{}{}",
                                    m.summary(),
                                    $suffix
                                )
                            };
                        }
                        if failed.is_empty() {
                            notified!(info, "alert_notified", "");
                        } else {
                            notified!(error, "alert_undelivered", " (not delivered to every channel)");
                        }
                    }
                }
                Err(e) => tracing::warn!(
                    event = "alerts_failed",
                    error = %e,
                    "the alerts could not be evaluated; trying again at the next tick"
                ),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shared.alerts_wake.notified() => {}
            _ = stop.changed() => break,
        }
    }
}

//! Evaluating the alerts: for each alert and each model it watches, the condition on the
//! model's figures, compared with the state kept from the last evaluation. A change
//! (firing, resolved) is notified once; a still-firing alert again at its `repeat`.
//! The state lives in the state store (`ebb_meta`, `alert:NAME:MODEL`), so a restarted
//! daemon, or a second one on the same store, does not notify again.

use super::channel::{self, Kind, Message};
use super::condition::{Condition, Metric};
use super::figures::figures;
use crate::config::alerts::{AlertSpec, NotificationsSpec, Severity};
use crate::config::ProjectSpec;
use crate::http::retry::RetryPolicy;
use crate::plan::SyncPlan;
use crate::state::{StateError, StateStore};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How often a still-firing critical alert is sent again unless `repeat` says otherwise.
pub const DEFAULT_CRITICAL_REPEAT: Duration = Duration::from_secs(3600);

/// An alert, compiled.
#[derive(Debug, Clone)]
pub struct Alert {
    pub spec: AlertSpec,
    pub condition: Condition,
    pub severity: Severity,
    pub repeat: Option<Duration>,
}

impl Alert {
    /// The project's alerts whose condition parses (`validate` reported the others).
    pub fn compile(project: &ProjectSpec) -> Vec<Alert> {
        project
            .alerts
            .iter()
            .flatten()
            .filter_map(|spec| {
                let condition = Condition::parse(&spec.condition).ok()?;
                let severity = spec.severity.unwrap_or(Severity::High);
                let repeat = match &spec.repeat {
                    Some(r) => crate::schedule::parse_duration(r, "repeat").ok(),
                    None if severity == Severity::Critical => Some(DEFAULT_CRITICAL_REPEAT),
                    None => None,
                };
                Some(Alert {
                    spec: spec.clone(),
                    condition,
                    severity,
                    repeat,
                })
            })
            .collect()
    }

    /// Whether it watches `model`.
    pub fn watches(&self, model: &str) -> bool {
        self.spec.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// An alert's state for one model, as kept between evaluations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub firing: bool,
    /// When it last started firing (or resolved), ms since the epoch.
    pub since_ms: i64,
    /// When a notification was last sent (firing or repeat).
    pub notified_ms: Option<i64>,
    /// The figure at the last evaluation.
    pub value: Option<f64>,
    /// What could not be delivered at the last notification (`channel: why`).
    #[serde(default)]
    pub undelivered: Vec<String>,
}

/// What one evaluation changes: the new state, and the notification to send if any.
pub fn step(
    alert: &Alert,
    prev: Option<&AlertState>,
    holds: bool,
    value: Option<f64>,
    now_ms: i64,
) -> (AlertState, Option<Kind>) {
    let prev = prev.cloned().unwrap_or_default();
    match (prev.firing, holds) {
        (false, true) => (
            AlertState {
                firing: true,
                since_ms: now_ms,
                notified_ms: Some(now_ms),
                value,
                undelivered: Vec::new(),
            },
            Some(Kind::Firing),
        ),
        (true, false) => (
            AlertState {
                firing: false,
                since_ms: now_ms,
                notified_ms: prev.notified_ms,
                value,
                undelivered: Vec::new(),
            },
            Some(Kind::Resolved),
        ),
        (true, true) => {
            let due = alert
                .repeat
                .is_some_and(|r| prev.notified_ms.is_none_or(|n| now_ms - n >= r.as_millis() as i64));
            (
                AlertState {
                    notified_ms: if due { Some(now_ms) } else { prev.notified_ms },
                    value,
                    ..prev
                },
                due.then_some(Kind::Repeat),
            )
        }
        (false, false) => (AlertState { value, ..prev }, None),
    }
}

/// A notification sent (or attempted) by an evaluation.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    /// Per target: `slack:name` and the error, if it could not be delivered.
    pub results: Vec<(String, Option<String>)>,
}

/// Sends `msg` to every target of `alert`.
pub async fn notify(
    http: &reqwest::Client,
    dir: &std::path::Path,
    n: &NotificationsSpec,
    alert: &Alert,
    msg: Message,
    policy: &RetryPolicy,
) -> Sent {
    let mut results = Vec::new();
    for t in &alert.spec.notification {
        let r = channel::send(http, dir, n, t, &msg, policy).await.err();
        results.push((channel::target_name(n, t), r));
    }
    Sent { message: msg, results }
}

/// The message of `alert` for `model` of `kind`.
pub fn message(
    project: &ProjectSpec,
    alert: &Alert,
    model: &str,
    kind: Kind,
    value: Option<f64>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Message {
    let first = alert.condition.first();
    Message {
        alert: alert.spec.name.clone(),
        model: model.to_string(),
        kind,
        severity: alert.severity,
        condition: alert.spec.condition.clone(),
        metric: first.metric.as_str().to_string(),
        value,
        threshold: first.threshold,
        since,
        at: now,
        status_url: project.notifications.as_ref().and_then(|n| n.status_url.clone()),
    }
}

/// Evaluates every alert for every model it watches, notifies the changes, and keeps
/// the new states. Returns what was sent.
pub async fn evaluate(
    project: &ProjectSpec,
    plans: &[Arc<SyncPlan>],
    store: &StateStore,
    http: &reqwest::Client,
    dir: &std::path::Path,
    now: DateTime<Utc>,
) -> Result<Vec<Sent>, StateError> {
    let alerts = Alert::compile(project);
    if alerts.is_empty() {
        return Ok(Vec::new());
    }
    let n = project.notifications.clone().unwrap_or_default();
    let policy = RetryPolicy::from_env();
    let now_ms = now.timestamp_millis();
    let mut sent = Vec::new();
    for plan in plans {
        let watched: Vec<&Alert> = alerts.iter().filter(|a| a.watches(&plan.name)).collect();
        if watched.is_empty() {
            continue;
        }
        let f = figures(store, plan, now).await?;
        for alert in watched {
            let value = |m: Metric| f.get(&m).copied();
            let holds = alert.condition.holds(value);
            let shown = value(alert.condition.first().metric);
            let prev: Option<AlertState> = store
                .alert_state(&alert.spec.name, &plan.name)
                .await?
                .and_then(|t| serde_json::from_str(&t).ok());
            let (mut next, kind) = step(alert, prev.as_ref(), holds, shown, now_ms);
            if let Some(kind) = kind {
                let since = DateTime::from_timestamp_millis(next.since_ms).unwrap_or(now);
                let msg = message(project, alert, &plan.name, kind, shown, since, now);
                let s = notify(http, dir, &n, alert, msg, &policy).await;
                next.undelivered = s
                    .results
                    .iter()
                    .filter_map(|(t, e)| e.as_ref().map(|e| format!("{t}: {e}")))
                    .collect();
                sent.push(s);
            }
            if prev.as_ref() != Some(&next) {
                let json = serde_json::to_string(&next).unwrap_or_default();
                store.set_alert_state(&alert.spec.name, &plan.name, &json).await?;
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(repeat: Option<u64>) -> Alert {
        Alert {
            spec: AlertSpec {
                name: "a".into(),
                condition: "lag_minutes > 60".into(),
                severity: None,
                models: None,
                repeat: None,
                notification: Vec::new(),
            },
            condition: Condition::parse("lag_minutes > 60").unwrap(),
            severity: Severity::High,
            repeat: repeat.map(Duration::from_secs),
        }
    }

    #[test]
    fn notifies_on_changes_and_repeats_only_when_due() {
        let a = alert(Some(60));
        let (s1, k) = step(&a, None, false, Some(1.0), 0);
        assert_eq!(k, None);
        let (s2, k) = step(&a, Some(&s1), true, Some(61.0), 1_000);
        assert_eq!(k, Some(Kind::Firing));
        let (s3, k) = step(&a, Some(&s2), true, Some(62.0), 30_000);
        assert_eq!(k, None, "not yet due");
        let (s4, k) = step(&a, Some(&s3), true, Some(63.0), 61_000);
        assert_eq!(k, Some(Kind::Repeat));
        let (s5, k) = step(&a, Some(&s4), false, Some(0.0), 62_000);
        assert_eq!(k, Some(Kind::Resolved));
        assert!(!s5.firing);
        let (_, k) = step(&a, Some(&s5), false, Some(0.0), 200_000);
        assert_eq!(k, None, "resolved once");
        // Without `repeat`, a firing alert is told once.
        let b = alert(None);
        let (f, _) = step(&b, None, true, None, 0);
        assert_eq!(step(&b, Some(&f), true, None, 10_000_000).1, None);
    }
}

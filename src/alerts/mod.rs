//! Alerts (docs/alerts.md): conditions over each model's health figures, evaluated by
//! `ebb daemon` after every run and every minute; a notification when an alert starts
//! holding for a model (firing) and when it stops (resolved), never on every evaluation,
//! and again at `repeat` while it still fires.
//!
//! - [`condition`]: the condition language and the metric vocabulary;
//! - [`figures`]: a model's figures, from the state store;
//! - [`eval`]: per alert and model, what changed since the last evaluation (the state is
//!   kept in the state store, so a restart does not notify again);
//! - [`channel`]: Slack, PagerDuty Events API v2, generic webhooks; retried, and what
//!   could not be delivered reported.

pub mod channel;
pub mod condition;
pub mod eval;
pub mod figures;

use crate::config::alerts::NotificationsSpec;

/// The Slack channel `slack:` without a name goes to: the one named `default`, else the
/// only one declared.
pub fn default_slack(n: &NotificationsSpec) -> Option<&str> {
    if n.slack.contains_key("default") {
        return Some("default");
    }
    match n.slack.len() {
        1 => n.slack.keys().next().map(String::as_str),
        _ => None,
    }
}

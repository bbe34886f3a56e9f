//! `alerts:` and `notifications:` of `ebb.yaml` (docs/alerts.md): conditions over a
//! model's health, the channels they notify. The seed's own block is valid as written:
//!
//! ```yaml
//! alerts:
//!   - name: crm_sync_delay
//!     condition: lag_minutes > 60
//!     severity: high
//!     notification:
//!       - email: data-team@company.com
//!       - slack: #data-alerts          # YAML reads `#…` as a comment: the default channel
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One alert: a condition evaluated per model, and who is told when it starts and stops
/// holding.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// Unique name, shown in notifications and `ebb alerts`.
    pub name: String,
    /// `METRIC OP NUMBER`, e.g. `lag_minutes > 60`, `failure_rate > 0.05`; conditions can be
    /// joined with `and` / `or`. Metrics: `lag_minutes`, `failure_rate`, `rejected_rows`,
    /// `rejected_ratio`, `consecutive_failures`, `row_count_change`, `conflicts_open`,
    /// `dead_letters`.
    pub condition: String,
    /// `critical`, `high`, `medium` (or `warning`), `low` (or `info`). Default: `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The models it watches (default: every model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// How often a still-firing alert is sent again, e.g. `30m`. Default: `1h` for
    /// `critical`, never for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<String>,
    /// Where it goes: `- slack: CHANNEL`, `- pagerduty: SERVICE`, `- webhook: NAME`,
    /// `- email: ADDRESS`; channels are declared under `notifications:`.
    pub notification: Vec<Target>,
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[serde(alias = "info")]
    Low,
    #[serde(alias = "warning")]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// PagerDuty's word for it (`critical`, `error`, `warning`, `info`).
    pub fn pagerduty(self) -> &'static str {
        match self {
            Severity::Low => "info",
            Severity::Medium => "warning",
            Severity::High => "error",
            Severity::Critical => "critical",
        }
    }
}

/// One place an alert goes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A Slack channel of `notifications.slack`; empty (or `#…`, which YAML reads as a
    /// comment) means the channel named `default`, or the only one.
    Slack(#[schemars(schema_with = "string_or_null")] Option<String>),
    /// A service of `notifications.pagerduty`.
    Pagerduty(#[schemars(description = "A service of `notifications.pagerduty`.")] String),
    /// A webhook of `notifications.webhook`.
    Webhook(#[schemars(description = "A webhook of `notifications.webhook`.")] String),
    /// An email address, sent through `notifications.email`.
    Email(#[schemars(description = "An email address, sent through `notifications.email`.")] String),
}

/// The `$comment` of a schema whose `null` is meant: the schema generator keeps its null
/// (elsewhere it drops the null schemars adds to `Option` fields).
pub const NULL_MEANT: &str = "null is a value here";

/// `"string"` or `null`.
fn string_or_null(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "null"],
        "$comment": NULL_MEANT,
        "description": "A channel of `notifications.slack`, or empty for the default one."
    })
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Slack(_) => "slack",
            Target::Pagerduty(_) => "pagerduty",
            Target::Webhook(_) => "webhook",
            Target::Email(_) => "email",
        }
    }
}

/// The channels alerts are sent through.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSpec {
    /// Slack incoming webhooks by channel name: `data-alerts: {url: ${SLACK_WEBHOOK_URL}}`.
    #[serde(default)]
    pub slack: BTreeMap<String, SlackChannel>,
    /// PagerDuty Events API v2 services by name: `data-oncall: {routing_key: ${PD_KEY}}`.
    #[serde(default)]
    pub pagerduty: BTreeMap<String, PagerDutyService>,
    /// Generic JSON webhooks by name.
    #[serde(default)]
    pub webhook: BTreeMap<String, WebhookChannel>,
    /// The SMTP server email alerts go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
    /// The status page a notification links to, e.g. `https://ebb.internal:7878/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackChannel {
    /// `https://hooks.slack.com/services/…`, as `${VAR}` (the URL is the credential).
    pub url: String,
}

/// A PagerDuty service's Events API v2 integration.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyService {
    /// The integration's routing key (32 characters), as `${VAR}`.
    pub routing_key: String,
    /// The events endpoint. Default: `https://events.pagerduty.com/v2/enqueue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// Where the JSON notification is POSTed (https, or http to loopback).
    pub url: String,
    /// Extra headers, e.g. `Authorization: Bearer ${TOKEN}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// An SMTP server: STARTTLS on its port (587 unless set), implicit TLS on 465, no TLS only
/// to a server on loopback.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// The SMTP server's host name.
    pub smtp_host: String,
    /// Its port. Default: 587 (STARTTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    /// The sender address.
    pub from: String,
    /// The user to log in as, if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// As `${VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// How the connection is encrypted: `starttls` (a plain connection upgraded before
    /// anything else is said; the default), `implicit` (TLS from the first byte; the
    /// default on port 465) or `none` (only to a server on loopback, and the default
    /// there). TLS 1.2 at least; the server's certificate must verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EmailTls>,
    /// A PEM file of certificate authorities trusted besides the system's (a private
    /// relay's CA), relative to the project directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// How an SMTP connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmailTls {
    /// Plain, then `STARTTLS` (RFC 3207) before the mail or any credential.
    Starttls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
    /// No encryption: only to a server on loopback.
    None,
}

impl EmailSpec {
    /// The port and encryption used: as set, else 587 with STARTTLS (465: implicit TLS;
    /// a loopback server: none).
    pub fn transport(&self, loopback: bool) -> (u16, EmailTls) {
        let port = self.smtp_port.unwrap_or(587);
        let tls = self.tls.unwrap_or(if port == 465 {
            EmailTls::Implicit
        } else if loopback {
            EmailTls::None
        } else {
            EmailTls::Starttls
        });
        (port, tls)
    }
}

/// A model's lag thresholds: past `warning` its health is WARNING, past `critical`
/// CRITICAL (the seed's integration health: inbound 30m and 60m, outbound 60m and 120m by
/// default).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Lag past which the model is WARNING, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Lag past which the model is CRITICAL, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<String>,
}

//! Sending a notification: Slack incoming webhooks (text and blocks), PagerDuty Events API
//! v2 (trigger and resolve with a stable `dedup_key`), generic JSON webhooks. A 429, a 5xx
//! or a connection error is retried under the retry policy; what still fails is returned,
//! for the daemon to log, count and show. Email goes over SMTP (lettre): STARTTLS, or
//! implicit TLS on port 465; plain only to a server on loopback.

use crate::config::alerts::{NotificationsSpec, Severity, Target};
use crate::config::env::expand_env;
use crate::destination::SendError;
use crate::http::retry::RetryPolicy;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Firing,
    /// Still firing, sent again at the alert's `repeat`.
    Repeat,
    Resolved,
    /// `ebb alerts test`.
    Test,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Firing => "firing",
            Kind::Repeat => "repeat",
            Kind::Resolved => "resolved",
            Kind::Test => "test",
        }
    }
}

/// One notification of one alert for one model.
#[derive(Debug, Clone)]
pub struct Message {
    pub alert: String,
    pub model: String,
    pub kind: Kind,
    pub severity: Severity,
    pub condition: String,
    pub metric: String,
    pub value: Option<f64>,
    pub threshold: f64,
    /// When it started firing.
    pub since: DateTime<Utc>,
    pub at: DateTime<Utc>,
    pub status_url: Option<String>,
}

impl Message {
    fn value_text(&self) -> String {
        match self.value {
            Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "-".into(),
        }
    }

    /// One line: `FIRING [high] crm_sync_delay on customers: lag_minutes = 75.2 (lag_minutes > 60)`.
    pub fn summary(&self) -> String {
        let word = match self.kind {
            Kind::Firing => "FIRING",
            Kind::Repeat => "STILL FIRING",
            Kind::Resolved => "RESOLVED",
            Kind::Test => "TEST",
        };
        format!(
            "{word} [{}] {} on {}: {} = {} ({})",
            self.severity.as_str(),
            self.alert,
            self.model,
            self.metric,
            self.value_text(),
            self.condition
        )
    }

    /// PagerDuty's `dedup_key`: the same for an alert and model from trigger to resolve.
    pub fn dedup_key(&self) -> String {
        match self.kind {
            Kind::Test => format!("ebb:test:{}", self.alert),
            _ => format!("ebb:{}:{}", self.alert, self.model),
        }
    }

    fn slack(&self) -> Value {
        let mut text = format!("*{}*", self.summary());
        if let Some(u) = &self.status_url {
            text.push_str(&format!("\n<{u}|status page>"));
        }
        json!({
            "text": self.summary(),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                    "model `{}` · value {} · threshold {} · since {}",
                    self.model, self.value_text(), self.threshold,
                    self.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )}]}
            ]
        })
    }

    fn webhook(&self) -> Value {
        json!({
            "alert": self.alert,
            "model": self.model,
            "state": self.kind.as_str(),
            "severity": self.severity.as_str(),
            "condition": self.condition,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "since": self.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "status_url": self.status_url,
        })
    }

    fn pagerduty(&self, routing_key: &str, action: &str) -> Value {
        let mut body = json!({
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": self.dedup_key(),
        });
        if action == "trigger" {
            body["payload"] = json!({
                "summary": self.summary().chars().take(1024).collect::<String>(),
                "source": "ebb",
                "severity": self.severity.pagerduty(),
                "timestamp": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "component": self.model,
                "group": self.alert,
                "custom_details": {"condition": self.condition, "value": self.value, "threshold": self.threshold},
            });
            body["client"] = json!("ebb");
            if let Some(u) = &self.status_url {
                body["client_url"] = json!(u);
            }
        }
        body
    }
}

/// POSTs `body` to `url` with `headers`; 2xx is delivered, 429/5xx/network errors are
/// transient, anything else fatal.
async fn post(http: &reqwest::Client, url: &str, headers: &[(String, String)], body: &Value) -> Result<(), SendError> {
    // Over https, or plain http to loopback only (validate says so too).
    let parsed = url::Url::parse(url).map_err(|e| SendError::Fatal(format!("not a URL: {e}")))?;
    let loopback = parsed.host().is_some_and(|h| crate::http::is_loopback(&h));
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
        return Err(SendError::Fatal(format!(
            "{}://{}…: alerts go over https (plain http only to loopback)",
            parsed.scheme(),
            parsed.host_str().unwrap_or("")
        )));
    }
    let mut req = http.post(url).json(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let answer = req.send().await.map_err(|e| SendError::Transient {
        message: crate::redact::text(&crate::diagnostics::root_cause(&e)),
        retry_after: None,
    })?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = answer
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let text: String = answer.text().await.unwrap_or_default().chars().take(200).collect();
    let message = format!("HTTP {}: {}", status.as_u16(), crate::redact::text(&text));
    if status.as_u16() == 429 || status.is_server_error() {
        Err(SendError::Transient { message, retry_after })
    } else {
        Err(SendError::Fatal(message))
    }
}

/// Sends `msg` by email to `to` through the SMTP server `e`: STARTTLS on its port (587
/// unless set), implicit TLS on 465, no TLS only to a server on loopback (docs/alerts.md);
/// TLS 1.2 at least, the certificate verified against the system's roots and `ca_file`.
/// Credentials are never sent over a connection that did not become encrypted (lettre
/// refuses to).
async fn email(
    e: &crate::config::alerts::EmailSpec,
    project_dir: &std::path::Path,
    to: &str,
    msg: &Message,
) -> Result<(), SendError> {
    use crate::config::alerts::EmailTls;
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters, TlsVersion};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let fatal = |m: String| SendError::Fatal(format!("email to {to}: {m}"));
    let host = expand(&e.smtp_host).map_err(fatal)?;
    let loopback = crate::http::is_loopback_host(&host);
    let (port, tls) = e.transport(loopback);
    if tls == EmailTls::None && !loopback {
        return Err(fatal(format!(
            "`tls: none` to `{host}`: mail and credentials would cross the network in clear; only a server on loopback may be reached without TLS"
        )));
    }
    let mut params_builder = TlsParameters::builder(host.clone()).set_min_tls_version(TlsVersion::Tlsv12);
    if let Some(f) = &e.ca_file {
        let path = project_dir.join(expand(f).map_err(fatal)?);
        let pem = std::fs::read(&path).map_err(|x| fatal(format!("`ca_file` {}: {x}", path.display())))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|x| fatal(format!("`ca_file` {}: not a PEM certificate: {x}", path.display())))?;
        params_builder = params_builder.add_root_certificate(cert);
    }
    let params = |p: lettre::transport::smtp::client::TlsParametersBuilder| -> Result<TlsParameters, SendError> {
        p.build_rustls().map_err(|x| fatal(x.to_string()))
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .tls(match tls {
            EmailTls::Starttls => Tls::Required(params(params_builder)?),
            EmailTls::Implicit => Tls::Wrapper(params(params_builder)?),
            EmailTls::None => Tls::None,
        })
        .port(port)
        .timeout(Some(std::time::Duration::from_secs(30)));
    if let Some(user) = &e.username {
        let password = e.password.as_deref().map(expand).transpose().map_err(fatal)?;
        b = b.credentials(Credentials::new(
            expand(user).map_err(fatal)?,
            password.unwrap_or_default(),
        ));
    }
    let mut body = format!("{}\n\n", msg.summary());
    body.push_str(&format!(
        "alert:     {}\nmodel:     {}\nseverity:  {}\ncondition: {}\nvalue:     {}\nthreshold: {}\nsince:     {}\n",
        msg.alert,
        msg.model,
        msg.severity.as_str(),
        msg.condition,
        msg.value_text(),
        msg.threshold,
        msg.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    if let Some(u) = &msg.status_url {
        body.push_str(&format!("\nstatus page: {u}\n"));
    }
    let mail = lettre::Message::builder()
        .from(
            expand(&e.from)
                .map_err(fatal)?
                .parse()
                .map_err(|x| fatal(format!("`from`: {x}")))?,
        )
        .to(to.parse().map_err(|x| fatal(format!("`{to}`: {x}")))?)
        .subject(msg.summary())
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|x| fatal(x.to_string()))?;
    match b.build().send(mail).await {
        Ok(_) => Ok(()),
        Err(x) if x.is_permanent() => Err(fatal(x.to_string())),
        Err(x) => Err(SendError::Transient {
            message: format!("email to {to}: {x}"),
            retry_after: None,
        }),
    }
}

fn expand(s: &str) -> Result<String, String> {
    expand_env(s).map_err(|e| e.to_string())
}

/// Sends `msg` to `target`, retrying under `policy`. The error says what failed.
pub async fn send(
    http: &reqwest::Client,
    dir: &std::path::Path,
    n: &NotificationsSpec,
    target: &Target,
    msg: &Message,
    policy: &RetryPolicy,
) -> Result<(), String> {
    let attempt = |url: String, headers: Vec<(String, String)>, body: Value| async move {
        crate::destination::retry::call(policy, || post(http, &url, &headers, &body))
            .await
            .map_err(|f| f.message)
    };
    match target {
        Target::Slack(name) => {
            let name = name.as_deref().or_else(|| super::default_slack(n)).unwrap_or("default");
            let c = n.slack.get(name).ok_or_else(|| format!("no Slack channel `{name}`"))?;
            attempt(expand(&c.url)?, Vec::new(), msg.slack()).await
        }
        Target::Pagerduty(name) => {
            let s = n
                .pagerduty
                .get(name)
                .ok_or_else(|| format!("no PagerDuty service `{name}`"))?;
            let url = s.url.clone().unwrap_or_else(|| PAGERDUTY_EVENTS.to_string());
            let key = expand(&s.routing_key)?;
            let actions: &[&str] = match msg.kind {
                Kind::Resolved => &["resolve"],
                // A test opens an incident and closes it at once.
                Kind::Test => &["trigger", "resolve"],
                Kind::Firing | Kind::Repeat => &["trigger"],
            };
            for action in actions {
                attempt(url.clone(), Vec::new(), msg.pagerduty(&key, action)).await?;
            }
            Ok(())
        }
        Target::Webhook(name) => {
            let w = n.webhook.get(name).ok_or_else(|| format!("no webhook `{name}`"))?;
            let headers = w
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), expand(v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            attempt(expand(&w.url)?, headers, msg.webhook()).await
        }
        Target::Email(address) => {
            let e = n
                .email
                .as_ref()
                .ok_or_else(|| "no SMTP server under `notifications.email`".to_string())?;
            crate::destination::retry::call(policy, || email(e, dir, address, msg))
                .await
                .map_err(|f| f.message)
        }
    }
}

/// How a target is named in logs, metrics and `ebb alerts`: `slack:data-alerts`.
pub fn target_name(n: &NotificationsSpec, t: &Target) -> String {
    match t {
        Target::Slack(name) => format!(
            "slack:{}",
            name.as_deref().or_else(|| super::default_slack(n)).unwrap_or("default")
        ),
        Target::Pagerduty(name) => format!("pagerduty:{name}"),
        Target::Webhook(name) => format!("webhook:{name}"),
        Target::Email(a) => format!("email:{a}"),
    }
}

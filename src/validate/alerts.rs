//! `alerts:` and `notifications:` of `ebb.yaml` checked (docs/alerts.md): every condition
//! parses over the known metrics (an unknown one with "did you mean", at its column inside
//! the condition), every channel an alert names is declared, names are unique, a Slack
//! webhook URL is not written out. Model names an alert is scoped to are returned, to be
//! checked once the models are known ([`check_scopes`]).

use crate::alerts::condition::{Condition, Metric};
use crate::config::alerts::Target;
use crate::config::env;
use crate::config::ProjectSpec;
use crate::diagnostics::{one_of, unique_close_match, Code, Diagnostic, SourceFile, Span};
use crate::yaml::Node;
use std::sync::Arc;

/// A span `offset` bytes into the scalar at `path` (its first line).
fn inside(root: &Node, file: &Arc<SourceFile>, path: &[String], offset: usize) -> Span {
    let (node, _) = root.deepest(path);
    let mut span = node.pos.in_file(file);
    let quote = file
        .line(node.pos.line)
        .and_then(|l| l.chars().nth(node.pos.col - 1))
        .is_some_and(|c| c == '"' || c == '\'');
    let text = node.as_str().unwrap_or("");
    let chars = text.get(..offset.min(text.len())).map_or(0, |s| s.chars().count());
    span.col = node.pos.col + chars + usize::from(quote);
    span.end_line = span.line;
    span.end_col = span.col + 1;
    span
}

/// Checks the alerts; returns the (model, where) pairs of every `models:` entry.
pub fn check(
    spec: &ProjectSpec,
    root: &Node,
    file: &Arc<SourceFile>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Span)> {
    let at = |path: &[String]| -> Span { root.deepest(path).0.pos.in_file(file) };
    let p = |parts: &[&str]| -> Vec<String> { parts.iter().map(|s| s.to_string()).collect() };
    let n = spec.notifications.clone().unwrap_or_default();
    // Alerts travel over https (plain http only to loopback), as every URL of the project;
    // a URL whose variables leave it empty here is not set in this environment.
    let mut url = |u: &str, path: Vec<String>| {
        if env::expand_env(u).is_ok_and(|t| !t.is_empty()) {
            super::project::check_url(u, &at(&path), diags);
        }
    };
    for (name, c) in &n.slack {
        url(&c.url, p(&["notifications", "slack", name, "url"]));
    }
    for (name, c) in &n.pagerduty {
        if let Some(u) = &c.url {
            url(u, p(&["notifications", "pagerduty", name, "url"]));
        }
    }
    for (name, c) in &n.webhook {
        url(&c.url, p(&["notifications", "webhook", name, "url"]));
    }
    if let Some(e) = &n.email {
        let host = env::expand_env(&e.smtp_host).unwrap_or_default();
        let loopback = crate::http::is_loopback_host(&host);
        if !host.is_empty() && e.transport(loopback).1 == crate::config::alerts::EmailTls::None && !loopback {
            diags.push(
                Diagnostic::new(
                    Code::InsecureUrl,
                    at(&p(&["notifications", "email", "tls"])),
                    format!("`tls: none` to `{host}`: mail and the SMTP password would cross the network in clear"),
                )
                .help("use `tls: starttls` (port 587) or `tls: implicit` (port 465); only a server on loopback may be reached without TLS"),
            );
        }
    }
    for (name, c) in &n.slack {
        if !env::has_reference(&c.url) {
            diags.push(
                Diagnostic::new(
                    Code::LiteralSecret,
                    at(&p(&["notifications", "slack", name, "url"])),
                    "a Slack incoming-webhook URL is a credential: anyone holding it can post to the channel",
                )
                .help("write it as `${VAR}`: `url: ${SLACK_WEBHOOK_URL}`"),
            );
        }
    }
    let mut scopes = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, a) in spec.alerts.iter().flatten().enumerate() {
        let idx = i.to_string();
        let base = |rest: &[&str]| -> Vec<String> {
            let mut v = p(&["alerts", &idx]);
            v.extend(rest.iter().map(|s| s.to_string()));
            v
        };
        if names.contains(&a.name.as_str()) {
            diags.push(
                Diagnostic::new(
                    Code::DuplicateAlert,
                    at(&base(&["name"])),
                    format!("a second alert named `{}`", a.name),
                )
                .help("alert names are unique: they name the alert in notifications and `ebb alerts`"),
            );
        }
        names.push(&a.name);
        if let Err(e) = Condition::parse(&a.condition) {
            let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            let help = match &e.unknown_metric {
                Some(w) => match unique_close_match(w, metrics.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`? metrics: {}", one_of(&metrics)),
                    None => format!("metrics: {}", one_of(&metrics)),
                },
                None => "write `METRIC OP NUMBER`, e.g. `lag_minutes > 60`, joined with `and`/`or`".into(),
            };
            diags.push(
                Diagnostic::new(
                    Code::BadCondition,
                    inside(root, file, &base(&["condition"]), e.offset),
                    e.message,
                )
                .help(help),
            );
        }
        if let Some(r) = &a.repeat {
            if let Err(e) = crate::schedule::parse_duration(r, "repeat") {
                diags.push(Diagnostic::new(Code::BadDuration, at(&base(&["repeat"])), e.message).help(e.help));
            }
        }
        for (j, m) in a.models.iter().flatten().enumerate() {
            scopes.push((m.clone(), at(&base(&["models", &j.to_string()]))));
        }
        if a.notification.is_empty() {
            diags.push(
                Diagnostic::new(
                    Code::UnknownChannel,
                    at(&base(&["notification"])),
                    "the alert notifies nobody",
                )
                .help("add e.g. `- slack: data-alerts`"),
            );
        }
        for (j, t) in a.notification.iter().enumerate() {
            let jdx = j.to_string();
            let here = at(&base(&["notification", &jdx, t.kind()]));
            let declared: Vec<&str> = match t {
                Target::Slack(_) => n.slack.keys().map(String::as_str).collect(),
                Target::Pagerduty(_) => n.pagerduty.keys().map(String::as_str).collect(),
                Target::Webhook(_) => n.webhook.keys().map(String::as_str).collect(),
                Target::Email(_) => Vec::new(),
            };
            let unknown = |name: &str| -> Diagnostic {
                let help = match unique_close_match(name, declared.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None if declared.is_empty() => format!(
                        "declare it under `notifications: {{{}: {{{name}: …}}}}` in ebb.yaml",
                        t.kind()
                    ),
                    None => format!("declared: {}", one_of(&declared)),
                };
                Diagnostic::new(
                    Code::UnknownChannel,
                    here.clone(),
                    format!("no {} channel named `{name}` under `notifications`", t.kind()),
                )
                .help(help)
            };
            match t {
                Target::Slack(Some(name)) | Target::Pagerduty(name) | Target::Webhook(name) => {
                    if !declared.contains(&name.as_str()) {
                        diags.push(unknown(name));
                    }
                }
                Target::Slack(None) => {
                    let line = file.line(here.line).unwrap_or("");
                    if let Some(comment) = line.split_once("slack:").and_then(|(_, r)| r.trim().strip_prefix('#')) {
                        let mut at_hash = here.clone();
                        if let Some(i) = line.find('#') {
                            at_hash.col = line[..i].chars().count() + 1;
                            at_hash.end_line = at_hash.line;
                            at_hash.end_col = at_hash.col + comment.chars().count() + 1;
                        }
                        diags.push(
                            Diagnostic::new(
                                Code::SlackComment,
                                at_hash,
                                format!(
                                    "`#{comment}` is a YAML comment, so `slack:` is empty: the alert goes to the default Slack channel"
                                ),
                            )
                            .help(format!("to name the channel, declare it under `notifications.slack` and write `slack: {comment}` or `slack: \"#{comment}\"`")),
                        );
                    }
                    if crate::alerts::default_slack(&n).is_none() {
                        diags.push(
                            Diagnostic::new(
                                Code::UnknownChannel,
                                here.clone(),
                                "`slack:` names no channel, and there is no Slack channel named `default` (nor only one)",
                            )
                            .help("declare `notifications: {slack: {default: {url: ${SLACK_WEBHOOK_URL}}}}`; to name a channel with `#`, quote it: `slack: \"#data-alerts\"`"),
                        );
                    }
                }
                Target::Email(address) => {
                    if n.email.is_none() {
                        diags.push(
                            Diagnostic::new(
                                Code::UnknownChannel,
                                here.clone(),
                                format!("email to `{address}` needs an SMTP server under `notifications.email`"),
                            )
                            .help("declare `notifications: {email: {smtp_host: smtp.company.com, from: ebb@company.com, password: ${SMTP_PASSWORD}}}`"),
                        );
                    } else if !address.contains('@') {
                        diags.push(Diagnostic::new(
                            Code::InvalidValue,
                            here.clone(),
                            format!("`{address}` is not an email address"),
                        ));
                    }
                }
            }
        }
    }
    scopes
}

/// The `models:` entries of alerts that name no model of the project.
pub fn check_scopes(scopes: &[(String, Span)], models: &[&str]) -> Vec<Diagnostic> {
    scopes
        .iter()
        .filter(|(m, _)| !models.contains(&m.as_str()))
        .map(|(m, span)| {
            Diagnostic::new(Code::UnknownModel, span.clone(), format!("no model named `{m}`"))
                .help(crate::plan::compile::suggest_model(m, models))
        })
        .collect()
}

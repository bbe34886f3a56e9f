//! `GET /`: the status page, for a person (docs/alerts.md, "Status page"). Plain HTML with
//! inline CSS and SVG: no build step, no JavaScript. Every model with its direction,
//! health, lag, last and next run; per model the recent runs as a chart (one bar per run:
//! rows sent, its height; a dot for its duration), the latest rejected rows, open conflicts
//! and dead letters. Behind the API token like `/api` (a browser logs in with HTTP Basic:
//! any user name, the token as the password).

use crate::daemon::Shared;
use crate::plan::SyncPlan;
use crate::state::conflicts::{ConflictQuery, ConflictStatus};
use crate::state::inbox::InboxStatus;
use crate::state::{RunRecord, StateStore};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::fmt::Write;
use std::sync::Arc;

/// Runs the chart shows.
const CHART_RUNS: i64 = 30;
/// Rows of each list (rejected rows, conflicts, dead letters).
const LIST_ROWS: usize = 5;

/// Text escaped for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: DateTime<Utc>, t: &str) -> String {
    DateTime::parse_from_rfc3339(t).map_or_else(
        |_| t.to_string(),
        |t| {
            let s = (now - t.with_timezone(&Utc)).num_seconds().max(0);
            match s {
                0..=59 => format!("{s}s ago"),
                60..=3599 => format!("{}m ago", s / 60),
                3600..=86_399 => format!("{}h{}m ago", s / 3600, (s % 3600) / 60),
                _ => format!("{}d ago", s / 86_400),
            }
        },
    )
}

fn duration_s(r: &RunRecord) -> Option<f64> {
    let start = DateTime::parse_from_rfc3339(&r.started_at).ok()?;
    let end = DateTime::parse_from_rfc3339(r.ended_at.as_deref()?).ok()?;
    Some(((end - start).num_milliseconds().max(0) as f64) / 1000.0)
}

/// The runs, oldest first, as an SVG chart: a bar per run (rows sent), a dot per run
/// (duration), each with its own title.
fn chart(runs: &[RunRecord]) -> String {
    let (w, h, pad) = (600.0_f64, 120.0_f64, 4.0_f64);
    let n = runs.len().max(1) as f64;
    let slot = w / n;
    let max_sent = runs.iter().map(|r| r.counts.sent).max().unwrap_or(0).max(1) as f64;
    let max_secs = runs.iter().filter_map(duration_s).fold(0.001_f64, f64::max);
    let mut out = format!(
        r#"<svg class="runs" role="img" aria-label="the last {} runs: rows sent (bars) and duration (dots)" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#,
        runs.len()
    );
    let _ = write!(
        out,
        r#"<line x1="0" y1="{}" x2="{w}" y2="{}" class="axis"/>"#,
        h - 0.5,
        h - 0.5
    );
    for (i, r) in runs.iter().enumerate() {
        let x = i as f64 * slot + pad / 2.0;
        let bar = ((r.counts.sent as f64 / max_sent) * (h - 2.0 * pad)).max(6.0);
        let secs = duration_s(r);
        let title = format!(
            "run {}: {}, {} sent, {} rejected{}",
            r.id,
            r.status,
            r.counts.sent,
            r.counts.rejected,
            secs.map(|s| format!(", {s:.2} s")).unwrap_or_default()
        );
        let _ = write!(
            out,
            r#"<rect class="run {}" data-run="{}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{bar:.1}"><title>{}</title></rect>"#,
            esc(&r.status),
            r.id,
            h - bar,
            (slot - pad).max(1.0),
            esc(&title)
        );
        if let Some(s) = secs {
            let cy = h - pad - (s / max_secs) * (h - 2.0 * pad);
            let _ = write!(
                out,
                r#"<circle class="duration" cx="{:.1}" cy="{cy:.1}" r="3"><title>{}</title></circle>"#,
                x + (slot - pad) / 2.0,
                esc(&title)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// One model's section.
async fn section(store: &StateStore, plan: &SyncPlan, out: &mut String) -> Result<(), crate::state::StateError> {
    let name = esc(&plan.name);
    let mut runs = store.runs(&plan.name, CHART_RUNS).await?;
    runs.reverse();
    let _ = write!(out, r#"<section id="model-{name}"><h2>{name}</h2>"#);
    if runs.is_empty() {
        out.push_str("<p class=\"empty\">no runs yet</p>");
    } else {
        out.push_str(&chart(&runs));
    }
    let errors = store.row_errors(&plan.name).await?;
    if !errors.is_empty() {
        out.push_str("<h3>Latest rejected or invalid rows</h3><ul class=\"errors\">");
        for e in errors.iter().rev().take(LIST_ROWS) {
            let _ = write!(
                out,
                "<li><code>{}</code> {} <code>{}</code>: {}</li>",
                esc(&e.key),
                esc(&e.kind),
                esc(&e.code),
                esc(&crate::redact::text(&e.message))
            );
        }
        out.push_str("</ul>");
    }
    if plan.conflicts.is_some() {
        store.conflicts_init().await?;
        let open = store
            .conflicts(ConflictQuery {
                model: Some(plan.name.clone()),
                statuses: vec![ConflictStatus::Open],
                limit: LIST_ROWS as i64,
                ..ConflictQuery::default()
            })
            .await?;
        let _ = write!(out, "<h3>Open conflicts ({})</h3>", open.len());
        if !open.is_empty() {
            out.push_str("<ul class=\"conflicts\">");
            let pii = plan.pii_fields();
            for c in open.iter().map(|c| c.shown(&pii)) {
                let _ = write!(
                    out,
                    "<li><code>{}</code> {}: warehouse {} · CRM {} ({})</li>",
                    esc(&c.key),
                    esc(&c.field),
                    esc(&c.warehouse_value.to_string()),
                    esc(&c.crm_value.to_string()),
                    esc(&c.reason)
                );
            }
            out.push_str("</ul>");
        }
    }
    if plan.source.webhook.is_some() {
        store.inbox_init().await?;
        let dead = store
            .inbox_list(
                &plan.name,
                vec![InboxStatus::Dead, InboxStatus::Rejected],
                None,
                LIST_ROWS as i64,
            )
            .await?;
        let _ = write!(out, "<h3>Dead letters ({})</h3>", dead.len());
        if !dead.is_empty() {
            out.push_str("<ul class=\"dead\">");
            for d in &dead {
                let _ = write!(
                    out,
                    "<li><code>{}</code> {}: {}</li>",
                    esc(&d.event_id),
                    esc(d.status.as_str()),
                    esc(&d.reason.as_deref().map(crate::redact::text).unwrap_or_default())
                );
            }
            out.push_str("</ul>");
        }
    }
    out.push_str("</section>");
    Ok(())
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}\
.HEALTHY,.healthy{color:#1a7f37}.WARNING,.degraded{color:#9a6700}.CRITICAL,.failing,.interrupted{color:#cf222e;font-weight:600}\
svg.runs{background:#fafafa;border:1px solid #eee}rect.run{fill:#57ab5a}rect.run.partial{fill:#c69026}\
rect.run.failed,rect.run.aborted{fill:#e5534b}rect.run.running{fill:#539bf5}circle.duration{fill:#333}\
line.axis{stroke:#999}section{margin-top:2em}code{background:#f4f4f4;padding:0 3px}";

/// `GET /`.
pub(super) async fn status_page(State(shared): State<Arc<Shared>>) -> Response {
    let Some(store) = shared.store.get().cloned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the state store is not open yet\n").into_response();
    };
    let now = Utc::now();
    let models: Vec<(Arc<SyncPlan>, bool, Option<DateTime<Utc>>)> = {
        let t = shared.table();
        t.models
            .values()
            .filter(|e| !e.removed)
            .map(|e| {
                (
                    e.plan.clone(),
                    e.run.as_ref().is_some_and(|r| r.started_at.is_some()),
                    e.next.map(|f| f.at),
                )
            })
            .collect()
    };
    let mut rows = String::new();
    let mut sections = String::new();
    for (plan, running, next) in &models {
        let last = store.runs(&plan.name, 1).await.ok().and_then(|r| r.into_iter().next());
        let health = crate::engine::health(last.as_ref().map(|r| r.status.as_str()), *running);
        let lag = crate::alerts::figures::lag_minutes(&store, plan, now)
            .await
            .ok()
            .flatten();
        let level = plan.health.level(lag);
        let name = esc(&plan.name);
        let _ = write!(
            rows,
            r##"<tr id="row-{name}"><td><a href="#model-{name}">{name}</a></td><td>{}</td><td class="health {}">{}</td><td class="{level}">{}</td><td>{}</td><td>{}</td></tr>"##,
            plan.direction().as_str(),
            esc(health).replace(' ', "-"),
            esc(health),
            lag.map_or_else(|| "-".to_string(), |m| format!("{m:.1} min ({level})")),
            last.as_ref().map_or_else(
                || "never".to_string(),
                |r| format!(
                    "{} {}",
                    esc(&r.status),
                    r.ended_at.as_deref().map(|t| ago(now, t)).unwrap_or_default()
                )
            ),
            next.map_or_else(
                || "on demand".to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
        if let Err(e) = section(&store, plan, &mut sections).await {
            let _ = write!(
                sections,
                "<section><h2>{}</h2><p>cannot read its state: {}</p></section>",
                esc(&plan.name),
                esc(&e.to_string())
            );
        }
    }
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ebb status</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body><h1>ebb status</h1><p>{} models · {}</p><table id="models"><thead><tr><th>model</th><th>direction</th><th>health</th><th>lag</th><th>last run</th><th>next run</th></tr></thead><tbody>{rows}</tbody></table>{sections}</body></html>"#,
        models.len(),
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

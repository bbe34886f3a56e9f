//! `/metrics`: counters kept by this daemon, written in the Prometheus text format
//! (version 0.0.4) by hand.
//!
//! Counters count what this process did since it started (runs by model and status, rows
//! by model and outcome, destination API calls, a run duration histogram, HTTP requests,
//! reloads). The per-model gauges (last success, lag) are read from the state store at
//! scrape time, so they include runs made by other daemons sharing the store.

use crate::engine::RunReport;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the run duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];

/// The row outcomes counted per model, in the order of [`crate::state::RunCounts`].
const OUTCOMES: [&str; 9] = [
    "read",
    "added",
    "changed",
    "removed",
    "unchanged",
    "invalid",
    "sent",
    "confirmed",
    "rejected",
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket of [`DURATION_BUCKETS`] (not cumulative), then the overflow.
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    runs: BTreeMap<(String, String), u64>,
    rows: BTreeMap<(String, &'static str), u64>,
    api_calls: BTreeMap<String, u64>,
    durations: BTreeMap<String, Histogram>,
    http: BTreeMap<(String, u16), u64>,
    reloads: BTreeMap<&'static str, u64>,
    http_refused: u64,
    http_not_allowed: u64,
    /// Webhook requests by model and answer.
    webhook_requests: BTreeMap<(String, u16), u64>,
    /// Webhook events by model and outcome (`stored`, `duplicate`, `applied`, …).
    webhook_events: BTreeMap<(String, &'static str), u64>,
    /// Per webhook model: events pending, and the apply lag of its last batch (seconds
    /// from the receipt of its oldest event to its commit).
    inbox: BTreeMap<String, (u64, f64)>,
    /// Alert notifications by channel (`slack:name`) and result (`delivered`, `failed`).
    alert_sends: BTreeMap<(String, &'static str), u64>,
    /// Per (alert, model): whether it fires.
    alerts_firing: BTreeMap<(String, String), bool>,
}

/// What a scrape reports about one model, besides the counters.
#[derive(Debug, Clone, Default)]
pub struct ModelGauges {
    pub model: String,
    pub scheduled: bool,
    pub running: bool,
    /// Unix seconds of the end of its last completed (`succeeded` or `partial`) run.
    pub last_success: Option<f64>,
    /// Unix seconds of its next planned start.
    pub next_run: Option<f64>,
    /// Models with `conflicts`: rows' fields held for review.
    pub conflicts_open: Option<u64>,
    /// How far behind the destination is, seconds (`alerts::figures::lag_minutes`).
    pub lag: Option<f64>,
}

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a run that ended (a busy model, which did not run, counts as `busy`).
    pub fn record_run(&self, r: &RunReport) {
        let mut m = self.inner();
        *m.runs
            .entry((r.model.clone(), r.status.as_str().to_string()))
            .or_default() += 1;
        if r.run_id.is_none() {
            return;
        }
        let c = r.counts;
        let values = [
            c.read,
            c.added,
            c.changed,
            c.removed,
            c.unchanged,
            c.invalid,
            c.sent,
            c.confirmed,
            c.rejected,
        ];
        for (outcome, n) in OUTCOMES.iter().zip(values) {
            *m.rows.entry((r.model.clone(), outcome)).or_default() += n.max(0) as u64;
        }
        *m.api_calls.entry(r.model.clone()).or_default() += c.api_calls.max(0) as u64;
        m.durations
            .entry(r.model.clone())
            .or_default()
            .observe(r.elapsed.as_secs_f64());
    }

    /// Records an alert notification: whether the alert fires for the model now, and
    /// per channel whether it was delivered.
    pub fn record_alert(&self, alert: &str, model: &str, firing: bool, results: &[(String, Option<String>)]) {
        let mut m = self.inner();
        m.alerts_firing.insert((alert.to_string(), model.to_string()), firing);
        for (channel, error) in results {
            let result = if error.is_none() { "delivered" } else { "failed" };
            *m.alert_sends.entry((channel.clone(), result)).or_default() += 1;
        }
    }

    /// Counts an HTTP request to the daemon by route (the matched pattern) and status.
    pub fn record_http(&self, route: &str, status: u16) {
        *self.inner().http.entry((route.to_string(), status)).or_default() += 1;
    }

    /// Counts a connection closed at once because too many were open.
    pub fn record_http_refused(&self) {
        self.inner().http_refused += 1;
    }

    /// Counts a webhook request by model and the status it was answered.
    pub fn record_webhook(&self, model: &str, status: u16) {
        *self
            .inner()
            .webhook_requests
            .entry((model.to_string(), status))
            .or_default() += 1;
    }

    /// Counts webhook events by model and outcome.
    pub fn record_events(&self, model: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            *self
                .inner()
                .webhook_events
                .entry((model.to_string(), outcome))
                .or_default() += n;
        }
    }

    /// A webhook model's inbox: events pending, and the apply lag of its last batch.
    pub fn set_inbox(&self, model: &str, pending: u64, lag: Option<f64>) {
        let mut m = self.inner();
        let e = m.inbox.entry(model.to_string()).or_default();
        e.0 = pending;
        if let Some(l) = lag {
            e.1 = l;
        }
    }

    /// Counts a connection closed because its address is not in `daemon.allow_ips`.
    pub fn record_http_not_allowed(&self) {
        self.inner().http_not_allowed += 1;
    }

    /// Counts a reload: `accepted` or `rejected`.
    pub fn record_reload(&self, result: &'static str) {
        *self.inner().reloads.entry(result).or_default() += 1;
    }

    /// The text of a scrape at `now` (Unix seconds).
    pub fn render(&self, models: &[ModelGauges], ready: bool) -> String {
        let m = self.inner();
        let mut out = String::with_capacity(4096);
        family(&mut out, "ebb_up", "gauge", "1 while the daemon runs.");
        let _ = writeln!(out, "ebb_up 1");
        family(
            &mut out,
            "ebb_ready",
            "gauge",
            "1 once the project is loaded and the state store is open (0 while shutting down).",
        );
        let _ = writeln!(out, "ebb_ready {}", u8::from(ready));

        family(
            &mut out,
            "ebb_runs_total",
            "counter",
            "Runs ended, by model and status (`busy`: not started, another process held the model's lock).",
        );
        for ((model, status), n) in &m.runs {
            let _ = writeln!(
                out,
                "ebb_runs_total{{model=\"{}\",status=\"{}\"}} {n}",
                esc(model),
                esc(status)
            );
        }
        family(
            &mut out,
            "ebb_rows_total",
            "counter",
            "Rows of runs, by model and outcome.",
        );
        for ((model, outcome), n) in &m.rows {
            let _ = writeln!(
                out,
                "ebb_rows_total{{model=\"{}\",outcome=\"{outcome}\"}} {n}",
                esc(model)
            );
        }
        family(
            &mut out,
            "ebb_api_calls_total",
            "counter",
            "Destination API calls made by runs, by model.",
        );
        for (model, n) in &m.api_calls {
            let _ = writeln!(out, "ebb_api_calls_total{{model=\"{}\"}} {n}", esc(model));
        }
        family(
            &mut out,
            "ebb_run_duration_seconds",
            "histogram",
            "How long runs took, by model.",
        );
        for (model, h) in &m.durations {
            let model = esc(model);
            let mut cumulative = 0;
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "ebb_run_duration_seconds_bucket{{model=\"{model}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "ebb_run_duration_seconds_bucket{{model=\"{model}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "ebb_run_duration_seconds_sum{{model=\"{model}\"}} {}", h.sum);
            let _ = writeln!(out, "ebb_run_duration_seconds_count{{model=\"{model}\"}} {}", h.count);
        }
        family(
            &mut out,
            "ebb_last_success_timestamp_seconds",
            "gauge",
            "End of the last run that completed (succeeded or partial), by model, from the state store.",
        );
        for g in models {
            if let Some(t) = g.last_success {
                let _ = writeln!(
                    out,
                    "ebb_last_success_timestamp_seconds{{model=\"{}\"}} {t:.3}",
                    esc(&g.model)
                );
            }
        }
        family(
            &mut out,
            "ebb_lag_seconds",
            "gauge",
            "How far behind the destination is, by model: outbound, since the last completed run; inbound, since the newest CRM change loaded; webhook models, the oldest pending event's age (absent before anything was confirmed). The same figure as `ebb status` and alerts.",
        );
        for g in models {
            if let Some(t) = g.lag {
                let _ = writeln!(out, "ebb_lag_seconds{{model=\"{}\"}} {t:.3}", esc(&g.model));
            }
        }
        family(
            &mut out,
            "ebb_next_run_timestamp_seconds",
            "gauge",
            "Next planned start, by model.",
        );
        for g in models {
            if let Some(t) = g.next_run {
                let _ = writeln!(
                    out,
                    "ebb_next_run_timestamp_seconds{{model=\"{}\"}} {t:.3}",
                    esc(&g.model)
                );
            }
        }
        family(
            &mut out,
            "ebb_conflicts_open",
            "gauge",
            "Conflicts held for review (`ebb conflicts`), by model with `conflicts`.",
        );
        for g in models {
            if let Some(n) = g.conflicts_open {
                let _ = writeln!(out, "ebb_conflicts_open{{model=\"{}\"}} {n}", esc(&g.model));
            }
        }
        family(
            &mut out,
            "ebb_model_running",
            "gauge",
            "1 while this daemon runs the model.",
        );
        for g in models {
            let _ = writeln!(
                out,
                "ebb_model_running{{model=\"{}\"}} {}",
                esc(&g.model),
                u8::from(g.running)
            );
        }
        family(
            &mut out,
            "ebb_models",
            "gauge",
            "Models loaded, by whether they have a schedule.",
        );
        let scheduled = models.iter().filter(|g| g.scheduled).count();
        let _ = writeln!(out, "ebb_models{{scheduled=\"true\"}} {scheduled}");
        let _ = writeln!(out, "ebb_models{{scheduled=\"false\"}} {}", models.len() - scheduled);
        family(
            &mut out,
            "ebb_reloads_total",
            "counter",
            "Changes to the project files, by result.",
        );
        for result in ["accepted", "rejected"] {
            let _ = writeln!(
                out,
                "ebb_reloads_total{{result=\"{result}\"}} {}",
                m.reloads.get(result).copied().unwrap_or(0)
            );
        }
        family(
            &mut out,
            "ebb_http_connections_refused_total",
            "counter",
            "Connections to the HTTP API closed at once because too many were open.",
        );
        let _ = writeln!(out, "ebb_http_connections_refused_total {}", m.http_refused);
        family(
            &mut out,
            "ebb_http_connections_not_allowed_total",
            "counter",
            "Connections closed at once because their address is not in `daemon.allow_ips`.",
        );
        let _ = writeln!(out, "ebb_http_connections_not_allowed_total {}", m.http_not_allowed);
        family(
            &mut out,
            "ebb_http_requests_total",
            "counter",
            "Requests to this daemon's HTTP API, by route and status.",
        );
        for ((route, status), n) in &m.http {
            let _ = writeln!(
                out,
                "ebb_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
        family(
            &mut out,
            "ebb_webhook_requests_total",
            "counter",
            "Webhook requests, by model and the status they were answered.",
        );
        for ((model, status), n) in &m.webhook_requests {
            let _ = writeln!(
                out,
                "ebb_webhook_requests_total{{model=\"{}\",status=\"{status}\"}} {n}",
                esc(model)
            );
        }
        family(
            &mut out,
            "ebb_webhook_events_total",
            "counter",
            "Webhook events, by model and outcome: stored, duplicate (redelivered, stored once), rejected (in a refused request), applied, superseded (older than the table's), ignored, dead (a dead letter).",
        );
        for ((model, outcome), n) in &m.webhook_events {
            let _ = writeln!(
                out,
                "ebb_webhook_events_total{{model=\"{}\",outcome=\"{outcome}\"}} {n}",
                esc(model)
            );
        }
        family(
            &mut out,
            "ebb_inbox_pending",
            "gauge",
            "Webhook events stored and not applied yet, by model.",
        );
        for (model, (pending, _)) in &m.inbox {
            let _ = writeln!(out, "ebb_inbox_pending{{model=\"{}\"}} {pending}", esc(model));
        }
        family(
            &mut out,
            "ebb_inbox_apply_lag_seconds",
            "gauge",
            "Seconds from the receipt of the oldest event of the last applied batch to its commit, by model.",
        );
        for (model, (_, lag)) in &m.inbox {
            let _ = writeln!(out, "ebb_inbox_apply_lag_seconds{{model=\"{}\"}} {lag:.3}", esc(model));
        }
        family(
            &mut out,
            "ebb_alert_firing",
            "gauge",
            "1 while an alert fires for a model (as of its last notification).",
        );
        for ((alert, model), firing) in &m.alerts_firing {
            let _ = writeln!(
                out,
                "ebb_alert_firing{{alert=\"{}\",model=\"{}\"}} {}",
                esc(alert),
                esc(model),
                u8::from(*firing)
            );
        }
        family(
            &mut out,
            "ebb_alert_notifications_total",
            "counter",
            "Alert notifications by channel and result (`delivered`, or `failed` after the retries).",
        );
        for ((channel, result), n) in &m.alert_sends {
            let _ = writeln!(
                out,
                "ebb_alert_notifications_total{{channel=\"{}\",result=\"{result}\"}} {n}",
                esc(channel)
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: `\`, `"` and line breaks escaped.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Status;
    use crate::state::RunCounts;
    use std::time::Duration;

    fn report(model: &str, status: Status, secs: f64, sent: i64) -> RunReport {
        RunReport {
            model: model.into(),
            run_id: (status != Status::Busy).then_some(1),
            status,
            counts: RunCounts {
                read: 10,
                sent,
                confirmed: sent,
                api_calls: 2,
                ..RunCounts::default()
            },
            error: None,
            notes: Vec::new(),
            elapsed: Duration::from_secs_f64(secs),
            samples: Default::default(),
            timings: Vec::new(),
        }
    }

    #[test]
    fn the_text_format() {
        let m = Metrics::default();
        m.record_run(&report("a", Status::Succeeded, 0.3, 10));
        m.record_run(&report("a", Status::Succeeded, 7.0, 4));
        m.record_run(&report("a", Status::Busy, 0.0, 0));
        m.record_run(&report("b\"x", Status::Failed, 4000.0, 0));
        m.record_http("/api/models", 200);
        m.record_reload("rejected");
        let g = [ModelGauges {
            model: "a".into(),
            scheduled: true,
            running: false,
            last_success: Some(1000.0),
            next_run: Some(1060.0),
            conflicts_open: Some(3),
            lag: Some(42.5),
        }];
        let text = m.render(&g, true);
        for line in [
            "# TYPE ebb_runs_total counter",
            "ebb_runs_total{model=\"a\",status=\"succeeded\"} 2",
            "ebb_runs_total{model=\"a\",status=\"busy\"} 1",
            "ebb_runs_total{model=\"b\\\"x\",status=\"failed\"} 1",
            "ebb_rows_total{model=\"a\",outcome=\"sent\"} 14",
            "ebb_rows_total{model=\"a\",outcome=\"read\"} 20",
            "ebb_api_calls_total{model=\"a\"} 4",
            "# TYPE ebb_run_duration_seconds histogram",
            "ebb_run_duration_seconds_bucket{model=\"a\",le=\"0.5\"} 1",
            "ebb_run_duration_seconds_bucket{model=\"a\",le=\"5\"} 1",
            "ebb_run_duration_seconds_bucket{model=\"a\",le=\"10\"} 2",
            "ebb_run_duration_seconds_bucket{model=\"a\",le=\"+Inf\"} 2",
            "ebb_run_duration_seconds_bucket{model=\"b\\\"x\",le=\"3600\"} 0",
            "ebb_run_duration_seconds_bucket{model=\"b\\\"x\",le=\"+Inf\"} 1",
            "ebb_run_duration_seconds_count{model=\"a\"} 2",
            "ebb_last_success_timestamp_seconds{model=\"a\"} 1000.000",
            "ebb_lag_seconds{model=\"a\"} 42.500",
            "ebb_models{scheduled=\"true\"} 1",
            "ebb_reloads_total{result=\"rejected\"} 1",
            "ebb_http_requests_total{route=\"/api/models\",status=\"200\"} 1",
            "ebb_ready 1",
            "ebb_conflicts_open{model=\"a\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }
}

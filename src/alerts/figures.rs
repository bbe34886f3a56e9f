//! A model's health figures, as alert conditions read them ([`Metric`]), from the state
//! store: its runs, watermark, inbox and conflicts.

use super::condition::Metric;
use crate::plan::{Direction, SyncPlan};
use crate::state::{RunRecord, StateError, StateStore};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Runs `failure_rate` looks at.
pub const RATE_RUNS: i64 = 20;

fn ended(r: &RunRecord) -> Option<DateTime<Utc>> {
    r.ended_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn minutes(d: chrono::TimeDelta) -> f64 {
    (d.num_milliseconds().max(0) as f64) / 60_000.0
}

/// The figures of `plan`'s model at `now`; a figure that does not apply (no run yet, no
/// conflicts, not a webhook model) is missing.
pub async fn figures(
    store: &StateStore,
    plan: &SyncPlan,
    now: DateTime<Utc>,
) -> Result<HashMap<Metric, f64>, StateError> {
    let model = &plan.name;
    let mut out = HashMap::new();
    let runs: Vec<RunRecord> = store
        .runs(model, RATE_RUNS)
        .await?
        .into_iter()
        .filter(|r| r.status != "running" && r.status != "busy")
        .collect();
    let failed = |r: &RunRecord| matches!(r.status.as_str(), "failed" | "aborted");
    let ok = |r: &RunRecord| matches!(r.status.as_str(), "succeeded" | "partial");
    if !runs.is_empty() {
        let n = runs.len() as f64;
        out.insert(
            Metric::FailureRate,
            runs.iter().filter(|r| failed(r)).count() as f64 / n,
        );
        out.insert(
            Metric::ConsecutiveFailures,
            runs.iter().take_while(|r| failed(r)).count() as f64,
        );
        let last = &runs[0];
        out.insert(Metric::RejectedRows, last.counts.rejected as f64);
        out.insert(
            Metric::RejectedRatio,
            if last.counts.sent > 0 {
                last.counts.rejected as f64 / last.counts.sent as f64
            } else {
                0.0
            },
        );
        let good: Vec<&RunRecord> = runs.iter().filter(|r| ok(r)).take(2).collect();
        if let [a, b] = good.as_slice() {
            if b.counts.read > 0 {
                out.insert(
                    Metric::RowCountChange,
                    (a.counts.read - b.counts.read) as f64 / b.counts.read as f64,
                );
            }
        }
    }
    if let Some(lag) = lag_minutes(store, plan, now).await? {
        out.insert(Metric::LagMinutes, lag);
    }
    if plan.source.webhook.is_some() {
        let c = store.inbox_counts(model).await?;
        out.insert(Metric::DeadLetters, c.dead_letters() as f64);
    }
    if plan.conflicts.is_some() {
        store.conflicts_init().await?;
        let open = store.conflicts_open().await?;
        out.insert(
            Metric::ConflictsOpen,
            open.iter().find(|(m, _)| m == model).map_or(0, |(_, n)| *n) as f64,
        );
    }
    Ok(out)
}

/// How far behind the destination is, in minutes: outbound, since the end of the last
/// successful run; inbound, since the newest CRM stamp loaded; a webhook model, the age of
/// its oldest pending event (0 with none). `None` before anything was confirmed. What
/// `ebb status`, `/api/models`, `ebb_lag_seconds` and alerts all show.
pub async fn lag_minutes(store: &StateStore, plan: &SyncPlan, now: DateTime<Utc>) -> Result<Option<f64>, StateError> {
    let model = &plan.name;
    if plan.source.webhook.is_some() {
        store.inbox_init().await?;
        let c = store.inbox_counts(model).await?;
        return Ok(Some(c.oldest_pending.map_or(0.0, |t| minutes(now - t))));
    }
    if plan.direction() == Direction::Inbound {
        return Ok(store
            .watermark(model)
            .await?
            .and_then(|w| w.newest)
            .map(|n| minutes(now - n)));
    }
    Ok(store
        .last_completed(model)
        .await?
        .as_ref()
        .and_then(ended)
        .map(|t| minutes(now - t)))
}

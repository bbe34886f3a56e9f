//! The model table and the runs: when each model fires, one run per model at a time, at
//! most `max_concurrent_runs` at once, and what a finished run means for the next one.
//!
//! The table (behind one mutex, held only for short, non-async sections) has an entry per
//! loaded model: its plan, its next start ([`Fire`]), the run in progress if any, and its
//! consecutive failures. The scheduler loop starts the entries that are due; the HTTP API
//! starts one on demand. A run is a task that waits for a concurrency permit, runs the
//! engine (which takes the model's lock in the state store, so daemons sharing a store
//! never run a model twice at once) and plans the next start from the outcome.

use super::runner::Job;
use super::timing::{self, Fire, FireKind};
use super::Shared;
use crate::config::ProjectSpec;
use crate::engine::{self, Progress, RunOptions, RunReport, Status};
use crate::plan::SyncPlan;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The scheduler never sleeps longer than this, so a jump of the wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// How often a starting run's id is looked up (until the engine has recorded it).
const RUN_ID_POLL: Duration = Duration::from_millis(100);

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule(FireKind),
    /// `POST /api/models/{name}/runs`.
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule(k) => k.as_str(),
            Trigger::Api => "api",
        }
    }
}

/// A run of a model, from its request to its end.
#[derive(Debug, Clone)]
pub struct Running {
    pub trigger: Trigger,
    pub requested_at: DateTime<Utc>,
    /// When it got its concurrency permit (`None` while it waits for one).
    pub started_at: Option<DateTime<Utc>>,
    /// The id the state store gave it, once known.
    pub run_id: Option<i64>,
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<Progress>,
}

/// One loaded model.
#[derive(Debug)]
pub struct Entry {
    pub plan: Arc<SyncPlan>,
    /// The next start (`None` without a schedule, or while it runs).
    pub next: Option<Fire>,
    pub run: Option<Running>,
    /// Consecutive failed runs.
    pub failures: u32,
    /// Its file was deleted: it goes once its run ends.
    pub removed: bool,
    /// The last run this daemon made of it.
    pub last: Option<LastRun>,
}

/// How a run made by this daemon ended.
#[derive(Debug, Clone)]
pub struct LastRun {
    pub run_id: Option<i64>,
    pub status: Status,
    pub ended_at: DateTime<Utc>,
}

/// Every loaded model, and the project they belong to.
#[derive(Debug)]
pub struct Table {
    pub project: Arc<ProjectSpec>,
    pub models: BTreeMap<String, Entry>,
}

fn schedule_key(plan: &SyncPlan) -> Option<(String, &'static str)> {
    plan.schedule.as_ref().map(|s| (s.written.clone(), s.tz.name()))
}

fn u() -> f64 {
    rand::random::<f64>()
}

/// Takes a newly accepted set of models: new ones are scheduled (overdue ones run once,
/// soon), changed ones run their new plan from their next start (rescheduled if their
/// schedule changed), removed ones stop after any run in progress.
pub async fn apply(shared: &Arc<Shared>, project: Arc<ProjectSpec>, plans: Vec<Arc<SyncPlan>>) {
    let now = Utc::now();
    // When each model last started, for overdue detection.
    let last_started: HashMap<String, DateTime<Utc>> = match shared.store.get() {
        Some(store) => match store.last_runs().await {
            Ok(runs) => runs
                .into_iter()
                .filter_map(|r| {
                    let t = DateTime::parse_from_rfc3339(&r.started_at).ok()?;
                    Some((r.model, t.with_timezone(&Utc)))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(
                    event = "store_error",
                    error = %e,
                    "cannot read the last runs: models are scheduled from now"
                );
                HashMap::new()
            }
        },
        None => HashMap::new(),
    };
    let first = |plan: &SyncPlan| {
        plan.schedule
            .as_ref()
            .and_then(|s| timing::first_fire(s, last_started.get(&plan.name).copied(), now, u()))
    };
    let mut overdue = Vec::new();
    {
        let mut t = shared.table();
        t.project = project;
        let names: std::collections::BTreeSet<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        let gone: Vec<String> = t
            .models
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let running = t.models.get(&name).is_some_and(|e| e.run.is_some());
            if running {
                if let Some(e) = t.models.get_mut(&name) {
                    e.removed = true;
                    e.next = None;
                }
            } else {
                t.models.remove(&name);
            }
        }
        for plan in plans {
            match t.models.get_mut(&plan.name) {
                Some(e) => {
                    let rescheduled = e.removed || schedule_key(&e.plan) != schedule_key(&plan);
                    e.removed = false;
                    if rescheduled && e.run.is_none() {
                        e.next = first(&plan);
                        e.failures = 0;
                    }
                    e.plan = plan;
                }
                None => {
                    let next = first(&plan);
                    if next.is_some_and(|f| f.kind == FireKind::Overdue) {
                        overdue.push(plan.name.clone());
                    }
                    t.models.insert(
                        plan.name.clone(),
                        Entry {
                            plan,
                            next,
                            run: None,
                            failures: 0,
                            removed: false,
                            last: None,
                        },
                    );
                }
            }
        }
    }
    for name in overdue {
        tracing::info!(
            event = "overdue",
            model = %name,
            last_started_at = last_started.get(&name).map(|t| t.to_rfc3339()).as_deref(),
            "model overdue (a slot passed while no daemon ran it): it runs once now"
        );
    }
    shared.wake.notify_one();
}

/// Starts the models that are due, until shutdown.
pub async fn scheduler(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = Utc::now();
        let mut due = Vec::new();
        let mut earliest: Option<DateTime<Utc>> = None;
        {
            let mut t = shared.table();
            for (name, e) in t.models.iter_mut() {
                let Some(fire) = e.next else { continue };
                if e.run.is_some() || e.removed {
                    continue;
                }
                if fire.at <= now {
                    e.next = None;
                    e.run = Some(Running::new(Trigger::Schedule(fire.kind)));
                    due.push(name.clone());
                } else {
                    earliest = Some(earliest.map_or(fire.at, |x| x.min(fire.at)));
                }
            }
        }
        for name in due {
            spawn_run(&shared, &name);
        }
        let sleep = earliest
            .and_then(|t| (t - now).to_std().ok())
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = &mut notified => {}
            _ = stop.changed() => {}
        }
    }
}

impl Running {
    pub fn new(trigger: Trigger) -> Running {
        Running {
            trigger,
            requested_at: Utc::now(),
            started_at: None,
            run_id: None,
            stop: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(Progress::default()),
        }
    }
}

/// Starts the run of `name`, whose entry is already marked running.
pub fn spawn_run(shared: &Arc<Shared>, name: &str) {
    shared.active.send_modify(|n| *n += 1);
    let shared = shared.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        let _done = ActiveGuard(shared.clone());
        run_one(&shared, &name).await;
    });
}

/// Counts a run task down when it ends, however it ends.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Forgets a run that never started (shutdown while it waited).
fn unmark(shared: &Shared, name: &str) {
    let mut t = shared.table();
    let remove = match t.models.get_mut(name) {
        Some(e) => {
            e.run = None;
            e.removed
        }
        None => false,
    };
    if remove {
        t.models.remove(name);
    }
}

async fn run_one(shared: &Arc<Shared>, name: &str) {
    let mut stop = shared.stop.subscribe();
    let permit = tokio::select! {
        p = shared.permits.clone().acquire_owned() => p.ok(),
        _ = stop.wait_for(|s| *s) => None,
    };
    let Some(store) = shared.store.get().cloned() else {
        unmark(shared, name);
        return;
    };
    let (plan, project, running) = {
        let mut t = shared.table();
        let project = t.project.clone();
        let Some(e) = t.models.get_mut(name) else { return };
        let Some(r) = e.run.as_mut() else { return };
        // Shutting down, or its file was deleted while it waited: it does not start.
        if permit.is_none() || *stop.borrow() || e.removed {
            drop(t);
            unmark(shared, name);
            return;
        }
        r.started_at = Some(Utc::now());
        (e.plan.clone(), project, r.clone())
    };
    let opts = RunOptions {
        stop: Some(running.stop.clone()),
        ..RunOptions::default()
    };
    let (tx, done) = oneshot::channel();
    let job: Job = {
        let (dir, store, plan, progress) = (
            shared.dir.clone(),
            store.clone(),
            plan.clone(),
            running.progress.clone(),
        );
        Box::new(move || {
            Box::pin(async move {
                let report = engine::run(&dir, &project, &store, &plan, &opts, &progress).await;
                let _ = tx.send(report);
            })
        })
    };
    let lost = |why: &str| RunReport {
        model: name.to_string(),
        run_id: None,
        status: Status::Failed,
        counts: Default::default(),
        error: Some(why.to_string()),
        notes: Vec::new(),
        elapsed: Duration::ZERO,
        samples: Default::default(),
        timings: Vec::new(),
    };
    if !shared.runner.submit(job) {
        unmark(shared, name);
        return;
    }
    tokio::pin!(done);
    // The run's id becomes known when the engine records it with the lock.
    let me = crate::state::lock::me(0).id;
    let find_id = async {
        loop {
            tokio::time::sleep(RUN_ID_POLL).await;
            if let Ok(Some(h)) = store.lock_holder(name).await {
                if h.id == me && h.run_id > 0 {
                    return h.run_id;
                }
            }
        }
    };
    let mut announced = false;
    let outcome = tokio::select! {
        r = &mut done => r,
        id = find_id => {
            set_run_id(shared, name, id);
            started(name, &running, Some(id));
            announced = true;
            done.await
        }
    };
    let report = outcome.unwrap_or_else(|_| lost("the run ended abnormally (a bug in ebb): see the log above"));
    drop(permit);
    if !announced && report.run_id.is_some() {
        started(name, &running, report.run_id);
    }
    shared.metrics.record_run(&report);
    shared.alerts_wake.notify_one();
    let next = finish(shared, name, &report);
    finished(&report, running.trigger, next);
    shared.wake.notify_one();
}

fn set_run_id(shared: &Shared, name: &str, id: i64) {
    if let Some(r) = shared.table().models.get_mut(name).and_then(|e| e.run.as_mut()) {
        r.run_id = Some(id);
    }
}

/// Plans the next start after `report`; returns it.
fn finish(shared: &Shared, name: &str, report: &RunReport) -> Option<Fire> {
    let now = Utc::now();
    let stopping = *shared.stop.borrow();
    let mut t = shared.table();
    let e = t.models.get_mut(name)?;
    e.run = None;
    match report.status {
        Status::Failed if !stopping => e.failures += 1,
        Status::Busy => {}
        _ => e.failures = 0,
    }
    if report.status != Status::Busy {
        e.last = Some(LastRun {
            run_id: report.run_id,
            status: report.status,
            ended_at: now,
        });
    }
    if e.removed {
        t.models.remove(name);
        return None;
    }
    e.next = e
        .plan
        .schedule
        .as_ref()
        .and_then(|s| timing::after_run(s, now, e.failures, u()));
    e.next
}

/// Logs the start of a run once its id is known (for a quick run, when it ended; the
/// `started_at` field says when it began).
fn started(model: &str, running: &Running, run_id: Option<i64>) {
    tracing::info!(
        event = "run_started",
        model,
        run_id,
        trigger = running.trigger.as_str(),
        started_at = running
            .started_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .as_deref(),
        "run started"
    );
}

fn finished(r: &RunReport, trigger: Trigger, next: Option<Fire>) {
    let next_at = next.map(|f| f.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    if r.status == Status::Busy {
        // Another daemon sharing the store runs it: not news.
        tracing::debug!(
            event = "run_busy",
            model = %r.model,
            detail = r.error.as_deref(),
            next_run_at = next_at.as_deref(),
            "model busy: another process runs it; rescheduled"
        );
        return;
    }
    let c = r.counts;
    let notes = (!r.notes.is_empty()).then(|| r.notes.join("; "));
    let retry = next.and_then(|f| match f.kind {
        FireKind::Retry { attempt } => Some(attempt),
        _ => None,
    });
    // One event at the level the outcome deserves (`tracing` levels are constants).
    macro_rules! run_finished {
        ($level:ident) => {
            tracing::$level!(
                event = "run_finished",
                model = %r.model,
                run_id = r.run_id,
                status = r.status.as_str(),
                trigger = trigger.as_str(),
                elapsed_ms = r.elapsed.as_millis() as u64,
                read = c.read,
                added = c.added,
                changed = c.changed,
                removed = c.removed,
                unchanged = c.unchanged,
                invalid = c.invalid,
                sent = c.sent,
                confirmed = c.confirmed,
                rejected = c.rejected,
                api_calls = c.api_calls,
                error = r.error.as_deref(),
                notes = notes.as_deref(),
                next_run_at = next_at.as_deref(),
                retry,
                "run finished"
            )
        };
    }
    match r.status {
        Status::Succeeded | Status::DryRun => run_finished!(info),
        Status::Partial | Status::Aborted | Status::Busy => run_finished!(warn),
        Status::Failed => run_finished!(error),
    }
}

//! A run from start to end: its options, its live progress, its report, and [`run`], which
//! takes the model's lock, records the run, keeps the lock's heartbeat beside it and records
//! how it ended. [`Run`] holds one run's state, and [`Run::execute`] calls the stages in
//! order: snapshot ([`super::snapshot`]), diff ([`super::diff`]), guard ([`super::guard`]),
//! delivery ([`super::deliver`]), the table kept for next time.
//!
//! What each stage does is in its own module; this one only sequences them and turns their
//! outcome into a [`Status`].

use super::diff::DiffState;
use super::error::RunError;
use super::spill::SpillWriter;
use super::table::SnapTable;
use super::writer::{writer_loop, Ctx, WriteRequest};
use crate::config::project::ProjectSpec;
use crate::plan::SyncPlan;
use crate::state::{lock, LockOutcome, RunCounts, StateStore};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Read and diff, send and commit nothing.
    pub dry_run: bool,
    /// Send every row, whatever the snapshot says (inbound: read every record, whatever the watermark).
    pub full_resync: bool,
    /// Run even if the guard refuses; in `insert` mode, re-send rows of an interrupted
    /// batch (a duplicate may result).
    pub force: bool,
    /// Set to stop the run early (a daemon shutting down): no new batches are started,
    /// those in flight finish and are committed, and the run ends `failed` ("stopped").
    pub stop: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    pub(super) fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// Live counters, for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub read: AtomicU64,
    pub to_send: AtomicU64,
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub rejected: AtomicU64,
    /// `true` once the model is read and delivery has started.
    pub delivering: AtomicBool,
    /// The run's id once it is recorded (0 before).
    pub run_id: std::sync::atomic::AtomicI64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    /// Completed, but some rows were rejected by the destination or invalid.
    Partial,
    Failed,
    /// Refused by the guard before anything was sent.
    Aborted,
    /// Not started: another process is running the model.
    Busy,
    /// `--dry-run`: nothing sent, nothing recorded.
    DryRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
            Status::Busy => "busy",
            Status::DryRun => "dry-run",
        }
    }

    /// The process exit code (docs/delivery.md §2).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Succeeded | Status::DryRun => 0,
            Status::Partial => 3,
            Status::Failed | Status::Aborted | Status::Busy => 1,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub model: String,
    /// `None` when the run was not recorded (busy, dry run).
    pub run_id: Option<i64>,
    pub status: Status,
    pub counts: RunCounts,
    pub error: Option<String>,
    /// Things worth saying that are not errors (a destination change, a lock taken over).
    pub notes: Vec<String>,
    pub elapsed: Duration,
    /// `--dry-run`: up to five payloads (or keys) per kind of change.
    pub samples: BTreeMap<&'static str, Vec<String>>,
    /// How long each phase took: `load_snapshot`, `read_and_diff`, `find_removed`, `deliver`,
    /// `save_table`; and `state_commits`, the time spent committing, within the others.
    pub timings: Vec<(&'static str, Duration)>,
}

impl RunReport {
    fn new(model: &str) -> RunReport {
        RunReport {
            model: model.to_string(),
            run_id: None,
            status: Status::Failed,
            counts: RunCounts::default(),
            error: None,
            notes: Vec::new(),
            elapsed: Duration::ZERO,
            samples: BTreeMap::new(),
            timings: Vec::new(),
        }
    }
}

/// The identity of a model's destination: a snapshot is only valid for the destination it
/// was confirmed by.
pub fn destination_identity(plan: &SyncPlan) -> String {
    let d = &plan.destination;
    format!(
        "{}:{}:{}:{}",
        d.kind,
        d.connection,
        d.object.as_deref().or(d.table.as_deref()).unwrap_or(""),
        d.key_field
    )
}

/// Runs `plan` once, in a `run` span carrying `model` and (once the run is recorded)
/// `run_id`, so that everything logged on its way says which run it belongs to.
/// The future is `Send`, so a daemon can spawn it on a multi-threaded runtime.
pub async fn run(
    project_dir: &Path,
    project: &ProjectSpec,
    store: &StateStore,
    plan: &SyncPlan,
    opts: &RunOptions,
    progress: &Progress,
) -> RunReport {
    use tracing::Instrument;
    // At error level, so that its fields reach every event that is enabled, whatever the filter.
    let span = tracing::error_span!("run", model = %plan.name, run_id = tracing::field::Empty);
    run_in_span(project_dir, project, store, plan, opts, progress)
        .instrument(span)
        .await
}

async fn run_in_span(
    project_dir: &Path,
    project: &ProjectSpec,
    store: &StateStore,
    plan: &SyncPlan,
    opts: &RunOptions,
    progress: &Progress,
) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport::new(&plan.name);
    // A key that does not parse: nothing is kept in clear that should have been sealed.
    if let Err(e) = crate::crypt::Keys::global() {
        report.error = Some(e.to_string());
        return report;
    }
    if opts.dry_run {
        let mut run = Run::new(
            RunConfig {
                project_dir,
                project,
                store,
                plan,
                opts,
                progress,
                run_id: 0,
            },
            None,
        );
        match run.execute().await {
            Ok(()) => report.status = Status::DryRun,
            Err(e) => report.error = Some(e.to_string()),
        }
        report.counts = run.counts;
        report.samples = run.samples;
        report.timings = run.timings;
        report.notes = run.notes;
        report.elapsed = started.elapsed();
        return report;
    }
    // The lock first: a busy model records no run.
    let mut me = lock::me(0);
    match store.lock(&plan.name, &me, lock::LEASE).await {
        Ok(LockOutcome::Acquired { took_over }) => {
            if let Some(h) = took_over {
                report.notes.push(format!(
                    "took over the lock of run {} (pid {} on {}, {})",
                    h.run_id,
                    h.pid,
                    h.host,
                    if crate::state::holder_is_dead_here(&h) {
                        "no longer running"
                    } else {
                        "its lease ran out"
                    }
                ));
            }
        }
        Ok(LockOutcome::Held(h)) => {
            report.status = Status::Busy;
            report.error = Some(format!(
                "model `{}` is being run by pid {} on {} (run {}, since {}); one run per model at a time",
                plan.name, h.pid, h.host, h.run_id, h.acquired_at
            ));
            report.elapsed = started.elapsed();
            return report;
        }
        Err(e) => {
            report.error = Some(e.to_string());
            report.elapsed = started.elapsed();
            return report;
        }
    }
    let run_id = match store.start_run(&plan.name).await {
        Ok(id) => id,
        Err(e) => {
            let _ = store.unlock(&plan.name, &me).await;
            report.error = Some(e.to_string());
            report.elapsed = started.elapsed();
            return report;
        }
    };
    report.run_id = Some(run_id);
    tracing::Span::current().record("run_id", run_id);
    progress.run_id.store(run_id, Ordering::SeqCst);
    me.run_id = run_id;
    // Record the run id with the lock (same holder: re-entrant).
    let _ = store.lock(&plan.name, &me, lock::LEASE).await;

    let lost = AtomicBool::new(false);
    let (wtx, wrx) = mpsc::channel::<WriteRequest>(256);
    let mut run = Run::new(
        RunConfig {
            project_dir,
            project,
            store,
            plan,
            opts,
            progress,
            run_id,
        },
        Some(wtx),
    );
    run.lost = Some(&lost);
    let token = run.token;
    let outcome = {
        let body = async {
            let r = run.execute().await;
            run.ctx.writer = None; // ends the writer loop
            r
        };
        let heartbeat = async {
            loop {
                tokio::time::sleep(lock::HEARTBEAT).await;
                match store.heartbeat(&plan.name, &me).await {
                    Ok(true) => {}
                    Ok(false) => lost.store(true, Ordering::SeqCst),
                    Err(_) => {} // the next beat may get through; the lease is 3 beats
                }
            }
        };
        let writer = writer_loop(store, &plan.name, wrx, token);
        tokio::select! {
            (r, (busy, _transactions)) = async { tokio::join!(body, writer) } => {
                // Not a phase: the time the state store spent committing, within the others.
                run.timings.push(("state_commits", busy));
                r
            }
            () = heartbeat => unreachable!("the heartbeat never ends"),
        }
    };
    let (status, error) = match outcome {
        Ok(()) if run.aborted.is_some() => (Status::Aborted, run.aborted.as_ref().map(RunError::to_string)),
        Ok(()) if run.failure.is_some() => (Status::Failed, run.failure.as_ref().map(RunError::to_string)),
        Ok(()) if run.counts.rejected > 0 || run.counts.invalid > 0 => (
            Status::Partial,
            Some(format!(
                "{} rejected by the destination, {} invalid: see `ebb errors {}`",
                plural(run.counts.rejected, "row"),
                plural(run.counts.invalid, "row"),
                plan.name
            )),
        ),
        Ok(()) => (Status::Succeeded, None),
        Err(e) => (Status::Failed, Some(e.to_string())),
    };
    if let Err(e) = store
        .finish_run(run_id, status.as_str(), run.counts, error.as_deref())
        .await
    {
        run.notes.push(format!("could not record the end of the run: {e}"));
    }
    let _ = store.unlock(&plan.name, &me).await;
    report.status = status;
    report.error = error;
    report.counts = run.counts;
    report.timings = std::mem::take(&mut run.timings);
    report.notes.append(&mut run.notes);
    report.elapsed = started.elapsed();
    report
}

/// A model's health from its last run's status: `running`, `never run`, `healthy`,
/// `degraded` (rows rejected or invalid), `interrupted` (the process died mid-run) or
/// `failing`. `ebb status` and the daemon's API say the same.
pub fn health(last_status: Option<&str>, running: bool) -> &'static str {
    if running {
        return "running";
    }
    match last_status {
        None => "never run",
        Some("succeeded") => "healthy",
        Some("partial") => "degraded",
        Some("running") => "interrupted",
        Some(_) => "failing",
    }
}

pub fn plural(n: i64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// What a run is given: the same from its start to its end.
pub(super) struct RunConfig<'a> {
    pub(super) project_dir: &'a Path,
    pub(super) project: &'a ProjectSpec,
    pub(super) store: &'a StateStore,
    pub(super) plan: &'a SyncPlan,
    pub(super) opts: &'a RunOptions,
    pub(super) progress: &'a Progress,
    /// 0 in a dry run, which records nothing.
    pub(super) run_id: i64,
}

/// One run's state, as the stages go: what it was given ([`RunConfig`]), its way to the
/// state writer, what it counts and says, what the diff found for delivery
/// ([`DiffState`]), and how it ended.
pub(super) struct Run<'a> {
    pub(super) cfg: RunConfig<'a>,
    pub(super) ctx: Ctx,
    /// Set when another process took the run lock over (the heartbeat found it lost).
    pub(super) lost: Option<&'a AtomicBool>,
    pub(super) counts: RunCounts,
    pub(super) notes: Vec<String>,
    pub(super) samples: BTreeMap<&'static str, Vec<String>>,
    /// Set when delivery failed: the run ends `failed`.
    pub(super) failure: Option<RunError>,
    /// The batch whose failure `failure` is, when it is a batch's: of several batches that
    /// fail, the run reports the first one's (answers settle in no fixed order).
    pub(super) failure_batch: Option<i64>,
    /// Set when the guard refused the run.
    pub(super) aborted: Option<RunError>,
    pub(super) diff: DiffState,
    /// How long each phase took.
    pub(super) timings: Vec<(&'static str, Duration)>,
    /// The snapshot token this run's snapshot changes carry ([`crate::state::StateWrite::SnapshotToken`]).
    pub(super) token: u64,
    /// The snapshot's token when it was loaded, and whether it came from the table file.
    pub(super) loaded: (Option<u64>, bool),
    /// What the conflict checks found (models with `conflicts`).
    pub(super) conflicts: super::conflict::ConflictCounts,
}

impl<'a> Run<'a> {
    fn new(cfg: RunConfig<'a>, writer: Option<mpsc::Sender<WriteRequest>>) -> Run<'a> {
        Run {
            cfg,
            ctx: Ctx { writer },
            lost: None,
            counts: RunCounts::default(),
            notes: Vec::new(),
            samples: BTreeMap::new(),
            failure: None,
            failure_batch: None,
            aborted: None,
            diff: DiffState::default(),
            timings: Vec::new(),
            token: rand::random::<u64>() | 1,
            loaded: (None, false),
            conflicts: Default::default(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.cfg.plan.name
    }

    async fn execute(&mut self) -> Result<(), RunError> {
        let plan = self.cfg.plan;
        if plan.source.kind == crate::config::ConnectionType::Webhook {
            return self.execute_webhook().await;
        }
        if plan.direction() == crate::plan::Direction::Inbound {
            return self.execute_inbound().await;
        }
        let name = plan.name.clone();
        // A snapshot belongs to one destination; keys an earlier run left in flight are
        // sent again.
        let fresh = self.check_destination().await?;
        if !fresh {
            self.load_inflight().await?;
        }
        if !self.diff.forced.is_empty() {
            self.notes.push(format!(
                "{} from an interrupted run: their state at the destination is unknown, so they are sent again",
                plural(self.diff.forced.len() as i64, "row")
            ));
        }

        let phase = Instant::now();
        let mut table = if fresh {
            SnapTable::with_rows(0)
        } else {
            self.load_snapshot().await?
        };
        self.timings.push(("load_snapshot", phase.elapsed()));
        let phase = Instant::now();

        // Read, map, hash, diff; spill what is to be sent.
        let mut spill = SpillWriter::create(&name)
            .await
            .map_err(RunError::spill("create a spill file"))?;
        self.read_model(&mut table, &mut spill).await?;
        self.timings.push(("read_and_diff", phase.elapsed()));
        let phase = Instant::now();
        self.removed(&table, &mut spill, fresh).await?;
        self.timings.push(("find_removed", phase.elapsed()));
        self.record_errors().await?;

        // The guard, before anything is sent.
        if let Some(why) = self.guard(&table) {
            if self.cfg.opts.force {
                self.notes
                    .push(format!("the guard would refuse this run ({why}); --force sends anyway"));
            } else if self.cfg.opts.dry_run {
                self.notes
                    .push(format!("a real run would be refused by the guard: {why}"));
            } else {
                self.aborted = Some(RunError::Refused { model: name, why });
                return Ok(());
            }
        }
        if self.cfg.opts.dry_run {
            return Ok(());
        }

        let reader = spill
            .finish()
            .await
            .map_err(RunError::spill("read back the spill file"))?;
        self.cfg.progress.delivering.store(true, Ordering::Relaxed);
        let phase = Instant::now();
        self.deliver(reader, &mut table).await?;
        self.timings.push(("deliver", phase.elapsed()));

        self.settle_forced().await?;
        let phase = Instant::now();
        self.save_table(table).await?;
        self.timings.push(("save_table", phase.elapsed()));
        Ok(())
    }
}

#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: T) {}

    #[allow(dead_code)]
    fn run_is_send(
        dir: &std::path::Path,
        project: &crate::config::project::ProjectSpec,
        store: &crate::state::StateStore,
        plan: &crate::plan::SyncPlan,
        opts: &super::RunOptions,
        progress: &super::Progress,
    ) {
        assert_send(super::run(dir, project, store, plan, opts, progress));
    }
}

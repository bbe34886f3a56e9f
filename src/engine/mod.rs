//! The sync engine: one run of one model.
//!
//! A run (DESIGN §4):
//! 1. takes the model's run lock (one run per model across processes sharing the store);
//! 2. loads the snapshot as a compact table (key hash → payload hash, [`table`]) and the
//!    batches an earlier run left in flight, whose keys are re-sent whatever their hash;
//! 3. reads the model, maps each row and hashes the payload the destination would receive,
//!    classifies it (added, changed, unchanged, invalid, duplicate) and writes what is to be
//!    sent to a spill file ([`spill`]); rows of the snapshot not seen are removed;
//! 4. applies the guard (before anything is sent);
//! 5. delivers the spill in batches: each batch is durably recorded in flight before it is
//!    sent, and its answer is committed in one transaction: confirmed rows advance the
//!    snapshot, rejected rows keep their old entry and get their error, the in-flight record
//!    goes. Commits from concurrent batches are grouped into one transaction.
//!
//! Nothing is marked synced that the destination did not confirm; a crash at any point
//! leaves either a snapshot entry for a confirmed payload or an in-flight record that makes
//! the next run send the row again.

pub mod pool;
pub mod spill;
pub mod table;
#[doc(hidden)]
pub mod testing;

use crate::config::project::ProjectSpec;
use crate::config::{Mode, OnRemoved};
use crate::destination::retry::{self, RetryPolicy};
use crate::destination::{Batch, Destination, Op, Outcome, Record};
use crate::map::encode::{Encoded, Row as EncodedRow};
use crate::map::value::Val;
use crate::map::{RowError, RowMapper};
use crate::plan::SyncPlan;
use crate::source::Source;
use crate::state::{lock, InflightBatch, LockOutcome, RowErrorEntry, RunCounts, StateStore, StateWrite};
use pool::EncodePool;
use spill::{SpillReader, SpillWriter, Spilled};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{key_hash, payload_hash, KeySet, SnapTable};
use tokio::sync::{mpsc, oneshot};

/// Rows per source batch.
const READ_BATCH: usize = 8192;
/// Threads encoding source batches (mapping, JSON, hashing) while the run classifies.
const ENCODE_THREADS: usize = 2;
/// Source batches handed to the encoding threads ahead of the one being classified.
const ENCODE_AHEAD: u64 = 8;
/// Errors written per transaction while reading.
const ERROR_CHUNK: usize = 5000;
/// Sample payloads kept per kind of change by `--dry-run`.
const SAMPLES: usize = 5;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Read and diff, send and commit nothing.
    pub dry_run: bool,
    /// Send every row, whatever the snapshot says.
    pub full_resync: bool,
    /// Run even if the guard refuses; in `insert` mode, re-send rows of an interrupted
    /// batch (a duplicate may result).
    pub force: bool,
    /// Set to stop the run early (a daemon shutting down): no new batches are started,
    /// those in flight finish and are committed, and the run ends `failed` ("stopped").
    pub stop: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    fn stopping(&self) -> bool {
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

    /// The process exit code (DESIGN §5).
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

/// Runs `plan` once.
/// The future is `Send`, so a daemon can spawn it on a multi-threaded runtime.
pub async fn run(
    project_dir: &Path,
    project: &ProjectSpec,
    store: &StateStore,
    plan: &SyncPlan,
    opts: &RunOptions,
    progress: &Progress,
) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport::new(&plan.name);
    if opts.dry_run {
        let mut run = Run::new(project_dir, project, store, plan, opts, progress, 0, None);
        match run.execute().await {
            Ok(()) => report.status = Status::DryRun,
            Err(e) => report.error = Some(e),
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
    progress.run_id.store(run_id, Ordering::SeqCst);
    me.run_id = run_id;
    // Record the run id with the lock (same holder: re-entrant).
    let _ = store.lock(&plan.name, &me, lock::LEASE).await;

    let lost = AtomicBool::new(false);
    let (wtx, wrx) = mpsc::channel::<WriteRequest>(256);
    let mut run = Run::new(project_dir, project, store, plan, opts, progress, run_id, Some(wtx));
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
        Ok(()) if run.aborted.is_some() => (Status::Aborted, run.aborted.clone()),
        Ok(()) if run.failure.is_some() => (Status::Failed, run.failure.clone()),
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
        Err(e) => (Status::Failed, Some(e)),
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

/// A batch of state writes and who waits for their commit.
type WriteRequest = (Vec<StateWrite>, oneshot::Sender<Result<(), String>>);

/// Commits the run's writes as they come, grouping whatever is queued into one transaction.
/// Batches about to be sent wait for their in-flight record, so when the queue holds some,
/// they are committed first in a transaction of their own and the answers after. A
/// transaction that changes the snapshot also stamps it with the run's `token`. Ends when
/// every sender is gone; returns how long its transactions took, and how many there were.
async fn writer_loop(
    store: &StateStore,
    model: &str,
    mut rx: mpsc::Receiver<WriteRequest>,
    token: u64,
) -> (Duration, u64) {
    let (mut busy, mut transactions) = (Duration::ZERO, 0);
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }
        let before_sending = |(w, _): &WriteRequest| w.iter().all(|w| matches!(w, StateWrite::Inflight(_)));
        let (first, rest): (Vec<WriteRequest>, Vec<WriteRequest>) = group.into_iter().partition(before_sending);
        for mut group in [first, rest] {
            if group.is_empty() {
                continue;
            }
            let mut writes: Vec<StateWrite> = group.iter_mut().flat_map(|(w, _)| std::mem::take(w)).collect();
            let changes_snapshot = |w: &StateWrite| match w {
                StateWrite::Confirm { rows, .. } => !rows.is_empty(),
                StateWrite::Remove { keys } => !keys.is_empty(),
                _ => false,
            };
            if writes.iter().any(changes_snapshot) {
                writes.push(StateWrite::SnapshotToken(token));
            }
            let started = Instant::now();
            let result = store.apply(model, writes).await.map_err(|e| e.to_string());
            busy += started.elapsed();
            transactions += 1;
            for (_, ack) in group {
                let _ = ack.send(result.clone());
            }
        }
    }
    (busy, transactions)
}

/// A key an earlier run left in flight.
struct Forced {
    key: String,
    /// Read from the model in this run.
    seen: bool,
    /// Sent (or forgotten) by this run, so the earlier in-flight record can go.
    resolved: bool,
}

/// Where a row came out of the diff, for the counts (and for undoing them when the key
/// turns out duplicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Added,
    Changed,
    Unchanged,
    Invalid,
}

/// What classifying keeps from one batch to the next.
#[derive(Default)]
struct Classify {
    row_no: i64,
    /// Keys of rows not in the snapshot, to find duplicates among them.
    new_keys: KeySet,
    /// Scratch: each row's slot in the snapshot table.
    slots: Vec<Option<usize>>,
}

struct Duplicate {
    key: String,
    count: i64,
}

struct Run<'a> {
    project_dir: &'a Path,
    project: &'a ProjectSpec,
    store: &'a StateStore,
    plan: &'a SyncPlan,
    opts: &'a RunOptions,
    progress: &'a Progress,
    run_id: i64,
    ctx: Ctx,
    lost: Option<&'a AtomicBool>,
    counts: RunCounts,
    notes: Vec<String>,
    samples: BTreeMap<&'static str, Vec<String>>,
    /// Set when delivery failed: the run ends `failed`.
    failure: Option<String>,
    /// The batch whose failure `failure` is, when it is a batch's: of several batches that
    /// fail, the run reports the first one's (answers settle in no fixed order).
    failure_batch: Option<i64>,
    /// Set when the guard refused the run.
    aborted: Option<String>,
    forced: HashMap<u128, Forced>,
    dups: HashMap<u128, Duplicate>,
    /// Keys of rows not in the snapshot whose payload was invalid (to undo their count if
    /// the key turns out duplicated).
    new_invalid: KeySet,
    pending_errors: Vec<RowErrorEntry>,
    /// Delete and clear operations planned (for `max_deletes` and `max_delete_ratio`).
    deletes: i64,
    /// Records to send, by operation (a destination may batch large sets differently).
    per_op: HashMap<Op, u64>,
    /// How long each phase took.
    timings: Vec<(&'static str, Duration)>,
    /// The snapshot token this run's snapshot changes carry ([`StateWrite::SnapshotToken`]).
    token: u64,
    /// The snapshot's token when it was loaded, and whether it came from the table file.
    loaded: (Option<u64>, bool),
}

/// The flags kept in a snapshot slot for this run.
const CHANGED: u8 = 1;
const INVALID: u8 = 2;

impl<'a> Run<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        project_dir: &'a Path,
        project: &'a ProjectSpec,
        store: &'a StateStore,
        plan: &'a SyncPlan,
        opts: &'a RunOptions,
        progress: &'a Progress,
        run_id: i64,
        writer: Option<mpsc::Sender<WriteRequest>>,
    ) -> Run<'a> {
        Run {
            project_dir,
            project,
            store,
            plan,
            opts,
            progress,
            run_id,
            ctx: Ctx { writer },
            lost: None,
            counts: RunCounts::default(),
            notes: Vec::new(),
            samples: BTreeMap::new(),
            failure: None,
            failure_batch: None,
            aborted: None,
            forced: HashMap::new(),
            dups: HashMap::new(),
            new_invalid: KeySet::default(),
            pending_errors: Vec::new(),
            deletes: 0,
            per_op: HashMap::new(),
            timings: Vec::new(),
            token: rand::random::<u64>() | 1,
            loaded: (None, false),
        }
    }

    /// Where the model's diff table is kept between runs ([`SnapTable::save`]).
    fn table_path(&self) -> std::path::PathBuf {
        let safe: String = self
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.project_dir.join(".ebb/tables").join(format!(
            "{safe}-{:016x}.table",
            xxhash_rust::xxh3::xxh3_64(self.name().as_bytes())
        ))
    }

    /// Keeps the diff table for the next run, stamped with the snapshot's token, when it
    /// holds exactly what the state store holds; otherwise removes a stale copy.
    async fn save_table(&mut self, table: SnapTable) -> Result<(), String> {
        let path = self.table_path();
        let now = self
            .store
            .snapshot_token(self.name())
            .await
            .map_err(|e| e.to_string())?;
        let (loaded, from_file) = self.loaded;
        let token = if self.failure.is_some() {
            None // an answer may be committed that the table lacks
        } else if now == Some(self.token) {
            Some(self.token) // this run changed the snapshot, and the table with it
        } else if now != loaded {
            None // changed by someone else
        } else if from_file {
            return Ok(()); // unchanged, and saved already
        } else if let Some(t) = now {
            Some(t)
        } else {
            // A snapshot from before tokens: stamp it.
            self.ctx.write(vec![StateWrite::SnapshotToken(self.token)]).await?;
            Some(self.token)
        };
        // The file is written off the async runtime: a slow disk must not stall the tasks
        // beside the run (the lock's heartbeat).
        let name = self.plan.name.clone();
        let at = path.clone();
        let saved = tokio::task::spawn_blocking(move || {
            testing::io_point(&name, "save_table");
            let Some(token) = token else {
                let _ = std::fs::remove_file(&at);
                return Ok(());
            };
            let saved = std::fs::create_dir_all(at.parent().unwrap_or(Path::new(".")))
                .and_then(|()| table.save(&at, &name, token));
            if saved.is_err() {
                let _ = std::fs::remove_file(&at);
            }
            saved
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = saved {
            // Only speed is lost: the next run reads the snapshot from the state store.
            self.notes
                .push(format!("cannot keep the diff table in {}: {e}", path.display()));
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.plan.name
    }

    fn sample(&mut self, kind: &'static str, text: impl FnOnce() -> String) {
        if !self.opts.dry_run {
            return;
        }
        let list = self.samples.entry(kind).or_default();
        if list.len() < SAMPLES {
            list.push(text());
        }
    }

    async fn invalid(&mut self, key: String, e: RowError) -> Result<(), String> {
        self.counts.invalid += 1;
        self.sample("invalid", || format!("{key}: {} ({})", e.message, e.code));
        self.pending_errors.push(RowErrorEntry {
            key,
            run_id: self.run_id,
            kind: "invalid".into(),
            code: e.code.to_string(),
            message: e.message,
        });
        if self.pending_errors.len() >= ERROR_CHUNK {
            let errors = std::mem::take(&mut self.pending_errors);
            self.ctx.write(vec![StateWrite::Errors(errors)]).await?;
        }
        Ok(())
    }

    async fn execute(&mut self) -> Result<(), String> {
        let plan = self.plan;
        let name = plan.name.clone();
        // A snapshot belongs to one destination.
        let identity = destination_identity(plan);
        let known = self.store.model_destination(&name).await.map_err(|e| e.to_string())?;
        let mut fresh = false;
        if let Some(old) = known.as_deref().filter(|old| *old != identity) {
            fresh = true;
            self.notes.push(format!(
                "the destination changed (was {old}, now {identity}): what the old one confirmed does not \
                 count, so this run is a full sync{}",
                if self.opts.dry_run {
                    ""
                } else {
                    " (the old snapshot is forgotten)"
                }
            ));
            if !self.opts.dry_run {
                self.store.forget(&name).await.map_err(|e| e.to_string())?;
            }
        }
        if !self.opts.dry_run && known.as_deref() != Some(identity.as_str()) {
            self.store
                .set_model_destination(&name, &identity)
                .await
                .map_err(|e| e.to_string())?;
        }

        // Keys of batches an earlier run sent without an answer.
        if !fresh {
            for b in self.store.inflight(&name).await.map_err(|e| e.to_string())? {
                for key in b.keys {
                    self.forced.insert(
                        key_hash(&key),
                        Forced {
                            key,
                            seen: false,
                            resolved: false,
                        },
                    );
                }
            }
        }
        if !self.forced.is_empty() {
            self.notes.push(format!(
                "{} from an interrupted run: their state at the destination is unknown, so they are sent again",
                plural(self.forced.len() as i64, "row")
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
            .map_err(|e| format!("cannot create a spill file: {e}"))?;
        self.read_model(&mut table, &mut spill).await?;
        self.timings.push(("read_and_diff", phase.elapsed()));
        let phase = Instant::now();
        self.removed(&table, &mut spill, fresh).await?;
        self.timings.push(("find_removed", phase.elapsed()));
        for (_, d) in std::mem::take(&mut self.dups) {
            self.pending_errors.push(RowErrorEntry {
                key: d.key.clone(),
                run_id: self.run_id,
                kind: "invalid".into(),
                code: "duplicate_key".into(),
                message: format!(
                    "the key `{}` is on {} rows of the model; none of them is sent",
                    d.key, d.count
                ),
            });
            self.dups.insert(key_hash(&d.key), d);
        }
        let errors = std::mem::take(&mut self.pending_errors);
        self.ctx
            .write(vec![
                StateWrite::Errors(errors),
                StateWrite::ClearInvalidBefore { run_id: self.run_id },
            ])
            .await?;

        // The guard, before anything is sent.
        if let Some(why) = self.guard(&table) {
            if self.opts.force {
                self.notes
                    .push(format!("the guard would refuse this run ({why}); --force sends anyway"));
            } else if self.opts.dry_run {
                self.notes
                    .push(format!("a real run would be refused by the guard: {why}"));
            } else {
                self.aborted = Some(format!(
                    "refused by the guard: {why}; nothing was sent (`ebb run {name} --force` sends anyway)"
                ));
                return Ok(());
            }
        }
        if self.opts.dry_run {
            return Ok(());
        }

        let reader = spill
            .finish()
            .await
            .map_err(|e| format!("cannot read back the spill file: {e}"))?;
        self.progress.delivering.store(true, Ordering::Relaxed);
        let phase = Instant::now();
        self.deliver(reader, &mut table).await?;
        self.timings.push(("deliver", phase.elapsed()));

        // In-flight records of earlier runs: keep the keys this run did not settle.
        if self.forced.values().any(|f| f.resolved) {
            let keep: Vec<String> = self
                .forced
                .values()
                .filter(|f| !f.resolved)
                .map(|f| f.key.clone())
                .collect();
            self.ctx
                .write(vec![StateWrite::ReplaceInflight {
                    run_id: self.run_id,
                    keep: (!keep.is_empty()).then(|| InflightBatch {
                        run_id: self.run_id,
                        batch: 0,
                        op: "unknown".into(),
                        keys: keep,
                    }),
                }])
                .await?;
        }
        let phase = Instant::now();
        self.save_table(table).await?;
        self.timings.push(("save_table", phase.elapsed()));
        Ok(())
    }

    async fn load_snapshot(&mut self) -> Result<SnapTable, String> {
        let token = self
            .store
            .snapshot_token(self.name())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(t) = token {
            let (path, name) = (self.table_path(), self.plan.name.clone());
            let cached = tokio::task::spawn_blocking(move || SnapTable::load(&path, &name, t))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(table) = cached {
                self.loaded = (token, true);
                return Ok(table);
            }
        }
        self.loaded = (token, false);
        let rows = self.store.snapshot_len(self.name()).await.map_err(|e| e.to_string())?;
        let mut table = SnapTable::with_rows(rows as usize);
        let (tx, mut rx) = mpsc::channel(4);
        let scan = self.store.scan_snapshot_keyed(self.name(), key_hash, tx);
        let fill = async {
            while let Some(chunk) = rx.recv().await {
                for (kh, hash) in chunk {
                    if table.is_full() {
                        table.grow();
                    }
                    table.insert(kh, hash);
                }
            }
        };
        let (scanned, ()) = tokio::join!(scan, fill);
        scanned.map_err(|e| e.to_string())?;
        Ok(table)
    }

    /// `{key_field: key}` (a delete), or with every mapped field null (a clear).
    fn key_payload(&self, key: &str, clear: bool) -> String {
        key_payload(self.plan, key, clear)
    }

    async fn read_model(&mut self, table: &mut SnapTable, spill: &mut SpillWriter) -> Result<(), String> {
        let plan = self.plan;
        let Some(query) = &plan.source.query else {
            return Err(format!(
                "reading {} `{}` comes with the {} connector",
                plan.source.kind,
                plan.source.object.as_deref().unwrap_or("?"),
                plan.source.kind
            ));
        };
        let spec = self
            .project
            .connections
            .get(&plan.source.connection)
            .ok_or_else(|| format!("connection `{}` is not defined", plan.source.connection))?;
        let context = |e: &dyn std::fmt::Display| {
            format!(
                "reading the model from `{}` ({}): {e}",
                plan.source.connection, plan.source.kind
            )
        };
        let source = Source::open(spec, self.project_dir).map_err(|e| context(&e))?;
        let mut stream = source.query(query, READ_BATCH).await.map_err(|e| context(&e))?;
        let mapper = RowMapper::new(plan, stream.schema()).map_err(|missing| {
            let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
            context(&format!("the query returns no column {}", names.join(", ")))
        })?;
        // Batches are encoded on worker threads and classified here, in order.
        let mut pool = EncodePool::start(Arc::new(mapper), ENCODE_THREADS);
        let mut cx = Classify::default();
        let (mut submitted, mut next, mut eof) = (0u64, 0u64, false);
        let mut ready: BTreeMap<u64, Encoded> = BTreeMap::new();
        loop {
            if self.opts.stopping() {
                return Err("stopped while reading the model (shutdown); nothing was sent".into());
            }
            if !eof && submitted - next < ENCODE_AHEAD {
                match stream.next().await {
                    Some(batch) => {
                        pool.submit(submitted, batch.map_err(|e| context(&e))?).await?;
                        submitted += 1;
                        continue;
                    }
                    None => eof = true,
                }
            }
            if next == submitted {
                break;
            }
            let (seq, encoded) = pool.recv().await?;
            ready.insert(seq, encoded);
            while let Some(encoded) = ready.remove(&next) {
                next += 1;
                self.classify(&encoded, table, &mut cx, spill).await?;
                pool.recycle(encoded);
            }
            self.progress.read.store(self.counts.read as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Classifies the rows of one encoded batch against the snapshot; what is to be sent
    /// goes to the spill.
    async fn classify(
        &mut self,
        enc: &Encoded,
        table: &mut SnapTable,
        cx: &mut Classify,
        spill: &mut SpillWriter,
    ) -> Result<(), String> {
        let mode = self.plan.destination.mode;
        let op = match mode {
            Mode::Upsert | Mode::Mirror => Op::Upsert,
            Mode::Update => Op::Update,
            Mode::Insert => Op::Insert,
            Mode::Delete => Op::Delete,
        };
        // Look every key up first: the lookups are independent, so their cache misses overlap.
        cx.slots.clear();
        cx.slots.extend(enc.rows.iter().map(|r| match r {
            EncodedRow::Row { kh, .. } => table.find(*kh),
            EncodedRow::NoKey(_) => None,
        }));
        let any_forced = !self.forced.is_empty();
        for (r, &slot) in enc.rows.iter().zip(&cx.slots) {
            cx.row_no += 1;
            self.counts.read += 1;
            let (key, kh, payload) = match r {
                EncodedRow::NoKey(e) => {
                    let row = format!("(row {})", cx.row_no);
                    self.invalid(row, e.clone()).await?;
                    continue;
                }
                EncodedRow::Row { key, kh, payload } => (enc.key(key), *kh, payload),
            };
            let forced = any_forced
                && match self.forced.get_mut(&kh) {
                    Some(f) => {
                        f.seen = true;
                        true
                    }
                    None => false,
                };
            // Where the key stands: in the snapshot, new, or seen already.
            let first_time = match slot {
                Some(i) => table.visit_at(i),
                None => cx.new_keys.insert(kh),
            };
            if !first_time {
                self.duplicate(kh, key.to_string(), slot.map(|i| table.flags_at(i)));
                continue;
            }
            let (payload, ph) = match payload {
                Ok((range, ph)) => (enc.payload(range), *ph),
                Err(e) => {
                    match slot {
                        Some(i) => table.set_flags(i, INVALID),
                        None => {
                            self.new_invalid.insert(kh);
                        }
                    }
                    self.invalid(key.to_string(), e.clone()).await?;
                    continue;
                }
            };
            let class = match slot {
                None => Class::Added,
                Some(_) if mode == Mode::Insert => Class::Unchanged,
                Some(i) if !forced && table::same_hash(table.hash_at(i), ph) => Class::Unchanged,
                Some(i) => {
                    table.set_flags(i, CHANGED);
                    Class::Changed
                }
            };
            match class {
                Class::Added => self.counts.added += 1,
                Class::Changed => self.counts.changed += 1,
                _ => self.counts.unchanged += 1,
            }
            let send = match class {
                Class::Added | Class::Changed => true,
                _ => self.opts.full_resync && mode != Mode::Insert,
            };
            if mode == Mode::Insert && forced && !self.opts.force {
                // Insert cannot tell whether the interrupted batch created the record.
                if class == Class::Added {
                    self.counts.added -= 1;
                } else {
                    self.counts.unchanged -= 1;
                }
                self.invalid(
                    key.to_string(),
                    RowError {
                        code: "unconfirmed_insert",
                        message: "an earlier run sent this row and stopped before the destination answered; \
                                  insert mode cannot tell whether the record was created, so it is not sent \
                                  again (check the destination, then `ebb run --force` sends it anyway)"
                            .into(),
                    },
                )
                .await?;
                continue;
            }
            if send {
                if op == Op::Delete {
                    self.deletes += 1;
                }
                match class {
                    Class::Added => self.sample("added", || payload.to_string()),
                    Class::Changed => self.sample("changed", || payload.to_string()),
                    _ => {}
                }
                if !self.opts.dry_run {
                    spill
                        .push(Some(op), kh, ph, key, payload)
                        .await
                        .map_err(|e| format!("cannot write the spill file: {e}"))?;
                }
                *self.per_op.entry(op).or_default() += 1;
                self.progress.to_send.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// A key met again: every row with it is invalid; the count of its first row is undone.
    fn duplicate(&mut self, kh: u128, key: String, snapshot_flags: Option<u8>) {
        if let Some(d) = self.dups.get_mut(&kh) {
            d.count += 1;
            self.counts.invalid += 1;
            return;
        }
        let first = match snapshot_flags {
            Some(f) if f & INVALID != 0 => Class::Invalid,
            Some(f) if f & CHANGED != 0 => Class::Changed,
            Some(_) => Class::Unchanged,
            None if self.new_invalid.contains(&kh) => Class::Invalid,
            None => Class::Added,
        };
        match first {
            Class::Added => self.counts.added -= 1,
            Class::Changed => self.counts.changed -= 1,
            Class::Unchanged => self.counts.unchanged -= 1,
            Class::Invalid => self.counts.invalid -= 1,
        }
        self.counts.invalid += 2;
        self.sample("invalid", || format!("{key}: duplicate key (duplicate_key)"));
        self.dups.insert(kh, Duplicate { key, count: 2 });
    }

    /// Rows of the snapshot the model no longer has, and keys in flight the model no
    /// longer has: deleted, cleared or forgotten, as the model says.
    async fn removed(&mut self, table: &SnapTable, spill: &mut SpillWriter, fresh: bool) -> Result<(), String> {
        let mode = self.plan.destination.mode;
        let action = match (mode, self.plan.destination.on_removed) {
            (Mode::Delete, _) => None,
            (Mode::Mirror, _) | (_, OnRemoved::Delete) => Some(Op::Delete),
            (_, OnRemoved::Clear) => Some(Op::Clear),
            (_, OnRemoved::Ignore) => None,
        };
        let mut keys: Vec<String> = Vec::new();
        if !fresh && table.unseen() > 0 {
            let (tx, mut rx) = mpsc::channel(4);
            let scan = self.store.scan_snapshot(self.name(), tx);
            let collect = async {
                while let Some(chunk) = rx.recv().await {
                    for (key, _) in chunk {
                        if table.seen(key_hash(&key)) == Some(false) {
                            keys.push(key);
                        }
                    }
                }
            };
            let (scanned, ()) = tokio::join!(scan, collect);
            scanned.map_err(|e| e.to_string())?;
        }
        // In flight but never confirmed, and gone from the model.
        for (kh, f) in &self.forced {
            if !f.seen && table.seen(*kh).is_none() {
                keys.push(f.key.clone());
            }
        }
        keys.sort();
        for key in keys {
            self.counts.removed += 1;
            let kh = key_hash(&key);
            self.sample("removed", || key.clone());
            if self.opts.dry_run {
                if action.is_some() {
                    self.deletes += 1;
                }
                continue;
            }
            match action {
                Some(op) => {
                    self.deletes += 1;
                    *self.per_op.entry(op).or_default() += 1;
                    let payload = self.key_payload(&key, op == Op::Clear);
                    let ph = payload_hash(payload.as_bytes());
                    spill.push(Some(op), kh, ph, &key, &payload).await
                }
                None => spill.push(None, kh, [0; 16], &key, "").await,
            }
            .map_err(|e| format!("cannot write the spill file: {e}"))?;
            if action.is_some() {
                self.progress.to_send.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Why the guard refuses this run, if it does.
    fn guard(&self, table: &SnapTable) -> Option<String> {
        let g = self.plan.guard;
        if table.is_empty() {
            return None; // the first sync is exempt
        }
        let confirmed = table.len() as f64;
        let touched = self.counts.changed + self.counts.removed;
        if let Some(max) = g.max_change_ratio {
            let ratio = touched as f64 / confirmed;
            if ratio > max {
                return Some(format!(
                    "{} of the {} rows confirmed in the destination would change ({} changed, {} removed), \
                     over `max_change_ratio: {max}`",
                    percent(ratio),
                    table.len(),
                    self.counts.changed,
                    self.counts.removed
                ));
            }
        }
        let verb = if self.plan.destination.on_removed == OnRemoved::Clear && self.plan.destination.mode != Mode::Delete
        {
            "cleared"
        } else {
            "deleted"
        };
        let default = |d: bool, key: &str| {
            if d {
                format!(
                    " (the default for a model that deletes; set `guard: {{{key}: …}}` in the model to change it, or `off`)"
                )
            } else {
                String::new()
            }
        };
        if let Some(max) = g.max_deletes {
            if self.deletes as u64 > max {
                return Some(format!(
                    "{} would be {verb}, over `max_deletes: {max}`{}",
                    plural(self.deletes, "record"),
                    default(g.default_max_deletes, "max_deletes")
                ));
            }
        }
        if let Some(max) = g.max_delete_ratio {
            let ratio = self.deletes as f64 / confirmed;
            if ratio > max {
                return Some(format!(
                    "{} of the {} rows confirmed in the destination would be {verb} ({}), over `max_delete_ratio: {max}`{}",
                    percent(ratio),
                    table.len(),
                    self.deletes,
                    default(g.default_max_delete_ratio, "max_delete_ratio")
                ));
            }
        }
        None
    }

    /// Sends the spill in batches, up to the destination's concurrency at once.
    async fn deliver(&mut self, mut reader: SpillReader, table: &mut SnapTable) -> Result<(), String> {
        let plan = self.plan;
        let d = &plan.destination;
        let spec = self
            .project
            .connections
            .get(&d.connection)
            .ok_or_else(|| format!("connection `{}` is not defined", d.connection))?;
        let dest = if self.progress.to_send.load(Ordering::Relaxed) > 0 {
            Some(Arc::new(
                Destination::open_for(plan, spec, self.project_dir, self.run_id)
                    .await
                    .map_err(|e| format!("destination `{}`: {e}", d.connection))?,
            ))
        } else {
            None
        };
        let batch_size = (d.batch_size as usize).max(1);
        // Batches run as tasks of their own, so that their work (request bodies, answers,
        // commits) spreads over the runtime's threads; dropping the set aborts them.
        let sender = self
            .ctx
            .writer
            .clone()
            .zip(dest.clone())
            .map(|(writer, dest)| BatchSender {
                plan: Arc::new(plan.clone()),
                run_id: self.run_id,
                writer,
                dest,
                policy: Arc::new(RetryPolicy::from_env()),
            });
        let mut in_flight: tokio::task::JoinSet<BatchResult> = tokio::task::JoinSet::new();
        // A batch holds a place in the pipeline until its answer comes, not until the answer
        // is committed: commits of many batches then group into one transaction while
        // sending goes on. Each task says once that it was answered (or gave up).
        let (answered_tx, mut answered_rx) = mpsc::unbounded_channel::<()>();
        let mut unanswered = 0usize;
        // What committed answers change in the snapshot goes into the table as they settle,
        // while later batches are under way; room for the new rows is made once.
        table.reserve(table.len() + self.counts.added.max(0) as usize);
        let mut batch_no: i64 = 0;
        // Each batch goes to the destination after the one before it has (see [`Turn`]).
        let mut previous_started: Option<oneshot::Receiver<()>> = None;
        let mut pending: Vec<Spilled> = Vec::new();
        let mut forget: Vec<String> = Vec::new();
        let mut at_end = false;
        loop {
            if self.failure.is_some() || self.lost.is_some_and(|l| l.load(Ordering::SeqCst)) {
                break; // no new batches; those in flight end below
            }
            if self.opts.stopping() {
                self.failure = Some("stopped before the end (shutdown): the next run sends the rest".into());
                break;
            }
            // Fill the next batch (or reach the end of the spill).
            let mut next: Option<Vec<Spilled>> = None;
            while next.is_none() && !at_end {
                match reader
                    .next_record()
                    .await
                    .map_err(|e| format!("cannot read the spill file: {e}"))?
                {
                    None => {
                        at_end = true;
                        if !pending.is_empty() {
                            next = Some(std::mem::take(&mut pending));
                        }
                    }
                    Some(r) => {
                        if !self.dups.is_empty() && self.dups.contains_key(&r.key_hash) {
                            continue;
                        }
                        let Some(op) = r.op else {
                            if let Some(f) = self.forced.get_mut(&r.key_hash) {
                                f.resolved = true;
                            }
                            forget.push(r.key);
                            if forget.len() >= ERROR_CHUNK {
                                self.forget(std::mem::take(&mut forget), table).await?;
                            }
                            continue;
                        };
                        if pending.first().is_some_and(|p| p.op != Some(op)) {
                            next = Some(std::mem::take(&mut pending));
                        }
                        pending.push(r);
                        let size = match &dest {
                            Some(dest) => dest.batch_size(op, self.per_op.get(&op).copied().unwrap_or(0), batch_size),
                            None => batch_size,
                        };
                        if pending.len() >= size && next.is_none() {
                            next = Some(std::mem::take(&mut pending));
                        }
                    }
                }
            }
            match next {
                Some(records) => {
                    let (Some(dest), Some(sender)) = (dest.as_ref(), sender.as_ref()) else {
                        return Err("internal: records to send but no destination".into());
                    };
                    batch_no += 1;
                    if !self.forced.is_empty() {
                        for r in &records {
                            if let Some(f) = self.forced.get_mut(&r.key_hash) {
                                f.resolved = true;
                            }
                        }
                    }
                    self.counts.sent += records.len() as i64;
                    self.progress.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                    let op = records[0].op.expect("batches hold sent records");
                    let ids = if dest.wants_record_ids(op) {
                        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
                        self.store
                            .record_ids(&plan.name, &keys)
                            .await
                            .map_err(|e| e.to_string())?
                    } else {
                        HashMap::new()
                    };
                    let pipeline = dest.pipeline();
                    // A destination taking one batch at a time (a file) also has each batch
                    // committed before the next is written; so do inserts, which cannot be
                    // sent again safely: a batch answered but not committed when the process
                    // dies is held back by the next run (rule 3), so few may be.
                    let under_way = if pipeline == 1 || op == Op::Insert {
                        pipeline
                    } else {
                        pipeline * AWAITING_COMMIT
                    };
                    let answered = Answered(Some(answered_tx.clone()));
                    let turn = Turn {
                        after: previous_started.take(),
                        started: {
                            let (tx, rx) = oneshot::channel();
                            previous_started = Some(rx);
                            tx
                        },
                    };
                    in_flight.spawn(sender.clone().send_batch(batch_no, records, ids, answered, turn));
                    unanswered += 1;
                    // Wait while the pipeline is full: for a batch to be answered, or to end.
                    while unanswered >= pipeline || in_flight.len() >= under_way {
                        tokio::select! {
                            Some(()) = answered_rx.recv() => unanswered -= 1,
                            Some(done) = in_flight.join_next() => self.settled(joined(done), table),
                        }
                    }
                }
                // The end: the batches under way end below.
                None => break,
            }
        }
        while let Some(done) = in_flight.join_next().await {
            self.settled(joined(done), table);
        }
        drop(in_flight);
        drop(sender);
        if self.lost.is_some_and(|l| l.load(Ordering::SeqCst)) && self.failure.is_none() {
            self.failure = Some("another process took the run lock over (this one's heartbeat stopped?)".into());
        }
        if self.failure.is_none() && !forget.is_empty() {
            self.forget(forget, table).await?;
        }
        if let Some(dest) = dest {
            if let Some(calls) = dest.calls() {
                self.counts.api_calls = calls as i64;
            }
            if let Err(e) = dest.finish().await {
                self.failure
                    .get_or_insert(format!("destination `{}`: {e}", d.connection));
            }
        }
        Ok(())
    }

    /// Keys that left the model and are not deleted from the destination leave the
    /// snapshot, in the store and in the table.
    async fn forget(&self, keys: Vec<String>, table: &mut SnapTable) -> Result<(), String> {
        let hashes: Vec<u128> = keys.iter().map(|k| key_hash(k)).collect();
        self.ctx.write(vec![StateWrite::Remove { keys }]).await?;
        for kh in hashes {
            table.remove(kh);
        }
        Ok(())
    }

    fn settled(&mut self, done: BatchResult, table: &mut SnapTable) {
        for (kh, hash) in &done.snapshot {
            match hash {
                Some(h) => table.upsert(*kh, *h),
                None => {
                    table.remove(*kh);
                }
            }
        }
        self.counts.confirmed += done.confirmed;
        self.counts.rejected += done.rejected;
        self.counts.api_calls += done.api_calls as i64;
        self.progress
            .confirmed
            .fetch_add(done.confirmed as u64, Ordering::Relaxed);
        self.progress
            .rejected
            .fetch_add(done.rejected as u64, Ordering::Relaxed);
        if let Some(e) = done.failure {
            match (self.failure.is_some(), self.failure_batch) {
                (false, _) => {
                    self.failure = Some(e);
                    self.failure_batch = Some(done.batch);
                }
                (true, Some(b)) if done.batch < b => {
                    self.failure = Some(e);
                    self.failure_batch = Some(done.batch);
                }
                _ => {}
            }
        }
    }
}

/// The run's way to its state writer (`None` in a dry run, which writes nothing).
#[derive(Clone)]
struct Ctx {
    writer: Option<mpsc::Sender<WriteRequest>>,
}

impl Ctx {
    /// Commits `writes` (one transaction, grouped with other waiting writes) and waits for
    /// it. A dry run writes nothing.
    pub async fn write(&self, writes: Vec<StateWrite>) -> Result<(), String> {
        match &self.writer {
            Some(w) => write_via(w, writes).await,
            None => Ok(()),
        }
    }
}

/// Sends `writes` to the run's writer (one transaction, grouped with other waiting
/// writes) and waits until they are committed.
async fn write_via(w: &mpsc::Sender<WriteRequest>, writes: Vec<StateWrite>) -> Result<(), String> {
    if writes.is_empty() {
        return Ok(());
    }
    let (ack, done) = oneshot::channel();
    w.send((writes, ack))
        .await
        .map_err(|_| "the state writer stopped".to_string())?;
    done.await
        .map_err(|_| "the state writer stopped".to_string())?
        .map_err(|e| format!("cannot record the run's progress: {e}"))
}

/// What a batch's task owns: the plan, the run, the state writer, the destination.
#[derive(Clone)]
struct BatchSender {
    plan: Arc<SyncPlan>,
    run_id: i64,
    writer: mpsc::Sender<WriteRequest>,
    dest: Arc<Destination>,
    policy: Arc<RetryPolicy>,
}

/// Batches under way (awaiting their answer or its commit), per place in the pipeline, at
/// most: when commits fall behind, answers wait in memory, a few at a time.
const AWAITING_COMMIT: usize = 16;

/// Says, when dropped, that a batch was answered (or will never be): its place in the
/// pipeline is free.
struct Answered(Option<mpsc::UnboundedSender<()>>);

impl Drop for Answered {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A batch's place in the order batches reach the destination: batch N starts sending once
/// batch N-1 has, so requests queue for the destination's limits in batch order (and the
/// first batch's answer is the first one the destination gives).
struct Turn {
    after: Option<oneshot::Receiver<()>>,
    started: oneshot::Sender<()>,
}

/// A batch task's result; a task that panicked fails the run (its rows stay in flight).
fn joined(done: Result<BatchResult, tokio::task::JoinError>) -> BatchResult {
    done.unwrap_or_else(|e| BatchResult {
        failure: Some(format!("a batch's task failed (a bug in ebb): {e}")),
        ..BatchResult::default()
    })
}

impl BatchSender {
    async fn write(&self, writes: Vec<StateWrite>) -> Result<(), String> {
        write_via(&self.writer, writes).await
    }

    /// One batch: in flight (durably), sent with retries, its answer committed. `ids` are
    /// the destination's record ids of the batch's keys, when it needs them.
    async fn send_batch(
        self,
        batch_no: i64,
        records: Vec<Spilled>,
        ids: HashMap<String, String>,
        answered: Answered,
        turn: Turn,
    ) -> BatchResult {
        let (dest, policy) = (&*self.dest, &*self.policy);
        {
            let mut result = BatchResult {
                batch: batch_no,
                ..BatchResult::default()
            };
            let op = records[0].op.expect("batches hold sent records");
            let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
            if let Err(e) = self
                .write(vec![StateWrite::Inflight(InflightBatch {
                    run_id: self.run_id,
                    batch: batch_no,
                    op: op.as_str().into(),
                    keys,
                })])
                .await
            {
                result.failure = Some(e);
                return result;
            }
            // The payloads move into the batch; only their hashes are kept aside.
            let hashes: Vec<([u8; 16], u128)> = records.iter().map(|r| (r.payload_hash, r.key_hash)).collect();
            let batch = Batch {
                model: self.plan.name.clone(),
                run_id: self.run_id,
                op,
                key_field: self.plan.destination.key_field.clone(),
                records: records
                    .into_iter()
                    .map(|r| {
                        let record_id = ids.get(&r.key).cloned();
                        Record {
                            key: r.key,
                            payload: r.payload,
                            record_id,
                        }
                    })
                    .collect(),
            };
            let records = &batch.records;
            if let Some(after) = turn.after {
                let _ = after.await; // an error: the batch before ended without sending
            }
            let _ = turn.started.send(());
            let delivered = retry::deliver(dest, &batch, policy).await;
            drop(answered);
            let delivered = match delivered {
                Ok(d) => d,
                Err(failed) => {
                    result.api_calls = failed.api_calls;
                    result.failure = Some(format!(
                        "batch {batch_no} ({} records) to `{}`: {failed}; its rows are sent again by the next run",
                        records.len(),
                        self.plan.destination.connection
                    ));
                    return result;
                }
            };
            result.api_calls = delivered.api_calls;
            if delivered.outcomes.len() != records.len() {
                result.failure = Some(format!(
                    "batch {batch_no}: the destination answered for {} records out of {}",
                    delivered.outcomes.len(),
                    records.len()
                ));
                return result;
            }
            // Rows of the model advance the snapshot; rows that left it leave the snapshot.
            let leaves = matches!(op, Op::Delete | Op::Clear) && self.plan.destination.mode != Mode::Delete;
            let mut confirmed = Vec::new();
            let mut gone = Vec::new();
            let mut errors = Vec::new();
            let mut snapshot = Vec::new();
            for ((r, o), (hash, kh)) in records.iter().zip(delivered.outcomes).zip(hashes) {
                match o {
                    Outcome::Confirmed { record_id } => {
                        if leaves {
                            gone.push(r.key.clone());
                            snapshot.push((kh, None));
                        } else {
                            confirmed.push((r.key.clone(), hash, record_id));
                            snapshot.push((kh, Some(hash)));
                        }
                    }
                    Outcome::Rejected { code, message } => errors.push(RowErrorEntry {
                        key: r.key.clone(),
                        run_id: self.run_id,
                        kind: "rejected".into(),
                        code,
                        message,
                    }),
                }
            }
            result.confirmed = (confirmed.len() + gone.len()) as i64;
            result.rejected = errors.len() as i64;
            let mut writes = Vec::with_capacity(4);
            if !confirmed.is_empty() {
                writes.push(StateWrite::Confirm {
                    run_id: self.run_id,
                    rows: confirmed,
                });
            }
            if !gone.is_empty() {
                writes.push(StateWrite::Remove { keys: gone });
            }
            if !errors.is_empty() {
                writes.push(StateWrite::Errors(errors));
            }
            writes.push(StateWrite::Settle {
                run_id: self.run_id,
                batch: batch_no,
            });
            match self.write(writes).await {
                Ok(()) => result.snapshot = snapshot,
                Err(e) => {
                    // The answer was not recorded: the batch stays in flight and is sent again.
                    result.confirmed = 0;
                    result.rejected = 0;
                    result.failure = Some(e);
                }
            }
            result
        }
    }
}

/// `{key_field: key}` (a delete), or with every mapped field null (a clear).
fn key_payload(plan: &SyncPlan, key: &str, clear: bool) -> String {
    let key_field = plan.destination.key_field.as_str();
    let mut fields: Vec<(&str, Val)> = vec![(key_field, Val::Str(key.to_string()))];
    if clear {
        for m in &plan.mappings {
            if m.destination != key_field {
                fields.push((m.destination.as_str(), Val::Null));
            }
        }
    }
    fields.sort_by(|a, b| a.0.cmp(b.0));
    RowMapper::to_json_object(&fields).unwrap_or_default()
}

#[derive(Debug, Default)]
struct BatchResult {
    /// The batch's number (0 for a task that panicked).
    batch: i64,
    confirmed: i64,
    rejected: i64,
    api_calls: u64,
    failure: Option<String>,
    /// What the committed answer changed in the snapshot: key hash → new payload hash, or
    /// `None` for a row that left it.
    snapshot: Vec<(u128, Option<[u8; 16]>)>,
}

fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
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

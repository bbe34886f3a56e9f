//! Delivery: reads the spill back and cuts it into batches (one operation each, sized by
//! the destination), starts each batch as a task of its own ([`super::batch`]) while keeping
//! the pipeline within the destination's concurrency, and folds what each batch settled
//! into the run's counts and the snapshot table. Keys that left the model and are not
//! deleted are forgotten here; a stop, a lost lock or a failed batch ends it early.
//!
//! One batch's life (in flight, sent with retries, its answer committed) is
//! [`super::batch`]'s; the commits themselves are [`super::writer`]'s.

use super::batch::{Answered, BatchResult, BatchSender, Turn};
use super::error::RunError;
use super::keylog::KeyLog;
use super::run::{plural, Run};
use super::spill::{SpillReader, Spilled};
use super::table::SnapTable;
use super::ERROR_CHUNK;
use crate::destination::{Destination, Op};
use crate::http::retry::RetryPolicy;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// Batches under way (awaiting their answer or its commit), per place in the pipeline, at
/// most: when commits fall behind, answers wait in memory, a few at a time.
const AWAITING_COMMIT: usize = 16;

impl<'a> Run<'a> {
    /// Sends the spill in batches, up to the destination's concurrency at once.
    pub(super) async fn deliver(&mut self, mut reader: SpillReader, table: &mut SnapTable) -> Result<(), RunError> {
        let plan = self.cfg.plan;
        let d = &plan.destination;
        let spec = self
            .cfg
            .project
            .connections
            .get(&d.connection)
            .ok_or_else(|| RunError::NoConnection(d.connection.clone()))?;
        let dest = if self.cfg.progress.to_send.load(Ordering::Relaxed) > 0 {
            Some(Arc::new(
                Destination::open_for(plan, spec, self.cfg.project_dir, self.cfg.run_id)
                    .await
                    .map_err(|source| RunError::Open {
                        connection: d.connection.clone(),
                        source,
                    })?,
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
                run_id: self.cfg.run_id,
                writer,
                dest,
                policy: Arc::new(RetryPolicy::from_env()),
                hasher: Arc::new(crate::audit::KeyHasher::from_env()),
            });
        // A model with `conflicts` checks each batch against the CRM's values first.
        let lookup = if dest.is_some() { self.conflict_lookup()? } else { None };
        if lookup.is_some() {
            self.cfg.store.conflicts_init().await?;
        }
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
        // Keys sent that the snapshot does not hold go into the key log (opened with the
        // first; started over when the snapshot is empty).
        let started_empty = table.is_empty();
        let mut log = KeyLogged::Unopened {
            start_over: started_empty,
            live: table.len(),
        };
        let mut at_end = false;
        loop {
            if self.failure.is_some() || self.lost.is_some_and(|l| l.load(Ordering::SeqCst)) {
                break; // no new batches; those in flight end below
            }
            if self.cfg.opts.stopping() {
                self.failure = Some(RunError::Stopped);
                break;
            }
            // Fill the next batch (or reach the end of the spill).
            let mut next: Option<Vec<Spilled>> = None;
            while next.is_none() && !at_end {
                match reader
                    .next_record()
                    .await
                    .map_err(RunError::spill("read the spill file"))?
                {
                    None => {
                        at_end = true;
                        if !pending.is_empty() {
                            next = Some(std::mem::take(&mut pending));
                        }
                    }
                    Some(r) => {
                        if !self.diff.dups.is_empty() && self.diff.dups.contains_key(&r.key_hash) {
                            continue;
                        }
                        let Some(op) = r.op else {
                            if let Some(f) = self.diff.forced.get_mut(&r.key_hash) {
                                f.resolved = true;
                            }
                            forget.push(r.key);
                            if forget.len() >= ERROR_CHUNK {
                                self.forget(std::mem::take(&mut forget), table).await?;
                            }
                            continue;
                        };
                        // (A first sync's keys are all new: no lookup in the filling table.)
                        if started_empty || table.find(r.key_hash).is_none() {
                            self.log_key(&mut log, &r).await;
                        }
                        if pending.first().is_some_and(|p| p.op != Some(op)) {
                            next = Some(std::mem::take(&mut pending));
                        }
                        pending.push(r);
                        let size = match &dest {
                            Some(dest) => {
                                dest.batch_size(op, self.diff.per_op.get(&op).copied().unwrap_or(0), batch_size)
                            }
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
                        return Err(RunError::NoDestination);
                    };
                    let (records, bases) = match (&lookup, records[0].op) {
                        (Some(lookup), Some(Op::Upsert | Op::Update | Op::Insert)) => {
                            self.check_conflicts(records, lookup, dest, table).await?
                        }
                        _ => (records, HashMap::new()),
                    };
                    if records.is_empty() {
                        continue; // every row held, or settled without a write
                    }
                    batch_no += 1;
                    if !self.diff.forced.is_empty() {
                        for r in &records {
                            if let Some(f) = self.diff.forced.get_mut(&r.key_hash) {
                                f.resolved = true;
                            }
                        }
                    }
                    self.counts.sent += records.len() as i64;
                    self.cfg
                        .progress
                        .sent
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    let op = records[0].op.expect("batches hold sent records");
                    let ids = if dest.wants_record_ids(op) {
                        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
                        self.cfg.store.record_ids(&plan.name, &keys).await?
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
                    in_flight.spawn(
                        sender
                            .clone()
                            .send_batch(batch_no, records, ids, bases, answered, turn)
                            .in_current_span(),
                    );
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
        if let KeyLogged::Open(log) = log {
            if let Err(e) = log.finish().await {
                self.notes.push(format!(
                    "cannot keep the key log in {}: {e}",
                    self.key_log_path().display()
                ));
            }
        }
        if self.lost.is_some_and(|l| l.load(Ordering::SeqCst)) && self.failure.is_none() {
            self.failure = Some(RunError::LockLost);
        }
        if self.failure.is_none() && !forget.is_empty() {
            self.forget(forget, table).await?;
        }
        let c = self.conflicts;
        if c.held + c.decided + c.kept > 0 {
            self.notes.push(format!(
                "conflicts: {} decided by `{}`, {} held for review, {} left as the CRM has them (`ebb conflicts {}`)",
                plural(c.decided, "conflict"),
                plan.conflicts.as_ref().map(|p| p.policy.as_str()).unwrap_or(""),
                plural(c.held, "row"),
                plural(c.kept, "row"),
                plan.name
            ));
        }
        if let Some(dest) = dest {
            if let Some(calls) = dest.calls() {
                self.counts.api_calls = calls as i64;
            }
            if let Err(source) = dest.finish().await {
                self.failure.get_or_insert(RunError::Finish {
                    connection: d.connection.clone(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Adds a sent key to the key log, opening it first.
    async fn log_key(&mut self, log: &mut KeyLogged, r: &Spilled) {
        if let KeyLogged::Unopened { start_over, live } = *log {
            *log = match KeyLog::append(self.key_log_path(), start_over, live).await {
                Ok(l) => KeyLogged::Open(l),
                Err(e) => {
                    self.notes.push(format!(
                        "cannot keep the key log in {}: {e}",
                        self.key_log_path().display()
                    ));
                    KeyLogged::Failed
                }
            };
        }
        if let KeyLogged::Open(l) = log {
            l.push(r.key_hash, &r.key).await;
        }
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
        self.cfg
            .progress
            .confirmed
            .fetch_add(done.confirmed as u64, Ordering::Relaxed);
        self.cfg
            .progress
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

/// The run's key log ([`super::keylog`]), opened with the first key it gets.
enum KeyLogged {
    Unopened { start_over: bool, live: usize },
    Open(KeyLog),
    Failed,
}

/// A batch task's result; a task that panicked fails the run (its rows stay in flight).
fn joined(done: Result<BatchResult, tokio::task::JoinError>) -> BatchResult {
    done.unwrap_or_else(|e| BatchResult {
        failure: Some(RunError::BatchTask(e)),
        ..BatchResult::default()
    })
}

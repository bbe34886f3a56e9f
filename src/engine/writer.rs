//! The run's state writer: one task that commits the run's state writes (in-flight
//! records, answers, errors, snapshot changes) as they come, grouping whatever is queued into
//! one transaction, and the handles ([`Ctx`], [`write_via`]) the run and its batches wait on
//! their commits with.
//!
//! It decides nothing about what is written: the stages build the writes, the state store
//! ([`crate::state`]) applies them.

use crate::state::{StateError, StateStore, StateWrite};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A batch of state writes and who waits for their commit.
pub(super) type WriteRequest = (Vec<StateWrite>, oneshot::Sender<Result<(), Arc<StateError>>>);

/// Why writes were not committed. Every write of a failed transaction gets the same error,
/// so the store's is shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The writer task is gone (the run is ending).
    #[error("the state writer stopped")]
    Stopped,
    /// The transaction failed.
    #[error("cannot record the run's progress: {0}")]
    Commit(#[source] Arc<StateError>),
}

/// Commits the run's writes as they come, grouping whatever is queued into one transaction.
/// Batches about to be sent wait for their in-flight record, so when the queue holds some,
/// they are committed first in a transaction of their own and the answers after. A
/// transaction that changes the snapshot also stamps it with the run's `token`. Ends when
/// every sender is gone; returns how long its transactions took, and how many there were.
pub(super) async fn writer_loop(
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
            let result = store.apply(model, writes).await.map_err(Arc::new);
            busy += started.elapsed();
            transactions += 1;
            for (_, ack) in group {
                let _ = ack.send(result.clone());
            }
        }
    }
    (busy, transactions)
}

/// The run's way to its state writer (`None` in a dry run, which writes nothing).
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) writer: Option<mpsc::Sender<WriteRequest>>,
}

impl Ctx {
    /// Commits `writes` (one transaction, grouped with other waiting writes) and waits for
    /// it. A dry run writes nothing.
    pub async fn write(&self, writes: Vec<StateWrite>) -> Result<(), WriteError> {
        match &self.writer {
            Some(w) => write_via(w, writes).await,
            None => Ok(()),
        }
    }
}

/// Sends `writes` to the run's writer (one transaction, grouped with other waiting
/// writes) and waits until they are committed.
pub(super) async fn write_via(w: &mpsc::Sender<WriteRequest>, writes: Vec<StateWrite>) -> Result<(), WriteError> {
    if writes.is_empty() {
        return Ok(());
    }
    let (ack, done) = oneshot::channel();
    w.send((writes, ack)).await.map_err(|_| WriteError::Stopped)?;
    done.await.map_err(|_| WriteError::Stopped)?.map_err(WriteError::Commit)
}

//! One batch's life, in a task of its own: recorded in flight (durably) before it is sent,
//! sent in its turn with retries ([`crate::destination::retry`]), and its answer committed
//! in one transaction: confirmed rows advance the snapshot, rows that left the model leave
//! it, rejected rows get their error, the in-flight record goes.
//!
//! It does not choose what goes into a batch nor how many batches are under way; that is
//! [`super::deliver`]'s.

use super::error::RunError;
use super::spill::Spilled;
use super::writer::{write_via, WriteError, WriteRequest};
use crate::audit::{Action, KeyHasher, NewAudit};
use crate::config::Mode;
use crate::destination::retry;
use crate::destination::{Batch, Destination, Op, Outcome, Record};
use crate::http::retry::RetryPolicy;
use crate::plan::SyncPlan;
use crate::state::{InflightBatch, RowErrorEntry, StateWrite};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What a batch's task owns: the plan, the run, the state writer, the destination.
#[derive(Clone)]
pub(super) struct BatchSender {
    pub(super) plan: Arc<SyncPlan>,
    pub(super) run_id: i64,
    pub(super) writer: mpsc::Sender<WriteRequest>,
    pub(super) dest: Arc<Destination>,
    pub(super) policy: Arc<RetryPolicy>,
    /// Hashes the keys of the audit log's entries.
    pub(super) hasher: Arc<KeyHasher>,
}

/// Says, when dropped, that a batch was answered (or will never be): its place in the
/// pipeline is free.
pub(super) struct Answered(pub(super) Option<mpsc::UnboundedSender<()>>);

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
pub(super) struct Turn {
    pub(super) after: Option<oneshot::Receiver<()>>,
    pub(super) started: oneshot::Sender<()>,
}

impl BatchSender {
    /// Whether the record ids the destination confirms are worth keeping in the snapshot:
    /// only a model that can later update or delete a record by its id (`mode: update` or
    /// `delete`, or removed rows deleted) asks for them. Kept for every model, they cost a
    /// first sync of a million rows 18 MB of state and its write time for nothing; a model
    /// changed later to need them has them looked up by key (the destination does that for
    /// any row whose id is not kept).
    fn keeps_record_ids(&self) -> bool {
        let d = &self.plan.destination;
        let removed_deleted = d.mode == Mode::Mirror || d.on_removed == crate::config::OnRemoved::Delete;
        (matches!(d.mode, Mode::Update | Mode::Delete) || removed_deleted)
            && (self.dest.wants_record_ids(Op::Update) || self.dest.wants_record_ids(Op::Delete))
    }

    /// The audit entry of a batch's confirmed records (none confirmed: nothing changed
    /// outside ebb, no entry). Committed with the answer, so the log holds exactly the
    /// batches recorded as done.
    fn audit_entry(
        &self,
        op: Op,
        batch_no: i64,
        confirmed: &[(String, [u8; 16], Option<String>)],
        gone: &[String],
    ) -> Option<NewAudit> {
        let count = confirmed.len() + gone.len();
        if count == 0 {
            return None;
        }
        let d = &self.plan.destination;
        let keys = confirmed
            .iter()
            .map(|(k, _, _)| k.as_str())
            .chain(gone.iter().map(String::as_str));
        let mut e = NewAudit::new(crate::audit::ENGINE_ACTOR, Action::Write)
            .model(self.plan.name.clone())
            .run(self.run_id)
            .detail(serde_json::json!({ "batch": batch_no, "key_hash": self.hasher.scheme() }));
        e.destination = Some(match d.object.as_deref().or(d.table.as_deref()) {
            Some(o) => format!("{}/{o}", d.connection),
            None => d.connection.clone(),
        });
        e.operation = Some(op.as_str().to_string());
        e.count = Some(count as i64);
        e.keys = self.hasher.hash_all(keys);
        Some(e)
    }

    async fn write(&self, writes: Vec<StateWrite>) -> Result<(), WriteError> {
        write_via(&self.writer, writes).await
    }

    /// One batch: in flight (durably), sent with retries, its answer committed. `ids` are
    /// the destination's record ids of the batch's keys, when it needs them.
    pub(super) async fn send_batch(
        self,
        batch_no: i64,
        records: Vec<Spilled>,
        ids: HashMap<String, String>,
        bases: HashMap<String, String>,
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
                result.failure = Some(e.into());
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
                    result.failure = Some(RunError::Batch {
                        batch: batch_no,
                        records: records.len(),
                        connection: self.plan.destination.connection.clone(),
                        source: failed,
                    });
                    return result;
                }
            };
            result.api_calls = delivered.api_calls;
            if delivered.outcomes.len() != records.len() {
                result.failure = Some(RunError::Miscounted {
                    batch: batch_no,
                    answered: delivered.outcomes.len(),
                    records: records.len(),
                });
                return result;
            }
            // Rows of the model advance the snapshot; rows that left it leave the snapshot.
            let leaves = matches!(op, Op::Delete | Op::Clear) && self.plan.destination.mode != Mode::Delete;
            let mut confirmed = Vec::new();
            let mut gone = Vec::new();
            let mut errors = Vec::new();
            let mut snapshot = Vec::new();
            let keep_ids = self.keeps_record_ids();
            let pii = self.plan.pii_fields();
            for ((r, o), (hash, kh)) in records.iter().zip(delivered.outcomes).zip(hashes) {
                match o {
                    Outcome::Confirmed { record_id } => {
                        let record_id = record_id.filter(|_| keep_ids);
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
                        message: crate::redact::mask_quoted(&message, &r.payload, &pii),
                    }),
                }
            }
            result.confirmed = (confirmed.len() + gone.len()) as i64;
            result.rejected = errors.len() as i64;
            let mut writes = Vec::with_capacity(5);
            if !bases.is_empty() {
                // Two-way fields: what the CRM confirmed is what both sides now agree on.
                let agreed: Vec<(String, String)> = confirmed
                    .iter()
                    .filter_map(|(k, _, _)| Some((k.clone(), bases.get(k)?.clone())))
                    .collect();
                if !agreed.is_empty() {
                    writes.push(StateWrite::ConflictBase(agreed));
                }
            }
            let audit = self.audit_entry(op, batch_no, &confirmed, &gone);
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
            if let Some(entry) = audit {
                writes.push(StateWrite::Audit(entry));
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
                    result.failure = Some(e.into());
                }
            }
            result
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct BatchResult {
    /// The batch's number (0 for a task that panicked).
    pub(super) batch: i64,
    pub(super) confirmed: i64,
    pub(super) rejected: i64,
    pub(super) api_calls: u64,
    pub(super) failure: Option<RunError>,
    /// What the committed answer changed in the snapshot: key hash → new payload hash, or
    /// `None` for a row that left it.
    pub(super) snapshot: Vec<(u128, Option<[u8; 16]>)>,
}

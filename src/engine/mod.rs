//! The sync engine: one run of one model.
//!
//! A run (docs/delivery.md §1):
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
//!
//! One module per stage, in the order a run goes through them:
//! - `run.rs`: options, progress, report, [`run()`](run()) (lock, heartbeat, the run's
//!   record) and the sequence of the stages;
//! - `snapshot.rs`: the snapshot's destination, keys left in flight, the table loaded and
//!   saved ([`table`] is its data structure);
//! - `diff.rs`: read, map ([`pool`]), classify, find removed rows (their keys from
//!   `keylog.rs`, the key log kept beside the table), spill ([`spill`]);
//! - `guard.rs`: refuse a run that changes too much;
//! - `deliver.rs`: the spill cut into batches and the pipeline of batches under way;
//! - `batch.rs`: one batch, in flight, sent and its answer committed;
//! - `writer.rs`: the task committing the run's state writes, grouped;
//! - `error.rs`: [`RunError`], why a run failed or was refused;
//! - [`inbound`]: the inbound run (CRM → table); [`webhook`]: a webhook model's inbox
//!   applied to its table.

mod batch;
pub mod conflict;
mod deliver;
mod diff;
mod error;
mod guard;
pub mod inbound;
mod keylog;
pub mod pool;
mod run;
mod snapshot;
pub mod spill;
pub mod table;
#[doc(hidden)]
pub mod testing;
pub mod webhook;
mod writer;

pub use writer::WriteError;

pub use error::RunError;
pub use pool::EncodeError;
pub use run::{destination_identity, health, plural, run, Progress, RunOptions, RunReport, Status};

/// Errors (or forgotten keys) written per transaction while reading and delivering.
const ERROR_CHUNK: usize = 5000;

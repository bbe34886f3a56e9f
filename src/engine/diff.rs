//! The diff: reads the model from its source, has each row mapped, encoded and hashed
//! ([`super::pool`]), classifies it against the snapshot table (added, changed, unchanged,
//! invalid, duplicate), finds the rows the model no longer has, and writes what is to be
//! sent to the spill file ([`super::spill`]). Invalid rows get their errors here; `--dry-run`
//! samples come from here.
//!
//! It sends nothing and changes no snapshot: whether the run goes on is [`super::guard`]'s
//! call, and sending is [`super::deliver`]'s.

use super::error::RunError;
use super::keylog::{self, KeyLog};
use super::pool::EncodePool;
use super::run::Run;
use super::snapshot::Forced;
use super::spill::SpillWriter;
use super::table::{self, key_hash, payload_hash, KeySet, SnapTable};
use super::ERROR_CHUNK;
use crate::config::{Mode, OnRemoved};
use crate::destination::Op;
use crate::map::encode::{Encoded, Row as EncodedRow};
use crate::map::value::Val;
use crate::map::{RowError, RowMapper};
use crate::plan::SyncPlan;
use crate::source::Source;
use crate::state::{RowErrorEntry, StateWrite};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Rows per source batch.
const READ_BATCH: usize = 8192;
/// Threads encoding source batches (mapping, JSON, hashing) while the run classifies.
const ENCODE_THREADS: usize = 2;
/// Source batches handed to the encoding threads ahead of the one being classified.
const ENCODE_AHEAD: u64 = 8;
/// Sample payloads kept per kind of change by `--dry-run`.
const SAMPLES: usize = 5;
/// Rows that left the model looked up in the key log at most; past it, the state store's
/// snapshot is read instead (the hashes looked for are held in memory).
const LOOKUP_AT_MOST: usize = 1 << 20;

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

/// What the diff finds that the guard and delivery go by.
#[derive(Default)]
pub(super) struct DiffState {
    /// Keys an earlier run left in flight ([`super::snapshot`] loads them).
    pub(super) forced: HashMap<u128, Forced>,
    pub(super) dups: HashMap<u128, Duplicate>,
    /// Keys of rows not in the snapshot whose payload was invalid (to undo their count if
    /// the key turns out duplicated).
    pub(super) new_invalid: KeySet,
    pub(super) pending_errors: Vec<RowErrorEntry>,
    /// Delete and clear operations planned (for `max_deletes` and `max_delete_ratio`).
    pub(super) deletes: i64,
    /// Records to send, by operation (a destination may batch large sets differently).
    pub(super) per_op: HashMap<Op, u64>,
}

pub(super) struct Duplicate {
    pub(super) key: String,
    pub(super) count: i64,
}

/// The flags kept in a snapshot slot for this run.
const CHANGED: u8 = 1;
const INVALID: u8 = 2;

impl<'a> Run<'a> {
    fn sample(&mut self, kind: &'static str, text: impl FnOnce() -> String) {
        if !self.cfg.opts.dry_run {
            return;
        }
        let list = self.samples.entry(kind).or_default();
        if list.len() < SAMPLES {
            list.push(text());
        }
    }

    async fn invalid(&mut self, key: String, e: RowError) -> Result<(), RunError> {
        self.counts.invalid += 1;
        self.sample("invalid", || format!("{key}: {} ({})", e.message, e.code));
        self.diff.pending_errors.push(RowErrorEntry {
            key,
            run_id: self.cfg.run_id,
            kind: "invalid".into(),
            code: e.code.to_string(),
            message: e.message,
        });
        if self.diff.pending_errors.len() >= ERROR_CHUNK {
            let errors = std::mem::take(&mut self.diff.pending_errors);
            self.ctx.write(vec![StateWrite::Errors(errors)]).await?;
        }
        Ok(())
    }

    /// `{key_field: key}` (a delete), or with every mapped field null (a clear).
    fn key_payload(&self, key: &str, clear: bool) -> String {
        key_payload(self.cfg.plan, key, clear)
    }

    pub(super) async fn read_model(&mut self, table: &mut SnapTable, spill: &mut SpillWriter) -> Result<(), RunError> {
        let plan = self.cfg.plan;
        let Some(query) = &plan.source.query else {
            return Err(RunError::NoQuery {
                kind: plan.source.kind,
                object: plan.source.object.as_deref().unwrap_or("?").to_string(),
            });
        };
        let spec = self
            .cfg
            .project
            .connections
            .get(&plan.source.connection)
            .ok_or_else(|| RunError::NoConnection(plan.source.connection.clone()))?;
        let context = |source| RunError::Source {
            connection: plan.source.connection.clone(),
            kind: plan.source.kind,
            source,
        };
        let source = Source::open(&plan.source.connection, spec, self.cfg.project_dir).map_err(context)?;
        let mut stream = source.query(query, READ_BATCH).await.map_err(context)?;
        let mapper =
            RowMapper::new(&with_modified(plan), stream.schema()).map_err(|missing| RunError::MissingColumns {
                connection: plan.source.connection.clone(),
                kind: plan.source.kind,
                missing,
            })?;
        // Batches are encoded on worker threads and classified here, in order.
        let mut pool = EncodePool::start(Arc::new(mapper), ENCODE_THREADS);
        let mut cx = Classify::default();
        let (mut submitted, mut next, mut eof) = (0u64, 0u64, false);
        let mut ready: BTreeMap<u64, Encoded> = BTreeMap::new();
        loop {
            if self.cfg.opts.stopping() {
                return Err(RunError::StoppedReading);
            }
            if !eof && submitted - next < ENCODE_AHEAD {
                match stream.next().await {
                    Some(batch) => {
                        pool.submit(submitted, batch.map_err(context)?).await?;
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
            self.cfg.progress.read.store(self.counts.read as u64, Ordering::Relaxed);
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
    ) -> Result<(), RunError> {
        let mode = self.cfg.plan.destination.mode;
        let op = match mode {
            // `append` is for table destinations, whose writer is not in this engine yet.
            Mode::Upsert | Mode::Mirror | Mode::Append => Op::Upsert,
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
        let any_forced = !self.diff.forced.is_empty();
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
                && match self.diff.forced.get_mut(&kh) {
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
                            self.diff.new_invalid.insert(kh);
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
                _ => self.cfg.opts.full_resync && mode != Mode::Insert,
            };
            if mode == Mode::Insert && forced && !self.cfg.opts.force {
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
                    self.diff.deletes += 1;
                }
                match class {
                    Class::Added => {
                        let plan = self.cfg.plan;
                        self.sample("added", || shown_payload(plan, payload))
                    }
                    Class::Changed => {
                        let plan = self.cfg.plan;
                        self.sample("changed", || shown_payload(plan, payload))
                    }
                    _ => {}
                }
                if !self.cfg.opts.dry_run {
                    spill
                        .push(Some(op), kh, ph, key, payload)
                        .await
                        .map_err(RunError::spill("write the spill file"))?;
                }
                *self.diff.per_op.entry(op).or_default() += 1;
                self.cfg.progress.to_send.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// A key met again: every row with it is invalid; the count of its first row is undone.
    fn duplicate(&mut self, kh: u128, key: String, snapshot_flags: Option<u8>) {
        if let Some(d) = self.diff.dups.get_mut(&kh) {
            d.count += 1;
            self.counts.invalid += 1;
            return;
        }
        let first = match snapshot_flags {
            Some(f) if f & INVALID != 0 => Class::Invalid,
            Some(f) if f & CHANGED != 0 => Class::Changed,
            Some(_) => Class::Unchanged,
            None if self.diff.new_invalid.contains(&kh) => Class::Invalid,
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
        self.diff.dups.insert(kh, Duplicate { key, count: 2 });
    }

    /// Rows of the snapshot the model no longer has, and keys in flight the model no
    /// longer has: deleted, cleared or forgotten, as the model says.
    pub(super) async fn removed(
        &mut self,
        table: &SnapTable,
        spill: &mut SpillWriter,
        fresh: bool,
    ) -> Result<(), RunError> {
        let mode = self.cfg.plan.destination.mode;
        let action = match (mode, self.cfg.plan.destination.on_removed) {
            (Mode::Delete, _) => None,
            (Mode::Mirror, _) | (_, OnRemoved::Delete) => Some(Op::Delete),
            (_, OnRemoved::Clear) => Some(Op::Clear),
            (_, OnRemoved::Ignore) => None,
        };
        let mut keys: Vec<String> = Vec::new();
        if !fresh && table.unseen() > 0 {
            keys = self.unseen_keys(table).await?;
        }
        // In flight but never confirmed, and gone from the model.
        for (kh, f) in &self.diff.forced {
            if !f.seen && table.seen(*kh).is_none() {
                keys.push(f.key.clone());
            }
        }
        keys.sort();
        for key in keys {
            self.counts.removed += 1;
            let kh = key_hash(&key);
            self.sample("removed", || key.clone());
            if self.cfg.opts.dry_run {
                if action.is_some() {
                    self.diff.deletes += 1;
                }
                continue;
            }
            match action {
                Some(op) => {
                    self.diff.deletes += 1;
                    *self.diff.per_op.entry(op).or_default() += 1;
                    let payload = self.key_payload(&key, op == Op::Clear);
                    let ph = payload_hash(payload.as_bytes());
                    spill.push(Some(op), kh, ph, &key, &payload).await
                }
                None => spill.push(None, kh, [0; 16], &key, "").await,
            }
            .map_err(RunError::spill("write the spill file"))?;
            if action.is_some() {
                self.cfg.progress.to_send.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The text of the snapshot's keys this run did not see: from the key log
    /// ([`super::keylog`]) when it holds them all, which reads none of the snapshot; else
    /// from the state store, whose every key then goes into a new log.
    async fn unseen_keys(&mut self, table: &SnapTable) -> Result<Vec<String>, RunError> {
        let path = self.key_log_path();
        if let Some(wanted) = table.unseen_keys(LOOKUP_AT_MOST) {
            if let Some(keys) = keylog::lookup(path.clone(), wanted).await {
                return Ok(keys);
            }
        }
        let mut log = if self.cfg.opts.dry_run {
            None
        } else {
            KeyLog::rebuild(path.clone()).await.ok()
        };
        let mut keys = Vec::new();
        let (tx, mut rx) = mpsc::channel(4);
        let scan = self.cfg.store.scan_snapshot(self.name(), tx);
        let collect = async {
            while let Some(chunk) = rx.recv().await {
                for (key, _) in chunk {
                    let kh = key_hash(&key);
                    if let Some(log) = log.as_mut() {
                        log.push(kh, &key).await;
                    }
                    if table.seen(kh) == Some(false) {
                        keys.push(key);
                    }
                }
            }
        };
        let (scanned, ()) = tokio::join!(scan, collect);
        scanned?;
        if let Some(log) = log {
            if let Err(e) = log.finish().await {
                self.notes
                    .push(format!("cannot keep the key log in {}: {e}", path.display()));
            }
        }
        Ok(keys)
    }

    /// Once the model is read: every row of a duplicated key gets its error, and the errors
    /// still pending are committed with those of earlier runs cleared.
    pub(super) async fn record_errors(&mut self) -> Result<(), RunError> {
        for (_, d) in std::mem::take(&mut self.diff.dups) {
            self.diff.pending_errors.push(RowErrorEntry {
                key: d.key.clone(),
                run_id: self.cfg.run_id,
                kind: "invalid".into(),
                code: "duplicate_key".into(),
                message: format!(
                    "the key `{}` is on {} rows of the model; none of them is sent",
                    d.key, d.count
                ),
            });
            self.diff.dups.insert(key_hash(&d.key), d);
        }
        let errors = std::mem::take(&mut self.diff.pending_errors);
        self.replace_invalid(errors).await
    }

    /// Records this run's invalid rows, replacing earlier runs' (a row fixed since is no
    /// longer reported: docs/state.md rule 4). Both directions' runs end their read with it.
    pub(super) async fn replace_invalid(&self, errors: Vec<crate::state::RowErrorEntry>) -> Result<(), RunError> {
        self.ctx
            .write(vec![
                StateWrite::Errors(errors),
                StateWrite::ClearInvalidBefore {
                    run_id: self.cfg.run_id,
                },
            ])
            .await?;
        Ok(())
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

/// The plan the rows are encoded with: a model with `conflicts.source_modified` carries
/// each row's modification time in its payload, under [`crate::plan::MODIFIED_FIELD`], for
/// the conflict check, which takes it out before anything is sent. (A row whose only
/// change is its modification time is then checked again, and writes nothing new.)
fn with_modified(plan: &SyncPlan) -> std::borrow::Cow<'_, SyncPlan> {
    let Some(column) = plan.conflicts.as_ref().and_then(|c| c.source_modified.clone()) else {
        return std::borrow::Cow::Borrowed(plan);
    };
    let mut p = plan.clone();
    let span = p.spans.source.clone();
    p.mappings.push(crate::plan::MappingPlan {
        destination: crate::plan::MODIFIED_FIELD.to_string(),
        value: crate::plan::ValueSource::Path(crate::path::FieldPath::Simple {
            column,
            steps: Vec::new(),
        }),
        transforms: Vec::new(),
        source_span: span.clone(),
        transform_spans: Vec::new(),
        destination_span: span,
        pii: false,
    });
    std::borrow::Cow::Owned(p)
}

/// A payload as a dry run shows it: `pii` fields masked, and without the modification time
/// a model with `conflicts` carries for its check (it is never sent).
fn shown_payload(plan: &SyncPlan, payload: &str) -> String {
    let pii = plan.pii_fields();
    let shown = crate::redact::mask_fields(payload, &pii);
    if !shown.contains(crate::plan::MODIFIED_FIELD) {
        return shown;
    }
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&shown) {
        Ok(mut o) => {
            o.remove(crate::plan::MODIFIED_FIELD);
            serde_json::Value::Object(o).to_string()
        }
        Err(_) => shown,
    }
}

//! Applying a webhook model's inbox to its table: the pending events, oldest first, a batch
//! at a time (docs/webhooks.md).
//!
//! For each batch: every event's record is read with the model's field types and mapped
//! like any inbound row; an event that cannot be becomes a dead letter with the reason.
//! Then, per record key, only the newest event counts: the latest event time, ties broken
//! by arrival. It is written only if it is newer than the newest event already applied to
//! that key (`ebb_inbox_keys`), so an event arriving late never overwrites a newer one,
//! and a delete stays a delete unless a newer update comes. The rows are written in one
//! transaction, then the events are settled (applied, superseded, ignored, dead) and the
//! keys' versions recorded in one transaction of the state store.
//!
//! The two commits are not one: if ebb stops between them, the events are still pending
//! and the next batch writes the same rows again, which changes nothing (the table
//! writer's upsert skips rows already holding the values) and settles them then.

use crate::config::model::FieldType;
use crate::config::project::{ConnectionSpec, ProjectSpec};
use crate::destination::table::{TableError, TableRow, TableWriter, WriteCounts};
use crate::map::value::Val;
use crate::map::RowMapper;
use crate::plan::SyncPlan;
use crate::source::salesforce::describe::{Column as SfColumn, Kind};
use crate::source::salesforce::rows::Rows;
use crate::state::inbox::{InboxEvent, InboxStatus, KeyVersion, Settled};
use crate::state::{StateError, StateStore};
use crate::webhook::Action;
use arrow::datatypes::{Field, Schema, SchemaRef};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

mod replay;
pub use replay::{replay, Replayed};

/// Events applied in one batch unless the caller says otherwise.
pub const DEFAULT_BATCH: i64 = 1000;

/// Why applying a model's inbox failed (the events stay pending).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("model `{model}` is not a webhook model")]
    NotWebhook { model: String },
    #[error("model `{model}`: no connection `{connection}` in `ebb.yaml`")]
    NoConnection { model: String, connection: String },
    #[error("model `{model}`: its mappings do not fit its fields: {why}")]
    Mapping { model: String, why: String },
    #[error("model `{model}`: the inbox: {source}")]
    Store { model: String, source: StateError },
    #[error("model `{model}`: writing to `{connection}`: {source}")]
    Write {
        model: String,
        connection: String,
        source: Box<TableError>,
    },
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Events taken from the inbox.
    pub events: u64,
    /// Events written to the table.
    pub applied: u64,
    /// Events older than what the table holds for their record.
    pub superseded: u64,
    pub ignored: u64,
    /// Events that became dead letters.
    pub dead: u64,
    /// What the table writer did.
    pub written: WriteCounts,
    /// When the oldest event of the batch was received (for the apply lag).
    pub oldest_received: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, o: Applied) {
        self.events += o.events;
        self.applied += o.applied;
        self.superseded += o.superseded;
        self.ignored += o.ignored;
        self.dead += o.dead;
        self.written += o.written;
        self.oldest_received = match (self.oldest_received, o.oldest_received) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Applies one webhook model's inbox.
pub struct Applier {
    plan: SyncPlan,
    writer: TableWriter,
    columns: Vec<SfColumn>,
    schema: SchemaRef,
    mapper: RowMapper,
    /// Where the key column is among the table's columns.
    key_at: usize,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").field("model", &self.plan.name).finish()
    }
}

fn kind(t: FieldType) -> Kind {
    match t {
        FieldType::Text => Kind::Text,
        FieldType::Bigint => Kind::Int,
        FieldType::Double => Kind::Float,
        FieldType::Boolean => Kind::Bool,
        FieldType::Date => Kind::Date,
        FieldType::Timestamp => Kind::DateTime,
        FieldType::Json => Kind::Json,
    }
}

/// The Arrow columns a webhook model's records are read into.
pub fn record_schema(plan: &SyncPlan) -> Option<(Vec<SfColumn>, SchemaRef)> {
    let w = plan.source.webhook.as_ref()?;
    let columns: Vec<SfColumn> = w
        .fields
        .iter()
        .map(|(name, t)| SfColumn {
            name: name.clone(),
            kind: kind(*t),
        })
        .collect();
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let f = Field::new(c.name.clone(), c.kind.data_type(), true);
            if c.kind == Kind::Json {
                f.with_metadata(std::collections::HashMap::from([(
                    crate::source::JSON_TEXT.to_string(),
                    "1".to_string(),
                )]))
            } else {
                f
            }
        })
        .collect();
    Some((columns, Arc::new(Schema::new(fields))))
}

impl Applier {
    /// Opens the model's table (created on the first batch that writes).
    pub async fn open(plan: &SyncPlan, project: &ProjectSpec, project_dir: &Path) -> Result<Applier, ApplyError> {
        let model = plan.name.clone();
        let (columns, schema) = record_schema(plan).ok_or_else(|| ApplyError::NotWebhook { model: model.clone() })?;
        let mapper = RowMapper::new(plan, schema.clone()).map_err(|missing| ApplyError::Mapping {
            model: model.clone(),
            why: format!("the records have no field {}", missing.join(", ")),
        })?;
        let table_columns = super::inbound::table_columns(plan, &schema).map_err(|e| ApplyError::Mapping {
            model: model.clone(),
            why: e.to_string(),
        })?;
        let spec = super::inbound::table_spec(plan, table_columns);
        let key_at = spec.columns.iter().position(|c| c.name == spec.key).unwrap_or(0);
        let connection = plan.destination.connection.clone();
        let conn: &ConnectionSpec = project
            .connections
            .get(&connection)
            .ok_or_else(|| ApplyError::NoConnection {
                model: model.clone(),
                connection: connection.clone(),
            })?;
        let writer = TableWriter::open(spec, conn, project_dir)
            .await
            .map_err(|e| ApplyError::Write {
                model: model.clone(),
                connection,
                source: Box::new(e),
            })?;
        Ok(Applier {
            plan: plan.clone(),
            writer,
            columns,
            schema,
            mapper,
            key_at,
        })
    }

    fn store_err(&self) -> impl Fn(StateError) -> ApplyError + '_ {
        |source| ApplyError::Store {
            model: self.plan.name.clone(),
            source,
        }
    }

    /// Applies up to `limit` pending events, oldest first. Zero events: nothing pending.
    pub async fn apply_batch(&mut self, store: &StateStore, limit: i64) -> Result<Applied, ApplyError> {
        let model = self.plan.name.clone();
        let pending = store.inbox_pending(&model, limit).await.map_err(self.store_err())?;
        let mut out = Applied {
            events: pending.len() as u64,
            oldest_received: pending.iter().map(|e| e.received).min(),
            ..Applied::default()
        };
        if pending.is_empty() {
            return Ok(out);
        }
        let mut settled: Vec<Settled> = Vec::with_capacity(pending.len());
        let (candidates, dead) = self.map_events(&pending);
        for (seq, reason) in dead {
            settled.push(Settled {
                seq,
                status: InboxStatus::Dead,
                reason: Some(reason),
                key: None,
            });
        }
        for e in &pending {
            if Action::parse(&e.action) == Some(Action::Ignore) {
                settled.push(Settled {
                    seq: e.seq,
                    status: InboxStatus::Ignored,
                    reason: None,
                    key: None,
                });
            }
        }
        // The newest event of each key in the batch; the others are superseded by it.
        let mut newest: HashMap<String, Candidate> = HashMap::with_capacity(candidates.len());
        // The newest of the upserts superseded in the batch, per key: what a soft delete
        // winning over them marks deleted when the table does not have the record yet
        // (their rows are moved here, not copied).
        let soft = self.plan.destination.on_deleted != Some(crate::config::model::OnDeleted::Hard);
        let mut upserts: HashMap<String, (i64, i64, TableRow)> = HashMap::new();
        let mut supersede = |c: Candidate, settled: &mut Vec<Settled>| {
            settled.push(Settled {
                seq: c.seq,
                status: InboxStatus::Superseded,
                reason: None,
                key: Some(c.key.clone()),
            });
            if soft && !c.delete && upserts.get(&c.key).is_none_or(|u| (u.0, u.1) < (c.event_time, c.seq)) {
                upserts.insert(c.key, (c.event_time, c.seq, c.row));
            }
        };
        for c in candidates {
            match newest.get(&c.key) {
                Some(n) if (n.event_time, n.seq) > (c.event_time, c.seq) => supersede(c, &mut settled),
                _ => {
                    if let Some(old) = newest.insert(c.key.clone(), c) {
                        supersede(old, &mut settled);
                    }
                }
            }
        }
        let keys: Vec<String> = newest.keys().cloned().collect();
        let versions = store.inbox_versions(&model, keys).await.map_err(self.store_err())?;
        let mut winners: Vec<Candidate> = Vec::with_capacity(newest.len());
        for (key, c) in newest {
            match versions.get(&key) {
                Some(v) if !v.is_older_than(c.event_time, c.seq) => settled.push(c.superseded()),
                _ => winners.push(c),
            }
        }
        winners.sort_by_key(|c| c.seq);
        // A soft delete carries only its key: the record's newest upsert of this batch (if
        // newer than what the table holds) is written first, so the row exists to be marked.
        let carried: Vec<TableRow> = winners
            .iter()
            .filter(|c| c.delete)
            .filter_map(|c| {
                let (t, seq, row) = upserts.remove(&c.key)?;
                let newer = versions.get(&c.key).is_none_or(|v| v.is_older_than(t, seq));
                newer.then_some(row)
            })
            .collect();
        // Write; a value the table cannot take makes its event a dead letter, and the rest
        // are written without it.
        let now = chrono::Utc::now();
        if !carried.is_empty() {
            match self.writer.write(carried, now).await {
                Ok(c) => out.written += c,
                // A value the table cannot take: the delete still applies, to no row.
                Err(TableError::Value { .. }) => {}
                Err(e) => return Err(self.write_err(e)),
            }
        }
        loop {
            if winners.is_empty() {
                break;
            }
            let rows: Vec<TableRow> = winners.iter().map(|c| c.row.clone()).collect();
            match self.writer.write(rows, now).await {
                Ok(c) => {
                    out.written += c;
                    break;
                }
                Err(TableError::Value {
                    key, column, reason, ..
                }) => {
                    let Some(i) = winners.iter().position(|c| c.key == key) else {
                        return Err(self.write_err(TableError::Value {
                            table: self.plan.destination.table.clone().unwrap_or_default(),
                            key,
                            column,
                            reason,
                        }));
                    };
                    let c = winners.remove(i);
                    settled.push(Settled {
                        seq: c.seq,
                        status: InboxStatus::Dead,
                        reason: Some(format!("column `{column}`: {reason}")),
                        key: Some(c.key),
                    });
                }
                Err(e) => return Err(self.write_err(e)),
            }
        }
        let mut new_versions = Vec::with_capacity(winners.len());
        for c in winners {
            new_versions.push((
                c.key.clone(),
                KeyVersion {
                    event_time: c.event_time,
                    seq: c.seq,
                    deleted: c.delete,
                },
            ));
            settled.push(Settled {
                seq: c.seq,
                status: InboxStatus::Applied,
                reason: None,
                key: Some(c.key),
            });
        }
        for s in &settled {
            match s.status {
                InboxStatus::Applied => out.applied += 1,
                InboxStatus::Superseded => out.superseded += 1,
                InboxStatus::Ignored => out.ignored += 1,
                InboxStatus::Dead => out.dead += 1,
                _ => {}
            }
        }
        let audit = self.audit_entry(&new_versions);
        store
            .inbox_settle(&model, settled, new_versions)
            .await
            .map_err(self.store_err())?;
        // The table is another system: the entry follows its commit.
        if let Some(entry) = audit {
            store.audit_append(entry).await.map_err(self.store_err())?;
        }
        Ok(out)
    }

    /// The audit entry of the events written to the table (none: no entry).
    fn audit_entry(&self, applied: &[(String, KeyVersion)]) -> Option<crate::audit::NewAudit> {
        if applied.is_empty() {
            return None;
        }
        let hasher = crate::audit::KeyHasher::from_env();
        let deletes = applied.iter().filter(|(_, v)| v.deleted).count();
        let d = &self.plan.destination;
        let mut e = crate::audit::NewAudit::new(crate::audit::ENGINE_ACTOR, crate::audit::Action::Write)
            .model(self.plan.name.clone())
            .detail(serde_json::json!({
                "source": "webhook", "deletes": deletes, "key_hash": hasher.scheme(),
            }));
        e.destination = Some(match d.table.as_deref() {
            Some(t) => format!("{}/{t}", d.connection),
            None => d.connection.clone(),
        });
        e.operation = Some(
            match (deletes, applied.len() - deletes) {
                (0, _) => "upsert",
                (_, 0) => "delete",
                _ => "upsert_delete",
            }
            .to_string(),
        );
        e.count = Some(applied.len() as i64);
        e.keys = hasher.hash_all(applied.iter().map(|(k, _)| k.as_str()));
        Some(e)
    }

    fn write_err(&self, e: TableError) -> ApplyError {
        ApplyError::Write {
            model: self.plan.name.clone(),
            connection: self.plan.destination.connection.clone(),
            source: Box::new(e),
        }
    }

    /// The upsert and delete events mapped to table rows, and the dead ones with why.
    fn map_events(&self, pending: &[InboxEvent]) -> (Vec<Candidate>, Vec<(i64, String)>) {
        let rules = &self.plan.source.webhook.as_ref().expect("a webhook plan").rules;
        let key_field = self.plan.destination.key_column.clone();
        let mut rows = Rows::new(
            &format!("webhook model `{}`", self.plan.name),
            &self.columns,
            self.schema.clone(),
            pending.len(),
        )
        .lenient(Some(key_field.as_str()));
        let mut dead = Vec::new();
        let pii = self.plan.pii_sources();
        let mut taken: Vec<&InboxEvent> = Vec::with_capacity(pending.len());
        for e in pending {
            match Action::parse(&e.action) {
                Some(Action::Ignore) => continue,
                Some(_) => {}
                None => {
                    dead.push((e.seq, format!("the stored action `{}` is not one ebb knows", e.action)));
                    continue;
                }
            }
            let v: serde_json::Value = match serde_json::from_str(&e.body) {
                Ok(v) => v,
                Err(err) => {
                    dead.push((e.seq, format!("the stored event is not JSON: {err}")));
                    continue;
                }
            };
            let Some(serde_json::Value::Object(record)) = rules.record.find(&v) else {
                dead.push((e.seq, format!("no record (a JSON object) at `{}`", rules.record.text)));
                continue;
            };
            match rows.push_json(record) {
                Ok(()) => taken.push(e),
                // (A `pii` field's value quoted in the reason is masked: dead letters are
                // shown by `ebb inbox`, the API and the status page.)
                Err(err) => dead.push((
                    e.seq,
                    crate::redact::mask_quoted(
                        &field_error(err),
                        &serde_json::Value::Object(record.clone()).to_string(),
                        &pii,
                    ),
                )),
            }
        }
        let mut out = Vec::with_capacity(taken.len());
        if taken.is_empty() {
            return (out, dead);
        }
        let batch = match rows.finish() {
            Ok(b) => b,
            Err(err) => {
                dead.extend(taken.iter().map(|e| (e.seq, err.to_string())));
                return (out, dead);
            }
        };
        let mut fields = Vec::new();
        for (row, e) in taken.into_iter().enumerate() {
            let delete = Action::parse(&e.action) == Some(Action::Delete);
            let mapped = self.mapper.key(&batch, row).and_then(|key| {
                self.mapper.map_row_into(&batch, row, &mut fields)?;
                Ok(key)
            });
            match mapped {
                Ok(key) => {
                    let mut values: Vec<Val> = fields.drain(..).map(|(_, v)| v).collect();
                    if delete {
                        // A delete carries the key alone: the row's other values stay (soft)
                        // or go with it (hard).
                        for (i, v) in values.iter_mut().enumerate() {
                            if i != self.key_at {
                                *v = Val::Null;
                            }
                        }
                    }
                    out.push(Candidate {
                        seq: e.seq,
                        key,
                        event_time: e.event_time.timestamp_micros(),
                        delete,
                        row: TableRow {
                            values,
                            deleted: delete,
                        },
                    });
                }
                Err(err) => dead.push((e.seq, err.message)),
            }
        }
        (out, dead)
    }

    /// Applies batches until nothing is pending (or `max_events` were taken); the total.
    pub async fn drain(
        &mut self,
        store: &StateStore,
        batch: i64,
        max_events: Option<u64>,
    ) -> Result<Applied, ApplyError> {
        let mut total = Applied::default();
        loop {
            let a = self.apply_batch(store, batch).await?;
            total += a;
            if a.events == 0 || max_events.is_some_and(|m| total.events >= m) {
                return Ok(total);
            }
        }
    }

    pub fn model(&self) -> &str {
        &self.plan.name
    }
}

/// A record's value that does not fit its field's type, said of the event alone
/// ("field `score`: 1.5 is not a whole number"; the reader's message numbers records of
/// the batch, which mean nothing to whoever reads a dead letter).
fn field_error(e: crate::source::SourceError) -> String {
    let text = match e {
        crate::source::SourceError::Query(m) => m,
        other => other.to_string(),
    };
    match text.find("field `") {
        Some(i) => text[i..].to_string(),
        None => text,
    }
}

/// An event mapped to a row, waiting to be written if it is its key's newest.
struct Candidate {
    seq: i64,
    key: String,
    /// Microseconds since the epoch.
    event_time: i64,
    delete: bool,
    row: TableRow,
}

impl Candidate {
    fn superseded(self) -> Settled {
        Settled {
            seq: self.seq,
            status: InboxStatus::Superseded,
            reason: None,
            key: Some(self.key),
        }
    }
}

impl super::run::Run<'_> {
    /// `ebb run` of a webhook model: applies every pending event of its inbox (the daemon
    /// does this continuously as events arrive).
    pub(super) async fn execute_webhook(&mut self) -> Result<(), super::RunError> {
        let store = self.cfg.store;
        let model = self.cfg.plan.name.clone();
        store.inbox_init().await?;
        if self.cfg.opts.dry_run {
            let c = store.inbox_counts(&model).await?;
            self.counts.read = c.pending as i64;
            self.notes.push(format!(
                "{} pending in the inbox; a real run applies them",
                super::plural(c.pending as i64, "event")
            ));
            return Ok(());
        }
        let mut applier = Applier::open(self.cfg.plan, self.cfg.project, self.cfg.project_dir).await?;
        let t = applier.drain(store, DEFAULT_BATCH, None).await?;
        self.counts.read = t.events as i64;
        self.counts.sent = t.applied as i64;
        self.counts.confirmed = t.applied as i64;
        self.counts.added = t.written.upserted as i64;
        self.counts.removed = t.written.deleted as i64;
        self.counts.unchanged = (t.written.skipped + t.superseded + t.ignored) as i64;
        self.counts.invalid = t.dead as i64;
        self.notes.push(format!(
            "{} from the inbox: {} applied, {} superseded by newer events, {} ignored, {} dead letters{}",
            super::plural(t.events as i64, "event"),
            t.applied,
            t.superseded,
            t.ignored,
            t.dead,
            if t.dead > 0 {
                format!(" (`ebb inbox {model}` lists them)")
            } else {
                String::new()
            }
        ));
        Ok(())
    }
}

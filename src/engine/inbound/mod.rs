//! The inbound run (CRM → warehouse table): the read, map, deliver and commit stages of
//! docs/architecture.md's inbound column, inside the shell [`super::run()`] shares with
//! outbound runs (lock, run record, heartbeat).
//!
//! Why it is this simple: the CRM says what changed (the cursor, `SystemModstamp`), the
//! table writer's upsert is idempotent and commits each batch in one transaction, so the
//! run needs no snapshot and no in-flight records. It reads the window ([`window`]),
//! writes every batch, and only when the whole stream ended cleanly and every write
//! committed does it move the watermark, to the window's upper bound (never to the newest
//! stamp seen: a record committed late with an older stamp is still ahead of it). A run
//! that fails anywhere leaves the watermark where it was; the rows it wrote stay, and the
//! next run writes them again to no effect.

pub mod window;

use super::error::RunError;
use super::run::{plural, Run};
use crate::config::project::ConnectionSpec;
use crate::config::Mode as ModelMode;
use crate::destination::table::types::ColumnType;
use crate::destination::table::{self, Column, TableRow, TableSpec, TableWriter, WriteCounts};
use crate::map::{column_index, RowMapper};
use crate::path::FieldPath;
use crate::plan::{SyncPlan, ValueSource};
use crate::source::hubspot::{self as hs, HubspotSource};
use crate::source::salesforce::{self as sf, Extract, SalesforceSource};
use crate::state::{RowErrorEntry, Watermark};
use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::time::Instant;
use window::Window;

/// Why an inbound run failed: every message names the model and the connection.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error(
        "model `{model}`: the source is not a Salesforce or HubSpot connection (`{connection}`); only their reads are built"
    )]
    NotCrm { model: String, connection: String },
    #[error("model `{model}`: reading `{object}` from `{connection}` ({kind}): {source}")]
    Read {
        model: String,
        object: String,
        connection: String,
        kind: &'static str,
        source: crate::source::SourceError,
    },
    #[error("model `{model}`: the records of `{object}` read from `{connection}` lack {what}")]
    Columns {
        model: String,
        object: String,
        connection: String,
        what: String,
    },
    #[error("model `{model}`: writing to `{connection}`: {source}")]
    Write {
        model: String,
        connection: String,
        source: Box<table::TableError>,
    },
    #[error("model `{model}`: mapping `{column}` to a table column: {why}")]
    Type { model: String, column: String, why: String },
}

/// The table's columns, in mapping order: the type of each source column (from the
/// reader's Arrow schema) after the mapping's transforms, or a constant's.
pub fn table_columns(plan: &SyncPlan, schema: &Schema) -> Result<Vec<Column>, InboundError> {
    let mut columns = Vec::with_capacity(plan.mappings.len());
    for m in &plan.mappings {
        let mut ty = match &m.value {
            ValueSource::Constant(v) => ColumnType::of_constant(v),
            ValueSource::Path(FieldPath::Simple { column, steps }) if steps.is_empty() => {
                let field =
                    column_index(schema, column)
                        .map(|i| schema.field(i))
                        .ok_or_else(|| InboundError::Type {
                            model: plan.name.clone(),
                            column: m.destination.clone(),
                            why: format!("the records read have no field `{column}`"),
                        })?;
                let metadata: std::collections::HashMap<String, String> = field
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                ColumnType::from_arrow(field.data_type(), &metadata).map_err(|why| InboundError::Type {
                    model: plan.name.clone(),
                    column: m.destination.clone(),
                    why: why.to_string(),
                })?
            }
            // A step into a value, or a JSONPath: whatever it finds, kept as JSON.
            ValueSource::Path(_) => ColumnType::Json,
        };
        for t in &m.transforms {
            ty = ty.after(t).map_err(|why| InboundError::Type {
                model: plan.name.clone(),
                column: m.destination.clone(),
                why: why.to_string(),
            })?;
        }
        columns.push(Column {
            name: m.destination.clone(),
            ty,
        });
    }
    Ok(columns)
}

/// The writer's spec of the plan's table.
pub fn table_spec(plan: &SyncPlan, columns: Vec<Column>) -> TableSpec {
    let d = &plan.destination;
    TableSpec {
        connection: d.connection.clone(),
        table: d.table.clone().unwrap_or_default(),
        key: d.key_field.clone(),
        mode: match d.mode {
            ModelMode::Append => table::Mode::Append,
            ModelMode::Mirror => table::Mode::Mirror,
            _ => table::Mode::Upsert,
        },
        on_deleted: match d.on_deleted {
            Some(crate::config::model::OnDeleted::Hard) => table::OnDeleted::Hard,
            _ => table::OnDeleted::Soft,
        },
        deleted_column: d
            .deleted_column
            .clone()
            .unwrap_or_else(|| table::DELETED_COLUMN.to_string()),
        version_column: d.version_column.clone(),
        columns,
        delete_by_key: plan.source.kind == crate::config::ConnectionType::Webhook,
    }
}

/// The newest value of a timestamp column in `batch`.
fn newest(batch: &RecordBatch, index: Option<usize>) -> Option<DateTime<Utc>> {
    let col = batch.column(index?);
    let micros = match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = col.as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>()?;
            arrow::compute::max(a)?
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = col.as_any().downcast_ref::<arrow::array::TimestampMillisecondArray>()?;
            arrow::compute::max(a)? * 1000
        }
        _ => return None,
    };
    DateTime::from_timestamp_micros(micros)
}

impl Run<'_> {
    /// The inbound run (module documentation).
    pub(super) async fn execute_inbound(&mut self) -> Result<(), RunError> {
        let plan = self.cfg.plan;
        let opts = self.cfg.opts;
        let model = plan.name.clone();
        let conn_name = plan.source.connection.clone();
        let object = plan.source.object.clone().unwrap_or_default();
        let read = plan.source.read.clone().ok_or_else(|| InboundError::NotCrm {
            model: model.clone(),
            connection: conn_name.clone(),
        })?;
        let conn_spec = match self.cfg.project.connections.get(&conn_name) {
            Some(c @ (ConnectionSpec::Salesforce(_) | ConnectionSpec::Hubspot(_))) => c,
            Some(_) => {
                return Err(InboundError::NotCrm {
                    model,
                    connection: conn_name,
                }
                .into())
            }
            None => return Err(RunError::NoConnection(conn_name)),
        };
        let kind = match conn_spec {
            ConnectionSpec::Hubspot(_) => "hubspot",
            _ => "salesforce",
        };
        let dest_name = plan.destination.connection.clone();
        if !self.cfg.project.connections.contains_key(&dest_name) {
            return Err(RunError::NoConnection(dest_name));
        }
        let read_err = |source| InboundError::Read {
            model: model.clone(),
            object: object.clone(),
            connection: conn_name.clone(),
            kind,
            source,
        };
        let write_err = |source| InboundError::Write {
            model: model.clone(),
            connection: dest_name.clone(),
            source: Box::new(source),
        };

        // The window.
        let run_start = Utc::now();
        let last = if read.cursor.is_some() {
            self.cfg.store.watermark(&model).await?
        } else {
            None
        };
        let mirror = plan.destination.mode == ModelMode::Mirror;
        let window = Window::of(&read, last.as_ref(), run_start, opts.full_resync || mirror);
        self.notes.push(format!("window {}", window.describe()));

        // The read.
        let phase = Instant::now();
        let batch_rows = (plan.destination.batch_size as usize).max(1);
        let reader = match conn_spec {
            ConnectionSpec::Hubspot(c) => Reader::Hubspot(
                HubspotSource::new(&conn_name, c).map_err(read_err)?,
                hs::Extract {
                    object: object.clone(),
                    fields: plan.source.fields.clone(),
                    cursor: read.cursor.clone(),
                    from: window.from,
                    to: window.to,
                    include_archived: true,
                    batch_rows,
                },
            ),
            ConnectionSpec::Salesforce(c) => Reader::Salesforce(
                SalesforceSource::new(&conn_name, c, self.cfg.project_dir).map_err(read_err)?,
                Extract {
                    object: object.clone(),
                    fields: plan.source.fields.clone(),
                    cursor: read.cursor.clone(),
                    from: window.from,
                    to: window.to,
                    include_deleted: true,
                    api: match read.api {
                        crate::config::model::ReadApi::Auto => sf::ReadApi::Auto,
                        crate::config::model::ReadApi::Rest => sf::ReadApi::Rest,
                        crate::config::model::ReadApi::Bulk => sf::ReadApi::Bulk,
                    },
                    batch_rows,
                },
            ),
            _ => unreachable!("matched above"),
        };
        let mut errors = Vec::new();
        let result = self.pull(&reader, &read, run_start, &mut errors).await;
        self.counts.api_calls = reader.calls() as i64;
        self.timings.push(("read_and_write", phase.elapsed()));
        let newest_loaded = match result {
            Ok(n) => n,
            Err(InboundFailure::Read(e)) => return Err(read_err(e).into()),
            Err(InboundFailure::Write(e)) => return Err(write_err(e).into()),
            Err(InboundFailure::Other(e)) => return Err(e),
        };
        self.record_invalid(errors).await?;
        if self.counts.invalid > 0 {
            self.notes.push(format!(
                "{} could not be mapped and {} not written: see `ebb errors {model}`",
                plural(self.counts.invalid, "row"),
                if self.counts.invalid == 1 { "was" } else { "were" }
            ));
        }
        if opts.dry_run {
            return Ok(());
        }

        // The watermark: the window's upper bound, now that every row of it is committed.
        if let Some(to) = window.to {
            let watermark = last.as_ref().map_or(to, |w| w.watermark.max(to));
            let w = Watermark {
                watermark,
                from: window.from,
                to,
                newest: match (newest_loaded, last.as_ref().and_then(|w| w.newest)) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                },
                run_id: self.cfg.run_id,
            };
            self.cfg.store.set_watermark(&model, &w).await?;
            self.notes.push(format!(
                "watermark {}",
                watermark.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        Ok(())
    }

    /// Reads the window and writes each batch; the newest cursor value loaded.
    async fn pull(
        &mut self,
        reader: &Reader,
        read: &crate::plan::InboundRead,
        run_start: DateTime<Utc>,
        errors: &mut Vec<RowErrorEntry>,
    ) -> Result<Option<DateTime<Utc>>, InboundFailure> {
        let plan = self.cfg.plan;
        let mut stream = reader.read().await.map_err(InboundFailure::Read)?;
        let schema = stream.schema();
        let mapper = RowMapper::new(plan, schema.clone()).map_err(|missing| {
            InboundFailure::Other(
                InboundError::Columns {
                    model: plan.name.clone(),
                    object: plan.source.object.clone().unwrap_or_default(),
                    connection: plan.source.connection.clone(),
                    what: missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                }
                .into(),
            )
        })?;
        let deleted_index = column_index(&schema, reader.deleted_field());
        let cursor_index = read.cursor.as_deref().and_then(|c| column_index(&schema, c));
        let columns = table_columns(plan, &schema).map_err(|e| InboundFailure::Other(e.into()))?;
        let mut writer = TableWriter::open(
            table_spec(plan, columns),
            self.cfg
                .project
                .connections
                .get(&plan.destination.connection)
                .expect("checked by the caller"),
            self.cfg.project_dir,
        )
        .await
        .map_err(InboundFailure::Write)?;
        let dry = self.cfg.opts.dry_run;
        if dry {
            if let table::TableCheck::Incompatible(why) = writer.check().await.map_err(InboundFailure::Write)? {
                self.notes.push(format!("a real run would fail: {why}"));
            }
        } else {
            writer.defer_key();
            writer.ensure().await.map_err(InboundFailure::Write)?;
        }
        let mirror = plan.destination.mode == ModelMode::Mirror;
        if mirror && !dry {
            writer.mirror_begin().await.map_err(InboundFailure::Write)?;
        }
        let mut newest_loaded: Option<DateTime<Utc>> = None;
        let mut spent = Spent::default();
        let mut totals = WriteCounts::default();
        let mut m = Mapping {
            mapper: &mapper,
            deleted_index,
            cursor_index,
            row_number: 0,
            fields: Vec::new(),
            hasher: crate::audit::KeyHasher::from_env(),
        };
        // Each batch is written while the next one is read and mapped: the table's write
        // runs on a blocking thread, the mapping here, so the two overlap on two cores.
        let mut next = match stream.next().await {
            Some(Ok(batch)) => Some(Ok(self.map_batch(&mut m, &batch, errors, &mut spent))),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        while let Some(mapped) = next.take() {
            if self.cfg.opts.stopping() {
                stream.cancel();
                return Err(InboundFailure::Other(RunError::StoppedReading));
            }
            if self.lost.is_some_and(|l| l.load(Ordering::SeqCst)) {
                stream.cancel();
                return Err(InboundFailure::Other(RunError::LockLost));
            }
            let (rows, keys, batch_newest) = mapped.map_err(InboundFailure::Read)?;
            let read_next = async {
                match stream.next().await {
                    Some(Ok(batch)) => Some(Ok(self.map_batch(&mut m, &batch, errors, &mut spent))),
                    Some(Err(e)) => Some(Err(e)),
                    None => None,
                }
            };
            if dry || rows.is_empty() {
                newest_loaded = newest_loaded.max(batch_newest);
                next = read_next.await;
                continue;
            }
            let sent = rows.len() as i64;
            let writing = Instant::now();
            let (written, following) = tokio::join!(writer.write(rows, run_start), read_next);
            spent.write += writing.elapsed();
            let c = written.map_err(InboundFailure::Write)?;
            // The table is another system: its commit and the audit entry cannot share a
            // transaction, so the entry follows the commit (a crash between them loses it;
            // the next run writes the rows again, and that is recorded).
            let op = plan.destination.mode.as_str();
            self.audit_table_write_op(op, keys.len() as i64, keys, &m.hasher)
                .await
                .map_err(InboundFailure::Other)?;
            self.counts.sent += sent;
            self.counts.confirmed += sent;
            self.cfg.progress.confirmed.fetch_add(sent as u64, Ordering::Relaxed);
            totals += c;
            self.apply_counts(totals);
            newest_loaded = newest_loaded.max(batch_newest);
            next = following;
        }
        if mirror && !dry {
            let writing = Instant::now();
            let ended = writer.mirror_end(run_start).await.map_err(InboundFailure::Write)?;
            totals += ended;
            spent.write += writing.elapsed();
            if ended.deleted > 0 {
                // Rows of records gone from the CRM: their keys are not read back.
                self.audit_table_write_op("delete", ended.deleted as i64, Vec::new(), &m.hasher)
                    .await
                    .map_err(InboundFailure::Other)?;
            }
            self.apply_counts(totals);
        }
        if !dry {
            let writing = Instant::now();
            writer.finish().await.map_err(InboundFailure::Write)?;
            spent.write += writing.elapsed();
        }
        // What the run spent mapping rows, and writing (while the next batch is read and
        // mapped); the rest of `read_and_write` is waiting for the CRM alone.
        self.timings.push(("map", spent.map));
        self.timings.push(("write", spent.write));
        Ok(newest_loaded)
    }

    /// Maps one batch read to table rows; rows that cannot be mapped are counted invalid
    /// and their errors kept. Also the newest cursor value of the batch.
    fn map_batch(
        &mut self,
        m: &mut Mapping<'_>,
        batch: &RecordBatch,
        errors: &mut Vec<RowErrorEntry>,
        spent: &mut Spent,
    ) -> (Vec<TableRow>, Vec<String>, Option<DateTime<Utc>>) {
        let mapping = Instant::now();
        let n = batch.num_rows();
        self.counts.read += n as i64;
        self.cfg.progress.read.fetch_add(n as u64, Ordering::Relaxed);
        let deleted = m
            .deleted_index
            .and_then(|i| batch.column(i).as_any().downcast_ref::<BooleanArray>());
        let mut rows = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        for row in 0..n {
            m.row_number += 1;
            let mapped = m.mapper.key(batch, row).and_then(|key| {
                m.mapper.map_row_into(batch, row, &mut m.fields)?;
                Ok(key)
            });
            match mapped {
                Ok(key) => {
                    keys.push(m.hasher.hash(&key));
                    rows.push(TableRow {
                        values: m.fields.drain(..).map(|(_, v)| v).collect(),
                        deleted: deleted.is_some_and(|d| d.is_valid(row) && d.value(row)),
                    })
                }
                Err(e) => {
                    let key = m
                        .mapper
                        .key(batch, row)
                        .unwrap_or_else(|_| format!("(row {})", m.row_number));
                    self.counts.invalid += 1;
                    errors.push(RowErrorEntry {
                        key,
                        run_id: self.cfg.run_id,
                        kind: "invalid".into(),
                        code: e.code.into(),
                        message: e.message,
                    });
                }
            }
        }
        let newest = newest(batch, m.cursor_index);
        spent.map += mapping.elapsed();
        (rows, keys, newest)
    }

    /// Records one batch written to the model's table in the audit log.
    async fn audit_table_write_op(
        &self,
        op: &str,
        count: i64,
        keys: Vec<String>,
        hasher: &crate::audit::KeyHasher,
    ) -> Result<(), RunError> {
        use crate::audit::{Action, NewAudit, ENGINE_ACTOR};
        let d = &self.cfg.plan.destination;
        let mut e = NewAudit::new(ENGINE_ACTOR, Action::Write)
            .model(self.cfg.plan.name.clone())
            .run(self.cfg.run_id)
            .detail(serde_json::json!({ "key_hash": hasher.scheme() }));
        e.destination = Some(match d.table.as_deref() {
            Some(t) => format!("{}/{t}", d.connection),
            None => d.connection.clone(),
        });
        e.operation = Some(op.to_string());
        e.count = Some(count);
        e.keys = keys;
        Ok(self.cfg.store.audit_append(e).await?)
    }

    /// The writer's counts as the run's (docs/state.md, "Inbound models").
    fn apply_counts(&mut self, c: WriteCounts) {
        self.counts.added = (c.upserted + c.appended) as i64;
        self.counts.removed = c.deleted as i64;
        self.counts.unchanged = c.skipped as i64;
    }

    /// The invalid rows' errors, replacing earlier runs' (as outbound: `ebb errors`).
    async fn record_invalid(&mut self, errors: Vec<RowErrorEntry>) -> Result<(), RunError> {
        self.replace_invalid(errors).await
    }
}

/// The CRM read of a run, with what it reads.
enum Reader {
    Salesforce(SalesforceSource, Extract),
    Hubspot(HubspotSource, hs::Extract),
}

impl Reader {
    async fn read(&self) -> Result<crate::source::BatchStream, crate::source::SourceError> {
        match self {
            Reader::Salesforce(s, e) => s.read(e).await,
            Reader::Hubspot(s, e) => s.read(e).await,
        }
    }

    fn calls(&self) -> u64 {
        match self {
            Reader::Salesforce(s, _) => s.calls(),
            Reader::Hubspot(s, _) => s.calls(),
        }
    }

    /// The field saying a record is deleted.
    fn deleted_field(&self) -> &'static str {
        match self {
            Reader::Salesforce(..) => "IsDeleted",
            Reader::Hubspot(..) => hs::ARCHIVED_FIELD,
        }
    }
}

/// What mapping a batch needs besides the batch: the mapper, where the deleted flag and
/// the cursor are, the rows mapped so far, a buffer for one row's fields.
struct Mapping<'a> {
    mapper: &'a RowMapper,
    deleted_index: Option<usize>,
    cursor_index: Option<usize>,
    row_number: u64,
    fields: Vec<(&'a str, crate::map::value::Val)>,
    /// Hashes the keys of the rows written, for the audit log.
    hasher: crate::audit::KeyHasher,
}

/// Time [`Run::pull`] spent on its own work, for the run's phase timings.
#[derive(Default)]
struct Spent {
    map: std::time::Duration,
    write: std::time::Duration,
}

/// Where [`Run::pull`] failed: the caller names the model and the connection.
enum InboundFailure {
    Read(crate::source::SourceError),
    Write(table::TableError),
    Other(RunError),
}

//! `SyncPlan`: what a run executes, compiled from a model and the project's connections.
//!
//! Compiling ([`compile`]) resolves connections, checks the query and the mappings, parses
//! paths, transforms and the schedule, and reports every problem as a diagnostic; it does
//! no IO. A plan is only built from a model without errors, so everything here is
//! already known to be consistent.

pub mod compile;
mod explain;

pub use explain::{explain, explain_json};

use crate::config::model::{OnDeleted, ReadApi, SalesforceApi};
use crate::config::{ConnectionType, Mode, OnRemoved};
use crate::diagnostics::Span;
use crate::path::FieldPath;
use crate::schedule::Schedule;
use crate::transform::Transform;
use std::path::PathBuf;

/// A compiled model.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub name: String,
    pub description: Option<String>,
    /// The model file it came from.
    pub file: PathBuf,
    pub source: SourcePlan,
    pub destination: DestinationPlan,
    pub mappings: Vec<MappingPlan>,
    pub schedule: Option<Schedule>,
    pub guard: Guard,
    /// Two-way fields and their conflict policy (outbound models into a CRM).
    pub conflicts: Option<ConflictPlan>,
    /// Lag thresholds of the model's health.
    pub health: Health,
    /// Where the parts of the model are written, for diagnostics found later (e.g. by
    /// `validate --connect`).
    pub spans: PlanSpans,
}

/// Which way a model syncs, for the engine to pick its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Warehouse rows into a CRM or another destination (snapshot diff, batched delivery).
    Outbound,
    /// CRM records into a warehouse table (windowed reads by a cursor, watermark).
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl SyncPlan {
    /// Inbound when the source is a CRM (Salesforce, HubSpot) or a webhook, outbound
    /// otherwise.
    pub fn direction(&self) -> Direction {
        if self.source.kind.is_crm() || self.source.kind == ConnectionType::Webhook {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }
}

/// Positions in the model file.
#[derive(Debug, Clone)]
pub struct PlanSpans {
    /// The source's `connection` (or `type`) value.
    pub source: Span,
    /// The source's `query` value.
    pub query: Span,
    /// The destination's `unique_identifier` value.
    pub key: Span,
    /// The destination's `object` (or `table`, or `type`) value.
    pub object: Span,
    /// The destination's `external_id_field` value, or `unique_identifier` without one.
    pub key_field: Span,
    /// The destination's `mode` value (or the key `destination` when it is left out).
    pub mode: Span,
}

/// Where rows are read.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// Name of the connection in `ebb.yaml`.
    pub connection: String,
    pub kind: ConnectionType,
    /// Warehouse sources.
    pub query: Option<String>,
    /// CRM sources: the object read.
    pub object: Option<String>,
    /// CRM sources: every field read, in order: `fields` (or the mappings' source fields),
    /// then `Id`, `IsDeleted` and the cursor when they were missing.
    pub fields: Vec<String>,
    /// CRM sources: the fields of `fields` that ebb added (not written in the model).
    pub added_fields: Vec<String>,
    /// CRM sources: `incremental` as written (`None` when unset or `off`).
    pub incremental: Option<String>,
    /// CRM sources: how each run is read; `None` for warehouse sources.
    pub read: Option<InboundRead>,
    /// The columns the query selects, when statically known.
    pub columns: Option<Vec<String>>,
    /// Webhook sources: how events are read, and the record's fields with their types.
    pub webhook: Option<WebhookRead>,
}

/// How a webhook model reads the events it receives.
#[derive(Debug, Clone)]
pub struct WebhookRead {
    pub rules: crate::webhook::EventRules,
    /// The record fields read (`fields`, or the mappings' source fields), with their types
    /// (`types`; text when not listed).
    pub fields: Vec<(String, crate::config::model::FieldType)>,
}

/// How a CRM source is read on each run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRead {
    /// The cursor field (`SystemModstamp` for `LastModifiedDate` or unset), or `None` for
    /// a full read every run (`incremental: off`).
    pub cursor: Option<String>,
    /// The cursor is `SystemModstamp` in place of `LastModifiedDate` (or of nothing).
    pub cursor_defaulted: bool,
    /// A run reads `cursor >= watermark - lookback` …
    pub lookback: std::time::Duration,
    /// … `AND cursor < run_start - settle`.
    pub settle: std::time::Duration,
    /// REST query below the connection's `bulk_threshold` (`bulk_threshold` here), Bulk
    /// API 2.0 at or above it, or one of them always.
    pub api: ReadApi,
    /// The connection's `bulk_threshold` (Salesforce; the default when unset).
    pub bulk_threshold: u64,
}

/// Default `lookback` of an inbound source.
pub const DEFAULT_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(600);
/// Default `settle` of an inbound source.
pub const DEFAULT_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);
/// The column a soft delete sets when `IsDeleted` is not mapped.
pub const DEFAULT_DELETED_COLUMN: &str = "is_deleted";

/// Where rows are written.
#[derive(Debug, Clone)]
pub struct DestinationPlan {
    pub connection: String,
    pub kind: ConnectionType,
    /// CRM object or warehouse table.
    pub object: Option<String>,
    pub table: Option<String>,
    pub mode: Mode,
    /// The source column identifying a row (`unique_identifier`).
    pub key_column: String,
    /// The destination field identifying a record.
    pub key_field: String,
    /// Salesforce only.
    pub api: Option<SalesforceApi>,
    pub on_removed: OnRemoved,
    pub batch_size: u32,
    /// Table destinations fed by a CRM: what becomes of deleted records. `None` otherwise.
    pub on_deleted: Option<OnDeleted>,
    /// With `on_deleted: soft`: the column set true on a deleted record (where `IsDeleted`
    /// is mapped, else `is_deleted`).
    pub deleted_column: Option<String>,
    /// `deleted_column` is not mapped: the writer adds it to the table.
    pub deleted_column_added: bool,
    /// `mode: append` of an inbound table: the column the cursor is mapped to, which tells
    /// the versions of a record apart (a replayed version adds no row).
    pub version_column: Option<String>,
}

/// One destination field and how its value is made.
#[derive(Debug, Clone)]
pub struct MappingPlan {
    pub destination: String,
    pub value: ValueSource,
    pub transforms: Vec<Transform>,
    /// Where the mapping's `source` (or `constant`) is written.
    pub source_span: Span,
    /// Where each transform is written.
    pub transform_spans: Vec<Span>,
    /// Where the mapping's `destination` is written.
    pub destination_span: Span,
    /// `pii: true`: its values are masked wherever ebb shows rows.
    pub pii: bool,
}

impl SyncPlan {
    /// The destination fields marked `pii: true`.
    pub fn pii_fields(&self) -> Vec<&str> {
        self.mappings
            .iter()
            .filter(|m| m.pii)
            .map(|m| m.destination.as_str())
            .collect()
    }

    /// The source columns read by mappings marked `pii: true` (a webhook's record fields,
    /// an inbound object's fields).
    pub fn pii_sources(&self) -> Vec<&str> {
        self.mappings
            .iter()
            .filter(|m| m.pii)
            .filter_map(|m| match &m.value {
                ValueSource::Path(p) => p.column(),
                ValueSource::Constant(_) => None,
            })
            .collect()
    }
}

/// Where a mapped value comes from.
#[derive(Debug, Clone)]
pub enum ValueSource {
    Path(FieldPath),
    Constant(serde_json::Value),
}

/// Lag thresholds: past `warning` a model is WARNING, past `critical` CRITICAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub warning: std::time::Duration,
    pub critical: std::time::Duration,
}

impl Health {
    /// The seed's defaults: inbound 30 and 60 minutes, outbound 60 and 120.
    pub fn default_for(direction: Direction) -> Health {
        let m = |n: u64| std::time::Duration::from_secs(n * 60);
        match direction {
            Direction::Inbound => Health {
                warning: m(30),
                critical: m(60),
            },
            Direction::Outbound => Health {
                warning: m(60),
                critical: m(120),
            },
        }
    }

    /// `HEALTHY`, `WARNING` or `CRITICAL` for a lag in minutes (`UNKNOWN` without one).
    pub fn level(&self, lag_minutes: Option<f64>) -> &'static str {
        match lag_minutes {
            None => "UNKNOWN",
            Some(l) if l * 60.0 > self.critical.as_secs_f64() => "CRITICAL",
            Some(l) if l * 60.0 > self.warning.as_secs_f64() => "WARNING",
            Some(_) => "HEALTHY",
        }
    }
}

/// The destination field under which the engine carries a row's modification time
/// (`conflicts.source_modified`) from the diff to the conflict check; it is never sent.
pub const MODIFIED_FIELD: &str = "$ebb_modified";

/// Two-way fields of an outbound model and how their conflicts are decided
/// (docs/conflicts.md).
#[derive(Debug, Clone)]
pub struct ConflictPlan {
    pub policy: crate::config::model::ConflictPolicy,
    /// The two-way destination fields, in mapping order.
    pub fields: Vec<String>,
    /// `fields` was left out: every mapped field but the key.
    pub fields_defaulted: bool,
    /// The source column of the row's modification time.
    pub source_modified: Option<String>,
    /// The CRM field of the record's modification time.
    pub destination_modified: String,
    /// The inbound model named by `crm_state`, as written.
    pub crm_state_model: Option<String>,
    /// Where `crm_state` reads the CRM's values; set when the project's models are linked
    /// (`plan::compile::conflicts::link`).
    pub crm_state: Option<CrmState>,
    /// Where `crm_state` is written in the model file.
    pub crm_state_span: Option<Span>,
    /// The inbound model's table a person's `--take crm` is written back to: the
    /// `crm_state` model's, else the one inbound model of the object that maps the key
    /// field (set when the models are linked); only the fields it maps.
    pub write_back: Option<CrmState>,
    /// Where `source_modified` and `destination_modified` are written (else `conflicts`).
    pub source_modified_span: Span,
    pub destination_modified_span: Span,
}

/// An inbound model's table read as the CRM's current values.
#[derive(Debug, Clone)]
pub struct CrmState {
    pub model: String,
    /// The table's connection and the table.
    pub connection: String,
    pub table: String,
    /// The column holding the outbound model's key field.
    pub key_column: String,
    /// (two-way field, column) for every two-way field.
    pub columns: Vec<(String, String)>,
    /// The column of `destination_modified`.
    pub modified_column: Option<String>,
    /// The column set on a soft-deleted record.
    pub deleted_column: Option<String>,
}

/// Mass-change limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guard {
    pub max_change_ratio: Option<f64>,
    /// Deletes and clears a run may make.
    pub max_deletes: Option<u64>,
    /// Deletes and clears a run may make, as a share of the rows the destination confirmed.
    pub max_delete_ratio: Option<f64>,
    /// `max_deletes` is ebb's default, not written in the model.
    pub default_max_deletes: bool,
    /// `max_delete_ratio` is ebb's default, not written in the model.
    pub default_max_delete_ratio: bool,
}

/// The deletes a run of a model that deletes or clears the records of removed rows may
/// make without consent (`guard: {max_deletes: …}`, or `ebb run --force`).
pub const DEFAULT_MAX_DELETES: u64 = 10_000;
/// The share of the confirmed rows such a run may delete or clear without consent.
pub const DEFAULT_MAX_DELETE_RATIO: f64 = 0.5;

impl Guard {
    /// The limits of a model's `guard:`, with the defaults for a model that deletes or
    /// clears the records of rows that leave it (`removes`).
    pub fn new(spec: Option<&crate::config::model::GuardSpec>, removes: bool) -> Guard {
        use crate::config::model::{DeleteLimit, DeleteRatio};
        let (deletes, ratio) = match spec {
            Some(g) => (g.max_deletes, g.max_delete_ratio),
            None => (None, None),
        };
        let (max_deletes, default_max_deletes) = match deletes {
            Some(DeleteLimit::Records(n)) => (Some(n), false),
            Some(DeleteLimit::Off(_)) => (None, false),
            None if removes => (Some(DEFAULT_MAX_DELETES), true),
            None => (None, false),
        };
        let (max_delete_ratio, default_max_delete_ratio) = match ratio {
            Some(DeleteRatio::Share(r)) => (Some(r), false),
            Some(DeleteRatio::Off(_)) => (None, false),
            None if removes => (Some(DEFAULT_MAX_DELETE_RATIO), true),
            None => (None, false),
        };
        Guard {
            max_change_ratio: spec.and_then(|g| g.max_change_ratio),
            max_deletes,
            max_delete_ratio,
            default_max_deletes,
            default_max_delete_ratio,
        }
    }

    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.max_change_ratio.is_some() || self.max_deletes.is_some() || self.max_delete_ratio.is_some()
    }

    /// The limits as `ebb plan` shows them, e.g. `max_deletes 10000 (default)`.
    pub fn describe(&self) -> Vec<String> {
        let default = |d: bool| if d { " (default)" } else { "" };
        let mut parts = Vec::new();
        if let Some(r) = self.max_change_ratio {
            parts.push(format!("max_change_ratio {r}"));
        }
        if let Some(n) = self.max_deletes {
            parts.push(format!("max_deletes {n}{}", default(self.default_max_deletes)));
        }
        if let Some(r) = self.max_delete_ratio {
            parts.push(format!(
                "max_delete_ratio {r}{}",
                default(self.default_max_delete_ratio)
            ));
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_thresholds_by_direction() {
        let inbound = Health::default_for(Direction::Inbound);
        assert_eq!(inbound.level(Some(30.0)), "HEALTHY");
        assert_eq!(inbound.level(Some(31.0)), "WARNING");
        assert_eq!(inbound.level(Some(61.0)), "CRITICAL");
        let outbound = Health::default_for(Direction::Outbound);
        assert_eq!(outbound.level(Some(61.0)), "WARNING");
        assert_eq!(outbound.level(Some(121.0)), "CRITICAL");
        assert_eq!(outbound.level(None), "UNKNOWN");
    }
}

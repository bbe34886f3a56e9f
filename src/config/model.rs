//! `ModelSpec`: a model file as written (`models/*.yaml`), in its serde form.
//!
//! These types are the format: the JSON schema in `schemas/model.schema.json` is generated
//! from them, so every field's doc comment is what an analyst sees in the editor. They do
//! no validation beyond shape; `validate` checks meaning and `compile` builds the plan.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::conflicts::{ConflictPolicy, ConflictsSpec};

/// A model file: one or more models.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ebb model file")]
pub struct ModelFile {
    /// Version of the model file format. Only `1` exists; may be left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1))]
    pub version: Option<u32>,
    /// The models this file defines. Names are unique across the whole project.
    pub models: Vec<ModelSpec>,
}

/// One sync: which rows to read, where they go and how fields map.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Unique name of the model in the project: lowercase letters, digits and `_`,
    /// starting with a letter. Used on the command line (`ebb run NAME`) and in the state store.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"), length(max = 63))]
    pub name: String,
    /// What the model is for, shown by `ebb plan` and `ebb status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the rows come from: a warehouse query, or a CRM object for inbound syncs.
    pub source: SourceSpec,
    /// Where the rows go and how they are matched to existing records.
    pub destination: DestinationSpec,
    /// How source columns become destination fields, in order.
    pub mappings: Vec<MappingSpec>,
    /// When the daemon runs the model. Without a schedule the model runs only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Safety limits checked before anything is sent. Off unless set, except for models
    /// that delete or clear records: see `max_deletes` and `max_delete_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardSpec>,
    /// Lag thresholds of the model's health (`ebb status`, the API, metrics, alerts):
    /// `{warning: 30m, critical: 1h}`. Default: inbound 30m and 60m, outbound 60m and 120m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::config::alerts::HealthSpec>,
    /// Outbound models into a CRM: fields that also flow back (the CRM can change them),
    /// and who wins when both sides changed one since ebb last confirmed it
    /// (docs/conflicts.md). Without it, the warehouse's value is written (`warehouse_wins`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictsSpec>,
}

/// Kinds of connection, as written in `type:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    /// Embedded DuckDB database file (the default warehouse).
    Duckdb,
    /// PostgreSQL database.
    Postgres,
    /// Snowflake, through the SQL API v2 with key-pair authentication.
    Snowflake,
    /// Salesforce org (REST, sObject Collections and Bulk API 2.0).
    Salesforce,
    /// HubSpot CRM v3 objects.
    Hubspot,
    /// Generic JSON webhook: batches of records POSTed to a URL.
    Http,
    /// JSON Lines files, one per run.
    File,
    /// Signed webhooks a CRM sends to `ebb daemon` (`POST /webhooks/{model}`): a source.
    Webhook,
}

impl ConnectionType {
    pub const ALL: [ConnectionType; 8] = [
        ConnectionType::Duckdb,
        ConnectionType::Postgres,
        ConnectionType::Snowflake,
        ConnectionType::Salesforce,
        ConnectionType::Hubspot,
        ConnectionType::Http,
        ConnectionType::File,
        ConnectionType::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Duckdb => "duckdb",
            ConnectionType::Postgres => "postgres",
            ConnectionType::Snowflake => "snowflake",
            ConnectionType::Salesforce => "salesforce",
            ConnectionType::Hubspot => "hubspot",
            ConnectionType::Http => "http",
            ConnectionType::File => "file",
            ConnectionType::Webhook => "webhook",
        }
    }

    /// A SQL warehouse: read with `query`, written into a `table`.
    pub fn is_warehouse(self) -> bool {
        matches!(
            self,
            ConnectionType::Duckdb | ConnectionType::Postgres | ConnectionType::Snowflake
        )
    }

    /// A CRM: read by `object` and `fields`, written by `object`.
    pub fn is_crm(self) -> bool {
        matches!(self, ConnectionType::Salesforce | ConnectionType::Hubspot)
    }

    pub fn can_be_source(self) -> bool {
        self.is_warehouse() || self.is_crm() || self == ConnectionType::Webhook
    }

    /// Every type but `webhook` (events ebb receives): a Snowflake table validates, and
    /// `ebb run` says its writer is not built yet.
    pub fn can_be_destination(self) -> bool {
        self != ConnectionType::Webhook
    }
}

impl std::fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a model's rows come from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Type of the source. Without `connection`, the project's one connection of this type is used.
    #[serde(rename = "type")]
    pub kind: ConnectionType,
    /// Name of a connection in `ebb.yaml`; needed when several connections have this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Warehouse sources: the SQL query whose rows are synced, in the warehouse's dialect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// CRM sources (inbound): the object to read, e.g. `Contact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// CRM sources (inbound): the fields to read. Default: the mappings' source fields.
    /// `Id`, `IsDeleted` and the cursor field are always read (added when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// CRM sources (inbound): the cursor field each run reads changes by, or `off` to read
    /// every record on every run (what `mode: mirror` needs). Default, and for
    /// `LastModifiedDate`: `SystemModstamp` (indexed, and it moves on system updates too).
    /// Another field is used as written, e.g. `CreatedDate` for an append-only object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// CRM sources (inbound): how far before the watermark each run starts reading, so
    /// records committed late with an older stamp are not missed: `<n>s`, `<n>m`, `<n>h`
    /// or `<n>d`. Default: `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
    /// CRM sources (inbound): how long before the run's start each run stops reading, so
    /// records still being committed are read by the next run: `<n>s`, `<n>m`, `<n>h` or
    /// `<n>d`. Default: `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    /// CRM sources (inbound): which API reads the records. Default: `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ReadApi>,
    /// Webhook sources: what each event type does, e.g. `customer.created: upsert`,
    /// `customer.deleted: delete`, `customer.viewed: ignore`. An event of a type not listed
    /// is refused (400) and kept as a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<BTreeMap<String, EventAction>>,
    /// Webhook sources: where the event type is in an event. Default: `$.type`, else
    /// `$.event_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Webhook sources: where the event's unique id is, e.g. `$.eventId` (HubSpot). Default:
    /// the signed message id (`webhook-id` of Standard Webhooks), else a hash of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Webhook sources: where the time the change happened is (RFC 3339, or Unix seconds
    /// or milliseconds), e.g. `$.data.modified_date`. Events of a record are applied in this
    /// order, whatever their arrival order. Default: the signed timestamp, else the time
    /// of receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Webhook sources: where the record is in an event. Default: `$.data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Webhook sources: the type of record fields that are not text, e.g.
    /// `modified_date: timestamp`, `score: double`. A field not listed is text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<BTreeMap<String, FieldType>>,
}

/// What an event type of a webhook source does to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventAction {
    /// The record is inserted, or replaces the row of its key.
    Upsert,
    /// The row of the record's key is deleted (or marked deleted, `on_deleted: soft`).
    Delete,
    /// Accepted (202) and kept, but changes nothing.
    Ignore,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Upsert => "upsert",
            EventAction::Delete => "delete",
            EventAction::Ignore => "ignore",
        }
    }

    pub fn parse(s: &str) -> Option<EventAction> {
        match s {
            "upsert" => Some(EventAction::Upsert),
            "delete" => Some(EventAction::Delete),
            "ignore" => Some(EventAction::Ignore),
            _ => None,
        }
    }
}

/// The type of a field of a webhook record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text (numbers and booleans are taken as their text).
    Text,
    /// A whole number.
    Bigint,
    /// A floating-point number.
    Double,
    /// `true` or `false`.
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// An instant: RFC 3339 text, or Unix seconds or milliseconds.
    Timestamp,
    /// Any JSON value, kept as JSON.
    Json,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Bigint => "bigint",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Timestamp => "timestamp",
            FieldType::Json => "json",
        }
    }
}

/// The cursor of an inbound read: a field, or `off`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Incremental {
    /// Every run reads every record (a full read).
    Off(Off),
    /// The cursor field, e.g. `SystemModstamp` or `CreatedDate`.
    Field(String),
}

/// Which API reads the records of a CRM source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadApi {
    /// REST query for reads below the connection's `bulk_threshold` records, Bulk API 2.0
    /// query jobs at or above it.
    Auto,
    /// Always REST query (`queryAll`, paged by `nextRecordsUrl`).
    Rest,
    /// Always Bulk API 2.0 query jobs (`queryAll`, CSV).
    Bulk,
}

impl ReadApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadApi::Auto => "auto",
            ReadApi::Rest => "rest",
            ReadApi::Bulk => "bulk",
        }
    }
}

/// What an inbound sync does with records deleted in the CRM (`IsDeleted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDeleted {
    /// The row stays, with its deleted column (where `IsDeleted` is mapped, else
    /// `is_deleted`, added) set to true.
    Soft,
    /// The row is deleted from the table.
    Hard,
}

impl OnDeleted {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDeleted::Soft => "soft",
            OnDeleted::Hard => "hard",
        }
    }
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Create records that do not exist, update those that do (matched by key).
    Upsert,
    /// Only update existing records; rows without a match are rejected.
    Update,
    /// Only create records.
    Insert,
    /// Upsert, and delete the records of rows that leave the model.
    Mirror,
    /// Delete the destination records of the model's rows.
    Delete,
    /// Table destinations: every version of a record, one row each; a replayed window
    /// adds no row.
    Append,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Upsert => "upsert",
            Mode::Update => "update",
            Mode::Insert => "insert",
            Mode::Mirror => "mirror",
            Mode::Delete => "delete",
            Mode::Append => "append",
        }
    }
}

/// What happens at the destination to rows that leave the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnRemoved {
    /// Leave the record as it is.
    Ignore,
    /// Delete the record.
    Delete,
    /// Set every mapped field of the record to null.
    Clear,
}

impl OnRemoved {
    pub fn as_str(self) -> &'static str {
        match self {
            OnRemoved::Ignore => "ignore",
            OnRemoved::Delete => "delete",
            OnRemoved::Clear => "clear",
        }
    }
}

/// Which Salesforce API carries the writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SalesforceApi {
    /// sObject Collections for small change sets, Bulk API 2.0 above the connection's threshold.
    Auto,
    /// Always sObject Collections (200 records per call, synchronous).
    Collections,
    /// Always Bulk API 2.0 (asynchronous CSV jobs).
    Bulk,
}

impl SalesforceApi {
    pub fn as_str(self) -> &'static str {
        match self {
            SalesforceApi::Auto => "auto",
            SalesforceApi::Collections => "collections",
            SalesforceApi::Bulk => "bulk",
        }
    }
}

/// Where a model's rows go.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Type of the destination. Without `connection`, the project's one connection of this type is used.
    #[serde(rename = "type")]
    pub kind: ConnectionType,
    /// Name of a connection in `ebb.yaml`; needed when several connections have this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// CRM destinations: the object written, e.g. `Contact` (Salesforce) or `contacts` (HubSpot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Warehouse destinations (inbound): the table written, e.g. `raw.crm_contacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// How rows are written: `upsert`, `update`, `insert`, `mirror` or `delete` for CRM and
    /// other destinations; `upsert`, `append` or `mirror` for tables. Default: `upsert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The source column (inbound: the CRM field, e.g. `Id`) that identifies a row. Rows
    /// with a null or repeated value are rejected as invalid and never sent. A table's key
    /// column is where this is mapped.
    pub unique_identifier: String,
    /// The destination field that identifies a record. Default: the field the
    /// `unique_identifier` column is mapped to, else `Id` (Salesforce). Salesforce cannot
    /// upsert by record Id: with `Id`, rows are updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_field: Option<String>,
    /// Salesforce: which API writes the rows. Default: `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<SalesforceApi>,
    /// What happens to records whose rows leave the model. Default: `ignore`
    /// (`delete` for `mode: mirror`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_removed: Option<OnRemoved>,
    /// Table destinations of an inbound sync: what becomes of records deleted in the CRM.
    /// Default: `soft`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_deleted: Option<OnDeleted>,
    /// Records per request. Default: the destination's maximum (Salesforce 200, HubSpot 100,
    /// `http` the connection's `batch_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: Option<u32>,
}

/// One field of the destination record.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// The source column, a dotted path into a JSON column (`scores.upsell`) or a JSONPath
    /// whose `$` is the row (`$.scores.history[0]`). Exclusive with `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A fixed value sent for every row instead of a column. Exclusive with `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<serde_json::Value>,
    /// The destination field (CRM field API name, or table column for inbound syncs).
    pub destination: String,
    /// Transform(s) applied in order: `lower`, `upper`, `initcap`, `trim`, `phone`,
    /// `parse_json`, `sha256`, `round(n)`, `scale(from_min, from_max, to_min, to_max)`,
    /// `date(format)`, `truncate(n)`, `default(value)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transforms>,
    /// The field holds personal data: its values are masked (`j***@x.com`) wherever ebb
    /// shows rows (`ebb preview` unless `--show-pii`, dry-run samples, `ebb demo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<bool>,
}

/// One transform or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Transforms {
    /// A single transform, e.g. `round(2)`.
    One(String),
    /// Transforms applied in order, e.g. `[trim, lower]`.
    Many(Vec<String>),
}

impl Transforms {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Transforms::One(s) => std::slice::from_ref(s),
            Transforms::Many(v) => v,
        }
    }
}

/// When the model runs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Run every interval: `hourly`, `daily`, `weekly`, or `<n>s`, `<n>m`, `<n>h`, `<n>d`
    /// (e.g. `15m`). Exclusive with `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Run at the times of a 5-field cron expression (`minute hour day month weekday`,
    /// e.g. `0 6 * * MON-FRI`). Exclusive with `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA timezone the schedule is read in, e.g. `Europe/Berlin`. Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Limits that refuse a run before anything is sent (`ebb run --force` overrides). The
/// first sync is exempt. A model that deletes or clears the records of rows that leave it
/// (`mode: mirror`, `on_removed: delete` or `clear`) is guarded by default: a run that
/// would delete or clear more than 10000 records, or more than half of the rows the
/// destination has confirmed, is refused. `ebb plan` shows the limits in force.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// Refuse a run whose (changed + removed) rows exceed this share of the rows the
    /// destination has confirmed, e.g. `0.5`. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_change_ratio: Option<f64>,
    /// Refuse a run that would delete (or clear) more records than this, or `off`.
    /// Default: 10000 for a model that deletes or clears the records of rows that leave it,
    /// off otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deletes: Option<DeleteLimit>,
    /// Refuse a run that would delete (or clear) more than this share of the rows the
    /// destination has confirmed, e.g. `0.5`, or `off`. Default: 0.5 for a model that
    /// deletes or clears the records of rows that leave it, off otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete_ratio: Option<DeleteRatio>,
}

/// A number of records, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DeleteLimit {
    /// At most this many records.
    Records(u64),
    /// No limit.
    Off(Off),
}

/// A share of the confirmed rows from 0 to 1, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DeleteRatio {
    /// At most this share, e.g. `0.5`.
    Share(#[schemars(range(min = 0.0, max = 1.0))] f64),
    /// No limit.
    Off(Off),
}

/// `off`: the limit does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Off {
    /// The limit does not apply.
    Off,
}

/// Headers of an `http` connection, name to value.
pub type Headers = BTreeMap<String, String>;

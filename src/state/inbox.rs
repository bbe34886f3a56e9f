//! The webhook inbox: events of webhook models, stored before they are acknowledged and
//! applied to the model's table later, and the newest event applied per record key (so an
//! older event never overwrites a newer one, whatever the arrival order).
//!
//! Two tables beside the run history, created when a store first holds an inbox
//! (`CREATE TABLE IF NOT EXISTS`: no schema version change, an older ebb ignores them):
//! `ebb_inbox` (one row per model and event id: the event id is unique, so a redelivered
//! event is stored once) and `ebb_inbox_keys` (per model and key: the event time and
//! sequence number of the newest event applied, and whether it deleted the record).
//! docs/webhooks.md describes the statuses an event goes through.

use super::StateError;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Where an event of the inbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboxStatus {
    /// Stored and acknowledged; not applied yet.
    Pending,
    /// Written to the table.
    Applied,
    /// Not written: the table already holds a newer event of the same record.
    Superseded,
    /// An event type the model ignores (`action: ignore`).
    Ignored,
    /// A dead letter: the event could not be mapped to a row (the reason says why).
    Dead,
    /// A dead letter: the request was refused (400), so no event of it is applied.
    Rejected,
    /// A rejected request whose events were put back by `ebb inbox replay`.
    Replayed,
}

impl InboxStatus {
    pub const ALL: [InboxStatus; 7] = [
        InboxStatus::Pending,
        InboxStatus::Applied,
        InboxStatus::Superseded,
        InboxStatus::Ignored,
        InboxStatus::Dead,
        InboxStatus::Rejected,
        InboxStatus::Replayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Pending => "pending",
            InboxStatus::Applied => "applied",
            InboxStatus::Superseded => "superseded",
            InboxStatus::Ignored => "ignored",
            InboxStatus::Dead => "dead",
            InboxStatus::Rejected => "rejected",
            InboxStatus::Replayed => "replayed",
        }
    }

    pub fn parse(s: &str) -> Option<InboxStatus> {
        InboxStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// A dead letter: kept until it is replayed or purged.
    pub fn is_dead_letter(self) -> bool {
        matches!(self, InboxStatus::Dead | InboxStatus::Rejected)
    }
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub model: String,
    pub event_id: String,
    pub event_type: String,
    /// `upsert`, `delete`, `ignore`, or empty for a rejected request.
    pub action: String,
    pub event_time: DateTime<Utc>,
    pub received: DateTime<Utc>,
    /// The event's JSON text (a rejected request: the body as received).
    pub body: String,
    /// `Pending`, or `Rejected` for a dead letter of a refused request.
    pub status: InboxStatus,
    pub reason: Option<String>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEvent {
    /// The order of arrival (also breaks ties of equal event times: the later one wins).
    pub seq: i64,
    pub model: String,
    pub event_id: String,
    pub event_type: String,
    pub action: String,
    pub event_time: DateTime<Utc>,
    pub received: DateTime<Utc>,
    pub status: InboxStatus,
    pub reason: Option<String>,
    /// The record's key, once the event was applied (or superseded).
    pub key: Option<String>,
    pub settled: Option<DateTime<Utc>>,
    pub body: String,
}

/// How one applied batch settled an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub seq: i64,
    pub status: InboxStatus,
    pub reason: Option<String>,
    pub key: Option<String>,
}

/// The newest event applied to a record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyVersion {
    /// Microseconds since the epoch.
    pub event_time: i64,
    pub seq: i64,
    pub deleted: bool,
}

impl KeyVersion {
    /// Whether an event at `event_time` (µs) with `seq` is newer than this one: a later
    /// event time, or the same time and a later arrival.
    pub fn is_older_than(&self, event_time: i64, seq: i64) -> bool {
        (self.event_time, self.seq) < (event_time, seq)
    }
}

/// How many events of a model stand where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxCounts {
    pub pending: u64,
    pub applied: u64,
    pub superseded: u64,
    pub ignored: u64,
    pub dead: u64,
    pub rejected: u64,
    pub replayed: u64,
    /// When the oldest pending event was received (for the apply lag).
    pub oldest_pending: Option<DateTime<Utc>>,
}

impl InboxCounts {
    pub(crate) fn add(&mut self, status: &str, n: u64) {
        match InboxStatus::parse(status) {
            Some(InboxStatus::Pending) => self.pending += n,
            Some(InboxStatus::Applied) => self.applied += n,
            Some(InboxStatus::Superseded) => self.superseded += n,
            Some(InboxStatus::Ignored) => self.ignored += n,
            Some(InboxStatus::Dead) => self.dead += n,
            Some(InboxStatus::Rejected) => self.rejected += n,
            Some(InboxStatus::Replayed) => self.replayed += n,
            None => {}
        }
    }

    /// Dead letters: events that could not be mapped and refused requests.
    pub fn dead_letters(&self) -> u64 {
        self.dead + self.rejected
    }
}

impl super::StateStore {
    /// Creates the webhook inbox's tables when missing ([`inbox`]).
    pub async fn inbox_init(&self) -> Result<(), StateError> {
        if self.created_already("inbox") {
            return Ok(());
        }
        dispatch!(self, s => s.inbox_init().await)?;
        self.mark_created("inbox");
        Ok(())
    }

    /// Stores events in one transaction; for each, whether it is new (`false`: an event of
    /// the same model and id is there already, and nothing was written).
    /// Bodies are sealed under `EBB_ENCRYPTION_KEY` when one is set ([`crate::crypt`]).
    pub async fn inbox_put(&self, mut events: Vec<NewEvent>) -> Result<Vec<bool>, StateError> {
        let keys = crate::crypt::Keys::global()?;
        for e in &mut events {
            e.body = keys.seal(BODY, &e.body);
        }
        dispatch!(self, s => s.inbox_put(events).await)
    }

    /// The oldest pending events of `model`, in order of arrival.
    pub async fn inbox_pending(&self, model: &str, limit: i64) -> Result<Vec<InboxEvent>, StateError> {
        opened(dispatch!(self, s => s.inbox_pending(model, limit).await)?)
    }

    /// The newest events of `model` in one of `statuses` (and with one of `ids`), newest first.
    pub async fn inbox_list(
        &self,
        model: &str,
        statuses: Vec<InboxStatus>,
        ids: Option<Vec<String>>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StateError> {
        opened(dispatch!(self, s => s.inbox_list(model, statuses, ids, limit).await)?)
    }

    /// The newest event applied to each of `keys` that has one.
    pub async fn inbox_versions(
        &self,
        model: &str,
        keys: Vec<String>,
    ) -> Result<HashMap<String, KeyVersion>, StateError> {
        dispatch!(self, s => s.inbox_versions(model, keys).await)
    }

    /// Settles applied events and records the keys' new versions, in one transaction.
    pub async fn inbox_settle(
        &self,
        model: &str,
        settled: Vec<Settled>,
        versions: Vec<(String, KeyVersion)>,
    ) -> Result<(), StateError> {
        let now = chrono::Utc::now().timestamp_millis();
        dispatch!(self, s => s.inbox_settle(model, settled, versions, now).await)
    }

    /// How many events of `model` stand where.
    pub async fn inbox_counts(&self, model: &str) -> Result<InboxCounts, StateError> {
        dispatch!(self, s => s.inbox_counts(model).await)
    }

    /// Sets the status of events of `model` by sequence number (replay); how many changed.
    pub async fn inbox_set_status(&self, model: &str, seqs: Vec<i64>, status: InboxStatus) -> Result<u64, StateError> {
        dispatch!(self, s => s.inbox_set_status(model, seqs, status).await)
    }

    /// Deletes settled events received before `before_ms` (dead letters and pending events
    /// stay); how many.
    pub async fn inbox_purge(&self, before_ms: i64) -> Result<u64, StateError> {
        dispatch!(self, s => s.inbox_purge(before_ms).await)
    }
}

/// The associated data of a sealed event body: the column it belongs in.
pub(crate) const BODY: &str = "ebb_inbox.body";

/// Events with their bodies opened.
fn opened(mut events: Vec<InboxEvent>) -> Result<Vec<InboxEvent>, StateError> {
    let keys = crate::crypt::Keys::global()?;
    for e in &mut events {
        e.body = keys.open(BODY, &e.body)?;
    }
    Ok(events)
}

/// The DDL of the inbox tables; `{s}` is the schema prefix (empty for SQLite), `serial` the
/// type of an auto-increment primary key.
pub(crate) fn inbox_ddl(s: &str, serial: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {s}ebb_inbox (
            seq {serial}, model TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
            action TEXT NOT NULL, event_time_us BIGINT NOT NULL, received_ms BIGINT NOT NULL,
            status TEXT NOT NULL, reason TEXT, record_key TEXT, settled_ms BIGINT, body TEXT NOT NULL,
            UNIQUE (model, event_id));
         CREATE INDEX IF NOT EXISTS ebb_inbox_by_status ON {s}ebb_inbox (model, status, seq);
         CREATE TABLE IF NOT EXISTS {s}ebb_inbox_keys (
            model TEXT NOT NULL, key TEXT NOT NULL, event_time_us BIGINT NOT NULL, seq BIGINT NOT NULL,
            deleted BOOLEAN NOT NULL, PRIMARY KEY (model, key));"
    )
}

/// The columns of `ebb_inbox` in the order both backends read them into an [`InboxEvent`].
pub(crate) const INBOX_COLUMNS: &str = "seq, model, event_id, event_type, action, event_time_us, received_ms, \
     status, reason, record_key, settled_ms, body";

pub(crate) fn micros(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t).unwrap_or_default()
}

pub(crate) fn millis(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap_or_default()
}

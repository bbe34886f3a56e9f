//! Two-way fields (docs/conflicts.md): per record, the values both sides last agreed on,
//! and every conflict found, with its decision.
//!
//! Two tables beside the run history, created when a store first holds a model with
//! `conflicts` (`CREATE TABLE IF NOT EXISTS`: no schema version change, an older ebb
//! ignores them):
//! - `ebb_conflict_base` (model, key → a JSON object): per two-way field, `w`, the
//!   warehouse value ebb last settled, and `c`, the CRM value it last knew the record to
//!   hold. A field missing from the object has never been settled.
//! - `ebb_conflicts`: one row per conflict found (model, key, field, and a fingerprint of
//!   the two values, unique: finding the same conflict again adds nothing), with both
//!   values, both times, the policy, the status (`open`: held for review; `decided` by
//!   the policy; `resolved` by a person; `superseded`: the values changed before anyone
//!   decided), the winner and when and by whom it was decided.

use super::StateError;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Where a conflict stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictStatus {
    /// Held for review: the row is not written until someone resolves it.
    Open,
    /// Decided by the model's policy.
    Decided,
    /// Decided by a person (`ebb conflicts resolve`).
    Resolved,
    /// The values changed (or the conflict went away) before anyone decided.
    Superseded,
}

impl ConflictStatus {
    pub const ALL: [ConflictStatus; 4] = [
        ConflictStatus::Open,
        ConflictStatus::Decided,
        ConflictStatus::Resolved,
        ConflictStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStatus::Open => "open",
            ConflictStatus::Decided => "decided",
            ConflictStatus::Resolved => "resolved",
            ConflictStatus::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<ConflictStatus> {
        ConflictStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Which side's value a decision keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Warehouse,
    Crm,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Warehouse => "warehouse",
            Side::Crm => "crm",
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "warehouse" => Some(Side::Warehouse),
            "crm" => Some(Side::Crm),
            _ => None,
        }
    }

    /// The seed's `master_source` words.
    pub fn master_source(self) -> &'static str {
        match self {
            Side::Warehouse => "DATA_PLATFORM",
            Side::Crm => "CRM",
        }
    }
}

/// A conflict found on one field of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Its number in the store (0 before it is stored).
    pub id: i64,
    pub model: String,
    pub key: String,
    pub field: String,
    pub warehouse_value: Value,
    pub crm_value: Value,
    /// The row's `source_modified`, as the warehouse gave it.
    pub warehouse_time: Option<String>,
    /// The record's `destination_modified`, as the CRM gave it.
    pub crm_time: Option<String>,
    pub policy: String,
    pub status: ConflictStatus,
    /// `None` while open (or superseded before a decision).
    pub winner: Option<Side>,
    /// Why: `warehouse newer`, `tie`, `no CRM time`, `policy crm_wins`, …
    pub reason: String,
    pub run_id: i64,
    pub detected_ms: i64,
    pub decided_ms: Option<i64>,
    /// Who resolved it (`ebb conflicts resolve`): a token name or the OS user.
    pub decided_by: Option<String>,
}

impl Conflict {
    /// A fingerprint of the field and both values: the same conflict found again is stored
    /// once.
    pub fn fingerprint(&self) -> String {
        let text = format!("{}\u{1}{}\u{1}{}", self.field, self.warehouse_value, self.crm_value);
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    }

    /// The conflict as ebb shows it: both values masked ([`crate::redact::mask_json`]) when
    /// its field is one of `pii` (`pii: true` mappings).
    pub fn shown(&self, pii: &[&str]) -> Conflict {
        let mut c = self.clone();
        if pii.contains(&c.field.as_str()) {
            let mask = |v: &Value| match v.as_str() {
                Some(t) if t.starts_with(UNREADABLE) => v.clone(),
                _ => crate::redact::mask_json(v),
            };
            c.warehouse_value = mask(&c.warehouse_value);
            c.crm_value = mask(&c.crm_value);
        }
        c
    }

    /// The conflict as JSON (for `--format json`, the API and exports).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "model": self.model,
            "key": self.key,
            "field": self.field,
            "warehouse_value": self.warehouse_value,
            "crm_value": self.crm_value,
            "warehouse_modified": self.warehouse_time,
            "crm_modified": self.crm_time,
            "policy": self.policy,
            "status": self.status.as_str(),
            "winner": self.winner.map(Side::as_str),
            "master_source": match (self.status, self.winner) {
                (ConflictStatus::Open, _) => Some("MANUAL_REVIEW"),
                (_, Some(w)) => Some(w.master_source()),
                _ => None,
            },
            "reason": self.reason,
            "run_id": self.run_id,
            "detected_at": ms_text(self.detected_ms),
            "resolution_timestamp": self.decided_ms.map(ms_text),
            "decided_by": self.decided_by,
        })
    }
}

/// Milliseconds since the epoch as RFC 3339 text (UTC).
pub fn ms_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What both sides last agreed on for one two-way field of one record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldBase {
    /// The warehouse value ebb last settled (sent, or decided against); `None`: never.
    pub w: Option<Value>,
    /// The CRM value ebb last knew the record to hold; `None`: never known.
    pub c: Option<Value>,
}

/// Per two-way field, what both sides last agreed on.
pub type Base = BTreeMap<String, FieldBase>;

/// The associated data of sealed values ([`crate::crypt`]): the column each belongs in.
pub(crate) const VALUE: &str = "ebb_conflicts.value";
pub(crate) const BASE: &str = "ebb_conflict_base.fields";

/// `text` sealed for `column` under `EBB_ENCRYPTION_KEY` when one is set. (A key that does
/// not parse stops runs and the daemon before anything is written: see
/// [`crate::crypt::Keys::global`].)
fn seal(column: &str, text: String) -> String {
    match crate::crypt::Keys::global() {
        Ok(k) => k.seal(column, &text),
        Err(_) => text,
    }
}

/// The text sealed in `text`, or why it does not open.
fn open(column: &str, text: &str) -> Result<String, crate::crypt::CryptError> {
    crate::crypt::Keys::global()?.open(column, text)
}

/// How a value that does not open reads (then why, then `)`): it holds nothing personal.
const UNREADABLE: &str = "(not readable: ";

/// A conflict's value as kept in `ebb_conflicts` (sealed JSON text).
pub(crate) fn value_text(v: &Value) -> String {
    seal(VALUE, v.to_string())
}

/// A base as the JSON text kept in `ebb_conflict_base` (sealed).
pub fn base_to_text(b: &Base) -> String {
    seal(BASE, base_json(b))
}

fn base_json(b: &Base) -> String {
    let mut o = Map::new();
    for (f, fb) in b {
        let mut e = Map::new();
        if let Some(w) = &fb.w {
            e.insert("w".into(), w.clone());
        }
        if let Some(c) = &fb.c {
            e.insert("c".into(), c.clone());
        }
        o.insert(f.clone(), Value::Object(e));
    }
    Value::Object(o).to_string()
}

/// A base from its JSON text; text that is not one (a damaged row) is an empty base: every
/// field is then treated as never settled, which can only find more conflicts, not fewer.
/// So is one sealed under a key this ebb does not hold (never drop a key before `ebb keys
/// rotate` has sealed everything anew).
pub fn base_from_text(t: &str) -> Base {
    let Ok(t) = open(BASE, t) else {
        return Base::new();
    };
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&t) else {
        return Base::new();
    };
    o.into_iter()
        .map(|(f, v)| {
            (
                f,
                FieldBase {
                    w: v.get("w").cloned(),
                    c: v.get("c").cloned(),
                },
            )
        })
        .collect()
}

/// How a person's decision changes the base, so that the next run applies it: taking the
/// warehouse's value leaves the warehouse side unsettled against the CRM value now known
/// (so the next run writes it); taking the CRM's settles both sides as they were (so the
/// next run leaves the field alone).
pub fn resolve_base(base: &mut Base, conflicts: &[Conflict], take: Side) {
    for c in conflicts {
        let e = base.entry(c.field.clone()).or_default();
        match take {
            Side::Warehouse => {
                e.c = Some(c.crm_value.clone());
                if e.w.as_ref() == Some(&c.warehouse_value) {
                    e.w = None;
                }
            }
            Side::Crm => {
                e.w = Some(c.warehouse_value.clone());
                e.c = Some(c.crm_value.clone());
            }
        }
    }
}

impl super::StateStore {
    /// Creates the conflict tables when missing ([`conflicts`]).
    pub async fn conflicts_init(&self) -> Result<(), StateError> {
        if self.created_already("conflicts") {
            return Ok(());
        }
        dispatch!(self, s => s.conflicts_init().await)?;
        self.mark_created("conflicts");
        Ok(())
    }

    /// What both sides last agreed on for the two-way fields of `keys` (keys never settled
    /// are missing).
    pub async fn conflict_bases(&self, model: &str, keys: Vec<String>) -> Result<HashMap<String, Base>, StateError> {
        dispatch!(self, s => s.conflict_bases(model, keys).await)
    }

    /// Conflicts matching `q`, newest first.
    pub async fn conflicts(&self, q: ConflictQuery) -> Result<Vec<Conflict>, StateError> {
        dispatch!(self, s => s.conflicts(q).await)
    }

    /// Per model, its open conflicts (held records' fields).
    pub async fn conflicts_open(&self) -> Result<Vec<(String, u64)>, StateError> {
        dispatch!(self, s => s.conflicts_open().await)
    }

    /// A person's decision on the open conflicts of one record, in one transaction: they
    /// become `resolved` with `take` as the winner, and the record's base is set so the next
    /// run applies it ([`resolve_base`]). Returns the conflicts resolved (none:
    /// the record has no open conflict).
    pub async fn conflict_resolve(
        &self,
        model: &str,
        key: &str,
        take: Side,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<Conflict>, StateError> {
        dispatch!(self, s => s.conflict_resolve(model, key, take, by, now_ms).await)
    }
}

/// Open conflicts as a person's decision leaves them.
pub(crate) fn resolved(open: Vec<Conflict>, take: Side, by: &str, now_ms: i64) -> Vec<Conflict> {
    open.into_iter()
        .map(|c| Conflict {
            status: ConflictStatus::Resolved,
            winner: Some(take),
            decided_ms: Some(now_ms),
            decided_by: Some(by.to_string()),
            ..c
        })
        .collect()
}

/// The DDL of both tables; `s` is the schema prefix (`""` or `"name."`).
pub(crate) fn conflicts_ddl(s: &str, serial: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {s}ebb_conflict_base (
            model TEXT NOT NULL, key TEXT NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (model, key));
         CREATE TABLE IF NOT EXISTS {s}ebb_conflicts (
            id {serial}, model TEXT NOT NULL, key TEXT NOT NULL, field TEXT NOT NULL, fingerprint TEXT NOT NULL,
            warehouse_value TEXT NOT NULL, crm_value TEXT NOT NULL, warehouse_time TEXT, crm_time TEXT,
            policy TEXT NOT NULL, status TEXT NOT NULL, winner TEXT, reason TEXT NOT NULL,
            run_id BIGINT NOT NULL, detected_ms BIGINT NOT NULL, decided_ms BIGINT, decided_by TEXT,
            UNIQUE (model, key, field, fingerprint));
         CREATE INDEX IF NOT EXISTS ebb_conflicts_by_status ON {s}ebb_conflicts (model, status, key);"
    )
}

/// The columns of `ebb_conflicts` in the order both backends read them into a [`Conflict`].
pub(crate) const CONFLICT_COLUMNS: &str = "id, model, key, field, warehouse_value, crm_value, warehouse_time, \
     crm_time, policy, status, winner, reason, run_id, detected_ms, decided_ms, decided_by";

/// Reads a stored value's JSON text (text that is not JSON is kept as a string).
/// A sealed one is opened; one that does not open reads as a string saying why.
pub(crate) fn value_of(t: &str) -> Value {
    let t = match open(VALUE, t) {
        Ok(t) => t,
        Err(e) => return Value::String(format!("{UNREADABLE}{e})")),
    };
    serde_json::from_str(&t).unwrap_or(Value::String(t))
}

/// A filter on the conflicts listed.
#[derive(Debug, Clone, Default)]
pub struct ConflictQuery {
    pub model: Option<String>,
    pub key: Option<String>,
    /// Empty: every status.
    pub statuses: Vec<ConflictStatus>,
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conflict(w: Value, c: Value) -> Conflict {
        Conflict {
            id: 0,
            model: "m".into(),
            key: "k".into(),
            field: "Email".into(),
            warehouse_value: w,
            crm_value: c,
            warehouse_time: None,
            crm_time: None,
            policy: "manual_review".into(),
            status: ConflictStatus::Open,
            winner: None,
            reason: String::new(),
            run_id: 1,
            detected_ms: 0,
            decided_ms: None,
            decided_by: None,
        }
    }

    #[test]
    fn a_base_survives_its_text_and_a_damaged_one_is_empty() {
        let mut b = Base::new();
        b.insert(
            "Email".into(),
            FieldBase {
                w: Some(json!("a@x.com")),
                c: Some(Value::Null),
            },
        );
        b.insert(
            "Phone".into(),
            FieldBase {
                w: None,
                c: Some(json!("1")),
            },
        );
        assert_eq!(base_from_text(&base_to_text(&b)), b);
        assert!(base_from_text("not json").is_empty());
    }

    #[test]
    fn a_fingerprint_tells_values_apart() {
        let a = conflict(json!("a"), json!("b"));
        assert_eq!(a.fingerprint(), conflict(json!("a"), json!("b")).fingerprint());
        assert_ne!(a.fingerprint(), conflict(json!("a"), json!("c")).fingerprint());
        assert_ne!(a.fingerprint(), conflict(json!("b"), json!("a")).fingerprint());
    }

    #[test]
    fn resolving_sets_the_base_for_the_next_run() {
        let c = conflict(json!("w@x"), json!("c@x"));
        let mut b = Base::new();
        b.insert(
            "Email".into(),
            FieldBase {
                w: Some(json!("old")),
                c: Some(json!("old")),
            },
        );
        let mut crm = b.clone();
        resolve_base(&mut crm, std::slice::from_ref(&c), Side::Crm);
        assert_eq!(crm["Email"].w, Some(json!("w@x")));
        assert_eq!(crm["Email"].c, Some(json!("c@x")));
        let mut wh = b.clone();
        resolve_base(&mut wh, &[c], Side::Warehouse);
        assert_eq!(wh["Email"].w, Some(json!("old")));
        assert_eq!(wh["Email"].c, Some(json!("c@x")));
    }
}

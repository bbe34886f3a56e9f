//! The conflict check of a model with `conflicts` (docs/conflicts.md), between the spill
//! and a batch's delivery.
//!
//! For each row about to be written, and each two-way field, three values meet: the
//! warehouse's (`W`, in the payload), the CRM's current one (`C`, from the `crm_state`
//! table or one SOQL query per 200 keys), and what both sides last agreed on (the base:
//! `w`, the warehouse value ebb last settled, and `c`, the CRM value it last knew). The
//! warehouse changed when `W ≠ w`; the CRM changed when `C ≠ c` (with no base, when
//! `C ≠ W`).
//! - Only the warehouse changed: `W` is written.
//! - The warehouse did not change it: the field is left out of the write; the CRM keeps
//!   what it has (what both agreed on, or its own change, which an inbound model brings to
//!   the warehouse).
//! - Both changed to the same value: nothing to write.
//! - Both changed, differently: a conflict, decided by the policy. `warehouse_wins` writes
//!   `W`; `crm_wins` leaves the field out; `newest_wins` compares the row's
//!   `source_modified` with the record's `destination_modified` (a tie or a missing time
//!   goes to review, as in the seed); `manual_review` holds the row.
//!
//! A held row is not written at all. A row left with nothing to write is settled without a
//! request. Decisions are committed before the write ([`crate::state::StateWrite::Conflicts`]),
//! the base after the CRM confirmed it; a crash between them finds the same conflict again
//! and decides it the same way (a conflict is stored once per fingerprint).

use super::error::RunError;
use super::run::Run;
use super::spill::Spilled;
use super::table::SnapTable;
use super::writer::write_via;
use crate::config::model::ConflictPolicy;
use crate::destination::Destination;
use crate::http::retry::RetryPolicy;
use crate::plan::{ConflictPlan, MODIFIED_FIELD};
use crate::source::Source;
use crate::state::conflicts::{base_to_text, Base, Conflict, ConflictStatus, FieldBase, Side};
use crate::state::StateWrite;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

mod crm;
pub(super) use crm::Lookup;
pub use crm::{write_back, ConflictError};

/// The CRM's side of one record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrmRecord {
    /// Field → value (names as the CRM or the table gave them).
    pub values: Map<String, Value>,
    /// `destination_modified`.
    pub modified: Option<Value>,
}

impl CrmRecord {
    fn get(&self, field: &str) -> Value {
        self.values
            .get(field)
            .or_else(|| {
                self.values
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(field))
                    .map(|(_, v)| v)
            })
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// The base's entry holding the hash of a row's one-way fields (`w`) when it was last
/// settled; not a field name a CRM can have.
pub const REST_FIELD: &str = "$one_way";

/// What the check decides for one row.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Write this payload (the key field and the fields to write); once the CRM confirms
    /// it, the record's base becomes `base`.
    Write { payload: String, base: Base },
    /// Nothing is left to write: the row is settled as it is, with this base.
    Settle { base: Base },
    /// Held for review: nothing is written.
    Hold,
}

/// A row's decision and the conflicts found on its fields.
#[derive(Debug)]
pub struct Checked {
    pub decision: Decision,
    pub conflicts: Vec<Conflict>,
}

/// Checks rows of one model.
pub struct RowCheck<'a> {
    pub plan: &'a ConflictPlan,
    pub model: &'a str,
    pub key_field: &'a str,
    pub run_id: i64,
    pub now_ms: i64,
}

impl RowCheck<'_> {
    /// Checks one row: its payload (as the diff encoded it, with [`MODIFIED_FIELD`]), the
    /// record's base, and the CRM's record (`None`: the CRM has no record of the key).
    pub fn check(&self, key: &str, payload: &str, base: Option<&Base>, crm: Option<&CrmRecord>) -> Checked {
        let Ok(mut obj) = serde_json::from_str::<Map<String, Value>>(payload) else {
            // Not an object: not a payload ebb encoded. Sent as it is, unchecked.
            return Checked {
                decision: Decision::Write {
                    payload: payload.to_string(),
                    base: base.cloned().unwrap_or_default(),
                },
                conflicts: Vec::new(),
            };
        };
        let wh_time = obj.remove(MODIFIED_FIELD).filter(|v| !v.is_null());
        // The one-way fields (mapped, not two-way): always written with a row that is
        // written, and remembered by a hash, so a row where nothing at all is left to
        // write can be settled without a request.
        let rest: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| *k != self.key_field && !self.plan.fields.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rest_hash = Value::String(format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(Value::Object(rest.clone()).to_string().as_bytes())
        ));
        let rest_same = rest.is_empty()
            || base
                .and_then(|b| b.get(REST_FIELD))
                .and_then(|f| f.w.as_ref())
                .is_some_and(|h| *h == rest_hash);
        let mut new_base = base.cloned().unwrap_or_default();
        new_base.insert(
            REST_FIELD.to_string(),
            FieldBase {
                w: Some(rest_hash),
                c: None,
            },
        );
        let mut conflicts = Vec::new();
        let mut hold = false;
        for f in &self.plan.fields {
            let Some(w) = obj.get(f).cloned() else { continue };
            let Some(crm) = crm else {
                // No record yet: nothing to conflict with.
                new_base.insert(f.clone(), agreed(&w, &w));
                continue;
            };
            let c = crm.get(f);
            let fb = base.and_then(|b| b.get(f));
            let wh_changed = fb.and_then(|b| b.w.as_ref()).is_none_or(|bw| !same(&w, bw));
            let crm_changed = match fb.and_then(|b| b.c.as_ref()) {
                Some(bc) => !same(&c, bc),
                None => !same(&c, &w),
            };
            if !wh_changed || (crm_changed && same(&w, &c)) {
                // The warehouse did not change it (the CRM holds what was agreed, or its
                // own newer value), or both sides made the same change: nothing to write.
                obj.remove(f);
                new_base.insert(f.clone(), agreed(&w, &c));
            } else if !crm_changed {
                new_base.insert(f.clone(), agreed(&w, &w));
            } else {
                let crm_time = crm.modified.clone().filter(|v| !v.is_null());
                let (winner, reason) = decide(self.plan.policy, wh_time.as_ref(), crm_time.as_ref());
                let conflict = Conflict {
                    id: 0,
                    model: self.model.to_string(),
                    key: key.to_string(),
                    field: f.clone(),
                    warehouse_value: w.clone(),
                    crm_value: c.clone(),
                    warehouse_time: wh_time.as_ref().map(time_text),
                    crm_time: crm_time.as_ref().map(time_text),
                    policy: self.plan.policy.as_str().to_string(),
                    status: if winner.is_some() {
                        ConflictStatus::Decided
                    } else {
                        ConflictStatus::Open
                    },
                    winner,
                    reason,
                    run_id: self.run_id,
                    detected_ms: self.now_ms,
                    decided_ms: winner.map(|_| self.now_ms),
                    decided_by: None,
                };
                match winner {
                    Some(Side::Warehouse) => {
                        new_base.insert(f.clone(), agreed(&w, &w));
                    }
                    Some(Side::Crm) => {
                        obj.remove(f);
                        new_base.insert(f.clone(), agreed(&w, &c));
                    }
                    None => hold = true,
                }
                conflicts.push(conflict);
            }
        }
        if hold {
            // The row's other fields are decided again when it is released.
            conflicts.retain(|c| c.status == ConflictStatus::Open);
            return Checked {
                decision: Decision::Hold,
                conflicts,
            };
        }
        let decision = if rest_same && !self.plan.fields.iter().any(|f| obj.contains_key(f)) {
            Decision::Settle { base: new_base }
        } else {
            Decision::Write {
                payload: Value::Object(obj).to_string(),
                base: new_base,
            }
        };
        Checked { decision, conflicts }
    }
}

fn agreed(w: &Value, c: &Value) -> FieldBase {
    FieldBase {
        w: Some(w.clone()),
        c: Some(c.clone()),
    }
}

/// The policy's decision on a conflict, and why. `None`: held for review.
fn decide(policy: ConflictPolicy, wh_time: Option<&Value>, crm_time: Option<&Value>) -> (Option<Side>, String) {
    match policy {
        ConflictPolicy::WarehouseWins => (Some(Side::Warehouse), "policy warehouse_wins".into()),
        ConflictPolicy::CrmWins => (Some(Side::Crm), "policy crm_wins".into()),
        ConflictPolicy::ManualReview => (None, "policy manual_review".into()),
        ConflictPolicy::NewestWins => {
            let wt = wh_time.and_then(parse_time);
            let ct = crm_time.and_then(parse_time);
            match (wt, ct) {
                (None, _) => (None, "no warehouse modification time".into()),
                (_, None) => (None, "no CRM modification time".into()),
                (Some(w), Some(c)) if w > c => (Some(Side::Warehouse), "warehouse newer".into()),
                (Some(w), Some(c)) if c > w => (Some(Side::Crm), "CRM newer".into()),
                _ => (None, "tie: both modified at the same time".into()),
            }
        }
    }
}

fn time_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A modification time: RFC 3339, Salesforce's `…+0000`, a time without a zone (UTC), a
/// date (midnight UTC), or Unix seconds or milliseconds.
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    if let Some(t) = crate::time::parse_time(v) {
        return Some(t);
    }
    let s = v.as_str()?.trim();
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Whether two values are the same for the CRM: null and empty text alike (Salesforce
/// keeps no empty text), numbers by value (text holding one too), booleans and their text,
/// and times by instant.
pub fn same(a: &Value, b: &Value) -> bool {
    fn num_eq(x: f64, y: f64) -> bool {
        (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
    }
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, Value::String(s)) | (Value::String(s), Value::Null) => s.is_empty(),
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => num_eq(x, y),
            _ => x == y,
        },
        (Value::Number(x), Value::String(s)) | (Value::String(s), Value::Number(x)) => {
            match (x.as_f64(), s.trim().parse::<f64>()) {
                (Some(x), Ok(y)) => num_eq(x, y),
                _ => false,
            }
        }
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => {
            s.eq_ignore_ascii_case(if *x { "true" } else { "false" })
        }
        (Value::String(x), Value::String(y)) => {
            x == y
                || (x.len() >= 10
                    && y.len() >= 10
                    && x.as_bytes()[4] == b'-'
                    && y.as_bytes()[4] == b'-'
                    && matches!((parse_time(a), parse_time(b)), (Some(p), Some(q)) if p == q))
        }
        _ => a == b,
    }
}

/// What a run's conflict checks counted.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ConflictCounts {
    /// Rows held for review.
    pub(super) held: i64,
    /// Conflicts decided by the policy.
    pub(super) decided: i64,
    /// Rows settled with nothing to write (the CRM's values kept).
    pub(super) kept: i64,
}

impl<'a> Run<'a> {
    /// Where this run reads the CRM's values, for a model with `conflicts`.
    pub(super) fn conflict_lookup(&self) -> Result<Option<Lookup>, RunError> {
        let Some(c) = &self.cfg.plan.conflicts else {
            return Ok(None);
        };
        let Some(state) = &c.crm_state else {
            return Ok(Some(Lookup::Api));
        };
        let spec = self
            .cfg
            .project
            .connections
            .get(&state.connection)
            .ok_or_else(|| RunError::NoConnection(state.connection.clone()))?;
        let source =
            Source::open(&state.connection, spec, self.cfg.project_dir).map_err(|source| RunError::Source {
                connection: state.connection.clone(),
                kind: spec.kind(),
                source,
            })?;
        Ok(Some(Lookup::Table {
            source: Box::new(source),
            state: state.clone(),
        }))
    }

    /// Checks a batch's rows before it is sent: returns the rows to write (their payloads
    /// cut to what is written) and, per key, the base to commit once the CRM confirms it.
    /// Decisions, and rows settled without a write, are committed here, before the write.
    pub(super) async fn check_conflicts(
        &mut self,
        records: Vec<Spilled>,
        lookup: &Lookup,
        dest: &Arc<Destination>,
        table: &mut SnapTable,
    ) -> Result<(Vec<Spilled>, HashMap<String, String>), RunError> {
        let plan = self.cfg.plan;
        let Some(cp) = &plan.conflicts else {
            return Ok((records, HashMap::new()));
        };
        let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let crm = lookup
            .records(cp, dest, &keys, &RetryPolicy::from_env())
            .await
            .map_err(|source| RunError::Conflicts {
                model: plan.name.clone(),
                source,
            })?;
        let bases = self
            .cfg
            .store
            .conflict_bases(&plan.name, keys.iter().map(|k| k.to_string()).collect())
            .await?;
        let check = RowCheck {
            plan: cp,
            model: &plan.name,
            key_field: &plan.destination.key_field,
            run_id: self.cfg.run_id,
            now_ms: Utc::now().timestamp_millis(),
        };
        let mut send = Vec::with_capacity(records.len());
        let mut on_confirm = HashMap::new();
        let mut found = Vec::new();
        let mut settled_base = Vec::new();
        let mut settled_rows = Vec::new();
        let mut gone = Vec::new();
        for mut r in records {
            let checked = check.check(&r.key, &r.payload, bases.get(&r.key), crm.get(&r.key));
            self.conflicts.decided += checked
                .conflicts
                .iter()
                .filter(|c| c.status == ConflictStatus::Decided)
                .count() as i64;
            found.extend(checked.conflicts);
            match checked.decision {
                Decision::Write { payload, base } => {
                    gone.push(r.key.clone());
                    on_confirm.insert(r.key.clone(), base_to_text(&base));
                    r.payload = payload;
                    send.push(r);
                }
                Decision::Settle { base } => {
                    self.conflicts.kept += 1;
                    gone.push(r.key.clone());
                    settled_base.push((r.key.clone(), base_to_text(&base)));
                    table.upsert(r.key_hash, r.payload_hash);
                    settled_rows.push((r.key, r.payload_hash, None));
                }
                Decision::Hold => self.conflicts.held += 1,
            }
        }
        let mut writes = Vec::new();
        if !found.is_empty() {
            writes.push(StateWrite::Conflicts(found));
        }
        if !gone.is_empty() {
            writes.push(StateWrite::ConflictsGone {
                keys: gone,
                now_ms: check.now_ms,
            });
        }
        if !settled_rows.is_empty() {
            writes.push(StateWrite::ConflictBase(settled_base));
            writes.push(StateWrite::Confirm {
                run_id: self.cfg.run_id,
                rows: settled_rows,
            });
            writes.push(StateWrite::SnapshotToken(self.token));
        }
        if let Some(w) = &self.ctx.writer {
            write_via(w, writes).await?;
        }
        Ok((send, on_confirm))
    }
}

#[cfg(test)]
mod tests;

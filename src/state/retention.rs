//! Retention (docs/state.md, "Retention"): what `ebb purge` and the daemon's daily purge
//! remove, table by table, in one transaction that also records the purge in the audit log.
//!
//! Only what is settled goes: finished runs (each model's latest run and latest completed
//! run stay, whatever their age, since health and lag are read from them), row errors of
//! runs older than the limit, webhook events applied, superseded, ignored or replayed
//! (pending events and dead letters stay), conflicts decided, resolved or superseded (open
//! ones stay), and the oldest audit rows, leaving an anchor so the chain still verifies.

use super::StateError;
use crate::audit::{Action, NewAudit};
use serde_json::json;

/// The limits, as instants: rows older than these go (`None`: the table is kept whole).
/// Milliseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cutoffs {
    pub runs: Option<i64>,
    pub row_errors: Option<i64>,
    pub inbox: Option<i64>,
    pub conflicts: Option<i64>,
    pub audit: Option<i64>,
}

impl Cutoffs {
    /// The instants before which rows go under `r`, as of `now_ms`.
    pub fn of(r: &crate::config::retention::Retention, now_ms: i64) -> Cutoffs {
        let before = |d: Option<std::time::Duration>| d.map(|d| now_ms.saturating_sub(d.as_millis() as i64));
        Cutoffs {
            runs: before(r.runs),
            row_errors: before(r.row_errors),
            inbox: before(r.inbox),
            conflicts: before(r.conflicts),
            audit: before(r.audit),
        }
    }
}

/// How many rows a purge removed (or, in a dry run, would remove), per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub runs: u64,
    pub row_errors: u64,
    pub inbox: u64,
    pub conflicts: u64,
    pub audit: u64,
}

impl Purged {
    /// Per table, in the order `ebb purge` prints them.
    pub fn tables(&self) -> [(&'static str, u64); 5] {
        [
            ("runs", self.runs),
            ("row_errors", self.row_errors),
            ("inbox", self.inbox),
            ("conflicts", self.conflicts),
            ("audit", self.audit),
        ]
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        for (t, n) in self.tables() {
            o.insert(t.into(), json!(n));
        }
        serde_json::Value::Object(o)
    }

    pub fn total(&self) -> u64 {
        self.tables().iter().map(|(_, n)| n).sum()
    }
}

/// The audit entry of a purge: who, the limits, and the counts per table.
pub(crate) fn purge_entry(actor: &str, cutoffs: &Cutoffs, purged: &Purged) -> NewAudit {
    let limits = |c: Option<i64>| c.map(crate::audit::ms_text);
    NewAudit::new(actor, Action::Purge).detail(json!({
        "removed": purged.to_json(),
        "before": {
            "runs": limits(cutoffs.runs),
            "row_errors": limits(cutoffs.row_errors),
            "inbox": limits(cutoffs.inbox),
            "conflicts": limits(cutoffs.conflicts),
            "audit": limits(cutoffs.audit),
        },
    }))
}

/// The rows of each table a purge removes: `(table, WHERE clause)`, the clause with one
/// parameter `$1`, the cutoff (RFC 3339 text for the run tables, whose times are text; ms
/// since the epoch for the others). `s` is the schema prefix.
pub(crate) fn purge_where(s: &str) -> [(&'static str, String); 4] {
    [
        (
            "runs",
            format!(
                "{s}ebb_runs WHERE ended_at IS NOT NULL AND started_at < $1
                 AND id NOT IN (SELECT max(id) FROM {s}ebb_runs GROUP BY model)
                 AND id NOT IN (SELECT max(id) FROM {s}ebb_runs WHERE status IN ('succeeded', 'partial') GROUP BY model)"
            ),
        ),
        (
            "row_errors",
            // Run ids grow with time: errors of runs before the first run at or after the
            // limit (all of them if there is none), but never a run still going.
            format!(
                "{s}ebb_row_errors WHERE run_id < COALESCE((SELECT min(id) FROM {s}ebb_runs WHERE started_at >= $1), 9223372036854775807)
                 AND run_id NOT IN (SELECT id FROM {s}ebb_runs WHERE ended_at IS NULL)"
            ),
        ),
        (
            "inbox",
            format!(
                "{s}ebb_inbox WHERE status IN ('applied', 'superseded', 'ignored', 'replayed') AND received_ms < $1"
            ),
        ),
        (
            "conflicts",
            format!("{s}ebb_conflicts WHERE status <> 'open' AND COALESCE(decided_ms, detected_ms) < $1"),
        ),
    ]
}

/// A cutoff's parameter for `table`: RFC 3339 text for the run tables, else ms.
pub(crate) enum CutoffParam {
    Text(String),
    Ms(i64),
}

pub(crate) fn cutoff_param(table: &str, cutoffs: &Cutoffs) -> Option<CutoffParam> {
    let ms = match table {
        "runs" => cutoffs.runs,
        "row_errors" => cutoffs.row_errors,
        "inbox" => cutoffs.inbox,
        "conflicts" => cutoffs.conflicts,
        _ => None,
    }?;
    Some(match table {
        "runs" | "row_errors" => CutoffParam::Text(crate::audit::ms_text(ms)),
        _ => CutoffParam::Ms(ms),
    })
}

pub(crate) fn set_count(p: &mut Purged, table: &str, n: u64) {
    match table {
        "runs" => p.runs = n,
        "row_errors" => p.row_errors = n,
        "inbox" => p.inbox = n,
        "conflicts" => p.conflicts = n,
        _ => p.audit = n,
    }
}

impl super::StateStore {
    /// Removes what is older than `cutoffs` (a dry run counts it only) and, unless dry,
    /// records the purge in the audit log by `actor`, all in one transaction.
    pub async fn purge(&self, cutoffs: &Cutoffs, dry_run: bool, actor: &str) -> Result<Purged, StateError> {
        self.inbox_init().await?;
        self.conflicts_init().await?;
        self.audit_init().await?;
        dispatch!(self, s => s.purge(*cutoffs, dry_run, actor.to_string()).await)
    }
}

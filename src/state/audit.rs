//! The audit log in the state store ([`crate::audit`]): one table, `ebb_audit`, created
//! when a store first records an entry (`CREATE TABLE IF NOT EXISTS`: no schema version
//! change, an older ebb ignores it), and the anchor of a purged log in `ebb_meta`
//! (key `audit_anchor`).
//!
//! Append-only: ebb inserts rows and, only through retention, deletes the oldest ones
//! (leaving the anchor). Appends are serialised (SQLite: a write transaction; PostgreSQL:
//! an advisory lock held until the commit), so the chain stays linear with several
//! processes on one store. Each entry carries a random `uid`, unique: an append run twice
//! (PostgreSQL's transaction retried after a lost connection) adds it once.

use super::StateError;
use crate::audit::{Anchor, AuditQuery, AuditRow, NewAudit};

impl super::StateStore {
    /// Creates the audit table when missing.
    pub async fn audit_init(&self) -> Result<(), StateError> {
        if self.created_already("audit") {
            return Ok(());
        }
        dispatch!(self, s => s.audit_init().await)?;
        self.mark_created("audit");
        Ok(())
    }

    /// Appends one entry in a transaction of its own; the row as stored.
    pub async fn audit_append(&self, entry: NewAudit) -> Result<(), StateError> {
        self.audit_init().await?;
        dispatch!(self, s => s.audit_append(entry).await)
    }

    /// Rows matching `q`, oldest first.
    pub async fn audit_list(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StateError> {
        self.audit_init().await?;
        dispatch!(self, s => s.audit_list(q.clone()).await)
    }

    /// Where the chain starts: the anchor left by the last purge, else the genesis.
    pub async fn audit_anchor(&self) -> Result<Anchor, StateError> {
        let text = dispatch!(self, s => s.meta(crate::audit::ANCHOR_KEY).await)?;
        match text {
            None => Ok(Anchor::genesis()),
            Some(t) => Anchor::from_text(&t).ok_or_else(|| {
                StateError::Query(
                    self.name(),
                    format!(
                        "`ebb_meta` key `{}` is not an audit anchor (`SEQ:HASH`)",
                        crate::audit::ANCHOR_KEY
                    ),
                )
            }),
        }
    }
}

/// The DDL of the audit table; `s` is the schema prefix (`""` or `"name."`).
pub(crate) fn audit_ddl(s: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {s}ebb_audit (
            seq BIGINT PRIMARY KEY, uid TEXT NOT NULL UNIQUE, at_ms BIGINT NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, model TEXT, run_id BIGINT, destination TEXT, operation TEXT, count BIGINT,
            keys TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS ebb_audit_by_time ON {s}ebb_audit (at_ms);"
    )
}

/// The columns of `ebb_audit` in the order both backends read them into an [`AuditRow`].
pub(crate) const AUDIT_COLUMNS: &str =
    "seq, uid, at_ms, actor, action, model, run_id, destination, operation, count, keys, detail, prev_hash, hash";

/// Where the next row goes: after the last row, else after the anchor, else first.
pub(crate) fn next_after(last: Option<(i64, String)>, anchor: Option<String>) -> Anchor {
    match last {
        Some((seq, hash)) => Anchor { seq, hash },
        None => anchor
            .as_deref()
            .and_then(Anchor::from_text)
            .unwrap_or_else(Anchor::genesis),
    }
}

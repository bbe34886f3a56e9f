//! Why a run failed or was refused: [`RunError`], one variant per way a stage can fail,
//! carrying what the user needs to act on it (the connection, the batch, the model) and the
//! error underneath as its source. Its text is what the run's report and record say.
//!
//! The stages return it; [`super::run()`] turns it into the run's status and message. The
//! state writer's and the encoding pool's own errors ([`super::writer::WriteError`],
//! [`super::pool::EncodeError`]) are wrapped as they are.

use super::pool::EncodeError;
use super::writer::WriteError;
use crate::config::ConnectionType;
use crate::destination::file::FileError;
use crate::destination::retry::Failed;
use crate::destination::OpenError;
use crate::source::SourceError;
use crate::state::StateError;

/// Why a run stopped before its end, or did not start sending.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A read of the state store failed (the snapshot, keys in flight, record ids).
    #[error(transparent)]
    State(#[from] StateError),
    /// Applying a webhook model's inbox failed (its events stay pending).
    #[error(transparent)]
    Webhook(#[from] super::webhook::ApplyError),
    /// The run's writes could not be committed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The model names a connection the project does not define.
    #[error("connection `{0}` is not defined")]
    NoConnection(String),
    /// The source is read by its own connector, not by a query (Salesforce as a source).
    #[error("reading {kind} `{object}` comes with the {kind} connector")]
    NoQuery { kind: ConnectionType, object: String },
    /// The source failed: connecting, the query, or a batch of its result.
    #[error("reading the model from `{connection}` ({kind}): {source}")]
    Source {
        connection: String,
        kind: ConnectionType,
        source: SourceError,
    },
    /// The query lacks columns the mappings read.
    #[error(
        "reading the model from `{connection}` ({kind}): the query returns no column {}",
        quoted(.missing)
    )]
    MissingColumns {
        connection: String,
        kind: ConnectionType,
        missing: Vec<String>,
    },
    /// Mapping and hashing rows on the encoding threads failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The spill file (what is to be sent, on disk) could not be created, written or read.
    #[error("cannot {doing}: {source}")]
    Spill {
        /// `create a spill file`, `write the spill file`, …
        doing: &'static str,
        source: std::io::Error,
    },
    /// A blocking task (loading the kept diff table) failed.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// The daemon is shutting down: the model was not read to its end.
    #[error("stopped while reading the model (shutdown); nothing was sent")]
    StoppedReading,
    /// The daemon is shutting down: no new batches were started.
    #[error("stopped before the end (shutdown): the next run sends the rest")]
    Stopped,
    /// Another process took the model's run lock over.
    #[error("another process took the run lock over (this one's heartbeat stopped?)")]
    LockLost,
    /// The guard refused the run before anything was sent.
    #[error("refused by the guard: {why}; nothing was sent (`ebb run {model} --force` sends anyway)")]
    Refused { model: String, why: String },
    /// The destination could not be opened.
    #[error("destination `{connection}`: {source}")]
    Open { connection: String, source: OpenError },
    /// The destination could not end its delivery (the export file's fsync).
    #[error("destination `{connection}`: {source}")]
    Finish { connection: String, source: FileError },
    /// A batch failed after its retries; its rows stay in flight.
    #[error("batch {batch} ({records} records) to `{connection}`: {source}; its rows are sent again by the next run")]
    Batch {
        batch: i64,
        records: usize,
        connection: String,
        source: Failed,
    },
    /// The destination answered for another number of records than it was sent.
    #[error("batch {batch}: the destination answered for {answered} records out of {records}")]
    Miscounted {
        batch: i64,
        answered: usize,
        records: usize,
    },
    /// A batch's task panicked (its rows stay in flight).
    #[error("a batch's task failed (a bug in ebb): {0}")]
    BatchTask(#[source] tokio::task::JoinError),
    /// An inbound run failed (its message names the model and the connection).
    #[error(transparent)]
    Inbound(#[from] super::inbound::InboundError),
    /// The conflict check could not read the CRM's current values (from the CRM or the
    /// `crm_state` table); nothing of the batch was sent.
    #[error(
        "model `{model}`: the conflict check cannot read the CRM's values: {source}; nothing of the batch was sent"
    )]
    Conflicts {
        model: String,
        source: super::conflict::ConflictError,
    },
    /// Records were left to send with no destination open (a bug in ebb).
    #[error("internal: records to send but no destination")]
    NoDestination,
}

impl RunError {
    /// A spill file error: `doing` says what was being done with it.
    pub(super) fn spill(doing: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
        move |source| RunError::Spill { doing, source }
    }
}

/// `` `a`, `b` ``.
fn quoted(names: &[String]) -> String {
    names.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn errors_say_where_and_keep_their_cause() {
        let e = RunError::Batch {
            batch: 3,
            records: 200,
            connection: "crm".into(),
            source: Failed {
                message: "HTTP 503".into(),
                api_calls: 4,
                attempts: 4,
            },
        };
        assert_eq!(
            e.to_string(),
            "batch 3 (200 records) to `crm`: HTTP 503; its rows are sent again by the next run"
        );
        let cause = e.source().and_then(|s| s.downcast_ref::<Failed>());
        assert_eq!(cause.map(|f| f.attempts), Some(4));

        let e = RunError::MissingColumns {
            connection: "wh".into(),
            kind: ConnectionType::Postgres,
            missing: vec!["email".into(), "id".into()],
        };
        assert_eq!(
            e.to_string(),
            "reading the model from `wh` (postgres): the query returns no column `email`, `id`"
        );

        let e = RunError::from(WriteError::Commit(std::sync::Arc::new(StateError::Open("x".into()))));
        assert_eq!(
            e.to_string(),
            "cannot record the run's progress: cannot open the state store x"
        );
        // Transparent: the cause is the store's error itself.
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("cannot open the state store x")
        );
    }
}

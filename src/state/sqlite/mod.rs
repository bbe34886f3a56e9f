//! SQLite backend: one file, WAL journal, `synchronous=NORMAL` (a commit is durable
//! against a crash of ebb; an OS crash may lose the last commits, never corrupt them).
//! Snapshot scans read through a second connection, so they do not hold up writes (the
//! lock's heartbeat, a batch's commit).
//!
//! This module holds the store and its connections; [`mod@file`] opens or creates the file
//! (never starting a store over), [`snapshot`] holds the snapshot, in-flight records and a
//! run's writes, [`runs`] the run history, row errors and the run lock.

use super::StateError;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod audit;
mod conflicts;
mod file;
mod inbox;
mod runs;
mod snapshot;

use file::{existing_flags, open_blocking};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// For snapshot scans; `None` for `:memory:` (a second connection would be another
    /// database).
    reader: Option<Arc<Mutex<Connection>>>,
    name: String,
    /// Lazily created tables known to exist ([`super::StateStore::inbox_init`]).
    pub(super) created: Mutex<std::collections::HashSet<&'static str>>,
}

impl SqliteStore {
    pub async fn open(path: PathBuf) -> Result<SqliteStore, StateError> {
        let name = format!("`{}`", crate::config::files::display_path(&path).display());
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_blocking(&path, &n)?;
            let reader = if path.as_os_str() == ":memory:" {
                None
            } else {
                let r = Connection::open_with_flags(&path, existing_flags())
                    .map_err(|e| StateError::Open(format!("{n}: {e}")))?;
                r.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
                    .map_err(|e| StateError::Open(format!("{n}: {e}")))?;
                Some(Arc::new(Mutex::new(r)))
            };
            Ok((conn, reader))
        })
        .await
        .map_err(|e| StateError::Open(e.to_string()))?
        .map(|(conn, reader)| SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            reader,
            name,
            created: Mutex::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = self.conn.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c).map_err(|e| StateError::Query(name, e.to_string()))
        })
        .await
        .map_err(|e| StateError::Query(self.name.clone(), e.to_string()))?
    }

    pub async fn schema_version(&self) -> Result<i64, StateError> {
        self.with(|c| {
            c.query_row("SELECT value FROM ebb_meta WHERE key = 'schema_version'", [], |r| {
                r.get::<_, String>(0)
            })
        })
        .await?
        .parse()
        .map_err(|_| StateError::Foreign(self.name.clone(), "its schema version is not a number".into()))
    }
}

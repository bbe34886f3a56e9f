//! SQLite backend: one file, WAL journal, `synchronous=NORMAL` (a commit is durable
//! against a crash of ebb; an OS crash may lose the last commits, never corrupt them).

use super::{
    hash16, schema_v1, RowErrorEntry, RunCounts, RunRecord, SnapshotEntry, StateError, RUN_COLUMNS, SCHEMA_VERSION,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    name: String,
}

impl SqliteStore {
    pub async fn open(path: PathBuf) -> Result<SqliteStore, StateError> {
        let name = format!("`{}`", crate::validate::display_path(&path).display());
        let n = name.clone();
        tokio::task::spawn_blocking(move || open_blocking(path, &n))
            .await
            .map_err(|e| StateError::Open(e.to_string()))?
            .map(|conn| SqliteStore {
                conn: Arc::new(Mutex::new(conn)),
                name,
            })
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

    pub async fn start_run(&self, model: &str, now: &str) -> Result<i64, StateError> {
        let (model, now) = (model.to_string(), now.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO ebb_runs (model, started_at, status) VALUES (?1, ?2, 'running')",
                params![model, now],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    pub async fn finish_run(
        &self,
        id: i64,
        now: &str,
        status: &str,
        k: RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        let (now, status, error) = (now.to_string(), status.to_string(), error.map(str::to_string));
        self.with(move |c| {
            c.execute(
                "UPDATE ebb_runs SET ended_at = ?2, status = ?3, rows_read = ?4, rows_added = ?5, rows_changed = ?6,
                    rows_removed = ?7, rows_unchanged = ?8, rows_invalid = ?9, rows_sent = ?10, rows_confirmed = ?11,
                    rows_rejected = ?12, api_calls = ?13, error = ?14 WHERE id = ?1",
                params![
                    id,
                    now,
                    status,
                    k.read,
                    k.added,
                    k.changed,
                    k.removed,
                    k.unchanged,
                    k.invalid,
                    k.sent,
                    k.confirmed,
                    k.rejected,
                    k.api_calls,
                    error
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn runs(&self, model: &str, limit: i64) -> Result<Vec<RunRecord>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE model = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![model, limit], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    model: r.get(1)?,
                    started_at: r.get(2)?,
                    ended_at: r.get(3)?,
                    status: r.get(4)?,
                    counts: RunCounts {
                        read: r.get(5)?,
                        added: r.get(6)?,
                        changed: r.get(7)?,
                        removed: r.get(8)?,
                        unchanged: r.get(9)?,
                        invalid: r.get(10)?,
                        sent: r.get(11)?,
                        confirmed: r.get(12)?,
                        rejected: r.get(13)?,
                        api_calls: r.get(14)?,
                    },
                    error: r.get(15)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn snapshot(&self, model: &str) -> Result<Vec<SnapshotEntry>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut stmt =
                c.prepare("SELECT key, hash, pending_hash, record_id FROM ebb_snapshot WHERE model = ?1 ORDER BY key")?;
            let rows = stmt.query_map(params![model], |r| {
                Ok(SnapshotEntry {
                    key: r.get(0)?,
                    hash: hash16(r.get(1)?),
                    pending: hash16(r.get(2)?),
                    record_id: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn mark_pending(&self, model: &str, rows: &[(String, [u8; 16])]) -> Result<(), StateError> {
        let (model, rows) = (model.to_string(), rows.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO ebb_snapshot (model, key, pending_hash) VALUES (?1, ?2, ?3)
                     ON CONFLICT (model, key) DO UPDATE SET pending_hash = excluded.pending_hash",
                )?;
                for (key, hash) in &rows {
                    stmt.execute(params![model, key, &hash[..]])?;
                }
            }
            tx.commit()
        })
        .await
    }

    pub async fn confirm(
        &self,
        model: &str,
        run_id: i64,
        rows: &[(String, [u8; 16], Option<String>)],
    ) -> Result<(), StateError> {
        let (model, rows) = (model.to_string(), rows.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "INSERT INTO ebb_snapshot (model, key, hash, record_id, updated_run) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (model, key) DO UPDATE SET hash = excluded.hash, pending_hash = NULL,
                        record_id = COALESCE(excluded.record_id, ebb_snapshot.record_id), updated_run = excluded.updated_run",
                )?;
                let mut err = tx.prepare_cached("DELETE FROM ebb_row_errors WHERE model = ?1 AND key = ?2")?;
                for (key, hash, record_id) in &rows {
                    up.execute(params![model, key, &hash[..], record_id, run_id])?;
                    err.execute(params![model, key])?;
                }
            }
            tx.commit()
        })
        .await
    }

    pub async fn record_errors(&self, model: &str, errors: &[RowErrorEntry]) -> Result<(), StateError> {
        let (model, errors) = (model.to_string(), errors.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO ebb_row_errors (model, key, run_id, kind, code, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (model, key) DO UPDATE SET run_id = excluded.run_id, kind = excluded.kind,
                        code = excluded.code, message = excluded.message",
                )?;
                for e in &errors {
                    stmt.execute(params![model, e.key, e.run_id, e.kind, e.code, e.message])?;
                }
            }
            tx.commit()
        })
        .await
    }

    pub async fn row_errors(&self, model: &str) -> Result<Vec<RowErrorEntry>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut stmt =
                c.prepare("SELECT key, run_id, kind, code, message FROM ebb_row_errors WHERE model = ?1 ORDER BY key")?;
            let rows = stmt.query_map(params![model], |r| {
                Ok(RowErrorEntry {
                    key: r.get(0)?,
                    run_id: r.get(1)?,
                    kind: r.get(2)?,
                    code: r.get(3)?,
                    message: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn forget(&self, model: &str) -> Result<(), StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM ebb_snapshot WHERE model = ?1", params![model])?;
            tx.execute("DELETE FROM ebb_row_errors WHERE model = ?1", params![model])?;
            tx.commit()
        })
        .await
    }
}

fn open_blocking(path: PathBuf, name: &str) -> Result<Connection, StateError> {
    if path.as_os_str() != ":memory:" {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Open(format!("{name}: {e}")))?;
        }
    }
    let conn = Connection::open(&path).map_err(|e| StateError::Open(format!("{name}: {e}")))?;
    let foreign = |why: String| StateError::Foreign(name.to_string(), why);
    // A file that is not SQLite fails on the first read.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .map_err(|e| foreign(e.to_string()))?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| foreign(e.to_string()))?;
    if tables.is_empty() {
        let ddl = schema_v1("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT");
        conn.execute_batch(&format!(
            "BEGIN; {ddl} INSERT INTO ebb_meta VALUES ('schema_version', '{SCHEMA_VERSION}'), ('created_by', 'ebb {}'); COMMIT;",
            env!("CARGO_PKG_VERSION")
        ))
        .map_err(|e| StateError::Open(format!("{name}: {e}")))?;
        return Ok(conn);
    }
    if !tables.iter().any(|t| t == "ebb_meta") {
        return Err(foreign(format!(
            "it holds other tables ({}) and no `ebb_meta`",
            tables.join(", ")
        )));
    }
    let version: Option<String> = conn
        .query_row("SELECT value FROM ebb_meta WHERE key = 'schema_version'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| foreign(e.to_string()))?;
    let version: i64 = version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| foreign("its `ebb_meta` has no schema version".into()))?;
    if version > SCHEMA_VERSION {
        return Err(StateError::Newer {
            store: name.to_string(),
            found: version,
        });
    }
    // Migrations from older versions go here, one step at a time.
    Ok(conn)
}

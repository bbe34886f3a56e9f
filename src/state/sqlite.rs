//! SQLite backend: one file, WAL journal, `synchronous=NORMAL` (a commit is durable
//! against a crash of ebb; an OS crash may lose the last commits, never corrupt them).
//! Snapshot scans read through a second connection, so they do not hold up writes (the
//! lock's heartbeat, a batch's commit).

use super::snapshot_token_key;
use super::{
    hash16, inflight_record, keys_text, may_take, schema_v1, InflightBatch, LockHolder, LockOutcome, RowErrorEntry,
    RunCounts, RunRecord, SnapshotEntry, StateError, StateWrite, LOCK_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// For snapshot scans; `None` for `:memory:` (a second connection would be another
    /// database).
    reader: Option<Arc<Mutex<Connection>>>,
    name: String,
}

fn run_record(r: &rusqlite::Row) -> rusqlite::Result<RunRecord> {
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
}

fn lock_holder(r: &rusqlite::Row) -> rusqlite::Result<LockHolder> {
    Ok(LockHolder {
        id: r.get(0)?,
        host: r.get(1)?,
        pid: r.get(2)?,
        started: r.get(3)?,
        run_id: r.get(4)?,
        acquired_at: r.get(5)?,
        heartbeat_ms: r.get(6)?,
    })
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
            let rows = stmt.query_map(params![model, limit], run_record)?;
            rows.collect()
        })
        .await
    }

    pub async fn last_runs(&self) -> Result<Vec<RunRecord>, StateError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE id IN (SELECT max(id) FROM ebb_runs GROUP BY model)
                 ORDER BY model"
            ))?;
            let rows = stmt.query_map([], run_record)?;
            rows.collect()
        })
        .await
    }

    pub async fn last_completed(&self, model: &str) -> Result<Option<RunRecord>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE model = ?1 AND status IN ('succeeded', 'partial')
                     ORDER BY id DESC LIMIT 1"
                ),
                params![model],
                run_record,
            )
            .optional()
        })
        .await
    }

    pub async fn snapshot(&self, model: &str) -> Result<Vec<SnapshotEntry>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare("SELECT key, hash, record_id FROM ebb_snapshot WHERE model = ?1 ORDER BY key")?;
            let rows = stmt.query_map(params![model], |r| {
                Ok(SnapshotEntry {
                    key: r.get(0)?,
                    hash: hash16(r.get_ref(1)?.as_blob()?),
                    record_id: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn snapshot_len(&self, model: &str) -> Result<u64, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT count(*) FROM ebb_snapshot WHERE model = ?1",
                params![model],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n as u64)
    }

    /// Streams the snapshot as `(key_fn(key), hash)` chunks: key text, or its hash computed
    /// where it is read.
    pub async fn scan_snapshot<K: Send + 'static>(
        &self,
        model: &str,
        key_fn: fn(&str) -> K,
        tx: mpsc::Sender<Vec<(K, [u8; 16])>>,
    ) -> Result<(), StateError> {
        let conn = self.reader.clone().unwrap_or_else(|| self.conn.clone());
        let (model, name) = (model.to_string(), self.name.clone());
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            let scan = || -> rusqlite::Result<()> {
                let mut stmt = c.prepare("SELECT key, hash FROM ebb_snapshot WHERE model = ?1")?;
                let mut rows = stmt.query(params![model])?;
                let mut chunk = Vec::with_capacity(8192);
                while let Some(r) = rows.next()? {
                    chunk.push((key_fn(r.get_ref(0)?.as_str()?), hash16(r.get_ref(1)?.as_blob()?)));
                    if chunk.len() == 8192
                        && tx
                            .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(8192)))
                            .is_err()
                    {
                        return Ok(());
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(chunk);
                }
                Ok(())
            };
            scan().map_err(|e| StateError::Query(name, e.to_string()))
        })
        .await
        .map_err(|e| StateError::Query(self.name.clone(), e.to_string()))?
    }

    pub async fn record_ids(&self, model: &str, keys: &[String]) -> Result<HashMap<String, String>, StateError> {
        let (model, keys) = (model.to_string(), keys.to_vec());
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record_id FROM ebb_snapshot WHERE model = ?1 AND key = ?2 AND record_id IS NOT NULL",
            )?;
            let mut out = HashMap::new();
            for k in keys {
                if let Some(id) = stmt
                    .query_row(params![model, k], |r| r.get::<_, String>(0))
                    .optional()?
                {
                    out.insert(k, id);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn inflight(&self, model: &str) -> Result<Vec<InflightBatch>, StateError> {
        let m = model.to_string();
        let rows = self
            .with(move |c| {
                let mut stmt = c.prepare(
                    "SELECT run_id, batch, op, keys FROM ebb_inflight WHERE model = ?1 ORDER BY run_id, batch",
                )?;
                let rows = stmt.query_map(params![m], |r| {
                    let text = |i| r.get_ref(i).map(|v| v.as_str().ok().map(str::to_string));
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, text(2)?, text(3)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(run_id, batch, op, keys)| inflight_record(&self.name, model, run_id, batch, op, keys.as_deref()))
            .collect()
    }

    pub async fn apply(&self, model: &str, writes: Vec<StateWrite>) -> Result<(), StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            for w in &writes {
                apply_one(&tx, &model, w)?;
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

    pub async fn row_error_count(&self, model: &str) -> Result<u64, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT count(*) FROM ebb_row_errors WHERE model = ?1",
                params![model],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n as u64)
    }

    pub async fn snapshot_token(&self, model: &str) -> Result<Option<u64>, StateError> {
        let key = snapshot_token_key(model);
        let text: Option<String> = self
            .with(move |c| {
                c.query_row("SELECT value FROM ebb_meta WHERE key = ?1", params![key], |r| r.get(0))
                    .optional()
            })
            .await?;
        Ok(text.and_then(|t| t.parse().ok()))
    }

    pub async fn model_destination(&self, model: &str) -> Result<Option<String>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT destination FROM ebb_models WHERE model = ?1",
                params![model],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    pub async fn set_model_destination(&self, model: &str, destination: &str) -> Result<(), StateError> {
        let (model, destination) = (model.to_string(), destination.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO ebb_models (model, destination) VALUES (?1, ?2)
                 ON CONFLICT (model) DO UPDATE SET destination = excluded.destination",
                params![model, destination],
            )
            .map(drop)
        })
        .await
    }

    pub async fn lock(&self, model: &str, me: &LockHolder, lease: Duration) -> Result<LockOutcome, StateError> {
        let (model, me) = (model.to_string(), me.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = tx
                .query_row(
                    &format!("SELECT {LOCK_COLUMNS} FROM ebb_locks WHERE model = ?1"),
                    params![model],
                    lock_holder,
                )
                .optional()?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            if let Some(h) = &existing {
                if !may_take(h, &me, now_ms, lease) {
                    return Ok(LockOutcome::Held(h.clone()));
                }
            }
            tx.execute(
                "INSERT INTO ebb_locks (model, holder, host, pid, started, run_id, acquired_at, heartbeat_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (model) DO UPDATE SET holder = excluded.holder, host = excluded.host, pid = excluded.pid,
                    started = excluded.started, run_id = excluded.run_id, acquired_at = excluded.acquired_at,
                    heartbeat_ms = excluded.heartbeat_ms",
                params![
                    model,
                    me.id,
                    me.host,
                    me.pid,
                    me.started,
                    me.run_id,
                    me.acquired_at,
                    now_ms
                ],
            )?;
            tx.commit()?;
            Ok(LockOutcome::Acquired {
                took_over: existing.filter(|h| h.id != me.id),
            })
        })
        .await
    }

    pub async fn heartbeat(&self, model: &str, me: &LockHolder) -> Result<bool, StateError> {
        let (model, id) = (model.to_string(), me.id.clone());
        self.with(move |c| {
            c.execute(
                "UPDATE ebb_locks SET heartbeat_ms = ?3 WHERE model = ?1 AND holder = ?2",
                params![model, id, chrono::Utc::now().timestamp_millis()],
            )
            .map(|n| n == 1)
        })
        .await
    }

    pub async fn unlock(&self, model: &str, me: &LockHolder) -> Result<(), StateError> {
        let (model, id) = (model.to_string(), me.id.clone());
        self.with(move |c| {
            c.execute(
                "DELETE FROM ebb_locks WHERE model = ?1 AND holder = ?2",
                params![model, id],
            )
            .map(drop)
        })
        .await
    }

    pub async fn lock_holder(&self, model: &str) -> Result<Option<LockHolder>, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {LOCK_COLUMNS} FROM ebb_locks WHERE model = ?1"),
                params![model],
                lock_holder,
            )
            .optional()
        })
        .await
    }

    pub async fn forget(&self, model: &str) -> Result<u64, StateError> {
        let model = model.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM ebb_snapshot WHERE model = ?1", params![model])?;
            tx.execute("DELETE FROM ebb_inflight WHERE model = ?1", params![model])?;
            tx.execute("DELETE FROM ebb_row_errors WHERE model = ?1", params![model])?;
            tx.execute("DELETE FROM ebb_models WHERE model = ?1", params![model])?;
            tx.execute(
                "DELETE FROM ebb_meta WHERE key = ?1",
                params![snapshot_token_key(&model)],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}

fn apply_one(tx: &rusqlite::Transaction, model: &str, w: &StateWrite) -> rusqlite::Result<()> {
    match w {
        StateWrite::Inflight(b) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO ebb_inflight (model, run_id, batch, op, keys) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![model, b.run_id, b.batch, b.op, keys_text(&b.keys)])?;
        }
        StateWrite::SnapshotToken(token) => {
            tx.prepare_cached(
                "INSERT INTO ebb_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![snapshot_token_key(model), token.to_string()])?;
        }
        StateWrite::Settle { run_id, batch } => {
            tx.prepare_cached("DELETE FROM ebb_inflight WHERE model = ?1 AND run_id = ?2 AND batch = ?3")?
                .execute(params![model, run_id, batch])?;
        }
        StateWrite::Confirm { run_id, rows } => {
            let mut up = tx.prepare_cached(
                "INSERT INTO ebb_snapshot (model, key, hash, record_id, updated_run) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (model, key) DO UPDATE SET hash = excluded.hash,
                    record_id = COALESCE(excluded.record_id, ebb_snapshot.record_id), updated_run = excluded.updated_run",
            )?;
            // Most runs have no row errors: then there is nothing to delete row by row.
            let any_errors: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM ebb_row_errors WHERE model = ?1)")?
                .query_row(params![model], |r| r.get(0))?;
            let mut err = tx.prepare_cached("DELETE FROM ebb_row_errors WHERE model = ?1 AND key = ?2")?;
            // The model and the run are bound once: bindings last from one execution to the
            // next, and a first sync writes a million rows here.
            up.raw_bind_parameter(1, model)?;
            up.raw_bind_parameter(5, run_id)?;
            for (key, hash, record_id) in rows {
                up.raw_bind_parameter(2, key)?;
                up.raw_bind_parameter(3, &hash[..])?;
                up.raw_bind_parameter(4, record_id)?;
                up.raw_execute()?;
                if any_errors {
                    err.execute(params![model, key])?;
                }
            }
        }
        StateWrite::Remove { keys } => {
            let mut snap = tx.prepare_cached("DELETE FROM ebb_snapshot WHERE model = ?1 AND key = ?2")?;
            let mut err = tx.prepare_cached("DELETE FROM ebb_row_errors WHERE model = ?1 AND key = ?2")?;
            for key in keys {
                snap.execute(params![model, key])?;
                err.execute(params![model, key])?;
            }
        }
        StateWrite::Errors(errors) => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO ebb_row_errors (model, key, run_id, kind, code, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (model, key) DO UPDATE SET run_id = excluded.run_id, kind = excluded.kind,
                    code = excluded.code, message = excluded.message",
            )?;
            for e in errors {
                stmt.execute(params![model, e.key, e.run_id, e.kind, e.code, e.message])?;
            }
        }
        StateWrite::ClearInvalidBefore { run_id } => {
            tx.prepare_cached("DELETE FROM ebb_row_errors WHERE model = ?1 AND kind = 'invalid' AND run_id < ?2")?
                .execute(params![model, run_id])?;
        }
        StateWrite::ReplaceInflight { run_id, keep } => {
            tx.prepare_cached("DELETE FROM ebb_inflight WHERE model = ?1 AND run_id < ?2")?
                .execute(params![model, run_id])?;
            if let Some(b) = keep {
                apply_one(tx, model, &StateWrite::Inflight(b.clone()))?;
            }
        }
    }
    Ok(())
}

/// Opens the store at `path`, creating it only where no file is: a file that exists is
/// ebb's or an error, never started over (an empty one may be a truncated store, and a
/// new store would send every row of every model again).
fn open_blocking(path: &std::path::Path, name: &str) -> Result<Connection, StateError> {
    let open_err = |e: &dyn std::fmt::Display| StateError::Open(format!("{name}: {e}"));
    let conn = if path.as_os_str() == ":memory:" {
        let conn = Connection::open(path).map_err(|e| open_err(&e))?;
        create_schema(&conn).map_err(|e| open_err(&e))?;
        conn
    } else {
        if !path.try_exists().map_err(|e| open_err(&e))? {
            create_file(path, name)?;
        }
        Connection::open_with_flags(path, existing_flags()).map_err(|e| open_err(&e))?
    };
    let foreign = |why: String| StateError::Foreign(name.to_string(), why);
    // A file that is not SQLite fails on the first read. Nothing is written before the file
    // is known to be a store.
    conn.busy_timeout(Duration::from_secs(5)).map_err(|e| open_err(&e))?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| foreign(e.to_string()))?;
    if tables.is_empty() {
        let what = match std::fs::metadata(path) {
            Ok(m) if m.len() == 0 => "it is empty (0 bytes)".to_string(),
            _ => "it is an SQLite database without tables".to_string(),
        };
        return Err(foreign(format!(
            "{what}, as a truncated or replaced store would be; ebb does not start it over, since every \
             model's next run would then send every row again: restore the store from a backup, or delete \
             the file (and its -wal file) to start over with a new one"
        )));
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
    let missing: Vec<&str> = [
        "ebb_runs",
        "ebb_snapshot",
        "ebb_inflight",
        "ebb_row_errors",
        "ebb_locks",
        "ebb_models",
    ]
    .into_iter()
    .filter(|t| !tables.iter().any(|x| x == t))
    .collect();
    if !missing.is_empty() {
        return Err(foreign(format!("its tables {} are missing", missing.join(", "))));
    }
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .map_err(|e| foreign(e.to_string()))?;
    Ok(conn)
}

/// Flags for a store file that exists: read and write, never create (a file that vanished
/// is an error, not a new store).
fn existing_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// Creates the tables of the current version, with its `ebb_meta` rows, in one transaction.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    let ddl = schema_v1("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT", " WITHOUT ROWID");
    conn.execute_batch(&format!(
        "BEGIN; {ddl} INSERT INTO ebb_meta VALUES ('schema_version', '{SCHEMA_VERSION}'), ('created_by', 'ebb {}'); COMMIT;",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Creates a new store at `path`, which did not exist: built complete in a file of its own
/// beside it, then linked into place, so that `path` never exists without its tables (a
/// crash half-way leaves no empty store behind), and two processes creating it at once
/// both end up with the one that was linked first.
fn create_file(path: &std::path::Path, name: &str) -> Result<(), StateError> {
    let open_err = |e: &dyn std::fmt::Display| StateError::Open(format!("{name}: {e}"));
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(StateError::Foreign(
            name.to_string(),
            "the file is gone but its write-ahead log (-wal) is still there: the store was deleted or moved \
             without it; put the store back, or delete the -wal file to start over with a new store"
                .into(),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| open_err(&e))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{file}.new-{}-{nonce}", std::process::id()));
    let built = (|| -> Result<(), String> {
        let conn = Connection::open(&tmp).map_err(|e| e.to_string())?;
        create_schema(&conn).map_err(|e| e.to_string())?;
        conn.close().map_err(|(_, e)| e.to_string())?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| e.to_string())?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Another process created it first: that one is the store.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // A file system without hard links: a rename, which could replace a store
            // created in between, so only while there is still none.
            Err(_) if !path.exists() => std::fs::rename(&tmp, path).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    let mut journal = tmp.into_os_string();
    journal.push("-journal");
    let _ = std::fs::remove_file(journal);
    built.map_err(|e| open_err(&e))
}

//! One DuckDB database instance per file in this process while a table writer has it
//! open, shared by the writer and every query of the DuckDB source on the same file.
//!
//! Why: DuckDB is single-writer per file and locks the file with POSIX `fcntl` locks, which
//! belong to the process, not to the instance. A second instance of the same file in the
//! same process is therefore never refused: a read-only instance opened beside a
//! read-write one reads a stale or half-checkpointed file, and when it closes, its close
//! drops the process's lock, so another process can then open the file read-write beside
//! ours. (tests/table.rs shows the first part on DuckDB 1.2.) So while a writer is open, a
//! source query gets a connection of the writer's instance (`try_clone`), and a writer
//! waits for read-only instances of this process to finish before it opens the file.
//!
//! The instance is configured once, when the writer opens it, with the confinement the
//! source would apply to its own read-only instance (`configure`): project directory only,
//! no extension downloads, configuration locked. A source query on it changes nothing.
//!
//! It lives beside the DuckDB source, which owns that confinement; the table writer
//! (`destination::table::duckdb`) takes its leases from here.

use duckdb::{AccessMode, Config, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Why a file could not be leased.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot share the open database: {0}")]
    Share(#[source] duckdb::Error),
    #[error(
        "queries of this process kept reading `{}` for {}s: a DuckDB file has one writer, \
         which waits for them to end",
        path.display(),
        waited.as_secs()
    )]
    ReadersStayed { path: PathBuf, waited: Duration },
    #[error(
        "`{}` is open in another process ({reason}); a DuckDB file has one writer, and no reader \
         in another process while it is written",
        path.display()
    )]
    Locked { path: PathBuf, reason: String },
    #[error("`{}`: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    /// The writer's `configure` refused the new instance.
    #[error("{0}")]
    Configure(String),
}

/// How long a writer waits for this process's read-only queries of its file to end.
pub const READERS_WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct FileState {
    /// The read-write instance's first connection, while any lease of it lives.
    shared: Option<Connection>,
    /// Leases of `shared` (writers and source queries).
    leases: usize,
    /// Read-only instances of this process open on the file (source queries).
    readers: usize,
    /// Writers waiting for `readers` to reach 0.
    waiting_writers: usize,
}

struct Registry {
    files: Mutex<HashMap<PathBuf, FileState>>,
    changed: Condvar,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        files: Mutex::new(HashMap::new()),
        changed: Condvar::new(),
    })
}

fn lock(r: &Registry) -> MutexGuard<'_, HashMap<PathBuf, FileState>> {
    r.files.lock().unwrap_or_else(|e| e.into_inner())
}

/// The file's identity: its real path (links resolved; a file not created yet by its
/// directory's real path).
pub fn file_key(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir).map(|d| d.join(name)).unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// A connection of the shared read-write instance; the instance closes when the last
/// lease is dropped.
pub struct Lease {
    conn: Option<Connection>,
    key: PathBuf,
}

impl Lease {
    pub fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The connection goes before the instance's last one.
        drop(self.conn.take());
        let r = registry();
        let mut files = lock(r);
        if let Some(st) = files.get_mut(&self.key) {
            st.leases -= 1;
            if st.leases == 0 {
                st.shared = None;
            }
            if st.leases == 0 && st.readers == 0 && st.waiting_writers == 0 {
                files.remove(&self.key);
            }
        }
        r.changed.notify_all();
    }
}

/// Keeps a read-only instance of this process counted while it is open.
pub struct ReaderSlot {
    key: PathBuf,
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        let r = registry();
        let mut files = lock(r);
        if let Some(st) = files.get_mut(&self.key) {
            st.readers -= 1;
            if st.leases == 0 && st.readers == 0 && st.waiting_writers == 0 {
                files.remove(&self.key);
            }
        }
        r.changed.notify_all();
    }
}

/// How a source query reads the file.
pub enum ReadAccess {
    /// A connection of the writer's instance, already configured.
    Shared(Lease),
    /// No writer here: open a read-only instance of your own, and keep the slot until it is
    /// closed.
    Own(ReaderSlot),
}

/// For a source query of `path`: a lease of the writer's instance when a writer has the
/// file open, else a slot for an instance of its own. Never waits (it is called on the
/// runtime's threads): a query that comes while a writer waits for the others opens its
/// own instance too, and the writer waits for it as well.
pub fn read(path: &Path) -> Result<ReadAccess, FileError> {
    let key = file_key(path);
    let mut files = lock(registry());
    let st = files.entry(key.clone()).or_default();
    if let Some(shared) = &st.shared {
        let conn = shared.try_clone().map_err(FileError::Share)?;
        st.leases += 1;
        return Ok(ReadAccess::Shared(Lease { conn: Some(conn), key }));
    }
    st.readers += 1;
    Ok(ReadAccess::Own(ReaderSlot { key }))
}

/// For a writer of `path`: a lease of the process's read-write instance of the file,
/// opened (and configured by `configure`) when no lease exists. Waits up to `wait` for
/// read-only instances of this process to close first.
pub fn write(
    path: &Path,
    wait: Duration,
    configure: impl FnOnce(&Connection) -> Result<(), String>,
) -> Result<Lease, FileError> {
    let key = file_key(path);
    let r = registry();
    let mut files = lock(r);
    let deadline = Instant::now() + wait;
    let mut configure = Some(configure);
    files.entry(key.clone()).or_default().waiting_writers += 1;
    let result = loop {
        let st = files.entry(key.clone()).or_default();
        if let Some(shared) = &st.shared {
            break shared.try_clone().map_err(FileError::Share);
        }
        if st.readers == 0 {
            // Opened under the lock: nobody else opens this file meanwhile.
            let configure = configure.take().expect("the instance is opened once");
            break open_read_write(path).and_then(|conn| {
                configure(&conn).map_err(FileError::Configure)?;
                let lease = conn.try_clone().map_err(FileError::Share)?;
                st.shared = Some(conn);
                Ok(lease)
            });
        }
        let now = Instant::now();
        if now >= deadline {
            break Err(FileError::ReadersStayed {
                path: path.to_path_buf(),
                waited: wait,
            });
        }
        files = r
            .changed
            .wait_timeout(files, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    };
    let st = files.entry(key.clone()).or_default();
    st.waiting_writers -= 1;
    let out = match result {
        Ok(conn) => {
            st.leases += 1;
            Ok(Lease { conn: Some(conn), key })
        }
        Err(e) => {
            if st.leases == 0 && st.readers == 0 && st.waiting_writers == 0 {
                files.remove(&key);
            }
            Err(e)
        }
    };
    r.changed.notify_all();
    out
}

fn open_read_write(path: &Path) -> Result<Connection, FileError> {
    let refused = |e: duckdb::Error| {
        let msg = e.to_string();
        let reason = msg.lines().next().unwrap_or(&msg).trim().to_string();
        let path = path.to_path_buf();
        if reason.contains("Could not set lock") {
            FileError::Locked { path, reason }
        } else {
            FileError::Open { path, reason }
        }
    };
    let config = Config::default().access_mode(AccessMode::ReadWrite).map_err(refused)?;
    Connection::open_with_flags(path, config).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_share_an_open_writer_s_instance_and_a_writer_waits_for_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        assert!(matches!(read(&path).unwrap(), ReadAccess::Own(_)));
        let lease = write(&path, Duration::from_secs(1), |_| Ok(())).unwrap();
        lease.conn().execute_batch("CREATE TABLE t AS SELECT 1 AS i").unwrap();
        // By another spelling of the same file.
        let same = dir.path().join(".").join("w.duckdb");
        match read(&same).unwrap() {
            ReadAccess::Shared(l) => {
                let n: i64 = l.conn().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
                assert_eq!(n, 1);
            }
            ReadAccess::Own(_) => panic!("a query opened its own instance beside the writer's"),
        }
        drop(lease);
        // A query on an instance of its own holds a writer back, up to its wait.
        let slot = read(&path).unwrap();
        assert!(matches!(slot, ReadAccess::Own(_)));
        let e = write(&path, Duration::from_millis(100), |_| Ok(())).err().unwrap();
        assert!(matches!(e, FileError::ReadersStayed { .. }), "{e}");
        assert!(e.to_string().contains("kept reading"), "{e}");
        drop(slot);
        let again = write(&path, Duration::from_millis(100), |_| Ok(())).unwrap();
        let n: i64 = again
            .conn()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}

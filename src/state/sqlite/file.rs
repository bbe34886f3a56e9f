//! The store's file: opened only if it is an ebb store of a version this ebb reads, created
//! only where no file is, and then built complete beside its place and linked in, so that a
//! crash never leaves an empty store behind.

use crate::state::{schema_v1, StateError, SCHEMA_VERSION};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::PathBuf;
use std::time::Duration;

/// Opens the store at `path`, creating it only where no file is: a file that exists is
/// ebb's or an error, never started over (an empty one may be a truncated store, and a
/// new store would send every row of every model again).
pub(super) fn open_blocking(path: &std::path::Path, name: &str) -> Result<Connection, StateError> {
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
    // A new store is WAL already (the mode is kept in the file): switching takes a lock
    // that processes opening the store at once would contend for, without waiting.
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| foreign(e.to_string()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.execute_batch("PRAGMA journal_mode = WAL;")
            .map_err(|e| foreign(e.to_string()))?;
    }
    // Checkpoints every 64 MiB of log rather than SQLite's 4 MiB: each one syncs the file
    // twice, and a first sync of a million rows writes some 150 MiB of log (snapshot rows,
    // in-flight records, audit entries), much of it pages written again and again (the
    // snapshot's last leaf), which a checkpoint copies once. The log file is cut back to
    // that size after a checkpoint.
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 16384; PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(|e| foreign(e.to_string()))?;
    Ok(conn)
}

/// Flags for a store file that exists: read and write, never create (a file that vanished
/// is an error, not a new store).
pub(super) fn existing_flags() -> OpenFlags {
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
    // SQLite's errors or the file system's, shown as they are.
    let built = (|| -> Result<(), Box<dyn std::error::Error>> {
        let conn = Connection::open(&tmp)?;
        // WAL from the start: the mode is kept in the file, so no opener has to switch it.
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        create_schema(&conn)?;
        conn.close().map_err(|(_, e)| e)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all())?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Another process created it first: that one is the store.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // A file system without hard links: a rename, which could replace a store
            // created in between, so only while there is still none.
            Err(_) if !path.exists() => Ok(std::fs::rename(&tmp, path)?),
            Err(e) => Err(e.into()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    let mut journal = tmp.into_os_string();
    journal.push("-journal");
    let _ = std::fs::remove_file(journal);
    built.map_err(|e| open_err(&e))
}

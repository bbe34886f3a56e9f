//! DuckDB source: the embedded warehouse. The database file is opened read-only (several
//! ebb processes can read it at once), relative paths in queries (`read_parquet('x')`,
//! CSV files) resolve against the project directory, and the result is streamed chunk by
//! chunk (`duckdb_execute_prepared_streaming`), never materialised whole.
//!
//! A model's query is confined: it reads the database and files inside the project
//! directory only (DuckDB's `enable_external_access = false` with the project as its one
//! `allowed_directories` entry), unless the connection says `external_access: true`; DuckDB
//! never downloads an extension (`autoinstall_known_extensions = false`); and the
//! configuration is locked (`lock_configuration`), so the query cannot `SET` any of it back.
//! DuckDB judges each file by its real path (links resolved), so a symbolic link inside the
//! project that points out of it is refused like the file it points at.
//!
//! While a table writer of this process has the file open, a query reads through the
//! writer's instance instead of opening its own (`source::duckdb_files`:
//! DuckDB does not keep two instances of one file in one process apart), and sees every
//! write committed.

use super::duckdb_files;
use super::{channel, BatchStream, Producer, SourceError};
use crate::config::project::DuckdbConnection;
use arrow::datatypes::SchemaRef;
use duckdb::{AccessMode, Config, Connection};
use std::path::{Path, PathBuf};

/// An embedded DuckDB database.
pub struct DuckdbSource {
    /// `None` for `:memory:`.
    path: Option<PathBuf>,
    project_dir: PathBuf,
    memory_limit: Option<String>,
    /// Queries may read files outside the project and autoload installed extensions.
    external_access: bool,
}

impl DuckdbSource {
    pub fn new(c: &DuckdbConnection, project_dir: &Path) -> Self {
        let path = (c.path != ":memory:").then(|| project_dir.join(&c.path));
        DuckdbSource {
            path,
            project_dir: project_dir.to_path_buf(),
            memory_limit: c.memory_limit.clone(),
            external_access: c.external_access == Some(true),
        }
    }

    fn connect(&self) -> Result<Conn, SourceError> {
        let (conn, slot) = match &self.path {
            None => (
                Connection::open_in_memory().map_err(|e| SourceError::Connect(first_line(&e.to_string())))?,
                None,
            ),
            Some(p) => {
                if !p.is_file() {
                    return Err(SourceError::Connect(format!(
                        "the database file `{}` does not exist (the demo warehouse is built by `ebb demo`)",
                        p.display()
                    )));
                }
                // A table writer of this process has the file open: read through its
                // instance (see `duckdb_files`), configured when it opened.
                let slot = match duckdb_files::read(p).map_err(|e| SourceError::Connect(e.to_string()))? {
                    duckdb_files::ReadAccess::Shared(lease) => return Ok(Conn::Shared(lease)),
                    duckdb_files::ReadAccess::Own(slot) => slot,
                };
                let config = Config::default()
                    .access_mode(AccessMode::ReadOnly)
                    .map_err(|e| SourceError::Connect(e.to_string()))?;
                let conn = Connection::open_with_flags(p, config)
                    .map_err(|e| SourceError::Connect(format!("`{}`: {}", p.display(), first_line(&e.to_string()))))?;
                (conn, Some(slot))
            }
        };
        configure(
            &conn,
            &self.project_dir,
            self.memory_limit.as_deref(),
            self.external_access,
        )
        .map_err(SourceError::Connect)?;
        Ok(Conn::Own(conn, slot))
    }

    fn project_root(&self) -> String {
        project_root(&self.project_dir)
    }

    /// The columns of `sql`: the query runs with `LIMIT 0`.
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef, SourceError> {
        let wrapped = format!("SELECT * FROM ({}) AS ebb_describe LIMIT 0", strip_semicolon(sql));
        let mut stream = self.query(&wrapped, 0).await?;
        let schema = stream.schema();
        while let Some(b) = stream.next().await {
            b?;
        }
        Ok(schema)
    }

    /// Runs `sql` on a thread of its own and streams the result.
    pub async fn query(&self, sql: &str, _batch_rows: usize) -> Result<BatchStream, SourceError> {
        let conn = self.connect()?;
        let mut sql = strip_semicolon(sql).to_string();
        if !self.external_access {
            sql = absolute_paths(&sql, &self.project_root());
        }
        let external = self.external_access;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ebb-duckdb".into())
            .spawn(move || {
                let conn = conn.get();
                let mut stmt = match conn.prepare(&sql) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(query_error(&e, external)));
                        return;
                    }
                };
                let stream = match stmt.stream_arrow([]) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(query_error(&e, external)));
                        return;
                    }
                };
                let (sender, batches) = channel(stream.get_schema());
                if ready_tx.send(Ok(batches)).is_err() {
                    return;
                }
                let interrupt = conn.interrupt_handle();
                let mut sent = 0u64;
                for batch in stream {
                    let item = batch.map_err(|e| query_error(&e, external));
                    let failed = item.is_err();
                    if !sender.blocking_send(item) {
                        interrupt.interrupt();
                        return;
                    }
                    if failed {
                        return;
                    }
                    sent += 1;
                    super::fault::after_batch(&sql, sent);
                }
                sender.blocking_end();
            })
            .map_err(|e| SourceError::Query(format!("cannot start the query thread: {e}")))?;
        let mut stream = ready_rx
            .await
            .unwrap_or_else(|_| Err(SourceError::Query("the query thread ended unexpectedly".into())))?;
        stream.set_producer(Producer::Thread(thread));
        Ok(stream)
    }
}

/// A connection of the source: an instance of its own (with its slot in the process's
/// registry of DuckDB files), or one of a table writer's instance.
enum Conn {
    /// The slot is held, not read: dropping it says the instance is closed.
    Own(Connection, #[allow(dead_code)] Option<duckdb_files::ReaderSlot>),
    Shared(duckdb_files::Lease),
}

impl Conn {
    fn get(&self) -> &Connection {
        match self {
            Conn::Own(c, _) => c,
            Conn::Shared(l) => l.conn(),
        }
    }
}

/// The project directory, absolute and without symbolic links (DuckDB compares the
/// canonical path of each file a query opens with it).
fn project_root(project_dir: &Path) -> String {
    let dir = std::fs::canonicalize(project_dir)
        .or_else(|_| std::path::absolute(project_dir))
        .unwrap_or_else(|_| project_dir.to_path_buf());
    dir.display().to_string()
}

/// Confines a new DuckDB instance as a model's queries need (see the module doc), then
/// locks its configuration. The settings are global, so a table writer applies them to the
/// read-write instance it shares with source queries (`duckdb_files`).
pub(crate) fn configure(
    conn: &Connection,
    project_dir: &Path,
    memory_limit: Option<&str>,
    external_access: bool,
) -> Result<(), String> {
    let dir = project_root(project_dir);
    conn.execute_batch(&format!("SET GLOBAL file_search_path = {}", quote(&dir)))
        .map_err(|e| e.to_string())?;
    if let Some(limit) = memory_limit {
        conn.execute_batch(&format!("SET memory_limit = {}", quote(limit)))
            .map_err(|e| format!("`memory_limit: {limit}`: {}", first_line(&e.to_string())))?;
    }
    // Last: once the configuration is locked, nothing changes it.
    let mut confine = String::from("SET autoinstall_known_extensions = false; SET allow_community_extensions = false;");
    if !external_access {
        // The project directory with a trailing `/`, so that `/p/project2` is not inside
        // `/p/project`. Turning external access off keeps the attached database readable.
        let allowed = format!("{}/", dir.trim_end_matches('/'));
        confine.push_str(&format!(
            " SET autoload_known_extensions = false; SET allowed_directories = [{}];
              SET enable_external_access = false;",
            quote(&allowed)
        ));
    }
    confine.push_str(" SET lock_configuration = true;");
    conn.execute_batch(&confine)
        .map_err(|e| format!("cannot confine DuckDB: {}", first_line(&e.to_string())))
}

/// The table functions whose first argument (a path, or a list of paths) names files.
const FILE_FUNCTIONS: &[&str] = &[
    "read_csv",
    "read_csv_auto",
    "read_parquet",
    "parquet_scan",
    "read_json",
    "read_json_auto",
    "read_json_objects",
    "read_json_objects_auto",
    "read_ndjson",
    "read_ndjson_auto",
    "read_ndjson_objects",
    "read_text",
    "read_blob",
    "glob",
    "parquet_metadata",
    "parquet_schema",
    "parquet_file_metadata",
    "parquet_kv_metadata",
    "sniff_csv",
];

/// `sql` with the relative paths it reads made absolute against the project `root`: the
/// string literals passed as the first argument of a file function (`read_csv('data/x.csv')`,
/// `read_parquet(['a.parquet', 'b.parquet'])`) or scanned as a table (`FROM 'x.csv'`).
///
/// DuckDB checks a file against `allowed_directories` by its path as written, before it
/// resolves a relative one against `file_search_path`: a relative path would be refused (and
/// its `..` cannot be judged), an absolute one is judged exactly (`/p/data/../../x` is `/x`).
/// Only those literals change; the rest of the text is kept byte for byte. A relative path
/// not recognised here (built by an expression) stays relative and is refused.
fn absolute_paths(sql: &str, root: &str) -> String {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = sqlparser::dialect::DuckDbDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get((line as usize).checked_sub(1)?)?;
        let rest = &sql[start..];
        Some(start + rest.char_indices().nth((column as usize).checked_sub(1)?)?.0)
    };
    let significant: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let is_file_fn = |t: &Token| {
        matches!(t, Token::Word(w) if w.quote_style.is_none()
        && FILE_FUNCTIONS.contains(&w.value.to_ascii_lowercase().as_str()))
    };
    let is_keyword = |t: &Token, k: &str| {
        matches!(t, Token::Word(w) if w.quote_style.is_none()
        && w.value.eq_ignore_ascii_case(k))
    };
    let mut in_list = false;
    let mut replace: Vec<(usize, String)> = Vec::new();
    for (i, t) in significant.iter().enumerate() {
        let back = |n: usize| i.checked_sub(n).map(|j| &significant[j].token);
        match &t.token {
            Token::LBracket if back(1) == Some(&Token::LParen) && back(2).is_some_and(is_file_fn) => in_list = true,
            Token::RBracket => in_list = false,
            Token::SingleQuotedString(path) => {
                let first_arg = back(1) == Some(&Token::LParen) && back(2).is_some_and(is_file_fn);
                let listed = in_list && matches!(back(1), Some(Token::LBracket | Token::Comma));
                let scanned = back(1).is_some_and(|p| is_keyword(p, "FROM") || is_keyword(p, "JOIN"));
                let relative = !path.is_empty() && !path.starts_with(['/', '~']) && !path.contains("://");
                if (first_arg || listed || scanned) && relative {
                    if let Some(at) = offset(t.span.start.line, t.span.start.column) {
                        replace.push((at, format!("{}/{path}", root.trim_end_matches('/'))));
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = String::with_capacity(sql.len() + replace.len() * root.len());
    let mut done = 0;
    for (at, path) in replace {
        // The literal runs from its quote to the next quote not doubled.
        let Some(end) = literal_end(sql, at) else {
            return sql.to_string();
        };
        out.push_str(&sql[done..at]);
        out.push_str(&quote(&path));
        done = end;
    }
    out.push_str(&sql[done..]);
    out
}

/// The end (exclusive) of the string literal whose opening quote is at `at`.
fn literal_end(sql: &str, at: usize) -> Option<usize> {
    let b = sql.as_bytes();
    if b.get(at) != Some(&b'\'') {
        return None;
    }
    let mut i = at + 1;
    while i < b.len() {
        if b[i] == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// `s` as an SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A query's error, with what to do when it read a file outside the project.
fn query_error(e: &duckdb::Error, external_access: bool) -> SourceError {
    let msg = first_line(&e.to_string());
    if !external_access && msg.contains("Permission Error") && msg.contains("disabled by configuration") {
        return SourceError::Query(format!(
            "{msg}: queries on this connection read only files inside the project directory \
             (`external_access: true` on the duckdb connection lets them read others)"
        ));
    }
    SourceError::Query(msg)
}

fn strip_semicolon(sql: &str) -> &str {
    sql.trim_end().trim_end_matches(';').trim_end()
}

/// DuckDB's messages carry a multi-line context; the first line says what happened.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

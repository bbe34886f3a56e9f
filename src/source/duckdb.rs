//! DuckDB source: the embedded warehouse. The database file is opened read-only (several
//! ebb processes can read it at once), relative paths in queries (`read_parquet('x')`,
//! CSV files) resolve against the project directory, and the result is streamed chunk by
//! chunk (`duckdb_execute_prepared_streaming`), never materialised whole.

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
}

impl DuckdbSource {
    pub fn new(c: &DuckdbConnection, project_dir: &Path) -> Self {
        let path = (c.path != ":memory:").then(|| project_dir.join(&c.path));
        DuckdbSource {
            path,
            project_dir: project_dir.to_path_buf(),
            memory_limit: c.memory_limit.clone(),
        }
    }

    fn connect(&self) -> Result<Connection, SourceError> {
        let conn = match &self.path {
            None => Connection::open_in_memory().map_err(|e| SourceError::Connect(first_line(&e.to_string())))?,
            Some(p) => {
                if !p.is_file() {
                    return Err(SourceError::Connect(format!(
                        "the database file `{}` does not exist (the demo warehouse is built by `ebb demo`)",
                        p.display()
                    )));
                }
                let config = Config::default()
                    .access_mode(AccessMode::ReadOnly)
                    .map_err(|e| SourceError::Connect(e.to_string()))?;
                Connection::open_with_flags(p, config)
                    .map_err(|e| SourceError::Connect(format!("`{}`: {}", p.display(), first_line(&e.to_string()))))?
            }
        };
        let dir = self.project_dir.display().to_string().replace('\'', "''");
        conn.execute_batch(&format!("SET file_search_path = '{dir}'"))
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        if let Some(limit) = &self.memory_limit {
            conn.execute_batch(&format!("SET memory_limit = '{}'", limit.replace('\'', "''")))
                .map_err(|e| {
                    SourceError::Connect(format!("`memory_limit: {limit}`: {}", first_line(&e.to_string())))
                })?;
        }
        Ok(conn)
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
        let sql = strip_semicolon(sql).to_string();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ebb-duckdb".into())
            .spawn(move || {
                let mut stmt = match conn.prepare(&sql) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SourceError::Query(first_line(&e.to_string()))));
                        return;
                    }
                };
                let stream = match stmt.stream_arrow([]) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SourceError::Query(first_line(&e.to_string()))));
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
                    let item = batch.map_err(|e| SourceError::Query(first_line(&e.to_string())));
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

fn strip_semicolon(sql: &str) -> &str {
    sql.trim_end().trim_end_matches(';').trim_end()
}

/// DuckDB's messages carry a multi-line context; the first line says what happened.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

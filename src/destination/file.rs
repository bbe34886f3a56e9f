//! The `file` destination: JSON Lines, one file per run.
//!
//! A run of model `m` with id `n` writes `<path>/m-n.jsonl`, one line per record:
//! `{"op":"upsert","key":"…","record":{…}}`, where `record` is the payload verbatim. The file
//! is created at the first batch, so a run that sends nothing leaves no file. Each batch is
//! appended and handed to the operating system before its records are confirmed (no fsync
//! per batch: a crash of the machine, not of `ebb`, may lose the tail, which the next run
//! re-sends as unconfirmed); [`FileDestination::finish`] fsyncs.
//!
//! Files are written from tokio's blocking pool, so a slow disk does not stall the runtime.

use super::{Batch, Outcome, SendError};
use crate::config::env::expand_env;
use crate::config::project::FileConnection;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open `file` connection for one run of one model.
#[derive(Debug)]
pub struct FileDestination {
    path: PathBuf,
    /// Opened at the first batch.
    file: Arc<Mutex<Option<File>>>,
}

impl FileDestination {
    /// Prepares run `run_id` of `model`: creates the directory (`c.path`, relative to
    /// `project_dir`, `${VAR}` expanded) if it is missing.
    pub async fn open(c: &FileConnection, project_dir: &Path, model: &str, run_id: i64) -> Result<Self, String> {
        let dir = project_dir.join(expand_env(&c.path).map_err(|e| format!("`path: {}`: {e}", c.path))?);
        let path = dir.join(format!("{model}-{run_id}.jsonl"));
        let shown = dir.clone();
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(&dir))
            .await
            .map_err(|e| format!("cannot create directory `{}`: {e}", shown.display()))?
            .map_err(|e| format!("cannot create directory `{}`: {e}", shown.display()))?;
        Ok(FileDestination {
            path,
            file: Arc::new(Mutex::new(None)),
        })
    }

    /// The file this run writes (it exists once a batch was sent).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the batch's lines and confirms every record.
    pub async fn send(&self, batch: &Batch) -> Result<Vec<Outcome>, SendError> {
        let text = lines(batch);
        let file = self.file.clone();
        let path = self.path.clone();
        self.blocking(move || {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            if file.is_none() {
                *file = Some(OpenOptions::new().create(true).append(true).open(&path)?);
            }
            let f = file
                .as_mut()
                .ok_or_else(|| std::io::Error::other("the file is not open"))?;
            f.write_all(text.as_bytes())?;
            f.flush()
        })
        .await
        .map_err(SendError::Fatal)?;
        Ok(vec![Outcome::Confirmed { record_id: None }; batch.records.len()])
    }

    /// Fsyncs and closes the file (and its directory entry), if the run wrote one.
    pub async fn finish(&self) -> Result<(), String> {
        let file = self.file.clone();
        let path = self.path.clone();
        self.blocking(move || {
            let Some(f) = file.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return Ok(());
            };
            f.sync_all()?;
            drop(f);
            // The file is new: its directory entry must reach the disk too.
            #[cfg(unix)]
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
    }

    /// Runs `io` on the blocking pool; an error names the file.
    async fn blocking(&self, io: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<(), String> {
        let shown = self.path.display().to_string();
        match tokio::task::spawn_blocking(io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot write `{shown}`: {e}")),
            Err(e) => Err(format!("writing `{shown}` failed: {e}")),
        }
    }
}

/// The batch as JSON Lines, each line ending in `\n`.
fn lines(batch: &Batch) -> String {
    let op = batch.op.as_str();
    let mut text = String::new();
    for r in &batch.records {
        text.push_str("{\"op\":\"");
        text.push_str(op);
        text.push_str("\",\"key\":");
        text.push_str(&Value::String(r.key.clone()).to_string());
        text.push_str(",\"record\":");
        text.push_str(&r.payload);
        text.push_str("}\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{Op, Record};

    #[test]
    fn one_line_per_record_with_the_payload_verbatim() {
        let batch = Batch {
            model: "m".into(),
            run_id: 1,
            op: Op::Delete,
            key_field: "id".into(),
            records: vec![
                Record {
                    key: "a\"1".into(),
                    payload: r#"{"id":"a\"1"}"#.into(),
                    record_id: None,
                },
                Record {
                    key: "2".into(),
                    payload: r#"{"id":2, "x":1.50}"#.into(),
                    record_id: Some("r2".into()),
                },
            ],
        };
        assert_eq!(
            lines(&batch),
            "{\"op\":\"delete\",\"key\":\"a\\\"1\",\"record\":{\"id\":\"a\\\"1\"}}\n{\"op\":\"delete\",\"key\":\"2\",\"record\":{\"id\":2, \"x\":1.50}}\n"
        );
    }
}

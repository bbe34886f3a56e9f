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
//!
//! ebb never writes through a symbolic link: the directories of `path` inside the project
//! (for a path outside it, the last directory) must not be links, and are checked when the
//! run opens and again before the file is opened; the file is created exclusively (which
//! fails on a link), or, if it exists, must be a regular file that is the one opened.

use super::{Batch, Outcome, SendError};
use crate::config::env::expand_env;
use crate::config::project::FileConnection;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why the export's directory or file could not be made or written. Each names its path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// `path:` does not expand (a variable is unset).
    #[error("`path: {path}`: {why}")]
    Path { path: String, why: String },
    /// The export directory cannot be created, or a part of it is a link or a file.
    #[error("cannot create directory `{}`: {why}", .dir.display())]
    CreateDir { dir: PathBuf, why: String },
    /// Writing, flushing or fsyncing the file failed.
    #[error("cannot write `{}`: {source}", .file.display())]
    Write {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blocking task doing the IO failed (it panicked).
    #[error("writing `{}` failed: {why}", .file.display())]
    Task { file: PathBuf, why: String },
}

/// An open `file` connection for one run of one model.
#[derive(Debug)]
pub struct FileDestination {
    path: PathBuf,
    /// Where the symlink checks start, and the export directory.
    dir_check: Box<(PathBuf, PathBuf)>,
    /// Opened at the first batch.
    file: Arc<Mutex<Option<File>>>,
}

impl FileDestination {
    /// Prepares run `run_id` of `model`: creates the directory (`c.path`, relative to
    /// `project_dir`, `${VAR}` expanded) if it is missing.
    pub async fn open(c: &FileConnection, project_dir: &Path, model: &str, run_id: i64) -> Result<Self, FileError> {
        let dir = project_dir.join(expand_env(&c.path).map_err(|e| FileError::Path {
            path: c.path.clone(),
            why: e.to_string(),
        })?);
        let path = dir.join(format!("{model}-{run_id}.jsonl"));
        // The directories ebb checks are those inside the project (or, for a path outside
        // it, the last one): none may be a symbolic link, lest the export land elsewhere.
        let base = base_of(&dir, project_dir);
        let rel = dir.strip_prefix(&base).unwrap_or(Path::new("")).to_path_buf();
        let shown = dir.clone();
        let start = base.clone();
        tokio::task::spawn_blocking(move || create_dirs_no_links(&start, &rel))
            .await
            .map_err(|e| FileError::CreateDir {
                dir: shown,
                why: e.to_string(),
            })??;
        Ok(FileDestination {
            path,
            dir_check: Box::new((base, dir)),
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
        let check = self.dir_check.clone();
        self.blocking(move || {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            if file.is_none() {
                *file = Some(open_no_links(&check.0, &check.1, &path)?);
            }
            let f = file
                .as_mut()
                .ok_or_else(|| std::io::Error::other("the file is not open"))?;
            f.write_all(text.as_bytes())?;
            f.flush()
        })
        .await
        .map_err(|e| SendError::Fatal(e.to_string()))?;
        Ok(vec![Outcome::Confirmed { record_id: None }; batch.records.len()])
    }

    /// Fsyncs and closes the file (and its directory entry), if the run wrote one.
    pub async fn finish(&self) -> Result<(), FileError> {
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
    async fn blocking(&self, io: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<(), FileError> {
        match tokio::task::spawn_blocking(io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(FileError::Write {
                file: self.path.clone(),
                source,
            }),
            Err(e) => Err(FileError::Task {
                file: self.path.clone(),
                why: e.to_string(),
            }),
        }
    }
}

/// Where the symlink checks of `dir` start: the project, or for a directory outside it, its
/// parent.
fn base_of(dir: &Path, project_dir: &Path) -> PathBuf {
    if dir.starts_with(project_dir) {
        project_dir.to_path_buf()
    } else {
        dir.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf())
    }
}

/// An error about a symbolic link where ebb writes.
fn link_error(link: &Path) -> std::io::Error {
    std::io::Error::other(format!(
        "`{}` is a symbolic link; ebb does not write exports through links (they could point outside the export directory)",
        link.display()
    ))
}

/// Creates `base/rel` one directory at a time, refusing any component of `rel` that is a
/// symbolic link (`..` steps back up a directory already checked).
fn create_dirs_no_links(base: &Path, rel: &Path) -> Result<(), FileError> {
    let dir = base.join(rel);
    let fail = |why: String| FileError::CreateDir { dir: dir.clone(), why };
    let mut at = base.to_path_buf();
    for part in rel.components() {
        at.push(part);
        if !matches!(part, std::path::Component::Normal(_)) {
            continue;
        }
        let meta = match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&at) {
                Ok(()) => continue,
                // Created meanwhile by another run: checked below.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::symlink_metadata(&at),
                Err(e) => Err(e),
            },
            other => other,
        }
        .map_err(|e| fail(format!("`{}`: {e}", at.display())))?;
        if meta.file_type().is_symlink() {
            return Err(fail(link_error(&at).to_string()));
        }
        if !meta.is_dir() {
            return Err(fail(format!("`{}` is a file, not a directory", at.display())));
        }
    }
    Ok(())
}

/// Opens the run's file for appending without following a symbolic link: its directories
/// (from `base` down to `dir`) are checked again, a new file is created exclusively (which
/// fails on any link, even a dangling one), and an existing one must be a regular file that
/// is the very file opened.
fn open_no_links(base: &Path, dir: &Path, path: &Path) -> std::io::Result<File> {
    let rel = dir.strip_prefix(base).unwrap_or(Path::new(""));
    let mut at = base.to_path_buf();
    for part in rel.components() {
        at.push(part);
        if matches!(part, std::path::Component::Normal(_)) && std::fs::symlink_metadata(&at)?.file_type().is_symlink() {
            return Err(link_error(&at));
        }
    }
    match OpenOptions::new().create_new(true).append(true).open(path) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let before = std::fs::symlink_metadata(path)?;
    if before.file_type().is_symlink() {
        return Err(link_error(path));
    }
    if !before.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let f = OpenOptions::new().append(true).open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let opened = f.metadata()?;
        if (opened.dev(), opened.ino()) != (before.dev(), before.ino()) {
            // Swapped for something else between the check and the open.
            return Err(link_error(path));
        }
    }
    Ok(f)
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

//! The key log kept beside a model's diff table: key hash → key text for the keys of the
//! snapshot, so that a run finds the text of the keys that left the model (to delete,
//! clear or forget them) without reading the whole snapshot from the state store.
//!
//! The diff table ([`super::table`]) holds only key hashes. A run knows which of them it did
//! not see; their text is what it needs. The log is a file of records `(hash, length, text)`
//! after a 16-byte head (magic, a record count kept as a hint). Deliveries append the keys
//! they send that the table does not hold yet; a run that has to read the snapshot from
//! the store (the log lacks a key it needs) writes the log anew from what it read.
//!
//! The log is a dictionary, never the truth: every record says of a hash what the hash's
//! own key is (the text is checked against the hash when found), so extra or stale records
//! (rows rejected, forgotten, reset) do no harm, and a missing record only sends the run
//! back to the state store. A torn tail (a crash mid-append) ends the records read there.
//! All file IO runs off the async runtime.

use super::table::{key_hash, KeySet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"EBBKEYS1";
/// The head: the magic and the record count (a hint for when to start over).
const HEAD: usize = 16;
/// Bytes gathered before they are written.
const CHUNK: usize = 1 << 20;
/// Keys longer than this are not logged (a run needing one reads the store).
const MAX_KEY: usize = 1 << 16;

/// An open log being appended to, or written anew beside its place.
pub(super) struct KeyLog {
    path: PathBuf,
    /// Written anew: the file being built, renamed to `path` by [`KeyLog::finish`].
    tmp: Option<PathBuf>,
    /// The file between writes (`None` while a write has it, or once it failed).
    file: Option<File>,
    writing: Option<tokio::task::JoinHandle<std::io::Result<File>>>,
    buf: Vec<u8>,
    /// Records in the file, with those buffered.
    entries: u64,
    failed: Option<std::io::Error>,
}

impl KeyLog {
    /// Opens the log at `path` to append to. It starts over (empty) when `start_over` is
    /// set (the snapshot is empty), when it is missing or not a log, or when it holds many
    /// more records than the `live` keys of the snapshot (the run that next needs it reads
    /// the store once and writes it anew).
    pub(super) async fn append(path: PathBuf, start_over: bool, live: usize) -> std::io::Result<KeyLog> {
        let at = path.clone();
        let (file, entries) = tokio::task::spawn_blocking(move || -> std::io::Result<(File, u64)> {
            if let Some(dir) = at.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&at)?;
            let mut head = [0u8; HEAD];
            let kept = match file.read_exact(&mut head) {
                Ok(()) if &head[..8] == MAGIC => {
                    let n = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
                    (!start_over && n <= 2 * live as u64 + 100_000).then_some(n)
                }
                _ => None,
            };
            match kept {
                Some(n) => {
                    file.seek(SeekFrom::End(0))?;
                    Ok((file, n))
                }
                None => {
                    file.set_len(0)?;
                    file.seek(SeekFrom::Start(0))?;
                    file.write_all(&head_bytes(0))?;
                    Ok((file, 0))
                }
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(KeyLog::new(path, None, file, entries))
    }

    /// A log written anew beside `path`; it replaces the one there on [`KeyLog::finish`].
    pub(super) async fn rebuild(path: PathBuf) -> std::io::Result<KeyLog> {
        let tmp = path.with_extension("keys-new");
        let at = tmp.clone();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            if let Some(dir) = at.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = File::create(&at)?;
            file.write_all(&head_bytes(0))?;
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(KeyLog::new(path, Some(tmp), file, 0))
    }

    fn new(path: PathBuf, tmp: Option<PathBuf>, file: File, entries: u64) -> KeyLog {
        KeyLog {
            path,
            tmp,
            file: Some(file),
            writing: None,
            buf: Vec::with_capacity(CHUNK + 1024),
            entries,
            failed: None,
        }
    }

    /// Adds a key (written in chunks, one write under way while the next chunk fills).
    pub(super) async fn push(&mut self, kh: u128, key: &str) {
        if key.len() > MAX_KEY || self.failed.is_some() {
            return;
        }
        self.buf.extend_from_slice(&kh.to_le_bytes());
        self.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key.as_bytes());
        self.entries += 1;
        if self.buf.len() >= CHUNK {
            self.write_buffered().await;
        }
    }

    /// Waits for the write under way, then starts writing what is buffered.
    async fn write_buffered(&mut self) {
        self.settle().await;
        let Some(mut file) = self.file.take() else {
            return;
        };
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 1024));
        self.writing = Some(tokio::task::spawn_blocking(move || {
            file.write_all(&chunk)?;
            Ok(file)
        }));
    }

    async fn settle(&mut self) {
        if let Some(w) = self.writing.take() {
            match w.await.map_err(std::io::Error::other).and_then(|r| r) {
                Ok(file) => self.file = Some(file),
                Err(e) => self.failed = Some(e),
            }
        }
    }

    /// Writes the rest and the record count, and puts a log written anew in its place. On
    /// an error the log is removed (the next run that needs it reads the store).
    pub(super) async fn finish(mut self) -> std::io::Result<()> {
        self.write_buffered().await;
        self.settle().await;
        let (path, tmp, entries) = (self.path.clone(), self.tmp.clone(), self.entries);
        let file = self.file.take();
        let failed = self.failed.take();
        tokio::task::spawn_blocking(move || {
            let done = match (failed, file) {
                (Some(e), _) => Err(e),
                (None, None) => Err(std::io::Error::other("the key log's file was lost")),
                (None, Some(mut file)) => file
                    .seek(SeekFrom::Start(0))
                    .and_then(|_| file.write_all(&head_bytes(entries)))
                    .and_then(|()| match &tmp {
                        Some(tmp) => std::fs::rename(tmp, &path),
                        None => Ok(()),
                    }),
            };
            if done.is_err() {
                let _ = std::fs::remove_file(tmp.as_ref().unwrap_or(&path));
            }
            done
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

fn head_bytes(entries: u64) -> [u8; HEAD] {
    let mut head = [0u8; HEAD];
    head[..8].copy_from_slice(MAGIC);
    head[8..].copy_from_slice(&entries.to_le_bytes());
    head
}

/// The key text of every hash of `wanted`, read from the log at `path` (stopping once all
/// are found); `None` when the log is missing or lacks any of them.
pub(super) async fn lookup(path: PathBuf, wanted: Vec<u128>) -> Option<Vec<String>> {
    tokio::task::spawn_blocking(move || lookup_blocking(&path, &wanted))
        .await
        .ok()
        .flatten()
}

fn lookup_blocking(path: &Path, wanted: &[u128]) -> Option<Vec<String>> {
    let mut missing: KeySet = wanted.iter().copied().collect();
    let mut found = Vec::with_capacity(wanted.len());
    if missing.is_empty() {
        return Some(found);
    }
    let mut input = BufReader::with_capacity(CHUNK, File::open(path).ok()?);
    let mut head = [0u8; HEAD];
    input.read_exact(&mut head).ok()?;
    if &head[..8] != MAGIC {
        return None;
    }
    let mut rec = [0u8; 20];
    let mut text = Vec::new();
    // A torn or damaged record ends the reading: what follows it cannot be framed.
    while input.read_exact(&mut rec).is_ok() {
        let kh = u128::from_le_bytes(rec[..16].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(rec[16..].try_into().unwrap_or_default()) as usize;
        if len > MAX_KEY {
            return None;
        }
        if !missing.contains(&kh) {
            if input.seek_relative(len as i64).is_err() {
                return None;
            }
            continue;
        }
        text.resize(len, 0);
        input.read_exact(&mut text).ok()?;
        let key = std::str::from_utf8(&text).ok()?;
        if key_hash(key) != kh {
            return None;
        }
        missing.remove(&kh);
        found.push(key.to_string());
        if missing.is_empty() {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(log: &mut KeyLog, keys: impl IntoIterator<Item = String>) {
        for k in keys {
            log.push(key_hash(&k), &k).await;
        }
    }

    #[tokio::test]
    async fn appended_keys_are_found_and_a_missing_one_sends_back_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/m.keys");
        let mut log = KeyLog::append(path.clone(), true, 0).await.unwrap();
        // More than a chunk, so that writes overlap the filling.
        write(&mut log, (0..100_000).map(|i| format!("key-{i}"))).await;
        log.finish().await.unwrap();
        let mut log = KeyLog::append(path.clone(), false, 100_000).await.unwrap();
        write(&mut log, ["late".to_string()]).await;
        log.finish().await.unwrap();
        let wanted = vec![key_hash("key-7"), key_hash("late"), key_hash("key-99999")];
        let mut found = lookup(path.clone(), wanted).await.unwrap();
        found.sort();
        assert_eq!(found, ["key-7", "key-99999", "late"]);
        assert_eq!(lookup(path.clone(), vec![key_hash("never")]).await, None);
        assert_eq!(lookup(dir.path().join("none.keys"), vec![key_hash("late")]).await, None);
        // Starting over forgets what was there; so does a log far larger than the snapshot.
        KeyLog::append(path.clone(), false, 0)
            .await
            .unwrap()
            .finish()
            .await
            .unwrap();
        assert_eq!(lookup(path.clone(), vec![key_hash("late")]).await, None);
    }

    #[tokio::test]
    async fn a_torn_or_damaged_log_finds_nothing_past_the_damage_and_a_rebuild_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.keys");
        let mut log = KeyLog::append(path.clone(), true, 0).await.unwrap();
        write(&mut log, ["a", "b", "c"].map(String::from)).await;
        log.finish().await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(lookup(path.clone(), vec![key_hash("a")]).await.unwrap(), ["a"]);
        assert_eq!(lookup(path.clone(), vec![key_hash("c")]).await, None, "torn");
        let mut changed = bytes.clone();
        *changed.last_mut().unwrap() = b'x';
        std::fs::write(&path, &changed).unwrap();
        assert_eq!(
            lookup(path.clone(), vec![key_hash("c")]).await,
            None,
            "a text not of its hash"
        );
        let mut log = KeyLog::rebuild(path.clone()).await.unwrap();
        write(&mut log, ["c".to_string()]).await;
        assert_eq!(
            lookup(path.clone(), vec![key_hash("c")]).await,
            None,
            "not in place before finish"
        );
        log.finish().await.unwrap();
        assert_eq!(lookup(path.clone(), vec![key_hash("c")]).await.unwrap(), ["c"]);
    }
}

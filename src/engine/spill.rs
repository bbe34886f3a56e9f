//! The spill file: the records a run will send, written while the model is read and
//! diffed, and read back once the diff is complete (duplicates known, guard passed).
//! Memory holds none of the payloads; the file is deleted when the run ends.
//!
//! The file is written and read on threads of its own, never on the async runtime: a slow
//! disk holds the run back (through bounded channels) but never stalls the tasks beside it,
//! such as the run lock's heartbeat. Records cross in chunks of about [`CHUNK`] bytes.

use super::testing;
use crate::destination::Op;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Bytes handed to the writer thread at a time, and read back at a time.
const CHUNK: usize = 1 << 20;
/// Chunks queued between the run and a spill thread.
const QUEUED: usize = 2;

/// One record to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Spilled {
    /// `None`: nothing to send; the row is forgotten (it left a model that ignores
    /// removals).
    pub op: Option<Op>,
    pub key_hash: u128,
    pub payload_hash: [u8; 16],
    pub key: String,
    pub payload: String,
}

pub struct SpillWriter {
    model: String,
    buf: Vec<u8>,
    count: u64,
    /// Chunks to the writer thread; `None` once it has stopped.
    chunks: Option<mpsc::Sender<Vec<u8>>>,
    /// How the writer thread ended.
    done: Option<oneshot::Receiver<std::io::Result<()>>>,
    /// Deletes the file when the run is done with it (or fails).
    guard: Arc<Remove>,
}

fn op_code(op: Option<Op>) -> u8 {
    match op {
        Some(Op::Upsert) => 0,
        Some(Op::Update) => 1,
        Some(Op::Insert) => 2,
        Some(Op::Delete) => 3,
        Some(Op::Clear) => 4,
        None => 5,
    }
}

fn code_op(c: u8) -> Option<Option<Op>> {
    Some(match c {
        0 => Some(Op::Upsert),
        1 => Some(Op::Update),
        2 => Some(Op::Insert),
        3 => Some(Op::Delete),
        4 => Some(Op::Clear),
        5 => None,
        _ => return None,
    })
}

fn stopped(what: &str) -> std::io::Error {
    std::io::Error::other(format!("the spill file's {what} thread stopped"))
}

impl SpillWriter {
    /// A new spill file in the system's temporary directory, written by a thread of its own.
    pub async fn create(model: &str) -> std::io::Result<SpillWriter> {
        let path = std::env::temp_dir().join(format!(
            "ebb-{model}-{}-{:016x}.spill",
            std::process::id(),
            rand::random::<u64>()
        ));
        let at = path.clone();
        let file = tokio::task::spawn_blocking(move || File::options().write(true).create_new(true).open(&at))
            .await
            .map_err(|_| stopped("creating"))??;
        let guard = Arc::new(Remove(path));
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUED);
        let (done_tx, done_rx) = oneshot::channel();
        let name = model.to_string();
        std::thread::Builder::new()
            .name("ebb-spill-write".into())
            .spawn(move || {
                let mut file = file;
                let mut result = Ok(());
                while let Some(chunk) = rx.blocking_recv() {
                    testing::io_point(&name, "spill_write");
                    if let Err(e) = file.write_all(&chunk) {
                        result = Err(e);
                        break;
                    }
                }
                let _ = done_tx.send(result.and_then(|()| file.flush()));
            })?;
        Ok(SpillWriter {
            model: model.to_string(),
            buf: Vec::with_capacity(CHUNK + 4096),
            count: 0,
            chunks: Some(tx),
            done: Some(done_rx),
            guard,
        })
    }

    pub async fn push(
        &mut self,
        op: Option<Op>,
        key_hash: u128,
        payload_hash: [u8; 16],
        key: &str,
        payload: &str,
    ) -> std::io::Result<()> {
        let b = &mut self.buf;
        b.push(op_code(op));
        b.extend_from_slice(&key_hash.to_le_bytes());
        b.extend_from_slice(&payload_hash);
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload.as_bytes());
        self.count += 1;
        if self.buf.len() >= CHUNK {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// Hands the buffered records to the writer thread.
    async fn hand_over(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        let sent = match &self.chunks {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The thread stopped: its error says why.
            self.chunks = None;
            Err(self.ended().await.err().unwrap_or_else(|| stopped("writer")))
        }
    }

    /// Waits for the writer thread to end; its result.
    async fn ended(&mut self) -> std::io::Result<()> {
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| Err(stopped("writer"))),
            None => Err(stopped("writer")),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends writing; the reader starts at the first record.
    pub async fn finish(mut self) -> std::io::Result<SpillReader> {
        self.hand_over().await?;
        self.chunks = None; // the writer thread ends once it has written what it holds
        self.ended().await?;
        SpillReader::open(self.model.clone(), self.guard.clone())
    }
}

/// Removes the spill file when dropped, off the async runtime when there is one.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.0);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || std::fs::remove_file(path));
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// What the reader thread hands over.
enum Chunk {
    Records(Vec<Spilled>),
    Failed(std::io::Error),
    End,
}

pub struct SpillReader {
    chunks: mpsc::Receiver<Chunk>,
    ready: VecDeque<Spilled>,
    at_end: bool,
    _guard: Arc<Remove>,
}

impl SpillReader {
    fn open(model: String, guard: Arc<Remove>) -> std::io::Result<SpillReader> {
        let path = guard.0.clone();
        let (tx, rx) = mpsc::channel::<Chunk>(QUEUED);
        std::thread::Builder::new()
            .name("ebb-spill-read".into())
            .spawn(move || {
                let mut input = match File::open(&path) {
                    Ok(f) => RecordReader {
                        input: BufReader::with_capacity(CHUNK, f),
                    },
                    Err(e) => {
                        let _ = tx.blocking_send(Chunk::Failed(e));
                        return;
                    }
                };
                loop {
                    testing::io_point(&model, "spill_read");
                    let (mut records, mut bytes) = (Vec::new(), 0usize);
                    let mut end = false;
                    while bytes < CHUNK {
                        match input.next_record() {
                            Ok(Some(r)) => {
                                bytes += 37 + r.key.len() + 4 + r.payload.len();
                                records.push(r);
                            }
                            Ok(None) => {
                                end = true;
                                break;
                            }
                            Err(e) => {
                                let _ = tx.blocking_send(Chunk::Failed(e));
                                return;
                            }
                        }
                    }
                    if !records.is_empty() && tx.blocking_send(Chunk::Records(records)).is_err() {
                        return;
                    }
                    if end {
                        let _ = tx.blocking_send(Chunk::End);
                        return;
                    }
                }
            })?;
        Ok(SpillReader {
            chunks: rx,
            ready: VecDeque::new(),
            at_end: false,
            _guard: guard,
        })
    }

    /// The next record, or `None` at the end.
    pub async fn next_record(&mut self) -> std::io::Result<Option<Spilled>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if self.at_end {
                return Ok(None);
            }
            match self.chunks.recv().await {
                Some(Chunk::Records(records)) => self.ready = records.into(),
                Some(Chunk::Failed(e)) => {
                    self.at_end = true;
                    return Err(e);
                }
                Some(Chunk::End) => self.at_end = true,
                None => {
                    // Stopped without saying the file ended: a record may be missing.
                    self.at_end = true;
                    return Err(stopped("reader"));
                }
            }
        }
    }
}

/// Reads records from the file, on the reader thread.
struct RecordReader {
    input: BufReader<File>,
}

impl RecordReader {
    fn next_record(&mut self) -> std::io::Result<Option<Spilled>> {
        let mut op = [0u8; 1];
        match self.input.read_exact(&mut op) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "the spill file is damaged");
        let op = code_op(op[0]).ok_or_else(bad)?;
        let mut k = [0u8; 16];
        self.input.read_exact(&mut k)?;
        let mut payload_hash = [0u8; 16];
        self.input.read_exact(&mut payload_hash)?;
        let key = self.read_text()?;
        let payload = self.read_text()?;
        Ok(Some(Spilled {
            op,
            key_hash: u128::from_le_bytes(k),
            payload_hash,
            key,
            payload,
        }))
    }

    fn read_text(&mut self) -> std::io::Result<String> {
        let mut n = [0u8; 4];
        self.input.read_exact(&mut n)?;
        let mut buf = vec![0u8; u32::from_le_bytes(n) as usize];
        self.input.read_exact(&mut buf)?;
        String::from_utf8(buf)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "the spill file is damaged"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_come_back_in_order_and_the_file_goes() {
        let mut w = SpillWriter::create("t").await.unwrap();
        let path = w.guard.0.clone();
        w.push(Some(Op::Upsert), 1, [1; 16], "k1", r#"{"a":1}"#).await.unwrap();
        w.push(None, 2, [2; 16], "k2", r#"{"Id":"k2"}"#).await.unwrap();
        // More than a chunk, so some records cross while others are buffered.
        let big = "x".repeat(4000);
        for i in 0..600u128 {
            w.push(Some(Op::Delete), 10 + i, [3; 16], &i.to_string(), &big)
                .await
                .unwrap();
        }
        assert_eq!(w.count(), 602);
        let mut r = w.finish().await.unwrap();
        let a = r.next_record().await.unwrap().unwrap();
        assert_eq!(
            (a.op, a.key_hash, a.key.as_str(), a.payload.as_str()),
            (Some(Op::Upsert), 1, "k1", r#"{"a":1}"#)
        );
        let b = r.next_record().await.unwrap().unwrap();
        assert_eq!((b.op, b.payload_hash), (None, [2; 16]));
        for i in 0..600u128 {
            let c = r.next_record().await.unwrap().unwrap();
            assert_eq!((c.key_hash, c.key, c.payload.len()), (10 + i, i.to_string(), 4000));
        }
        assert!(r.next_record().await.unwrap().is_none());
        assert!(r.next_record().await.unwrap().is_none());
        drop(r);
        // The file is removed off the runtime, a moment later.
        for _ in 0..200 {
            if !path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!path.exists());
    }
}

//! The spill file: the records a run will send, written while the model is read and
//! diffed, and read back once the diff is complete (duplicates known, guard passed).
//! Memory holds none of the payloads; the file is deleted when the run ends.
//!
//! The file is written and read on threads of its own, never on the async runtime: a slow
//! disk holds the run back (through bounded channels) but never stalls the tasks beside it,
//! such as the run lock's heartbeat. Records cross in chunks of about [`CHUNK`] bytes.
//!
//! With `EBB_ENCRYPTION_KEY` set (values at rest are sealed), each chunk is sealed with
//! AES-256-GCM under a key of the run's own: random, held in memory only, so the file is
//! unreadable once the run has ended, even when a crash left it behind ([`SpillKey`]).

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

/// A run's key for its spill file: each chunk sealed under its number as the nonce (a
/// key is never used for two files, so a nonce never repeats under it).
struct SpillKey(ring::aead::LessSafeKey);

impl SpillKey {
    fn new() -> std::io::Result<SpillKey> {
        use ring::rand::SecureRandom;
        let mut raw = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| std::io::Error::other("no random bytes for the spill file's key"))?;
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &raw)
            .map_err(|_| std::io::Error::other("the spill file's key"))?;
        Ok(SpillKey(ring::aead::LessSafeKey::new(key)))
    }

    fn nonce(n: u64) -> ring::aead::Nonce {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_le_bytes());
        ring::aead::Nonce::assume_unique_for_key(b)
    }

    /// Chunk `n` as written: its sealed length, then the sealed bytes.
    fn seal(&self, n: u64, mut chunk: Vec<u8>) -> std::io::Result<Vec<u8>> {
        self.0
            .seal_in_place_append_tag(Self::nonce(n), ring::aead::Aad::empty(), &mut chunk)
            .map_err(|_| std::io::Error::other("sealing a spill chunk"))?;
        let mut frame = Vec::with_capacity(4 + chunk.len());
        frame.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        frame.extend_from_slice(&chunk);
        Ok(frame)
    }
}

/// The spill file's bytes as written: plain, or chunk by chunk opened.
enum Input {
    Plain(BufReader<File>),
    Sealed {
        file: BufReader<File>,
        key: Arc<SpillKey>,
        next: u64,
        plain: Vec<u8>,
        at: usize,
    },
}

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::Plain(f) => f.read(out),
            Input::Sealed {
                file,
                key,
                next,
                plain,
                at,
            } => {
                if *at == plain.len() {
                    let mut n = [0u8; 4];
                    match file.read_exact(&mut n) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                        Err(e) => return Err(e),
                    }
                    let mut frame = vec![0u8; u32::from_le_bytes(n) as usize];
                    file.read_exact(&mut frame)?;
                    let opened = key
                        .0
                        .open_in_place(SpillKey::nonce(*next), ring::aead::Aad::empty(), &mut frame)
                        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "the spill file is damaged"))?
                        .len();
                    frame.truncate(opened);
                    *next += 1;
                    *plain = frame;
                    *at = 0;
                }
                let n = out.len().min(plain.len() - *at);
                out[..n].copy_from_slice(&plain[*at..*at + n]);
                *at += n;
                Ok(n)
            }
        }
    }
}

pub struct SpillWriter {
    model: String,
    /// The file's key, when it is sealed.
    key: Option<Arc<SpillKey>>,
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
    /// A new spill file, sealed when `EBB_ENCRYPTION_KEY` is set.
    pub async fn create(model: &str) -> std::io::Result<SpillWriter> {
        let sealed = crate::crypt::Keys::global().is_ok_and(|k| k.current_id().is_some());
        SpillWriter::create_as(model, sealed).await
    }

    async fn create_as(model: &str, sealed: bool) -> std::io::Result<SpillWriter> {
        let key = if sealed { Some(Arc::new(SpillKey::new()?)) } else { None };
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
        let sealing = key.clone();
        std::thread::Builder::new()
            .name("ebb-spill-write".into())
            .spawn(move || {
                let mut file = file;
                let mut result = Ok(());
                let mut n = 0u64;
                while let Some(chunk) = rx.blocking_recv() {
                    testing::io_point(&name, "spill_write");
                    let written = match &sealing {
                        Some(k) => k.seal(n, chunk).and_then(|frame| file.write_all(&frame)),
                        None => file.write_all(&chunk),
                    };
                    n += 1;
                    if let Err(e) = written {
                        result = Err(e);
                        break;
                    }
                }
                let _ = done_tx.send(result.and_then(|()| file.flush()));
            })?;
        Ok(SpillWriter {
            model: model.to_string(),
            key,
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
        SpillReader::open(self.model.clone(), self.guard.clone(), self.key.clone())
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
    fn open(model: String, guard: Arc<Remove>, key: Option<Arc<SpillKey>>) -> std::io::Result<SpillReader> {
        let path = guard.0.clone();
        let (tx, rx) = mpsc::channel::<Chunk>(QUEUED);
        std::thread::Builder::new()
            .name("ebb-spill-read".into())
            .spawn(move || {
                let mut input = match File::open(&path) {
                    Ok(f) => RecordReader {
                        input: match key {
                            None => Input::Plain(BufReader::with_capacity(CHUNK, f)),
                            Some(key) => Input::Sealed {
                                file: BufReader::with_capacity(CHUNK, f),
                                key,
                                next: 0,
                                plain: Vec::new(),
                                at: 0,
                            },
                        },
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
    input: Input,
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
        records_come_back(false).await;
    }

    /// Sealed: the same records come back, and the file holds none of them in clear.
    #[tokio::test]
    async fn a_sealed_spill_file_holds_nothing_in_clear() {
        records_come_back(true).await;
    }

    async fn records_come_back(sealed: bool) {
        let mut w = SpillWriter::create_as("t", sealed).await.unwrap();
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
        w.push(Some(Op::Upsert), 9, [9; 16], "k9", r#"{"Email":"spill.planted@x.com"}"#)
            .await
            .unwrap();
        let mut r = w.finish().await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let clear = |t: &str| bytes.windows(t.len()).any(|w| w == t.as_bytes());
        assert_eq!(clear("spill.planted@x.com"), !sealed);
        assert_eq!(clear("xxxxxxxxxxxxxxxx"), !sealed);
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
        let last = r.next_record().await.unwrap().unwrap();
        assert_eq!(last.payload, r#"{"Email":"spill.planted@x.com"}"#);
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

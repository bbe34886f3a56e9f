//! Worker threads that encode source batches ([`RowMapper::encoder`]) while the run
//! classifies earlier ones. Batches carry a sequence number; the caller puts the answers
//! back in order. Arenas are handed back with [`EncodePool::recycle`] and reused.

use crate::map::encode::Encoded;
use crate::map::RowMapper;
use arrow::record_batch::RecordBatch;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

type Done = (u64, Result<Encoded, EncodeError>);

/// Why a batch came back unencoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EncodeError {
    /// The threads are gone (the pool was dropped, or a thread died).
    #[error("the encoding threads stopped")]
    Stopped,
    /// Encoding panicked: a bug in ebb. Holds the panic's message.
    #[error("encoding a batch failed (a bug in ebb): {0}")]
    Panicked(String),
}

pub struct EncodePool {
    work: Option<mpsc::Sender<(u64, RecordBatch)>>,
    done: mpsc::Receiver<Done>,
    spare: std::sync::mpsc::Sender<Encoded>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl EncodePool {
    /// `threads` workers encoding with `mapper`.
    pub fn start(mapper: Arc<RowMapper>, threads: usize) -> EncodePool {
        let (work_tx, work_rx) = mpsc::channel::<(u64, RecordBatch)>(threads * 2);
        let (done_tx, done_rx) = mpsc::channel::<Done>(threads * 4);
        let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Encoded>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let spare_rx = Arc::new(Mutex::new(spare_rx));
        let threads = (0..threads.max(1))
            .map(|n| {
                let (mapper, work_rx, spare_rx, done_tx) =
                    (mapper.clone(), work_rx.clone(), spare_rx.clone(), done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("ebb-encode-{n}"))
                    .spawn(move || loop {
                        let next = work_rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
                        let Some((seq, batch)) = next else { break };
                        let mut enc = spare_rx
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .try_recv()
                            .unwrap_or_default();
                        enc.clear();
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            mapper.encoder(&batch).encode(0..batch.num_rows(), &mut enc);
                            enc
                        }))
                        .map_err(|panic| {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            EncodeError::Panicked(what)
                        });
                        if done_tx.blocking_send((seq, result)).is_err() {
                            break;
                        }
                    })
                    .expect("cannot start an encoding thread")
            })
            .collect();
        EncodePool {
            work: Some(work_tx),
            done: done_rx,
            spare: spare_tx,
            threads,
        }
    }

    /// Hands batch `seq` to a worker (waits while they are all busy and the queue is full).
    pub async fn submit(&self, seq: u64, batch: RecordBatch) -> Result<(), EncodeError> {
        match &self.work {
            Some(w) => w.send((seq, batch)).await.map_err(|_| EncodeError::Stopped),
            None => Err(EncodeError::Stopped),
        }
    }

    /// The next batch encoded, in the order the workers finish.
    pub async fn recv(&mut self) -> Result<(u64, Encoded), EncodeError> {
        match self.done.recv().await {
            Some((seq, Ok(enc))) => Ok((seq, enc)),
            Some((_, Err(e))) => Err(e),
            None => Err(EncodeError::Stopped),
        }
    }

    /// Gives an arena back for reuse.
    pub fn recycle(&self, enc: Encoded) {
        let _ = self.spare.send(enc);
    }
}

impl Drop for EncodePool {
    fn drop(&mut self) {
        self.work.take();
        self.done.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

//! Where runs execute: a pool of worker threads, one run at a time each, each with its own
//! single-threaded tokio runtime that lives as long as the daemon.
//!
//! A run is one future doing its own concurrency (batches in flight, heartbeat, state
//! writer) and its CPU-bound mapping on scoped threads, so a runtime of its own costs it
//! nothing; and the engine's future need not be `Send` (some destination futures are not).
//! The runtimes live as long as the daemon because connections a destination pools across
//! runs (a shared HTTP client) are driven by the runtime that opened them. There are as
//! many workers as `max_concurrent_runs`, so a run holding a permit never waits for one.

use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

/// A run to do: called on the worker thread, it makes the future the worker drives.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The worker pool.
pub struct Runner {
    tx: mpsc::UnboundedSender<Job>,
}

impl Runner {
    /// Starts `workers` threads.
    pub fn new(workers: usize) -> std::io::Result<Runner> {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::Builder::new()
                .name(format!("ebb-run-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        loop {
                            let job = rx.lock().await.recv().await;
                            match job {
                                // A panicking run loses its report, not the worker.
                                Some(job) => {
                                    let _ = AssertUnwindSafe(job()).catch_unwind().await;
                                }
                                None => break, // the daemon is gone
                            }
                        }
                    })
                })?;
        }
        Ok(Runner { tx })
    }

    /// Queues `job`; `false` if the workers are gone.
    pub fn submit(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }
}

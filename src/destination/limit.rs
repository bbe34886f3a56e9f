//! Per-connection request limits shared by every sync in this process.
//!
//! A connection's `max_concurrency` and `rate_limit` protect the destination, not one model:
//! two models delivering to the same webhook at once must share them. [`Limits::shared`]
//! hands out one [`Limits`] per connection name from a process-wide registry, and every
//! request attempt (retries included) takes a [`Permit`] from it first.
//!
//! The rate limit is a sliding window: at most `N` request *starts* in any window of the
//! configured length. It does not limit requests across processes; two `ebb` processes on
//! one connection each get the full budget.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The concurrency slots and rate window of one connection.
#[derive(Debug)]
pub struct Limits {
    rate: Option<(u32, Duration)>,
    concurrency: usize,
    slots: Arc<Semaphore>,
    /// Start times of the requests in the current window, oldest first.
    starts: Mutex<VecDeque<Instant>>,
}

/// The right to make one request: holds a concurrency slot until dropped.
#[derive(Debug)]
pub struct Permit {
    // `None` only if the semaphore were closed, which nothing does.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Limits {
    /// Limits that belong to no registry (each call makes fresh ones).
    pub fn new(rate: Option<(u32, Duration)>, concurrency: usize) -> Limits {
        let concurrency = concurrency.max(1);
        Limits {
            rate,
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            starts: Mutex::new(VecDeque::new()),
        }
    }

    /// The limits of connection `connection`, shared by every caller in this process that
    /// names it with the same settings. A caller with different settings (the project was
    /// edited and reloaded) replaces the entry: requests already holding the old limits
    /// finish under them, later ones use the new.
    pub fn shared(connection: &str, rate: Option<(u32, Duration)>, concurrency: usize) -> Arc<Limits> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Limits>>>> = OnceLock::new();
        let registry = REGISTRY.get_or_init(|| Mutex::new(HashMap::new()));
        // A poisoned registry only means another thread panicked while inserting; the map
        // itself is still consistent.
        let mut map = registry.lock().unwrap_or_else(|e| e.into_inner());
        let concurrency = concurrency.max(1);
        match map.get(connection) {
            Some(l) if l.rate == rate && l.concurrency == concurrency => l.clone(),
            _ => {
                let l = Arc::new(Limits::new(rate, concurrency));
                map.insert(connection.to_string(), l.clone());
                l
            }
        }
    }

    /// Waits for a concurrency slot, then for room in the rate window, and records the
    /// request's start.
    pub async fn acquire(&self) -> Permit {
        let slot = self.slots.clone().acquire_owned().await.ok();
        if let Some((n, window)) = self.rate {
            loop {
                let wait_until = {
                    let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    while starts.front().is_some_and(|t| now.duration_since(*t) >= window) {
                        starts.pop_front();
                    }
                    if starts.len() < n as usize {
                        starts.push_back(now);
                        break;
                    }
                    // The window is full: room opens when its oldest start leaves it.
                    starts[starts.len() - n as usize] + window
                };
                tokio::time::sleep_until(wait_until).await;
            }
        }
        Permit { _slot: slot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_n_starts_in_any_window() {
        let window = Duration::from_millis(200);
        let limits = Limits::new(Some((5, window)), 100);
        let begin = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..12 {
            let _p = limits.acquire().await;
            starts.push(Instant::now());
        }
        // Any 6 consecutive starts span at least one window.
        for w in starts.windows(6) {
            assert!(w[5] - w[0] >= window, "6 starts within {:?}", w[5] - w[0]);
        }
        // The first 5 do not wait; 12 starts need two further windows.
        assert!(
            starts[4] - begin < Duration::from_millis(100),
            "the first window waited"
        );
        assert!(starts[11] - begin >= window * 2);
    }

    #[tokio::test]
    async fn concurrent_waiters_share_the_window() {
        let window = Duration::from_millis(200);
        let limits = Arc::new(Limits::new(Some((3, window)), 100));
        let mut tasks = Vec::new();
        for _ in 0..9 {
            let l = limits.clone();
            tasks.push(tokio::spawn(async move {
                let _p = l.acquire().await;
                Instant::now()
            }));
        }
        let mut starts = Vec::new();
        for t in tasks {
            starts.push(t.await.unwrap());
        }
        starts.sort();
        for w in starts.windows(4) {
            assert!(w[3] - w[0] >= window, "4 starts within {:?}", w[3] - w[0]);
        }
    }

    #[tokio::test]
    async fn concurrency_slots_are_held_until_the_permit_drops() {
        let limits = Limits::new(None, 2);
        let a = limits.acquire().await;
        let _b = limits.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), limits.acquire()).await;
        assert!(third.is_err(), "a third request started with 2 slots taken");
        drop(a);
        let third = tokio::time::timeout(Duration::from_millis(500), limits.acquire()).await;
        assert!(third.is_ok(), "a freed slot was not handed out");
    }

    #[test]
    fn one_registry_entry_per_connection_and_settings() {
        let rate = Some((5, Duration::from_secs(1)));
        let a = Limits::shared("limit-test-shared", rate, 2);
        let b = Limits::shared("limit-test-shared", rate, 2);
        assert!(Arc::ptr_eq(&a, &b), "the same connection got two limits");
        let other = Limits::shared("limit-test-other", rate, 2);
        assert!(!Arc::ptr_eq(&a, &other));
        let changed = Limits::shared("limit-test-shared", rate, 3);
        assert!(!Arc::ptr_eq(&a, &changed), "new settings kept the old limits");
        assert!(Arc::ptr_eq(&changed, &Limits::shared("limit-test-shared", rate, 3)));
    }
}

//! Per-connection request limits shared by every sync in this process.
//!
//! A connection's `max_concurrency` and `rate_limit` protect the system at the other end,
//! not one model: two models delivering to the same webhook at once (or reading from and
//! writing to one Salesforce org) must share them. It sits beside the HTTP client, not in
//! `destination`, so both directions take permits from the same place. [`Limits::shared`]
//! hands out one [`Limits`] per connection name from a process-wide registry, and every
//! request attempt (retries included) takes a [`Permit`] from it first.
//!
//! The rate limit is a sliding window: at most `N` requests in any window of the configured
//! length, as the server sees them. A request reaches the server at some moment between its
//! start here and its answer, so each request counts from its start while in flight and
//! from its answer once answered: a new request starts only when the `N`-th latest has been
//! answered at least a window ago, which keeps the server's count in any window within `N`
//! however long requests take to arrive. It does not limit requests across processes; two
//! `ebb` processes on one connection each get the full budget.
//!
//! A `rate_limit` is written `N/second|minute|hour|day` and read by [`parse_rate`], here
//! and when `validate` checks the project.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// `N/second|minute|hour|day`.
pub fn parse_rate(text: &str) -> Option<(u32, std::time::Duration)> {
    let (n, unit) = text.split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = match unit.trim() {
        "second" | "sec" | "s" => 1,
        "minute" | "min" | "m" => 60,
        "hour" | "h" => 3600,
        "day" | "d" => 86_400,
        _ => return None,
    };
    Some((n, std::time::Duration::from_secs(secs)))
}

/// The concurrency slots and rate window of one connection.
#[derive(Debug)]
pub struct Limits {
    rate: Option<(u32, Duration)>,
    concurrency: usize,
    slots: Arc<Semaphore>,
    window: Arc<Window>,
    /// Slots in use now: lowered when the server says too many requests are in flight,
    /// raised back one at a time as requests succeed ([`Limits::too_many`]).
    current: std::sync::atomic::AtomicUsize,
    successes: std::sync::atomic::AtomicUsize,
}

/// Waits for the rate window at least this long are logged (at debug: shorter ones are
/// the limit doing its job many times a second).
const LOGGED_WAIT: Duration = Duration::from_secs(1);

/// Successful requests, at the lowered concurrency, before a slot is given back.
const RAISE_AFTER: usize = 8;

/// The requests of the current window, oldest first.
#[derive(Debug, Default)]
struct Window {
    entries: Mutex<VecDeque<Entry>>,
    /// Signalled when a request is answered (an in-flight entry gets its time).
    answered: tokio::sync::Notify,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    /// When the request was answered; `None` while it is in flight.
    at: Option<Instant>,
}

/// The right to make one request: holds a concurrency slot until dropped; dropping it marks
/// the request answered in the rate window.
#[derive(Debug)]
pub struct Permit {
    // `None` only if the semaphore were closed, which nothing does.
    _slot: Option<OwnedSemaphorePermit>,
    entry: Option<(Arc<Window>, u64)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((w, id)) = self.entry.take() {
            let mut entries = w.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
                e.at = Some(Instant::now());
            }
            drop(entries);
            w.answered.notify_waiters();
        }
    }
}

impl Limits {
    /// Limits that belong to no registry (each call makes fresh ones).
    pub fn new(rate: Option<(u32, Duration)>, concurrency: usize) -> Limits {
        let concurrency = concurrency.max(1);
        Limits {
            rate,
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            window: Arc::new(Window::default()),
            current: std::sync::atomic::AtomicUsize::new(concurrency),
            successes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The server refused a request for having too many in flight: this request's slot is
    /// withdrawn (down to one slot), so retries do not keep hitting the same wall.
    pub fn too_many(&self, permit: &mut Permit) {
        use std::sync::atomic::Ordering::SeqCst;
        let lowered = self
            .current
            .fetch_update(SeqCst, SeqCst, |c| (c > 1).then(|| c - 1))
            .is_ok();
        if lowered {
            if let Some(slot) = permit._slot.take() {
                slot.forget();
            }
            self.successes.store(0, SeqCst);
            tracing::info!(
                event = "concurrency_lowered",
                max_concurrency = self.current.load(SeqCst),
                "the server answered that too many requests are in flight: one fewer at a time until requests succeed again"
            );
        }
    }

    /// A request succeeded: after a run of them, a withdrawn slot comes back.
    pub fn succeeded(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.current.load(SeqCst) >= self.concurrency {
            return;
        }
        if self.successes.fetch_add(1, SeqCst) + 1 >= RAISE_AFTER {
            self.successes.store(0, SeqCst);
            if self
                .current
                .fetch_update(SeqCst, SeqCst, |c| (c < self.concurrency).then_some(c + 1))
                .is_ok()
            {
                self.slots.add_permits(1);
            }
        }
    }

    /// Slots in use now (the configured concurrency unless the server refused some).
    pub fn current(&self) -> usize {
        self.current.load(std::sync::atomic::Ordering::SeqCst)
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

    /// Waits for a concurrency slot, then for room in the rate window, and enters the
    /// request in the window until its permit is dropped.
    pub async fn acquire(&self) -> Permit {
        let slot = self.slots.clone().acquire_owned().await.ok();
        let Some((n, window)) = self.rate else {
            return Permit {
                _slot: slot,
                entry: None,
            };
        };
        let w = &self.window;
        let asked = Instant::now();
        loop {
            let answered = w.answered.notified();
            let wait_until = {
                let mut entries = w.entries.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                while entries
                    .front()
                    .is_some_and(|e| e.at.is_some_and(|t| now.duration_since(t) >= window))
                {
                    entries.pop_front();
                }
                // Answered entries older than the window may sit behind in-flight ones.
                entries.retain(|e| e.at.is_none_or(|t| now.duration_since(t) < window));
                if entries.len() < n as usize {
                    let waited = now.duration_since(asked);
                    if waited >= LOGGED_WAIT {
                        tracing::debug!(
                            event = "rate_limit_wait",
                            waited_ms = waited.as_millis() as u64,
                            rate_limit = n,
                            window_secs = window.as_secs(),
                            "a request waited for room in its connection's rate_limit"
                        );
                    }
                    let id = w.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    entries.push_back(Entry { id, at: None });
                    return Permit {
                        _slot: slot,
                        entry: Some((w.clone(), id)),
                    };
                }
                // The window is full: room opens a window after the earliest answer among the
                // entries, or when an in-flight one is answered.
                entries.iter().filter_map(|e| e.at).min().map(|t| t + window)
            };
            match wait_until {
                Some(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t) => {}
                        () = answered => {}
                    }
                }
                None => answered.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_n_starts_in_any_window() {
        // A window long enough that a loaded machine's stalls cannot pass for waiting.
        let window = Duration::from_secs(1);
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
        assert!(starts[4] - begin < window / 2, "the first window waited");
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
        let third = tokio::time::timeout(Duration::from_secs(10), limits.acquire()).await;
        assert!(third.is_ok(), "a freed slot was not handed out");
    }

    #[tokio::test]
    async fn too_many_in_flight_withdraws_a_slot_and_successes_give_it_back() {
        let limits = Limits::new(None, 3);
        let mut a = limits.acquire().await;
        let mut b = limits.acquire().await;
        limits.too_many(&mut a);
        limits.too_many(&mut b);
        drop((a, b));
        assert_eq!(limits.current(), 1);
        // One slot is left: a second request waits.
        let only = limits.acquire().await;
        let second = tokio::time::timeout(Duration::from_millis(50), limits.acquire()).await;
        assert!(second.is_err(), "two requests started with one slot left");
        // Never below one.
        let mut only = only;
        limits.too_many(&mut only);
        drop(only);
        assert_eq!(limits.current(), 1);
        // A run of successes gives the slots back, one at a time, up to the setting.
        for _ in 0..RAISE_AFTER * 5 {
            limits.succeeded();
        }
        assert_eq!(limits.current(), 3);
        let held = [limits.acquire().await, limits.acquire().await, limits.acquire().await];
        let fourth = tokio::time::timeout(Duration::from_millis(50), limits.acquire()).await;
        assert!(fourth.is_err(), "more slots than the setting");
        drop(held);
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

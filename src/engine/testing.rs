//! Hooks for tests: a gate that holds a run's blocking file IO (spill writes and reads, the
//! diff table's save) until the test opens it, to show that the tasks beside the run (the
//! lock's heartbeat) go on meanwhile. Not part of ebb's interface: nothing arms a gate but
//! a test, and an unarmed hook costs one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a gate holds an operation at most, so a test that never opens it ends.
const HOLD_AT_MOST: Duration = Duration::from_secs(15);

static ARMED: AtomicBool = AtomicBool::new(false);
static GATES: Mutex<Vec<(String, &'static str, Arc<IoGate>)>> = Mutex::new(Vec::new());

#[derive(Default)]
struct GateState {
    /// An operation waits at the gate now.
    held: bool,
    /// The gate has held its operation (it holds one only).
    used: bool,
    open: bool,
    /// The hold ended because nobody opened the gate in time.
    timed_out: bool,
}

/// Holds the first blocking operation `op` of runs of one model until [`IoGate::open`].
#[derive(Default)]
pub struct IoGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl IoGate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An operation is waiting at the gate now.
    pub fn held(&self) -> bool {
        self.state().held
    }

    /// The hold ended without the gate being opened (after 15 s).
    pub fn timed_out(&self) -> bool {
        self.state().timed_out
    }

    /// Lets the held operation (and any later one) go.
    pub fn open(&self) {
        self.state().open = true;
        self.changed.notify_all();
    }
}

/// Arms a gate on operation `op` (`spill_write`, `spill_read` or `save_table`) of the
/// runs of `model`.
pub fn hold_io(model: &str, op: &'static str) -> Arc<IoGate> {
    let gate = Arc::new(IoGate::default());
    GATES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((model.to_string(), op, gate.clone()));
    ARMED.store(true, Ordering::SeqCst);
    gate
}

/// Called on the thread that is about to do blocking operation `op` for `model`.
pub(crate) fn io_point(model: &str, op: &'static str) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let gate = GATES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(m, o, _)| m == model && *o == op)
        .map(|(_, _, g)| g.clone());
    let Some(gate) = gate else { return };
    let mut s = gate.state();
    if s.used || s.open {
        return;
    }
    s.used = true;
    s.held = true;
    let (mut s, wait) = gate
        .changed
        .wait_timeout_while(s, HOLD_AT_MOST, |s| !s.open)
        .unwrap_or_else(|e| e.into_inner());
    s.held = false;
    s.timed_out = wait.timed_out();
}

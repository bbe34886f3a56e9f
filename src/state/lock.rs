//! Who this process is, for the run lock: host name, pid and the process's start time.
//!
//! One run per model at a time, across processes sharing a state store
//! (docs/delivery.md §1). The lock is a row of `ebb_locks` renewed by a heartbeat. A holder
//! on this host whose process is gone (no such pid, or a pid reused by a process that
//! started later) is taken over at once; a holder on another host once its heartbeat is
//! older than the lease.

use super::LockHolder;
use std::sync::OnceLock;

/// How long a lock held from another host survives without a heartbeat.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(15);

/// How often a running process renews its locks.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// This machine's host name.
pub fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown-host".into())
    })
}

/// When process `pid` started (field 22 of `/proc/PID/stat`, ticks since boot), or `None`
/// if there is no such process. Off Linux, a process is taken to be alive (`Some("")`), so
/// only the lease frees its locks.
pub fn process_start(pid: i64) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some(String::new());
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; the start time is field 22.
    Some(after.split_whitespace().nth(19)?.to_string())
}

/// The holder record of this process for a run.
pub fn me(run_id: i64) -> LockHolder {
    static NONCE: OnceLock<u64> = OnceLock::new();
    let nonce = NONCE.get_or_init(rand::random::<u64>);
    let pid = std::process::id() as i64;
    LockHolder {
        id: format!("{}:{pid}:{nonce:016x}", host()),
        host: host().to_string(),
        pid,
        started: process_start(pid).unwrap_or_default(),
        run_id,
        acquired_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        heartbeat_ms: chrono::Utc::now().timestamp_millis(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_not() {
        let me = me(1);
        assert!(process_start(me.pid).is_some());
        assert!(!super::super::holder_is_dead_here(&me));
        // pid_max is at most 2^22 on Linux.
        let gone = LockHolder {
            pid: 9_999_999,
            ..me.clone()
        };
        assert!(super::super::holder_is_dead_here(&gone));
        // Same pid, another start time: the pid was reused.
        let reused = LockHolder {
            started: "1".into(),
            ..me.clone()
        };
        assert!(cfg!(not(target_os = "linux")) || super::super::holder_is_dead_here(&reused));
        // Another host is never judged from here.
        let elsewhere = LockHolder {
            host: "elsewhere".into(),
            pid: 9_999_999,
            ..me
        };
        assert!(!super::super::holder_is_dead_here(&elsewhere));
    }
}

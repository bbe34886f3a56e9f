//! `ebb daemon` end to end: real `ebb` processes, a real PostgreSQL warehouse (and state
//! store for the two-daemon test), real HTTP to the in-process sink, real signals. The
//! daemon logs JSON lines (`--log-format json`) that the tests read as events.

use crate::support::ebb;
use crate::sync::{assert_holds, Fixture};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `ebb daemon` and the events it logged.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub(crate) addr: String,
}

impl Daemon {
    /// Starts `ebb daemon --listen 127.0.0.1:0 --log-format json ARGS` in `dir` (the format
    /// unless ARGS has one) and waits until it is ready.
    pub(crate) fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(dir, args, env, true)
    }

    /// Like [`Daemon::start`]; with `ready: false`, returns once it listens.
    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)], ready: bool) -> Daemon {
        Daemon::spawn_on("127.0.0.1:0", dir, args, env, ready)
    }

    /// Like [`Daemon::spawn`], listening on `listen`.
    pub(crate) fn spawn_on(listen: &str, dir: &Path, args: &[&str], env: &[(&str, &str)], ready: bool) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
        cmd.args(["daemon", "--listen", listen]);
        if !args.contains(&"--log-format") {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(args)
            .current_dir(dir)
            .env_remove("EBB_PROJECT")
            .env("NO_COLOR", "1")
            .env("EBB_RETRY_BASE_MS", "5")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the ebb binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut d = Daemon {
            child,
            lines,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = d.listening() {
                d.addr = addr;
            }
            if !d.addr.is_empty() && !ready {
                return d;
            }
            // Ready: the project loaded, the store open, the models scheduled.
            if !d.addr.is_empty()
                && d.lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("\"event\":\"ready\"") || l.contains(" ready: "))
            {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100)); // the reader catches up
                panic!("the daemon exited ({status}) before listening:\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "the daemon did not start:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The HTTP address, from the `listening` event (a JSON line, or the human line's
    /// `addr=` field).
    fn listening(&self) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| match serde_json::from_str::<Value>(l) {
                Ok(e) if e["event"] == "listening" => e["addr"].as_str().map(str::to_string),
                Ok(_) => None,
                Err(_) if l.contains("HTTP API on") => l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(str::to_string),
                Err(_) => None,
            })
    }

    pub(crate) fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub(crate) fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Events named `event` about `model`.
    fn of(&self, event: &str, model: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == event && e["model"] == model)
            .collect()
    }

    /// Waits until `n` events match `pred`; panics with the log after `timeout`.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Value> = self.events().into_iter().filter(|e| pred(e)).collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {n} × {what}, saw {}:\n{}",
                found.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -s {sig}");
    }

    /// Waits for the process to exit; `None` if it did not within `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100)); // the reader catches up
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> Http {
        http(&self.addr, "GET", path, token)
    }

    pub(crate) fn post(&self, path: &str, token: Option<&str>) -> Http {
        http(&self.addr, "POST", path, token)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
pub(crate) struct Http {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Http {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> Http {
    let mut s = std::net::TcpStream::connect(addr).expect("the daemon accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Http {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A model reading `{schema}.t` into the sink, with `schedule` (e.g. `interval: 1s`; empty:
/// none). `changing` adds a column that differs on every run, so that every run sends every
/// row (and takes the sink's delay).
fn model_yaml(f: &Fixture, name: &str, schedule: &str, changing: bool) -> String {
    let (col, map) = if changing {
        (
            ", clock_timestamp()::text AS ts",
            "      - source: ts\n        destination: ts\n",
        )
    } else {
        ("", "")
    };
    format!(
        "models:
  - name: {name}
    source:
      type: postgres
      connection: pg
      query: SELECT id, name{col} FROM {s}.t
    destination:
      type: http
      connection: hook
      mode: upsert
      unique_identifier: id
    mappings:
      - source: id
        destination: id
      - source: name
        destination: name
{map}{schedule}",
        s = f.schema,
        schedule = if schedule.is_empty() {
            String::new()
        } else {
            format!("    schedule:\n      {schedule}\n")
        }
    )
}

fn write_model(f: &Fixture, file: &str, text: &str) {
    std::fs::write(f.path().join("models").join(file), text).unwrap();
}

fn ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// A run as `/api/runs` lists it.
#[derive(Debug)]
struct RunRow {
    id: i64,
    started: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
    status: String,
}

/// A model's runs, oldest first, from `/api/runs`.
fn runs(d: &Daemon, model: &str, token: Option<&str>) -> Vec<RunRow> {
    let r = d.get(&format!("/api/runs?model={model}&limit=1000"), token);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out: Vec<RunRow> = r.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| RunRow {
            id: r["id"].as_i64().unwrap(),
            started: ts(&r["started_at"]),
            ended: r["ended_at"].as_str().map(|_| ts(&r["ended_at"])),
            status: r["status"].as_str().unwrap().to_string(),
        })
        .collect();
    out.sort_by_key(|r| r.started);
    out
}

/// Fails if two runs of one model overlap; a run without an end counts as lasting until
/// `open_until`.
#[track_caller]
fn assert_no_overlap(runs: &[RunRow], open_until: DateTime<Utc>) {
    for w in runs.windows(2) {
        let end = w[0].ended.unwrap_or(open_until);
        assert!(
            end <= w[1].started,
            "runs {} and {} overlap: {runs:?}",
            w[0].id,
            w[1].id
        );
    }
}

fn secs_of(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[test]
fn schedules_fire_on_their_slots_and_a_run_outlasting_its_interval_never_overlaps_the_next() {
    require_postgres!();
    let f = Fixture::new("dsched", 40, 10, None);
    write_model(&f, "tick.yaml", &model_yaml(&f, "tick", "interval: 2s", false));
    write_model(&f, "slow.yaml", &model_yaml(&f, "slow", "interval: 1s", true));
    // `slow` sends 4 batches, 2 at a time, each answered after 0.6 s: a run takes ~1.3 s.
    f.sink.delay(Duration::from_millis(600));
    let mut d = Daemon::start(f.path(), &[], &[]);
    d.wait_for("4 runs of tick", 4, Duration::from_secs(25), |e| {
        e["event"] == "run_finished" && e["model"] == "tick"
    });
    let tick = runs(&d, "tick", None);
    let slow = runs(&d, "slow", None);
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0),
        "{}",
        d.log()
    );

    // `2s` fires at even seconds plus a jitter of at most 10% (0.2 s), once per slot.
    assert!(tick.len() >= 4, "{tick:?}");
    for r in &tick {
        let offset = secs_of(r.started).rem_euclid(2.0);
        assert!(
            offset < 0.2 + 0.6,
            "run {} started {offset:.3} s after its slot: {tick:?}",
            r.id
        );
        assert_eq!((r.status.as_str(), r.ended.is_some()), ("succeeded", true));
    }
    // (The first run sends the rows, sharing the sink's slow answers with `slow`.)
    for w in tick[1..].windows(2) {
        let gap = secs_of(w[1].started) - secs_of(w[0].started);
        assert!((1.3..=2.8).contains(&gap), "one run per slot: {tick:?}");
    }
    // `slow` outlasts its 1 s interval: never two at once, and the next starts at the
    // first slot after the end (no burst of missed slots).
    assert!(slow.len() >= 3, "{slow:?}");
    assert_no_overlap(&slow, Utc::now());
    for w in slow.windows(2) {
        let (end, next) = (w[0].ended.unwrap(), w[1].started);
        assert!(
            secs_of(end) - secs_of(w[0].started) > 1.0,
            "each run outlasts its interval: {slow:?}"
        );
        let wait = secs_of(next) - secs_of(end);
        assert!(
            (0.0..1.0 + 0.1 + 0.6).contains(&wait),
            "next slot after the end: {slow:?}"
        );
        // The next start is in the slot right after the end.
        assert_eq!(secs_of(next).floor(), secs_of(end).floor() + 1.0, "{slow:?}");
    }
    assert!(
        d.events().iter().all(|e| e["event"] != "run_busy"),
        "one daemon never meets its own lock"
    );
}

#[test]
fn an_overdue_model_runs_once_at_start_up_and_one_never_run_waits_for_its_slot() {
    require_postgres!();
    let f = Fixture::new("doverdue", 5, 10, None);
    write_model(&f, "late.yaml", &model_yaml(&f, "late", "interval: hourly", false));
    write_model(&f, "fresh.yaml", &model_yaml(&f, "fresh", "interval: hourly", false));
    let out = ebb(f.path(), &["run", "late", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    // The daemon was down for three hours since.
    let db = rusqlite::Connection::open(f.path().join(".ebb/state.db")).unwrap();
    let then = (Utc::now() - chrono::TimeDelta::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    db.execute("UPDATE ebb_runs SET started_at = ?1, ended_at = ?1", [&then])
        .unwrap();
    drop(db);

    let d = Daemon::start(f.path(), &["--log-format", "human"], &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !d.log().contains("run finished model=late") {
        assert!(Instant::now() < deadline, "the overdue model did not run:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let log = d.log();
    assert_eq!(log.matches("run started model=late").count(), 1, "{log}");
    assert_eq!(log.matches("run finished model=late").count(), 1, "{log}");
    assert!(!log.contains("model=fresh"), "never run: waits for its slot\n{log}");
    assert!(log.contains("model overdue"), "{log}");
    // Human lines: a timestamp, the level, the message, key=value fields.
    let line = log.lines().find(|l| l.contains("run finished model=late")).unwrap();
    assert!(
        DateTime::parse_from_rfc3339(line.split(' ').next().unwrap()).is_ok(),
        "{line}"
    );
    assert!(
        line.contains(" INFO  run finished model=late run_id=2 status=succeeded trigger=overdue "),
        "{line}"
    );
    assert!(
        line.contains(" read=5 ") && line.contains(" unchanged=5 ") && line.contains(" sent=0 "),
        "{line}"
    );

    let models = d.get("/api/models", None).json();
    let now = Utc::now();
    for m in models["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["schedule"].is_null())
    {
        let next = ts(&m["next_run_at"]);
        assert!(next > now && next < now + chrono::TimeDelta::minutes(62), "{m}");
        assert_eq!(m["next_run_reason"], "schedule");
    }
}

#[test]
fn hot_reload_follows_added_invalid_changed_and_deleted_model_files() {
    require_postgres!();
    let f = Fixture::new("dreload", 5, 10, None);
    write_model(&f, "a.yaml", &model_yaml(&f, "a", "interval: 1s", false));
    let d = Daemon::start(f.path(), &[], &[]);
    d.wait_for("a run of a", 1, Duration::from_secs(10), |e| {
        e["event"] == "run_finished" && e["model"] == "a"
    });

    // Added: picked up within 5 s, and it runs.
    let written = Instant::now();
    write_model(&f, "b.yaml", &model_yaml(&f, "b", "interval: 1s", false));
    d.wait_for("b loaded", 1, Duration::from_secs(5), |e| {
        e["event"] == "reload_accepted" && e["models"] == "b"
    });
    let picked_up = written.elapsed();
    d.wait_for("2 runs of b", 2, Duration::from_secs(10), |e| {
        e["event"] == "run_finished" && e["model"] == "b"
    });

    // An invalid edit: rejected with its diagnostic; b keeps running its previous plan.
    write_model(&f, "b.yaml", &model_yaml(&f, "b", "interval: every second", false));
    let rejected = d.wait_for("b rejected", 1, Duration::from_secs(5), |e| {
        e["event"] == "reload_rejected"
    });
    let r = &rejected[0];
    assert_eq!(r["file"], "models/b.yaml", "{r}");
    assert_eq!(r["kept"], "b");
    let diag = &r["diagnostics"][0];
    assert_eq!(
        (diag["file"].as_str(), diag["line"].as_i64()),
        (Some("models/b.yaml"), Some(18)),
        "{r}"
    );
    assert!(diag["message"].as_str().unwrap().contains("every second"), "{r}");
    let after_reject = d.of("run_finished", "b").len();
    d.wait_for("b still runs", after_reject + 2, Duration::from_secs(6), |e| {
        e["event"] == "run_finished" && e["model"] == "b"
    });

    // A valid edit: the new schedule.
    write_model(&f, "b.yaml", &model_yaml(&f, "b", "interval: 3s", false));
    d.wait_for("b changed", 2, Duration::from_secs(5), |e| {
        e["event"] == "reload_accepted" && e["models"] == "b"
    });
    let listed = d.get("/api/models", None).json();
    let b = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "b")
        .unwrap()
        .clone();
    assert_eq!(b["schedule"]["written"], "3s", "{b}");

    // Deleted: its schedule stops; a keeps going.
    std::fs::remove_file(f.path().join("models/b.yaml")).unwrap();
    let removed = d.wait_for("b removed", 1, Duration::from_secs(5), |e| {
        e["event"] == "reload_removed"
    });
    assert_eq!(removed[0]["models"], "b");
    let removed_at = ts(&removed[0]["ts"]);
    let a_runs = d.of("run_finished", "a").len();
    d.wait_for("a keeps running", a_runs + 3, Duration::from_secs(8), |e| {
        e["event"] == "run_finished" && e["model"] == "a"
    });
    let late_b: Vec<Value> = d
        .of("run_started", "b")
        .into_iter()
        .filter(|e| ts(&e["ts"]) > removed_at + chrono::TimeDelta::milliseconds(500))
        .collect();
    assert!(late_b.is_empty(), "b ran after its file was deleted: {late_b:?}");
    let listed = d.get("/api/models", None).json();
    let names: Vec<&str> = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "contacts"]);
    let metrics = d.get("/metrics", None).body;
    assert!(
        metrics.contains("ebb_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    eprintln!("a new model file was picked up after {picked_up:?}");
}

#[test]
fn two_daemons_sharing_a_postgres_store_never_overlap_and_one_takes_over_from_a_killed_one() {
    require_postgres!();
    let base = crate::source_postgres::url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let state_schema = format!("ebb_daemon_state_{}", std::process::id());
    let state = format!("{base}{sep}ebb_schema={state_schema}");
    let f = Fixture::new("dtwo", 20, 10, Some(&state));
    f.sql(&format!("DROP SCHEMA IF EXISTS {state_schema} CASCADE"));
    let _cleanup = DropSchema(&f, state_schema.clone());
    write_model(&f, "a.yaml", &model_yaml(&f, "a", "interval: 1s", true));
    write_model(&f, "b.yaml", &model_yaml(&f, "b", "interval: 1s", true));
    // A run sends 2 batches at once, answered after 0.3 s.
    f.sink.delay(Duration::from_millis(300));
    let started = Instant::now();
    let mut one = Daemon::start(f.path(), &["--log-level", "debug"], &[]);
    let two = Daemon::start(f.path(), &["--log-level", "debug"], &[]);

    // Both compete for every slot of both models for a while.
    std::thread::sleep(Duration::from_secs(10));
    // Kill the first one in the middle of a run.
    let deadline = Instant::now() + Duration::from_secs(15);
    let victim = loop {
        let ev = one.events();
        let running: Option<String> = ["a", "b"].into_iter().find_map(|m| {
            let started = ev
                .iter()
                .filter(|e| e["event"] == "run_started" && e["model"] == m)
                .count();
            let finished = ev
                .iter()
                .filter(|e| e["event"] == "run_finished" && e["model"] == m)
                .count();
            (started > finished).then(|| m.to_string())
        });
        if let Some(m) = running {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the first daemon never ran anything:\n{}",
            one.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    one.child.kill().unwrap(); // SIGKILL
    let killed_at = Utc::now();
    one.wait_exit(Duration::from_secs(5));
    let ran_before: usize = ["a", "b"].iter().map(|m| two.of("run_finished", m).len()).sum();
    // The survivor takes the victim's model over at once (same host: the pid is gone).
    let takeover = two.wait_for("the take-over", 1, Duration::from_secs(10), |e| {
        e["event"] == "run_finished"
            && e["model"] == victim.as_str()
            && e["notes"].as_str().is_some_and(|n| n.contains("took over the lock"))
    });
    let took_after = (ts(&takeover[0]["ts"]) - killed_at).num_milliseconds() as f64 / 1000.0;
    for m in ["a", "b"] {
        let n = two.of("run_finished", m).len();
        two.wait_for("runs after the kill", n + 2, Duration::from_secs(10), |e| {
            e["event"] == "run_finished" && e["model"] == m
        });
    }
    let a = runs(&two, "a", None);
    let b = runs(&two, "b", None);
    let elapsed = started.elapsed();

    // Every run of a model, by either daemon, is alone in time.
    assert_no_overlap(&a, killed_at);
    assert_no_overlap(&b, killed_at);
    let victim_runs = if victim == "a" { &a } else { &b };
    // (The survivor may be in the middle of a run too: only runs begun before the kill.)
    let interrupted: Vec<_> = victim_runs
        .iter()
        .filter(|r| r.status == "running" && r.started < killed_at)
        .collect();
    assert_eq!(interrupted.len(), 1, "the killed run stays `running`: {victim_runs:?}");
    // Both daemons did runs, and met each other's locks.
    let one_ran: usize = ["a", "b"].iter().map(|m| one.of("run_finished", m).len()).sum();
    assert!(one_ran >= 1 && ran_before >= 1, "one: {one_ran}, two: {ran_before}");
    let busy = one
        .events()
        .iter()
        .chain(two.events().iter())
        .filter(|e| e["event"] == "run_busy")
        .count();
    assert!(busy >= 5, "the daemons competed for the models: {busy} busy");
    // Every run recorded was made by one of the two.
    let logged: usize = ["a", "b"]
        .iter()
        .map(|m| one.of("run_started", m).len() + two.of("run_started", m).len())
        .sum();
    // (A run the killed daemon had just begun may not have been announced yet.)
    assert!(
        (a.len() + b.len()).abs_diff(logged) <= 1,
        "{logged} logged\na: {a:?}\nb: {b:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    eprintln!(
        "two daemons: {} runs of a, {} of b, {busy} refused as busy; the survivor took `{victim}` over {took_after:.1} s after the kill",
        a.len(),
        b.len()
    );
}

/// Drops a schema of the fixture's database when the test ends, passed or failed.
struct DropSchema<'a>(&'a Fixture, String);

impl Drop for DropSchema<'_> {
    fn drop(&mut self) {
        self.0.sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.1));
    }
}

fn count(run: &Value, what: &str) -> i64 {
    run["counts"][what]
        .as_i64()
        .unwrap_or_else(|| panic!("no count {what} in {run}"))
}

#[test]
fn sigterm_during_a_run_exits_0_once_batches_commit_and_the_next_run_sends_only_the_rest() {
    require_postgres!();
    let f = Fixture::new("dterm", 200, 10, None);
    // 20 batches, 2 at a time, 1 s each: the run takes ~10 s, a stop after the batches in
    // flight ~1 s (bounds far apart, so a loaded machine cannot blur them).
    f.sink.delay(Duration::from_secs(1));
    let mut d = Daemon::start(f.path(), &[], &[]);
    let r = d.post("/api/models/contacts/runs", None);
    assert_eq!(r.status, 202, "{}", r.body);
    while f.sink.requests() < 3 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(25));
    let took = signalled.elapsed();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", d.log());
    assert!(took < Duration::from_secs(6), "{took:?}");
    let finished = d.of("run_finished", "contacts");
    assert_eq!(finished.len(), 1, "{}", d.log());
    assert_eq!(finished[0]["status"], "failed");
    assert!(
        finished[0]["error"].as_str().unwrap().contains("stopped"),
        "{}",
        finished[0]
    );
    let confirmed: BTreeSet<String> = f.sent_keys("upsert").into_iter().collect();
    assert_eq!(confirmed.len() as i64, finished[0]["confirmed"].as_i64().unwrap());
    assert!(confirmed.len() < 200, "stopped before the end");

    // The next run sends exactly what the destination had not confirmed.
    f.sink.delay(Duration::ZERO);
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    let sent: BTreeSet<String> = f.sent_keys("upsert").into_iter().collect();
    assert!(sent.is_disjoint(&confirmed), "nothing confirmed is sent again");
    assert_eq!(sent.len() + confirmed.len(), 200);
    assert_eq!(count(&run, "sent"), 200 - confirmed.len() as i64);
    assert_holds(
        &f.sink.records(),
        &f.expected(),
        "after the stopped run and the next one",
    );
    eprintln!(
        "SIGTERM during a run: exited 0 after {took:?} with {} of 200 rows confirmed",
        confirmed.len()
    );
}

#[test]
fn a_second_signal_exits_at_once_and_the_deadline_bounds_the_wait_losing_nothing() {
    require_postgres!();
    let f = Fixture::new("dkill", 100, 10, None);
    // Each request takes 5 s: waiting for one is far from "at once" and from the deadline.
    f.sink.delay(Duration::from_secs(5));
    // A second SIGINT: exit 130 at once.
    let mut d = Daemon::start(f.path(), &[], &[]);
    assert_eq!(d.post("/api/models/contacts/runs", None).status, 202);
    while f.sink.requests() < 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    d.signal("INT");
    d.wait_for("the shutdown", 1, Duration::from_secs(5), |e| e["event"] == "shutdown");
    // While it drains, webhooks are turned away with a time to come back (a sender retries).
    let w = d.post("/webhooks/contacts", None);
    assert_eq!(w.status, 503, "{}", w.body);
    assert!(w.head.to_ascii_lowercase().contains("retry-after: 10"), "{}", w.head);
    let signalled = Instant::now();
    d.signal("INT");
    let status = d.wait_exit(Duration::from_secs(5));
    let took_second = signalled.elapsed();
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{}", d.log());
    assert!(took_second < Duration::from_millis(3000), "{took_second:?}");
    assert!(d.events().iter().any(|e| e["event"] == "shutdown_now"));

    // The deadline: runs still going after `--shutdown-timeout` are abandoned, exit 1.
    let mut d = Daemon::start(f.path(), &["--shutdown-timeout", "1"], &[]);
    let r = d.post("/api/models/contacts/runs", None);
    assert_eq!(r.status, 202, "{}", r.body);
    let before = f.sink.requests();
    while f.sink.requests() == before {
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(10));
    let took_deadline = signalled.elapsed();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", d.log());
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(4000)).contains(&took_deadline),
        "{took_deadline:?}"
    );
    assert!(d.log().contains("deadline reached"), "{}", d.log());

    // Either way nothing is lost: the next run completes the destination.
    f.sink.delay(Duration::ZERO);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_holds(&f.sink.records(), &f.expected(), "after two interrupted runs");
    eprintln!("second signal: exit 130 after {took_second:?}; 1 s deadline: exit 1 after {took_deadline:?}");
}

#[test]
fn the_http_api_requires_the_token_serves_metrics_and_triggers_runs() {
    require_postgres!();
    let f = Fixture::new("dapi", 200, 10, None);
    let project = std::fs::read_to_string(f.path().join("ebb.yaml")).unwrap();
    std::fs::write(
        f.path().join("ebb.yaml"),
        format!("{project}daemon:\n  api_token: ${{EBB_TEST_API_TOKEN}}\n  max_concurrent_runs: 1\n"),
    )
    .unwrap();
    write_model(&f, "other.yaml", &model_yaml(&f, "other", "", false));
    let token = "s3cret-token";
    let d = Daemon::start(f.path(), &[], &[("EBB_TEST_API_TOKEN", token)]);
    let ok = Some(token);

    // Liveness needs nothing; everything else the token.
    assert_eq!(d.get("/healthz", None).status, 200);
    for path in ["/readyz", "/metrics", "/api/models", "/api/runs"] {
        let r = d.get(path, None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(
            r.head.to_ascii_lowercase().contains("www-authenticate: bearer"),
            "{}",
            r.head
        );
        assert_eq!(d.get(path, Some("wrong")).status, 401, "{path}");
    }
    assert_eq!(d.post("/api/models/contacts/runs", None).status, 401);
    let ready = d.get("/readyz", ok);
    assert_eq!((ready.status, ready.json()["ready"].as_bool()), (200, Some(true)));
    let models = d.get("/api/models", ok).json();
    let m = &models["models"][0];
    assert_eq!(models["models"].as_array().unwrap().len(), 2);
    assert_eq!(
        (m["name"].as_str(), m["health"].as_str()),
        (Some("contacts"), Some("never run"))
    );
    assert!(
        m["schedule"].is_null() && m["next_run_at"].is_null(),
        "on demand only: {m}"
    );

    // Trigger: 404 for an unknown model, 202 with the run's id, 409 while it runs.
    let r = d.post("/api/models/nope/runs", ok);
    assert_eq!(r.status, 404, "{}", r.body);
    f.sink.delay(Duration::from_millis(300));
    let r = d.post("/api/models/contacts/runs", ok);
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = r.json();
    assert_eq!(accepted["model"], "contacts");
    let run_id = accepted["run_id"].as_i64().unwrap_or_else(|| panic!("{accepted}"));
    assert_eq!(accepted["state"], "running", "{accepted}");
    let again = d.post("/api/models/contacts/runs", ok);
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.json()["error"].as_str().unwrap().contains("is running"));
    let listed = d.get("/api/models", ok).json();
    assert_eq!(listed["models"][0]["health"], "running");
    assert_eq!(listed["models"][0]["running"]["run_id"], run_id);
    // `max_concurrent_runs: 1`: another model waits for the first run to end.
    let asked = Instant::now();
    let queued = d.post("/api/models/other/runs", ok);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "a queued run is answered at once"
    );
    assert_eq!(queued.status, 202, "{}", queued.body);
    assert_eq!(queued.json()["state"], "queued", "{}", queued.body);
    d.wait_for("both runs", 2, Duration::from_secs(30), |e| {
        e["event"] == "run_finished"
    });
    let first = &runs(&d, "contacts", ok)[0];
    let second = &runs(&d, "other", ok)[0];
    assert!(
        first.ended.unwrap() <= second.started,
        "one run at a time: {first:?} {second:?}"
    );

    let runs = d.get("/api/runs?model=contacts&limit=1", ok).json();
    let last = &runs["runs"][0];
    assert_eq!(
        (last["id"].as_i64(), last["status"].as_str()),
        (Some(run_id), Some("succeeded"))
    );
    assert_eq!(count(last, "sent"), 200);
    let listed = d.get("/api/models", ok).json();
    assert_eq!(listed["models"][0]["health"], "healthy");
    assert!(listed["models"][0]["lag_secs"].as_f64().unwrap() >= 0.0);

    let metrics = d.get("/metrics", ok);
    assert_eq!(metrics.status, 200);
    assert!(metrics.head.contains("text/plain; version=0.0.4"), "{}", metrics.head);
    let text = metrics.body;
    for line in [
        "ebb_runs_total{model=\"contacts\",status=\"succeeded\"} 1",
        "ebb_rows_total{model=\"contacts\",outcome=\"sent\"} 200",
        "ebb_rows_total{model=\"contacts\",outcome=\"confirmed\"} 200",
        "ebb_api_calls_total{model=\"contacts\"} 20",
        "ebb_run_duration_seconds_count{model=\"contacts\"} 1",
        "ebb_run_duration_seconds_bucket{model=\"contacts\",le=\"+Inf\"} 1",
        "ebb_http_requests_total{route=\"/api/models/{name}/runs\",status=\"409\"} 1",
        "ebb_http_requests_total{route=\"/api/models/{name}/runs\",status=\"404\"} 1",
        "ebb_models{scheduled=\"false\"} 2",
        "ebb_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    for prefix in [
        "ebb_last_success_timestamp_seconds{model=\"contacts\"} ",
        "ebb_lag_seconds{model=\"contacts\"} ",
        "# TYPE ebb_run_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "missing `{prefix}` in\n{text}"
        );
    }
}

#[test]
fn the_daemon_refuses_to_listen_beyond_loopback_without_a_token() {
    let dir = crate::support::pg_project(
        "postgres://u@127.0.0.1/db",
        "models:\n  - name: m\n    source:\n      type: postgres\n      query: SELECT id FROM t\n    destination:\n      type: file\n      object: x\n      mode: upsert\n      unique_identifier: id\n    mappings:\n      - source: id\n        destination: id\n",
    );
    let out = ebb(dir.path(), &["daemon", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::support::stderr(&out);
    assert!(
        err.contains("refusing to listen on `0.0.0.0:0` without an API token") && err.contains("api_token"),
        "{err}"
    );
    // A token from an unset variable is an error too, not an open door.
    let project = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!("{project}daemon:\n  api_token: ${{EBB_TEST_UNSET_TOKEN}}\n"),
    )
    .unwrap();
    let out = ebb(dir.path(), &["daemon", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::support::stderr(&out);
    assert!(
        err.contains("`daemon.api_token`: environment variable `EBB_TEST_UNSET_TOKEN` is not set"),
        "{err}"
    );
    // And a project file with errors does not start.
    std::fs::write(dir.path().join("ebb.yaml"), "version: 1\nconnections: 3\n").unwrap();
    let out = ebb(dir.path(), &["daemon", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::support::stderr(&out).contains("ebb.yaml"), "{out:?}");
}

#[test]
fn until_the_state_store_opens_the_daemon_is_live_but_not_ready() {
    let dir = crate::support::pg_project(
        "postgres://u@127.0.0.1/db",
        "models:\n  - name: m\n    source:\n      type: postgres\n      query: SELECT id FROM t\n    destination:\n      type: file\n      object: x\n      mode: upsert\n      unique_identifier: id\n    mappings:\n      - source: id\n        destination: id\n",
    );
    // A state store nobody listens for.
    let project = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!("{project}state:\n  url: postgres://postgres@127.0.0.1:1/postgres\n"),
    )
    .unwrap();
    let mut d = Daemon::spawn(dir.path(), &[], &[], false);
    d.wait_for("the store error", 1, Duration::from_secs(10), |e| {
        e["event"] == "store_unavailable"
    });
    assert_eq!(d.get("/healthz", None).status, 200);
    let ready = d.get("/readyz", None);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["reason"], "the state store is not open yet");
    assert_eq!(d.post("/api/models/m/runs", None).status, 503);
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0),
        "{}",
        d.log()
    );
}

#[test]
fn a_new_file_reusing_a_running_models_name_is_rejected_and_the_model_keeps_its_plan_deleting_nothing() {
    require_postgres!();
    let f = Fixture::new("ddup", 10, 10, None);
    f.model(&crate::sync::ModelSpec {
        mode: "mirror",
        ..crate::sync::ModelSpec::default()
    });
    let d = Daemon::start(f.path(), &[], &[]);
    assert_eq!(d.post("/api/models/contacts/runs", None).status, 202);
    d.wait_for("the first run", 1, Duration::from_secs(20), |e| {
        e["event"] == "run_finished" && e["model"] == "contacts"
    });
    assert_eq!(f.sink.records().len(), 10);

    // A file sorted before contacts.yaml defines `contacts` again, mirroring 3 of the 10
    // rows: `ebb validate` reports E201 at contacts.yaml's definition (the later one).
    let text = std::fs::read_to_string(f.path().join("models/contacts.yaml")).unwrap();
    let from = format!("FROM {}.t", f.schema);
    assert!(text.contains(&from));
    write_model(&f, "a_dup.yaml", &text.replace(&from, &format!("{from} WHERE id <= 3")));
    let rejected = d.wait_for("the reload rejected", 1, Duration::from_secs(10), |e| {
        e["event"] == "reload_rejected"
    });
    let diagnostics = rejected[0]["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics
            .iter()
            .any(|d| d["code"] == "E201" && d["message"].as_str().unwrap().contains("`contacts`")),
        "{}",
        rejected[0]
    );
    assert_eq!(rejected[0]["kept"], "contacts", "{}", rejected[0]);
    let held = d.wait_for("the change held", 1, Duration::from_secs(5), |e| {
        e["event"] == "reload_held"
    });
    assert!(
        held[0]["changed"].as_str().unwrap().contains("a_dup.yaml"),
        "{}",
        held[0]
    );

    // The model still runs from contacts.yaml: nothing is deleted.
    f.sink.reset_log();
    assert_eq!(d.post("/api/models/contacts/runs", None).status, 202);
    d.wait_for("the second run", 2, Duration::from_secs(20), |e| {
        e["event"] == "run_finished" && e["model"] == "contacts"
    });
    assert_eq!(f.sent_keys("delete"), Vec::<String>::new());
    assert_eq!(f.sink.records().len(), 10);
    let last = &d.get("/api/runs?model=contacts&limit=1", None).json()["runs"][0];
    assert_eq!((count(last, "read"), count(last, "removed")), (10, 0), "{last}");
    let models = d.get("/api/models", None).json();
    let listed: Vec<(&str, &str)> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["file"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("contacts", "models/contacts.yaml")]);
    // The API says why the change was not taken.
    let reload = &models["reload"];
    assert_eq!(reload["result"], "rejected", "{reload}");
    assert!(
        reload["errors"].as_array().unwrap().iter().any(|d| d["code"] == "E201"),
        "{reload}"
    );
    assert_eq!(reload["held"], serde_json::json!(["models/a_dup.yaml"]), "{reload}");
    let metrics = d.get("/metrics", None).body;
    assert!(
        metrics.contains("ebb_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );

    // The duplicate removed: the project validates again, and says so.
    std::fs::remove_file(f.path().join("models/a_dup.yaml")).unwrap();
    d.wait_for("the project valid again", 1, Duration::from_secs(10), |e| {
        e["event"] == "reload_accepted" && e["msg"].as_str().unwrap().contains("validates again")
    });
    let models = d.get("/api/models", None).json();
    assert_eq!(models["reload"]["result"], "accepted", "{}", models["reload"]);
}

/// A project with a PostgreSQL connection whose URL is `${EBB_TEST_SOURCE_URL}`, a file
/// connection and an on-demand model `m` from one to the other; `extra` is appended to
/// `ebb.yaml`.
fn small_project(extra: &str) -> tempfile::TempDir {
    let dir = crate::support::pg_project(
        "${EBB_TEST_SOURCE_URL}",
        "models:\n  - name: m\n    source:\n      type: postgres\n      query: SELECT id FROM t\n    destination:\n      type: file\n      object: x\n      mode: upsert\n      unique_identifier: id\n    mappings:\n      - source: id\n        destination: id\n",
    );
    let project = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap();
    std::fs::write(dir.path().join("ebb.yaml"), format!("{project}{extra}")).unwrap();
    dir
}

/// `ebb ARGS` in `dir` with `env`.
fn ebb_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("EBB_PROJECT")
        .env("NO_COLOR", "1")
        .env("EBB_TEST_SOURCE_URL", "postgres://u@127.0.0.1:1/db");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the ebb binary runs")
}

/// Reads from `s` until the daemon closes it (EOF or reset); how long that took from
/// `since`, or `None` if it is still open after `wait`.
fn closed_within(s: &mut std::net::TcpStream, since: Instant, wait: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => continue, // (an answer such as 408 before the close)
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(_) => return Some(since.elapsed()),
        }
    }
}

#[test]
fn slow_and_silent_clients_are_closed_after_the_header_timeout_and_past_the_cap_at_once() {
    let dir = small_project("");
    let d = Daemon::start(
        dir.path(),
        &[],
        &[
            ("EBB_TEST_SOURCE_URL", "postgres://u@127.0.0.1:1/db"),
            ("EBB_HTTP_HEADER_TIMEOUT_MS", "1500"),
            ("EBB_HTTP_MAX_CONNECTIONS", "40"),
        ],
    );
    let listening = d.events().into_iter().find(|e| e["event"] == "listening").unwrap();
    assert_eq!(
        (
            listening["max_connections"].as_u64(),
            listening["header_timeout_secs"].as_f64()
        ),
        (Some(40), Some(1.5)),
        "{listening}"
    );
    let connect = || std::net::TcpStream::connect(&d.addr).unwrap();
    let opened = Instant::now();
    // 20 silent connections, 9 that stop in the middle of their head, one that trickles
    // a header byte every 100 ms, and one idle keep-alive connection after an answer.
    let mut slow: Vec<std::net::TcpStream> = (0..20).map(|_| connect()).collect();
    for _ in 0..9 {
        let mut s = connect();
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        slow.push(s);
    }
    let trickle = connect();
    let mut writer = trickle.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(b"X-A: b\r\n").is_err() {
                break;
            }
        }
    });
    slow.push(trickle);
    let mut idle = connect();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = [0u8; 512];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = idle.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    slow.push(idle);
    // 31 of 40 open: the daemon still answers.
    let asked = Instant::now();
    assert_eq!(d.get("/healthz", None).status, 200);
    assert!(asked.elapsed() < Duration::from_secs(1), "{:?}", asked.elapsed());

    // Past the cap, a connection is closed at once. (The answered one gives its slot back
    // as it closes: a moment for that.)
    std::thread::sleep(Duration::from_millis(100));
    let mut more: Vec<std::net::TcpStream> = (0..9).map(|_| connect()).collect();
    let at_cap = Instant::now();
    let mut refused: Vec<std::net::TcpStream> = (0..10).map(|_| connect()).collect();
    for s in &mut refused {
        let took = closed_within(s, at_cap, Duration::from_millis(1200));
        assert!(took.is_some(), "a connection past the cap stayed open");
    }
    // The slow ones are closed once their head is 1.5 s late.
    for (i, s) in slow.iter_mut().enumerate() {
        let took =
            closed_within(s, opened, Duration::from_secs(6)).unwrap_or_else(|| panic!("connection {i} stayed open"));
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
            "connection {i} closed after {took:?}"
        );
    }
    for s in &mut more {
        assert!(closed_within(s, opened, Duration::from_secs(5)).is_some());
    }
    // Slots free again: answered at once.
    let asked = Instant::now();
    let r = d.get("/metrics", None);
    assert_eq!(r.status, 200);
    assert!(asked.elapsed() < Duration::from_secs(1), "{:?}", asked.elapsed());
    let refused_total: u64 = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("ebb_http_connections_refused_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.body));
    assert!(refused_total >= 10, "{refused_total}");
    assert!(
        d.events().iter().any(|e| e["event"] == "http_connection_refused"),
        "{}",
        d.log()
    );
}

#[test]
fn beyond_loopback_the_api_token_needs_32_characters_and_a_weak_one_on_loopback_is_warned_about() {
    let dir = small_project("daemon:\n  api_token: ${EBB_TEST_API_TOKEN}\n");
    for (token, why) in [
        ("x", "it has 1 character"),
        ("short-but-s3cret-token", "it has 22 characters"),
        ("abababababababababababababababab", "it has only 2 different characters"),
    ] {
        let out = ebb_env(
            dir.path(),
            &["daemon", "--listen", "0.0.0.0:0"],
            &[("EBB_TEST_API_TOKEN", token)],
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = crate::support::stderr(&out);
        assert!(
            err.contains("refusing to listen on `0.0.0.0:0` with a weak API token")
                && err.contains(why)
                && err.contains("at least 32 characters"),
            "{err}"
        );
        assert!(
            token.len() < 5 || !err.contains(token),
            "the token is never shown: {err}"
        );
    }
    // 32 hex digits (128 bits): it listens beyond loopback.
    let strong = "9f86d081884c7d659a2feaa0c55ad015";
    let env = [
        ("EBB_TEST_SOURCE_URL", "postgres://u@127.0.0.1:1/db"),
        ("EBB_TEST_API_TOKEN", strong),
    ];
    let d = Daemon::spawn_on("0.0.0.0:0", dir.path(), &[], &env, true);
    assert!(d.addr.starts_with("0.0.0.0:"), "{}", d.addr);
    let port = d.addr.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    assert_eq!(http(&local, "GET", "/api/models", Some(strong)).status, 200);
    assert_eq!(http(&local, "GET", "/api/models", Some("x")).status, 401);
    assert!(
        !d.events().iter().any(|e| e["event"] == "api_token_weak"),
        "{}",
        d.log()
    );
    drop(d);
    // On loopback a short token is allowed, with a warning that does not show it.
    let short = "short-but-s3cret-token";
    let d = Daemon::start(
        dir.path(),
        &[],
        &[
            ("EBB_TEST_SOURCE_URL", "postgres://u@127.0.0.1:1/db"),
            ("EBB_TEST_API_TOKEN", short),
        ],
    );
    let warned = d.wait_for("the warning", 1, Duration::from_secs(5), |e| {
        e["event"] == "api_token_weak"
    });
    assert_eq!(warned[0]["why"], "it has 22 characters", "{}", warned[0]);
    assert!(!d.log().contains(short), "{}", d.log());
    assert_eq!(d.get("/api/models", Some(short)).status, 200);
}

#[test]
fn a_state_store_urls_password_and_secret_parameters_never_reach_the_daemons_log_or_run_stderr() {
    // `p@ss@word` holds `@`; port 1 has no server; port 99999 does not parse.
    let secrets = ["p@ss@word", "ss@word", "p%40ss", "zzz"];
    let unreachable = "postgres://u:p@ss@word@127.0.0.1:1/x?password=zzz";
    let unparseable = "postgres://u:p@ss@word@127.0.0.1:99999/x?password=zzz";
    let src = ("EBB_TEST_SOURCE_URL", "postgres://u@127.0.0.1:1/db");

    // Written literally, it is an error of `ebb.yaml`, shown without the password.
    let dir = small_project(&format!("state:\n  url: {unreachable}\n"));
    for args in [&["daemon", "--listen", "127.0.0.1:0"][..], &["run", "m"][..]] {
        let out = ebb_env(dir.path(), args, &[]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = crate::support::stderr(&out);
        assert!(err.contains("E701"), "{err}");
        for s in secrets {
            assert!(!err.contains(s), "`{s}` in `ebb {}`:\n{err}", args.join(" "));
        }
    }

    // From the environment: the daemon retries every 5 s and says why each time.
    let dir = small_project("state:\n  url: ${EBB_TEST_STATE_URL}\n");
    for url in [unreachable, unparseable] {
        let env = [src, ("EBB_TEST_STATE_URL", url)];
        let mut d = Daemon::spawn(dir.path(), &["--log-format", "human"], &env, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.log().contains("cannot open the state store") {
            assert!(Instant::now() < deadline, "no store error:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d.signal("TERM");
        d.wait_exit(Duration::from_secs(5));
        let log = d.log();
        assert!(
            log.contains("postgres://u:***@127.0.0.1:") || log.contains("postgres://u@127.0.0.1:"),
            "{log}"
        );
        for s in secrets {
            assert!(!log.contains(s), "`{s}` in the daemon's log:\n{log}");
        }
        for args in [&["run", "m"][..], &["runs", "m"][..], &["status"][..]] {
            let out = ebb_env(dir.path(), args, &env);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
            let text = format!("{}{}", crate::support::stdout(&out), crate::support::stderr(&out));
            assert!(text.contains("cannot open the state store"), "{args:?}: {text}");
            for s in secrets {
                assert!(!text.contains(s), "`{s}` in `ebb {}`:\n{text}", args.join(" "));
            }
        }
    }
}

#[test]
fn a_source_urls_password_never_reaches_the_run_history() {
    let dir = small_project("");
    // The password holds `@`: a parser that stops at the first `@` would take `t-pw@…` for
    // the host and put it in the error.
    let url = "postgres://ebb_user:s3cr@t-pw@127.0.0.1:1/db?password=zzz-src";
    let secrets = ["s3cr", "t-pw", "zzz-src"];
    let env = [("EBB_TEST_SOURCE_URL", url)];
    let d = Daemon::start(dir.path(), &[], &env);
    assert_eq!(d.post("/api/models/m/runs", None).status, 202);
    let finished = d.wait_for("the run", 1, Duration::from_secs(20), |e| {
        e["event"] == "run_finished" && e["model"] == "m"
    });
    assert_eq!(finished[0]["status"], "failed", "{}", finished[0]);
    let api = d.get("/api/runs?model=m", None).body;
    let models = d.get("/api/models", None).body;
    assert!(api.contains("127.0.0.1:1/db"), "{api}");
    drop(d);
    let runs = ebb_env(dir.path(), &["runs", "m", "--format", "json"], &env);
    let human = ebb_env(dir.path(), &["runs", "m"], &env);
    let status = ebb_env(dir.path(), &["status", "--format", "json"], &env);
    let run = ebb_env(dir.path(), &["run", "m", "--format", "json"], &env);
    let db = rusqlite::Connection::open(dir.path().join(".ebb/state.db")).unwrap();
    let stored: Vec<String> = db
        .prepare("SELECT error FROM ebb_runs WHERE error IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    for (what, text) in [
        ("/api/runs", api),
        ("/api/models", models),
        ("ebb runs --format json", crate::support::stdout(&runs)),
        ("ebb runs", crate::support::stdout(&human)),
        ("ebb status", crate::support::stdout(&status)),
        (
            "ebb run",
            format!("{}{}", crate::support::stdout(&run), crate::support::stderr(&run)),
        ),
        ("ebb_runs.error", stored.join("\n")),
    ] {
        assert!(text.contains("cannot connect"), "{what}: {text}");
        for s in secrets {
            assert!(!text.contains(s), "`{s}` in {what}:\n{text}");
        }
    }
}

#[test]
fn a_daemon_keeps_running_its_models_when_its_postgres_state_stores_connections_are_terminated() {
    require_postgres!();
    let pid = std::process::id();
    let base = crate::source_postgres::url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let state_schema = format!("ebb_daemon_reconnect_{pid}");
    // The store's connections carry a name of their own, so that only they are terminated.
    let app = format!("ebb_test_daemon_reconnect_{pid}");
    let state = format!("{base}{sep}ebb_schema={state_schema}&application_name={app}");
    let f = Fixture::new("drecon", 20, 10, Some(&state));
    f.sql(&format!("DROP SCHEMA IF EXISTS {state_schema} CASCADE"));
    let _cleanup = DropSchema(&f, state_schema.clone());
    write_model(&f, "m.yaml", &model_yaml(&f, "m", "interval: 1s", true));
    let d = Daemon::start(f.path(), &[], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = crate::support::pg_client(&rt);
    let succeeded = |e: &Value| e["event"] == "run_finished" && e["model"] == "m" && e["status"] == "succeeded";
    d.wait_for("2 runs", 2, Duration::from_secs(20), succeeded);
    let mut first_after = None;
    for round in 0..3 {
        let before = d.of("run_finished", "m").len();
        first_after.get_or_insert(before);
        let killed: i64 = rt
            .block_on(admin.query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            ))
            .unwrap()
            .get(0);
        assert!(killed >= 1, "round {round}: the store's connections were found");
        // The next scheduled runs succeed on new connections.
        d.wait_for("runs after the termination", before + 2, Duration::from_secs(20), |e| {
            e["event"] == "run_finished" && e["model"] == "m"
        });
    }
    let after: Vec<Value> = d.of("run_finished", "m").split_off(first_after.unwrap());
    assert!(after.len() >= 6, "{}", d.log());
    let failed: Vec<&Value> = after.iter().filter(|e| e["status"] != "succeeded").collect();
    assert!(
        failed.is_empty(),
        "runs failed after the termination: {failed:?}\n{}",
        d.log()
    );
}

#[test]
fn a_fifo_planted_as_ebb_yaml_is_refused_and_never_stalls_the_reload_loop() {
    require_postgres!();
    let f = Fixture::new("dfifo", 5, 10, None);
    let d = Daemon::start(f.path(), &[], &[]);
    let project = f.path().join("ebb.yaml");
    let saved = std::fs::read_to_string(&project).unwrap();
    std::fs::remove_file(&project).unwrap();
    let made = Command::new("mkfifo").arg(&project).status().expect("mkfifo runs");
    assert!(made.success());
    // Reading a FIFO blocks until a writer comes: the poll must not open it as a file.
    let rejected = d.wait_for("the FIFO refused", 1, Duration::from_secs(15), |e| {
        e["event"] == "reload_rejected"
    });
    assert!(rejected[0].to_string().contains("regular file"), "{}", rejected[0]);
    assert_eq!(d.get("/healthz", None).status, 200);
    // Back to the file: the daemon goes on, its models intact.
    std::fs::remove_file(&project).unwrap();
    std::fs::write(&project, saved).unwrap();
    let r = d.post("/api/models/contacts/runs", None);
    assert_eq!(r.status, 202, "{}", r.body);
    d.wait_for("a run after the FIFO", 1, Duration::from_secs(15), |e| {
        e["event"] == "run_finished" && e["model"] == "contacts"
    });
}

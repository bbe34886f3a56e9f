//! Benchmark: signed webhooks into `ebb daemon` (release binary, SQLite state, a DuckDB
//! table), as issue 17 asks: sustained events/s and p50/p99 latency at 64 concurrent
//! senders, and how far the table lags behind.
//!
//! The daemon is the `ebb` executable in a process of its own (`ebb daemon --listen
//! 127.0.0.1:0`), with a project of one webhook model (Standard Webhooks, five mapped
//! fields, `on_deleted: soft`). This process runs 64 sender threads over keep-alive
//! HTTP/1.1 connections; each sends one event a request, signed by the reference
//! `standardwebhooks` library, and waits for the answer before the next (as a CRM's
//! delivery workers do). The events are N creates and updates of N/5 records (default N =
//! 50,000), in order per sender, 1 in 10 a delete. A thread scrapes `/metrics` every 250 ms
//! for the inbox's depth and apply lag.
//!
//! Printed: events/s over the sending phase (first request to last answer), request
//! latency p50/p90/p99/max, the largest apply lag seen (receipt of a batch's oldest event to
//! its commit), the largest inbox depth, and how long after the last 202 the inbox was
//! empty. Then the table is checked: one row per record, each the newest event's values.
//!
//! Run: `cargo bench --bench webhooks`. Environment: `EBB_BENCH_WEBHOOK_EVENTS` (default
//! 50000), `EBB_BENCH_WEBHOOK_SENDERS` (64), `EBB_BENCH_WEBHOOK_STATE` (the state store's
//! URL, e.g. `postgres://…?ebb_schema=bench`; default SQLite), `EBB_BENCH_KEEP=1` (keep the
//! directory).

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
#[path = "common/runs.rs"]
#[allow(dead_code)]
mod runs;
use runs::env_usize;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MODEL: &str = "events_in";

fn project(dir: &Path) {
    std::fs::create_dir_all(dir.join("models")).unwrap();
    // `EBB_BENCH_WEBHOOK_STATE`: the state store (and so the inbox), e.g. a `postgres://`
    // URL; default the project's SQLite file.
    let state = std::env::var("EBB_BENCH_WEBHOOK_STATE")
        .map(|u| format!("state:\n  url: {u}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("ebb.yaml"),
        state
            + "version: 1
connections:
  hooks:
    type: webhook
    signing: standard
    secret: ${BENCH_WEBHOOK_SECRET}
  warehouse:
    type: duckdb
    path: warehouse.duckdb
",
    )
    .unwrap();
    std::fs::write(
        dir.join("models/events.yaml"),
        format!(
            "models:
  - name: {MODEL}
    source:
      type: webhook
      connection: hooks
      events: {{customer.created: upsert, customer.updated: upsert, customer.deleted: delete}}
      event_time: $.data.modified_date
      types: {{modified_date: timestamp, score: bigint}}
    destination:
      type: duckdb
      connection: warehouse
      table: raw.events_in
      unique_identifier: id
      on_deleted: soft
    mappings:
      - source: id
        destination: crm_id
      - source: email
        destination: email
        transform: [trim, lower]
      - source: name
        destination: name
        transform: initcap
      - source: score
        destination: score
      - source: modified_date
        destination: modified_date
"
        ),
    )
    .unwrap();
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// POSTs `body` with `headers`; the status. Reconnects once if the kept connection
    /// was closed.
    fn post(&mut self, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
        for _ in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr).expect("the daemon listens");
                s.set_nodelay(true).unwrap();
                self.stream = Some(BufReader::new(s));
            }
            let r = self.stream.as_mut().unwrap();
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
                self.addr,
                body.len()
            );
            for (k, v) in headers {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            req.push_str("\r\n");
            let mut bytes = req.into_bytes();
            bytes.extend_from_slice(body);
            if r.get_mut().write_all(&bytes).is_err() {
                self.stream = None;
                continue;
            }
            match read_answer(r) {
                Some((status, close)) => {
                    if close {
                        self.stream = None;
                    }
                    return status;
                }
                None => self.stream = None,
            }
        }
        panic!("no answer from the daemon");
    }
}

/// The status of an answer, and whether the server closes the connection after it.
fn read_answer(r: &mut BufReader<TcpStream>) -> Option<(u16, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((status, close))
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{model=\"{MODEL}\"}}")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// `ebb_webhook_events_total` of the model for `outcome`.
fn events_total(metrics: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "ebb_webhook_events_total{{model=\"{MODEL}\",outcome=\"{outcome}\"}}"
            ))
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn start_daemon(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["daemon", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .current_dir(dir)
        .env("BENCH_WEBHOOK_SECRET", SECRET)
        .env_remove("EBB_PROJECT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ebb binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut addr = None;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["event"] == "listening" {
                addr = v["addr"].as_str().map(str::to_string);
            }
            if v["event"] == "ready" {
                let _ = tx.send(addr.clone().unwrap_or_default());
            }
            if v["level"] == "error" {
                eprintln!("daemon: {line}");
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the daemon is ready");
    (child, addr)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_usize("EBB_BENCH_WEBHOOK_EVENTS", 50_000);
    let senders = env_usize("EBB_BENCH_WEBHOOK_SENDERS", 64);
    let records = (n / 5).max(1);
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let (mut daemon, addr) = start_daemon(dir.path());
    println!("webhooks: {n} events of {records} records, {senders} senders, one event a request, daemon at {addr}");

    // Each sender owns the records `r % senders == i` and sends their events in order.
    let mut per_sender: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); senders];
    for e in 0..n {
        let r = e % records;
        let version = e / records;
        let kind = if version == 0 {
            "created"
        } else if e % 10 == 9 {
            "deleted"
        } else {
            "updated"
        };
        let body = json!({"type": format!("customer.{kind}"), "data": {
            "id": format!("r{r:06}"), "email": format!(" R{r}.V{version}@Example.com "),
            "name": "ada lovelace", "score": version,
            "modified_date": format!("2026-12-01T{:02}:{:02}:00Z", version / 60, version % 60),
        }})
        .to_string()
        .into_bytes();
        per_sender[r % senders].push((format!("evt_{e}"), body));
    }
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (max_lag, max_depth) = (Arc::new(Mutex::new(0f64)), Arc::new(Mutex::new(0f64)));
    let scraper = {
        let (addr, done, max_lag, max_depth) = (addr.clone(), done.clone(), max_lag.clone(), max_depth.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let m = get(&addr, "/metrics");
                if let Some(l) = gauge(&m, "ebb_inbox_apply_lag_seconds") {
                    let mut x = max_lag.lock().unwrap();
                    *x = x.max(l);
                }
                if let Some(d) = gauge(&m, "ebb_inbox_pending") {
                    let mut x = max_depth.lock().unwrap();
                    *x = x.max(d);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let started = Instant::now();
    let threads: Vec<_> = per_sender
        .into_iter()
        .map(|events| {
            let (addr, latencies, failures) = (addr.clone(), latencies.clone(), failures.clone());
            std::thread::spawn(move || {
                let signer = standardwebhooks::Webhook::new(SECRET).unwrap();
                let mut conn = Conn { addr, stream: None };
                let mut mine = Vec::with_capacity(events.len());
                for (id, body) in events {
                    let ts = chrono::Utc::now().timestamp();
                    let sig = signer.sign(&id, ts, &body).unwrap();
                    let headers = [
                        ("Content-Type", "application/json".to_string()),
                        ("webhook-id", id),
                        ("webhook-timestamp", ts.to_string()),
                        ("webhook-signature", sig),
                    ];
                    let t = Instant::now();
                    let status = conn.post(&format!("/webhooks/{MODEL}"), &headers, &body);
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    if status != 202 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let sending = started.elapsed().as_secs_f64();
    let last_answer = Instant::now();
    // Until the inbox is empty.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let m = get(&addr, "/metrics");
        let settled: u64 = ["applied", "superseded", "ignored", "dead"]
            .iter()
            .map(|o| events_total(&m, o))
            .sum();
        if settled >= events_total(&m, "stored") && settled > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the inbox did not empty in 5 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let drained = last_answer.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    scraper.join().unwrap();
    let metrics = get(&addr, "/metrics");
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "  sent {} events in {sending:.2} s: {:.0} events/s; {failed} not answered 202",
        lat.len(),
        lat.len() as f64 / sending
    );
    println!(
        "  latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    println!(
        "  apply lag: largest seen {:.3} s; inbox depth at most {:.0}; empty {drained:.3} s after the last 202",
        *max_lag.lock().unwrap(),
        *max_depth.lock().unwrap()
    );
    for outcome in ["stored", "duplicate", "applied", "superseded", "dead"] {
        print!("  {outcome} {};", events_total(&metrics, outcome));
    }
    println!();
    // Stop the daemon (SIGTERM), then check the table.
    let _ = Command::new("kill")
        .args(["-s", "TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let db = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    let (rows, deleted): (i64, i64) = db
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE is_deleted) FROM raw.events_in",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Each record's newest event: version (n-1-r)/records; a delete when its number ends in 9.
    let wrong: i64 = db
        .query_row(
            &format!(
                "SELECT count(*) FROM (
                    SELECT is_deleted, score, vmax, (vmax > 0 AND (r + vmax * {records}) % 10 = 9) AS gone FROM (
                        SELECT *, ({n} - 1 - r) // {records} AS vmax FROM (
                            SELECT *, CAST(substr(crm_id, 2) AS BIGINT) AS r FROM raw.events_in)))
                 WHERE is_deleted <> gone OR (NOT gone AND score <> vmax)"
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!("  table: {rows} rows ({deleted} deleted), {wrong} not at their newest version");
    assert_eq!(rows as usize, records, "one row per record");
    assert_eq!(wrong, 0, "every row holds its record's newest event");
    assert_eq!(failed, 0, "every event was accepted");
    if std::env::var("EBB_BENCH_KEEP").is_ok_and(|v| v == "1") {
        println!("  kept {}", dir.keep().display());
    }
}

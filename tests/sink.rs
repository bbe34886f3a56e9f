//! An in-process webhook that speaks the `http` destination's protocol (DESIGN §3) and keeps
//! the destination's state, with faults on demand, for the destination and engine tests.
//!
//! It applies `upsert`, `update`, `insert` and `clear` by replacing the stored record (a
//! `clear` payload holds the key and nulls) and `delete` by removing it, keyed by the
//! record's `key_field` value as text (a string as is, a number as its JSON text). It is
//! strict: a body that is not the protocol's is answered 400, so client bugs surface.
//!
//! [`Sink::start`] serves on the calling test's runtime; a test that blocks its thread (for
//! example waiting for a child `ebb` process) uses [`Sink::start_in_thread`] instead.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the sink saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `upsert`, `update`, …; empty when the body was not the protocol's.
    pub operation: String,
    pub run_id: i64,
    /// The records' keys, in order.
    pub keys: Vec<String>,
    /// The status answered (a hung request is logged with the 504 it answers after 60 s).
    pub status: u16,
    /// The request's headers, names lowercase.
    pub headers: BTreeMap<String, String>,
}

/// How long a hung request waits before it answers 504.
const HANG: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Inner {
    key_field: String,
    records: BTreeMap<String, Value>,
    requests: usize,
    log: Vec<Received>,
    rejects: BTreeSet<String>,
    /// Status and `Retry-After` seconds of the next failures.
    fail: VecDeque<(u16, Option<u64>)>,
    fail_after_apply: usize,
    /// Canned answers (status, body) of the next requests, applying nothing.
    canned: VecDeque<(u16, String)>,
    hang: usize,
    delay: Duration,
}

/// The webhook and its state. Clones share both.
#[derive(Clone)]
pub struct Sink {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
}

impl Sink {
    /// Starts a sink on the current tokio runtime, keying records by `key_field`.
    pub async fn start(key_field: &str) -> Sink {
        let (sink, serve) = Sink::bind(key_field).await;
        tokio::spawn(serve);
        sink
    }

    /// Starts a sink on a thread of its own with its own runtime; it serves until the test
    /// process exits.
    pub fn start_in_thread(key_field: &str) -> Sink {
        let (tx, rx) = std::sync::mpsc::channel();
        let key_field = key_field.to_string();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the sink");
            runtime.block_on(async move {
                let (sink, serve) = Sink::bind(&key_field).await;
                tx.send(sink).expect("the test waits for the sink");
                serve.await;
            });
        });
        rx.recv().expect("the sink starts")
    }

    async fn bind(key_field: &str) -> (Sink, impl std::future::Future<Output = ()> + Send + 'static) {
        let inner = Arc::new(Mutex::new(Inner {
            key_field: key_field.to_string(),
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/hook", post(hook))
            .layer(DefaultBodyLimit::disable())
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("the port");
        let serve = async move { axum::serve(listener, app).await.expect("the sink serves") };
        (Sink { inner, addr }, serve)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where to POST: `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The records as applied, by key.
    pub fn records(&self) -> BTreeMap<String, Value> {
        self.state().records.clone()
    }

    /// POSTs received since the start or the last [`Sink::reset_log`], failed ones included.
    pub fn requests(&self) -> usize {
        self.state().requests
    }

    /// The requests received, oldest first.
    pub fn log(&self) -> Vec<Received> {
        self.state().log.clone()
    }

    /// Forgets the requests received (the log and the count), not the records.
    pub fn reset_log(&self) {
        let mut s = self.state();
        s.log.clear();
        s.requests = 0;
    }

    /// Rejects the records with these keys (`success: false`, `error: "rejected by test"`)
    /// until [`Sink::clear_rejects`]; the others in their batches are applied.
    pub fn reject(&self, keys: &[&str]) {
        self.state().rejects.extend(keys.iter().map(|k| k.to_string()));
    }

    pub fn clear_rejects(&self) {
        self.state().rejects.clear();
    }

    /// Answers the next `n` requests with `status` (and `Retry-After: retry_after`),
    /// applying nothing.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.state().fail.extend(std::iter::repeat_n((status, retry_after), n));
    }

    /// Drops every queued fault (failures, hangs, canned answers).
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.fail.clear();
        s.fail_after_apply = 0;
        s.canned.clear();
        s.hang = 0;
    }

    /// Applies the next `n` batches, then answers 500: a response lost on the way back.
    pub fn fail_after_apply_next(&self, n: usize) {
        self.state().fail_after_apply += n;
    }

    /// Answers the next request with `status` and `body` verbatim, applying nothing.
    pub fn answer_next(&self, status: u16, body: &str) {
        self.state().canned.push_back((status, body.to_string()));
    }

    /// Waits `d` before answering each request (`Duration::ZERO` to stop). The batch is
    /// applied before the wait, so a client that gives up or dies meanwhile leaves rows
    /// applied but unconfirmed.
    pub fn delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Leaves the next `n` requests unanswered for 60 s (then 504), applying nothing.
    pub fn hang_next(&self, n: usize) {
        self.state().hang += n;
    }
}

/// A request body of the protocol.
struct Request {
    operation: String,
    run_id: i64,
    /// Key and record, in order.
    records: Vec<(String, Value)>,
}

fn parse(body: &[u8], key_field: &str) -> Result<Request, String> {
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !body["model"].is_string() {
        return Err("`model` is not a string".into());
    }
    let run_id = body["run_id"].as_i64().ok_or("`run_id` is not an integer")?;
    let operation = body["operation"].as_str().unwrap_or_default().to_string();
    if !["upsert", "update", "insert", "delete", "clear"].contains(&operation.as_str()) {
        return Err(format!("`operation` `{}` is not an operation", body["operation"]));
    }
    let records = body["records"].as_array().ok_or("`records` is not an array")?;
    let records = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if !r.is_object() {
                return Err(format!("record {i} is not an object"));
            }
            let key = match &r[key_field] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return Err(format!("record {i}: `{key_field}` is {other}, not a string or number")),
            };
            Ok((key, r.clone()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Request {
        operation,
        run_id,
        records,
    })
}

fn answer(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", "application/json")], body).into_response()
}

async fn hook(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("<binary>").to_string()))
        .collect();
    let (response, wait) = {
        let mut s = inner.lock().unwrap_or_else(|e| e.into_inner());
        s.requests += 1;
        let wait = s.delay;
        let request = match parse(&body, &s.key_field) {
            Ok(r) => r,
            Err(message) => {
                s.log.push(Received {
                    operation: String::new(),
                    run_id: 0,
                    keys: Vec::new(),
                    status: 400,
                    headers,
                });
                return answer(400, json!({ "error": message }).to_string());
            }
        };
        let log = |status: u16| Received {
            operation: request.operation.clone(),
            run_id: request.run_id,
            keys: request.records.iter().map(|(k, _)| k.clone()).collect(),
            status,
            headers: headers.clone(),
        };
        if s.hang > 0 {
            s.hang -= 1;
            let received = log(504);
            s.log.push(received);
            (answer(504, String::new()), HANG)
        } else if let Some((status, retry_after)) = s.fail.pop_front() {
            let received = log(status);
            s.log.push(received);
            let mut response = answer(status, format!("status {status} induced by test"));
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            (response, wait)
        } else if let Some((status, body)) = s.canned.pop_front() {
            let received = log(status);
            s.log.push(received);
            (answer(status, body), wait)
        } else {
            let mut results = Vec::new();
            for (key, record) in &request.records {
                if s.rejects.contains(key) {
                    results.push(json!({"success": false, "error": "rejected by test"}));
                    continue;
                }
                if request.operation == "delete" {
                    s.records.remove(key);
                } else {
                    s.records.insert(key.clone(), record.clone());
                }
                results.push(json!({"success": true}));
            }
            let response = if s.fail_after_apply > 0 {
                s.fail_after_apply -= 1;
                (500, "applied, but the answer is lost (induced by test)".to_string())
            } else if s.rejects.is_empty() {
                (200, json!({ "received": request.records.len() }).to_string())
            } else {
                (200, json!({ "results": results }).to_string())
            };
            let received = log(response.0);
            s.log.push(received);
            (answer(response.0, response.1), wait)
        }
    };
    tokio::time::sleep(wait).await;
    response
}

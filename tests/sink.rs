//! An in-process webhook that speaks the `http` destination's protocol
//! (docs/delivery.md §3) and keeps the destination's state, with faults on demand, for the
//! destination and engine tests.
//!
//! It applies `upsert`, `update`, `insert` and `clear` by replacing the stored record (a
//! `clear` payload holds the key and nulls) and `delete` by removing it, keyed by the
//! record's `key_field` value as text (a string as is, a number as its JSON text). It is
//! strict: a body that is not the protocol's is answered 400, so client bugs surface.
//!
//! Besides the protocol's answers it can give answers that break it ([`Raw`]): an endless
//! body, a gzip bomb, a body cut off by a reset, a redirect. The Salesforce and Snowflake
//! test servers use the same [`Raw::response`]. Requests to any other path or method are
//! logged as strays ([`Sink::strays`]), so a client that follows a redirect here is seen.
//!
//! [`Sink::start`] serves on the calling test's runtime; a test that blocks its thread (for
//! example waiting for a child `ebb` process) uses [`Sink::start_in_thread`] instead.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An answer that breaks the protocol, given by [`Sink::answer_raw_next`] (applying nothing)
/// or by another test server through [`Raw::response`].
#[derive(Debug, Clone)]
pub enum Raw {
    /// 200 with a JSON-looking body that never ends (`{"results":[` then spaces forever).
    Endless,
    /// 200 with `Content-Encoding: gzip`: a valid gzip stream of about `decoded` bytes of
    /// spaces inside `{"results":[` … `]}`, some 160 times smaller on the wire.
    GzipBomb { decoded: u64 },
    /// 200 with the start of a body, then the connection is cut.
    ResetMidBody,
    /// `status` (301, 302, 307, 308) to `location`.
    Redirect { status: u16, location: String },
}

impl Raw {
    /// The answer; `sent` counts the body bytes handed to the connection.
    pub fn response(&self, sent: Arc<AtomicU64>) -> Response {
        match self {
            Raw::Endless => {
                let head = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"{\"results\":["))
                });
                let chunk = Bytes::from(vec![b' '; 64 * 1024]);
                let tail = futures_util::stream::repeat(chunk).map(move |c| {
                    sent.fetch_add(c.len() as u64, Ordering::Relaxed);
                    Ok(c)
                });
                let body = axum::body::Body::from_stream(head.chain(tail));
                (StatusCode::OK, [("content-type", "application/json")], body).into_response()
            }
            Raw::GzipBomb { decoded } => {
                let bomb = gzip_bomb(*decoded);
                sent.fetch_add(bomb.len() as u64, Ordering::Relaxed);
                (
                    StatusCode::OK,
                    [("content-type", "application/json"), ("content-encoding", "gzip")],
                    bomb,
                )
                    .into_response()
            }
            Raw::ResetMidBody => {
                // The head and the start go out; a moment later the connection is cut.
                let parts = futures_util::stream::iter([false, true]).then(|cut| async move {
                    if cut {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by test"))
                    } else {
                        Ok(Bytes::from_static(b"[{\"success\":true,\"id\":\"003"))
                    }
                });
                let body = axum::body::Body::from_stream(parts);
                (StatusCode::OK, [("content-type", "application/json")], body).into_response()
            }
            Raw::Redirect { status, location } => {
                let status = StatusCode::from_u16(*status).expect("a redirect status");
                (status, [("location", location.as_str())], "moved").into_response()
            }
        }
    }
}

/// A gzip member whose deflate stream is one fixed-Huffman block: a literal, then matches
/// of 258 bytes at distance 1 (13 bits each), so about `decoded` bytes (the body
/// `{"results":[` + spaces + `]}`) come from `decoded / 159` bytes. CRC and length are
/// right: a client without a cap decodes all of it and succeeds.
pub fn gzip_bomb(decoded: u64) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// `count` bits of `value`, least significant first (deflate's order for headers).
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code, most significant bit first.
        fn code(&mut self, code: u64, len: u32) {
            let mut rev = 0;
            for i in 0..len {
                rev |= ((code >> i) & 1) << (len - 1 - i);
            }
            self.put(rev, len);
        }
        fn literal(&mut self, b: u8) {
            if b < 144 {
                self.code(0x30 + u64::from(b), 8);
            } else {
                self.code(0x190 + u64::from(b - 144), 9);
            }
        }
    }
    let head = b"{\"results\":[";
    let tail = b"]}";
    let spaces = 1 + (decoded.saturating_sub(16) / 258) * 258;
    let mut crc = Crc::default();
    crc.update(head);
    crc.update_repeat(b' ', spaces);
    crc.update(tail);
    let total = head.len() as u64 + spaces + tail.len() as u64;

    let mut bits = Bits {
        out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff],
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // fixed Huffman
    for &b in head {
        bits.literal(b);
    }
    bits.literal(b' ');
    for _ in 0..(spaces - 1) / 258 {
        bits.code(0b1100_0101, 8); // length 258 (code 285)
        bits.code(0, 5); // distance 1
    }
    for &b in tail {
        bits.literal(b);
    }
    bits.code(0, 7); // end of block
    if bits.n > 0 {
        bits.put(0, 8 - bits.n);
    }
    let mut out = bits.out;
    out.extend_from_slice(&crc.finish().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE), as gzip's trailer has it.
struct Crc {
    table: [u32; 256],
    value: u32,
}

impl Default for Crc {
    fn default() -> Self {
        let mut table = [0u32; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *t = c;
        }
        Crc { table, value: !0 }
    }
}

impl Crc {
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.value = self.table[((self.value ^ u32::from(b)) & 0xff) as usize] ^ (self.value >> 8);
        }
    }

    /// `count` times the byte `b`, a byte at a time (fast enough for the sizes tests use).
    fn update_repeat(&mut self, b: u8, count: u64) {
        for _ in 0..count {
            self.value = self.table[((self.value ^ u32::from(b)) & 0xff) as usize] ^ (self.value >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.value
    }
}

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
    /// Protocol-breaking answers of the next requests, applying nothing.
    raw: VecDeque<Raw>,
    /// Requests to other paths or methods: method, path and headers.
    strays: Vec<(String, String, BTreeMap<String, String>)>,
    /// Body bytes handed to connections by raw answers.
    raw_sent: Arc<AtomicU64>,
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
            .fallback(stray)
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

    /// `http://localhost:PORT/elsewhere`: this sink under another host name, at a path that
    /// is logged as a stray whatever the method.
    pub fn elsewhere(&self) -> String {
        format!("http://localhost:{}/elsewhere", self.addr.port())
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

    /// Answers the next request with `raw`, applying nothing.
    pub fn answer_raw_next(&self, raw: Raw) {
        self.state().raw.push_back(raw);
    }

    /// Body bytes raw answers handed to connections so far.
    pub fn raw_sent(&self) -> u64 {
        self.state().raw_sent.load(Ordering::Relaxed)
    }

    /// Requests to other paths or methods than `POST /hook`: method, path, headers.
    pub fn strays(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        self.state().strays.clone()
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
        } else if let Some(raw) = s.raw.pop_front() {
            let received = log(match &raw {
                Raw::Redirect { status, .. } => *status,
                _ => 200,
            });
            s.log.push(received);
            (raw.response(s.raw_sent.clone()), wait)
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

/// Any request but `POST /hook`: logged, answered 404.
async fn stray(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("<binary>").to_string()))
        .collect();
    let mut s = inner.lock().unwrap_or_else(|e| e.into_inner());
    s.strays.push((method.to_string(), uri.to_string(), headers));
    answer(404, json!({"error": "no such route"}).to_string())
}

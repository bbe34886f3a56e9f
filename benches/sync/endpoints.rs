//! The bench's destinations, in-process and fast, so that what is measured is the tool:
//! - the **sink** (`/hook`): ebb's `http` envelope in, one Salesforce-collections-shaped
//!   result per record out;
//! - the **Salesforce-shaped endpoint** (`/services/…`): a client-credentials token, and
//!   sObject Collections as Salesforce answers them (docs/salesforce-protocol.md §2):
//!   upsert by external ID (`PATCH composite/sobjects/{Object}/{Field}`, one `{"id",
//!   "success", "errors", "created"}` per record, the same Id for the same key on every
//!   call), delete (`DELETE composite/sobjects?ids=…`) and an empty SOQL answer for Id
//!   lookups. It keeps only the external ids it has seen (for `created`); it does not
//!   validate fields, so its own CPU per call is a few microseconds, unlike the sandbox's.
//!
//! Both count what they receive in one [`SinkStats`].

use axum::extract::Query;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a destination saw of one run.
#[derive(Default)]
pub struct SinkStats {
    /// Data calls (the token request is not one).
    pub calls: AtomicU64,
    pub upserts: AtomicU64,
    pub deletes: AtomicU64,
    pub first: Mutex<Option<Instant>>,
}

impl SinkStats {
    pub fn reset(&self) {
        self.calls.store(0, Ordering::SeqCst);
        self.upserts.store(0, Ordering::SeqCst);
        self.deletes.store(0, Ordering::SeqCst);
        *self.first.lock().unwrap() = None;
    }

    fn call(&self) {
        self.first.lock().unwrap().get_or_insert_with(Instant::now);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
struct Envelope {
    operation: String,
    records: Vec<serde::de::IgnoredAny>,
}

/// A Collections upsert body: only the external id of each record is read.
#[derive(Deserialize)]
struct Upsert {
    records: Vec<HashMap<String, serde_json::Value>>,
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "application/json;charset=UTF-8"),
            (
                axum::http::HeaderName::from_static("sforce-limit-info"),
                "api-usage=1/5000000",
            ),
        ],
        body,
    )
        .into_response()
}

fn bad(why: String) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!([{"message": why, "errorCode": "JSON_PARSER_ERROR"}]).to_string(),
    )
}

/// The record Id the endpoint gives an external id: stable, 18 characters.
fn record_id(key: &str, out: &mut String) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    out.push_str(&format!("003{:012X}AAA", h.finish() & 0xFFFF_FFFF_FFFF));
}

/// Starts both endpoints on a runtime of their own; returns the base URL
/// (`http://127.0.0.1:PORT`): the sink is `{base}/hook`, the Salesforce instance `{base}`.
pub fn start(stats: Arc<SinkStats>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let ids = Arc::new(AtomicU64::new(1));
            let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
            let hook = {
                let stats = stats.clone();
                move |body: axum::body::Bytes| async move {
                    stats.call();
                    let env: Envelope = match serde_json::from_slice(&body) {
                        Ok(e) => e,
                        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad body: {e}")).into_response(),
                    };
                    let n = env.records.len() as u64;
                    match env.operation.as_str() {
                        "delete" => stats.deletes.fetch_add(n, Ordering::Relaxed),
                        _ => stats.upserts.fetch_add(n, Ordering::Relaxed),
                    };
                    let first_id = ids.fetch_add(n, Ordering::Relaxed);
                    let mut out = String::with_capacity(16 + 60 * n as usize);
                    out.push_str("{\"results\":[");
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&format!(
                            "{{\"id\":\"003{:012}AAA\",\"success\":true,\"errors\":[]}}",
                            first_id + i
                        ));
                    }
                    out.push_str("]}");
                    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], out).into_response()
                }
            };
            let token = {
                let base = base.clone();
                move || async move {
                    json(
                        StatusCode::OK,
                        serde_json::json!({
                            "access_token": "00Dbench!fast-endpoint-token",
                            "instance_url": base,
                            "id": format!("{base}/id/00D000000000001/005000000000001"),
                            "token_type": "Bearer",
                            "issued_at": "1700000000000",
                            "signature": "bench",
                        })
                        .to_string(),
                    )
                }
            };
            let upsert = {
                let stats = stats.clone();
                move |axum::extract::Path((_v, _object, field)): axum::extract::Path<(String, String, String)>,
                      body: axum::body::Bytes| async move {
                    stats.call();
                    let body: Upsert = match serde_json::from_slice(&body) {
                        Ok(b) => b,
                        Err(e) => return bad(e.to_string()),
                    };
                    stats.upserts.fetch_add(body.records.len() as u64, Ordering::Relaxed);
                    let mut out = String::with_capacity(2 + 80 * body.records.len());
                    out.push('[');
                    let mut seen = seen.lock().unwrap();
                    for (i, r) in body.records.iter().enumerate() {
                        let key = match r.get(&field) {
                            Some(serde_json::Value::String(s)) => s.clone(),
                            Some(v) if !v.is_null() => v.to_string(),
                            _ => return bad(format!("record {i} has no {field}")),
                        };
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str("{\"id\":\"");
                        record_id(&key, &mut out);
                        let created = seen.insert(key);
                        out.push_str(if created {
                            "\",\"success\":true,\"errors\":[],\"created\":true}"
                        } else {
                            "\",\"success\":true,\"errors\":[],\"created\":false}"
                        });
                    }
                    out.push(']');
                    json(StatusCode::OK, out)
                }
            };
            let remove = {
                let stats = stats.clone();
                move |Query(q): Query<HashMap<String, String>>| async move {
                    stats.call();
                    let ids: Vec<&str> = q.get("ids").map(|s| s.split(',').collect()).unwrap_or_default();
                    stats.deletes.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    let results: Vec<serde_json::Value> = ids
                        .iter()
                        .map(|id| serde_json::json!({"id": id, "success": true, "errors": []}))
                        .collect();
                    json(StatusCode::OK, serde_json::Value::from(results).to_string())
                }
            };
            let query = {
                let stats = stats.clone();
                move || async move {
                    stats.call();
                    json(StatusCode::OK, r#"{"totalSize":0,"done":true,"records":[]}"#.into())
                }
            };
            let app = axum::Router::new()
                .route("/hook", post(hook))
                .route("/services/oauth2/token", post(token))
                .route("/services/data/{v}/composite/sobjects/{object}/{field}", patch(upsert))
                .route("/services/data/{v}/composite/sobjects", delete(remove))
                .route("/services/data/{v}/query", get(query))
                .layer(axum::extract::DefaultBodyLimit::disable());
            tx.send(base).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

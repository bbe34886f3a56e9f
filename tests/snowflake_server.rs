//! An in-process Snowflake SQL API v2 server for tests, following the documented
//! protocol (docs/snowflake-protocol.md): key-pair JWT checked (issuer fingerprint, RS256
//! signature, expiry), required headers, 200 or 202 + polling, partitions, string cells,
//! 422 for SQL errors, 429 on demand, and protocol-breaking answers on demand
//! ([`Server::answer_raw_next`], [`Server::status_url`]).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::Verifier;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A canned result for one statement text.
#[derive(Clone, Default)]
pub struct Canned {
    pub row_type: Vec<Value>,
    pub partitions: Vec<Vec<Vec<Option<String>>>>,
    /// Answer 202 this many times before the result is ready.
    pub async_polls: usize,
    /// DML counts (`numRowsInserted`, …), as Snowflake adds them to a DML result.
    pub stats: Option<Value>,
}

#[derive(Default)]
pub struct Log {
    /// Every request: method and path with query.
    pub requests: Vec<String>,
    /// Every submitted statement text's size in bytes.
    pub sizes: Vec<usize>,
}

struct Inner {
    issuer: String,
    public: rsa::PublicKey,
    results: HashMap<String, Canned>,
    handles: HashMap<String, (Canned, usize)>,
    fail_next_with_429: usize,
    log: Log,
    /// Protocol-breaking answers of the next requests.
    raw: std::collections::VecDeque<crate::sink::Raw>,
    /// The `statementStatusUrl` 202 answers give, instead of the statement's own.
    status_url: Option<String>,
    /// Statements without a canned answer run here (tests/snowflake_pg.rs).
    pg: Option<Arc<crate::snowflake_pg::Backend>>,
    /// Every statement text run on `pg`, in order.
    ran: Vec<String>,
}

#[derive(Clone)]
pub struct Server {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl Server {
    /// Starts a server that accepts JWTs for `ACCOUNT.USER` signed with `key_pem`.
    pub async fn start(account: &str, user: &str, key_pem: &str) -> Server {
        Server::start_with(account, user, key_pem, None).await
    }

    /// A server that runs the statements it has no canned answer for on a PostgreSQL
    /// database of its own (`tag` names it), as Snowflake would (tests/snowflake_pg.rs).
    pub async fn start_postgres(account: &str, user: &str, key_pem: &str, tag: &str) -> Server {
        let backend = crate::snowflake_pg::Backend::create(tag).await;
        Server::start_with(account, user, key_pem, Some(Arc::new(backend))).await
    }

    async fn start_with(
        account: &str,
        user: &str,
        key_pem: &str,
        pg: Option<Arc<crate::snowflake_pg::Backend>>,
    ) -> Server {
        let key = rsa::PrivateKey::from_pkcs8_pem(key_pem).unwrap();
        let fp = ebb::source::snowflake::public_key_fingerprint(&key).unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            issuer: format!("{}.{}.{fp}", account.to_uppercase(), user.to_uppercase()),
            public: rsa::PublicKey::from(&key),
            results: HashMap::new(),
            handles: HashMap::new(),
            fail_next_with_429: 0,
            log: Log::default(),
            raw: Default::default(),
            status_url: None,
            pg,
            ran: Vec::new(),
        }));
        let app = Router::new()
            .route("/api/v2/statements", post(submit))
            .route("/api/v2/statements/{handle}", get(status))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { inner, url }
    }

    pub fn add(&self, statement: &str, canned: Canned) {
        self.inner.lock().unwrap().results.insert(statement.to_string(), canned);
    }

    pub fn fail_next_with_429(&self, n: usize) {
        self.inner.lock().unwrap().fail_next_with_429 = n;
    }

    /// Answers the next request (a submit, a poll or a partition) with `raw`.
    pub fn answer_raw_next(&self, raw: crate::sink::Raw) {
        self.inner.lock().unwrap().raw.push_back(raw);
    }

    /// 202 answers name `url` as the statement's status URL.
    pub fn status_url(&self, url: &str) {
        self.inner.lock().unwrap().status_url = Some(url.to_string());
    }

    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().log.requests.clone()
    }

    /// The size of every submitted statement text, in bytes.
    pub fn statement_sizes(&self) -> Vec<usize> {
        self.inner.lock().unwrap().log.sizes.clone()
    }

    /// The statements run on the PostgreSQL backend, in order.
    pub fn ran(&self) -> Vec<String> {
        self.inner.lock().unwrap().ran.clone()
    }

    /// The backend's database URL (for a test to look at the tables directly).
    pub fn database_url(&self) -> String {
        self.inner
            .lock()
            .unwrap()
            .pg
            .as_ref()
            .map(|b| b.url.clone())
            .unwrap_or_default()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

/// Checks the headers and the JWT like Snowflake does.
#[allow(clippy::result_large_err)] // a test server: the rejection is the response itself
fn authorize(inner: &Inner, headers: &HeaderMap) -> Result<(), Response> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if h("user-agent").is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "390101",
            "User-Agent header is required.",
        ));
    }
    if h("x-snowflake-authorization-token-type") != "KEYPAIR_JWT" {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "390101",
            "Authorization token type is missing or invalid.",
        ));
    }
    let invalid = || error(StatusCode::UNAUTHORIZED, "390144", "JWT token is invalid.");
    let token = h("authorization").strip_prefix("Bearer ").ok_or_else(invalid)?;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(invalid());
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).map_err(|_| invalid())?).map_err(|_| invalid())?;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).map_err(|_| invalid())?).map_err(|_| invalid())?;
    if header["alg"] != "RS256" || claims["iss"] != inner.issuer.as_str() {
        return Err(invalid());
    }
    let sub_ok = inner.issuer.rsplit_once(".SHA256:").map(|(s, _)| s) == claims["sub"].as_str();
    if !sub_ok || claims["exp"].as_i64().unwrap_or(0) <= chrono::Utc::now().timestamp() {
        return Err(invalid());
    }
    let sig = rsa::pkcs1v15::Signature::try_from(b64.decode(parts[2]).map_err(|_| invalid())?.as_slice())
        .map_err(|_| invalid())?;
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(inner.public.clone());
    verifier
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .map_err(|_| invalid())
}

fn result_set(handle: &str, canned: &Canned) -> Value {
    let partition_info: Vec<Value> = canned.partitions.iter().map(|p| json!({"rowCount": p.len()})).collect();
    json!({
        "code": "090001", "sqlState": "00000", "message": "Statement executed successfully.",
        "statementHandle": handle, "createdOn": 1_700_000_000_000u64,
        "statementStatusUrl": format!("/api/v2/statements/{handle}"),
        "resultSetMetaData": {
            "format": "jsonv2",
            "numRows": canned.partitions.iter().map(Vec::len).sum::<usize>(),
            "rowType": canned.row_type,
            "partitionInfo": partition_info,
        },
        "data": canned.partitions.first().cloned().unwrap_or_default(),
        "stats": canned.stats,
    })
}

async fn submit(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    match answer(&inner, &q, &headers, &body) {
        Ok(r) => r,
        Err((pg, handle)) => run_on_postgres(&inner, &pg, &body, handle).await,
    }
}

/// The answer from canned results, or the backend to run the statement on (and its handle).
#[allow(clippy::result_large_err)] // a test server: the answer is the response itself
fn answer(
    inner: &Arc<Mutex<Inner>>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, (Arc<crate::snowflake_pg::Backend>, String)> {
    let mut s = inner.lock().unwrap();
    s.log.requests.push(format!(
        "POST /api/v2/statements?requestId={}",
        q.get("requestId").cloned().unwrap_or_default()
    ));
    if s.fail_next_with_429 > 0 {
        s.fail_next_with_429 -= 1;
        return Ok(error(StatusCode::TOO_MANY_REQUESTS, "000429", "Too many requests."));
    }
    if let Some(raw) = s.raw.pop_front() {
        return Ok(raw.response(Default::default()));
    }
    if let Err(r) = authorize(&s, headers) {
        return Ok(r);
    }
    let statement = body["statement"].as_str().unwrap_or("").to_string();
    s.log.sizes.push(statement.len());
    let handle = format!(
        "01b{:013x}-0000-0000-0000-{:012x}",
        s.handles.len(),
        s.log.requests.len()
    );
    // `SELECT * FROM (<q>) LIMIT 0` describes a known statement.
    let described = statement
        .strip_prefix("SELECT * FROM (")
        .and_then(|r| r.strip_suffix(") LIMIT 0"))
        .and_then(|inner_q| s.results.get(inner_q))
        .map(|c| Canned {
            row_type: c.row_type.clone(),
            partitions: vec![vec![]],
            async_polls: 0,
            stats: None,
        });
    let found = described.or_else(|| s.results.get(&statement).cloned());
    let canned = match found {
        Some(c) => c,
        None => {
            let Some(pg) = s.pg.clone() else {
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"code": "002003", "sqlState": "42S02",
                        "message": "SQL compilation error:\nObject 'MISSING' does not exist or not authorized.",
                        "statementHandle": handle, "createdOn": 1_700_000_000_000u64})),
                )
                    .into_response());
            };
            return Err((pg, handle));
        }
    };
    if canned.async_polls > 0 {
        // This answer is the first 202.
        let polls = canned.async_polls - 1;
        s.handles.insert(handle.clone(), (canned, polls));
        let status_url = s
            .status_url
            .clone()
            .unwrap_or_else(|| format!("/api/v2/statements/{handle}"));
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"code": "333334", "message": "Asynchronous execution in progress. Use provided query id to perform query monitoring and management.",
                "statementHandle": handle, "statementStatusUrl": status_url})),
        )
            .into_response());
    }
    let body = result_set(&handle, &canned);
    s.handles.insert(handle, (canned, 0));
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Runs the request on the PostgreSQL backend: one answer, or for a multi-statement
/// request the handles of its statements, each answered by its own result.
async fn run_on_postgres(
    inner: &Arc<Mutex<Inner>>,
    pg: &crate::snowflake_pg::Backend,
    body: &Value,
    handle: String,
) -> Response {
    let statement = body["statement"].as_str().unwrap_or("");
    let params = &body["parameters"];
    let count = ["multi_statement_count", "MULTI_STATEMENT_COUNT"]
        .iter()
        .find_map(|k| match &params[*k] {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().map(|n| n as usize),
            _ => None,
        })
        .unwrap_or(1);
    let mut binds: Vec<(usize, Option<String>)> = body["bindings"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v["value"].as_str().map(str::to_string))))
                .collect()
        })
        .unwrap_or_default();
    binds.sort_by_key(|(k, _)| *k);
    let binds: Vec<Option<String>> = binds.into_iter().map(|(_, v)| v).collect();
    let answers = pg.run(statement, count, &binds, body["schema"].as_str()).await;
    let mut s = inner.lock().unwrap();
    s.ran.extend(crate::snowflake_pg::split(statement));
    let answers = match answers {
        Ok(a) => a,
        Err(r) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"code": r.code, "sqlState": r.sql_state, "message": r.message,
                    "statementHandle": handle, "createdOn": 1_700_000_000_000u64})),
            )
                .into_response()
        }
    };
    let canned = |a: crate::snowflake_pg::Answer| Canned {
        row_type: a.row_type,
        partitions: vec![a.rows],
        async_polls: 0,
        stats: a.stats,
    };
    if count == 1 {
        let c = canned(answers.into_iter().next().expect("one statement, one answer"));
        let body = result_set(&handle, &c);
        s.handles.insert(handle, (c, 0));
        return (StatusCode::OK, Json(body)).into_response();
    }
    let mut handles = Vec::new();
    for (i, a) in answers.into_iter().enumerate() {
        let h = format!("01c{}{i:04x}", &handle[3..handle.len() - 4]);
        s.handles.insert(h.clone(), (canned(a), 0));
        handles.push(h);
    }
    let parent = Canned {
        row_type: vec![json!({"name": "multiple statement execution", "type": "text", "nullable": false})],
        partitions: vec![vec![vec![Some("Multiple statements executed successfully.".into())]]],
        async_polls: 0,
        stats: None,
    };
    let mut body = result_set(&handle, &parent);
    body["statementHandles"] = json!(handles);
    s.handles.insert(handle, (parent, 0));
    (StatusCode::OK, Json(body)).into_response()
}

async fn status(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(handle): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = inner.lock().unwrap();
    let shown = match q.get("partition") {
        Some(p) => format!("GET /api/v2/statements/{{h}}?partition={p}"),
        None => "GET /api/v2/statements/{h}".to_string(),
    };
    s.log.requests.push(shown);
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    if let Some(raw) = s.raw.pop_front() {
        return raw.response(Default::default());
    }
    let Some((canned, polls)) = s.handles.get_mut(&handle) else {
        return error(StatusCode::NOT_FOUND, "000404", "Statement not found.");
    };
    if *polls > 0 {
        *polls -= 1;
        return (
            StatusCode::ACCEPTED,
            Json(
                json!({"code": "333334", "message": "Asynchronous execution in progress.",
                "statementHandle": handle, "statementStatusUrl": format!("/api/v2/statements/{handle}")}),
            ),
        )
            .into_response();
    }
    match q.get("partition").map(|p| p.parse::<usize>()) {
        Some(Ok(n)) => match canned.partitions.get(n) {
            Some(data) => (StatusCode::OK, Json(json!({"data": data}))).into_response(),
            None => error(StatusCode::BAD_REQUEST, "000400", "Invalid partition."),
        },
        Some(Err(_)) => error(StatusCode::BAD_REQUEST, "000400", "Invalid partition."),
        None => {
            let c = canned.clone();
            (StatusCode::OK, Json(result_set(&handle, &c))).into_response()
        }
    }
}

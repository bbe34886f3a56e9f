//! The routes, the gate every data-API request passes (version, session, allocation,
//! faults, `Sforce-Limit-Info`), and the small REST resources: versions, `limits` and
//! describe (single records are [`super::records`]).
//!
//! The gate's order: an unknown version is 404; then the session (401
//! `INVALID_SESSION_ID`); then the daily allocation (403 `REQUEST_LIMIT_EXCEEDED`,
//! "TotalRequests Limit exceeded.", with `api-usage` at its maximum); then the
//! concurrency limit; then injected 503s. Only a request that passes all of them is counted
//! against the allocation.
//!
//! The concurrency form of `REQUEST_LIMIT_EXCEEDED` is documented by code and status only
//! (docs/salesforce-protocol.md §5 [U] for the text); the sandbox says
//! "ConcurrentPerOrgLongTxn Limit exceeded.", the text orgs send when too many long-running
//! requests are in flight. A client tells the two apart by `Sforce-Limit-Info`: below the
//! maximum it is the concurrency limit (transient), at the maximum the daily allocation
//! (not transient). Salesforce applies its limit to requests running 20 s or more; the
//! sandbox, to keep tests fast, to any request beyond the configured number in flight.

use super::collections;
use super::value::RecordError;
use super::{auth, bulk, bulk_query, records, replication, soql, InFlight, Shared};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

pub(crate) type Shr = State<Arc<Shared>>;

/// A top-level REST error: an array of one `{"message", "errorCode"}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!([{"message": message, "errorCode": code}]))).into_response()
}

pub(crate) fn not_found() -> Response {
    // The errorcodes page shows this body bare, but the REST API sends every error as an
    // array (docs/salesforce-protocol.md §3 [U]); the sandbox sends the array.
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// Record errors as a top-level REST error body.
pub(crate) fn record_errors(status: StatusCode, errors: &[RecordError]) -> Response {
    let body: Vec<Value> = errors.iter().map(RecordError::rest_json).collect();
    (status, Json(Value::Array(body))).into_response()
}

pub(crate) fn json_error(e: &serde_json::Error) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "JSON_PARSER_ERROR",
        &format!("{e} at [line:{}, column:{}]", e.line(), e.column()),
    )
}

/// The routes. Paths are made canonical first ([`canonical_path`]), so that the routes
/// are written once, in Salesforce's spelling.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let v = "/services/data/{v}";
    let data = Router::new()
        .route(&format!("{v}/limits"), get(limits))
        .route(&format!("{v}/sobjects"), get(global_describe))
        .route(
            &format!("{v}/sobjects/{{object}}"),
            get(basic_info).post(records::create_one),
        )
        .route(&format!("{v}/sobjects/{{object}}/describe"), get(describe))
        .route(&format!("{v}/sobjects/{{object}}/updated"), get(replication::updated))
        .route(&format!("{v}/sobjects/{{object}}/deleted"), get(replication::deleted))
        .route(
            &format!("{v}/sobjects/{{object}}/{{id}}"),
            get(records::get_one)
                .patch(records::update_one)
                .delete(records::delete_one)
                .post(records::create_by_id),
        )
        .route(
            &format!("{v}/sobjects/{{object}}/{{field}}/{{value}}"),
            get(records::get_by_external_id).patch(records::upsert_one),
        )
        .route(
            &format!("{v}/composite/sobjects"),
            post(collections::create)
                .patch(collections::update)
                .delete(collections::delete),
        )
        .route(
            &format!("{v}/composite/sobjects/{{object}}/{{field}}"),
            patch(collections::upsert),
        )
        .route(&format!("{v}/query"), get(soql::query))
        .route(&format!("{v}/query/{{locator}}"), get(soql::more))
        .route(&format!("{v}/queryAll"), get(soql::query_all))
        .route(&format!("{v}/queryAll/{{locator}}"), get(soql::more))
        .merge(bulk::routes(v))
        .merge(bulk_query::routes(v))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), gate))
        .layer(axum::extract::DefaultBodyLimit::disable());
    let inner = Router::new()
        .route("/services/oauth2/token", post(auth::token))
        .route("/services/data", get(versions))
        .merge(data)
        .with_state(shared.clone());
    // Routing happens inside `inner`, after the outer router's layers: the path is made
    // canonical before any route is matched.
    let app = Router::new()
        .fallback_service(inner)
        .layer(axum::middleware::map_request(canonical_request));
    if shared.settings.log_requests {
        app.layer(axum::middleware::from_fn(log))
    } else {
        app
    }
}

/// Fixed path segments Salesforce matches whatever their case: the resource names under
/// `/services/data/vXX.X/`. (Object and field names are matched case-insensitively by the
/// handlers, against the org's objects.)
const RESOURCES: [&str; 5] = ["sobjects", "query", "queryAll", "composite", "limits"];
const BULK_RESULTS: [&str; 4] = ["batches", "successfulResults", "failedResults", "unprocessedRecords"];
const SOBJECT_RESOURCES: [&str; 3] = ["describe", "updated", "deleted"];

fn canonical_segment(segment: &mut String, names: &[&str]) {
    if let Some(name) = names.iter().find(|n| n.eq_ignore_ascii_case(segment)) {
        *segment = (*name).to_string();
    }
}

/// The path as the routes spell it: one trailing slash dropped (`sobjects/Contact/`,
/// `query/`, `describe/`, `deleted/?start=…` as simple-salesforce sends them), and the
/// fixed resource names in Salesforce's spelling whatever their case
/// (`SObjects/contact/DESCRIBE`, `jobs/ingest/{id}/unprocessedrecords` and
/// `…/unprocessedRecords`, which the Bulk 2.0 guide and clients both use). `None`: already
/// canonical.
pub(crate) fn canonical_path(path: &str) -> Option<String> {
    let trimmed = if path.len() > 1 && path.ends_with('/') {
        &path[..path.len() - 1]
    } else {
        path
    };
    let mut out = trimmed.to_string();
    if let Some(rest) = trimmed.strip_prefix("/services/data/") {
        let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
        if parts.len() >= 2 {
            let r = &mut parts[1..];
            canonical_segment(&mut r[0], &RESOURCES);
            canonical_segment(&mut r[0], &["jobs"]);
            let head = r[0].clone();
            match (head.as_str(), r.len()) {
                ("composite", n) if n >= 2 => canonical_segment(&mut r[1], &["sobjects"]),
                ("jobs", n) if n >= 2 => {
                    canonical_segment(&mut r[1], &["ingest", "query"]);
                    if n == 4 && r[1] == "ingest" {
                        canonical_segment(&mut r[3], &BULK_RESULTS);
                    }
                    if n == 4 && r[1] == "query" {
                        canonical_segment(&mut r[3], &["results"]);
                    }
                }
                ("sobjects", 3) => canonical_segment(&mut r[2], &SOBJECT_RESOURCES),
                _ => {}
            }
            out = format!("/services/data/{}", parts.join("/"));
        }
    }
    (out != path).then_some(out)
}

async fn canonical_request(mut req: Request) -> Request {
    if let Some(path) = canonical_path(req.uri().path()) {
        let target = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        if let Ok(pq) = target.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

async fn log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let response = next.run(req).await;
    eprintln!(
        "{} {method} {uri} -> {} ({} ms)",
        chrono::Utc::now().format("%H:%M:%S%.3f"),
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

async fn fallback() -> Response {
    not_found()
}

async fn method_not_allowed(method: Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("HTTP Method '{method}' not allowed"),
    )
}

/// `vNN.N` → `"NN.N"` when the sandbox serves it: v46.0 (sObject Collections upsert, 200 on
/// a single-record upsert update) up to the configured version. Older and newer versions
/// are answered 404 `NOT_FOUND`, as an org answers a version it does not have.
fn served_version(shared: &Shared, segment: &str) -> Option<String> {
    let v = segment.strip_prefix('v')?;
    let (major, minor) = v.split_once('.')?;
    let parsed = (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?);
    (parsed >= (46, 0) && parsed <= shared.settings.max_version && minor.len() == 1).then(|| v.to_string())
}

/// Which counter a data-API path adds to.
fn kind(resource: &str) -> &'static str {
    if resource.starts_with("composite/sobjects") {
        "collections"
    } else if resource.starts_with("jobs/") {
        "bulk"
    } else if resource == "query" || resource.starts_with("query/") || resource.starts_with("queryAll") {
        "query"
    } else if resource.trim_end_matches('/') == "sobjects" || resource.trim_end_matches('/').ends_with("/describe") {
        "describe"
    } else if resource.starts_with("sobjects/") {
        "sobject"
    } else if resource == "limits" {
        "limits"
    } else {
        "other"
    }
}

async fn gate(State(shared): Shr, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/services/data/") else {
        return not_found();
    };
    let (segment, resource) = rest.split_once('/').unwrap_or((rest, ""));
    let (_guard, in_flight) = InFlight::enter(&shared);
    // Latency is a round trip: half on the way in, half on the way out, so the time the
    // org spends on a request adds to it rather than hiding behind it.
    let arrived = tokio::time::Instant::now();
    let (latency, call_time) = {
        let state = shared.lock();
        (state.faults.latency, state.faults.call_time)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency / 2).await;
    }
    if served_version(&shared, segment).is_none() {
        return not_found();
    }
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let refused = {
        let mut state = shared.lock();
        if matches!(
            auth::check(&mut state, authorization.as_deref()),
            auth::Session::Invalid
        ) {
            Some(error(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            ))
        } else if state.used >= state.max {
            Some(error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            ))
        } else if state.faults.max_concurrent.is_some_and(|m| in_flight > m) {
            Some(error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.",
            ))
        } else if state.faults.unavailable_next > 0
            || (state.faults.unavailable_rate > 0.0 && {
                let p = state.faults.unavailable_rate.min(1.0);
                state.rng.random_bool(p)
            })
        {
            state.faults.unavailable_next = state.faults.unavailable_next.saturating_sub(1);
            *state.counts.entry("unavailable".into()).or_default() += 1;
            Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_UNAVAILABLE",
                "The server is unavailable to handle the request due to a temporary overloading or maintenance \
                 of the server.",
            ))
        } else {
            state.used += 1;
            *state.counts.entry(kind(resource).into()).or_default() += 1;
            None
        }
    };
    let mut response = match refused {
        Some(r) => r,
        None => next.run(req).await,
    };
    // The usage as the org answered, read before the answer's way back: a request leaving
    // does not wait for the lock while other requests are handled.
    let usage = {
        let state = shared.lock();
        format!("api-usage={}/{}", state.used, state.max)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency - latency / 2).await;
    }
    if !call_time.is_zero() {
        tokio::time::sleep_until(arrived + call_time).await;
    }
    if let Ok(v) = HeaderValue::from_str(&usage) {
        response.headers_mut().insert("sforce-limit-info", v);
    }
    response
}

/// `GET /services/data/`: the versions served (no session needed, no limit header).
async fn versions(State(shared): Shr) -> Response {
    let (max_major, _) = shared.settings.max_version;
    let list: Vec<Value> = (46..=max_major)
        .map(|m| json!({"label": format!("v{m}.0"), "url": format!("/services/data/v{m}.0"), "version": format!("{m}.0")}))
        .collect();
    Json(Value::Array(list)).into_response()
}

/// `GET limits`. Only `DailyApiRequests` is tracked; the Bulk counters are reported at
/// their documented maximums. The `{"Max", "Remaining"}` shape of `DailyApiRequests` is
/// [U] in docs/salesforce-protocol.md §5; it is the shape the documented counters
/// (`DailyBulkV2QueryJobs`) have.
async fn limits(State(shared): Shr) -> Response {
    let state = shared.lock();
    let jobs = state.jobs.len() as u64;
    Json(json!({
        "DailyApiRequests": {"Max": state.max, "Remaining": state.max.saturating_sub(state.used)},
        "DailyBulkApiBatches": {"Max": 15_000, "Remaining": 15_000u64.saturating_sub(jobs)},
        "DailyBulkV2QueryJobs": {"Max": 10_000, "Remaining": 10_000},
        "DailyBulkV2QueryFileStorageMB": {"Max": 976_562, "Remaining": 976_562},
    }))
    .into_response()
}

async fn global_describe(State(shared): Shr, Path(v): Path<String>) -> Response {
    let state = shared.lock();
    let version = v.trim_start_matches('v');
    let list: Vec<Value> = state.store.tables.iter().map(|t| t.object.summary(version)).collect();
    Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list})).into_response()
}

/// `GET sobjects/{Object}/` (sObject Basic Information): the object's summary and its
/// recently viewed records (none: nobody views records in the sandbox).
async fn basic_info(State(shared): Shr, Path((v, object)): Path<(String, String)>) -> Response {
    let state = shared.lock();
    match state.store.table(&object) {
        Some(t) => Json(json!({
            "objectDescribe": state.store.tables[t].object.summary(v.trim_start_matches('v')),
            "recentItems": [],
        }))
        .into_response(),
        None => not_found(),
    }
}

async fn describe(State(shared): Shr, Path((v, object)): Path<(String, String)>) -> Response {
    let state = shared.lock();
    match state.store.table(&object) {
        Some(t) => Json(state.store.tables[t].object.describe(v.trim_start_matches('v'))).into_response(),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::{canonical_path, kind};

    #[test]
    fn canonical_paths() {
        let d = "/services/data/v62.0";
        for (given, canonical) in [
            ("/services/data/", "/services/data"),
            ("/services/data/v62.0/sobjects/", "/services/data/v62.0/sobjects"),
            (
                "/services/data/v62.0/SObjects/contact/",
                "/services/data/v62.0/sobjects/contact",
            ),
            (
                "/services/data/v62.0/sobjects/Contact/DESCRIBE/",
                "/services/data/v62.0/sobjects/Contact/describe",
            ),
            (
                "/services/data/v62.0/sobjects/Contact/Updated/",
                "/services/data/v62.0/sobjects/Contact/updated",
            ),
            ("/services/data/v62.0/QUERYALL/", "/services/data/v62.0/queryAll"),
            (
                "/services/data/v62.0/Composite/SObjects/Contact/Ext__c",
                "/services/data/v62.0/composite/sobjects/Contact/Ext__c",
            ),
            (
                "/services/data/v62.0/jobs/ingest/750x/unprocessedrecords/",
                "/services/data/v62.0/jobs/ingest/750x/unprocessedRecords",
            ),
        ] {
            assert_eq!(canonical_path(given).as_deref(), Some(canonical), "{given}");
        }
        // Already canonical, or not a resource name (ids, field names, values stay as sent).
        for same in [
            format!("{d}/sobjects/Contact/describe"),
            format!("{d}/sobjects/Contact/Describe__c/x"),
            format!("{d}/jobs/ingest/750x"),
            "/services/oauth2/token".to_string(),
        ] {
            assert_eq!(canonical_path(&same), None, "{same}");
        }
        assert_eq!(
            canonical_path(&format!("{d}/sobjects/contact/Crm_Id__c/AbC/")).as_deref(),
            Some(format!("{d}/sobjects/contact/Crm_Id__c/AbC").as_str())
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("composite/sobjects/Contact/Crm_Id__c"), "collections");
        assert_eq!(kind("jobs/ingest/750x/batches"), "bulk");
        assert_eq!(kind("query/01g-2000"), "query");
        assert_eq!(kind("sobjects/Contact/describe/"), "describe");
        assert_eq!(kind("sobjects"), "describe");
        assert_eq!(kind("sobjects/Contact/Crm_Id__c/X"), "sobject");
        assert_eq!(kind("limits"), "limits");
    }
}

//! Bulk API 2.0 query jobs (docs/salesforce-protocol.md §7) under `jobs/query`: create
//! (`operation` `query` or `queryAll`, `query`, `contentType` CSV, `columnDelimiter`,
//! `lineEnding`; the job starts `UploadComplete`), then `InProgress` and `JobComplete` on
//! a timer ([`super::SandboxConfig::bulk_step_delay`] per step; the query runs when the job
//! completes), job info, list, abort (`PATCH` `Aborted`) and delete; and the results
//! (`GET …/results?locator=&maxRecords=`), CSV pages with `Sforce-NumberOfRecords` and an
//! opaque `Sforce-Locator` (`null` on the last page) that stays valid while the job
//! exists. Results must be asked for with the API version that created the job (409
//! otherwise).
//!
//! The CSV is written as Salesforce writes it: a header of the field names in the order the
//! query names them, every value quoted (quotes doubled), empty for null, datetimes
//! `2024-01-31T09:30:00.000Z`, booleans `true`/`false`, lines ended as `lineEnding` says.
//!
//! Queries Bulk 2.0 does not run (aggregates such as `COUNT()`, `GROUP BY`, `OFFSET`,
//! `TYPEOF`, `FIELDS()`, parent-to-child subqueries) are refused at creation, as are
//! queries that REST would refuse (`MALFORMED_QUERY`, `INVALID_FIELD`, `INVALID_TYPE`).
//!
//! Choices where the documentation is silent ([U]): create answers 200; an unsupported
//! query is 400 `API_ERROR`; without `maxRecords` a page holds every remaining row; a
//! locator that is not one this job gave is 400 `INVALID_QUERY_LOCATOR`; results asked for
//! before `JobComplete` are 409 `INVALIDJOBSTATE`; the version conflict is 409
//! `INVALIDJOB`. Faults: [`super::Faults::fail_query_jobs_next`] ends jobs `Failed`,
//! [`super::Faults::corrupt_query_next`] drops a cell from a page's first row.

use super::api::{error, json_error, not_found, Shr};
use super::bulk_job::{delimiter, invalid_job, invalid_state_of, job_time, line_ending, JobState};
use super::soql::{execute, prepare};
use super::soql_parse::{tokenize, Token};
use super::{collections, id, Shared};
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

/// One query job.
pub(crate) struct QueryJob {
    id: String,
    operation: String,
    object: String,
    query: String,
    version: String,
    delimiter_name: String,
    delimiter: char,
    line_ending: String,
    state: JobState,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    /// The header, then one line per record (without its line ending), once complete.
    lines: Vec<String>,
    error_message: Option<String>,
    processing_ms: u64,
}

impl QueryJob {
    fn info(&self, detail: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": id::user_id(),
            "createdDate": job_time(self.created),
            "systemModstamp": job_time(self.modified),
            "state": self.state.name(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.version.parse::<f64>().unwrap_or(0.0),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.delimiter_name,
        });
        if detail {
            v["jobType"] = Value::from("V2Query");
            v["numberRecordsProcessed"] = Value::from(self.lines.len().saturating_sub(1));
            v["retries"] = Value::from(0);
            v["totalProcessingTime"] = Value::from(self.processing_ms);
            v["isPkChunkingSupported"] = Value::from(true);
            if let Some(m) = &self.error_message {
                v["errorMessage"] = Value::from(m.as_str());
            }
        }
        v
    }

    fn newline(&self) -> &'static str {
        if self.line_ending == "CRLF" {
            "\r\n"
        } else {
            "\n"
        }
    }
}

pub(crate) fn routes(v: &str) -> Router<Arc<Shared>> {
    let base = format!("{v}/jobs/query");
    Router::new()
        .route(&base, get(list).post(create))
        .route(&format!("{base}/{{id}}"), get(info).patch(abort).delete(delete))
        .route(&format!("{base}/{{id}}/results"), get(results))
}

/// What Bulk API 2.0 does not run, if `q` has it.
fn unsupported(q: &str) -> Option<&'static str> {
    let tokens = tokenize(q).ok()?;
    let word = |i: usize, w: &str| matches!(tokens.get(i), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    let open = |i: usize| tokens.get(i) == Some(&Token::Sym("("));
    (0..tokens.len()).find_map(|i| {
        if ["COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX"]
            .iter()
            .any(|f| word(i, f))
            && open(i + 1)
        {
            Some("aggregate functions such as COUNT()")
        } else if word(i, "GROUP") && word(i + 1, "BY") {
            Some("GROUP BY")
        } else if word(i, "OFFSET") {
            Some("OFFSET")
        } else if word(i, "TYPEOF") {
            Some("TYPEOF")
        } else if word(i, "FIELDS") && open(i + 1) {
            Some("FIELDS()")
        } else if open(i) && word(i + 1, "SELECT") {
            Some("parent-to-child relationship queries")
        } else {
            None
        }
    })
}

/// `POST jobs/query`.
async fn create(axum::extract::State(shared): Shr, Path(v): Path<String>, body: Bytes) -> Response {
    let spec: Value = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return json_error(&e),
    };
    let get = |k: &str| spec.get(k).and_then(Value::as_str);
    let operation = match get("operation") {
        Some(op @ ("query" | "queryAll")) => op.to_string(),
        other => return invalid_job(&format!("Invalid job operation: {}", other.unwrap_or(""))),
    };
    let Some(query) = get("query").filter(|q| !q.trim().is_empty()) else {
        return invalid_job("query is required for a query job");
    };
    if get("contentType").is_some_and(|c| c != "CSV") {
        return invalid_job("contentType must be CSV");
    }
    let (delimiter_name, delimiter) = match delimiter(get("columnDelimiter")) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let line_ending = match line_ending(get("lineEnding")) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if let Some(what) = unsupported(query) {
        return error(
            StatusCode::BAD_REQUEST,
            "API_ERROR",
            &format!("{what} are not supported in Bulk API 2.0 query jobs; use the REST query resource"),
        );
    }
    let mut state = shared.lock();
    let prepared = match prepare(&state, query) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let object = state.store.tables[prepared.t].object.name.clone();
    let n = state.next_seq();
    let now = collections::now();
    let job = QueryJob {
        id: id::make("750", n),
        operation,
        object,
        query: query.to_string(),
        version: v.trim_start_matches('v').to_string(),
        delimiter_name: delimiter_name.into(),
        delimiter,
        line_ending: line_ending.into(),
        state: JobState::UploadComplete,
        created: now,
        modified: now,
        lines: Vec::new(),
        error_message: None,
        processing_ms: 0,
    };
    let body = job.info(false);
    let id = job.id.clone();
    state.query_jobs.insert(id.clone(), job);
    tokio::spawn(advance(shared.clone(), id));
    (StatusCode::OK, Json(body)).into_response()
}

/// `UploadComplete → InProgress → JobComplete` (or `Failed`), one step delay each; the
/// query runs at the end, over the records as they are then.
async fn advance(shared: Arc<Shared>, id: String) {
    let delay = shared.settings.bulk_step_delay;
    tokio::time::sleep(delay).await;
    {
        let mut state = shared.lock();
        match state.query_jobs.get_mut(&id) {
            Some(job) if job.state == JobState::UploadComplete => {
                job.state = JobState::InProgress;
                job.modified = collections::now();
            }
            _ => return,
        }
    }
    tokio::time::sleep(delay).await;
    let mut state = shared.lock();
    let started = std::time::Instant::now();
    let fail = state.faults.fail_query_jobs_next > 0;
    if fail {
        state.faults.fail_query_jobs_next -= 1;
    }
    let Some(job) = state.query_jobs.get(&id) else {
        return;
    };
    if job.state != JobState::InProgress {
        return;
    }
    let outcome = if fail {
        Err("InternalServerError : the query job failed (a fault injected in the sandbox)".to_string())
    } else {
        match prepare(&state, &job.query) {
            Ok(p) => {
                let rows = execute(&state, &p, job.operation == "queryAll");
                let d = job.delimiter;
                let mut lines = Vec::with_capacity(rows.len() + 1);
                lines.push(csv_line(p.fields.iter().map(|(name, _)| name.clone()), d));
                for row in &rows {
                    lines.push(csv_line(p.fields.iter().map(|(n, k)| row.csv_cell(n, *k)), d));
                }
                Ok(lines)
            }
            Err(_) => Err("InvalidBatch : the query is no longer valid".to_string()),
        }
    };
    let ms = started.elapsed().as_millis() as u64;
    if let Some(job) = state.query_jobs.get_mut(&id) {
        match outcome {
            Ok(lines) => {
                job.lines = lines;
                job.state = JobState::JobComplete;
            }
            Err(m) => {
                job.error_message = Some(m);
                job.state = JobState::Failed;
            }
        }
        job.processing_ms = ms;
        job.modified = collections::now();
    }
}

/// One CSV line, every cell quoted.
fn csv_line(cells: impl Iterator<Item = String>, delimiter: char) -> String {
    let mut out = String::new();
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(delimiter);
        }
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    }
    out
}

/// `GET jobs/query`.
async fn list(axum::extract::State(shared): Shr) -> Response {
    let state = shared.lock();
    let records: Vec<Value> = state.query_jobs.values().map(|j| j.info(false)).collect();
    Json(json!({"done": true, "records": records, "nextRecordsUrl": null})).into_response()
}

/// `GET jobs/query/{id}`.
async fn info(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>) -> Response {
    let state = shared.lock();
    match state.query_jobs.get(&id) {
        Some(job) => Json(job.info(true)).into_response(),
        None => not_found(),
    }
}

/// `PATCH jobs/query/{id}` with `{"state": "Aborted"}`.
async fn abort(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>, body: Bytes) -> Response {
    let wanted: Value = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return json_error(&e),
    };
    let mut state = shared.lock();
    let Some(job) = state.query_jobs.get_mut(&id) else {
        return not_found();
    };
    match wanted.get("state").and_then(Value::as_str) {
        Some("Aborted") if !job.state.ended() => {
            job.state = JobState::Aborted;
            job.modified = collections::now();
            Json(job.info(false)).into_response()
        }
        Some("Aborted") => invalid_state_of(job.state, "UploadComplete or InProgress"),
        other => invalid_job(&format!("Invalid state: {}", other.unwrap_or(""))),
    }
}

/// `DELETE jobs/query/{id}`: 204; a job still in progress cannot be deleted.
async fn delete(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>) -> Response {
    let mut state = shared.lock();
    let Some(job) = state.query_jobs.get(&id) else {
        return not_found();
    };
    if job.state == JobState::InProgress {
        return invalid_state_of(job.state, "UploadComplete, JobComplete, Aborted or Failed");
    }
    state.query_jobs.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct ResultParams {
    locator: Option<String>,
    #[serde(rename = "maxRecords")]
    max_records: Option<String>,
}

/// The opaque locator of the page starting at record `offset` of job `id`.
fn locator(id: &str, offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id}:{offset}"))
}

/// The record offset a locator of job `id` stands for.
fn offset_of(id: &str, locator: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(locator).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (job, offset) = text.split_once(':')?;
    (job == id).then(|| offset.parse().ok()).flatten()
}

/// `GET jobs/query/{id}/results?locator=&maxRecords=`.
async fn results(
    axum::extract::State(shared): Shr,
    Path((v, id)): Path<(String, String)>,
    Query(params): Query<ResultParams>,
) -> Response {
    let mut state = shared.lock();
    let corrupt = state.corrupt_query();
    let Some(job) = state.query_jobs.get(&id) else {
        return not_found();
    };
    let version = v.trim_start_matches('v');
    if version != job.version {
        return error(
            StatusCode::CONFLICT,
            "INVALIDJOB",
            &format!(
                "InvalidJob : the job was created with API version {}; get its results with that version, not {version}",
                job.version
            ),
        );
    }
    if job.state != JobState::JobComplete {
        return invalid_state_of(job.state, "JobComplete");
    }
    let records = job.lines.len() - 1;
    let offset = match params.locator.as_deref().filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => match offset_of(&job.id, l).filter(|o| *o <= records) {
            Some(o) => o,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_QUERY_LOCATOR",
                    &format!("invalid query locator: {l}"),
                )
            }
        },
    };
    let max = match params.max_records.as_deref() {
        None => records.max(1),
        Some(m) => match m.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "API_ERROR",
                    &format!("maxRecords must be a positive whole number, not `{m}`"),
                )
            }
        },
    };
    let end = (offset + max).min(records);
    let newline = job.newline();
    let mut body = String::new();
    for (i, line) in std::iter::once(&job.lines[0])
        .chain(&job.lines[1 + offset..1 + end])
        .enumerate()
    {
        if corrupt && i == 1 {
            // The fault: the first record loses its last cell.
            let cut = line.rfind(job.delimiter).unwrap_or(0);
            body.push_str(&line[..cut]);
        } else {
            body.push_str(line);
        }
        body.push_str(newline);
    }
    let next = if end < records {
        locator(&job.id, end)
    } else {
        "null".to_string()
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv".to_string()),
            (
                header::HeaderName::from_static("sforce-numberofrecords"),
                (end - offset).to_string(),
            ),
            (header::HeaderName::from_static("sforce-locator"), next),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_queries() {
        assert_eq!(
            unsupported("SELECT COUNT() FROM Contact"),
            Some("aggregate functions such as COUNT()")
        );
        assert_eq!(unsupported("SELECT Id FROM Contact OFFSET 5"), Some("OFFSET"));
        assert_eq!(
            unsupported("SELECT Id, (SELECT Id FROM Contacts) FROM Account"),
            Some("parent-to-child relationship queries")
        );
        assert_eq!(unsupported("SELECT FIELDS(ALL) FROM Contact"), Some("FIELDS()"));
        assert_eq!(unsupported("SELECT Id FROM Contact GROUP BY Id"), Some("GROUP BY"));
        assert_eq!(
            unsupported("SELECT Id, Count__c FROM Contact WHERE Max__c > 1 ORDER BY Id"),
            None
        );
    }

    #[test]
    fn locators_are_opaque_and_bound_to_their_job() {
        let l = locator("750000000000001AAA", 2000);
        assert!(!l.contains("2000"));
        assert_eq!(offset_of("750000000000001AAA", &l), Some(2000));
        assert_eq!(offset_of("750000000000002AAA", &l), None);
        assert_eq!(offset_of("750000000000001AAA", "nonsense!"), None);
    }

    #[test]
    fn csv_lines_quote_every_cell() {
        assert_eq!(
            csv_line(["a".into(), "".into(), "say \"hi\", x".into()].into_iter(), ','),
            "\"a\",\"\",\"say \"\"hi\"\", x\""
        );
    }
}

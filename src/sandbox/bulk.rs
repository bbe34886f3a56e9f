//! Bulk API 2.0 ingest jobs (docs/salesforce-protocol.md §4) under `jobs/ingest` (query
//! jobs are [`super::bulk_query`]): create
//! (JobInfo, state `Open`, `contentUrl` without a leading slash), one CSV upload
//! (`PUT …/batches`, 201), close (`PATCH` `UploadComplete`) or abort, then
//! `UploadComplete → InProgress → JobComplete` on a timer
//! ([`super::SandboxConfig::bulk_step_delay`] per step), and the result CSVs with quoted
//! `"sf__Id","sf__Created"` / `"sf__Id","sf__Error"` headers, rows shuffled. Cells: empty
//! leaves a field unchanged, `#N/A` sets it to null. Rows are written in chunks of 200
//! like the platform does; an external ID twice in one chunk fails both rows (as in
//! Collections).
//!
//! Choices where the documentation is silent ([U]): create answers 200; job-definition
//! errors are 400 `INVALIDJOB` with the platform's `InvalidJob : …` texts; a second upload
//! is 400 `BULK_API_ERROR`; uploads that are not `text/csv` are 415; an upload over 150 MB
//! once base64-encoded (about 112 MB raw) is 413; a state change the job's state does not
//! allow, or results asked for before the job ended, are 409 `INVALIDJOBSTATE`; data whose
//! line endings differ from `lineEnding`, or an unknown column, fail the job.

use super::api::{error, json_error, not_found, Shr};
use super::bulk_job::{delimiter, invalid_job, invalid_state_of, job_time, line_ending, JobState};
use super::collections::{self, Op};
use super::value::{Input, RecordError};
use super::{csv, id, Shared, State};
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use std::sync::Arc;

/// The largest raw upload: 150 MB once base64-encoded.
const MAX_UPLOAD: usize = 150 * 1024 * 1024 / 4 * 3;
/// Rows per internal chunk (one transaction each).
const CHUNK: usize = 200;
static NULL: Value = Value::Null;

/// One ingest job.
pub(crate) struct Job {
    id: String,
    t: usize,
    object: String,
    operation: String,
    external_id: Option<String>,
    line_ending: String,
    delimiter_name: String,
    delimiter: char,
    state: JobState,
    version: String,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    data: Option<String>,
    header: Vec<String>,
    successes: Vec<Vec<String>>,
    failures: Vec<Vec<String>>,
    unprocessed: Vec<Vec<String>>,
    processed: u64,
    failed: u64,
    error_message: Option<String>,
    processing_ms: u64,
}

impl Job {
    fn info(&self, detail: bool) -> Value {
        let stamp = job_time;
        let mut v = json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": id::user_id(),
            "createdDate": stamp(self.created),
            "systemModstamp": stamp(self.modified),
            "state": self.state.name(),
        });
        if let Some(ext) = &self.external_id {
            v["externalIdFieldName"] = Value::from(ext.as_str());
        }
        let version: f64 = self.version.parse().unwrap_or(0.0);
        for (k, val) in [
            ("concurrencyMode", Value::from("Parallel")),
            ("contentType", Value::from("CSV")),
            ("apiVersion", Value::from(version)),
            ("jobType", Value::from("V2Ingest")),
            (
                "contentUrl",
                Value::from(format!(
                    "services/data/v{}/jobs/ingest/{}/batches",
                    self.version, self.id
                )),
            ),
            ("lineEnding", Value::from(self.line_ending.as_str())),
            ("columnDelimiter", Value::from(self.delimiter_name.as_str())),
        ] {
            v[k] = val;
        }
        if detail {
            v["numberRecordsProcessed"] = Value::from(self.processed);
            v["numberRecordsFailed"] = Value::from(self.failed);
            v["retries"] = Value::from(0);
            v["totalProcessingTime"] = Value::from(self.processing_ms);
            v["apiActiveProcessingTime"] = Value::from(self.processing_ms);
            v["apexProcessingTime"] = Value::from(0);
            if let Some(m) = &self.error_message {
                v["errorMessage"] = Value::from(m.as_str());
            }
        }
        v
    }
}

pub(crate) fn routes(v: &str) -> Router<Arc<Shared>> {
    // Trailing slashes and the case of `unprocessedRecords` are made canonical before
    // routing (`api::canonical_path`).
    let base = format!("{v}/jobs/ingest");
    Router::new()
        .route(&base, get(list).post(create))
        .route(&format!("{base}/{{id}}"), get(info).patch(change_state).delete(delete))
        .route(&format!("{base}/{{id}}/batches"), put(upload))
        .route(&format!("{base}/{{id}}/successfulResults"), get(successes))
        .route(&format!("{base}/{{id}}/failedResults"), get(failures))
        .route(&format!("{base}/{{id}}/unprocessedRecords"), get(unprocessed))
}

fn invalid_state(job: &Job, wanted: &str) -> Response {
    invalid_state_of(job.state, wanted)
}

/// `POST jobs/ingest`.
async fn create(axum::extract::State(shared): Shr, Path(v): Path<String>, body: Bytes) -> Response {
    let spec: Value = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return json_error(&e),
    };
    let get = |k: &str| spec.get(k).and_then(Value::as_str);
    let Some(object) = get("object") else {
        return invalid_job("Object is required");
    };
    let mut state = shared.lock();
    let Some(t) = state.store.table(object) else {
        return invalid_job(&format!("Unable to find object: {object}"));
    };
    let object = state.store.tables[t].object.name.clone();
    let operation = match get("operation") {
        Some(op @ ("insert" | "update" | "upsert" | "delete" | "hardDelete")) => op.to_string(),
        other => return invalid_job(&format!("Invalid job operation: {}", other.unwrap_or(""))),
    };
    if get("contentType").is_some_and(|c| c != "CSV") {
        return invalid_job("contentType must be CSV");
    }
    let line_ending = match line_ending(get("lineEnding")) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (delimiter_name, delimiter) = match delimiter(get("columnDelimiter")) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let external_id = match (operation.as_str(), get("externalIdFieldName")) {
        ("upsert", None | Some("")) => {
            return invalid_job(&format!(
                "External ID was blank for {object}. An External ID must be specified for upsert."
            ))
        }
        ("upsert", Some(name)) => match state.store.tables[t].object.field(name) {
            Some(f) if f.external_id || f.name == "Id" => Some(f.name.clone()),
            Some(f) => {
                return invalid_job(&format!(
                    "Field name provided, {} is not an External ID or indexed field for {object}",
                    f.name
                ))
            }
            None => return invalid_job(&format!("Field name not found : {name}")),
        },
        _ => None,
    };
    let n = state.next_seq();
    let now = collections::now();
    let job = Job {
        id: id::make("750", n),
        t,
        object,
        operation,
        external_id,
        line_ending: line_ending.into(),
        delimiter_name: delimiter_name.into(),
        delimiter,
        state: JobState::Open,
        version: v.trim_start_matches('v').to_string(),
        created: now,
        modified: now,
        data: None,
        header: Vec::new(),
        successes: Vec::new(),
        failures: Vec::new(),
        unprocessed: Vec::new(),
        processed: 0,
        failed: 0,
        error_message: None,
        processing_ms: 0,
    };
    let body = job.info(false);
    state.jobs.insert(job.id.clone(), job);
    (StatusCode::OK, Json(body)).into_response()
}

/// `GET jobs/ingest`.
async fn list(axum::extract::State(shared): Shr) -> Response {
    let state = shared.lock();
    let records: Vec<Value> = state.jobs.values().map(|j| j.info(false)).collect();
    Json(json!({"done": true, "records": records, "nextRecordsUrl": null})).into_response()
}

/// `GET jobs/ingest/{id}`.
async fn info(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>) -> Response {
    let state = shared.lock();
    match state.jobs.get(&id) {
        Some(job) => Json(job.info(true)).into_response(),
        None => not_found(),
    }
}

/// `PUT jobs/ingest/{id}/batches`: 201, no body.
async fn upload(
    axum::extract::State(shared): Shr,
    Path((_v, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let csv_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("text/csv"));
    if !csv_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the job data must be sent as Content-Type: text/csv",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_UPLOAD).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "REQUEST_ENTITY_TOO_LARGE",
            "the job data exceeds 150 MB once base64-encoded; split it into several jobs",
        );
    };
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "BULK_API_ERROR", "the job data is not UTF-8");
    };
    let mut state = shared.lock();
    let Some(job) = state.jobs.get_mut(&id) else {
        return not_found();
    };
    if job.state != JobState::Open {
        return invalid_state(job, "Open");
    }
    if job.data.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "BULK_API_ERROR",
            &format!(
                "Found multiple contents for job: <{id}>, please 'Close' / 'Abort' / 'Delete' the current Job then \
                 create a new Job and make sure you only do 'PUT' once on a given job."
            ),
        );
    }
    job.data = Some(text);
    job.modified = collections::now();
    StatusCode::CREATED.into_response()
}

/// `PATCH jobs/ingest/{id}` with `{"state": "UploadComplete"}` or `{"state": "Aborted"}`.
async fn change_state(
    axum::extract::State(shared): Shr,
    Path((_v, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let wanted: Value = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return json_error(&e),
    };
    let mut state = shared.lock();
    let Some(job) = state.jobs.get_mut(&id) else {
        return not_found();
    };
    match wanted.get("state").and_then(Value::as_str) {
        Some("UploadComplete") => {
            if job.state != JobState::Open {
                return invalid_state(job, "Open");
            }
            job.state = JobState::UploadComplete;
            job.modified = collections::now();
            tokio::spawn(advance(shared.clone(), id.clone()));
        }
        Some("Aborted") => {
            if job.state.ended() {
                return invalid_state(job, "Open, UploadComplete or InProgress");
            }
            job.state = JobState::Aborted;
            job.modified = collections::now();
            if let Some(Ok(parsed)) = job.data.as_deref().map(|d| csv::parse(d, job.delimiter)) {
                let mut rows = parsed.rows.into_iter();
                job.header = rows.next().unwrap_or_default();
                job.unprocessed = rows.collect();
            }
        }
        other => return invalid_job(&format!("Invalid state: {}", other.unwrap_or(""))),
    }
    Json(job.info(false)).into_response()
}

/// `DELETE jobs/ingest/{id}`: 204; jobs still open or being processed cannot be deleted.
async fn delete(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>) -> Response {
    let mut state = shared.lock();
    let Some(job) = state.jobs.get(&id) else {
        return not_found();
    };
    if matches!(job.state, JobState::Open | JobState::InProgress) {
        return invalid_state(job, "UploadComplete, JobComplete, Aborted or Failed");
    }
    state.jobs.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

/// Moves a closed job to `InProgress`, then processes it, one step delay each.
async fn advance(shared: Arc<Shared>, id: String) {
    let delay = shared.settings.bulk_step_delay;
    tokio::time::sleep(delay).await;
    {
        let mut state = shared.lock();
        match state.jobs.get_mut(&id) {
            Some(job) if job.state == JobState::UploadComplete => {
                job.state = JobState::InProgress;
                job.modified = collections::now();
            }
            _ => return,
        }
    }
    tokio::time::sleep(delay).await;
    let mut state = shared.lock();
    let Some(mut job) = state.jobs.remove(&id) else {
        return;
    };
    if job.state == JobState::InProgress {
        let started = std::time::Instant::now();
        process(&mut state, &mut job);
        job.processing_ms = started.elapsed().as_millis() as u64;
        job.modified = collections::now();
    }
    state.jobs.insert(id, job);
}

fn fail(job: &mut Job, message: String, rows: Vec<Vec<String>>) {
    job.state = JobState::Failed;
    job.error_message = Some(message);
    job.unprocessed = rows;
}

fn process(state: &mut State, job: &mut Job) {
    let Some(data) = job.data.take() else {
        return fail(
            job,
            "InvalidBatch : No data was uploaded for this job".into(),
            Vec::new(),
        );
    };
    let parsed = match csv::parse(&data, job.delimiter) {
        Ok(p) => p,
        Err(e) => return fail(job, format!("ClientInputError : {e}"), Vec::new()),
    };
    let mut rows = parsed.rows.into_iter();
    job.header = rows.next().unwrap_or_default();
    let rows: Vec<Vec<String>> = rows.collect();
    let wrong_ending = match job.line_ending.as_str() {
        "LF" => parsed.crlf > 0,
        _ => parsed.lf > 0,
    };
    if wrong_ending {
        let message = format!(
            "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {}",
            job.line_ending
        );
        return fail(job, message, rows);
    }
    if job.header.is_empty() {
        return fail(job, "InvalidBatch : No data was uploaded for this job".into(), rows);
    }
    let object = &state.store.tables[job.t].object;
    let mut columns = Vec::with_capacity(job.header.len());
    for name in &job.header {
        match object.field(name.trim()) {
            Some(f) => columns.push(f.name.clone()),
            None => return fail(job, format!("InvalidBatch : Field name not found : {name}"), rows),
        }
    }
    if let Some(n) = rows.iter().position(|r| r.len() != columns.len()) {
        let message = format!(
            "ClientInputError : row {} has {} columns, the header has {}",
            n + 2,
            rows[n].len(),
            columns.len()
        );
        return fail(job, message, rows);
    }
    let now = collections::now();
    for chunk in rows.chunks(CHUNK) {
        let duplicates = duplicate_keys(state, job, &columns, chunk);
        for (row, duplicate) in chunk.iter().zip(duplicates) {
            let outcome = match duplicate {
                Some(value) => Err(super::store::Failure::new(
                    None,
                    RecordError::new(
                        "DUPLICATE_EXTERNAL_ID",
                        format!("Duplicate external id specified: {value}"),
                        &[job.external_id.as_deref().unwrap_or("")],
                    ),
                )),
                None => write_row(state, job, &columns, row, now),
            };
            job.processed += 1;
            match outcome {
                Ok(done) => {
                    let mut out = vec![done.id, done.created.to_string()];
                    out.extend(row.iter().cloned());
                    job.successes.push(out);
                }
                Err(f) => {
                    job.failed += 1;
                    let error = f.errors.first().map(RecordError::bulk_text).unwrap_or_default();
                    let mut out = vec![f.id.unwrap_or_default(), error];
                    out.extend(row.iter().cloned());
                    job.failures.push(out);
                }
            }
        }
    }
    // Salesforce does not keep the input order in results; neither does the sandbox.
    job.successes.shuffle(&mut state.rng);
    job.failures.shuffle(&mut state.rng);
    job.state = JobState::JobComplete;
}

/// For each row of an upsert chunk, the external ID when another row of the chunk has it.
fn duplicate_keys(state: &State, job: &Job, columns: &[String], chunk: &[Vec<String>]) -> Vec<Option<String>> {
    let ext = match &job.external_id {
        Some(e) if job.operation == "upsert" && e != "Id" => e,
        _ => return vec![None; chunk.len()],
    };
    let Some(col) = columns.iter().position(|c| c == ext) else {
        return vec![None; chunk.len()];
    };
    let Some(field) = state.store.tables[job.t].object.field(ext) else {
        return vec![None; chunk.len()];
    };
    let keys: Vec<Option<String>> = chunk
        .iter()
        .map(|r| {
            let cell = r[col].as_str();
            let v = super::value::coerce(field, Input::Text(cell)).ok()?;
            (!cell.is_empty() && cell != "#N/A").then(|| state.store.index_key(job.t, ext, &v))
        })
        .collect();
    keys.iter()
        .zip(chunk)
        .map(|(k, r)| {
            let k = k.as_ref()?;
            (keys.iter().flatten().filter(|o| *o == k).count() > 1).then(|| r[col].clone())
        })
        .collect()
}

fn write_row(
    state: &mut State,
    job: &Job,
    columns: &[String],
    row: &[String],
    now: DateTime<Utc>,
) -> Result<collections::Done, super::store::Failure> {
    let mut fields: Vec<(&str, Input<'_>)> = columns
        .iter()
        .zip(row)
        .filter(|(_, cell)| !cell.is_empty())
        .map(|(name, cell)| {
            let input = if cell == "#N/A" {
                Input::Json(&NULL)
            } else {
                Input::Text(cell.as_str())
            };
            (name.as_str(), input)
        })
        .collect();
    let op = match (job.operation.as_str(), job.external_id.as_deref()) {
        ("insert", _) => Op::Create,
        ("update", _) => Op::Update,
        ("delete" | "hardDelete", _) => {
            fields.retain(|(k, _)| *k == "Id");
            Op::Delete
        }
        // Upsert by record Id: rows with an Id update, rows without one are created.
        (_, Some("Id")) if fields.iter().any(|(k, _)| *k == "Id") => Op::Update,
        (_, Some("Id")) => Op::Create,
        (_, Some(ext)) => Op::Upsert(ext),
        (_, None) => Op::Create,
    };
    let mut undo = Vec::new();
    let done = collections::write(state, job.t, op, &fields, now, &mut undo)?;
    if job.operation == "hardDelete" {
        // Not kept in the recycle bin: gone for queryAll, still in the delete log.
        state.store.purge(job.t, &done.id);
    }
    Ok(done)
}

/// Picks a results file of a job: its header and rows.
type Pick = fn(&Job) -> (Vec<String>, &[Vec<String>]);

fn results(shared: &Shared, id: &str, pick: Pick) -> Response {
    let state = shared.lock();
    let Some(job) = state.jobs.get(id) else {
        return not_found();
    };
    if !job.state.ended() {
        return invalid_state(job, "JobComplete, Failed or Aborted");
    }
    let (head, rows) = pick(job);
    let mut all = Vec::with_capacity(rows.len() + 1);
    all.push(head);
    all.extend(rows.iter().cloned());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/csv")],
        csv::write(&all, job.delimiter),
    )
        .into_response()
}

fn with_prefix(a: &str, b: &str, header: &[String]) -> Vec<String> {
    let mut h = vec![a.to_string(), b.to_string()];
    h.extend(header.iter().cloned());
    h
}

async fn successes(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>) -> Response {
    results(&shared, &id, |j| {
        (with_prefix("sf__Id", "sf__Created", &j.header), &j.successes)
    })
}

async fn failures(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>) -> Response {
    results(&shared, &id, |j| {
        (with_prefix("sf__Id", "sf__Error", &j.header), &j.failures)
    })
}

async fn unprocessed(axum::extract::State(shared): Shr, Path((_v, id)): Path<(String, String)>) -> Response {
    results(&shared, &id, |j| (j.header.clone(), &j.unprocessed))
}

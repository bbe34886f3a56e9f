//! Bulk API 2.0 ingest (docs/salesforce-protocol.md §4) for large change sets: one CSV job
//! per batch of up to [`JOB_RECORDS`] records: create, upload, close, poll with backoff,
//! then read the successful, failed and unprocessed results and join them to the rows by
//! key (results are unordered). In Bulk CSV an empty cell leaves a field unchanged, so a
//! null is sent as `#N/A`, which clears it.
//!
//! This module holds a job's life ([`send`]); `csv.rs` writes and streams CSV, and
//! `results.rs` reads a result set's rows back to the records they are about.

mod csv;
mod results;

use super::SalesforceDestination;
use crate::destination::{Batch, Op, Outcome, SendError};
use crate::salesforce::client::ACCEPT_CSV;
use crate::salesforce::csv::{CsvError, CsvReader, MAX_ROW};
use csv::{cell_value, csv_field};
use reqwest::Method;
use results::{result_cap, ResultKind, ResultReader, JOIN_SEPARATOR};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Records per job. Far under the 100 MB upload cap for any plausible record, and small
/// enough that a crash re-sends little.
pub const JOB_RECORDS: usize = 10_000;
/// Raw CSV per upload: Salesforce takes 150 MB after base64, so 100 MB raw
/// (docs/salesforce-protocol.md §4).
const MAX_UPLOAD: usize = 100 * 1024 * 1024;
/// The longest a job is waited for.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// Sends `batch` as one Bulk API 2.0 job (or several, if its CSV would pass the upload
/// cap); one outcome per record.
pub async fn send(d: &SalesforceDestination, batch: &Batch) -> Result<Vec<Outcome>, SendError> {
    // A CSV row is about as long as its JSON payload; halve batches that would not fit.
    let estimate: usize = batch.records.iter().map(|r| r.payload.len() + 32).sum();
    if estimate > MAX_UPLOAD * 9 / 10 && batch.records.len() > 1 {
        let mid = batch.records.len() / 2;
        let mut outcomes = Vec::with_capacity(batch.records.len());
        for half in [&batch.records[..mid], &batch.records[mid..]] {
            let part = Batch {
                records: half.to_vec(),
                ..batch.clone()
            };
            outcomes.extend(Box::pin(send(d, &part)).await?);
        }
        return Ok(outcomes);
    }
    let conn = &d.conn;
    let keyed_on_id = d.keyed_on_id();
    // Ids for updates and deletes keyed on an external ID.
    let mut ids: HashMap<usize, String> = HashMap::new();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.records.len()];
    if d.wants_record_ids(batch.op) {
        let missing: Vec<&str> = batch
            .records
            .iter()
            .filter(|r| r.record_id.is_none())
            .map(|r| r.key.as_str())
            .collect();
        let found = d.lookup_ids(&missing).await?;
        for (i, r) in batch.records.iter().enumerate() {
            match r.record_id.clone().or_else(|| found.get(&r.key).cloned()) {
                Some(id) => {
                    ids.insert(i, id);
                }
                None => {
                    outcomes[i] = Some(if batch.op == Op::Delete {
                        Outcome::Confirmed { record_id: None }
                    } else {
                        Outcome::Rejected {
                            code: "NOT_FOUND".into(),
                            message: format!("no {} record has {} = {}", d.object, d.key_field, r.key),
                        }
                    });
                }
            }
        }
    }
    let todo: Vec<usize> = (0..batch.records.len()).filter(|i| outcomes[*i].is_none()).collect();
    if todo.is_empty() {
        return Ok(outcomes.into_iter().map(|o| o.expect("all decided")).collect());
    }
    let (operation, external_id) = match batch.op {
        Op::Insert => ("insert", None),
        Op::Delete => ("delete", None),
        Op::Update => ("update", None),
        Op::Upsert | Op::Clear if keyed_on_id => ("update", None),
        Op::Upsert | Op::Clear => ("upsert", Some(d.key_field.clone())),
    };
    // The CSV: columns are the payloads' fields (every record of a model has the same), plus
    // `Id` where records are addressed by Id; a delete sends Ids only.
    let parsed: Vec<serde_json::Map<String, serde_json::Value>> = todo
        .iter()
        .map(|&i| serde_json::from_str(&batch.records[i].payload).unwrap_or_default())
        .collect();
    let mut columns: Vec<String> = if batch.op == Op::Delete {
        Vec::new()
    } else {
        let mut c: Vec<String> = parsed.first().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        if batch.op == Op::Insert && keyed_on_id {
            c.retain(|k| !k.eq_ignore_ascii_case("Id"));
        }
        c
    };
    let by_id = batch.op == Op::Delete || (operation == "update" && !keyed_on_id);
    if by_id {
        columns.insert(0, "Id".into());
    }
    // The CSV, and for each row the values it was uploaded with. Results come back in any
    // order with the uploaded columns after the `sf__` ones
    // (docs/salesforce-protocol.md §4), and are joined to rows on the key's column when it
    // is uploaded (the Id, or the external ID of an upsert), or on the whole uploaded row
    // when it is not (an insert keyed on `Id`, whose Id is not sent: Salesforce makes it).
    let join_column: Option<usize> = if by_id || batch.op == Op::Delete {
        Some(0)
    } else if keyed_on_id {
        columns.iter().position(|c| c.eq_ignore_ascii_case("Id"))
    } else {
        columns.iter().position(|c| *c == d.key_field)
    };
    let mut csv = columns.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",");
    csv.push('\n');
    let mut join: HashMap<String, VecDeque<usize>> = HashMap::new();
    for (n, &i) in todo.iter().enumerate() {
        let rec = &parsed[n];
        let mut values = Vec::with_capacity(columns.len());
        for c in &columns {
            if c == "Id" && by_id {
                values.push(cell_value(&serde_json::Value::String(
                    ids.get(&i).cloned().unwrap_or_default(),
                )));
            } else {
                values.push(cell_value(rec.get(c).unwrap_or(&serde_json::Value::Null)));
            }
        }
        let join_value = match join_column {
            Some(c) => values[c].clone(),
            None => values.join(JOIN_SEPARATOR),
        };
        join.entry(join_value).or_default().push_back(i);
        csv.push_str(&values.iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(","));
        csv.push('\n');
    }
    let uploaded = csv.len();

    // 1. Create the job.
    let mut spec = serde_json::json!({
        "object": d.object, "operation": operation, "contentType": "CSV",
        "lineEnding": "LF", "columnDelimiter": "COMMA",
    });
    if let Some(f) = &external_id {
        spec["externalIdFieldName"] = f.clone().into();
    }
    let (_, job) = conn
        .json(
            &d.calls,
            Method::POST,
            &conn.data_path("jobs/ingest"),
            Some(spec.to_string()),
        )
        .await?;
    let Some(job_id) = job["id"].as_str().map(str::to_string) else {
        return Err(SendError::Fatal(format!(
            "connection `{}`: the Bulk API created no job: {job}",
            conn.name
        )));
    };
    let job_path = conn.data_path(&format!("jobs/ingest/{job_id}"));
    // 2. Upload (contentUrl has no leading slash).
    let upload = match job["contentUrl"].as_str() {
        Some(u) => format!("/{}", u.trim_start_matches('/')),
        None => format!("{job_path}/batches"),
    };
    conn.request(
        &d.calls,
        Method::PUT,
        &upload,
        Some(("text/csv", csv.into_bytes())),
        &[],
        Duration::from_secs(600),
    )
    .await?;
    // 3. Close: without it nothing is processed.
    conn.json(
        &d.calls,
        Method::PATCH,
        &job_path,
        Some(r#"{"state":"UploadComplete"}"#.to_string()),
    )
    .await?;
    // 4. Poll with backoff.
    let started = Instant::now();
    let mut wait = Duration::from_millis(200);
    let state = loop {
        tokio::time::sleep(wait).await;
        let (_, info) = conn.json(&d.calls, Method::GET, &job_path, None).await?;
        let state = info["state"].as_str().unwrap_or("").to_string();
        match state.as_str() {
            "JobComplete" | "Failed" | "Aborted" => break (state, info),
            "Open" | "UploadComplete" | "InProgress" => tracing::debug!(
                event = "bulk_job_polled",
                job = %job_path,
                state = %state,
                waited_ms = started.elapsed().as_millis() as u64,
                "Bulk API 2.0 ingest job not complete yet"
            ),
            // Not a job's state (docs/salesforce-protocol.md §4): waiting on it would wait
            // an hour for nothing.
            _ => {
                return Err(SendError::Fatal(format!(
                    "connection `{}`: Bulk job {job_id}: the job's answer has no known `state`: {}",
                    conn.name,
                    info.to_string().chars().take(200).collect::<String>()
                )))
            }
        }
        if started.elapsed() > JOB_TIMEOUT {
            return Err(SendError::Fatal(format!(
                "connection `{}`: Bulk job {job_id} still {state} after an hour",
                conn.name
            )));
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    };
    // 5. Results, joined to rows (see above), each set read as a stream: at most one row
    // in memory, and no more than a result set can hold for what was uploaded.
    let cap = result_cap(uploaded, todo.len());
    let job_error = state.1["errorMessage"]
        .as_str()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    for (kind, suffix) in [
        (ResultKind::Successful, "successfulResults/"),
        (ResultKind::Failed, "failedResults/"),
        (ResultKind::Unprocessed, "unprocessedrecords/"),
    ] {
        let path = format!("{job_path}/{suffix}");
        let (mut resp, _permit) = conn
            .request_raw(
                &d.calls,
                Method::GET,
                &path,
                None,
                &[ACCEPT_CSV],
                Duration::from_secs(600),
            )
            .await?;
        let mut reader = ResultReader {
            kind,
            columns: &columns,
            join_column,
            positions: None,
        };
        let shown = |e: String| SendError::Fatal(format!("connection `{}`: Bulk job {job_id}: {e}", conn.name));
        let mut on_row = |row: Vec<String>| -> Result<(), results::ResultError> {
            let Some((i, outcome)) = reader.row(row, &mut join, &state.0, &job_error)? else {
                return Ok(());
            };
            outcomes[i] = Some(outcome);
            Ok(())
        };
        let mut csv = CsvReader::default();
        let mut total = 0usize;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(conn
                        .body_error(&Method::GET, &path, crate::http::BodyError::Transfer(e))
                        .into())
                }
            };
            total = total.saturating_add(chunk.len());
            if total > cap {
                return Err(conn
                    .body_error(&Method::GET, &path, crate::http::BodyError::TooLarge { cap })
                    .into());
            }
            match csv.feed(&chunk, b',', &mut on_row) {
                Ok(()) => {}
                Err(results::ResultError::Csv(CsvError::RowTooLong)) => {
                    return Err(shown(format!(
                        "a row of its {} results is longer than {}",
                        kind.name(),
                        crate::http::size(MAX_ROW as u64)
                    )))
                }
                Err(results::ResultError::Csv(e)) => {
                    return Err(shown(format!("its {} results do not parse as CSV ({e})", kind.name())))
                }
                Err(e) => return Err(shown(e.to_string())),
            }
        }
        csv.finish(&mut on_row).map_err(|e| shown(e.to_string()))?;
    }
    let unanswered = outcomes.iter().filter(|o| o.is_none()).count();
    if unanswered > 0 && batch.op == Op::Insert {
        // Sent again, these might be created twice: the batch fails and its rows stay in
        // flight (held back as unconfirmed inserts), as after a crash.
        return Err(SendError::Fatal(format!(
            "connection `{}`: Bulk job {job_id} reported nothing for {unanswered} of {} records; whether they \
             were created is unknown, so none of the batch is confirmed",
            conn.name,
            batch.records.len()
        )));
    }
    Ok(outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or(Outcome::Rejected {
                code: "NO_RESULT".into(),
                message: "the Bulk job reported nothing for this record".into(),
            })
        })
        .collect())
}

//! Bulk API 2.0 ingest (crm-apis.md §4) for large change sets: one CSV job per batch of up
//! to [`JOB_RECORDS`] records: create, upload, close, poll with backoff, then read the
//! successful, failed and unprocessed results and join them to the rows by key (results are
//! unordered). In Bulk CSV an empty cell leaves a field unchanged, so a null is sent as
//! `#N/A`, which clears it.

use super::SalesforceDestination;
use crate::destination::{Batch, Op, Outcome, SendError};
use reqwest::Method;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Records per job. Far under the 100 MB upload cap for any plausible record, and small
/// enough that a crash re-sends little.
pub const JOB_RECORDS: usize = 10_000;
/// Raw CSV per upload: Salesforce takes 150 MB after base64, so 100 MB raw (crm-apis.md §4).
const MAX_UPLOAD: usize = 100 * 1024 * 1024;
/// The longest a job is waited for.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// One CSV cell from a JSON value.
fn cell(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::Null => return "#N/A".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    if text.is_empty() {
        // An empty cell would leave the field unchanged; an empty string clears it too.
        return "#N/A".into();
    }
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Parses CSV (RFC 4180: quoted fields, `""` escapes, newlines inside quotes).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            _ => field.push(c),
        }
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    rows
}

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
    // The column rows are joined back on.
    let join_column = if batch.op == Op::Delete || keyed_on_id || by_id {
        "Id".to_string()
    } else {
        d.key_field.clone()
    };
    let mut csv = columns
        .iter()
        .map(|c| cell(&serde_json::Value::String(c.clone())))
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    let mut join: HashMap<String, usize> = HashMap::new();
    for (n, &i) in todo.iter().enumerate() {
        let rec = &parsed[n];
        let mut cells = Vec::with_capacity(columns.len());
        for c in &columns {
            if c == "Id" && by_id {
                cells.push(cell(&serde_json::Value::String(
                    ids.get(&i).cloned().unwrap_or_default(),
                )));
            } else {
                cells.push(cell(rec.get(c).unwrap_or(&serde_json::Value::Null)));
            }
        }
        let join_value = if by_id {
            ids.get(&i).cloned().unwrap_or_default()
        } else {
            match rec.get(&join_column) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => batch.records[i].key.clone(),
            }
        };
        join.insert(join_value, i);
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }

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
            _ if started.elapsed() > JOB_TIMEOUT => {
                return Err(SendError::Fatal(format!(
                    "connection `{}`: Bulk job {job_id} still {state} after an hour",
                    conn.name
                )))
            }
            _ => wait = (wait * 2).min(Duration::from_secs(5)),
        }
    };
    // 5. Results, joined to rows by key.
    for (kind, suffix) in [
        ("successful", "successfulResults/"),
        ("failed", "failedResults/"),
        ("unprocessed", "unprocessedrecords/"),
    ] {
        let answer = conn
            .request(
                &d.calls,
                Method::GET,
                &format!("{job_path}/{suffix}"),
                None,
                Duration::from_secs(600),
            )
            .await?;
        let rows = parse_csv(&answer.body);
        let Some((header, rows)) = rows.split_first() else {
            continue;
        };
        let col = |name: &str| header.iter().position(|h| h == name);
        let Some(jc) = col(&join_column) else {
            continue;
        };
        let (id_col, err_col) = (col("sf__Id"), col("sf__Error"));
        for r in rows {
            let Some(&i) = r.get(jc).and_then(|v| join.get(v)) else {
                continue;
            };
            outcomes[i] = Some(match kind {
                "successful" => Outcome::Confirmed {
                    record_id: id_col.and_then(|c| r.get(c)).filter(|s| !s.is_empty()).cloned(),
                },
                "failed" => {
                    // `REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --`
                    let e = err_col.and_then(|c| r.get(c)).cloned().unwrap_or_default();
                    let (code, message) = e.split_once(':').unwrap_or(("UNKNOWN", e.as_str()));
                    Outcome::Rejected {
                        code: code.to_string(),
                        message: message.trim_end_matches(" --").to_string(),
                    }
                }
                _ => Outcome::Rejected {
                    code: "UNPROCESSED".into(),
                    message: format!(
                        "Bulk job {job_id} ended {} before processing this record{}",
                        state.0,
                        state.1["errorMessage"]
                            .as_str()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                },
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        assert_eq!(cell(&serde_json::Value::Null), "#N/A");
        assert_eq!(cell(&serde_json::json!("a,b")), "\"a,b\"");
        assert_eq!(cell(&serde_json::json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(cell(&serde_json::json!(12.5)), "12.5");
        assert_eq!(cell(&serde_json::json!(true)), "true");
        assert_eq!(cell(&serde_json::json!("")), "#N/A");
    }

    #[test]
    fn csv_round_trip() {
        let rows = parse_csv("\"sf__Id\",\"sf__Created\",Name\n003,true,\"A, \"\"B\"\"\nC\"\n004,false,x\n");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], ["sf__Id", "sf__Created", "Name"]);
        assert_eq!(rows[1], ["003", "true", "A, \"B\"\nC"]);
        assert_eq!(rows[2], ["004", "false", "x"]);
        assert!(parse_csv("").is_empty());
    }
}

//! Bulk API 2.0 ingest (docs/salesforce-protocol.md §4) for large change sets: one CSV job
//! per batch of up to [`JOB_RECORDS`] records: create, upload, close, poll with backoff,
//! then read the successful, failed and unprocessed results and join them to the rows by
//! key (results are unordered). In Bulk CSV an empty cell leaves a field unchanged, so a
//! null is sent as `#N/A`, which clears it.

use super::SalesforceDestination;
use crate::destination::{Batch, Op, Outcome, SendError};
use reqwest::Method;
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

/// One CSV cell's value from a JSON value (unquoted).
fn cell_value(v: &serde_json::Value) -> String {
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
    text
}

/// A value as a CSV field, quoted when it needs to be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One CSV cell from a JSON value.
#[cfg(test)]
fn cell(v: &serde_json::Value) -> String {
    csv_field(&cell_value(v))
}

/// A result row longer than this is not a Bulk result (a record holds at most 400,000
/// characters, docs/salesforce-protocol.md §4).
const MAX_RESULT_ROW: usize = 4 * 1024 * 1024;

/// RFC 4180 CSV read as it arrives (quoted fields, `""` escapes, newlines inside quotes),
/// one row at a time, so a result set of any size costs one row of memory.
#[derive(Default)]
struct CsvStream {
    row: Vec<String>,
    field: Vec<u8>,
    quoted: bool,
    /// The byte before closed a quoted section: a `"` now is an escaped quote.
    after_quote: bool,
    any: bool,
    row_bytes: usize,
}

impl CsvStream {
    fn end_field(&mut self) {
        let field = std::mem::take(&mut self.field);
        self.row.push(match String::from_utf8(field) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        });
    }

    /// Feeds bytes; `row` is called with each complete row.
    fn feed<E>(
        &mut self,
        bytes: &[u8],
        mut row: impl FnMut(Vec<String>) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        for &b in bytes {
            self.any = true;
            self.row_bytes += 1;
            if self.row_bytes > MAX_RESULT_ROW {
                return Err(StreamError::RowTooLong);
            }
            if self.quoted {
                if b == b'"' {
                    self.quoted = false;
                    self.after_quote = true;
                } else {
                    self.field.push(b);
                }
                continue;
            }
            if std::mem::take(&mut self.after_quote) && b == b'"' {
                self.field.push(b'"');
                self.quoted = true;
                continue;
            }
            match b {
                b'"' => self.quoted = true,
                b',' => self.end_field(),
                b'\r' => {}
                b'\n' => {
                    self.end_field();
                    self.any = false;
                    self.row_bytes = 0;
                    row(std::mem::take(&mut self.row)).map_err(StreamError::Row)?;
                }
                _ => self.field.push(b),
            }
        }
        Ok(())
    }

    /// Ends the input: the last row, if it had no line end.
    fn finish<E>(mut self, mut row: impl FnMut(Vec<String>) -> Result<(), E>) -> Result<(), E> {
        if self.any {
            self.end_field();
            row(std::mem::take(&mut self.row))?;
        }
        Ok(())
    }
}

enum StreamError<E> {
    RowTooLong,
    Row(E),
}

/// Parses CSV (RFC 4180: quoted fields, `""` escapes, newlines inside quotes).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut csv = CsvStream::default();
    let mut push = |r: Vec<String>| -> Result<(), ()> {
        rows.push(r);
        Ok(())
    };
    if csv.feed(text.as_bytes(), &mut push).is_ok() {
        let _ = csv.finish(&mut push);
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
            "Open" | "UploadComplete" | "InProgress" => {}
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
            .request_raw(&d.calls, Method::GET, &path, None, Duration::from_secs(600))
            .await?;
        let mut reader = ResultReader {
            kind,
            columns: &columns,
            join_column,
            positions: None,
        };
        let shown = |e: String| SendError::Fatal(format!("connection `{}`: Bulk job {job_id}: {e}", conn.name));
        let mut on_row = |row: Vec<String>| -> Result<(), String> {
            let Some((i, outcome)) = reader.row(row, &mut join, &state.0, &job_error)? else {
                return Ok(());
            };
            outcomes[i] = Some(outcome);
            Ok(())
        };
        let mut csv = CsvStream::default();
        let mut total = 0usize;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(conn.body_error(&Method::GET, &path, crate::http::BodyError::Transfer(e))),
            };
            total = total.saturating_add(chunk.len());
            if total > cap {
                return Err(conn.body_error(&Method::GET, &path, crate::http::BodyError::TooLarge { cap }));
            }
            match csv.feed(&chunk, &mut on_row) {
                Ok(()) => {}
                Err(StreamError::RowTooLong) => {
                    return Err(shown(format!(
                        "a row of its {} results is longer than {}",
                        kind.name(),
                        crate::http::size(MAX_RESULT_ROW as u64)
                    )))
                }
                Err(StreamError::Row(e)) => return Err(shown(e)),
            }
        }
        csv.finish(&mut on_row).map_err(shown)?;
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

/// Joins the uploaded values of a row when the key is not among them.
const JOIN_SEPARATOR: &str = "\u{1f}";

/// The most one result set of a job may hold: what was uploaded, twice over (values come
/// back quoted), plus 1 KiB a record for the `sf__` columns and errors, and 1 MiB; never
/// less than [`crate::http::DATA_ANSWER_CAP`].
fn result_cap(uploaded: usize, records: usize) -> usize {
    uploaded
        .saturating_mul(2)
        .saturating_add(records.saturating_mul(1024))
        .saturating_add(1024 * 1024)
        .max(crate::http::DATA_ANSWER_CAP)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultKind {
    Successful,
    Failed,
    Unprocessed,
}

impl ResultKind {
    fn name(self) -> &'static str {
        match self {
            ResultKind::Successful => "successful",
            ResultKind::Failed => "failed",
            ResultKind::Unprocessed => "unprocessed",
        }
    }
}

/// Reads one result set's rows: the header first, then each row to its record.
struct ResultReader<'a> {
    kind: ResultKind,
    /// The uploaded columns.
    columns: &'a [String],
    /// The uploaded column rows are joined on, or the whole row.
    join_column: Option<usize>,
    /// From the header: where each uploaded column is, `sf__Id` and `sf__Error`.
    positions: Option<(Vec<usize>, Option<usize>, Option<usize>)>,
}

impl ResultReader<'_> {
    /// The record a result row is about and its outcome; `None` for the header, a blank
    /// line, or a row that matches no record still waiting for its result.
    fn row(
        &mut self,
        row: Vec<String>,
        join: &mut HashMap<String, VecDeque<usize>>,
        state: &str,
        job_error: &str,
    ) -> Result<Option<(usize, Outcome)>, String> {
        let Some((cols, id_col, err_col)) = &self.positions else {
            // The header. `sf__` columns first, then the uploaded ones (any order is read).
            let find = |name: &str| row.iter().position(|h| h == name);
            let mut cols = Vec::with_capacity(self.columns.len());
            for c in self.columns {
                let at = row
                    .iter()
                    .enumerate()
                    .position(|(n, h)| h == c && !cols.contains(&n))
                    .ok_or_else(|| format!("its {} results have no column `{c}`", self.kind.name()))?;
                cols.push(at);
            }
            let (id_col, err_col) = (find("sf__Id"), find("sf__Error"));
            match self.kind {
                ResultKind::Successful if id_col.is_none() => {
                    return Err("its successful results have no `sf__Id` column".into())
                }
                ResultKind::Failed if err_col.is_none() => {
                    return Err("its failed results have no `sf__Error` column".into())
                }
                _ => {}
            }
            self.positions = Some((cols, id_col, err_col));
            return Ok(None);
        };
        if row.len() == 1 && row[0].is_empty() {
            return Ok(None);
        }
        let value = |c: usize| row.get(cols[c]).map(String::as_str).unwrap_or("");
        let key = match self.join_column {
            Some(c) => value(c).to_string(),
            None => (0..cols.len()).map(value).collect::<Vec<_>>().join(JOIN_SEPARATOR),
        };
        let Some(i) = join.get_mut(&key).and_then(VecDeque::pop_front) else {
            return Ok(None);
        };
        let outcome = match self.kind {
            ResultKind::Successful => Outcome::Confirmed {
                record_id: id_col.and_then(|c| row.get(c)).filter(|s| !s.is_empty()).cloned(),
            },
            ResultKind::Failed => {
                // `REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --`
                let e = err_col.and_then(|c| row.get(c)).cloned().unwrap_or_default();
                let (code, message) = e.split_once(':').unwrap_or(("UNKNOWN", e.as_str()));
                Outcome::Rejected {
                    code: code.to_string(),
                    message: message.trim_end_matches(" --").to_string(),
                }
            }
            ResultKind::Unprocessed => Outcome::Rejected {
                code: "UNPROCESSED".into(),
                message: format!("the Bulk job ended {state} before processing this record{job_error}"),
            },
        };
        Ok(Some((i, outcome)))
    }
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

    #[test]
    fn csv_arrives_in_chunks_of_any_size() {
        let text = "\"sf__Id\",\"sf__Created\",Name\n003,true,\"A, \"\"B\"\"\nC\"\r\n004,false,x";
        for size in 1..9 {
            let mut rows = Vec::new();
            let mut csv = CsvStream::default();
            for chunk in text.as_bytes().chunks(size) {
                let fed = csv.feed(chunk, |r| -> Result<(), ()> {
                    rows.push(r);
                    Ok(())
                });
                assert!(fed.is_ok());
            }
            csv.finish(|r| -> Result<(), ()> {
                rows.push(r);
                Ok(())
            })
            .unwrap();
            assert_eq!(rows, parse_csv(text), "chunks of {size}");
            assert_eq!(rows[1], ["003", "true", "A, \"B\"\nC"]);
            assert_eq!(rows[2], ["004", "false", "x"]);
        }
    }

    #[test]
    fn results_join_on_the_whole_uploaded_row_when_the_key_is_not_uploaded() {
        let columns = vec!["LastName".to_string(), "Email".to_string()];
        let mut join: HashMap<String, VecDeque<usize>> = HashMap::new();
        // Two identical rows, and a third.
        for (i, row) in [["Doe", "a@x"], ["Doe", "a@x"], ["Roe", "b@x"]].iter().enumerate() {
            join.entry(row.join(JOIN_SEPARATOR)).or_default().push_back(i);
        }
        let mut reader = ResultReader {
            kind: ResultKind::Successful,
            columns: &columns,
            join_column: None,
            positions: None,
        };
        // Columns by name, in any order; rows in any order; a row of no record is ignored.
        let csv = "\"sf__Id\",\"sf__Created\",Email,LastName\n003C,true,b@x,Roe\n003A,true,a@x,Doe\n003Z,true,z@x,Zoe\n003B,true,a@x,Doe\n";
        let got: Vec<(usize, Outcome)> = parse_csv(csv)
            .into_iter()
            .filter_map(|r| reader.row(r, &mut join, "JobComplete", "").unwrap())
            .collect();
        let ok = |id: &str| Outcome::Confirmed {
            record_id: Some(id.into()),
        };
        assert_eq!(got, vec![(2, ok("003C")), (0, ok("003A")), (1, ok("003B"))]);

        let mut reader = ResultReader {
            kind: ResultKind::Successful,
            columns: &columns,
            join_column: None,
            positions: None,
        };
        let err = reader
            .row(
                vec!["sf__Id".into(), "sf__Created".into(), "Email".into()],
                &mut join,
                "",
                "",
            )
            .unwrap_err();
        assert_eq!(err, "its successful results have no column `LastName`");
    }
}

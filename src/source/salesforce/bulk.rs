//! Reading through a Bulk API 2.0 query job (docs/salesforce-protocol.md, "Reading"):
//!
//! 1. `POST jobs/query` `{"operation": "queryAll"|"query", "query", "contentType": "CSV",
//!    "columnDelimiter": "COMMA", "lineEnding": "LF"}`;
//! 2. `GET jobs/query/{id}` until `JobComplete`, waiting 1.5 times longer each time (from
//!    [`super::ReadOptions::poll_first`] up to `poll_max`); `Failed` or `Aborted` is an
//!    error carrying the job's `errorMessage`;
//! 3. `GET jobs/query/{id}/results?maxRecords=N[&locator=L]` page by page until
//!    `Sforce-Locator` is `null`; each page's CSV is parsed as it arrives (one row in
//!    memory), its header checked against the fields asked for, its row count against
//!    `Sforce-NumberOfRecords`. A page whose transfer fails part way is asked for again
//!    (a locator stays valid while the job exists) and its rows already delivered are
//!    skipped;
//! 4. `DELETE jobs/query/{id}`; when the read fails or is cancelled before the job ended,
//!    `PATCH` `{"state": "Aborted"}` first. Cleanup failures are ignored: Salesforce
//!    deletes ended jobs after 7 days anyway. (A create retried after a timeout may leave
//!    a job the first attempt made; it ends, unread, and goes the same way.)
//!
//! All with the API version of the connection, so results are asked for with the
//! version that created the job (another one is 409).

use super::rows::Rows;
use super::{Ctx, Described, Extract};
use crate::salesforce::client::{CallError, ACCEPT_CSV};
use crate::salesforce::csv::{CsvError, CsvReader};
use crate::source::{BatchSender, SourceError};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The most one results page may carry, streamed: memory holds one row at a time, the cap
/// only stops an answer that never ends.
const PAGE_CAP: u64 = 4 * 1024 * 1024 * 1024;

/// Reads `soql` through a query job into batches sent on `tx`.
pub(super) async fn read(
    ctx: &Ctx,
    d: &Described,
    soql: &str,
    extract: &Extract,
    tx: &BatchSender,
) -> Result<(), SourceError> {
    let object = &d.info.name;
    let operation = if extract.include_deleted { "queryAll" } else { "query" };
    let create = json!({
        "operation": operation,
        "query": soql,
        "contentType": "CSV",
        "columnDelimiter": "COMMA",
        "lineEnding": "LF",
    })
    .to_string();
    let path = ctx.conn.data_path("jobs/query");
    let job = ctx
        .retry(
            &format!("creating the Bulk API 2.0 query job on `{object}`"),
            || async {
                ctx.conn
                    .json(&ctx.calls, Method::POST, &path, Some(create.clone()))
                    .await
                    .map(|(_, v)| v)
            },
        )
        .await?;
    let Some(id) = job["id"].as_str().map(str::to_string) else {
        return Err(SourceError::Query(format!(
            "the Bulk API 2.0 query job on `{object}` was created without an `id`; the answer is not what the \
             protocol says"
        )));
    };
    let mut ended = false;
    let result = run(ctx, d, &id, extract, tx, &mut ended).await;
    cleanup(ctx, &id, ended).await;
    result
}

async fn run(
    ctx: &Ctx,
    d: &Described,
    id: &str,
    extract: &Extract,
    tx: &BatchSender,
    ended: &mut bool,
) -> Result<(), SourceError> {
    let object = &d.info.name;
    let job_path = ctx.conn.data_path(&format!("jobs/query/{id}"));
    let options = &ctx.options;
    let mut wait = options.poll_first;
    let deadline = Instant::now() + options.job_timeout;
    loop {
        if tx.is_cancelled() {
            return Err(SourceError::Cancelled);
        }
        let info = ctx
            .retry(&format!("the state of query job {id} on `{object}`"), || async {
                ctx.conn
                    .json(&ctx.calls, Method::GET, &job_path, None)
                    .await
                    .map(|(_, v)| v)
            })
            .await?;
        match info["state"].as_str() {
            Some("JobComplete") => break,
            Some("UploadComplete" | "InProgress") => {}
            Some(state @ ("Failed" | "Aborted")) => {
                *ended = true;
                return Err(SourceError::Query(format!(
                    "the Bulk API 2.0 query job {id} on `{object}` ended {state}: {}",
                    info["errorMessage"].as_str().unwrap_or("no errorMessage")
                )));
            }
            other => {
                return Err(SourceError::Query(format!(
                    "query job {id} on `{object}` is in the state {}, which the protocol does not have",
                    other.map(|s| format!("`{s}`")).unwrap_or_else(|| "(none)".into())
                )))
            }
        }
        if Instant::now() > deadline {
            return Err(SourceError::Query(format!(
                "the Bulk API 2.0 query job {id} on `{object}` did not complete within {} s",
                options.job_timeout.as_secs()
            )));
        }
        tracing::debug!(
            event = "bulk_job_polled",
            job = %id,
            object,
            state = info["state"].as_str().unwrap_or(""),
            next_poll_ms = wait.as_millis() as u64,
            "Bulk API 2.0 query job not complete yet"
        );
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5).min(options.poll_max);
    }
    *ended = true;
    let batch_rows = extract.batch_rows.max(1);
    let mut rows = Rows::new(object, &d.columns, d.schema.clone(), batch_rows.min(8_192));
    let mut locator: Option<String> = None;
    let mut page = 0u64;
    loop {
        page += 1;
        let mut path = format!(
            "jobs/query/{id}/results?maxRecords={}",
            options.bulk_page_records.max(1)
        );
        if let Some(l) = &locator {
            path.push_str("&locator=");
            path.push_str(&url::form_urlencoded::byte_serialize(l.as_bytes()).collect::<String>());
        }
        let path = ctx.conn.data_path(&path);
        let what = format!("results page {page} of query job {id} on `{object}`");
        let mut delivered = 0u64;
        let mut attempts = 0u32;
        let next = loop {
            attempts += 1;
            match read_page(ctx, d, &path, &what, delivered, &mut rows, batch_rows, tx).await {
                Ok(next) => break next,
                Err(PageError::Source(e)) => return Err(e),
                Err(PageError::Transient(message, so_far)) => {
                    delivered = so_far;
                    let policy = &options.retry;
                    if attempts >= policy.max_attempts.max(1) {
                        return Err(SourceError::Query(format!(
                            "{what}: after {attempts} attempts: {message}"
                        )));
                    }
                    let delay = policy.delay(attempts, None, rand::random::<f64>());
                    tracing::warn!(
                        event = "request_retried",
                        what = %what,
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        cause = %message,
                        "a Bulk API 2.0 results page failed and is read again from where it broke off"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        };
        match next {
            Some(l) => locator = Some(l),
            None => break,
        }
    }
    if !rows.is_empty() && !tx.send(Ok(rows.finish()?)).await {
        return Err(SourceError::Cancelled);
    }
    Ok(())
}

enum PageError {
    /// Worth asking for the page again; the rows of it delivered so far.
    Transient(String, u64),
    Source(SourceError),
}

impl From<SourceError> for PageError {
    fn from(e: SourceError) -> Self {
        PageError::Source(e)
    }
}

/// Reads one results page; its next locator (`None` on the last page). The first `skip`
/// records were delivered by an earlier attempt.
#[allow(clippy::too_many_arguments)]
async fn read_page(
    ctx: &Ctx,
    d: &Described,
    path: &str,
    what: &str,
    skip: u64,
    rows: &mut Rows,
    batch_rows: usize,
    tx: &BatchSender,
) -> Result<Option<String>, PageError> {
    let protocol = |why: String| {
        PageError::Source(SourceError::Query(format!(
            "{what}: {why}; the answer is not what the protocol says"
        )))
    };
    let (mut resp, _permit) = match ctx
        .conn
        .request_raw(
            &ctx.calls,
            Method::GET,
            path,
            None,
            &[ACCEPT_CSV],
            Duration::from_secs(600),
        )
        .await
    {
        Ok(r) => r,
        Err(CallError::Transient { message, .. }) => return Err(PageError::Transient(message, skip)),
        Err(CallError::Fatal(m)) => return Err(PageError::Source(SourceError::Query(format!("{what}: {m}")))),
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let Some(locator) = header("sforce-locator") else {
        return Err(protocol("it has no `Sforce-Locator` header".into()));
    };
    let Some(expected) = header("sforce-numberofrecords").and_then(|n| n.trim().parse::<u64>().ok()) else {
        return Err(protocol("it has no numeric `Sforce-NumberOfRecords` header".into()));
    };
    let mut reader = CsvReader::default();
    let mut seen = 0u64; // records of this page, header excluded
    let mut header_seen = false;
    let mut delivered = skip;
    let mut bytes = 0u64;
    let mut pending: Vec<Vec<String>> = Vec::new();
    let mut done = false;
    while !done {
        let chunk = match resp.chunk().await {
            Ok(c) => c,
            Err(e) => {
                return Err(PageError::Transient(
                    format!(
                        "the page's body did not arrive whole: {}",
                        crate::diagnostics::root_cause(&e)
                    ),
                    delivered,
                ))
            }
        };
        let collect = |row: Vec<String>| -> Result<(), CsvError> {
            pending.push(row);
            Ok(())
        };
        match &chunk {
            Some(c) => {
                bytes += c.len() as u64;
                if bytes > PAGE_CAP {
                    return Err(protocol(format!("the page is larger than {PAGE_CAP} bytes")));
                }
                reader.feed(c, b',', collect)
            }
            None => {
                done = true;
                std::mem::take(&mut reader).finish(collect)
            }
        }
        .map_err(|e| protocol(format!("the CSV does not parse ({e})")))?;
        for row in pending.drain(..) {
            if !header_seen {
                header_seen = true;
                check_header(d, &row).map_err(|e| protocol(e.to_string()))?;
                continue;
            }
            seen += 1;
            if seen <= skip {
                continue;
            }
            rows.push_cells(&row)?;
            delivered += 1;
            if rows.len() >= batch_rows && !tx.send(Ok(rows.finish()?)).await {
                return Err(PageError::Source(SourceError::Cancelled));
            }
        }
    }
    if !header_seen {
        return Err(protocol("the CSV has no header".into()));
    }
    if seen != expected {
        return Err(protocol(format!(
            "it holds {seen} records where `Sforce-NumberOfRecords` says {expected}"
        )));
    }
    Ok((locator != "null").then_some(locator))
}

/// A results page whose CSV header is not the fields asked for, in order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the CSV header of `{object}` is `{}`, not the fields asked for (`{}`)",
    header.join(","),
    wanted.join(",")
)]
struct HeaderMismatch {
    object: String,
    header: Vec<String>,
    wanted: Vec<String>,
}

/// The CSV header must name the fields asked for, in order.
fn check_header(d: &Described, header: &[String]) -> Result<(), HeaderMismatch> {
    let want = || d.columns.iter().map(|c| c.name.as_str());
    let same = header.len() == d.columns.len() && header.iter().zip(want()).all(|(h, w)| h.eq_ignore_ascii_case(w));
    if same {
        Ok(())
    } else {
        Err(HeaderMismatch {
            object: d.info.name.clone(),
            header: header.to_vec(),
            wanted: want().map(str::to_string).collect(),
        })
    }
}

/// Deletes the job, aborting it first when it had not ended.
async fn cleanup(ctx: &Ctx, id: &str, ended: bool) {
    let path = ctx.conn.data_path(&format!("jobs/query/{id}"));
    if !ended {
        let body = json!({"state": "Aborted"}).to_string();
        let _ = ctx.conn.json(&ctx.calls, Method::PATCH, &path, Some(body)).await;
    }
    let _: Result<(reqwest::StatusCode, Value), CallError> =
        ctx.conn.json(&ctx.calls, Method::DELETE, &path, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::salesforce::describe::ObjectInfo;

    #[test]
    fn the_header_must_name_the_fields_in_order() {
        let info = ObjectInfo::parse(
            "Contact",
            &json!({"name": "Contact", "fields": [{"name": "Id", "type": "id"}, {"name": "LastName", "type": "string"}]}),
        )
        .unwrap();
        let (columns, schema) = info.schema(&["Id".into(), "LastName".into()]).unwrap();
        let d = Described { info, columns, schema };
        let h = |cells: &[&str]| check_header(&d, &cells.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        assert!(h(&["Id", "LastName"]).is_ok());
        assert!(h(&["id", "lastname"]).is_ok(), "names match whatever their case");
        let e = h(&["LastName", "Id"]).unwrap_err();
        assert_eq!(e.wanted, ["Id", "LastName"]);
        assert_eq!(
            e.to_string(),
            "the CSV header of `Contact` is `LastName,Id`, not the fields asked for (`Id,LastName`)"
        );
        assert!(h(&["Id"]).is_err());
        assert!(h(&["Id", "LastName", "Email"]).is_err());
    }
}

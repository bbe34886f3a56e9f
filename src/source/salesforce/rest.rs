//! Reading through the REST query resources (docs/salesforce-protocol.md, "Reading"):
//! `GET queryAll?q=…` (or `query` without deleted records), then each `nextRecordsUrl`
//! until `done`. A page is `{"totalSize", "done", "records": […], "nextRecordsUrl"}`; one
//! that is not (no `records` list, `done` false without a next page, a record that is not
//! an object or lacks a selected field) ends the read with an error.
//!
//! Every query request asks for pages of [`super::ReadOptions::rest_batch_size`] records
//! (2,000, the most Salesforce sends) in a `Sforce-Query-Options: batchSize=` header;
//! Salesforce may send fewer, and the reader follows `nextRecordsUrl` whatever the size.

use super::rows::Rows;
use super::{Ctx, Described, Extract};
use crate::source::{BatchSender, SourceError};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value;

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `Sforce-Query-Options: batchSize=n`.
fn query_options(ctx: &Ctx) -> [(HeaderName, HeaderValue); 1] {
    [(
        HeaderName::from_static("sforce-query-options"),
        // Digits after ASCII: always a valid value.
        HeaderValue::try_from(format!("batchSize={}", ctx.options.rest_batch_size))
            .unwrap_or_else(|_| HeaderValue::from_static("batchSize=2000")),
    )]
}

fn resource(include_deleted: bool) -> &'static str {
    if include_deleted {
        "queryAll"
    } else {
        "query"
    }
}

/// The `totalSize` of a `SELECT COUNT()` query.
pub(super) async fn count(ctx: &Ctx, soql: &str, include_deleted: bool) -> Result<u64, SourceError> {
    let path = ctx
        .conn
        .data_path(&format!("{}?q={}", resource(include_deleted), encode(soql)));
    let page = ctx
        .retry("the count that chooses between REST and Bulk", || async {
            ctx.conn
                .json_with(&ctx.calls, Method::GET, &path, None, &query_options(ctx))
                .await
                .map(|(_, v)| v)
        })
        .await?;
    page["totalSize"].as_u64().ok_or_else(|| {
        SourceError::Query(format!(
            "`{soql}`: the answer has no `totalSize`; it is not what the protocol says"
        ))
    })
}

/// Reads every page of `soql` into batches sent on `tx`.
pub(super) async fn read(
    ctx: &Ctx,
    d: &Described,
    soql: &str,
    extract: &Extract,
    tx: &BatchSender,
) -> Result<(), SourceError> {
    let object = &d.info.name;
    let batch_rows = extract.batch_rows.max(1);
    let mut rows = Rows::new(object, &d.columns, d.schema.clone(), batch_rows.min(2_000));
    let mut path = ctx
        .conn
        .data_path(&format!("{}?q={}", resource(extract.include_deleted), encode(soql)));
    let mut page_number = 0u64;
    loop {
        if tx.is_cancelled() {
            return Err(SourceError::Cancelled);
        }
        page_number += 1;
        let what = format!("`{object}` query page {page_number}");
        let page = ctx
            .retry(&what, || async {
                ctx.conn
                    .json_with(&ctx.calls, Method::GET, &path, None, &query_options(ctx))
                    .await
                    .map(|(_, v)| v)
            })
            .await?;
        let bad = |why: &str| SourceError::Query(format!("{what}: {why}; the answer is not what the protocol says"));
        let Some(records) = page.get("records").and_then(Value::as_array) else {
            return Err(bad("it has no `records` list"));
        };
        let Some(done) = page.get("done").and_then(Value::as_bool) else {
            return Err(bad("it has no boolean `done`"));
        };
        for record in records {
            let Some(record) = record.as_object() else {
                return Err(bad(&format!("record {} is not an object", rows.total() + 1)));
            };
            rows.push_json(record)?;
            if rows.len() >= batch_rows && !tx.send(Ok(rows.finish()?)).await {
                return Err(SourceError::Cancelled);
            }
        }
        if done {
            break;
        }
        match page.get("nextRecordsUrl").and_then(Value::as_str) {
            Some(next) => path = next.to_string(),
            None => return Err(bad("`done` is false and there is no `nextRecordsUrl`")),
        }
    }
    if !rows.is_empty() && !tx.send(Ok(rows.finish()?)).await {
        return Err(SourceError::Cancelled);
    }
    Ok(())
}

//! HubSpot as a source: one CRM v3 object read into the [`BatchStream`] of Arrow batches
//! the other sources produce, so the mapping layer maps its rows as it maps any other
//! (docs/salesforce-protocol.md §9, "Reading").
//!
//! A read ([`HubspotSource::read`]) fetches the object's properties (typed columns, a
//! clear error for a property the object does not have), then:
//!
//! - **a window** (`cursor >= from AND cursor < to`): the search API,
//!   `POST /crm/v3/objects/{object}/search` with those two filters and `hs_object_id >
//!   last`, sorted by `hs_object_id` ascending, 200 records a page. Each page starts a new
//!   query after the last id seen (keyset paging), so a window of any size is read
//!   whole: HubSpot stops a query at 10,000 results, and ids, unlike stamps, never tie.
//!   Searches have a limit of their own (4 a second, the lower of HubSpot's two documented
//!   figures), kept by the connection;
//! - **everything** (no lower bound: the first run, `--full-resync`, `incremental: off`):
//!   the list endpoint, `GET /crm/v3/objects/{object}?limit=100&properties=…`, following
//!   `paging.next.after`. It has no result cap and no search limit;
//! - then **the archived records**: the list endpoint with `archived=true` (search never
//!   returns them), those archived inside the window (`archivedAt`), with `archived` true.
//!
//! Pseudo-fields a model may name besides properties: `id` (the record id, text) and
//! `archived` (boolean). Types: `number` → `Float64` (`hs_object_id` → `Int64`), `date` →
//! `Date32`, `datetime` → `Timestamp(µs, UTC)`, `bool` → `Boolean`, every other type
//! (`string`, `enumeration`, `phone_number`, …) → text. Values arrive as strings; a date
//! or datetime may also be epoch milliseconds.
//!
//! Transient failures (429 of the short windows, 5xx, timeouts) are retried with the
//! engine's backoff; 429 `DAILY` ends the read (the watermark stays, the next run reads the
//! window again). Memory is bounded: a page is at most [`crate::http::DATA_ANSWER_CAP`].

use crate::config::project::HubspotConnection;
use crate::http::limit::Limits;
use crate::http::retry::RetryPolicy;
use crate::hubspot::{CallError, Conn, Property};
use crate::source::salesforce::describe::{Column, Kind};
use crate::source::salesforce::rows::Rows;
use crate::source::{BatchSender, BatchStream, Producer, SourceError};
use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Records per search page (HubSpot's most).
const SEARCH_PAGE: usize = 200;
/// Records per list page (HubSpot's most).
const LIST_PAGE: usize = 100;
/// Searches a second, per connection.
const SEARCHES_PER_SECOND: u32 = 4;
/// The pseudo-field holding the record id.
pub const ID_FIELD: &str = "id";
/// The pseudo-field saying a record is archived.
pub const ARCHIVED_FIELD: &str = "archived";
/// The cursor unless the model names another.
pub const DEFAULT_CURSOR: &str = "hs_lastmodifieddate";

/// What to read: one object, some properties, optionally a window of a datetime property.
#[derive(Debug, Clone)]
pub struct Extract {
    /// The object type (`contacts`, `deals`, `2-123456`).
    pub object: String,
    /// The properties (and pseudo-fields), in the order of the columns.
    pub fields: Vec<String>,
    /// The datetime property the window applies to.
    pub cursor: Option<String>,
    /// Records with `cursor >= from`; `None`: every record.
    pub from: Option<DateTime<Utc>>,
    /// Records with `cursor < to`, when set (and `from` is set).
    pub to: Option<DateTime<Utc>>,
    /// Archived records too, with `archived` true.
    pub include_archived: bool,
    /// Rows per batch (about).
    pub batch_rows: usize,
}

/// The object's properties and the columns of the fields asked for.
#[derive(Debug, Clone)]
pub struct Described {
    pub properties: Vec<Property>,
    pub columns: Vec<Column>,
    pub schema: SchemaRef,
}

/// A HubSpot connection as a source.
pub struct HubspotSource {
    conn: Arc<Conn>,
    search: Arc<Limits>,
    retry: RetryPolicy,
    calls: Arc<AtomicU64>,
}

/// Shared by a read's producer task.
#[derive(Clone)]
struct Ctx {
    conn: Arc<Conn>,
    search: Arc<Limits>,
    retry: RetryPolicy,
    calls: Arc<AtomicU64>,
}

impl HubspotSource {
    /// The source for connection `name` (shared with the destination in this process: one
    /// token, one rate window).
    pub fn new(name: &str, c: &HubspotConnection) -> Result<HubspotSource, SourceError> {
        Ok(HubspotSource {
            conn: Conn::shared(name, c).map_err(|e| SourceError::Connect(e.why))?,
            search: Limits::shared(
                &format!("{name}\u{0}search"),
                Some((SEARCHES_PER_SECOND, Duration::from_secs(1))),
                1,
            ),
            retry: RetryPolicy::from_env(),
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> HubspotSource {
        self.retry = retry;
        self
    }

    /// API requests this source made (retries included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            conn: self.conn.clone(),
            search: self.search.clone(),
            retry: self.retry.clone(),
            calls: self.calls.clone(),
        }
    }

    /// The properties of `object`, and the columns of `fields` typed from them.
    pub async fn describe(&self, object: &str, fields: &[String]) -> Result<Described, SourceError> {
        self.ctx().describe(object, fields).await
    }

    /// Reads `extract` as a stream of batches (module documentation).
    pub async fn read(&self, extract: &Extract) -> Result<BatchStream, SourceError> {
        let ctx = self.ctx();
        let described = ctx.describe(&extract.object, &extract.fields).await?;
        if let Some(c) = &extract.cursor {
            match described.properties.iter().find(|p| p.name == *c) {
                Some(p) if p.kind == "datetime" => {}
                Some(p) => {
                    return Err(SourceError::Query(format!(
                        "the cursor `{c}` of `{}` is a {} property, not a datetime",
                        extract.object, p.kind
                    )))
                }
                None => {
                    return Err(SourceError::Query(format!(
                        "`{}` has no property `{c}` to read changes by",
                        extract.object
                    )))
                }
            }
        }
        let (tx, mut stream) = crate::source::channel(described.schema.clone());
        let extract = extract.clone();
        let handle = tokio::spawn(
            async move {
                let result = ctx.read(&described, &extract, &tx).await;
                match result {
                    Ok(()) => tx.end().await,
                    Err(SourceError::Cancelled) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            }
            .in_current_span(),
        );
        stream.set_producer(Producer::Task(handle));
        Ok(stream)
    }
}

/// The Arrow kind of a property.
fn kind_of(p: &Property) -> Kind {
    match p.kind.as_str() {
        _ if p.name == "hs_object_id" => Kind::Int,
        "number" => Kind::Float,
        "date" => Kind::Date,
        "datetime" => Kind::DateTime,
        "bool" | "boolean" => Kind::Bool,
        _ => Kind::Text,
    }
}

/// A cell as [`Rows::push_cells`] reads it: dates and datetimes given as epoch
/// milliseconds become ISO text; a date given as a datetime keeps its day.
fn cell(kind: Kind, v: &Value) -> String {
    let text = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    };
    let millis = || {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
            .then(|| text.parse::<i64>().ok())
            .flatten()
            .and_then(DateTime::from_timestamp_millis)
    };
    match kind {
        Kind::Date => match millis() {
            Some(t) => t.format("%Y-%m-%d").to_string(),
            None if text.len() > 10 && text.as_bytes()[10] == b'T' => text[..10].to_string(),
            None => text,
        },
        Kind::DateTime => match millis() {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => text,
        },
        _ => text,
    }
}

impl Ctx {
    async fn describe(&self, object: &str, fields: &[String]) -> Result<Described, SourceError> {
        let properties = self
            .retry(&format!("the properties of `{object}`"), || {
                self.conn.properties(&self.calls, object)
            })
            .await?
            .ok_or_else(|| {
                SourceError::Query(format!(
                    "HubSpot has no object `{object}` the connection's token can see (its properties are 404)"
                ))
            })?;
        let mut columns = Vec::with_capacity(fields.len());
        for f in fields {
            let kind = if f == ID_FIELD {
                Kind::Text
            } else if f == ARCHIVED_FIELD {
                Kind::Bool
            } else {
                match properties.iter().find(|p| p.name == *f) {
                    Some(p) => kind_of(p),
                    None => {
                        let names = properties.iter().map(|p| p.name.as_str());
                        let hint = match crate::diagnostics::unique_close_match(f, names) {
                            Some(m) => format!(" (did you mean `{m}`?)"),
                            None => String::new(),
                        };
                        return Err(SourceError::Query(format!("`{object}` has no property `{f}`{hint}")));
                    }
                }
            };
            columns.push(Column { name: f.clone(), kind });
        }
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, c.kind.data_type(), true))
                .collect::<Vec<_>>(),
        ));
        Ok(Described {
            properties,
            columns,
            schema,
        })
    }

    /// The properties to ask for: the fields that are not pseudo-fields.
    fn wanted(extract: &Extract) -> Vec<String> {
        extract
            .fields
            .iter()
            .filter(|f| *f != ID_FIELD && *f != ARCHIVED_FIELD)
            .cloned()
            .collect()
    }

    async fn read(&self, d: &Described, extract: &Extract, tx: &BatchSender) -> Result<(), SourceError> {
        let mut rows = Rows::new(&extract.object, &d.columns, d.schema.clone(), extract.batch_rows.max(1));
        match (&extract.cursor, extract.from) {
            (Some(cursor), Some(from)) => self.search(d, extract, cursor, from, &mut rows, tx).await?,
            _ => self.list(d, extract, false, &mut rows, tx).await?,
        }
        if extract.include_archived {
            self.list(d, extract, true, &mut rows, tx).await?;
        }
        if !rows.is_empty() {
            let batch = rows.finish()?;
            if !tx.send(Ok(batch)).await {
                return Err(SourceError::Cancelled);
            }
        }
        Ok(())
    }

    /// Adds one record of an answer to the batch, and sends the batch when it is full.
    async fn push(
        &self,
        d: &Described,
        record: &Value,
        rows: &mut Rows,
        batch_rows: usize,
        tx: &BatchSender,
    ) -> Result<(), SourceError> {
        let Some(id) = record["id"].as_str() else {
            return Err(SourceError::Query(
                "a record of the answer has no `id`; the answer is not what the protocol says".into(),
            ));
        };
        let empty = Map::new();
        let props = record["properties"].as_object().unwrap_or(&empty);
        let cells: Vec<String> = d
            .columns
            .iter()
            .map(|c| match c.name.as_str() {
                ID_FIELD => id.to_string(),
                ARCHIVED_FIELD => record["archived"].as_bool().unwrap_or(false).to_string(),
                name => cell(c.kind, props.get(name).unwrap_or(&Value::Null)),
            })
            .collect();
        rows.push_cells(&cells)?;
        if rows.len() >= batch_rows.max(1) {
            let batch = rows.finish()?;
            if !tx.send(Ok(batch)).await {
                return Err(SourceError::Cancelled);
            }
        }
        Ok(())
    }

    /// The window through the search API, keyset-paged on `hs_object_id`.
    async fn search(
        &self,
        d: &Described,
        extract: &Extract,
        cursor: &str,
        from: DateTime<Utc>,
        rows: &mut Rows,
        tx: &BatchSender,
    ) -> Result<(), SourceError> {
        let millis = |t: DateTime<Utc>| t.timestamp_millis().to_string();
        let mut filters = vec![json!({"propertyName": cursor, "operator": "GTE", "value": millis(from)})];
        if let Some(to) = extract.to {
            filters.push(json!({"propertyName": cursor, "operator": "LT", "value": millis(to)}));
        }
        let mut properties = Self::wanted(extract);
        if !properties.iter().any(|p| p == "hs_object_id") {
            properties.push("hs_object_id".into());
        }
        let path = format!("objects/{}/search", extract.object);
        let mut last: Option<u64> = None;
        loop {
            if tx.is_cancelled() {
                return Err(SourceError::Cancelled);
            }
            let mut page_filters = filters.clone();
            if let Some(l) = last {
                page_filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": l.to_string()}));
            }
            let body = json!({
                "filterGroups": [{"filters": page_filters}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": properties,
                "limit": SEARCH_PAGE,
            });
            let answer = self
                .retry(&format!("a search of `{}`", extract.object), || async {
                    let _turn = self.search.acquire().await;
                    self.conn.call(&self.calls, Method::POST, &path, Some(&body)).await
                })
                .await?;
            let results = results(&answer, &extract.object)?;
            let mut page_last = None;
            for r in results {
                let id = record_id(r, &extract.object)?;
                if last.is_some_and(|l| id <= l) || page_last.is_some_and(|l| id <= l) {
                    return Err(SourceError::Query(format!(
                        "the search of `{}` answered record {id} out of `hs_object_id` order; the answer is not what the protocol says",
                        extract.object
                    )));
                }
                page_last = Some(id);
                self.push(d, r, rows, extract.batch_rows, tx).await?;
            }
            match page_last {
                Some(l) if results.len() >= SEARCH_PAGE || answer["paging"]["next"].is_object() => last = Some(l),
                _ => return Ok(()),
            }
        }
    }

    /// Every record (or every archived one inside the window) through the list endpoint.
    async fn list(
        &self,
        d: &Described,
        extract: &Extract,
        archived: bool,
        rows: &mut Rows,
        tx: &BatchSender,
    ) -> Result<(), SourceError> {
        let properties = Self::wanted(extract).join(",");
        let mut after: Option<String> = None;
        // Every cursor answered: one seen twice would page in a circle.
        let mut seen = std::collections::HashSet::new();
        loop {
            if tx.is_cancelled() {
                return Err(SourceError::Cancelled);
            }
            let mut path = format!(
                "objects/{}?limit={LIST_PAGE}&archived={archived}&properties={}",
                extract.object,
                urlencoding(&properties)
            );
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", urlencoding(a)));
            }
            let what = if archived {
                format!("the archived records of `{}`", extract.object)
            } else {
                format!("the records of `{}`", extract.object)
            };
            let answer = self
                .retry(&what, || self.conn.call(&self.calls, Method::GET, &path, None))
                .await?;
            for r in results(&answer, &extract.object)? {
                if archived && !archived_inside(r, extract) {
                    continue;
                }
                self.push(d, r, rows, extract.batch_rows, tx).await?;
            }
            match answer["paging"]["next"]["after"].as_str() {
                Some(next) if seen.insert(next.to_string()) => after = Some(next.to_string()),
                Some(next) => {
                    return Err(SourceError::Query(format!(
                        "listing `{}` answered the paging cursor `{}` a second time, so the pages would go round for ever; the answer is not what the protocol says",
                        extract.object,
                        next.chars().take(40).collect::<String>()
                    )))
                }
                None => return Ok(()),
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries run out.
    async fn retry<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        self.retry
            .run("a HubSpot read", what, attempt)
            .await
            .map_err(SourceError::Query)
    }
}

/// The `results` of a search or list answer.
fn results<'a>(answer: &'a Value, object: &str) -> Result<&'a Vec<Value>, SourceError> {
    answer["results"].as_array().ok_or_else(|| {
        SourceError::Query(format!(
            "the answer for `{object}` has no `results` list; the answer is not what the protocol says"
        ))
    })
}

/// A record's numeric id.
fn record_id(r: &Value, object: &str) -> Result<u64, SourceError> {
    r["id"].as_str().and_then(|i| i.parse().ok()).ok_or_else(|| {
        SourceError::Query(format!(
            "a record of `{object}` has no numeric `id` ({}); the answer is not what the protocol says",
            r["id"]
        ))
    })
}

/// Whether an archived record was archived inside the extract's window.
fn archived_inside(r: &Value, extract: &Extract) -> bool {
    let Some(from) = extract.from else { return true };
    let Some(at) = r["archivedAt"].as_str().and_then(crate::time::parse_datetime) else {
        // No time to place it by: read it (an upsert of it again does no harm).
        return true;
    };
    at >= from && extract.to.is_none_or(|to| at < to)
}

/// A query value, percent-encoded.
fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_datetimes_take_epoch_milliseconds_too() {
        assert_eq!(cell(Kind::Date, &json!("1706659200000")), "2024-01-31");
        assert_eq!(cell(Kind::Date, &json!("2024-01-31T00:00:00.000Z")), "2024-01-31");
        assert_eq!(cell(Kind::Date, &json!("2024-01-31")), "2024-01-31");
        assert_eq!(
            cell(Kind::DateTime, &json!("1706693415123")),
            "2024-01-31T09:30:15.123Z"
        );
        assert_eq!(
            cell(Kind::DateTime, &json!("2024-01-31T09:30:15.123Z")),
            "2024-01-31T09:30:15.123Z"
        );
        assert_eq!(cell(Kind::Text, &json!("1706693415123")), "1706693415123");
        assert_eq!(cell(Kind::Float, &Value::Null), "");
        assert_eq!(cell(Kind::Bool, &json!(true)), "true");
    }
}

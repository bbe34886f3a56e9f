//! The `hubspot` destination: CRM v3 objects (`contacts`, `companies`, `deals`, custom
//! objects) through the batch endpoints (`../shared/reference/crm-apis.md` §6).
//!
//! - `upsert` and `clear`: `POST /crm/v3/objects/{object}/batch/upsert`, each input
//!   `{idProperty, id, properties, objectWriteTraceId}` with `idProperty` the destination's
//!   key field (a unique property, e.g. `email`) and `id` the row's key; a `clear` sends
//!   every mapped property as `""`, which HubSpot takes as empty.
//! - `update`: `batch/update` by the same unique property; `insert`: `batch/create`.
//! - `delete`: `batch/archive` by record id: the id the snapshot kept from the upsert's
//!   answer, else found first with `batch/read` by the unique property (a key without a
//!   record is already gone).
//!
//! At most 100 inputs a call; two inputs of one key (compared ignoring case, as HubSpot
//! does for emails) never share a call, since HubSpot refuses the whole call: the later
//! ones go in a call of their own. Values are sent as HubSpot wants them, strings: numbers
//! and booleans as their text (`true`/`false`), null as `""`, text as written. A text that
//! reads as a date or a time (`2024-01-31`, `2024-01-31T09:30:00Z`; without an offset, UTC)
//! is sent by the type of its property, which the destination learns with
//! `GET /crm/v3/properties/{object}` the first time a value needs it (one call a run, and
//! none in a run without such values):
//!
//! - `date`: the epoch milliseconds of the day's midnight UTC, as HubSpot keeps dates. A time
//!   that is not a UTC midnight rejects its row (`INVALID_DATE`, naming the property and the
//!   time) rather than being cut to its day: HubSpot refuses such a value itself, and
//!   cutting it is a guess (`2024-01-31T23:30:00-05:00` is the 31st where it was written and
//!   the 1st in UTC); the model says which day it means with a cast to `DATE`;
//! - `datetime`: its epoch milliseconds (a date: its midnight UTC);
//! - any other type: the text as written.
//!
//! Epoch milliseconds written as numbers are sent as they are. The answer is matched to
//! the rows through `objectWriteTraceId` (the row's
//! place in the batch): 200/201 confirm every row, with its record id; 207 rejects the rows
//! its `errors` name (`context.objectWriteTraceId`) with their category and message.
//! 429 with `policyName` `SECONDLY` or `TEN_SECONDLY_ROLLING` is retried (after its
//! `Retry-After`); `DAILY` stops the run (the next one resumes). 5xx and connection errors
//! are retried; a 401 over OAuth is sent again once with a new access token; 401/403 and
//! other 4xx otherwise stop the run. Requests go through the connection layer
//! ([`crate::hubspot::Conn`]: credentials, limits, pacing by HubSpot's rate-limit headers).

use super::{Batch, Op, OpenError, Outcome, SendError};
use crate::config::project::HubspotConnection;
use crate::hubspot::{CallError, Conn};
use crate::plan::DestinationPlan;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Inputs a batch call takes.
pub const MAX_INPUTS: usize = 100;

/// An open HubSpot connection writing one object.
#[derive(Debug)]
pub struct HubspotDestination {
    conn: Arc<Conn>,
    object: String,
    id_property: String,
    /// Requests made, retries and lookups included.
    pub calls: AtomicU64,
    /// The object's property types by name, fetched once, when a value first needs them.
    types: tokio::sync::OnceCell<HashMap<String, String>>,
}

impl HubspotDestination {
    pub fn new(name: &str, c: &HubspotConnection, plan: &DestinationPlan) -> Result<Self, OpenError> {
        let conn = Conn::shared(name, c).map_err(|e| OpenError::setting(name, e.why))?;
        let object = plan
            .object
            .clone()
            .ok_or_else(|| OpenError::setting(name, "the model names no HubSpot object (`destination.object`)"))?;
        Ok(HubspotDestination {
            conn,
            object,
            id_property: plan.key_field.clone(),
            calls: AtomicU64::new(0),
            types: tokio::sync::OnceCell::new(),
        })
    }

    pub fn max_concurrency(&self) -> usize {
        self.conn.max_concurrency
    }

    /// Deletes need the records' HubSpot ids.
    pub fn wants_record_ids(&self, op: Op) -> bool {
        op == Op::Delete
    }

    /// Sends one batch once (no retry; see [`super::retry::deliver`]).
    pub async fn send(&self, batch: &Batch) -> Result<Vec<Outcome>, SendError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.records.len()];
        if batch.op == Op::Delete {
            self.archive(batch, &mut outcomes).await?;
        } else {
            // Rounds in which no key is twice (HubSpot refuses a call with a repeated id).
            let mut round_of: Vec<usize> = Vec::with_capacity(batch.records.len());
            let mut seen: HashMap<String, usize> = HashMap::new();
            for r in &batch.records {
                let n = seen.entry(r.key.to_lowercase()).or_insert(0);
                round_of.push(*n);
                *n += 1;
            }
            let rounds = round_of.iter().copied().max().map_or(0, |m| m + 1);
            for round in 0..rounds {
                let rows: Vec<usize> = (0..batch.records.len()).filter(|i| round_of[*i] == round).collect();
                for chunk in rows.chunks(MAX_INPUTS) {
                    self.write(batch, chunk, &mut outcomes).await?;
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Rejected {
                    code: "no_result".into(),
                    message: "HubSpot's answer did not mention this record".into(),
                })
            })
            .collect())
    }

    /// A record's payload as a JSON object.
    fn payload(payload: &str) -> Result<Map<String, Value>, SendError> {
        match serde_json::from_str::<Value>(payload) {
            Ok(Value::Object(o)) => Ok(o),
            _ => Err(SendError::Fatal("a record's payload is not a JSON object".into())),
        }
    }

    /// The properties of a record's payload, as HubSpot takes them (strings, [`text_for`]
    /// the types), without the key field (it is the input's `id`); for a `clear`, every
    /// property empty. `Err`: why the record cannot be sent.
    fn properties(
        &self,
        payload: Map<String, Value>,
        clear: bool,
        types: Option<&HashMap<String, String>>,
    ) -> Result<Map<String, Value>, String> {
        let mut out = Map::with_capacity(payload.len());
        for (k, v) in payload {
            if k == self.id_property {
                continue;
            }
            let text = if clear {
                String::new()
            } else {
                let kind = types.and_then(|t| t.get(&k)).map(String::as_str);
                text_for(&k, kind, v)?
            };
            out.insert(k, Value::String(text));
        }
        Ok(out)
    }

    /// The object's property types, fetched the first time they are needed in this run.
    async fn types(&self) -> Result<&HashMap<String, String>, SendError> {
        self.types
            .get_or_try_init(|| async {
                match self.conn.properties(&self.calls, &self.object).await {
                    Ok(Some(props)) => Ok(props.into_iter().map(|p| (p.name, p.kind)).collect()),
                    Ok(None) => Err(SendError::Fatal(format!(
                        "connection `{}` has no HubSpot object `{}` (its properties answered 404)",
                        self.conn.name, self.object
                    ))),
                    Err(e) => Err(send_error(e)),
                }
            })
            .await
    }

    /// One call of `batch/upsert|update|create` for the records at `rows` (none when every
    /// one of them is rejected before).
    async fn write(&self, batch: &Batch, rows: &[usize], outcomes: &mut [Option<Outcome>]) -> Result<(), SendError> {
        let (verb, keyed) = match batch.op {
            Op::Upsert | Op::Clear => ("upsert", true),
            Op::Update => ("update", true),
            Op::Insert => ("create", false),
            Op::Delete => unreachable!("deletes are archived"),
        };
        let clear = batch.op == Op::Clear;
        let mut payloads = Vec::with_capacity(rows.len());
        for &i in rows {
            payloads.push(Self::payload(&batch.records[i].payload)?);
        }
        let timed = !clear
            && payloads
                .iter()
                .any(|p| p.iter().any(|(k, v)| *k != self.id_property && looks_timed(v)));
        let types = if timed { Some(self.types().await?) } else { None };
        let mut inputs = Vec::with_capacity(rows.len());
        for (&i, payload) in rows.iter().zip(payloads) {
            let r = &batch.records[i];
            let mut properties = match self.properties(payload, clear, types) {
                Ok(p) => p,
                Err(message) => {
                    outcomes[i] = Some(Outcome::Rejected {
                        code: "INVALID_DATE".into(),
                        message,
                    });
                    continue;
                }
            };
            let mut input = Map::new();
            if keyed {
                input.insert("idProperty".into(), json!(self.id_property));
                input.insert("id".into(), json!(r.key));
            } else {
                properties.insert(self.id_property.clone(), json!(r.key));
            }
            input.insert("properties".into(), Value::Object(properties));
            input.insert("objectWriteTraceId".into(), json!(i.to_string()));
            inputs.push(Value::Object(input));
        }
        if inputs.is_empty() {
            return Ok(());
        }
        let answer = self
            .call(
                &format!("objects/{}/batch/{verb}", self.object),
                json!({ "inputs": inputs }),
            )
            .await?;
        self.settle(&answer, outcomes);
        Ok(())
    }

    /// Archives the records of a delete batch: by the ids the snapshot kept, else by the
    /// ids `batch/read` finds for their keys (a key without a record is already gone).
    async fn archive(&self, batch: &Batch, outcomes: &mut [Option<Outcome>]) -> Result<(), SendError> {
        let mut ids: Vec<Option<String>> = batch.records.iter().map(|r| r.record_id.clone()).collect();
        let unknown: Vec<usize> = (0..ids.len()).filter(|i| ids[*i].is_none()).collect();
        for chunk in unknown.chunks(MAX_INPUTS) {
            let inputs: Vec<Value> = chunk.iter().map(|&i| json!({ "id": batch.records[i].key })).collect();
            let answer = self
                .call(
                    &format!("objects/{}/batch/read", self.object),
                    json!({ "idProperty": self.id_property, "properties": [self.id_property], "inputs": inputs }),
                )
                .await?;
            let found: HashMap<String, String> = answer["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let key = r["properties"][&self.id_property].as_str()?.to_lowercase();
                    Some((key, r["id"].as_str()?.to_string()))
                })
                .collect();
            for &i in chunk {
                match found.get(&batch.records[i].key.to_lowercase()) {
                    Some(id) => ids[i] = Some(id.clone()),
                    None => outcomes[i] = Some(Outcome::Confirmed { record_id: None }),
                }
            }
        }
        let known: Vec<usize> = (0..ids.len()).filter(|i| ids[*i].is_some()).collect();
        for chunk in known.chunks(MAX_INPUTS) {
            let inputs: Vec<Value> = chunk.iter().map(|&i| json!({ "id": ids[i] })).collect();
            self.call(
                &format!("objects/{}/batch/archive", self.object),
                json!({ "inputs": inputs }),
            )
            .await?;
            // HubSpot answers 204 whatever the ids: an id already archived is gone too.
            for &i in chunk {
                outcomes[i] = Some(Outcome::Confirmed { record_id: None });
            }
        }
        Ok(())
    }

    /// The outcomes an answer gives: results confirm, errors reject (by trace id).
    fn settle(&self, answer: &Value, outcomes: &mut [Option<Outcome>]) {
        let n = outcomes.len();
        let row = |t: &Value| t.as_str().and_then(|t| t.parse::<usize>().ok()).filter(|i| *i < n);
        for r in answer["results"].as_array().into_iter().flatten() {
            if let Some(i) = row(&r["objectWriteTraceId"]) {
                outcomes[i] = Some(Outcome::Confirmed {
                    record_id: r["id"].as_str().map(str::to_string),
                });
            }
        }
        for e in answer["errors"].as_array().into_iter().flatten() {
            let code = e["category"].as_str().unwrap_or("error").to_string();
            let message = e["message"]
                .as_str()
                .unwrap_or("rejected without a message")
                .to_string();
            for t in e["context"]["objectWriteTraceId"].as_array().into_iter().flatten() {
                if let Some(i) = row(t) {
                    outcomes[i] = Some(Outcome::Rejected {
                        code: code.clone(),
                        message: message.clone(),
                    });
                }
            }
        }
    }

    /// One POST to `{base}/crm/v3/{path}`; the answer's JSON (`null` for a 204).
    async fn call(&self, path: &str, body: Value) -> Result<Value, SendError> {
        self.conn
            .call(&self.calls, Method::POST, path, Some(&body))
            .await
            .map_err(send_error)
    }
}

fn send_error(e: CallError) -> SendError {
    match e {
        CallError::Transient { message, retry_after } => SendError::Transient { message, retry_after },
        daily @ CallError::Daily(_) => SendError::Fatal(daily.to_string()),
        CallError::Fatal(message) => SendError::Fatal(message),
    }
}

/// A moment read from a value's text.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    Day(NaiveDate),
    At(DateTime<Utc>),
}

/// Whether `v` is a text that starts as a date does (`YYYY-MM-DD`): only such values need
/// the properties' types.
fn looks_timed(v: &Value) -> bool {
    matches!(v, Value::String(s) if dated(s))
}

fn dated(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-'
}

/// The date or time `text` writes: `YYYY-MM-DD`, or a date and time with `T` or a space,
/// seconds and fractions optional, an offset (`Z`, `+01:00`, `+0100`, `+01`) or none (UTC).
/// Anything else is not read as a moment (and is sent as written).
fn when(text: &str) -> Option<When> {
    if !dated(text) {
        return None;
    }
    if text.len() == 10 {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(When::Day);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(When::At(t.to_utc()));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, f) {
            return Some(When::At(t.to_utc()));
        }
    }
    let naive = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, f) {
            return Some(When::At(t.and_utc()));
        }
    }
    None
}

const DAY_MS: i64 = 86_400_000;

/// The text HubSpot takes for `value` in property `property` of type `kind` (`None`: the
/// types were not needed); `Err`: why the row cannot be sent.
fn text_for(property: &str, kind: Option<&str>, value: Value) -> Result<String, String> {
    let s = match value {
        Value::Null => return Ok(String::new()),
        Value::String(s) => s,
        Value::Bool(b) => return Ok(b.to_string()),
        Value::Number(n) => return Ok(n.to_string()),
        other => return Ok(other.to_string()),
    };
    let Some(kind @ ("date" | "datetime")) = kind else {
        return Ok(s);
    };
    let Some(w) = when(&s) else {
        return Ok(s);
    };
    let ms = match w {
        When::Day(d) => d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis()),
        When::At(t) => t.timestamp_millis(),
    };
    if kind == "date" && ms.rem_euclid(DAY_MS) != 0 {
        let at = DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| t.format("%H:%M:%S%.3f").to_string());
        return Err(format!(
            "`{property}` is a HubSpot date property (a day, kept as its midnight UTC), and {s} is at {at} UTC: \
             HubSpot refuses a time of day, so cast the column to DATE in the model's query"
        ));
    }
    Ok(ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_dates_are_sent_as_midnight_utc_milliseconds() {
        let date = |v: Value| text_for("d", Some("date"), v);
        assert_eq!(date(json!("2024-01-31")), Ok("1706659200000".into()));
        assert_eq!(date(json!("2024-01-31T00:00:00Z")), Ok("1706659200000".into()));
        assert_eq!(
            date(json!("2024-01-31 00:00:00")),
            Ok("1706659200000".into()),
            "no offset: UTC"
        );
        assert_eq!(date(json!("1969-12-31")), Ok("-86400000".into()));
        let refused = date(json!("2024-01-31T09:30:00")).unwrap_err();
        assert!(
            refused.contains("`d` is a HubSpot date property") && refused.contains("09:30:00.000 UTC"),
            "{refused}"
        );
        assert!(
            date(json!("2024-01-31T00:00:00+01:00")).is_err(),
            "midnight elsewhere is 23:00 UTC"
        );
        assert_eq!(
            date(json!(1706659200000u64)),
            Ok("1706659200000".into()),
            "numbers as they are"
        );
        assert_eq!(
            date(json!("soon")),
            Ok("soon".into()),
            "HubSpot judges what is not a date"
        );
        assert_eq!(date(json!(null)), Ok(String::new()));
    }

    #[test]
    fn hubspot_datetimes_are_sent_as_epoch_milliseconds_and_other_types_as_written() {
        let datetime = |v: &str| text_for("t", Some("datetime"), json!(v));
        assert_eq!(datetime("2024-01-31T09:30:15.250Z"), Ok("1706693415250".into()));
        assert_eq!(datetime("2024-01-31T10:30:15.25+01:00"), Ok("1706693415250".into()));
        assert_eq!(datetime("2024-01-31 10:30:15+0100"), Ok("1706693415000".into()));
        assert_eq!(datetime("2024-01-31 09:30:15+00"), Ok("1706693415000".into()));
        assert_eq!(datetime("2024-01-31T09:30"), Ok("1706693400000".into()));
        assert_eq!(datetime("2024-01-31 09:30:15.5Z"), Ok("1706693415500".into()));
        assert_eq!(datetime("2024-01-31"), Ok("1706659200000".into()));
        for kind in [None, Some("string"), Some("enumeration")] {
            assert_eq!(text_for("p", kind, json!("2024-01-31")), Ok("2024-01-31".into()));
        }
        assert_eq!(text_for("b", Some("bool"), json!(true)), Ok("true".into()));
        assert_eq!(text_for("n", None, json!(12.5)), Ok("12.5".into()));
    }

    #[test]
    fn hubspot_only_date_like_text_asks_for_the_types() {
        assert!(looks_timed(&json!("2024-01-31")));
        assert!(looks_timed(&json!("2024-01-31T09:30:00Z")));
        for v in [
            json!("2024"),
            json!("jane@x.com"),
            json!(1706659200000u64),
            json!(null),
            json!("12-31-2024"),
        ] {
            assert!(!looks_timed(&v), "{v}");
        }
    }
}

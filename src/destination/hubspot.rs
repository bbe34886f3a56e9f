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
//! and booleans as their text, null as `""`, dates and datetimes as the warehouse wrote them
//! (ISO 8601). The answer is matched to the rows through `objectWriteTraceId` (the row's
//! place in the batch): 200/201 confirm every row, with its record id; 207 rejects the rows
//! its `errors` name (`context.objectWriteTraceId`) with their category and message.
//! 429 with `policyName` `SECONDLY` or `TEN_SECONDLY_ROLLING` is retried (after its
//! `Retry-After`); `DAILY` stops the run (the next one resumes). 5xx and connection errors
//! are retried, 401/403 and other 4xx stop the run.

use super::{Batch, Op, OpenError, Outcome, SendError};
use crate::config::project::HubspotConnection;
use crate::hubspot::{CallError, Conn};
use crate::plan::DestinationPlan;
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

    /// The properties of a record's payload, as HubSpot takes them (strings), without the
    /// key field (it is the input's `id`); for a `clear`, every property empty.
    fn properties(&self, payload: &str, clear: bool) -> Result<Map<String, Value>, SendError> {
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(payload) else {
            return Err(SendError::Fatal("a record's payload is not a JSON object".into()));
        };
        Ok(o.into_iter()
            .filter(|(k, _)| *k != self.id_property)
            .map(|(k, v)| {
                let text = match v {
                    _ if clear => String::new(),
                    Value::Null => String::new(),
                    Value::String(s) => s,
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    other => other.to_string(),
                };
                (k, Value::String(text))
            })
            .collect())
    }

    /// One call of `batch/upsert|update|create` for the records at `rows`.
    async fn write(&self, batch: &Batch, rows: &[usize], outcomes: &mut [Option<Outcome>]) -> Result<(), SendError> {
        let (verb, keyed) = match batch.op {
            Op::Upsert | Op::Clear => ("upsert", true),
            Op::Update => ("update", true),
            Op::Insert => ("create", false),
            Op::Delete => unreachable!("deletes are archived"),
        };
        let mut inputs = Vec::with_capacity(rows.len());
        for &i in rows {
            let r = &batch.records[i];
            let mut properties = self.properties(&r.payload, batch.op == Op::Clear)?;
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
            .map_err(|e| match e {
                CallError::Transient { message, retry_after } => SendError::Transient { message, retry_after },
                daily @ CallError::Daily(_) => SendError::Fatal(daily.to_string()),
                CallError::Fatal(message) => SendError::Fatal(message),
            })
    }
}

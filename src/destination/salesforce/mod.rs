//! The Salesforce destination (docs/salesforce-protocol.md §1-5).
//!
//! Batches of up to 200 records go through sObject Collections with `allOrNone: false`:
//! - upsert by an external ID: `PATCH composite/sobjects/{Object}/{Field}`;
//! - when the key is `Id`, "upsert" (and `clear`) update by `Id` (`PATCH composite/sobjects`):
//!   Salesforce cannot upsert by record Id, so a row whose record does not exist is rejected
//!   (`validate` says so in a note);
//! - update (mode `update`): by `Id`; with an external-ID key, the records' Ids come from the
//!   snapshot (each upsert's answer carries the Id and ebb keeps it) or, for rows it has none
//!   for, from one SOQL query by external ID; a row with no record is rejected (`NOT_FOUND`);
//! - insert: `POST composite/sobjects`;
//! - delete: `DELETE composite/sobjects?ids=…`, Ids found as for update; a record already
//!   gone counts as deleted.
//!
//! Results come back in request order and are matched to rows by position. A record that
//! failed with a transient `statusCode` (`UNABLE_TO_LOCK_ROW`) is sent again on its own a few
//! times before it counts as rejected. Large change sets go through Bulk API 2.0 ([`bulk`]).

pub mod bulk;

use super::{Batch, Op, OpenError, Outcome, Record, SendError};
use crate::config::model::SalesforceApi;
use crate::config::project::SalesforceConnection;
use crate::plan::DestinationPlan;
use crate::salesforce::client::{CallError, Conn};
use reqwest::Method;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Records per sObject Collections call.
pub const COLLECTION_MAX: usize = 200;
/// How often a record failing with a transient status code is sent again within a batch.
const RECORD_RETRIES: u32 = 3;

pub struct SalesforceDestination {
    pub conn: Arc<Conn>,
    object: String,
    key_field: String,
    api: SalesforceApi,
    /// Requests this destination made (a run's API calls).
    pub calls: std::sync::atomic::AtomicU64,
}

/// Per-record status codes worth sending again (docs/salesforce-protocol.md §2).
fn transient_status(code: &str, message: &str) -> bool {
    code == "UNABLE_TO_LOCK_ROW"
        || (code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY" && message.contains("UNABLE_TO_LOCK_ROW"))
}

/// `{"attributes":{"type":…},` + the payload's fields, optionally dropping one field.
fn with_type(object: &str, payload: &str, drop: Option<&str>) -> String {
    let mut out = format!(
        r#"{{"attributes":{{"type":{}}}"#,
        serde_json::Value::String(object.into())
    );
    let inner = payload.trim();
    let inner = &inner[1..inner.len().saturating_sub(1)];
    if drop.is_none() {
        if !inner.trim().is_empty() {
            out.push(',');
            out.push_str(inner);
        }
        out.push('}');
        return out;
    }
    // Dropping a field means parsing the object (rare: inserts keyed on `Id`).
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload).unwrap_or_default();
    for (k, v) in map {
        if Some(k.as_str()) == drop {
            continue;
        }
        out.push(',');
        out.push_str(&serde_json::Value::String(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

/// Quotes a value for a SOQL string literal.
fn soql_quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        match c {
            '\'' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            _ => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// A failed request fails the batch the same way: a transient one is retried, a fatal one
/// stops the run.
impl From<CallError> for SendError {
    fn from(e: CallError) -> SendError {
        match e {
            CallError::Transient { message, retry_after } => SendError::Transient { message, retry_after },
            CallError::Fatal(m) => SendError::Fatal(m),
        }
    }
}

impl SalesforceDestination {
    pub fn new(
        name: &str,
        c: &SalesforceConnection,
        project_dir: &Path,
        plan: &DestinationPlan,
    ) -> Result<SalesforceDestination, OpenError> {
        Ok(SalesforceDestination {
            conn: Conn::shared(name, c, project_dir)?,
            object: plan.object.clone().ok_or_else(|| OpenError::NoObject {
                connection: name.to_string(),
            })?,
            key_field: plan.key_field.clone(),
            api: plan.api.unwrap_or(SalesforceApi::Auto),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn max_concurrency(&self) -> usize {
        self.conn.concurrency
    }

    fn keyed_on_id(&self) -> bool {
        self.key_field.eq_ignore_ascii_case("Id")
    }

    /// Whether the engine should look up the records' Ids for `op` before sending.
    pub fn wants_record_ids(&self, op: Op) -> bool {
        !self.keyed_on_id() && matches!(op, Op::Update | Op::Delete)
    }

    /// Records per batch for `op` when `pending` records of it are to be sent: 200 through
    /// Collections; through Bulk API 2.0 (`api: bulk`, or `auto` at or above the
    /// connection's `bulk_threshold`), one job of up to 10,000 records at a time.
    pub fn batch_size(&self, op: Op, pending: u64, model_batch: usize) -> usize {
        if self.uses_bulk(op, pending) {
            bulk::JOB_RECORDS
        } else {
            model_batch.clamp(1, COLLECTION_MAX)
        }
    }

    fn uses_bulk(&self, op: Op, pending: u64) -> bool {
        // Clears update by Id or upsert; Bulk handles both, but keep them synchronous.
        if op == Op::Clear {
            return false;
        }
        match self.api {
            SalesforceApi::Bulk => true,
            SalesforceApi::Collections => false,
            SalesforceApi::Auto => pending >= self.conn.bulk_threshold,
        }
    }

    pub async fn send(&self, batch: &Batch) -> Result<Vec<Outcome>, SendError> {
        if batch.records.len() > COLLECTION_MAX {
            return bulk::send(self, batch).await;
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.records.len()];
        let mut todo: Vec<usize> = (0..batch.records.len()).collect();
        let mut ids: HashMap<usize, String> = HashMap::new();
        // Ids for updates and deletes keyed on an external ID.
        if self.wants_record_ids(batch.op) {
            let missing: Vec<usize> = todo
                .iter()
                .copied()
                .filter(|&i| batch.records[i].record_id.is_none())
                .collect();
            let found = self
                .lookup_ids(
                    &missing
                        .iter()
                        .map(|&i| batch.records[i].key.as_str())
                        .collect::<Vec<_>>(),
                )
                .await?;
            for &i in &todo {
                let r = &batch.records[i];
                if let Some(id) = r.record_id.clone().or_else(|| found.get(&r.key).cloned()) {
                    ids.insert(i, id);
                }
            }
            todo.retain(|i| {
                if ids.contains_key(i) {
                    return true;
                }
                outcomes[*i] = Some(if batch.op == Op::Delete {
                    // Nothing to delete: the record is gone already.
                    Outcome::Confirmed { record_id: None }
                } else {
                    Outcome::Rejected {
                        code: "NOT_FOUND".into(),
                        message: format!(
                            "no {} record has {} = {}",
                            self.object, self.key_field, batch.records[*i].key
                        ),
                    }
                });
                false
            });
        }
        let mut attempt = 0;
        while !todo.is_empty() {
            attempt += 1;
            let results = self.collection_call(batch.op, &batch.records, &todo, &ids).await?;
            let mut again = Vec::new();
            for (&i, res) in todo.iter().zip(results) {
                match res {
                    Ok(id) => outcomes[i] = Some(Outcome::Confirmed { record_id: id }),
                    Err((code, message)) => {
                        if transient_status(&code, &message) && attempt <= RECORD_RETRIES {
                            again.push(i);
                        } else if batch.op == Op::Delete && code == "ENTITY_IS_DELETED" {
                            outcomes[i] = Some(Outcome::Confirmed { record_id: None });
                        } else {
                            outcomes[i] = Some(Outcome::Rejected { code, message });
                        }
                    }
                }
            }
            if !again.is_empty() {
                tracing::info!(
                    event = "records_retried",
                    object = %self.object,
                    records = again.len(),
                    attempt,
                    "records Salesforce could not lock are sent again"
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            todo = again;
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(Outcome::Rejected {
                    code: "NOT_SENT".into(),
                    message: "internal: no outcome".into(),
                })
            })
            .collect())
    }

    /// One Collections call for `records[idx]`; per record: the Id, or the error.
    #[allow(clippy::type_complexity)]
    async fn collection_call(
        &self,
        op: Op,
        records: &[Record],
        idx: &[usize],
        ids: &HashMap<usize, String>,
    ) -> Result<Vec<Result<Option<String>, (String, String)>>, SendError> {
        let conn = &self.conn;
        let object = &self.object;
        let (method, path, body) = match op {
            Op::Delete => {
                let list: Vec<String> = idx
                    .iter()
                    .map(|i| ids.get(i).cloned().unwrap_or_else(|| records[*i].key.clone()))
                    .collect();
                (
                    Method::DELETE,
                    conn.data_path(&format!("composite/sobjects?ids={}&allOrNone=false", list.join(","))),
                    None,
                )
            }
            Op::Insert => {
                let drop = self.keyed_on_id().then_some(self.key_field.as_str());
                let recs: Vec<String> = idx
                    .iter()
                    .map(|i| with_type(object, &records[*i].payload, drop))
                    .collect();
                (
                    Method::POST,
                    conn.data_path("composite/sobjects"),
                    Some(format!(r#"{{"allOrNone":false,"records":[{}]}}"#, recs.join(","))),
                )
            }
            Op::Upsert | Op::Clear if !self.keyed_on_id() => {
                let recs: Vec<String> = idx
                    .iter()
                    .map(|i| with_type(object, &records[*i].payload, None))
                    .collect();
                (
                    Method::PATCH,
                    conn.data_path(&format!("composite/sobjects/{object}/{}", self.key_field)),
                    Some(format!(r#"{{"allOrNone":false,"records":[{}]}}"#, recs.join(","))),
                )
            }
            // Update by Id: keyed on Id, or Ids looked up for an external-ID key.
            Op::Upsert | Op::Clear | Op::Update => {
                let recs: Vec<String> = idx
                    .iter()
                    .map(|i| {
                        let base = with_type(object, &records[*i].payload, None);
                        match ids.get(i) {
                            Some(id) if !self.keyed_on_id() => {
                                format!(
                                    "{},\"Id\":{}}}",
                                    &base[..base.len() - 1],
                                    serde_json::Value::String(id.clone())
                                )
                            }
                            _ => base,
                        }
                    })
                    .collect();
                (
                    Method::PATCH,
                    conn.data_path("composite/sobjects"),
                    Some(format!(r#"{{"allOrNone":false,"records":[{}]}}"#, recs.join(","))),
                )
            }
        };
        let (_, answer) = conn.json(&self.calls, method, &path, body).await?;
        let Some(items) = answer.as_array() else {
            return Err(SendError::Fatal(format!(
                "{path} on connection `{}`: expected an array of results, got {}",
                conn.name,
                answer.to_string().chars().take(200).collect::<String>()
            )));
        };
        if items.len() != idx.len() {
            return Err(SendError::Fatal(format!(
                "{path} on connection `{}`: {} results for {} records",
                conn.name,
                items.len(),
                idx.len()
            )));
        }
        // Each result is `{"id", "success": bool, "errors": [...]}`
        // (docs/salesforce-protocol.md §2): anything else confirms nothing and fails the
        // batch.
        let malformed = |n: usize, what: &str| {
            SendError::Fatal(format!(
                "{path} on connection `{}`: result {} of {} {what}; nothing in the batch is confirmed",
                conn.name,
                n + 1,
                idx.len()
            ))
        };
        for (n, r) in items.iter().enumerate() {
            if !r.is_object() {
                return Err(malformed(n, "is not an object"));
            }
            match (r.get("success"), r.get("id")) {
                (Some(serde_json::Value::Bool(true)), Some(serde_json::Value::String(_)) | None) => {}
                (Some(serde_json::Value::Bool(true)), Some(_)) => {
                    return Err(malformed(n, "has an `id` that is not a string"))
                }
                (Some(serde_json::Value::Bool(false)), _) => {}
                _ => return Err(malformed(n, "has no boolean `success`")),
            }
        }
        Ok(items
            .iter()
            .map(|r| {
                if r["success"].as_bool() == Some(true) {
                    Ok(r["id"].as_str().map(str::to_string))
                } else {
                    let e = r["errors"].get(0).cloned().unwrap_or_default();
                    let mut message = e["message"]
                        .as_str()
                        .unwrap_or("rejected without a message")
                        .to_string();
                    if let Some(fields) = e["fields"].as_array().filter(|f| !f.is_empty()) {
                        let names: Vec<&str> = fields.iter().filter_map(|f| f.as_str()).collect();
                        message = format!("{message} (fields: {})", names.join(", "));
                    }
                    Err((e["statusCode"].as_str().unwrap_or("UNKNOWN").to_string(), message))
                }
            })
            .collect())
    }

    /// The Ids of the records whose key field holds `keys`, by SOQL (chunks of 200 keys).
    pub async fn lookup_ids(&self, keys: &[&str]) -> Result<HashMap<String, String>, SendError> {
        Ok(self
            .current(keys, &[])
            .await?
            .into_iter()
            .filter_map(|(k, r)| Some((k, r.get("Id")?.as_str()?.to_string())))
            .collect())
    }

    /// The records whose key field holds `keys`, with `Id` and `fields`, by SOQL: one query
    /// per 200 keys (and its further pages, if Salesforce cuts the answer). A key without a
    /// record is missing from the map.
    pub async fn current(
        &self,
        keys: &[&str],
        fields: &[String],
    ) -> Result<HashMap<String, serde_json::Map<String, serde_json::Value>>, SendError> {
        let mut found = HashMap::new();
        let mut select = vec!["Id".to_string()];
        if self.key_field != "Id" {
            select.push(self.key_field.clone());
        }
        for f in fields {
            if !select.iter().any(|s| s.eq_ignore_ascii_case(f)) {
                select.push(f.clone());
            }
        }
        for chunk in keys.chunks(200) {
            if chunk.is_empty() {
                continue;
            }
            let list: Vec<String> = chunk.iter().map(|k| soql_quote(k)).collect();
            let soql = format!(
                "SELECT {} FROM {o} WHERE {f} IN ({})",
                select.join(", "),
                list.join(","),
                f = self.key_field,
                o = self.object
            );
            let mut path = self.conn.data_path(&format!("query?q={}", urlencode(&soql)));
            loop {
                let (_, page) = self.conn.json(&self.calls, Method::GET, &path, None).await?;
                // Without `records` the answer says nothing of which records exist (a delete
                // would count them as gone): not an answer.
                let Some(records) = page.get("records").and_then(|r| r.as_array()) else {
                    return Err(SendError::Fatal(format!(
                        "SOQL query on connection `{}`: the answer has no `records` list",
                        self.conn.name
                    )));
                };
                for r in records {
                    let key = match &r[&self.key_field] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => continue,
                        other => other.to_string(),
                    };
                    if let Some(o) = r.as_object() {
                        let mut o = o.clone();
                        o.remove("attributes");
                        found.insert(key, o);
                    }
                }
                match page["nextRecordsUrl"].as_str() {
                    Some(next) if page["done"].as_bool() == Some(false) => path = next.to_string(),
                    _ => break,
                }
            }
        }
        Ok(found)
    }
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_type() {
        assert_eq!(
            with_type("Contact", r#"{"A":1,"Id":"003"}"#, None),
            r#"{"attributes":{"type":"Contact"},"A":1,"Id":"003"}"#
        );
        assert_eq!(with_type("Contact", "{}", None), r#"{"attributes":{"type":"Contact"}}"#);
        assert_eq!(
            with_type("Contact", r#"{"A":1,"Id":"003"}"#, Some("Id")),
            r#"{"attributes":{"type":"Contact"},"A":1}"#
        );
    }

    #[test]
    fn soql_literals_are_escaped() {
        assert_eq!(soql_quote("O'Brien\\x"), r"'O\'Brien\\x'");
    }

    #[test]
    fn lock_errors_are_transient() {
        assert!(transient_status(
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access"
        ));
        assert!(transient_status(
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "execution of AfterUpdate caused by: UNABLE_TO_LOCK_ROW"
        ));
        assert!(!transient_status(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "bad value"
        ));
    }
}

//! sObject Collections (docs/salesforce-protocol.md §2): create
//! (`POST composite/sobjects`), update (`PATCH composite/sobjects`), upsert
//! (`PATCH composite/sobjects/{Object}/{ExtIdField}`) and delete
//! (`DELETE composite/sobjects?ids=…`), at most 200 records each, results in request
//! order, per-record errors `{"statusCode", "message", "fields"}`, and `allOrNone`
//! rollback. Also [`write`], the one-record write the REST and Bulk resources share.
//!
//! Choices where the documentation is silent ([U]):
//! - over 200 records: 400 `EXCEEDED_ID_LIMIT`, "record limit reached. cannot submit more
//!   than 200 records into this call" (the platform's text for this limit);
//! - a record without `attributes.type`: 400 `INVALID_TYPE`, "Must send a concrete entity
//!   type."; an unknown type: 400 `INVALID_TYPE`; more than 10 chunks of types: 400;
//! - one external ID twice in an upsert request: every record carrying it fails with
//!   `DUPLICATE_EXTERNAL_ID` ("Duplicate external id specified: …"), none is written, so a
//!   client cannot depend on which one would win; an external ID that matches several
//!   stored records (a non-unique field) fails that record with `DUPLICATE_EXTERNAL_ID` too;
//! - a record without its key (update `id`, upsert external ID): `MISSING_ARGUMENT`;
//! - failed upsert results carry no `created` (the docs show it on successes only).

use super::api::{error, json_error, Shr};
use super::store::{Access, Failure};
use super::value::{coerce, Input, RecordError};
use super::State;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Records (or ids) per request.
const MAX_RECORDS: usize = 200;
/// Runs of one type per request.
const MAX_CHUNKS: usize = 10;

/// The write of one record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    Create,
    /// The fields carry `Id`.
    Update,
    /// By this (canonical) external-ID field, which the fields carry.
    Upsert(&'a str),
    /// The fields carry `Id`.
    Delete,
}

/// A successful write.
pub(crate) struct Done {
    pub id: String,
    pub created: bool,
}

/// Now, to the millisecond (what datetimes keep).
pub(crate) fn now() -> DateTime<Utc> {
    let n = Utc::now();
    DateTime::from_timestamp_millis(n.timestamp_millis()).unwrap_or(n)
}

fn lock_error(id: Option<&str>) -> RecordError {
    RecordError::new(
        "UNABLE_TO_LOCK_ROW",
        format!(
            "unable to obtain exclusive access to this record or 1 records: {}",
            id.unwrap_or("")
        ),
        &[],
    )
}

/// Writes one record of table `t`: checks, then the `UNABLE_TO_LOCK_ROW` fault, then the
/// store. Changes go to `undo`.
pub(crate) fn write(
    state: &mut State,
    t: usize,
    op: Op<'_>,
    fields: &[(&str, Input<'_>)],
    now: DateTime<Utc>,
    undo: &mut Vec<super::store::Undo>,
) -> Result<Done, Failure> {
    match op {
        Op::Create => {
            let values = state
                .store
                .prepare(t, Access::Create, fields.iter().copied())
                .map_err(|errors| Failure { id: None, errors })?;
            if state.lock_fails() {
                return Err(Failure::new(None, lock_error(None)));
            }
            let id = state.store.create(t, values, now, None, undo)?;
            Ok(Done { id, created: true })
        }
        Op::Update | Op::Delete => {
            let (ids, rest): (Vec<_>, Vec<_>) = fields.iter().copied().partition(|(k, _)| k.eq_ignore_ascii_case("id"));
            let call = if matches!(op, Op::Delete) {
                "a delete"
            } else {
                "an update"
            };
            let Some(raw) = ids.first().and_then(|(_, v)| v.text()) else {
                return Err(Failure::new(
                    None,
                    RecordError::new("MISSING_ARGUMENT", format!("Id not specified in {call} call"), &["Id"]),
                ));
            };
            let id = state.store.parse_id(t, raw).map_err(|e| Failure::new(None, e))?;
            state.store.existing(t, &id).map_err(|e| Failure::new(None, e))?;
            if matches!(op, Op::Delete) {
                if state.lock_fails() {
                    return Err(Failure::new(Some(id.clone()), lock_error(Some(&id))));
                }
                state.store.delete(t, &id, now, undo)?;
                return Ok(Done { id, created: false });
            }
            let values = state.store.prepare(t, Access::Update, rest).map_err(|errors| Failure {
                id: Some(id.clone()),
                errors,
            })?;
            if state.lock_fails() {
                return Err(Failure::new(Some(id.clone()), lock_error(Some(&id))));
            }
            state.store.update(t, &id, values, now, undo)?;
            Ok(Done { id, created: false })
        }
        Op::Upsert(ext) => {
            let Some(field) = state.store.tables[t].object.field(ext) else {
                return Err(Failure::new(None, RecordError::new("INVALID_FIELD", ext, &[ext])));
            };
            let given = fields
                .iter()
                .find(|(k, v)| k.eq_ignore_ascii_case(ext) && !matches!(v, Input::Json(Value::Null)));
            let Some((_, input)) = given else {
                return Err(Failure::new(
                    None,
                    RecordError::new(
                        "MISSING_ARGUMENT",
                        format!("{} not specified", field.name),
                        &[&field.name],
                    ),
                ));
            };
            let key = coerce(field, *input).map_err(|e| Failure::new(None, e))?;
            let matches = state.store.find(t, &field.name, &key);
            match matches.as_slice() {
                [] => write(state, t, Op::Create, fields, now, undo),
                [id] => {
                    let id = id.clone();
                    let values = state
                        .store
                        .prepare(t, Access::Update, fields.iter().copied())
                        .map_err(|errors| Failure {
                            id: Some(id.clone()),
                            errors,
                        })?;
                    if state.lock_fails() {
                        return Err(Failure::new(Some(id.clone()), lock_error(Some(&id))));
                    }
                    state.store.update(t, &id, values, now, undo)?;
                    Ok(Done { id, created: false })
                }
                many => Err(Failure::new(
                    None,
                    RecordError::new(
                        "DUPLICATE_EXTERNAL_ID",
                        format!(
                            "more than one record found for external id field: [{}]",
                            many.join(", ")
                        ),
                        &[&field.name],
                    ),
                )),
            }
        }
    }
}

/// One record of a request: its table, its write, its fields, or a failure decided before
/// any write.
struct Item<'a> {
    t: usize,
    op: Op<'a>,
    fields: Vec<(&'a str, Input<'a>)>,
    failed: Option<Failure>,
}

/// The outcome of each record's write, in request order.
type Outcomes = Vec<Result<Done, Failure>>;

/// Runs the items in order, rolling back under `allOrNone`. The caller renders the
/// outcomes with [`render`] once it has let go of the org's lock.
fn run(state: &mut State, all_or_none: bool, items: Vec<Item<'_>>) -> Outcomes {
    let now = now();
    let mut undo = Vec::new();
    let mut outcomes: Vec<Result<Done, Failure>> = Vec::with_capacity(items.len());
    for item in items {
        outcomes.push(match item.failed {
            Some(f) => Err(f),
            None => write(state, item.t, item.op, &item.fields, now, &mut undo),
        });
    }
    if all_or_none && outcomes.iter().any(Result::is_err) {
        state.store.rollback(undo);
        for o in &mut outcomes {
            if let Ok(done) = o {
                let rolled_back = RecordError::new(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    &[],
                );
                // A rolled-back create has no record, so no id.
                let id = (!done.created).then(|| done.id.clone());
                *o = Err(Failure::new(id, rolled_back));
            }
        }
    }
    outcomes
}

/// The results array of a collections write.
fn render(outcomes: Outcomes, upsert: bool) -> Response {
    let results: Vec<Value> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(done) if upsert => json!({"id": done.id, "success": true, "errors": [], "created": done.created}),
            Ok(done) => json!({"id": done.id, "success": true, "errors": []}),
            Err(f) => {
                let errors: Vec<Value> = f.errors.iter().map(RecordError::collection_json).collect();
                match f.id {
                    Some(id) => json!({"id": id, "success": false, "errors": errors}),
                    None => json!({"success": false, "errors": errors}),
                }
            }
        })
        .collect();
    Json(Value::Array(results)).into_response()
}

fn too_many() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )
}

/// `{"allOrNone": bool, "records": [object, …]}`.
#[allow(clippy::result_large_err)] // the error is the response to send, built once per request
fn parse_body(body: &Bytes) -> Result<(bool, Vec<Value>), Response> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let malformed = |what: &str| error(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", what);
    let all_or_none = match v.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(malformed("allOrNone must be a boolean")),
    };
    let Some(Value::Array(records)) = v.as_object_mut().and_then(|m| m.remove("records")) else {
        return Err(malformed("the body must be an object with a `records` array"));
    };
    if records.len() > MAX_RECORDS {
        return Err(too_many());
    }
    if !records.iter().all(Value::is_object) {
        return Err(malformed("every record must be a JSON object"));
    }
    Ok((all_or_none, records))
}

/// The tables of the records, from `attributes.type`.
#[allow(clippy::result_large_err)] // the error is the response to send, built once per request
fn types(state: &State, records: &[Value]) -> Result<Vec<usize>, Response> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Some(ty) = r.pointer("/attributes/type").and_then(Value::as_str) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                "Must send a concrete entity type.",
            ));
        };
        let Some(t) = state.store.table(ty) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{ty}' is not supported."),
            ));
        };
        out.push(t);
    }
    let chunks = out.windows(2).filter(|w| w[0] != w[1]).count() + usize::from(!out.is_empty());
    if chunks > MAX_CHUNKS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "INVALID_BATCH_REQUEST",
            "Cannot have more than 10 chunks in a single operation. Please rearrange the data to reduce chunking.",
        ));
    }
    Ok(out)
}

fn fields(record: &Value) -> Vec<(&str, Input<'_>)> {
    record
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "attributes")
                .map(|(k, v)| (k.as_str(), Input::Json(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// `POST composite/sobjects`.
pub(crate) async fn create(axum::extract::State(shared): Shr, body: Bytes) -> Response {
    create_or_update(&shared, &body, Op::Create)
}

/// `PATCH composite/sobjects`: every record needs `attributes.type` and `id`.
pub(crate) async fn update(axum::extract::State(shared): Shr, body: Bytes) -> Response {
    create_or_update(&shared, &body, Op::Update)
}

/// Creates or updates records of the types their `attributes` name.
fn create_or_update(shared: &super::Shared, body: &Bytes, op: Op) -> Response {
    let (all_or_none, records) = match parse_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut state = shared.lock();
    let tables = match types(&state, &records) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let items = records
        .iter()
        .zip(tables)
        .map(|(r, t)| Item {
            t,
            op,
            fields: fields(r),
            failed: None,
        })
        .collect();
    let outcomes = run(&mut state, all_or_none, items);
    drop(state);
    render(outcomes, false)
}

/// `PATCH composite/sobjects/{Object}/{ExtIdField}` (v46+): external IDs only, never `Id`.
pub(crate) async fn upsert(
    axum::extract::State(shared): Shr,
    Path((_v, object, field)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    // Parsed before the org's lock is taken, so concurrent requests parse in parallel; a
    // bad body is still reported after a bad object or field, as before.
    let parsed = parse_body(&body);
    let mut state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return super::api::not_found();
    };
    let object_name = state.store.tables[t].object.name.clone();
    let ext = match state.store.tables[t].object.field(&field) {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            )
        }
        Some(f) if !f.external_id => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!(
                    "Field name provided, {} is not an External ID or indexed field for {object_name}",
                    f.name
                ),
            )
        }
        Some(f) => f.clone(),
    };
    let (all_or_none, records) = match parsed {
        Ok(b) => b,
        Err(r) => return r,
    };
    let tables = match types(&state, &records) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if tables.iter().any(|rt| *rt != t) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!("every record must be of the type in the URI, {object_name}"),
        );
    }
    // Keys of the records, to fail those that share one.
    let keys: Vec<Option<String>> = records
        .iter()
        .map(|r| {
            let (_, v) = r.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(&ext.name))?;
            let stored = coerce(&ext, Input::Json(v)).ok()?;
            Some(state.store.index_key(t, &ext.name, &stored))
        })
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for k in keys.iter().flatten() {
        *seen.entry(k.as_str()).or_default() += 1;
    }
    let items = records
        .iter()
        .zip(&keys)
        .map(|(r, key)| {
            let duplicate = key.as_deref().is_some_and(|k| seen.get(k).copied().unwrap_or(0) > 1);
            let failed = duplicate.then(|| {
                let shown = r
                    .as_object()
                    .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(&ext.name)))
                    .map(|(_, v)| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    .unwrap_or_default();
                Failure::new(
                    None,
                    RecordError::new(
                        "DUPLICATE_EXTERNAL_ID",
                        format!("Duplicate external id specified: {shown}"),
                        &[&ext.name],
                    ),
                )
            });
            Item {
                t,
                op: Op::Upsert(&ext.name),
                fields: fields(r),
                failed,
            }
        })
        .collect();
    let outcomes = run(&mut state, all_or_none, items);
    drop(state);
    render(outcomes, true)
}

#[derive(serde::Deserialize)]
pub(crate) struct DeleteParams {
    ids: Option<String>,
    #[serde(rename = "allOrNone")]
    all_or_none: Option<String>,
}

/// `DELETE composite/sobjects?ids=…&allOrNone=…`: ids of any types.
pub(crate) async fn delete(axum::extract::State(shared): Shr, Query(params): Query<DeleteParams>) -> Response {
    let ids: Vec<String> = params
        .ids
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        return error(StatusCode::BAD_REQUEST, "MISSING_ARGUMENT", "ids parameter is required");
    }
    if ids.len() > MAX_RECORDS {
        return too_many();
    }
    let all_or_none = match params.all_or_none.as_deref() {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("true") => true,
        Some(s) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                "allOrNone must be true or false",
            )
        }
    };
    let mut state = shared.lock();
    let items = ids
        .iter()
        .map(|raw| {
            let t = state
                .store
                .tables
                .iter()
                .position(|t| raw.starts_with(&t.object.key_prefix))
                .filter(|_| super::id::parse(raw).is_some());
            Item {
                t: t.unwrap_or(0),
                op: Op::Delete,
                fields: vec![("Id", Input::Text(raw.as_str()))],
                failed: t.is_none().then(|| {
                    Failure::new(
                        None,
                        RecordError::new("MALFORMED_ID", format!("malformed id {raw}"), &[]),
                    )
                }),
            }
        })
        .collect();
    let outcomes = run(&mut state, all_or_none, items);
    drop(state);
    render(outcomes, false)
}

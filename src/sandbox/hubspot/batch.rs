//! `POST /crm/v3/objects/{objectType}/batch/{upsert,create,update,archive,read}`.
//!
//! A call has at most 100 inputs, and no id twice (upsert: the `id` value of each
//! `idProperty`; update, archive, read: the record id): either breaks the whole call, 400
//! `VALIDATION_ERROR`. Otherwise each input succeeds or fails on its own: 200 (201 for
//! create) when all succeed, 207 with `numErrors` and `errors` when some fail. Each error's
//! `context` holds the input's `objectWriteTraceId` (and its `ids`), and each result
//! carries the `objectWriteTraceId` it was sent with, so a client matches both to its
//! rows. Archive answers 204, whatever the ids.

use super::schema::{check, Invalid, ObjectType};
use super::store::Conflict;
use super::{parse_body, timestamp, Hub, HubError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

const MAX_INPUTS: usize = 100;

#[derive(Deserialize)]
struct Batch {
    inputs: Vec<Input>,
    /// batch/read: the properties to return.
    #[serde(default)]
    properties: Option<Vec<String>>,
    /// batch/read: look the ids up by this unique property.
    #[serde(default, rename = "idProperty")]
    id_property: Option<String>,
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default, rename = "idProperty")]
    id_property: Option<String>,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default, rename = "objectWriteTraceId")]
    trace: Option<String>,
}

impl Input {
    /// The `id`, a string or a number, as a string.
    fn id(&self) -> Option<String> {
        match &self.id {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Parses the body and enforces what breaks a whole call: too many inputs, and the same
/// key twice (`key` gives an input's key; `None` is a 400 of its own).
fn parse(body: &[u8], key: impl Fn(&Input) -> Result<Option<String>, HubError>) -> Result<Batch, HubError> {
    let batch: Batch = parse_body(body)?;
    if batch.inputs.len() > MAX_INPUTS {
        return Err(HubError::validation(format!(
            "Batch input limit exceeded: {} inputs were sent and the maximum is {MAX_INPUTS}",
            batch.inputs.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut dup = BTreeSet::new();
    for input in &batch.inputs {
        if let Some(k) = key(input)? {
            if !seen.insert(k.clone()) {
                dup.insert(k);
            }
        }
    }
    if !dup.is_empty() {
        let ids: Vec<String> = dup.into_iter().collect();
        let mut context = Map::new();
        context.insert("ids".into(), json!(ids));
        return Err(HubError::Validation {
            message: format!(
                "Duplicate IDs found in batch input: [{}]. IDs must be unique",
                ids.join(", ")
            ),
            context,
        });
    }
    Ok(batch)
}

/// An input's failure, in the `errors` of a 207.
fn input_error(category: &str, message: String, input: &Input, details: Vec<Value>) -> Value {
    let mut context = Map::new();
    if let Some(t) = &input.trace {
        context.insert("objectWriteTraceId".into(), json!([t]));
    }
    if let Some(id) = input.id() {
        context.insert("ids".into(), json!([id]));
    }
    json!({
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": details,
        "links": {},
    })
}

fn invalid_error(invalid: &[Invalid], input: &Input) -> Value {
    let listed: Vec<Value> = invalid
        .iter()
        .map(|i| {
            json!({"isValid": false, "message": i.message, "error": i.code, "name": i.property,
                   "localizedErrorMessage": i.message})
        })
        .collect();
    let details = invalid
        .iter()
        .map(|i| {
            json!({"message": i.message, "code": i.code, "in": i.property,
                        "context": {"propertyName": [i.property]}})
        })
        .collect();
    input_error(
        "VALIDATION_ERROR",
        format!("Property values were not valid: {}", Value::Array(listed)),
        input,
        details,
    )
}

fn conflict_error(c: &Conflict, input: &Input) -> Value {
    input_error(
        "CONFLICT",
        format!(
            "A record already has that value of {}. Existing ID: {}",
            c.property, c.existing
        ),
        input,
        vec![json!({"message": "unique value taken", "code": "CONFLICT", "in": c.property})],
    )
}

/// Checks every property of an input: the stored values, or every reason they do not fit.
fn values(ty: &ObjectType, input: &Input) -> Result<Vec<(String, String)>, Vec<Invalid>> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (name, value) in &input.properties {
        match check(ty, name, value) {
            Ok(v) => ok.push((name.clone(), v)),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() {
        Ok(ok)
    } else {
        Err(bad)
    }
}

/// The answer: `success` (or 207 when there are errors) with the batch envelope.
fn answer(
    success: StatusCode,
    started: chrono::DateTime<chrono::Utc>,
    results: Vec<Value>,
    errors: Vec<Value>,
) -> Response {
    let now = timestamp(chrono::Utc::now());
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "requestedAt": timestamp(started),
        "startedAt": timestamp(started),
        "completedAt": now,
        "links": {},
    });
    let status = if errors.is_empty() {
        success
    } else {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    (status, Json(body)).into_response()
}

fn with_trace(mut result: Value, input: &Input) -> Value {
    if let Some(t) = &input.trace {
        result["objectWriteTraceId"] = json!(t);
    }
    result
}

/// The unique, writable property an upsert or lookup names.
fn id_property(ty: &ObjectType, name: &str, writable: bool) -> Result<(), HubError> {
    match ty.property(name) {
        Some(p) if p.unique && !(writable && p.read_only) => Ok(()),
        Some(_) => Err(HubError::validation(format!(
            "{name} is not a unique property of {}; idProperty must name a property with hasUniqueValue",
            ty.name
        ))),
        None => Err(HubError::validation(format!("Property \"{name}\" does not exist"))),
    }
}

/// `batch/upsert`: `idProperty` (unique) and `id` (its value) find the record to update,
/// or the one to create with that value.
pub(crate) async fn upsert(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    body: Bytes,
) -> Result<Response, HubError> {
    let started = chrono::Utc::now();
    let mut state = hub.lock();
    let t = state.store.index(&object)?;
    let ty = state.store.ty(t);
    let batch = parse(&body, |i| {
        let prop = i
            .id_property
            .as_deref()
            .ok_or_else(|| HubError::validation("every input of an upsert needs an idProperty"))?;
        id_property(ty, prop, true)?;
        let id = i
            .id()
            .ok_or_else(|| HubError::validation("every input of an upsert needs an id"))?;
        Ok(Some(id))
    })?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &batch.inputs {
        let (Some(prop), Some(id)) = (input.id_property.clone(), input.id()) else {
            continue;
        };
        let mut props = match values(state.store.ty(t), input) {
            Ok(p) => p,
            Err(bad) => {
                errors.push(invalid_error(&bad, input));
                continue;
            }
        };
        props.retain(|(name, _)| *name != prop);
        let existing = state.store.find_unique(t, &prop, &id);
        let written = match existing {
            Some(record) => state.store.update(t, record, &props, started).map(|_| (record, false)),
            None => {
                props.push((prop.clone(), id.clone()));
                state.store.create(t, &props, started).map(|record| (record, true))
            }
        };
        match written {
            Ok((record, new)) => {
                let also: Vec<String> = props.iter().map(|(n, _)| n.clone()).chain([prop]).collect();
                let mut result = state.store.render(t, record, None, &also);
                result["new"] = json!(new);
                results.push(with_trace(result, input));
            }
            Err(c) => errors.push(conflict_error(&c, input)),
        }
    }
    Ok(answer(StatusCode::OK, started, results, errors))
}

/// `batch/create`: 201, each input a new record.
pub(crate) async fn create(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    body: Bytes,
) -> Result<Response, HubError> {
    let started = chrono::Utc::now();
    let mut state = hub.lock();
    let t = state.store.index(&object)?;
    let batch = parse(&body, |_| Ok(None))?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &batch.inputs {
        match values(state.store.ty(t), input) {
            Err(bad) => errors.push(invalid_error(&bad, input)),
            Ok(props) => match state.store.create(t, &props, started) {
                Ok(record) => {
                    let also: Vec<String> = props.iter().map(|(n, _)| n.clone()).collect();
                    results.push(with_trace(state.store.render(t, record, None, &also), input));
                }
                Err(c) => errors.push(conflict_error(&c, input)),
            },
        }
    }
    Ok(answer(StatusCode::CREATED, started, results, errors))
}

fn not_found(input: &Input) -> Value {
    input_error(
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.".into(),
        input,
        Vec::new(),
    )
}

/// The record an update, archive or read input names: by record id, or by the value of
/// a unique property.
fn resolve(state: &super::HubState, t: usize, id_property: Option<&str>, id: &str) -> Option<u64> {
    match id_property {
        Some(prop) => state.store.find_unique(t, prop, id),
        None => id.parse().ok(),
    }
}

/// `batch/update`: by record id (or by `idProperty`); an id with no live record fails.
pub(crate) async fn update(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    body: Bytes,
) -> Result<Response, HubError> {
    let started = chrono::Utc::now();
    let mut state = hub.lock();
    let t = state.store.index(&object)?;
    let ty = state.store.ty(t);
    let batch = parse(&body, |i| {
        if let Some(p) = &i.id_property {
            id_property(ty, p, false)?;
        }
        let id = i
            .id()
            .ok_or_else(|| HubError::validation("every input of an update needs an id"))?;
        Ok(Some(id))
    })?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &batch.inputs {
        let id = input.id().unwrap_or_default();
        let Some(record) = resolve(&state, t, input.id_property.as_deref(), &id) else {
            errors.push(not_found(input));
            continue;
        };
        let props = match values(state.store.ty(t), input) {
            Ok(p) => p,
            Err(bad) => {
                errors.push(invalid_error(&bad, input));
                continue;
            }
        };
        match state.store.update(t, record, &props, started) {
            Ok(true) => {
                let also: Vec<String> = props.iter().map(|(n, _)| n.clone()).collect();
                results.push(with_trace(state.store.render(t, record, None, &also), input));
            }
            Ok(false) => errors.push(not_found(input)),
            Err(c) => errors.push(conflict_error(&c, input)),
        }
    }
    Ok(answer(StatusCode::OK, started, results, errors))
}

/// `batch/archive`: 204; ids with no live record are left alone.
pub(crate) async fn archive(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    body: Bytes,
) -> Result<Response, HubError> {
    let now = chrono::Utc::now();
    let mut state = hub.lock();
    let t = state.store.index(&object)?;
    let batch = parse(&body, |i| Ok(i.id()))?;
    for input in &batch.inputs {
        if let Some(record) = input.id().and_then(|id| id.parse().ok()) {
            state.store.archive(t, record, now);
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `batch/read?archived=`: the records asked for, with `properties` (or the defaults);
/// those not found make it a 207 with one `OBJECT_NOT_FOUND` error listing their ids.
pub(crate) async fn read(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, HubError> {
    let started = chrono::Utc::now();
    let archived = super::list::archived(query.get("archived").map(String::as_str))?;
    let state = hub.lock();
    let t = state.store.index(&object)?;
    let batch = parse(&body, |i| Ok(i.id()))?;
    if let Some(p) = &batch.id_property {
        id_property(state.store.ty(t), p, false)?;
    }
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in &batch.inputs {
        let id = input.id().unwrap_or_default();
        let record = resolve(&state, t, batch.id_property.as_deref(), &id).filter(|r| {
            state
                .store
                .table(t)
                .get(r)
                .is_some_and(|r| r.archived.is_some() == archived)
        });
        match record {
            Some(r) => results.push(state.store.render(t, r, batch.properties.as_deref(), &[])),
            None => missing.push(id),
        }
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![json!({
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                state.store.ty(t).singular),
            "context": {"ids": missing},
            "errors": [],
            "links": {},
        })]
    };
    Ok(answer(StatusCode::OK, started, results, errors))
}

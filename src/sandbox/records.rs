//! The single-record REST resources: get, create, update and delete by `Id`, get and
//! upsert by external ID (docs/salesforce-protocol.md §3: 201 created, 200 updated on v46+,
//! 300 several matches, 404 unknown object or field). Their bodies are read with a typed
//! JSON reader, as orgs read them: a value of the wrong type fails the request with 400
//! `JSON_PARSER_ERROR`, where sObject Collections report it per record.

use super::api::{error, json_error, not_found, record_errors, Shr};
use super::collections::{self, Op};
use super::store::Store;
use super::value::{coerce, Input};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// A record with its `attributes`, every field shown (nulls included).
pub(crate) fn with_attributes(store: &Store, t: usize, id: &str, version: &str) -> Option<Value> {
    let table = &store.tables[t];
    let record = table.records.get(id)?;
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": table.object.name, "url": format!("/services/data/v{version}/sobjects/{}/{id}", table.object.name)}),
    );
    out.extend(super::render::render(table, id, record, true));
    Some(Value::Object(out))
}

pub(crate) async fn get_one(State(shared): Shr, Path((v, object, id)): Path<(String, String, String)>) -> Response {
    let state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    let Ok(id) = state.store.parse_id(t, &id) else {
        return not_found();
    };
    match with_attributes(&state.store, t, &id, v.trim_start_matches('v')) {
        Some(r) => Json(r).into_response(),
        None => not_found(),
    }
}

pub(crate) async fn get_by_external_id(
    State(shared): Shr,
    Path((v, object, field, value)): Path<(String, String, String, String)>,
) -> Response {
    let state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    let Some(f) = state.store.tables[t].object.field(&field).filter(|f| f.external_id) else {
        return not_found();
    };
    let Ok(key) = coerce(f, Input::Text(&value)) else {
        return not_found();
    };
    let ids = state.store.find(t, &f.name.clone(), &key);
    match ids.as_slice() {
        [id] => with_attributes(&state.store, t, id, v.trim_start_matches('v'))
            .map(|r| Json(r).into_response())
            .unwrap_or_else(not_found),
        [] => not_found(),
        many => multiple(&state.store, t, many, v.trim_start_matches('v')),
    }
}

/// 300: an external ID matched several records; the body lists their URLs (the REST
/// guide describes the list; its exact shape is [U], this is the list of record URLs).
fn multiple(store: &Store, t: usize, ids: &[String], version: &str) -> Response {
    let name = &store.tables[t].object.name;
    let urls: Vec<Value> = ids
        .iter()
        .map(|id| Value::from(format!("/services/data/v{version}/sobjects/{name}/{id}")))
        .collect();
    (StatusCode::MULTIPLE_CHOICES, Json(Value::Array(urls))).into_response()
}

/// The body of a single-record write: a JSON object (without `attributes`).
#[allow(clippy::result_large_err)] // the error is the response to send, built once per request
fn body_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            m.remove("attributes");
            Ok(m)
        }
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of sObject from a non-object value",
        )),
        Err(e) => Err(json_error(&e)),
    }
}

/// The single-record REST resources read the body with a typed JSON reader: a value of
/// the wrong type fails the whole request with 400 `JSON_PARSER_ERROR` (as orgs answer,
/// e.g. "Cannot deserialize instance of datetime from VALUE_STRING value …"), where
/// sObject Collections report `INVALID_TYPE_ON_FIELD_IN_RECORD` for the record.
fn type_errors(store: &Store, t: usize, body: &Map<String, Value>) -> Option<Response> {
    let object = &store.tables[t].object;
    for (name, v) in body {
        let Some(field) = object.field(name) else { continue };
        if v.is_null() {
            continue;
        }
        if let Err(e) = coerce(field, Input::Json(v)) {
            if e.code == "INVALID_TYPE_ON_FIELD_IN_RECORD" {
                let token = match v {
                    Value::String(_) => "VALUE_STRING",
                    Value::Number(_) => "VALUE_NUMBER",
                    Value::Bool(_) => "VALUE_BOOLEAN",
                    Value::Array(_) => "START_ARRAY",
                    _ => "START_OBJECT",
                };
                let shown = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "JSON_PARSER_ERROR",
                    &format!(
                        "Cannot deserialize instance of {} from {token} value {shown} or request may be missing a \
                         required field at [line:1, column:1]",
                        field_type_name(field)
                    ),
                ));
            }
        }
    }
    None
}

fn field_type_name(field: &super::Field) -> &'static str {
    use super::FieldType as T;
    match field.kind {
        T::Int => "int",
        T::Double | T::Percent => "double",
        T::Currency => "currency",
        T::Date => "date",
        T::Datetime => "datetime",
        T::Boolean => "boolean",
        _ => "string",
    }
}

fn pairs(body: &Map<String, Value>) -> Vec<(&str, Input<'_>)> {
    body.iter().map(|(k, v)| (k.as_str(), Input::Json(v))).collect()
}

/// `POST sobjects/{Object}`: 201 `{"id", "success": true, "errors": []}`.
pub(crate) async fn create_one(
    State(shared): Shr,
    Path((_v, object)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    if let Some(r) = type_errors(&state.store, t, &body) {
        return r;
    }
    let now = collections::now();
    let mut undo = Vec::new();
    match collections::write(&mut state, t, Op::Create, &pairs(&body), now, &mut undo) {
        Ok(done) => (
            StatusCode::CREATED,
            Json(json!({"id": done.id, "success": true, "errors": []})),
        )
            .into_response(),
        Err(f) => record_errors(StatusCode::BAD_REQUEST, &f.errors),
    }
}

/// `POST sobjects/{Object}/Id`: creates a record, `Id` being the external ID with a null
/// value (v37+); any other field name is not a resource for POST.
pub(crate) async fn create_by_id(
    state: Shr,
    Path((v, object, field)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if field != "Id" {
        return not_found();
    }
    create_one(state, Path((v, object)), body).await
}

/// `PATCH sobjects/{Object}/{id}`: 204.
pub(crate) async fn update_one(
    State(shared): Shr,
    Path((_v, object, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    let id = match state.store.parse_id(t, &id) {
        Ok(id) => id,
        Err(_) => return not_found(),
    };
    if let Err(e) = state.store.existing(t, &id) {
        return record_errors(StatusCode::NOT_FOUND, &[e]);
    }
    if let Some(r) = type_errors(&state.store, t, &body) {
        return r;
    }
    let mut fields = pairs(&body);
    fields.push(("Id", Input::Text(&id)));
    let mut undo = Vec::new();
    match collections::write(&mut state, t, Op::Update, &fields, collections::now(), &mut undo) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => record_errors(StatusCode::BAD_REQUEST, &f.errors),
    }
}

/// `DELETE sobjects/{Object}/{id}`: 204.
pub(crate) async fn delete_one(State(shared): Shr, Path((_v, object, id)): Path<(String, String, String)>) -> Response {
    let mut state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    let Ok(id) = state.store.parse_id(t, &id) else {
        return not_found();
    };
    let mut undo = Vec::new();
    let fields = [("Id", Input::Text(&id))];
    match collections::write(&mut state, t, Op::Delete, &fields, collections::now(), &mut undo) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(f)
            if f.errors
                .iter()
                .any(|e| e.code == "ENTITY_IS_DELETED" || e.code == "INVALID_CROSS_REFERENCE_KEY") =>
        {
            record_errors(StatusCode::NOT_FOUND, &f.errors)
        }
        Err(f) => record_errors(StatusCode::BAD_REQUEST, &f.errors),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct UpsertParams {
    #[serde(rename = "updateOnly")]
    update_only: Option<bool>,
}

/// `PATCH sobjects/{Object}/{ExtIdField}/{value}` (docs/salesforce-protocol.md §3): 201
/// created, 200 updated (v46+, `created: false`), 300 several matches, 404 unknown object
/// or field. `Id` as the field updates the record with that id (404 if there is none). The
/// value in the URL is the record's external ID; one in the body is overridden by it.
pub(crate) async fn upsert_one(
    State(shared): Shr,
    Path((v, object, field, value)): Path<(String, String, String, String)>,
    axum::extract::Query(params): axum::extract::Query<UpsertParams>,
    body: Bytes,
) -> Response {
    let mut body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut state = shared.lock();
    let Some(t) = state.store.table(&object) else {
        return not_found();
    };
    let Some(f) = state.store.tables[t].object.field(&field).cloned() else {
        return not_found();
    };
    if let Some(r) = type_errors(&state.store, t, &body) {
        return r;
    }
    let now = collections::now();
    let mut undo = Vec::new();
    if f.name == "Id" {
        let Ok(id) = state.store.parse_id(t, &value) else {
            return not_found();
        };
        if state.store.existing(t, &id).is_err() {
            return not_found();
        }
        let mut fields = pairs(&body);
        fields.push(("Id", Input::Text(&id)));
        return match collections::write(&mut state, t, Op::Update, &fields, now, &mut undo) {
            Ok(done) => Json(json!({"id": done.id, "success": true, "errors": [], "created": false})).into_response(),
            Err(e) => record_errors(StatusCode::BAD_REQUEST, &e.errors),
        };
    }
    if !f.external_id {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!("Field {} is not an External ID or indexed field for {}", f.name, object),
        );
    }
    body.retain(|k, _| !k.eq_ignore_ascii_case(&f.name));
    let key = match coerce(&f, Input::Text(&value)) {
        Ok(k) => k,
        Err(e) => return record_errors(StatusCode::BAD_REQUEST, &[e]),
    };
    let matches = state.store.find(t, &f.name, &key);
    if matches.len() > 1 {
        return multiple(&state.store, t, &matches, v.trim_start_matches('v'));
    }
    if matches.is_empty() && params.update_only == Some(true) {
        return not_found();
    }
    let mut fields = pairs(&body);
    fields.push((f.name.as_str(), Input::Text(&value)));
    match collections::write(&mut state, t, Op::Upsert(&f.name), &fields, now, &mut undo) {
        Ok(done) => {
            let status = if done.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(json!({"id": done.id, "success": true, "errors": [], "created": done.created})),
            )
                .into_response()
        }
        Err(e) => record_errors(StatusCode::BAD_REQUEST, &e.errors),
    }
}

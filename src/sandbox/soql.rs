//! SOQL, the simple form an incremental extract uses (parsed in [`super::soql_parse`]): `SELECT f1, f2 FROM Obj [WHERE …]
//! [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]`, and
//! `SELECT COUNT() FROM …`. Conditions compare a field with a literal (`=`, `!=`, `<>`,
//! `<`, `<=`, `>`, `>=`, `LIKE`, `IN (…)`, `NOT IN (…)`), joined by `AND`/`OR`/`NOT` with
//! parentheses. Literals are typed like SOQL's: datetimes (`2024-01-31T09:30:00Z`) and
//! dates unquoted, strings quoted, numbers, `true`/`false`, `null`; a literal of the wrong
//! type for its field is refused as Salesforce refuses it (`INVALID_FIELD`), so a client
//! that quotes a datetime finds out here. String comparisons ignore case, as in SOQL.
//!
//! Results come in pages (`done`, `nextRecordsUrl`, `totalSize`), each record with its
//! `attributes`; the page size is the `batchSize` of a `Sforce-Query-Options` header
//! (clamped to 200-2,000, as Salesforce does), but never more than the configured one:
//! Salesforce may send fewer records than asked, and tests set a small page size to see
//! many pages whatever the client asks.
//!
//! `queryAll` (v29+) is the same query over the records in the recycle bin too (not those
//! a Bulk `hardDelete` removed, which skip the bin): those show
//! `IsDeleted = true` and their deletion time as `SystemModstamp`. Its `nextRecordsUrl`
//! continues under `query/`, which the REST guide says carries on a `queryAll` result;
//! `queryAll/{locator}` is served as well.
//!
//! The query itself ([`prepare`], [`execute`]) is shared with Bulk API 2.0 query jobs
//! ([`super::bulk_query`]), which write the same rows as CSV.

use super::api::{error, Shr};
use super::render::Row;
use super::schema::{Field, FieldType, SObject};
use super::soql_parse::{self, Cond, Literal, Select};
use super::value::{parse_date, parse_datetime};
use super::State;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use std::cmp::Ordering;

/// The rows of a query not yet fetched, each already JSON (its `attributes` included).
pub(crate) struct Cursor {
    rows: Vec<String>,
    page: usize,
    version: String,
}

/// At most this many open cursors; the oldest are dropped (as locators expire).
const MAX_CURSORS: usize = 1_000;

/// A comparable value of a record's field.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cmp {
    Bool(bool),
    Num(f64),
    Str(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

/// The value of `field` in `row`, comparable (system fields without formatting them).
fn cmp_of(field: &Field, row: &Row<'_>) -> Option<Cmp> {
    if let Some(t) = row.system_time(&field.name) {
        return Some(Cmp::DateTime(t));
    }
    match field.name.as_str() {
        "Id" => return Some(Cmp::Str(row.id.to_lowercase())),
        "IsDeleted" => return Some(Cmp::Bool(row.deleted)),
        _ => {}
    }
    let v = row.stored(&field.name)?;
    match field.kind {
        FieldType::Boolean => v.as_bool().map(Cmp::Bool),
        t if t.is_number() => v.as_f64().map(Cmp::Num),
        FieldType::Date => v.as_str().and_then(parse_date).map(Cmp::Date),
        FieldType::Datetime => v.as_str().and_then(parse_datetime).map(Cmp::DateTime),
        _ => v.as_str().map(|s| Cmp::Str(s.to_lowercase())),
    }
}

/// The literal as a comparable value of `field`'s type, or the error Salesforce gives.
fn literal_for(field: &Field, lit: &Literal) -> Result<Option<Cmp>, String> {
    let wrong = |ty: &str, quoted: bool| {
        Err(format!(
            "value of filter criterion for field '{}' must be of type {ty} and {} be enclosed in quotes",
            field.name,
            if quoted { "should" } else { "should not" }
        ))
    };
    match (field.kind, lit) {
        (_, Literal::Null) => Ok(None),
        (FieldType::Boolean, Literal::Bool(b)) => Ok(Some(Cmp::Bool(*b))),
        (FieldType::Boolean, _) => wrong("boolean", false),
        (t, Literal::Num(n)) if t.is_number() => Ok(Some(Cmp::Num(*n))),
        (t, _) if t.is_number() => wrong("double", false),
        (FieldType::Date, Literal::Date(d)) => Ok(Some(Cmp::Date(*d))),
        (FieldType::Date, _) => wrong("date", false),
        (FieldType::Datetime, Literal::DateTime(d)) => Ok(Some(Cmp::DateTime(*d))),
        (FieldType::Datetime, _) => wrong("dateTime", false),
        (_, Literal::Str(s)) => Ok(Some(Cmp::Str(s.to_lowercase()))),
        (_, _) => wrong("string", true),
    }
}

/// A compiled condition: fields resolved (by index into the object's fields), literals
/// typed.
enum Check {
    Cmp(usize, &'static str, Option<Cmp>),
    In(usize, bool, Vec<Option<Cmp>>),
    Like(usize, Vec<char>),
    And(Box<Check>, Box<Check>),
    Or(Box<Check>, Box<Check>),
    Not(Box<Check>),
}

fn field_index(object: &SObject, name: &str) -> Result<usize, String> {
    object
        .fields
        .iter()
        .position(|f| f.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            format!(
                "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to \
                 append the '__c' after the custom field name. Please reference your WSDL or the describe call for \
                 the appropriate names.",
                object.name
            )
        })
}

/// The index of a field a condition names: it must exist and be filterable.
fn filter_index(object: &SObject, name: &str) -> Result<usize, String> {
    let i = field_index(object, name)?;
    if !object.fields[i].filterable {
        return Err(format!(
            "field '{}' can not be filtered in query call",
            object.fields[i].name
        ));
    }
    Ok(i)
}

fn compile(object: &SObject, c: &Cond) -> Result<Check, String> {
    Ok(match c {
        Cond::Cmp(f, op, lit) => {
            let i = filter_index(object, f)?;
            Check::Cmp(i, op, literal_for(&object.fields[i], lit)?)
        }
        Cond::In(f, negated, list) => {
            let i = filter_index(object, f)?;
            let values = list
                .iter()
                .map(|l| literal_for(&object.fields[i], l))
                .collect::<Result<_, _>>()?;
            Check::In(i, *negated, values)
        }
        Cond::Like(f, lit) => {
            let i = filter_index(object, f)?;
            let field = &object.fields[i];
            let text = field.kind.is_text() || matches!(field.kind, FieldType::Id | FieldType::Reference);
            match lit {
                Literal::Str(p) if text => Check::Like(i, p.to_lowercase().chars().collect()),
                _ => {
                    return Err(format!(
                        "invalid operator on field '{}': LIKE needs a text field and a quoted pattern",
                        field.name
                    ))
                }
            }
        }
        Cond::And(a, b) => Check::And(Box::new(compile(object, a)?), Box::new(compile(object, b)?)),
        Cond::Or(a, b) => Check::Or(Box::new(compile(object, a)?), Box::new(compile(object, b)?)),
        Cond::Not(a) => Check::Not(Box::new(compile(object, a)?)),
    })
}

fn eval(check: &Check, object: &SObject, row: &Row<'_>) -> bool {
    let value = |i: usize| cmp_of(&object.fields[i], row);
    match check {
        Check::Cmp(i, op, lit) => {
            let v = value(*i);
            match (op, &v, lit) {
                (&"=", _, _) => v == *lit,
                (&"!=", _, _) => v != *lit,
                // Datetimes compare as instants, whatever offset the literal was written in.
                (_, Some(v), Some(l)) => match v.partial_cmp(l) {
                    Some(o) => match *op {
                        "<" => o == Ordering::Less,
                        "<=" => o != Ordering::Greater,
                        ">" => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    },
                    None => false,
                },
                _ => false,
            }
        }
        Check::In(i, negated, list) => list.contains(&value(*i)) != *negated,
        Check::Like(i, pattern) => match value(*i) {
            Some(Cmp::Str(s)) => like(&s.chars().collect::<Vec<_>>(), pattern),
            _ => false,
        },
        Check::And(a, b) => eval(a, object, row) && eval(b, object, row),
        Check::Or(a, b) => eval(a, object, row) || eval(b, object, row),
        Check::Not(a) => !eval(a, object, row),
    }
}

/// SOQL `LIKE`: `%` any run of characters, `_` one character (both already lower case).
fn like(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| like(&text[i..], rest)),
        Some((p, rest)) => text
            .split_first()
            .is_some_and(|(c, tail)| (*p == '_' || p == c) && like(tail, rest)),
    }
}

/// A query checked against the org: the object's table, the selected fields (canonical
/// names and types), the condition compiled, the order resolved.
pub(crate) struct Prepared {
    pub select: Select,
    pub t: usize,
    pub fields: Vec<(String, FieldType)>,
    check: Option<Check>,
    /// `(field index, descending, nulls last)`.
    order: Vec<(usize, bool, bool)>,
}

/// Parses and checks `q` (`MALFORMED_QUERY`, `INVALID_TYPE`, `INVALID_FIELD` as an org
/// answers them), without reading a record.
#[allow(clippy::result_large_err)] // the error is the response to send, built once per request
pub(crate) fn prepare(state: &State, q: &str) -> Result<Prepared, Response> {
    let select = soql_parse::parse(q).map_err(|m| error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &m))?;
    let Some(t) = state.store.table(&select.object) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            &format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append \
                 the '__c' after the entity name. Please reference your WSDL or the describe call for the \
                 appropriate names.",
                select.object
            ),
        ));
    };
    let object = &state.store.tables[t].object;
    let invalid_field = |m: String| error(StatusCode::BAD_REQUEST, "INVALID_FIELD", &m);
    let fields = select
        .fields
        .iter()
        .map(|f| field_index(object, f).map(|i| (object.fields[i].name.clone(), object.fields[i].kind)))
        .collect::<Result<_, _>>()
        .map_err(invalid_field)?;
    let check = select
        .filter
        .as_ref()
        .map(|c| compile(object, c))
        .transpose()
        .map_err(invalid_field)?;
    let order = select
        .order
        .iter()
        .map(|(f, d, n)| field_index(object, f).map(|i| (i, *d, *n)))
        .collect::<Result<_, _>>()
        .map_err(invalid_field)?;
    Ok(Prepared {
        select,
        t,
        fields,
        check,
        order,
    })
}

/// The rows `p` selects (live records, and with `include_deleted` those in the recycle
/// bin), in creation order or the query's `ORDER BY`, `OFFSET` and `LIMIT` applied.
pub(crate) fn execute<'a>(state: &'a State, p: &Prepared, include_deleted: bool) -> Vec<Row<'a>> {
    let table = &state.store.tables[p.t];
    let object = &table.object;
    let live = table.records.iter().map(|(id, record)| Row {
        id,
        record,
        deleted: false,
    });
    let binned = table
        .deleted
        .iter()
        .filter(|(id, _)| include_deleted && !table.purged.contains(*id))
        .map(|(id, record)| Row {
            id,
            record,
            deleted: true,
        });
    let mut rows: Vec<Row<'a>> = live
        .chain(binned)
        .filter(|row| p.check.as_ref().is_none_or(|c| eval(c, object, row)))
        .collect();
    if include_deleted {
        // Ids grow: creation order, the order of a query without ORDER BY.
        rows.sort_by(|a, b| a.id.cmp(b.id));
    }
    if !p.order.is_empty() {
        rows.sort_by(|a, b| {
            for &(i, desc, nulls_last) in &p.order {
                let field = &object.fields[i];
                let o = match (cmp_of(field, a), cmp_of(field, b)) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) if nulls_last => Ordering::Greater,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) if nulls_last => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) => {
                        let o = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    }
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    rows.into_iter()
        .skip(p.select.offset.unwrap_or(0))
        .take(p.select.limit.unwrap_or(usize::MAX))
        .collect()
}

/// One record of a REST answer, as JSON text: `attributes`, then the selected fields.
fn record_json(object: &str, version: &str, fields: &[(String, FieldType)], row: &Row<'_>) -> String {
    let mut r = serde_json::Map::new();
    r.insert(
        "attributes".into(),
        json!({"type": object, "url": format!("/services/data/v{version}/sobjects/{object}/{}", row.id)}),
    );
    for (name, _) in fields {
        r.insert(name.clone(), row.get(name));
    }
    Value::Object(r).to_string()
}

/// A page's JSON: `{"totalSize", "done", ["nextRecordsUrl",] "records"}`, records as text.
fn page_json(total: usize, next: Option<&str>, records: &[String]) -> String {
    let mut out = format!(r#"{{"totalSize":{total},"done":{},"#, next.is_none());
    if let Some(next) = next {
        out.push_str(&format!(r#""nextRecordsUrl":{},"#, Value::from(next)));
    }
    out.push_str(r#""records":["#);
    out.push_str(&records.join(","));
    out.push_str("]}");
    out
}

fn json_response(body: String, corrupt: bool) -> Response {
    // The corrupt-answer fault cuts the page short: JSON that does not parse.
    let body = if corrupt {
        body[..body.len() / 2].to_string()
    } else {
        body
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct QueryParams {
    q: Option<String>,
}

fn page_size(state_default: usize, headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').find_map(|p| p.trim().strip_prefix("batchSize=")))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map(|n| n.clamp(200, 2_000).min(state_default))
        .unwrap_or(state_default)
}

/// `GET query?q=…`.
pub(crate) async fn query(shared: Shr, v: Path<String>, params: Query<QueryParams>, headers: HeaderMap) -> Response {
    respond(shared, v, params, headers, false)
}

/// `GET queryAll?q=…`: deleted records included.
pub(crate) async fn query_all(
    shared: Shr,
    v: Path<String>,
    params: Query<QueryParams>,
    headers: HeaderMap,
) -> Response {
    respond(shared, v, params, headers, true)
}

fn respond(
    axum::extract::State(shared): Shr,
    Path(v): Path<String>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    include_deleted: bool,
) -> Response {
    let Some(q) = params.q.filter(|q| !q.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    let version = v.trim_start_matches('v').to_string();
    let mut state = shared.lock();
    let prepared = match prepare(&state, &q) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let rows = execute(&state, &prepared, include_deleted);
    if prepared.select.count {
        return json_response(page_json(rows.len(), None, &[]), false);
    }
    let object = state.store.tables[prepared.t].object.name.clone();
    let rows: Vec<String> = rows
        .iter()
        .map(|row| record_json(&object, &version, &prepared.fields, row))
        .collect();
    let corrupt = state.corrupt_query();
    let total = rows.len();
    let page = page_size(shared.settings.page_size, &headers);
    if total <= page {
        return json_response(page_json(total, None, &rows), corrupt);
    }
    let n = state.next_seq();
    let locator = format!("01g5g0000{n:06}");
    let next = format!("/services/data/v{version}/query/{locator}-{page}");
    let body = page_json(total, Some(&next), &rows[..page]);
    if state.cursors.len() >= MAX_CURSORS {
        if let Some(oldest) = state.cursors.keys().min().cloned() {
            state.cursors.remove(&oldest);
        }
    }
    state.cursors.insert(locator, Cursor { rows, page, version });
    json_response(body, corrupt)
}

/// `GET query/{locator}-{offset}`: the next page.
pub(crate) async fn more(axum::extract::State(shared): Shr, Path((_v, locator)): Path<(String, String)>) -> Response {
    let invalid = || {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    };
    let Some((id, offset)) = locator.rsplit_once('-') else {
        return invalid();
    };
    let Ok(offset) = offset.parse::<usize>() else {
        return invalid();
    };
    let mut state = shared.lock();
    let corrupt = state.corrupt_query();
    let Some(cursor) = state.cursors.get(id) else {
        return invalid();
    };
    if offset >= cursor.rows.len() {
        return invalid();
    }
    let end = (offset + cursor.page).min(cursor.rows.len());
    let next = (end < cursor.rows.len()).then(|| format!("/services/data/v{}/query/{id}-{end}", cursor.version));
    let body = page_json(cursor.rows.len(), next.as_deref(), &cursor.rows[offset..end]);
    json_response(body, corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let m = |t: &str, p: &str| like(&t.chars().collect::<Vec<_>>(), &p.chars().collect::<Vec<_>>());
        assert!(m("acme corp", "acme%"));
        assert!(m("acme corp", "%corp"));
        assert!(m("acme", "a_me"));
        assert!(!m("acme", "a_e"));
        assert!(m("", "%"));
    }

    #[test]
    fn the_page_size_is_the_batch_size_asked_for_up_to_the_configured_one() {
        let asking = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("sforce-query-options", v.parse().unwrap());
            h
        };
        assert_eq!(page_size(2_000, &HeaderMap::new()), 2_000);
        assert_eq!(page_size(2_000, &asking("batchSize=300")), 300);
        assert_eq!(page_size(2_000, &asking("batchSize=5")), 200, "at least 200");
        assert_eq!(page_size(2_000, &asking("batchSize=9000")), 2_000, "at most 2,000");
        assert_eq!(
            page_size(500, &asking("batchSize=2000")),
            500,
            "never more than configured"
        );
        assert_eq!(page_size(2_000, &asking("foo=1, batchSize=400")), 400);
    }

    #[test]
    fn pages_are_json() {
        let page = page_json(3, Some("/next"), &["{\"a\":1}".into(), "{\"a\":2}".into()]);
        let v: Value = serde_json::from_str(&page).unwrap();
        assert_eq!(
            v,
            json!({"totalSize": 3, "done": false, "nextRecordsUrl": "/next", "records": [{"a": 1}, {"a": 2}]})
        );
        let v: Value = serde_json::from_str(&page_json(0, None, &[])).unwrap();
        assert_eq!(v, json!({"totalSize": 0, "done": true, "records": []}));
    }
}

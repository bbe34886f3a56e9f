//! `POST /crm/v3/objects/{objectType}/search`: the records not archived that match any
//! filter group (each group's filters all hold), sorted, a page of `limit` (at most 200)
//! from the offset `after`. As HubSpot, it reaches at most 10,000 results: `after` at or
//! past 10,000 is 400, even though the previous page's `paging.next.after` points there.
//!
//! Operators: `EQ`, `NEQ`, `LT`, `LTE`, `GT`, `GTE`, `BETWEEN` (`value`, `highValue`),
//! `IN`, `NOT_IN` (`values`), `HAS_PROPERTY`, `NOT_HAS_PROPERTY`. Numbers compare as
//! numbers, dates and datetimes as instants (a filter value is epoch milliseconds or ISO
//! 8601), strings without case.

use super::schema::{parse_datetime, ObjectType, PropType};
use super::store::Record;
use super::{parse_body, Hub, HubError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::sync::Arc;

const MAX_LIMIT: usize = 200;
const MAX_RESULTS: usize = 10_000;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS: usize = 6;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    #[serde(default)]
    filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    sorts: Vec<Sort>,
    #[serde(default)]
    properties: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after: Option<Value>,
}

#[derive(Deserialize)]
struct FilterGroup {
    #[serde(default)]
    filters: Vec<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    high_value: Option<Value>,
    #[serde(default)]
    values: Vec<Value>,
}

/// `{"propertyName", "direction"}`, or the older string form (`"-createdate"` descending).
#[derive(Deserialize)]
#[serde(untagged)]
enum Sort {
    Object {
        #[serde(rename = "propertyName")]
        property_name: String,
        #[serde(default)]
        direction: Option<String>,
    },
    Text(String),
}

impl Sort {
    fn parts(&self) -> (&str, bool) {
        match self {
            Sort::Object {
                property_name,
                direction,
            } => (
                property_name,
                direction
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case("DESCENDING")),
            ),
            Sort::Text(t) => match t.strip_prefix('-') {
                Some(name) => (name, true),
                None => (t, false),
            },
        }
    }
}

/// A value made comparable under its property's type.
#[derive(Debug, PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Text(String),
}

fn key(kind: PropType, raw: &str) -> Option<Key> {
    match kind {
        PropType::Number => raw.trim().parse().ok().map(Key::Num),
        PropType::Datetime => parse_datetime(raw).map(|t| Key::Num(t.timestamp_millis() as f64)),
        PropType::Date => chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| Key::Num(d.and_utc().timestamp_millis() as f64))
            .or_else(|| raw.parse().ok().map(Key::Num)),
        PropType::String | PropType::Enumeration => Some(Key::Text(raw.to_lowercase())),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A filter checked against the schema, ready to test records.
struct Compiled {
    property: String,
    kind: PropType,
    operator: String,
    value: Option<Key>,
    high: Option<Key>,
    values: Vec<Key>,
}

fn compile(ty: &ObjectType, f: &Filter) -> Result<Compiled, HubError> {
    let prop = ty
        .property(&f.property_name)
        .ok_or_else(|| HubError::validation(format!("Unable to find property {}", f.property_name)))?;
    let operator = f.operator.to_ascii_uppercase();
    let parse = |v: &Value| {
        key(prop.kind, &text(v)).ok_or_else(|| {
            HubError::validation(format!(
                "{} is not a valid value for {} of type {:?}",
                text(v),
                prop.name,
                prop.kind
            ))
        })
    };
    let needs_value = ["EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN"].contains(&operator.as_str());
    let known = needs_value || ["IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"].contains(&operator.as_str());
    if !known {
        return Err(HubError::validation(format!("Unsupported operator {}", f.operator)));
    }
    let value = match (&f.value, needs_value) {
        (Some(v), _) => Some(parse(v)?),
        (None, true) => {
            return Err(HubError::validation(format!(
                "The filter on {} with operator {operator} needs a value",
                prop.name
            )))
        }
        (None, false) => None,
    };
    let high = match (&f.high_value, operator.as_str()) {
        (Some(v), _) => Some(parse(v)?),
        (None, "BETWEEN") => return Err(HubError::validation("BETWEEN needs a highValue")),
        (None, _) => None,
    };
    let values = f.values.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    Ok(Compiled {
        property: prop.name.to_string(),
        kind: prop.kind,
        operator,
        value,
        high,
        values,
    })
}

impl Compiled {
    fn holds(&self, record: &Record) -> bool {
        let raw = record.props.get(&self.property);
        match self.operator.as_str() {
            "HAS_PROPERTY" => return raw.is_some(),
            "NOT_HAS_PROPERTY" => return raw.is_none(),
            _ => {}
        }
        let got = raw.and_then(|r| key(self.kind, r));
        let cmp = |k: &Option<Key>| match (&got, k) {
            (Some(g), Some(k)) => g.partial_cmp(k),
            _ => None,
        };
        match self.operator.as_str() {
            "EQ" => cmp(&self.value) == Some(Ordering::Equal),
            "NEQ" => cmp(&self.value) != Some(Ordering::Equal),
            "LT" => cmp(&self.value) == Some(Ordering::Less),
            "LTE" => matches!(cmp(&self.value), Some(Ordering::Less | Ordering::Equal)),
            "GT" => cmp(&self.value) == Some(Ordering::Greater),
            "GTE" => matches!(cmp(&self.value), Some(Ordering::Greater | Ordering::Equal)),
            "BETWEEN" => {
                matches!(cmp(&self.value), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(cmp(&self.high), Some(Ordering::Less | Ordering::Equal))
            }
            "IN" => got.as_ref().is_some_and(|g| self.values.contains(g)),
            "NOT_IN" => !got.as_ref().is_some_and(|g| self.values.contains(g)),
            _ => false,
        }
    }
}

pub(crate) async fn search(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HubError> {
    let request: SearchRequest = parse_body(&body)?;
    let limit = request.limit.unwrap_or(10);
    if limit > MAX_LIMIT {
        return Err(HubError::validation(format!(
            "limit {limit} is too large: a search page has at most {MAX_LIMIT} results"
        )));
    }
    let offset: usize = match &request.after {
        None => 0,
        Some(v) => text(v)
            .parse()
            .map_err(|_| HubError::validation(format!("after `{}` is not a valid paging cursor", text(v))))?,
    };
    if offset >= MAX_RESULTS {
        return Err(HubError::validation(format!(
            "The search can page through at most {MAX_RESULTS} results; after {offset} is past it. Narrow the filters instead."
        )));
    }
    if request.filter_groups.len() > MAX_GROUPS || request.filter_groups.iter().any(|g| g.filters.len() > MAX_FILTERS) {
        return Err(HubError::validation(format!(
            "A search has at most {MAX_GROUPS} filter groups of at most {MAX_FILTERS} filters each"
        )));
    }
    let state = hub.lock();
    let t = state.store.index(&object)?;
    let ty = state.store.ty(t);
    let groups = request
        .filter_groups
        .iter()
        .map(|g| g.filters.iter().map(|f| compile(ty, f)).collect::<Result<Vec<_>, _>>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut sorts = Vec::new();
    for s in &request.sorts {
        let (name, descending) = s.parts();
        let prop = ty
            .property(name)
            .ok_or_else(|| HubError::validation(format!("Unable to find property {name} to sort by")))?;
        sorts.push((prop.name, prop.kind, descending));
    }
    let mut matched: Vec<(&u64, &Record)> = state
        .store
        .table(t)
        .iter()
        .filter(|(_, r)| r.archived.is_none())
        .filter(|(_, r)| groups.is_empty() || groups.iter().any(|g| g.iter().all(|f| f.holds(r))))
        .collect();
    matched.sort_by(|(a_id, a), (b_id, b)| {
        for (name, kind, descending) in &sorts {
            let ka = a.props.get(*name).and_then(|v| key(*kind, v));
            let kb = b.props.get(*name).and_then(|v| key(*kind, v));
            // Records without the value come last, whichever the direction.
            let o = match (ka, kb) {
                (Some(x), Some(y)) => {
                    let o = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                    if *descending {
                        o.reverse()
                    } else {
                        o
                    }
                }
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        a_id.cmp(b_id)
    });
    let total = matched.len();
    let results: Vec<Value> = matched
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, _)| state.store.render(t, **id, request.properties.as_deref(), &[]))
        .collect();
    let mut body = json!({"total": total, "results": results});
    let next = offset + limit;
    if next < total {
        body["paging"] = json!({"next": {"after": next.to_string()}});
    }
    Ok(Json(body))
}

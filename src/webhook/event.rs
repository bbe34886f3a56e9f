//! A verified body into events: one JSON object, or an array of them (HubSpot sends up to
//! 100 a request). Each event gets its id, type, action and event time here, at receipt, so
//! that a body the model cannot take is answered 400 before anything is stored as pending.
//! The record inside an event is mapped later, when the inbox is applied.

use crate::path::{FieldPath, Segment};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use crate::config::model::EventAction as Action;

/// A path into an event: `$` (the event itself) or `$.key.key[0]…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPath {
    pub text: String,
    steps: Vec<Segment>,
}

impl EventPath {
    /// Keys and indices only (`$.data.modified_date`, `$.items[0].id`); the error says why not.
    pub fn parse(text: &str) -> Result<EventPath, String> {
        let t = text.trim();
        if t == "$" {
            return Ok(EventPath {
                text: t.to_string(),
                steps: Vec::new(),
            });
        }
        if !t.starts_with("$.") && !t.starts_with("$[") {
            return Err(format!(
                "`{text}` is not a path into the event; write it as `$.key`, e.g. `$.data.id`"
            ));
        }
        match FieldPath::parse(t) {
            Ok(FieldPath::Simple { column, steps }) => {
                let mut all = vec![Segment::Key(column)];
                all.extend(steps);
                Ok(EventPath {
                    text: t.to_string(),
                    steps: all,
                })
            }
            Ok(FieldPath::Query { .. }) => Err(format!(
                "`{text}` uses filters or wildcards; a path into an event is keys and indices only"
            )),
            Err(e) => Err(e.message),
        }
    }

    /// Sets `value` at the path in `root`, creating objects on the way; `false` when the
    /// path has an index or goes through a value that is not an object.
    pub fn set(&self, root: &mut Value, value: Value) -> bool {
        let mut cur = root;
        for (i, s) in self.steps.iter().enumerate() {
            let Segment::Key(k) = s else { return false };
            let Some(obj) = cur.as_object_mut() else { return false };
            if i + 1 == self.steps.len() {
                obj.insert(k.clone(), value);
                return true;
            }
            cur = obj
                .entry(k.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
        *cur = value;
        true
    }

    /// The value at the path, `None` when a step is missing.
    pub fn find<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut cur = v;
        for s in &self.steps {
            cur = match s {
                Segment::Key(k) => cur.get(k.as_str())?,
                Segment::Index(i) => cur.get(*i)?,
            };
        }
        Some(cur)
    }
}

/// How a model reads its events (the compiled `source:` of a webhook model).
#[derive(Debug, Clone)]
pub struct EventRules {
    /// Event type → action. A type not here is refused (400).
    pub events: BTreeMap<String, Action>,
    /// Where the type is, tried in order (default `$.type`, then `$.event_type`).
    pub event_type: Vec<EventPath>,
    /// Where the event's id is; default: the signed message id (`webhook-id`), else a hash
    /// of the event.
    pub event_id: Option<EventPath>,
    /// Where the event's time is (RFC 3339, or Unix seconds or milliseconds); default: the
    /// signed timestamp, else the time of receipt.
    pub event_time: Option<EventPath>,
    /// Where the record is (default `$.data`).
    pub record: EventPath,
}

/// The default paths of the event type.
pub const DEFAULT_EVENT_TYPE: [&str; 2] = ["$.type", "$.event_type"];
/// The default path of the record.
pub const DEFAULT_RECORD: &str = "$.data";

/// One event of a body, ready for the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub event_id: String,
    pub event_type: String,
    pub action: Action,
    pub event_time: DateTime<Utc>,
    /// The event's JSON text (for a one-event body, the body as received).
    pub body: String,
}

/// Why a body is refused (answered 400, and kept as a dead letter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON object or an array of objects")]
    NotObject,
    #[error("the body holds no events (an empty array)")]
    Empty,
    #[error("{at}: no event type at {paths}")]
    NoType { at: String, paths: String },
    #[error("{at}: event type `{ty}` is not one the model takes ({known}); add it under `source.events`")]
    UnknownType { at: String, ty: String, known: String },
    #[error("{at}: no event id at `{path}`")]
    NoId { at: String, path: String },
    #[error("{at}: the event time at `{path}` is {why}")]
    BadTime { at: String, path: String, why: String },
    #[error("{at}: the record at `{path}` is {why}")]
    BadRecord { at: String, path: String, why: String },
}

impl EventRules {
    /// The events of a verified body. `signed_id` and `signed_at` are what the signature
    /// carried; `now` the time of receipt.
    pub fn parse(
        &self,
        body: &[u8],
        signed_id: Option<&str>,
        signed_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Incoming>, EventError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
        match v {
            Value::Object(_) => {
                let text = String::from_utf8_lossy(body).into_owned();
                let id = match (&self.event_id, signed_id) {
                    (None, Some(id)) => Some(id.to_string()),
                    _ => None,
                };
                Ok(vec![self.event(&v, "the event", id, text, signed_at, now)?])
            }
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(EventError::Empty);
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if !item.is_object() {
                        return Err(EventError::NotObject);
                    }
                    let id = match (&self.event_id, signed_id) {
                        (None, Some(id)) => Some(format!("{id}#{i}")),
                        _ => None,
                    };
                    let at = format!("event {}", i + 1);
                    out.push(self.event(item, &at, id, item.to_string(), signed_at, now)?);
                }
                Ok(out)
            }
            _ => Err(EventError::NotObject),
        }
    }

    fn event(
        &self,
        v: &Value,
        at: &str,
        id: Option<String>,
        text: String,
        signed_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Incoming, EventError> {
        let ty = self
            .event_type
            .iter()
            .find_map(|p| p.find(v).and_then(scalar_text))
            .ok_or_else(|| EventError::NoType {
                at: at.to_string(),
                paths: self
                    .event_type
                    .iter()
                    .map(|p| format!("`{}`", p.text))
                    .collect::<Vec<_>>()
                    .join(" or "),
            })?;
        let action = *self.events.get(&ty).ok_or_else(|| EventError::UnknownType {
            at: at.to_string(),
            ty: shorten(&ty, 80),
            known: self
                .events
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let event_id = match (&self.event_id, id) {
            (Some(p), _) => p.find(v).and_then(scalar_text).ok_or_else(|| EventError::NoId {
                at: at.to_string(),
                path: p.text.clone(),
            })?,
            (None, Some(id)) => id,
            (None, None) => format!("sha256:{}", hex(&Sha256::digest(text.as_bytes()))),
        };
        let event_time = match &self.event_time {
            Some(p) => {
                let bad = |why: String| EventError::BadTime {
                    at: at.to_string(),
                    path: p.text.clone(),
                    why,
                };
                match p.find(v) {
                    None | Some(Value::Null) => return Err(bad("missing".into())),
                    Some(t) => parse_time(t).ok_or_else(|| {
                        bad(format!(
                            "{}, not an RFC 3339 time or a Unix time in seconds or milliseconds",
                            shorten(&t.to_string(), 60)
                        ))
                    })?,
                }
            }
            None => signed_at.unwrap_or(now),
        };
        if action != Action::Ignore {
            match self.record.find(v) {
                Some(Value::Object(_)) => {}
                None | Some(Value::Null) => {
                    return Err(EventError::BadRecord {
                        at: at.to_string(),
                        path: self.record.text.clone(),
                        why: "missing".into(),
                    })
                }
                Some(_) => {
                    return Err(EventError::BadRecord {
                        at: at.to_string(),
                        path: self.record.text.clone(),
                        why: "not a JSON object".into(),
                    })
                }
            }
        }
        Ok(Incoming {
            event_id,
            event_type: ty,
            action,
            event_time,
            body: text,
        })
    }
}

/// A string, or a number or boolean as text.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub use crate::time::parse_time;

/// At most `n` characters of a value, for a message.
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> EventRules {
        EventRules {
            events: [
                ("customer.created".to_string(), Action::Upsert),
                ("customer.updated".to_string(), Action::Upsert),
                ("customer.deleted".to_string(), Action::Delete),
            ]
            .into_iter()
            .collect(),
            event_type: DEFAULT_EVENT_TYPE
                .iter()
                .map(|p| EventPath::parse(p).unwrap())
                .collect(),
            event_id: None,
            event_time: Some(EventPath::parse("$.data.modified_date").unwrap()),
            record: EventPath::parse(DEFAULT_RECORD).unwrap(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z").unwrap().into()
    }

    #[test]
    fn one_event_takes_the_signed_id_and_its_own_time() {
        let body = br#"{"event_type":"customer.updated","data":{"id":"c1","modified_date":"2026-12-03T09:59:00Z"}}"#;
        let e = rules().parse(body, Some("msg_1"), None, now()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].event_id, "msg_1");
        assert_eq!(e[0].action, Action::Upsert);
        assert_eq!(e[0].event_time.to_rfc3339(), "2026-12-03T09:59:00+00:00");
        assert_eq!(e[0].body.as_bytes(), body);
    }

    #[test]
    fn an_array_gives_an_event_each_with_numbered_ids() {
        let body = br#"[{"type":"customer.created","data":{"id":"a","modified_date":1764755940000}},
                        {"type":"customer.deleted","data":{"id":"b","modified_date":1764755941}}]"#;
        let e = rules().parse(body, Some("m"), None, now()).unwrap();
        assert_eq!(
            e.iter().map(|e| (e.event_id.as_str(), e.action)).collect::<Vec<_>>(),
            [("m#0", Action::Upsert), ("m#1", Action::Delete)]
        );
        assert_eq!(e[0].event_time.timestamp(), 1764755940);
        assert_eq!(e[1].event_time.timestamp(), 1764755941);
    }

    #[test]
    fn refusals_say_where_and_why() {
        let r = rules();
        let t = |b: &str| r.parse(b.as_bytes(), None, None, now()).unwrap_err().to_string();
        assert!(t("{nope").starts_with("the body is not JSON"));
        assert_eq!(t("[]"), "the body holds no events (an empty array)");
        assert_eq!(t("3"), "the body is not a JSON object or an array of objects");
        assert_eq!(
            t(r#"{"data":{}}"#),
            "the event: no event type at `$.type` or `$.event_type`"
        );
        assert!(t(r#"{"type":"order.paid","data":{}}"#)
            .starts_with("the event: event type `order.paid` is not one the model takes (`customer.created`"));
        assert_eq!(
            t(r#"{"type":"customer.updated","data":{"modified_date":"yesterday"}}"#),
            "the event: the event time at `$.data.modified_date` is \"yesterday\", not an RFC 3339 time or a Unix time in seconds or milliseconds"
        );
        assert_eq!(
            t(r#"[{"type":"customer.updated","data":{"modified_date":1}}, {"type":"customer.updated","data":[1]}]"#),
            "event 2: the event time at `$.data.modified_date` is missing"
        );
    }

    #[test]
    fn without_an_id_an_event_is_named_by_its_hash() {
        let body = br#"{"type":"customer.created","data":{"modified_date":"2026-12-03T09:00:00Z"}}"#;
        let a = rules().parse(body, None, None, now()).unwrap();
        let b = rules().parse(body, None, None, now()).unwrap();
        assert!(a[0].event_id.starts_with("sha256:"));
        assert_eq!(a[0].event_id, b[0].event_id);
    }

    #[test]
    fn paths_are_keys_and_indices() {
        assert!(EventPath::parse("$").is_ok());
        assert!(EventPath::parse("$.a.b[0]").is_ok());
        assert!(EventPath::parse("data.id").unwrap_err().contains("`$.key`"));
        assert!(EventPath::parse("$.a[?(@.x)]").is_err());
        let p = EventPath::parse("$.a[1].b").unwrap();
        assert_eq!(
            p.find(&serde_json::json!({"a": [0, {"b": 7}]})),
            Some(&serde_json::json!(7))
        );
    }
}

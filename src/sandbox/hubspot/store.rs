//! The records of each object type, by numeric id. A write keeps `hs_object_id`, the
//! creation property (`createdate`, `hs_createdate` on the custom object) and the object's
//! last-modified properties; unique properties
//! (`hasUniqueValue`) are held unique among the records not archived, through an index
//! (value → record), so that a write costs the same with 100,000 records as with 10.

use super::schema::{object_types, ObjectType};
use super::{timestamp, HubError};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

pub(crate) struct Record {
    pub props: BTreeMap<String, String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub archived: Option<DateTime<Utc>>,
}

pub(crate) struct Store {
    types: Vec<ObjectType>,
    tables: Vec<BTreeMap<u64, Record>>,
    /// Per table: unique property → value → the record not archived that holds it.
    unique: Vec<HashMap<String, HashMap<String, u64>>>,
    next_id: u64,
}

/// A write that would give a unique property a value another record holds.
pub(crate) struct Conflict {
    pub property: String,
    pub existing: u64,
}

impl Store {
    pub(crate) fn new() -> Store {
        let types = object_types();
        let tables = types.iter().map(|_| BTreeMap::new()).collect();
        let unique = types.iter().map(|_| HashMap::new()).collect();
        Store {
            types,
            tables,
            unique,
            next_id: 1001,
        }
    }

    /// The index of an object type by any of its names, or HubSpot's 404 for a name it
    /// does not know.
    pub(crate) fn index(&self, name: &str) -> Result<usize, HubError> {
        self.types
            .iter()
            .position(|t| t.name.eq_ignore_ascii_case(name) || t.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
            .ok_or_else(|| HubError::UnknownObject(name.to_string()))
    }

    pub(crate) fn object(&self, name: &str) -> Result<&ObjectType, HubError> {
        Ok(&self.types[self.index(name)?])
    }

    pub(crate) fn ty(&self, t: usize) -> &ObjectType {
        &self.types[t]
    }

    pub(crate) fn table(&self, t: usize) -> &BTreeMap<u64, Record> {
        &self.tables[t]
    }

    /// The record not archived whose unique property `prop` is `value`.
    pub(crate) fn find_unique(&self, t: usize, prop: &str, value: &str) -> Option<u64> {
        if prop == "hs_object_id" {
            let id = value.parse().ok()?;
            return self.tables[t].get(&id).filter(|r| r.archived.is_none()).map(|_| id);
        }
        self.unique[t].get(prop).and_then(|values| values.get(value)).copied()
    }

    fn check_unique(&self, t: usize, id: Option<u64>, props: &[(String, String)]) -> Result<(), Conflict> {
        for (name, value) in props {
            let unique = self.types[t].property(name).is_some_and(|p| p.unique);
            if !unique || value.is_empty() {
                continue;
            }
            if let Some(existing) = self.find_unique(t, name, value).filter(|e| Some(*e) != id) {
                return Err(Conflict {
                    property: name.clone(),
                    existing,
                });
            }
        }
        Ok(())
    }

    /// Creates a record from checked values; its id.
    pub(crate) fn create(&mut self, t: usize, props: &[(String, String)], now: DateTime<Utc>) -> Result<u64, Conflict> {
        self.check_unique(t, None, props)?;
        let id = self.next_id;
        self.next_id += 1;
        let mut record = Record {
            props: BTreeMap::new(),
            created: now,
            updated: now,
            archived: None,
        };
        record.props.insert("hs_object_id".into(), id.to_string());
        record.props.insert(self.types[t].created.into(), timestamp(now));
        self.tables[t].insert(id, record);
        self.write(t, id, props, now);
        Ok(id)
    }

    /// Sets checked values on record `id` (not archived); false when there is none.
    pub(crate) fn update(
        &mut self,
        t: usize,
        id: u64,
        props: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<bool, Conflict> {
        if self.tables[t].get(&id).is_none_or(|r| r.archived.is_some()) {
            return Ok(false);
        }
        self.check_unique(t, Some(id), props)?;
        self.write(t, id, props, now);
        Ok(true)
    }

    fn write(&mut self, t: usize, id: u64, props: &[(String, String)], now: DateTime<Utc>) {
        let modified = self.types[t].modified;
        let Some(record) = self.tables[t].get_mut(&id) else {
            return;
        };
        for (name, value) in props {
            if self.types[t].property(name).is_some_and(|p| p.unique) {
                let index = self.unique[t].entry(name.clone()).or_default();
                if let Some(old) = record.props.get(name) {
                    index.remove(old);
                }
                if !value.is_empty() {
                    index.insert(value.clone(), id);
                }
            }
            if value.is_empty() {
                record.props.remove(name);
            } else {
                record.props.insert(name.clone(), value.clone());
            }
        }
        record.updated = now;
        for m in modified {
            record.props.insert((*m).to_string(), timestamp(now));
        }
    }

    /// Archives record `id` if it exists and is not archived yet.
    pub(crate) fn archive(&mut self, t: usize, id: u64, now: DateTime<Utc>) {
        if let Some(r) = self.tables[t].get_mut(&id).filter(|r| r.archived.is_none()) {
            r.archived = Some(now);
            for (name, values) in &mut self.unique[t] {
                if let Some(v) = r.props.get(name) {
                    values.remove(v);
                }
            }
        }
    }

    /// A record as the API answers it: `properties` holds `wanted` (null when unset, or
    /// the object's defaults when `wanted` is `None`) and `also` (when set).
    pub(crate) fn render(&self, t: usize, id: u64, wanted: Option<&[String]>, also: &[String]) -> Value {
        let Some(r) = self.tables[t].get(&id) else {
            return Value::Null;
        };
        let ty = &self.types[t];
        let mut props = Map::new();
        let always = ["hs_object_id", ty.created]
            .into_iter()
            .chain(ty.modified.iter().copied());
        match wanted {
            Some(names) => {
                for name in names.iter().map(String::as_str).chain(always) {
                    props.insert(name.to_string(), r.props.get(name).map_or(Value::Null, |v| json!(v)));
                }
            }
            None => {
                for name in ty.defaults.iter().copied().chain(always) {
                    props.insert(name.to_string(), r.props.get(name).map_or(Value::Null, |v| json!(v)));
                }
            }
        }
        for name in also {
            if let Some(v) = r.props.get(name) {
                props.insert(name.clone(), json!(v));
            }
        }
        let mut out = json!({
            "id": id.to_string(),
            "properties": props,
            "createdAt": timestamp(r.created),
            "updatedAt": timestamp(r.updated),
            "archived": r.archived.is_some(),
        });
        if let Some(a) = r.archived {
            out["archivedAt"] = json!(timestamp(a));
        }
        out
    }

    /// Every record of `name`: `id`, `archived` and the properties that hold a value.
    pub(crate) fn dump(&self, name: &str) -> Vec<Map<String, Value>> {
        let Ok(t) = self.index(name) else {
            return Vec::new();
        };
        self.tables[t]
            .iter()
            .map(|(id, r)| {
                let mut m = Map::new();
                m.insert("id".into(), json!(id.to_string()));
                m.insert("archived".into(), json!(r.archived.is_some()));
                for (k, v) in &r.props {
                    m.insert(k.clone(), json!(v));
                }
                m
            })
            .collect()
    }
}

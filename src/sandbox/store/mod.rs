//! The sandbox's records: one table per object, indexes on external-ID and unique fields,
//! and the per-record write rules every API shares (field access, required fields, unique
//! values, references). Writes go through an undo log so that an `allOrNone` request can be
//! rolled back.
//!
//! Every write sets `SystemModstamp`; creates and updates set `LastModifiedDate` too. A
//! deleted record goes to the object's recycle bin as it was, with `SystemModstamp` set to
//! the time of its deletion (the `deletedDate` of `sobjects/{Object}/deleted`, which
//! Salesforce takes from `SystemModstamp`); `queryAll` shows it with `IsDeleted = true`.
//! Whether a delete also moves `LastModifiedDate` is not documented; the sandbox leaves it.

use super::id;
use super::schema::{FieldType, SObject};
use super::value::{coerce, Input, RecordError};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A stored record: field values (canonical names, no nulls, no `Id`) and its timestamps.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub fields: Map<String, Value>,
    pub created: DateTime<Utc>,
    /// `LastModifiedDate`.
    pub modified: DateTime<Utc>,
    /// `SystemModstamp`: the last write of any kind, never before `modified`.
    pub stamp: DateTime<Utc>,
}

/// The records of one object.
pub(crate) struct Table {
    pub object: SObject,
    /// By 18-character id; ids grow, so this is creation order.
    pub records: BTreeMap<String, Record>,
    /// Field → index key → ids, for external-ID and unique fields.
    index: HashMap<String, HashMap<String, BTreeSet<String>>>,
    /// The delete log: deleted records by id, as they were, `stamp` the deletion time.
    /// Those not in `purged` are in the recycle bin.
    pub deleted: BTreeMap<String, Record>,
    /// Deleted records emptied from the recycle bin (Bulk `hardDelete`): `queryAll` no
    /// longer shows them; `sobjects/{Object}/deleted` still lists them.
    pub purged: HashSet<String>,
}

/// One change, to undo it: the record as it was, and its recycle-bin entry as it was.
pub(crate) struct Undo {
    table: usize,
    id: String,
    before: Option<Record>,
    bin_before: Option<Record>,
}

/// The outcome of one record's write that failed: the record's id when one exists.
#[derive(Debug)]
pub(crate) struct Failure {
    pub id: Option<String>,
    pub errors: Vec<RecordError>,
}

impl Failure {
    pub(crate) fn new(id: Option<String>, error: RecordError) -> Failure {
        Failure {
            id,
            errors: vec![error],
        }
    }
}

/// Whether the values are for a new record or an existing one (field access differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Create,
    Update,
}

pub(crate) struct Store {
    pub tables: Vec<Table>,
    next_id: u64,
    /// With `--webhook`: every change since the sender last took them, in order
    /// (rolled-back changes are taken out again).
    pub journal: Option<Vec<Change>>,
}

/// One record written, for `ebb sandbox --webhook`.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub table: usize,
    pub id: String,
    /// `created`, `updated` or `deleted`.
    pub kind: &'static str,
    /// The record after the change (before it, for a delete).
    pub record: Record,
    pub at: DateTime<Utc>,
}

impl Store {
    pub(crate) fn new(objects: Vec<SObject>) -> Store {
        let tables = objects
            .into_iter()
            .map(|object| {
                let index = object
                    .fields
                    .iter()
                    .filter(|f| f.external_id || f.unique)
                    .map(|f| (f.name.clone(), HashMap::new()))
                    .collect();
                Table {
                    object,
                    records: BTreeMap::new(),
                    index,
                    deleted: BTreeMap::new(),
                    purged: HashSet::new(),
                }
            })
            .collect();
        Store {
            tables,
            next_id: 1,
            journal: None,
        }
    }

    /// The table of an object, by name (case-insensitively).
    pub(crate) fn table(&self, name: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.object.name.eq_ignore_ascii_case(name))
    }

    /// The canonical id of `text` for a record of table `t`, or the MALFORMED_ID error.
    pub(crate) fn parse_id(&self, t: usize, text: &str) -> Result<String, RecordError> {
        let object = &self.tables[t].object;
        id::parse(text)
            .filter(|i| i.starts_with(&object.key_prefix))
            .ok_or_else(|| {
                RecordError::new(
                    "MALFORMED_ID",
                    format!("{} ID: id value of incorrect type: {text}", object.label),
                    &["Id"],
                )
            })
    }

    /// Checks that record `id` of table `t` exists: ENTITY_IS_DELETED for a deleted record;
    /// for an id that never existed Salesforce's code is not documented
    /// (docs/salesforce-protocol.md §2 lists both); the sandbox answers
    /// INVALID_CROSS_REFERENCE_KEY, the code the platform uses for ids that point at
    /// nothing.
    pub(crate) fn existing(&self, t: usize, id: &str) -> Result<(), RecordError> {
        let table = &self.tables[t];
        if table.records.contains_key(id) {
            Ok(())
        } else if table.deleted.contains_key(id) {
            Err(RecordError::new("ENTITY_IS_DELETED", "entity is deleted", &[]))
        } else {
            Err(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[],
            ))
        }
    }

    /// Checks and converts the fields of a request record (not `Id`, not `attributes`):
    /// INVALID_FIELD for unknown names, INVALID_FIELD_FOR_INSERT_UPDATE for fields the
    /// access cannot write, the value checks of [`value::coerce`]. Null is kept: it clears.
    pub(crate) fn prepare<'a>(
        &self,
        t: usize,
        access: Access,
        values: impl IntoIterator<Item = (&'a str, Input<'a>)>,
    ) -> Result<Map<String, Value>, Vec<RecordError>> {
        let object = &self.tables[t].object;
        let mut out = Map::new();
        let mut errors = Vec::new();
        let mut read_only = Vec::new();
        for (name, input) in values {
            let Some(field) = object.field(name) else {
                errors.push(RecordError::new(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type {}", object.name),
                    &[],
                ));
                continue;
            };
            if field.name == "Id" {
                errors.push(RecordError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    match access {
                        Access::Create => "cannot specify Id in an insert call",
                        Access::Update => "Id is not updateable",
                    },
                    &["Id"],
                ));
                continue;
            }
            let writable = match access {
                Access::Create => field.createable,
                Access::Update => field.updateable,
            };
            if !writable {
                read_only.push(field.name.clone());
                continue;
            }
            let is_null = matches!(input, Input::Json(Value::Null));
            if is_null {
                out.insert(field.name.clone(), Value::Null);
                continue;
            }
            match coerce(field, input) {
                Ok(mut v) => {
                    if field.kind == FieldType::Reference {
                        match self.reference(field.label.as_str(), &field.name, &field.reference_to, &v) {
                            Ok(id) => v = Value::String(id),
                            Err(e) => {
                                errors.push(e);
                                continue;
                            }
                        }
                    }
                    out.insert(field.name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        if !read_only.is_empty() {
            let names: Vec<&str> = read_only.iter().map(String::as_str).collect();
            errors.push(RecordError::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify \
                     that it is read/write for your profile or permission set.",
                    names.join(", ")
                ),
                &names,
            ));
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// A reference value: a well-formed id of a referenced object; when that object is in
    /// the sandbox, one of its records.
    fn reference(&self, label: &str, name: &str, to: &[String], v: &Value) -> Result<String, RecordError> {
        let text = v.as_str().unwrap_or_default();
        let malformed = || {
            RecordError::new(
                "MALFORMED_ID",
                format!("{label}: id value of incorrect type: {text}"),
                &[name],
            )
        };
        let id = id::parse(text).ok_or_else(malformed)?;
        let known: Vec<usize> = to.iter().filter_map(|o| self.table(o)).collect();
        if known.is_empty() {
            return Ok(id);
        }
        match known
            .iter()
            .find(|t| id.starts_with(&self.tables[**t].object.key_prefix))
        {
            None => Err(malformed()),
            Some(t) if self.tables[*t].records.contains_key(&id) => Ok(id),
            Some(_) => Err(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[name],
            )),
        }
    }

    /// The index key of a stored value of an indexed field.
    fn key(table: &Table, field: &str, v: &Value) -> String {
        let case_sensitive = table.object.field(field).is_some_and(|f| f.case_sensitive);
        match v {
            Value::String(s) if !case_sensitive => s.to_lowercase(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// How `find` compares a stored value of `field` (case-folded unless case-sensitive).
    pub(crate) fn index_key(&self, t: usize, field: &str, v: &Value) -> String {
        Store::key(&self.tables[t], field, v)
    }

    /// The ids of the records of `t` whose indexed field `field` holds `v`.
    pub(crate) fn find(&self, t: usize, field: &str, v: &Value) -> Vec<String> {
        let table = &self.tables[t];
        let key = Store::key(table, field, v);
        table
            .index
            .get(field)
            .and_then(|i| i.get(&key))
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Required and unique checks of the record `id` would become.
    fn check(
        &self,
        t: usize,
        id: Option<&str>,
        merged: &Map<String, Value>,
        changed: &Map<String, Value>,
    ) -> Vec<RecordError> {
        let table = &self.tables[t];
        let mut errors = Vec::new();
        let missing: Vec<&str> = table
            .object
            .fields
            .iter()
            // Required on create, and not nillable on update: a null clears nothing here.
            .filter(|f| f.required() || (f.updateable && !f.nillable && !f.defaulted_on_create))
            .filter(|f| merged.get(&f.name).is_none_or(Value::is_null))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            errors.push(RecordError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            ));
        }
        for (name, v) in changed {
            let unique = table.object.field(name).is_some_and(|f| f.unique);
            if !unique || v.is_null() {
                continue;
            }
            if let Some(other) = self.find(t, name, v).into_iter().find(|o| Some(o.as_str()) != id) {
                errors.push(RecordError::new(
                    "DUPLICATE_VALUE",
                    format!("duplicate value found: {name} duplicates value on record with id: {other}"),
                    &[name],
                ));
            }
        }
        errors
    }

    /// Creates a record from prepared values (`id` given only for seeded records).
    pub(crate) fn create(
        &mut self,
        t: usize,
        values: Map<String, Value>,
        now: DateTime<Utc>,
        given_id: Option<String>,
        undo: &mut Vec<Undo>,
    ) -> Result<String, Failure> {
        let errors = self.check(t, None, &values, &values);
        if !errors.is_empty() {
            return Err(Failure { id: None, errors });
        }
        let id = match given_id {
            Some(id) => id,
            None => loop {
                let id = id::make(&self.tables[t].object.key_prefix, self.next_id);
                self.next_id += 1;
                if !self.tables[t].records.contains_key(&id) {
                    break id;
                }
            },
        };
        let fields = values.into_iter().filter(|(_, v)| !v.is_null()).collect();
        let record = Record {
            fields,
            created: now,
            modified: now,
            stamp: now,
        };
        self.put(t, &id, Some(record), now, undo);
        Ok(id)
    }

    /// Updates an existing record (checked with [`Store::existing`]) with prepared values.
    pub(crate) fn update(
        &mut self,
        t: usize,
        id: &str,
        values: Map<String, Value>,
        now: DateTime<Utc>,
        undo: &mut Vec<Undo>,
    ) -> Result<(), Failure> {
        let Some(before) = self.tables[t].records.get(id) else {
            return Err(Failure::new(None, self.existing(t, id).err().unwrap_or_else(gone)));
        };
        let mut merged = before.fields.clone();
        for (k, v) in &values {
            merged.insert(k.clone(), v.clone());
        }
        let errors = self.check(t, Some(id), &merged, &values);
        if !errors.is_empty() {
            return Err(Failure {
                id: Some(id.to_string()),
                errors,
            });
        }
        let record = Record {
            fields: merged.into_iter().filter(|(_, v)| !v.is_null()).collect(),
            created: before.created,
            modified: now,
            stamp: now,
        };
        self.put(t, id, Some(record), now, undo);
        Ok(())
    }

    /// Deletes an existing record: it moves to the recycle bin.
    pub(crate) fn delete(
        &mut self,
        t: usize,
        id: &str,
        now: DateTime<Utc>,
        undo: &mut Vec<Undo>,
    ) -> Result<(), Failure> {
        self.existing(t, id).map_err(|e| Failure::new(None, e))?;
        self.put(t, id, None, now, undo);
        Ok(())
    }

    /// Empties deleted record `id` from the recycle bin (a hard delete; not undone).
    pub(crate) fn purge(&mut self, t: usize, id: &str) {
        let table = &mut self.tables[t];
        if table.deleted.contains_key(id) {
            table.purged.insert(id.to_string());
        }
    }

    /// Replaces record `id` (None: deletes it into the recycle bin at `now`), keeping the
    /// indexes and the undo log.
    fn put(&mut self, t: usize, id: &str, record: Option<Record>, now: DateTime<Utc>, undo: &mut Vec<Undo>) {
        let table = &mut self.tables[t];
        let bin_before = table.deleted.get(id).cloned();
        let before = match &record {
            Some(r) => table.records.insert(id.to_string(), r.clone()),
            None => table.records.remove(id),
        };
        match (&record, &before) {
            (Some(_), _) => {
                table.deleted.remove(id);
                table.purged.remove(id);
            }
            (None, Some(b)) => {
                let mut binned = b.clone();
                binned.stamp = now.max(b.stamp);
                table.deleted.insert(id.to_string(), binned);
            }
            (None, None) => {}
        }
        Store::reindex(table, id, before.as_ref(), record.as_ref());
        if let Some(journal) = self.journal.as_mut() {
            let change = match (&record, &before) {
                (Some(r), None) => Some(("created", r.clone())),
                (Some(r), Some(_)) => Some(("updated", r.clone())),
                (None, Some(b)) => Some(("deleted", b.clone())),
                (None, None) => None,
            };
            if let Some((kind, record)) = change {
                journal.push(Change {
                    table: t,
                    id: id.to_string(),
                    kind,
                    record,
                    at: now,
                });
            }
        }
        undo.push(Undo {
            table: t,
            id: id.to_string(),
            before,
            bin_before,
        });
    }

    fn reindex(table: &mut Table, id: &str, before: Option<&Record>, after: Option<&Record>) {
        let fields: Vec<String> = table.index.keys().cloned().collect();
        for field in fields {
            let old = before
                .and_then(|r| r.fields.get(&field))
                .map(|v| Store::key(table, &field, v));
            let new = after
                .and_then(|r| r.fields.get(&field))
                .map(|v| Store::key(table, &field, v));
            if old == new {
                continue;
            }
            let index = table.index.entry(field).or_default();
            if let Some(old) = old {
                if let Some(ids) = index.get_mut(&old) {
                    ids.remove(id);
                    if ids.is_empty() {
                        index.remove(&old);
                    }
                }
            }
            if let Some(new) = new {
                index.entry(new).or_default().insert(id.to_string());
            }
        }
    }

    /// Undoes the changes in `undo`, newest first.
    pub(crate) fn rollback(&mut self, undo: Vec<Undo>) {
        // The request's changes are the journal's last ones (requests hold the state lock).
        if let Some(journal) = self.journal.as_mut() {
            let keep = journal.len().saturating_sub(undo.len());
            journal.truncate(keep);
        }
        for u in undo.into_iter().rev() {
            let table = &mut self.tables[u.table];
            let current = match &u.before {
                Some(r) => table.records.insert(u.id.clone(), r.clone()),
                None => table.records.remove(&u.id),
            };
            match u.bin_before {
                Some(r) => {
                    table.deleted.insert(u.id.clone(), r);
                }
                None => {
                    table.deleted.remove(&u.id);
                }
            }
            Store::reindex(table, &u.id, current.as_ref(), u.before.as_ref());
        }
    }
}

fn gone() -> RecordError {
    RecordError::new("ENTITY_IS_DELETED", "entity is deleted", &[])
}

#[cfg(test)]
mod tests;

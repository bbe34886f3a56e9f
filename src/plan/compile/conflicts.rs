//! The `conflicts:` block of an outbound model (docs/conflicts.md): which fields flow both
//! ways, the two modification times, and the inbound model read as the CRM's state. The
//! model's own checks run with the model ([`Compiler::conflicts`]); `crm_state` names
//! another model, so it is checked once every model is compiled ([`link`]).

use super::sql::Selection;
use super::Compiler;
use crate::config::model::{ConflictPolicy, ModelSpec};
use crate::config::{ConnectionType, Mode};
use crate::diagnostics::{one_of, unique_close_match, Code, Diagnostic, Span};
use crate::path::FieldPath;
use crate::plan::{ConflictPlan, CrmState, DestinationPlan, MappingPlan, SourcePlan, SyncPlan, ValueSource};

/// The CRM's modification time field when `destination_modified` is left out.
pub const DEFAULT_DESTINATION_MODIFIED: &str = "LastModifiedDate";

impl Compiler<'_, '_> {
    pub(super) fn conflicts(
        &mut self,
        spec: &ModelSpec,
        source: &SourcePlan,
        selection: Option<&Selection>,
        mappings: &[MappingPlan],
        d: &DestinationPlan,
    ) -> Option<ConflictPlan> {
        let c = spec.conflicts.as_ref()?;
        let ctx = self.ctx;
        let bad = |at: Span, msg: String, help: &str| Diagnostic::new(Code::ConflictSettings, at, msg).help(help);
        if source.kind.is_crm() || source.kind == ConnectionType::Webhook || !d.kind.is_crm() {
            self.push(bad(
                ctx.key(&["conflicts"]),
                "`conflicts` is for outbound models that write a CRM".into(),
                "two-way fields are fields a warehouse model writes to a CRM that the CRM can also change; remove `conflicts` here",
            ));
            return None;
        }
        if !matches!(d.mode, Mode::Upsert | Mode::Update) {
            self.push(bad(
                ctx.key(&["conflicts"]),
                format!(
                    "`conflicts` needs `mode: upsert` or `update`, not `{}`",
                    d.mode.as_str()
                ),
                "only rows written to existing records can conflict with the CRM's own changes",
            ));
            return None;
        }
        let mapped: Vec<&str> = mappings
            .iter()
            .map(|m| m.destination.as_str())
            .filter(|f| *f != d.key_field)
            .collect();
        let (fields, fields_defaulted) = match &c.fields {
            None => (mapped.iter().map(|f| f.to_string()).collect::<Vec<_>>(), true),
            Some(list) => {
                let mut out: Vec<String> = Vec::new();
                for (i, f) in list.iter().enumerate() {
                    let idx = i.to_string();
                    let at = ctx.at(&["conflicts", "fields", idx.as_str()]);
                    if f == &d.key_field {
                        self.push(bad(
                            at,
                            format!("`{f}` is the key field; it identifies the record and cannot conflict"),
                            "list the mapped fields the CRM may also change",
                        ));
                    } else if !mapped.contains(&f.as_str()) {
                        let help = match unique_close_match(f, mapped.iter().copied()) {
                            Some(m) => format!("did you mean `{m}`? the mappings write {}", one_of(&mapped)),
                            None => format!("the mappings write {}", one_of(&mapped)),
                        };
                        self.push(bad(
                            at,
                            format!("`{f}` is not a destination field of the mappings"),
                            &help,
                        ));
                    } else if out.contains(f) {
                        self.push(bad(at, format!("`{f}` is listed twice"), "list each field once"));
                    } else {
                        out.push(f.clone());
                    }
                }
                (out, false)
            }
        };
        if fields.is_empty() && c.fields.as_ref().is_some_and(|f| f.is_empty()) {
            self.push(bad(
                ctx.at(&["conflicts", "fields"]),
                "`fields` is empty".into(),
                "list the two-way fields, or leave `fields` out for every mapped field",
            ));
        }
        if let Some(col) = &c.source_modified {
            if let Some(sel) = selection {
                if sel.has(col) == Some(false) {
                    self.column_missing(
                        Code::ColumnNotSelected,
                        &["conflicts", "source_modified"],
                        col,
                        sel,
                        "column",
                    );
                }
            }
        } else if c.policy == ConflictPolicy::NewestWins {
            self.push(bad(
                ctx.key(&["conflicts"]),
                "`policy: newest_wins` needs `source_modified`".into(),
                "name the source column holding each row's modification time, e.g. `source_modified: modified_date`",
            ));
        }
        let destination_modified = c
            .destination_modified
            .clone()
            .unwrap_or_else(|| DEFAULT_DESTINATION_MODIFIED.to_string());
        Some(ConflictPlan {
            policy: c.policy,
            fields,
            fields_defaulted,
            source_modified: c.source_modified.clone(),
            destination_modified,
            crm_state_model: c.crm_state.clone(),
            crm_state: None,
            write_back: None,
            crm_state_span: c.crm_state.as_ref().map(|_| ctx.at(&["conflicts", "crm_state"])),
            source_modified_span: ctx.at(&["conflicts", "source_modified"]),
            destination_modified_span: ctx.at(&["conflicts", "destination_modified"]),
        })
    }
}

/// Resolves every `crm_state` among `plans` to the inbound model's table, checking that
/// the model exists, is an inbound model of the same object into a table, and maps the key
/// field, every two-way field and the modification time. Returns the diagnostics with the
/// name of the model each is about; a model with an error here should lose its plan.
pub fn link(plans: &mut [SyncPlan]) -> Vec<(String, Diagnostic)> {
    let mut out = Vec::new();
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let inbound: Vec<Option<(CrmStateSource, String)>> = plans.iter().map(CrmStateSource::of).collect();
    for p in plans.iter_mut() {
        let Some(c) = p.conflicts.as_mut() else { continue };
        let (Some(name), Some(at)) = (c.crm_state_model.clone(), c.crm_state_span.clone()) else {
            // No `crm_state`: the one inbound model of the object mapping the key, if any,
            // takes the values a person decides for the CRM.
            let object = p.destination.object.as_deref();
            let mut candidates = inbound.iter().zip(&names).filter_map(|(s, n)| {
                let (src, o) = s.as_ref()?;
                (Some(o.as_str()) == object && src.column_of(&p.destination.key_field).is_some()).then_some((src, n))
            });
            if let (Some((src, n)), None) = (candidates.next(), candidates.next()) {
                c.write_back = Some(src.state(n, &p.destination.key_field, &c.fields, &c.destination_modified));
            }
            continue;
        };
        let mut fail = |msg: String, help: String| {
            out.push((
                p.name.clone(),
                Diagnostic::new(Code::ConflictSettings, at.clone(), msg).help(help),
            ))
        };
        let Some(i) = names.iter().position(|n| *n == name) else {
            let known: Vec<&str> = inbound
                .iter()
                .zip(&names)
                .filter(|(s, _)| s.is_some())
                .map(|(_, n)| n.as_str())
                .collect();
            let help = match unique_close_match(&name, known.iter().copied()) {
                Some(m) => format!("did you mean `{m}`?"),
                None if known.is_empty() => "the project has no inbound model into a table".into(),
                None => format!("inbound models: {}", one_of(&known)),
            };
            fail(
                format!("`crm_state` names `{name}`, which is not a model of the project"),
                help,
            );
            continue;
        };
        let Some((src, object)) = &inbound[i] else {
            fail(
                format!("`{name}` is not an inbound model from a CRM object into a table"),
                "name an inbound model (`source: {type: salesforce, object: …}`) whose table holds the CRM's records"
                    .into(),
            );
            continue;
        };
        if Some(object.as_str()) != p.destination.object.as_deref() {
            fail(
                format!(
                    "`{name}` reads `{object}`, but this model writes `{}`",
                    p.destination.object.as_deref().unwrap_or("")
                ),
                "name the inbound model of the object this model writes".into(),
            );
            continue;
        }
        let mut wanted: Vec<&str> = vec![p.destination.key_field.as_str()];
        wanted.extend(c.fields.iter().map(String::as_str));
        wanted.push(c.destination_modified.as_str());
        let missing: Vec<&str> = wanted.iter().copied().filter(|f| src.column_of(f).is_none()).collect();
        if !missing.is_empty() {
            fail(
                format!("`{name}` does not map {} into its table", one_of(&missing)),
                format!(
                    "add a mapping for each to `{name}` (a CRM field into a column), so its table holds the CRM's values"
                ),
            );
            continue;
        }
        let state = src.state(&name, &p.destination.key_field, &c.fields, &c.destination_modified);
        c.write_back = Some(state.clone());
        c.crm_state = Some(state);
    }
    out
}

/// What an inbound model's table offers as CRM state.
struct CrmStateSource {
    connection: String,
    table: String,
    /// (CRM field, column) of each plain mapping.
    columns: Vec<(String, String)>,
    deleted_column: Option<String>,
}

impl CrmStateSource {
    /// The table and object of an inbound model from a CRM object into a table.
    fn of(p: &SyncPlan) -> Option<(CrmStateSource, String)> {
        if !p.source.kind.is_crm() || !p.destination.kind.is_warehouse() {
            return None;
        }
        let columns = p
            .mappings
            .iter()
            .filter_map(|m| match &m.value {
                ValueSource::Path(FieldPath::Simple { column, steps }) if steps.is_empty() => {
                    Some((column.clone(), m.destination.clone()))
                }
                _ => None,
            })
            .collect();
        Some((
            CrmStateSource {
                connection: p.destination.connection.clone(),
                table: p.destination.table.clone()?,
                columns,
                deleted_column: p
                    .destination
                    .deleted_column
                    .clone()
                    .filter(|_| p.destination.on_deleted == Some(crate::config::model::OnDeleted::Soft)),
            },
            p.source.object.clone()?,
        ))
    }

    /// The table as `model`'s CRM state: the key field's column and those of the `fields`
    /// it maps.
    fn state(&self, model: &str, key_field: &str, fields: &[String], modified: &str) -> CrmState {
        CrmState {
            model: model.to_string(),
            connection: self.connection.clone(),
            table: self.table.clone(),
            key_column: self.column_of(key_field).unwrap_or_default(),
            columns: fields
                .iter()
                .filter_map(|f| Some((f.clone(), self.column_of(f)?)))
                .collect(),
            modified_column: self.column_of(modified),
            deleted_column: self.deleted_column.clone(),
        }
    }

    fn column_of(&self, field: &str) -> Option<String> {
        self.columns
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(field))
            .map(|(_, c)| c.clone())
    }
}

//! The `destination:` block: object or table, key, mode and what becomes of removed rows,
//! per destination kind; and the model's guard on deletes.

use super::Compiler;
use crate::config::model::{ModelSpec, SalesforceApi};
use crate::config::{ConnectionSpec, ConnectionType, Mode, OnRemoved};
use crate::diagnostics::{Code, Diagnostic};
use crate::plan::{DestinationPlan, Guard};

impl Compiler<'_, '_> {
    pub(super) fn destination(&mut self, spec: &ModelSpec, connection: String) -> Option<DestinationPlan> {
        let d = &spec.destination;
        let kind = d.kind;
        let ctx = self.ctx;
        if kind.is_crm() {
            if d.object.is_none() {
                self.push(
                    Diagnostic::new(
                        Code::MissingForType,
                        ctx.key(&["destination"]),
                        format!("the {kind} destination needs `object`"),
                    )
                    .help(if kind == ConnectionType::Salesforce {
                        "e.g. `object: Contact`"
                    } else {
                        "e.g. `object: contacts`"
                    }),
                );
            }
            if d.table.is_some() {
                self.irrelevant(
                    &["destination", "table"],
                    format!("a {kind} destination writes `object`"),
                );
            }
        } else if kind.is_warehouse() {
            if d.table.is_none() {
                self.push(
                    Diagnostic::new(
                        Code::MissingForType,
                        ctx.key(&["destination"]),
                        format!("the {kind} destination needs `table`"),
                    )
                    .help("e.g. `table: raw.crm_contacts`"),
                );
            }
            if d.object.is_some() {
                self.irrelevant(
                    &["destination", "object"],
                    format!("a {kind} destination writes `table`"),
                );
            }
        } else {
            for (field, set) in [("object", d.object.is_some()), ("table", d.table.is_some())] {
                if set {
                    self.irrelevant(
                        &["destination", field],
                        format!("a {kind} destination sends whole records"),
                    );
                }
            }
        }
        if d.api.is_some() && kind != ConnectionType::Salesforce {
            self.push(
                Diagnostic::new(
                    Code::ApiNotApplicable,
                    ctx.key(&["destination", "api"]),
                    format!("`api` is for Salesforce destinations, not {kind}"),
                )
                .help("remove it"),
            );
        }
        let mode = d.mode.unwrap_or(Mode::Upsert);
        let on_removed = match (mode, d.on_removed) {
            (Mode::Mirror, None) => OnRemoved::Delete,
            (_, None) => OnRemoved::Ignore,
            (_, Some(o)) => o,
        };
        if let Some(o) = d.on_removed {
            let conflict = match (mode, o) {
                (Mode::Insert, OnRemoved::Delete | OnRemoved::Clear) => Some((
                    format!(
                        "`mode: insert` only creates records, so it cannot `{}` the records of removed rows",
                        o.as_str()
                    ),
                    "use `mode: upsert` or `mode: mirror` to act on removed rows",
                )),
                (Mode::Mirror, OnRemoved::Ignore | OnRemoved::Clear) => Some((
                    format!(
                        "`mode: mirror` deletes the records of removed rows; `on_removed: {}` contradicts it",
                        o.as_str()
                    ),
                    "drop `on_removed`, or use `mode: upsert` with it",
                )),
                (Mode::Delete, OnRemoved::Delete | OnRemoved::Clear) => Some((
                    format!(
                        "`mode: delete` deletes the model's rows; `on_removed: {}` has nothing left to act on",
                        o.as_str()
                    ),
                    "drop `on_removed`",
                )),
                _ => None,
            };
            if let Some((msg, help)) = conflict {
                self.push(Diagnostic::new(Code::ModeConflict, ctx.at(&["destination", "on_removed"]), msg).help(help));
            }
        }
        // The destination key: explicit, else where the key column is mapped, else per type.
        let key_mapping = spec.mappings.iter().find(|m| {
            m.source
                .as_deref()
                .is_some_and(|s| s == d.unique_identifier || s == format!("$.{}", d.unique_identifier))
        });
        let key_field = match (&d.external_id_field, key_mapping) {
            (Some(f), Some(m)) => {
                if !f.eq_ignore_ascii_case(&m.destination) {
                    self.push(
                        Diagnostic::new(
                            Code::KeyMappedTwice,
                            ctx.at(&["destination", "external_id_field"]),
                            format!(
                                "`{}` is mapped to `{}`, but records are matched on `{f}`",
                                d.unique_identifier, m.destination
                            ),
                        )
                        .help("if both hold the same value, map the key to the external ID field instead"),
                    );
                }
                Some(f.clone())
            }
            (Some(f), None) => Some(f.clone()),
            (None, Some(m)) => Some(m.destination.clone()),
            (None, None) => match kind {
                ConnectionType::Salesforce => Some("Id".to_string()),
                ConnectionType::Http | ConnectionType::File => Some(d.unique_identifier.clone()),
                _ => {
                    self.push(
                        Diagnostic::new(
                            Code::MissingForType,
                            ctx.key(&["destination", "unique_identifier"]),
                            format!("the {kind} destination needs to know which field identifies a record"),
                        )
                        .help(format!(
                            "map `{}` to a destination field, or set `external_id_field`{}",
                            d.unique_identifier,
                            if kind == ConnectionType::Hubspot {
                                " (a unique property, e.g. `email`)"
                            } else {
                                ""
                            }
                        )),
                    );
                    None
                }
            },
        };
        if kind == ConnectionType::Salesforce
            && key_field.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("Id"))
            && matches!(mode, Mode::Upsert | Mode::Mirror)
        {
            let at = if d.external_id_field.is_some() {
                ctx.at(&["destination", "external_id_field"])
            } else {
                ctx.at(&["destination", "unique_identifier"])
            };
            self.push(
                Diagnostic::new(
                    Code::UpsertById,
                    at,
                    format!("records are matched on `Id`, which Salesforce cannot upsert by: `mode: {}` updates existing records and rejects rows whose record does not exist", mode.as_str()),
                )
                .help("to create records too, set `external_id_field` to an External ID field; or write `mode: update` to say what happens"),
            );
        }
        let (default_batch, max_batch) = match kind {
            ConnectionType::Salesforce => (
                200,
                if d.api == Some(SalesforceApi::Bulk) {
                    100_000
                } else {
                    200
                },
            ),
            ConnectionType::Hubspot => (100, 100),
            ConnectionType::Http => (self.http_batch(&connection).unwrap_or(100), 100_000),
            _ => (1000, 100_000),
        };
        if let Some(b) = d.batch_size {
            if b > max_batch {
                self.push(
                    Diagnostic::new(
                        Code::OutOfRange,
                        ctx.at(&["destination", "batch_size"]),
                        format!("`batch_size` {b} is more than a {kind} request takes ({max_batch})"),
                    )
                    .help(format!("use at most {max_batch}")),
                );
            }
        }
        Some(DestinationPlan {
            connection,
            kind,
            object: d.object.clone(),
            table: d.table.clone(),
            mode,
            key_column: d.unique_identifier.clone(),
            key_field: key_field?,
            api: (kind == ConnectionType::Salesforce).then(|| d.api.unwrap_or(SalesforceApi::Auto)),
            on_removed,
            batch_size: d.batch_size.unwrap_or(default_batch),
        })
    }

    pub(super) fn http_batch(&self, connection: &str) -> Option<u32> {
        match self.ctx.connections?.get(connection)? {
            ConnectionSpec::Http(h) => h.batch_size,
            _ => None,
        }
    }

    /// The model's guard; a model that deletes or clears the records of removed rows gets
    /// default limits on deletes, and a note saying so.
    pub(super) fn guard(&mut self, spec: &ModelSpec, d: &DestinationPlan) -> Guard {
        let removes = d.mode == Mode::Mirror || matches!(d.on_removed, OnRemoved::Delete | OnRemoved::Clear);
        let guard = Guard::new(spec.guard.as_ref(), removes);
        if guard.default_max_deletes || guard.default_max_delete_ratio {
            let ctx = self.ctx;
            let what = if d.mode == Mode::Mirror {
                "`mode: mirror` deletes".to_string()
            } else {
                format!("`on_removed: {}` {}s", d.on_removed.as_str(), d.on_removed.as_str())
            };
            let mut limits = Vec::new();
            if let Some(n) = guard.max_deletes.filter(|_| guard.default_max_deletes) {
                limits.push(format!("more than {n} records"));
            }
            if let Some(r) = guard.max_delete_ratio.filter(|_| guard.default_max_delete_ratio) {
                limits.push(format!("more than {}% of the rows confirmed", r * 100.0));
            }
            let at = if spec.destination.on_removed.is_some() {
                ctx.at(&["destination", "on_removed"])
            } else {
                ctx.at(&["destination", "mode"])
            };
            self.push(
                Diagnostic::new(
                    Code::DefaultDeleteGuard,
                    at,
                    format!(
                        "{what} the records of rows that leave the model: a run that would delete or clear {}{} is refused (the default guard)",
                        limits.join(", or "),
                        if limits.len() > 1 { "," } else { "" }
                    ),
                )
                .help("set `guard: {max_deletes: N, max_delete_ratio: R}` (or `off`) to choose; `ebb run --force` sends a refused run anyway"),
            );
        }
        guard
    }
}

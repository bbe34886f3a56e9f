//! The `destination:` block: object or table, key, mode and what becomes of removed rows,
//! per destination kind; and the model's guard on deletes.

use super::Compiler;
use crate::config::model::{ModelSpec, OnDeleted, SalesforceApi};
use crate::config::{ConnectionSpec, ConnectionType, Mode, OnRemoved};
use crate::diagnostics::{Code, Diagnostic};
use crate::plan::{DestinationPlan, Guard, SourcePlan, DEFAULT_DELETED_COLUMN};

impl Compiler<'_, '_> {
    pub(super) fn destination(
        &mut self,
        spec: &ModelSpec,
        connection: String,
        source: &SourcePlan,
    ) -> Option<DestinationPlan> {
        let d = &spec.destination;
        let kind = d.kind;
        let ctx = self.ctx;
        let inbound = source.kind.is_crm() || source.kind == ConnectionType::Webhook;
        let table = kind.is_warehouse();
        if source.kind == ConnectionType::Webhook && !table {
            self.push(
                Diagnostic::new(
                    Code::WrongRole,
                    ctx.at(&["destination", "type"]),
                    format!("a webhook source writes its events into a warehouse table, not a {kind} destination"),
                )
                .help("use `type: duckdb` or `type: postgres` with `table:`"),
            );
        }
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
            if let Some(t) = &d.table {
                self.table_name(t);
            }
            if d.external_id_field.is_some() {
                self.irrelevant(
                    &["destination", "external_id_field"],
                    "a table's key column is the one `unique_identifier` is mapped to".to_string(),
                );
            }
            if inbound && d.on_removed.is_some() {
                self.irrelevant(
                    &["destination", "on_removed"],
                    "records deleted in the CRM follow `on_deleted`".to_string(),
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
        if d.on_deleted.is_some() && !(table && inbound) {
            self.irrelevant(
                &["destination", "on_deleted"],
                if table {
                    format!(
                        "a {} source has no deleted records; rows that leave the model follow `mode` and `on_removed`",
                        source.kind
                    )
                } else {
                    format!("a {kind} destination takes `on_removed` for rows that leave the model")
                },
            );
        }
        let mode = d.mode.unwrap_or(Mode::Upsert);
        self.table_mode(spec, source, mode);
        // An inbound table ignores `on_removed` (reported above).
        let written_on_removed = d.on_removed.filter(|_| !(table && inbound));
        let on_removed = match (mode, written_on_removed) {
            (Mode::Mirror, None) => OnRemoved::Delete,
            (_, None) => OnRemoved::Ignore,
            (_, Some(o)) => o,
        };
        if let Some(o) = written_on_removed {
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
        let external_id_field = if table { None } else { d.external_id_field.as_ref() };
        let key_field = match (external_id_field, key_mapping) {
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
                _ if table => {
                    self.push(
                        Diagnostic::new(
                            Code::MissingForType,
                            ctx.at(&["destination", "unique_identifier"]),
                            format!(
                                "`unique_identifier` `{}` is not mapped, so the table has no key column",
                                d.unique_identifier
                            ),
                        )
                        .help(format!(
                            "map it to the key column, e.g. `- source: {}` / `destination: {}`",
                            d.unique_identifier,
                            if inbound {
                                "crm_id".to_string()
                            } else {
                                d.unique_identifier.to_ascii_lowercase()
                            }
                        )),
                    );
                    None
                }
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
            // Warehouse tables (inbound): rows a write transaction, 50,000 as a Bulk results
            // page: fewer, larger transactions (benches/inbound.rs, 100k Contacts into DuckDB:
            // 1.08 s against 3.85 s at 1,000 a write), for about 80 MB more at peak.
            ConnectionType::Duckdb | ConnectionType::Postgres | ConnectionType::Snowflake => (50_000, 100_000),
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
        let on_deleted = (table && inbound).then(|| d.on_deleted.unwrap_or(OnDeleted::Soft));
        // The field saying a record is deleted: HubSpot's `archived`, else `IsDeleted`.
        let deleted_field = if source.kind == ConnectionType::Hubspot {
            "archived"
        } else {
            "IsDeleted"
        };
        let deleted_mapping = spec.mappings.iter().find(|m| {
            m.source.as_deref().is_some_and(|s| {
                s.eq_ignore_ascii_case(deleted_field)
                    || s.strip_prefix("$.")
                        .is_some_and(|s| s.eq_ignore_ascii_case(deleted_field))
            })
        });
        let (deleted_column, deleted_column_added) = match (on_deleted, deleted_mapping) {
            (Some(OnDeleted::Soft), Some(m)) => (Some(m.destination.clone()), false),
            (Some(OnDeleted::Soft), None) => (Some(DEFAULT_DELETED_COLUMN.to_string()), true),
            _ => (None, false),
        };
        // Append tells the versions of a record apart by the cursor, where it is mapped.
        let version_column = if table && inbound && mode == Mode::Append {
            self.version_column(spec, source)
        } else {
            None
        };
        // The added deleted column must not be a column a mapping already writes.
        if let (Some(col), true) = (&deleted_column, deleted_column_added) {
            if let Some(i) = spec
                .mappings
                .iter()
                .position(|m| m.destination.eq_ignore_ascii_case(col))
            {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateDestination,
                        ctx.at(&["mappings", &i.to_string(), "destination"]),
                        format!(
                            "column `{}` is also where `on_deleted: soft` marks deleted records, as `{deleted_field}` is not mapped",
                            spec.mappings[i].destination
                        ),
                    )
                    .help(format!("map `{deleted_field}` to the deleted column of your choice, rename this column, or use `on_deleted: hard`")),
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
            on_deleted,
            deleted_column,
            deleted_column_added,
            version_column,
        })
    }

    /// The column the cursor is mapped to, for `mode: append`; an error without one.
    fn version_column(&mut self, spec: &ModelSpec, source: &SourcePlan) -> Option<String> {
        let at = self.ctx.at(&["destination", "mode"]);
        let Some(cursor) = source.read.as_ref().and_then(|r| r.cursor.as_deref()) else {
            self.push(
                Diagnostic::new(
                    Code::ModeConflict,
                    at,
                    "`mode: append` keeps a row per version of a record, told apart by the cursor, but `incremental: off` has none",
                )
                .help("set `incremental` (e.g. `SystemModstamp`) and map it to a column, or use `mode: upsert`"),
            );
            return None;
        };
        let mapped = spec.mappings.iter().find(|m| {
            m.source
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(cursor) || s.eq_ignore_ascii_case(&format!("$.{cursor}")))
        });
        match mapped {
            Some(m) => Some(m.destination.clone()),
            None => {
                self.push(
                    Diagnostic::new(
                        Code::MissingForType,
                        at,
                        format!(
                            "`mode: append` tells the versions of a record apart by the cursor `{cursor}`, which no mapping writes"
                        ),
                    )
                    .help(format!(
                        "map it to a column, e.g. `- source: {cursor}` / `destination: {}`",
                        cursor.to_ascii_lowercase()
                    )),
                );
                None
            }
        }
    }

    /// `table:` is `name` or `schema.name`, each a plain identifier the writers can quote
    /// the same way in every warehouse.
    fn table_name(&mut self, t: &str) {
        let parts: Vec<&str> = t.split('.').collect();
        let ident = |p: &str| {
            let mut c = p.chars();
            c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
                && p.len() <= 63
        };
        let problem = if parts.len() > 2 {
            Some(format!(
                "table `{t}` has {} parts; write `name` or `schema.name`",
                parts.len()
            ))
        } else {
            parts.iter().find(|p| !ident(p)).map(|p| match *p {
                "" => format!("table `{t}` has an empty name part"),
                p => format!("`{p}` in table `{t}` is not a plain identifier"),
            })
        };
        if let Some(msg) = problem {
            self.push(
                Diagnostic::new(Code::BadTableName, self.ctx.at(&["destination", "table"]), msg).help(
                    "write `name` or `schema.name` with letters, digits and `_` (not starting with a digit, at most 63 each), e.g. `raw.crm_contacts`",
                ),
            );
        }
    }

    /// The modes a table takes (`upsert`, `append`, `mirror`), `append` only for tables,
    /// and `mirror` only with full reads.
    fn table_mode(&mut self, spec: &ModelSpec, source: &SourcePlan, mode: Mode) {
        let kind = spec.destination.kind;
        let at = || self.ctx.at(&["destination", "mode"]);
        let problem = match mode {
            Mode::Update | Mode::Insert | Mode::Delete if kind.is_warehouse() => Some((
                format!("`mode: {}` is not a mode of a {kind} table", mode.as_str()),
                "a table takes `upsert` (one row per record, by key), `append` (a row per version of a record) or `mirror` (upsert, and delete rows no longer read)".to_string(),
            )),
            Mode::Append if !kind.is_warehouse() => Some((
                format!("`mode: append` writes table rows; a {kind} destination has no such mode"),
                "use `upsert`, `update`, `insert`, `mirror` or `delete`".to_string(),
            )),
            Mode::Mirror | Mode::Append if source.kind == ConnectionType::Webhook => Some((
                format!("`mode: {}` does not fit a webhook source, which applies each record's newest event", mode.as_str()),
                "use `mode: upsert` (the default); `customer.deleted`-style events delete rows (`on_deleted`)".to_string(),
            )),
            Mode::Mirror if source.read.as_ref().is_some_and(|r| r.cursor.is_some()) => Some((
                format!(
                    "`mode: mirror` deletes rows whose records were not read, but an incremental source reads only records changed since the last run (by `{}`)",
                    source.read.as_ref().and_then(|r| r.cursor.as_deref()).unwrap_or_default()
                ),
                "set `incremental: off` on the source to read every record on every run, or use `mode: upsert` (deletes in the CRM still arrive, as `IsDeleted`, and follow `on_deleted`)".to_string(),
            )),
            _ => None,
        };
        if let Some((msg, help)) = problem {
            let span = at();
            self.push(Diagnostic::new(Code::ModeConflict, span, msg).help(help));
        }
    }

    pub(super) fn http_batch(&self, connection: &str) -> Option<u32> {
        match self.ctx.connections?.get(connection)? {
            ConnectionSpec::Http(h) => h.batch_size,
            _ => None,
        }
    }

    /// The model's guard; a model that deletes or clears the records of removed rows gets
    /// default limits on deletes, and a note saying so.
    pub(super) fn guard(&mut self, spec: &ModelSpec, source: &SourcePlan, d: &DestinationPlan) -> Guard {
        if source.read.as_ref().is_some_and(|r| r.cursor.is_some()) || source.kind == ConnectionType::Webhook {
            // An incremental inbound run (or a webhook model's events) writes every change it reads and removes nothing
            // for not being read: there is no mass change to compare with a snapshot.
            if spec.guard.is_some() {
                self.irrelevant(
                    &["guard"],
                    "an incremental inbound read writes every change it reads and deletes nothing it did not read"
                        .to_string(),
                );
            }
            return Guard::default();
        }
        let removes = d.mode == Mode::Mirror
            || (!source.kind.is_crm() && matches!(d.on_removed, OnRemoved::Delete | OnRemoved::Clear));
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

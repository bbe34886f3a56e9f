//! Model → `SyncPlan`: the semantic checks.
//!
//! Every check that needs no IO lives here, so `ebb validate` and `ebb plan` (and later
//! `ebb run`) agree by construction: validation is compilation with the plan thrown away.
//! Problems are collected, never raised; a plan comes back only when there is no error.

use super::{DestinationPlan, Guard, MappingPlan, PlanSpans, SourcePlan, SyncPlan, ValueSource};
use crate::config::model::{ModelSpec, SalesforceApi};
use crate::config::{ConnectionSpec, ConnectionType, Mode, OnRemoved};
use crate::diagnostics::{close_matches, one_of, unique_close_match, Code, Diagnostic, Severity, SourceFile, Span};
use crate::path::FieldPath;
use crate::schedule::{self, Schedule, ScheduleKind};
use crate::transform::Transform;
use crate::validate::sql::{self, Selection};
use crate::yaml::Node;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What compiling one model needs to know.
pub struct ModelCtx<'a> {
    pub file: &'a Arc<SourceFile>,
    /// The root node of the model file.
    pub root: &'a Node,
    /// Position of the model in the file's `models:` list.
    pub index: usize,
    /// The project's connections; `None` when `ebb.yaml` itself did not load, in which case
    /// connection checks are skipped rather than reported against every model.
    pub connections: Option<&'a BTreeMap<String, ConnectionSpec>>,
    /// Paths (relative to the file root) that already have a schema error.
    pub skip: &'a [Vec<String>],
}

impl ModelCtx<'_> {
    fn full(&self, rel: &[&str]) -> Vec<String> {
        let mut p = vec!["models".to_string(), self.index.to_string()];
        p.extend(rel.iter().map(|s| s.to_string()));
        p
    }

    /// The value at `rel` (or the closest existing parent).
    fn at(&self, rel: &[&str]) -> Span {
        let (node, _) = self.root.deepest(&self.full(rel));
        node.pos.in_file(self.file)
    }

    /// The key of `rel` when written, else the value.
    fn key(&self, rel: &[&str]) -> Span {
        match self.root.lookup(&self.full(rel)) {
            Some((_, Some(k))) => k.in_file(self.file),
            _ => self.at(rel),
        }
    }

    fn node(&self, rel: &[&str]) -> Option<&Node> {
        self.root.lookup(&self.full(rel)).map(|(n, _)| n)
    }

    /// A point inside a scalar value: `offset` bytes into its text, on its first line.
    fn inside(&self, rel: &[&str], offset: usize) -> Span {
        let Some(node) = self.node(rel) else {
            return self.at(rel);
        };
        let quote = self
            .file
            .line(node.pos.line)
            .and_then(|l| l.chars().nth(node.pos.col - 1))
            .is_some_and(|c| c == '"' || c == '\'');
        let text = node.as_str().unwrap_or("");
        let chars = text
            .get(..offset.min(text.len()))
            .map(|s| s.chars().count())
            .unwrap_or(0);
        let col = node.pos.col + chars + usize::from(quote);
        Span {
            file: self.file.clone(),
            line: node.pos.line,
            col,
            end_line: node.pos.line,
            end_col: col + 1,
        }
    }

    fn skipped(&self, rel: &[&str]) -> bool {
        let full = self.full(rel);
        self.skip.iter().any(|s| full.starts_with(s))
    }
}

/// Compiles one model. Diagnostics come back in any case; the plan only without errors.
pub fn compile_model(ctx: &ModelCtx<'_>, spec: &ModelSpec) -> (Option<SyncPlan>, Vec<Diagnostic>) {
    let mut c = Compiler { ctx, diags: Vec::new() };
    let plan = c.compile(spec);
    let failed = c.diags.iter().any(|d| d.severity == Severity::Error);
    (plan.filter(|_| !failed), c.diags)
}

struct Compiler<'a, 'b> {
    ctx: &'b ModelCtx<'a>,
    diags: Vec<Diagnostic>,
}

enum Role {
    Source,
    Destination,
}

impl Role {
    fn key(&self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }
}

impl Compiler<'_, '_> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn compile(&mut self, spec: &ModelSpec) -> Option<SyncPlan> {
        let source_conn = self.connection(Role::Source, spec.source.kind, spec.source.connection.as_deref());
        let dest_conn = self.connection(
            Role::Destination,
            spec.destination.kind,
            spec.destination.connection.as_deref(),
        );
        let (source, selection) = self.source(spec, source_conn.clone());
        let mappings = self.mappings(spec, &selection, &source);
        let destination = self.destination(spec, dest_conn.clone());
        let schedule = self.schedule(spec);
        let destination = destination?;
        let guard = self.guard(spec, &destination);
        Some(SyncPlan {
            name: spec.name.clone(),
            description: spec.description.clone(),
            file: self.ctx.file.path.clone(),
            source,
            destination,
            mappings,
            schedule,
            guard,
            spans: PlanSpans {
                source: if spec.source.connection.is_some() {
                    self.ctx.at(&["source", "connection"])
                } else {
                    self.ctx.at(&["source", "type"])
                },
                query: self.ctx.at(&["source", "query"]),
                key: self.ctx.at(&["destination", "unique_identifier"]),
                object: if spec.destination.object.is_some() {
                    self.ctx.at(&["destination", "object"])
                } else if spec.destination.table.is_some() {
                    self.ctx.at(&["destination", "table"])
                } else {
                    self.ctx.at(&["destination", "type"])
                },
                key_field: if spec.destination.external_id_field.is_some() {
                    self.ctx.at(&["destination", "external_id_field"])
                } else {
                    self.ctx.at(&["destination", "unique_identifier"])
                },
                mode: if spec.destination.mode.is_some() {
                    self.ctx.at(&["destination", "mode"])
                } else {
                    self.ctx.key(&["destination"])
                },
            },
        })
    }

    /// Resolves the connection a source or destination names or implies.
    fn connection(&mut self, role: Role, kind: ConnectionType, name: Option<&str>) -> String {
        let r = role.key();
        let ok_role = match role {
            Role::Source => kind.can_be_source(),
            Role::Destination => kind.can_be_destination(),
        };
        if !ok_role {
            let valid: Vec<&str> = ConnectionType::ALL
                .iter()
                .filter(|k| match role {
                    Role::Source => k.can_be_source(),
                    Role::Destination => k.can_be_destination(),
                })
                .map(|k| k.as_str())
                .collect();
            self.push(
                Diagnostic::new(
                    Code::WrongRole,
                    self.ctx.at(&[r, "type"]),
                    format!("`{kind}` cannot be a {r}"),
                )
                .help(format!("a {r} is {}", one_of(&valid))),
            );
        }
        let Some(conns) = self.ctx.connections else {
            return name.unwrap_or(kind.as_str()).to_string();
        };
        let names: Vec<&str> = conns.keys().map(String::as_str).collect();
        match name {
            Some(n) => match conns.get(n) {
                None => {
                    let help = match unique_close_match(n, names.iter().copied()) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None if names.is_empty() => "ebb.yaml defines no connections".to_string(),
                        None => format!("connections in ebb.yaml: {}", one_of(&names)),
                    };
                    self.push(
                        Diagnostic::new(
                            Code::UnknownConnection,
                            self.ctx.at(&[r, "connection"]),
                            format!("unknown connection `{n}`"),
                        )
                        .help(help),
                    );
                }
                Some(c) if c.kind() != kind => {
                    let same: Vec<&str> = conns
                        .iter()
                        .filter(|(_, c)| c.kind() == kind)
                        .map(|(n, _)| n.as_str())
                        .collect();
                    let help = if same.is_empty() {
                        format!("set `type: {}` to use it", c.kind())
                    } else {
                        format!(
                            "set `type: {}`, or name a {kind} connection: {}",
                            c.kind(),
                            one_of(&same)
                        )
                    };
                    self.push(
                        Diagnostic::new(
                            Code::ConnectionTypeMismatch,
                            self.ctx.at(&[r, "connection"]),
                            format!(
                                "connection `{n}` is a {} connection, but the {r} type is `{kind}`",
                                c.kind()
                            ),
                        )
                        .help(help),
                    );
                }
                Some(_) => {}
            },
            None => {
                let same: Vec<&str> = conns
                    .iter()
                    .filter(|(_, c)| c.kind() == kind)
                    .map(|(n, _)| n.as_str())
                    .collect();
                match same.as_slice() {
                    [one] => return (*one).to_string(),
                    [] if ok_role => self.push(
                        Diagnostic::new(
                            Code::NoConnection,
                            self.ctx.at(&[r, "type"]),
                            format!("ebb.yaml has no `{kind}` connection"),
                        )
                        .help(if names.is_empty() {
                            format!("add a `{kind}` connection under `connections:` in ebb.yaml")
                        } else {
                            format!(
                                "add a `{kind}` connection under `connections:` in ebb.yaml, or use one of {}",
                                one_of(&names)
                            )
                        }),
                    ),
                    [] => {}
                    many => self.push(
                        Diagnostic::new(
                            Code::AmbiguousConnection,
                            self.ctx.at(&[r, "type"]),
                            format!("ebb.yaml has {} `{kind}` connections; which one is meant?", many.len()),
                        )
                        .help(format!("add `connection:` with one of {}", one_of(many))),
                    ),
                }
            }
        }
        name.unwrap_or(kind.as_str()).to_string()
    }

    fn irrelevant(&mut self, path: &[&str], why: String) {
        self.push(
            Diagnostic::new(
                Code::IrrelevantField,
                self.ctx.key(path),
                format!("`{}` is ignored: {why}", path[path.len() - 1]),
            )
            .help("remove it"),
        );
    }

    fn source(&mut self, spec: &ModelSpec, connection: String) -> (SourcePlan, Option<Selection>) {
        let s = &spec.source;
        let mut selection = None;
        if s.kind.is_warehouse() {
            for (field, set) in [
                ("object", s.object.is_some()),
                ("fields", s.fields.is_some()),
                ("incremental", s.incremental.is_some()),
            ] {
                if set {
                    self.irrelevant(
                        &["source", field],
                        format!("a {} source reads rows with `query`", s.kind),
                    );
                }
            }
            match &s.query {
                None => self.push(
                    Diagnostic::new(
                        Code::MissingForType,
                        self.ctx.key(&["source"]),
                        format!("the {} source needs `query`", s.kind),
                    )
                    .help("add `query: SELECT …` with the rows to sync"),
                ),
                Some(q) => selection = self.query(q, s.kind),
            }
        } else if s.kind.is_crm() {
            if s.query.is_some() {
                self.irrelevant(
                    &["source", "query"],
                    format!("a {} source reads `object` and `fields`", s.kind),
                );
            }
            if s.object.is_none() {
                self.push(
                    Diagnostic::new(
                        Code::MissingForType,
                        self.ctx.key(&["source"]),
                        format!("the {} source needs `object`", s.kind),
                    )
                    .help("e.g. `object: Contact`"),
                );
            }
        }
        let columns = match &selection {
            Some(Selection::Known(_)) => selection
                .as_ref()
                .map(|s| s.names().into_iter().map(str::to_string).collect()),
            _ => None,
        };
        let fields = s.fields.clone().unwrap_or_else(|| {
            spec.mappings
                .iter()
                .filter_map(|m| m.source.as_deref())
                .filter_map(|p| FieldPath::parse(p).ok().and_then(|p| p.column().map(str::to_string)))
                .collect()
        });
        let plan = SourcePlan {
            connection,
            kind: s.kind,
            query: s.query.clone(),
            object: s.object.clone(),
            fields: if s.kind.is_crm() { fields } else { Vec::new() },
            incremental: s.incremental.clone(),
            columns,
        };
        (plan, selection)
    }

    fn query(&mut self, q: &str, kind: ConnectionType) -> Option<Selection> {
        match sql::analyze(q, kind) {
            Ok(sel) => {
                if let Selection::Unknown { wildcard: true } = sel {
                    self.push(
                        Diagnostic::new(
                            Code::SelectStar,
                            self.ctx.at(&["source", "query"]),
                            "the query selects `*`: its columns are only known when it runs",
                        )
                        .help("name the columns to have them checked here (`ebb validate --connect` checks them against the warehouse)"),
                    );
                }
                Some(sel)
            }
            Err(e) if e.not_a_query => {
                self.push(Diagnostic::new(
                    Code::SqlNotQuery,
                    self.ctx.at(&["source", "query"]),
                    e.message,
                ));
                None
            }
            Err(e) => {
                let span = self.query_span(e.line, e.col);
                self.push(
                    Diagnostic::new(
                        Code::SqlSyntax,
                        span,
                        format!("the query does not parse as {kind} SQL: {}", e.message),
                    )
                    .help(format!(
                        "the query is checked with the {kind} dialect of the connection"
                    )),
                );
                None
            }
        }
    }

    /// Maps a 1-based line:column of the query text to the file.
    fn query_span(&self, line: usize, col: usize) -> Span {
        let Some(node) = self.ctx.node(&["source", "query"]) else {
            return self.ctx.at(&["source", "query"]);
        };
        let file = self.ctx.file;
        let key_line = self.ctx.key(&["source", "query"]).line;
        let indicator = file.line(node.pos.line).and_then(|t| t.chars().nth(node.pos.col - 1));
        let (l, c) = if node.pos.line > key_line {
            // A block scalar (`query: |`) starts at its first content character; its
            // lines keep their place in the file, shifted by the block's indentation.
            (node.pos.line + line - 1, node.pos.col + col - 1)
        } else if line == 1 {
            let quoted = matches!(indicator, Some('"' | '\''));
            (node.pos.line, node.pos.col + col - 1 + usize::from(quoted))
        } else {
            (node.pos.line + line - 1, col)
        };
        Span {
            file: file.clone(),
            line: l,
            col: c.max(1),
            end_line: l,
            end_col: c.max(1) + 1,
        }
    }

    fn column_missing(&mut self, code: Code, path: &[&str], column: &str, selection: &Selection, what: &str) {
        let names = selection.names();
        let help = match unique_close_match(column, names.iter().copied()) {
            Some(m) => format!("did you mean `{m}`? the query selects {}", one_of(&names)),
            None => format!("the query selects {}", one_of(&names)),
        };
        self.push(
            Diagnostic::new(
                code,
                self.ctx.at(path),
                format!("{what} `{column}` is not selected by the query"),
            )
            .help(help),
        );
    }

    fn mappings(&mut self, spec: &ModelSpec, selection: &Option<Selection>, source: &SourcePlan) -> Vec<MappingPlan> {
        let crm_fields: Option<Vec<String>> = (spec.source.kind.is_crm())
            .then(|| spec.source.fields.clone())
            .flatten();
        let key = spec.destination.unique_identifier.as_str();
        if !self.ctx.skipped(&["destination", "unique_identifier"]) {
            if let Some(sel) = selection {
                if sel.has(key) == Some(false) {
                    self.column_missing(
                        Code::KeyNotSelected,
                        &["destination", "unique_identifier"],
                        key,
                        sel,
                        "the `unique_identifier` column",
                    );
                }
            }
            if let Some(fields) = &crm_fields {
                if !fields.iter().any(|f| f.eq_ignore_ascii_case(key)) {
                    self.push(
                        Diagnostic::new(
                            Code::KeyNotSelected,
                            self.ctx.at(&["destination", "unique_identifier"]),
                            format!("the `unique_identifier` field `{key}` is not in the source's `fields`"),
                        )
                        .help(format!("add `{key}` to `source.fields`")),
                    );
                }
            }
        }
        let case_insensitive = spec.destination.kind.is_crm();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut plans = Vec::new();
        if spec.mappings.is_empty() && spec.destination.mode != Some(Mode::Delete) {
            self.push(
                Diagnostic::new(
                    Code::NoMappings,
                    self.ctx.key(&["mappings"]),
                    "the model maps no field, so it would send nothing",
                )
                .help("add `- source: column` / `destination: Field` entries"),
            );
        }
        for (i, m) in spec.mappings.iter().enumerate() {
            let idx = i.to_string();
            let base = ["mappings", idx.as_str()];
            let value = match (&m.source, &m.constant) {
                (Some(_), Some(_)) => {
                    self.push(
                        Diagnostic::new(
                            Code::MappingShape,
                            self.ctx.key(&[base[0], base[1], "constant"]),
                            "a mapping has both `source` and `constant`",
                        )
                        .help("keep `source` to read a column, or `constant` to send a fixed value"),
                    );
                    None
                }
                (None, None) => {
                    self.push(
                        Diagnostic::new(
                            Code::MappingShape,
                            self.ctx.key(&[base[0], base[1], "destination"]),
                            "a mapping needs `source` or `constant`",
                        )
                        .help("add `source: column` (or `constant: value`)"),
                    );
                    None
                }
                (None, Some(c)) => Some(ValueSource::Constant(c.clone())),
                (Some(p), None) => match FieldPath::parse(p) {
                    Err(e) => {
                        self.push(
                            Diagnostic::new(Code::BadPath, self.ctx.inside(&[base[0], base[1], "source"], e.offset), e.message)
                                .help("a source is `column`, `json_column.key.key` or a JSONPath like `$.json_column.list[0]`"),
                        );
                        None
                    }
                    Ok(path) => {
                        if let (Some(col), Some(sel)) = (path.column(), selection) {
                            if sel.has(col) == Some(false) {
                                self.column_missing(
                                    Code::ColumnNotSelected,
                                    &[base[0], base[1], "source"],
                                    col,
                                    sel,
                                    "column",
                                );
                            }
                        }
                        if let (Some(col), Some(fields)) = (path.column(), &crm_fields) {
                            if !fields.iter().any(|f| f.eq_ignore_ascii_case(col)) {
                                self.push(
                                    Diagnostic::new(
                                        Code::FieldNotFetched,
                                        self.ctx.at(&[base[0], base[1], "source"]),
                                        format!("field `{col}` is not in the source's `fields`"),
                                    )
                                    .help(format!(
                                        "add `{col}` to `source.fields` ({})",
                                        source.object.as_deref().unwrap_or("the object")
                                    )),
                                );
                            }
                        }
                        Some(ValueSource::Path(path))
                    }
                },
            };
            let transforms = self.transforms(m, &base);
            let dest_key = if case_insensitive {
                m.destination.to_ascii_lowercase()
            } else {
                m.destination.clone()
            };
            match seen.get(&dest_key) {
                Some(&first) => {
                    let first_line = self.ctx.at(&["mappings", &first.to_string(), "destination"]).line;
                    self.push(
                        Diagnostic::new(
                            Code::DuplicateDestination,
                            self.ctx.at(&[base[0], base[1], "destination"]),
                            format!("destination field `{}` is mapped twice", m.destination),
                        )
                        .note(format!("first mapped on line {first_line}"))
                        .help("each destination field takes one value; remove one mapping"),
                    );
                }
                None => {
                    seen.insert(dest_key, i);
                }
            }
            if let (Some(value), Some(transforms)) = (value, transforms) {
                let value_key = if m.source.is_some() { "source" } else { "constant" };
                let transform_spans = match &m.transform {
                    Some(crate::config::model::Transforms::Many(list)) => (0..list.len())
                        .map(|j| self.ctx.at(&[base[0], base[1], "transform", &j.to_string()]))
                        .collect(),
                    Some(_) => vec![self.ctx.at(&[base[0], base[1], "transform"])],
                    None => Vec::new(),
                };
                plans.push(MappingPlan {
                    destination: m.destination.clone(),
                    value,
                    transforms,
                    source_span: self.ctx.at(&[base[0], base[1], value_key]),
                    transform_spans,
                    destination_span: self.ctx.at(&[base[0], base[1], "destination"]),
                });
            }
        }
        plans
    }

    fn transforms(&mut self, m: &crate::config::MappingSpec, base: &[&str; 2]) -> Option<Vec<Transform>> {
        let list = m.transform.as_ref().map(|t| t.as_slice()).unwrap_or_default();
        let many = matches!(m.transform, Some(crate::config::model::Transforms::Many(_)));
        let mut out = Vec::new();
        let mut ok = true;
        for (j, t) in list.iter().enumerate() {
            match Transform::parse(t) {
                Ok(t) => out.push(t),
                Err(e) => {
                    ok = false;
                    let jj = j.to_string();
                    let path: Vec<&str> = if many {
                        vec![base[0], base[1], "transform", &jj]
                    } else {
                        vec![base[0], base[1], "transform"]
                    };
                    let code = if e.unknown {
                        Code::UnknownTransform
                    } else {
                        Code::BadTransformArgs
                    };
                    let mut d = Diagnostic::new(code, self.ctx.at(&path), e.message);
                    if let Some(h) = e.help {
                        d = d.help(h);
                    } else if let Some((_, sig)) = crate::transform::SIGNATURES
                        .iter()
                        .find(|(n, _)| t.trim().starts_with(n))
                    {
                        d = d.help(format!("usage: `{sig}`"));
                    }
                    self.push(d);
                }
            }
        }
        ok.then_some(out)
    }

    fn destination(&mut self, spec: &ModelSpec, connection: String) -> Option<DestinationPlan> {
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

    fn http_batch(&self, connection: &str) -> Option<u32> {
        match self.ctx.connections?.get(connection)? {
            ConnectionSpec::Http(h) => h.batch_size,
            _ => None,
        }
    }

    /// The model's guard; a model that deletes or clears the records of removed rows gets
    /// default limits on deletes, and a note saying so.
    fn guard(&mut self, spec: &ModelSpec, d: &DestinationPlan) -> Guard {
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

    fn schedule(&mut self, spec: &ModelSpec) -> Option<Schedule> {
        let s = spec.schedule.as_ref()?;
        let ctx = self.ctx;
        let tz = match &s.timezone {
            None => chrono_tz::UTC,
            Some(name) => match schedule::parse_timezone(name) {
                Ok(tz) => tz,
                Err(e) => {
                    self.push(
                        Diagnostic::new(Code::BadTimezone, ctx.at(&["schedule", "timezone"]), e.message).help(e.help),
                    );
                    return None;
                }
            },
        };
        let kind = match (&s.interval, &s.cron) {
            (Some(_), Some(_)) => {
                self.push(
                    Diagnostic::new(
                        Code::ScheduleShape,
                        ctx.key(&["schedule", "cron"]),
                        "a schedule has both `interval` and `cron`",
                    )
                    .help("keep one of them"),
                );
                return None;
            }
            (None, None) => {
                self.push(
                    Diagnostic::new(
                        Code::ScheduleShape,
                        ctx.key(&["schedule"]),
                        "a schedule needs `interval` or `cron`",
                    )
                    .help("e.g. `interval: hourly` or `cron: \"0 6 * * *\"`"),
                );
                return None;
            }
            (Some(i), None) => match schedule::parse_interval(i) {
                Ok(k) => {
                    if let ScheduleKind::Every { secs } = k {
                        if secs < 60 {
                            self.push(
                                Diagnostic::new(
                                    Code::ShortInterval,
                                    ctx.at(&["schedule", "interval"]),
                                    format!("interval `{i}` runs the model more than once a minute"),
                                )
                                .help("each run reads the whole model; a minute or more is usual"),
                            );
                        }
                    }
                    k
                }
                Err(e) => {
                    self.push(
                        Diagnostic::new(Code::BadInterval, ctx.at(&["schedule", "interval"]), e.message).help(e.help),
                    );
                    return None;
                }
            },
            (None, Some(c)) => match schedule::parse_cron(c) {
                Ok(k) => k,
                Err(e) => {
                    self.push(Diagnostic::new(Code::BadCron, ctx.at(&["schedule", "cron"]), e.message).help(e.help));
                    return None;
                }
            },
        };
        let written = s.interval.clone().or_else(|| s.cron.clone()).unwrap_or_default();
        Some(Schedule { kind, tz, written })
    }
}

/// Reports models that share a name, at the later one. `models` is (name, span) in
/// project order.
pub fn duplicate_names(models: &[(String, Span)]) -> Vec<Diagnostic> {
    let mut first: HashMap<&str, &Span> = HashMap::new();
    let mut out = Vec::new();
    for (name, span) in models {
        match first.get(name.as_str()) {
            Some(f) => out.push(
                Diagnostic::new(
                    Code::DuplicateModel,
                    span.clone(),
                    format!("a model named `{name}` already exists"),
                )
                .note(format!("first defined at {}:{}:{}", f.path().display(), f.line, f.col))
                .help("model names are unique across the project; rename one"),
            ),
            None => {
                first.insert(name, span);
            }
        }
    }
    out
}

/// "did you mean" for names of models given on the command line.
pub fn suggest_model(name: &str, known: &[&str]) -> String {
    match close_matches(name, known.iter().copied()).first() {
        Some(m) => format!("did you mean `{m}`?"),
        None if known.is_empty() => "the project has no models".into(),
        None => format!("models: {}", known.join(", ")),
    }
}

//! Model → `SyncPlan`: the semantic checks.
//!
//! Every check that needs no IO lives here, so `ebb validate` and `ebb plan` (and later
//! `ebb run`) agree by construction: validation is compilation with the plan thrown away.
//! Problems are collected, never raised; a plan comes back only when there is no error.
//!
//! This module owns the walk (`ModelCtx`, the `Compiler`, connection resolution) and the
//! project-wide checks; each block of a model is compiled by its own submodule: `source`
//! (with the query analysis in [`sql`]), `mappings`, `destination` (and the guard), and
//! `schedule`.

pub mod conflicts;
mod destination;
mod mappings;
mod schedule;
mod source;
pub mod sql;

use super::{PlanSpans, SyncPlan};
use crate::config::model::ModelSpec;
use crate::config::{ConnectionSpec, ConnectionType};
use crate::diagnostics::{close_matches, one_of, unique_close_match, Code, Diagnostic, Severity, SourceFile, Span};
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
        let destination = self.destination(spec, dest_conn.clone(), &source);
        let mut schedule = self.schedule(spec);
        if spec.source.kind == ConnectionType::Webhook && spec.schedule.is_some() {
            self.irrelevant(
                &["schedule"],
                "`ebb daemon` applies a webhook model's events as they arrive (and `ebb run` applies what is pending)"
                    .to_string(),
            );
            schedule = None;
        }
        let destination = destination?;
        let guard = self.guard(spec, &source, &destination);
        let conflicts = self.conflicts(spec, &source, selection.as_ref(), &mappings, &destination);
        let direction = if source.kind.is_crm() || source.kind == ConnectionType::Webhook {
            super::Direction::Inbound
        } else {
            super::Direction::Outbound
        };
        let health = self.health(spec, direction);
        Some(SyncPlan {
            name: spec.name.clone(),
            description: spec.description.clone(),
            file: self.ctx.file.path.clone(),
            source,
            destination,
            mappings,
            schedule,
            guard,
            conflicts,
            health,
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

    /// The model's lag thresholds, with the direction's defaults.
    fn health(&mut self, spec: &ModelSpec, direction: super::Direction) -> super::Health {
        let mut h = super::Health::default_for(direction);
        let Some(given) = &spec.health else { return h };
        for (key, text, slot) in [
            ("warning", &given.warning, &mut h.warning),
            ("critical", &given.critical, &mut h.critical),
        ] {
            if let Some(t) = text {
                match crate::schedule::parse_duration(t, key) {
                    Ok(d) => *slot = d,
                    Err(e) => self.push(
                        Diagnostic::new(Code::BadDuration, self.ctx.at(&["health", key]), e.message).help(e.help),
                    ),
                }
            }
        }
        if h.warning >= h.critical {
            self.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    self.ctx.key(&["health"]),
                    "`warning` must be shorter than `critical`",
                )
                .help("e.g. `health: {warning: 30m, critical: 1h}`"),
            );
        }
        h
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

//! The `source:` block: the connection's kind and fields, and the query (parsed by [`sql`],
//! its selected columns kept for the mapping checks).

use super::sql::{self, Selection};
use super::Compiler;
use crate::config::model::ModelSpec;
use crate::config::ConnectionType;
use crate::diagnostics::{one_of, unique_close_match, Code, Diagnostic, Span};
use crate::path::FieldPath;
use crate::plan::SourcePlan;

impl Compiler<'_, '_> {
    pub(super) fn source(&mut self, spec: &ModelSpec, connection: String) -> (SourcePlan, Option<Selection>) {
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

    pub(super) fn query(&mut self, q: &str, kind: ConnectionType) -> Option<Selection> {
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
    pub(super) fn query_span(&self, line: usize, col: usize) -> Span {
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

    pub(super) fn column_missing(
        &mut self,
        code: Code,
        path: &[&str],
        column: &str,
        selection: &Selection,
        what: &str,
    ) {
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
}

//! The `source:` block: the connection's kind and fields, and the query (parsed by [`sql`],
//! its selected columns kept for the mapping checks).

use super::sql::{self, Selection};
use super::Compiler;
use crate::config::model::{Incremental, ModelSpec, ReadApi};
use crate::config::{ConnectionSpec, ConnectionType};
use crate::diagnostics::{one_of, unique_close_match, Code, Diagnostic, Span};
use crate::path::FieldPath;
use crate::plan::{InboundRead, SourcePlan, WebhookRead, DEFAULT_LOOKBACK, DEFAULT_SETTLE};
use crate::salesforce::client::DEFAULT_BULK_THRESHOLD;
use crate::schedule;
use crate::webhook::event::{EventPath, EventRules, DEFAULT_EVENT_TYPE, DEFAULT_RECORD};
use std::time::Duration;

/// The cursor an inbound read uses in place of `LastModifiedDate`.
pub const SYSTEM_MODSTAMP: &str = "SystemModstamp";
/// Fields every Salesforce read needs: the record's identity and whether it is deleted.
pub const ALWAYS_READ: [&str; 2] = ["Id", "IsDeleted"];

/// The cursor of a HubSpot read unless the model names another.
pub const HUBSPOT_CURSOR: &str = "hs_lastmodifieddate";
/// Fields every HubSpot read needs: the record's id and whether it is archived.
pub const HUBSPOT_ALWAYS_READ: [&str; 2] = ["id", "archived"];

/// `fields` plus `id`, `archived` and the cursor when missing (HubSpot's property names
/// are compared exactly); returns the full list and the added ones.
pub fn with_hubspot_fields(mut fields: Vec<String>, cursor: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut added = Vec::new();
    for f in HUBSPOT_ALWAYS_READ.into_iter().chain(cursor) {
        if !fields.iter().any(|x| x == f) {
            fields.push(f.to_string());
            added.push(f.to_string());
        }
    }
    (fields, added)
}

/// `fields` plus `Id`, `IsDeleted` and the cursor when missing (compared without case, as
/// Salesforce does); returns the full list and the added ones.
pub fn with_required_fields(mut fields: Vec<String>, cursor: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut added = Vec::new();
    for f in ALWAYS_READ.into_iter().chain(cursor) {
        if !fields.iter().any(|x| x.eq_ignore_ascii_case(f)) {
            fields.push(f.to_string());
            added.push(f.to_string());
        }
    }
    (fields, added)
}

impl Compiler<'_, '_> {
    pub(super) fn source(&mut self, spec: &ModelSpec, connection: String) -> (SourcePlan, Option<Selection>) {
        let s = &spec.source;
        let mut selection = None;
        let webhook = s.kind == ConnectionType::Webhook;
        if !webhook {
            self.irrelevant_source_fields(
                &[
                    ("events", s.events.is_some()),
                    ("event_type", s.event_type.is_some()),
                    ("event_id", s.event_id.is_some()),
                    ("event_time", s.event_time.is_some()),
                    ("record", s.record.is_some()),
                    ("types", s.types.is_some()),
                ],
                &format!("only a webhook source reads events, not a {} source", s.kind),
            );
        }
        if webhook {
            self.irrelevant_source_fields(
                &[
                    ("query", s.query.is_some()),
                    ("object", s.object.is_some()),
                    ("incremental", s.incremental.is_some()),
                    ("lookback", s.lookback.is_some()),
                    ("settle", s.settle.is_some()),
                    ("api", s.api.is_some()),
                ],
                "a webhook source takes the events sent to `/webhooks/<model>`",
            );
        } else if s.kind.is_warehouse() {
            self.irrelevant_source_fields(
                &[
                    ("object", s.object.is_some()),
                    ("fields", s.fields.is_some()),
                    ("incremental", s.incremental.is_some()),
                    ("lookback", s.lookback.is_some()),
                    ("settle", s.settle.is_some()),
                    ("api", s.api.is_some()),
                ],
                &format!("a {} source reads rows with `query`", s.kind),
            );
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
            if s.kind == ConnectionType::Hubspot && s.api.is_some() {
                self.irrelevant(
                    &["source", "api"],
                    "a HubSpot source reads a window through the search API and everything through the list endpoint"
                        .to_string(),
                );
            }
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
        let read = s.kind.is_crm().then(|| self.inbound_read(spec, &connection));
        let columns = match &selection {
            Some(Selection::Known(_)) => selection
                .as_ref()
                .map(|s| s.names().into_iter().map(str::to_string).collect()),
            _ => None,
        };
        let fields = s.fields.clone().unwrap_or_else(|| {
            // (For a webhook source: the mappings' fields and the key.)
            spec.mappings
                .iter()
                .filter_map(|m| m.source.as_deref())
                .filter_map(|p| FieldPath::parse(p).ok().and_then(|p| p.column().map(str::to_string)))
                .collect()
        });
        let (fields, added_fields) = match &read {
            Some(r) if s.kind == ConnectionType::Salesforce => with_required_fields(fields, r.cursor.as_deref()),
            Some(r) if s.kind == ConnectionType::Hubspot => with_hubspot_fields(fields, r.cursor.as_deref()),
            Some(_) => (fields, Vec::new()),
            None if webhook => {
                // Each field once, and the key's field (read whether mapped or not).
                let mut all: Vec<String> = Vec::with_capacity(fields.len() + 1);
                for f in fields {
                    if !all.contains(&f) {
                        all.push(f);
                    }
                }
                let mut added = Vec::new();
                let k = &spec.destination.unique_identifier;
                if !all.contains(k) {
                    all.push(k.clone());
                    added.push(k.clone());
                }
                (all, added)
            }
            None => (Vec::new(), Vec::new()),
        };
        let webhook = webhook.then(|| self.webhook_read(spec, &fields));
        let plan = SourcePlan {
            connection,
            kind: s.kind,
            query: s.query.clone(),
            object: s.object.clone(),
            fields,
            added_fields,
            incremental: match &s.incremental {
                Some(Incremental::Field(f)) if s.kind.is_crm() => Some(f.clone()),
                _ => None,
            },
            read,
            columns,
            webhook,
        };
        (plan, selection)
    }

    /// W208 for each `source` field that is set but means nothing to this source, and why.
    fn irrelevant_source_fields(&mut self, fields: &[(&str, bool)], why: &str) {
        for (field, set) in fields {
            if *set {
                self.irrelevant(&["source", field], why.to_string());
            }
        }
    }

    /// The events of a webhook source: types and actions, the paths into an event, and the
    /// record's fields with their types.
    fn webhook_read(&mut self, spec: &ModelSpec, fields: &[String]) -> WebhookRead {
        let s = &spec.source;
        if s.events.as_ref().is_none_or(|e| e.is_empty()) {
            self.push(
                Diagnostic::new(
                    Code::MissingForType,
                    self.ctx.key(&["source"]),
                    "the webhook source needs `events`: what each event type does",
                )
                .help("e.g. `events: {customer.created: upsert, customer.updated: upsert, customer.deleted: delete}`"),
            );
        }
        let mut path = |key: &str, written: Option<&String>, default: &str| -> Option<EventPath> {
            let text = written.map_or(default, |w| w.as_str());
            match EventPath::parse(text) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.push(
                        Diagnostic::new(Code::BadPath, self.ctx.at(&["source", key]), why)
                            .help("a path into the event: `$` is the event, `$.data.id` a key inside it"),
                    );
                    None
                }
            }
        };
        let event_type = match &s.event_type {
            Some(t) => path("event_type", Some(t), "").into_iter().collect(),
            None => DEFAULT_EVENT_TYPE
                .iter()
                .filter_map(|d| EventPath::parse(d).ok())
                .collect(),
        };
        let event_id = s.event_id.as_ref().and_then(|t| path("event_id", Some(t), ""));
        let event_time = s.event_time.as_ref().and_then(|t| path("event_time", Some(t), ""));
        let record = path("record", s.record.as_ref(), DEFAULT_RECORD)
            .or_else(|| EventPath::parse(DEFAULT_RECORD).ok())
            .expect("the default record path parses");
        let types = s.types.clone().unwrap_or_default();
        WebhookRead {
            rules: EventRules {
                events: s.events.clone().unwrap_or_default(),
                event_type,
                event_id,
                event_time,
                record,
            },
            fields: fields
                .iter()
                .map(|f| {
                    (
                        f.clone(),
                        types.get(f).copied().unwrap_or(crate::config::model::FieldType::Text),
                    )
                })
                .collect(),
        }
    }

    /// The read of a CRM source: cursor (with the `SystemModstamp` note), window and API.
    fn inbound_read(&mut self, spec: &ModelSpec, connection: &str) -> InboundRead {
        let s = &spec.source;
        let ctx = self.ctx;
        let salesforce = s.kind == ConnectionType::Salesforce;
        let (cursor, cursor_defaulted) = match &s.incremental {
            Some(Incremental::Off(_)) => (None, false),
            Some(Incremental::Field(f)) if !salesforce || !f.eq_ignore_ascii_case("LastModifiedDate") => {
                (Some(f.clone()), false)
            }
            // HubSpot: `hs_lastmodifieddate`, which every object has (contacts' older
            // `lastmodifieddate` too, but not companies' or deals').
            None if s.kind == ConnectionType::Hubspot => (Some(HUBSPOT_CURSOR.to_string()), false),
            None if !salesforce => (None, false),
            _ => (Some(SYSTEM_MODSTAMP.to_string()), true),
        };
        if cursor_defaulted && !ctx.skipped(&["source", "incremental"]) {
            let (at, what) = match &s.incremental {
                Some(_) => (ctx.at(&["source", "incremental"]), "`incremental: LastModifiedDate`"),
                None => (ctx.key(&["source"]), "an inbound source without `incremental`"),
            };
            self.push(
                Diagnostic::new(
                    Code::CursorSystemModstamp,
                    at,
                    format!("{what} reads changes by `SystemModstamp`"),
                )
                .note("`SystemModstamp` is indexed, so the window query stays fast on large objects; it also moves when the system changes a record (`LastModifiedDate` moves only on user edits), and it is never earlier than `LastModifiedDate`, so no change is missed")
                .help("write `incremental: SystemModstamp` to say so, or `incremental: off` to read every record on every run"),
            );
        }
        let full = cursor.is_none();
        let mut duration = |key: &str, written: &Option<String>, default: Duration| -> Duration {
            let Some(text) = written else { return default };
            if full {
                self.irrelevant(
                    &["source", key],
                    "`incremental: off` reads every record on every run, with no window".to_string(),
                );
                return default;
            }
            match schedule::parse_duration(text, key) {
                Ok(d) => d,
                Err(e) => {
                    self.push(Diagnostic::new(Code::BadDuration, ctx.at(&["source", key]), e.message).help(e.help));
                    default
                }
            }
        };
        let lookback = duration("lookback", &s.lookback, DEFAULT_LOOKBACK);
        let settle = duration("settle", &s.settle, DEFAULT_SETTLE);
        let bulk_threshold = match self.ctx.connections.and_then(|c| c.get(connection)) {
            Some(ConnectionSpec::Salesforce(c)) => c.bulk_threshold.map(u64::from),
            _ => None,
        }
        .unwrap_or(DEFAULT_BULK_THRESHOLD);
        InboundRead {
            cursor,
            cursor_defaulted,
            lookback,
            settle,
            api: s.api.unwrap_or(ReadApi::Auto),
            bulk_threshold,
        }
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

//! `ebb validate --connect`: the checks that need the live systems. Each warehouse query
//! is described (run for zero rows) and the columns it returns are checked against the
//! key, every mapping's column, path and transforms; problems are reported at the model
//! file's positions like any other diagnostic.

use super::Report;
use crate::diagnostics::{Code, Diagnostic};
use crate::map::column_index;
use crate::path::FieldPath;
use crate::plan::{SyncPlan, ValueSource};
use crate::source::{Source, SourceError, DECIMAL_TEXT, JSON_TEXT};
use crate::transform::Transform;
use arrow::datatypes::{DataType, Field, SchemaRef};
use std::collections::HashMap;
use std::time::Duration;

const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Describes every reported model's query and adds what is wrong to `report`.
pub async fn check(report: &mut Report) {
    let Some(project) = report.project.clone() else { return };
    let plans: Vec<SyncPlan> = report
        .plans
        .iter()
        .filter(|p| report.reports_on(&p.file))
        .cloned()
        .collect();
    let mut sources: HashMap<String, Result<Source, SourceError>> = HashMap::new();
    let mut found = Vec::new();
    for plan in &plans {
        if plan.direction() == crate::plan::Direction::Inbound {
            found.extend(super::inbound::check(plan, &project, &report.project_dir).await);
            continue;
        }
        let (Some(query), Some(spec)) = (&plan.source.query, project.connections.get(&plan.source.connection)) else {
            continue;
        };
        let conn = &plan.source.connection;
        let source = sources
            .entry(conn.clone())
            .or_insert_with(|| Source::open(conn, spec, &report.project_dir));
        let schema = match source {
            Err(e) => Err(e.clone()),
            Ok(s) => match tokio::time::timeout(DESCRIBE_TIMEOUT, s.describe(query)).await {
                Ok(r) => r,
                Err(_) => Err(SourceError::Query(format!(
                    "no answer within {}s",
                    DESCRIBE_TIMEOUT.as_secs()
                ))),
            },
        };
        if plan.destination.kind == crate::config::ConnectionType::Hubspot {
            if let Some(dspec) = project.connections.get(&plan.destination.connection) {
                found.extend(super::hubspot::check(plan, dspec, schema.as_ref().ok(), source.as_ref().ok()).await);
            }
        }
        if plan.destination.kind == crate::config::ConnectionType::Salesforce {
            if let Some(dspec) = project.connections.get(&plan.destination.connection) {
                let described = schema.as_ref().ok();
                let src = source.as_ref().ok();
                found.extend(super::salesforce::check(plan, dspec, &report.project_dir, described, src).await);
            }
        }
        match schema {
            Ok(schema) => found.extend(check_plan(plan, &schema)),
            Err(e @ SourceError::Query(_)) => found.push(
                Diagnostic::new(
                    Code::QueryFailed,
                    plan.spans.query.clone(),
                    format!("{} rejects the query: {e}", describe(plan)),
                )
                .help("run the query in the warehouse to see the full error"),
            ),
            Err(e) => found.push(
                Diagnostic::new(
                    Code::ConnectFailed,
                    plan.spans.source.clone(),
                    format!("{}: {e}", describe(plan)),
                )
                .help("check the connection in ebb.yaml and the variables it reads"),
            ),
        }
    }
    report.diagnostics.extend(found);
    report.diagnostics.sort_by(|a, b| {
        (a.span.file.path.as_path(), a.span.line, a.span.col).cmp(&(
            b.span.file.path.as_path(),
            b.span.line,
            b.span.col,
        ))
    });
}

fn describe(plan: &SyncPlan) -> String {
    format!("connection `{}` ({})", plan.source.connection, plan.source.kind)
}

/// Coarse kinds of values, enough to check paths and transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Number,
    Bool,
    Date,
    Timestamp,
    Json,
    Binary,
    Any,
}

impl Kind {
    fn of(field: &Field) -> Kind {
        match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                if field.metadata().contains_key(DECIMAL_TEXT) {
                    Kind::Number
                } else if field.metadata().contains_key(JSON_TEXT) {
                    Kind::Json
                } else {
                    Kind::Text
                }
            }
            t if t.is_numeric() => Kind::Number,
            DataType::Boolean => Kind::Bool,
            DataType::Date32 | DataType::Date64 => Kind::Date,
            DataType::Timestamp(_, _) => Kind::Timestamp,
            DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) => Kind::Json,
            DataType::Binary | DataType::LargeBinary => Kind::Binary,
            DataType::Dictionary(_, v) => Kind::of(&Field::new("v", (**v).clone(), true)),
            _ => Kind::Any,
        }
    }

    /// What a mapping gives: a constant's kind, else its column's after the transforms
    /// (`None` when the column is not in `schema`).
    pub(super) fn given(m: &crate::plan::MappingPlan, schema: Option<&SchemaRef>) -> Option<Kind> {
        match &m.value {
            crate::plan::ValueSource::Constant(v) => Some(match v {
                serde_json::Value::String(_) => Kind::Text,
                serde_json::Value::Number(_) => Kind::Number,
                serde_json::Value::Bool(_) => Kind::Bool,
                _ => Kind::Any,
            }),
            crate::plan::ValueSource::Path(_) => schema.and_then(|s| mapped_kind(m, s)),
        }
    }

    pub(super) fn words(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Date => "a date",
            Kind::Timestamp => "a timestamp",
            Kind::Json => "JSON",
            Kind::Binary => "binary data",
            Kind::Any => "any value",
        }
    }
}

/// What a transform accepts and gives.
fn signature(t: &Transform) -> (&'static [Kind], Option<Kind>) {
    use Kind::*;
    match t {
        Transform::Lower | Transform::Upper | Transform::Trim | Transform::Initcap | Transform::Truncate(_) => {
            (&[Text, Any], Some(Text))
        }
        Transform::Round(_) | Transform::Scale { .. } => (&[Number, Any], Some(Number)),
        Transform::Date(_) => (&[Date, Timestamp, Text, Any], Some(Text)),
        Transform::ParseJson => (&[Text, Json, Any], Some(Json)),
        Transform::Phone | Transform::Sha256 | Transform::Hash(_) => (&[Text, Number, Any], Some(Text)),
        Transform::Default(_) => (&[Text, Number, Bool, Date, Timestamp, Json, Binary, Any], None),
    }
}

fn check_plan(plan: &SyncPlan, schema: &SchemaRef) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let returned: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let missing = |column: &str, span, what: &str| {
        let help = match crate::diagnostics::unique_close_match(column, returned.iter().copied()) {
            Some(m) => format!(
                "did you mean `{m}`? the query returns {}",
                crate::diagnostics::one_of(&returned)
            ),
            None => format!("the query returns {}", crate::diagnostics::one_of(&returned)),
        };
        Diagnostic::new(
            Code::ColumnMissing,
            span,
            format!("{what} `{column}` is not among the columns the query returns"),
        )
        .help(help)
    };
    if column_index(schema, &plan.destination.key_column).is_none() {
        out.push(missing(
            &plan.destination.key_column,
            plan.spans.key.clone(),
            "the key column",
        ));
    }
    for m in &plan.mappings {
        let ValueSource::Path(path) = &m.value else { continue };
        let Some(column) = path.column() else { continue };
        let Some(index) = column_index(schema, column) else {
            out.push(missing(column, m.source_span.clone(), "column"));
            continue;
        };
        let field = schema.field(index);
        let mut kind = Kind::of(field);
        if path.is_nested() {
            if !matches!(kind, Kind::Json | Kind::Text | Kind::Any) {
                out.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        m.source_span.clone(),
                        format!(
                            "column `{column}` is {} ({}), so there is nothing inside it to read",
                            kind.words(),
                            field.data_type()
                        ),
                    )
                    .help("a path reads into a JSON, STRUCT or LIST column; map the column itself"),
                );
                continue;
            }
            kind = Kind::Any;
        }
        for (t, span) in m.transforms.iter().zip(&m.transform_spans) {
            let (accepts, gives) = signature(t);
            if !accepts.contains(&kind) {
                let name = t.to_string();
                let name = name.split('(').next().unwrap_or(&name).to_string();
                out.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        span.clone(),
                        format!(
                            "`{name}` needs {}, but `{}` is {} here ({})",
                            accepts[0].words(),
                            source_text(path),
                            kind.words(),
                            field.data_type()
                        ),
                    )
                    .help("convert the column in the query, or drop the transform"),
                );
                break;
            }
            if let Some(g) = gives {
                kind = g;
            }
        }
    }
    out
}

/// The kind of value a mapping gives once its transforms ran, when the column is known.
pub(super) fn mapped_kind(m: &crate::plan::MappingPlan, schema: &SchemaRef) -> Option<Kind> {
    let ValueSource::Path(path) = &m.value else { return None };
    let index = column_index(schema, path.column()?)?;
    let mut kind = if path.is_nested() {
        Kind::Any
    } else {
        Kind::of(schema.field(index))
    };
    for t in &m.transforms {
        if let Some(g) = signature(t).1 {
            kind = g;
        }
    }
    Some(kind)
}

fn source_text(p: &FieldPath) -> String {
    match p {
        FieldPath::Simple { column, steps } if steps.is_empty() => column.clone(),
        FieldPath::Simple { column, .. } => format!("{column}…"),
        FieldPath::Query { text, .. } => text.clone(),
    }
}

//! `validate --connect` for Salesforce destinations: the object is described
//! (`GET sobjects/{Object}/describe`) and the model is checked against it (docs/salesforce-protocol.md §5):
//! every mapped field exists and can be written in the model's mode, the key is `Id` or an
//! external ID, the mapped values' types fit the fields, values bound for restricted
//! picklists are legal (constants always; column values by reading the distinct values the
//! query returns), and fields required to create a record are mapped.

use super::connect::Kind;
use crate::config::project::ConnectionSpec;
use crate::config::Mode;
use crate::diagnostics::{Code, Diagnostic};
use crate::map::value::Val;
use crate::path::FieldPath;
use crate::plan::{SyncPlan, ValueSource};
use crate::salesforce::client::Conn;
use crate::source::Source;
use arrow::datatypes::SchemaRef;
use reqwest::Method;
use serde_json::Value;
use std::path::Path;

/// Distinct values read per picklist column.
const DISTINCT_LIMIT: usize = 1000;

/// The checks of one plan whose destination is Salesforce. `schema` is what the query
/// returns, when it could be described; `source` reads distinct values.
pub async fn check(
    plan: &SyncPlan,
    spec: &ConnectionSpec,
    project_dir: &Path,
    schema: Option<&SchemaRef>,
    source: Option<&Source>,
) -> Vec<Diagnostic> {
    let ConnectionSpec::Salesforce(c) = spec else {
        return Vec::new();
    };
    let d = &plan.destination;
    let Some(object) = d.object.as_deref() else {
        return Vec::new();
    };
    let conn = match Conn::shared(&d.connection, c, project_dir) {
        Ok(c) => c,
        Err(e) => {
            return vec![Diagnostic::new(
                Code::ConnectFailed,
                plan.spans.object.clone(),
                e.to_string(),
            )]
        }
    };
    let counter = std::sync::atomic::AtomicU64::new(0);
    let path = conn.data_path(&format!("sobjects/{object}/describe"));
    let describe = match conn.json(&counter, Method::GET, &path, None).await {
        Ok((_, v)) => v,
        Err(e) => {
            let text = e.to_string();
            let (code, help) = if text.contains("NOT_FOUND") {
                (
                    Code::SalesforceObjectMissing,
                    "check the object's API name (custom objects end in `__c`) and the user's permissions",
                )
            } else {
                (
                    Code::ConnectFailed,
                    "check the connection in ebb.yaml, its credentials and the variables it reads",
                )
            };
            let message = if code == Code::SalesforceObjectMissing {
                format!("Salesforce has no object `{object}` the connection's user can see ({text})")
            } else {
                format!("connection `{}` (salesforce): {text}", d.connection)
            };
            return vec![Diagnostic::new(code, plan.spans.object.clone(), message).help(help)];
        }
    };
    let fields: Vec<&Value> = describe["fields"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names: Vec<&str> = fields.iter().filter_map(|f| f["name"].as_str()).collect();
    let field = |name: &str| {
        fields
            .iter()
            .copied()
            .find(|f| f["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    };
    let flag = |f: &Value, k: &str| f[k].as_bool() == Some(true);
    let mut out = Vec::new();
    let keyed_on_id = d.key_field.eq_ignore_ascii_case("Id");
    let creates = matches!(d.mode, Mode::Insert | Mode::Mirror) || (d.mode == Mode::Upsert && !keyed_on_id);
    let updates = matches!(d.mode, Mode::Update | Mode::Upsert | Mode::Mirror);

    // The key.
    match field(&d.key_field) {
        None => out.push(unknown_field(
            &d.key_field,
            object,
            &names,
            plan.spans.key_field.clone(),
        )),
        Some(f) if !keyed_on_id && d.mode != Mode::Insert && !flag(f, "externalId") => out.push(
            Diagnostic::new(
                Code::SalesforceKeyNotExternal,
                plan.spans.key_field.clone(),
                format!(
                    "`{object}.{}` is not an external ID field, so records cannot be matched on it",
                    d.key_field
                ),
            )
            .help("mark the field as External ID in Salesforce setup, or match on `Id`"),
        ),
        _ => {}
    }

    for m in &plan.mappings {
        let Some(f) = field(&m.destination) else {
            out.push(unknown_field(
                &m.destination,
                object,
                &names,
                m.destination_span.clone(),
            ));
            continue;
        };
        let name = f["name"].as_str().unwrap_or(&m.destination);
        let is_key = name.eq_ignore_ascii_case(&d.key_field);
        // Writable in this mode (the key is matched on, not written, when it is `Id`).
        if !(is_key && keyed_on_id) {
            let needs: Vec<&str> = [("createable", creates), ("updateable", updates)]
                .into_iter()
                .filter(|(k, needed)| *needed && !flag(f, k))
                .map(|(k, _)| k)
                .collect();
            // The key of an upsert by external ID is matched on, so it need not be updateable.
            let key_only_matched = is_key && needs == ["updateable"];
            if !needs.is_empty() && !key_only_matched {
                out.push(
                    Diagnostic::new(
                        Code::SalesforceFieldReadOnly,
                        m.destination_span.clone(),
                        format!(
                            "`{object}.{name}` is not {} for this connection's user, and mode `{}` writes it",
                            needs.join(" or "),
                            d.mode.as_str()
                        ),
                    )
                    .help("check the field-level security of the user, or drop the mapping"),
                );
            }
        }
        let sf_type = f["type"].as_str().unwrap_or("");
        // Types: what the mapping produces against what the field takes.
        let kind = Kind::given(m, schema);
        if let Some(kind) = kind {
            if let Some(want) = incompatible(kind, sf_type) {
                out.push(
                    Diagnostic::new(
                        Code::SalesforceTypeMismatch,
                        m.source_span.clone(),
                        format!(
                            "`{object}.{name}` is a {sf_type} field, but this mapping gives {}",
                            kind.words()
                        ),
                    )
                    .help(format!(
                        "convert the value in the query or with a transform: the field takes {want}"
                    )),
                );
            }
        }
        // Restricted picklists.
        if flag(f, "restrictedPicklist") {
            let legal: Vec<&str> = f["picklistValues"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["active"].as_bool() != Some(false))
                .filter_map(|p| p["value"].as_str())
                .collect();
            let mut bad: Vec<String> = Vec::new();
            let mut from_constant = false;
            match &m.value {
                ValueSource::Constant(v) => {
                    from_constant = true;
                    if let Some(text) = transformed(m, Val::from_json(v.clone())) {
                        bad.extend(illegal(&legal, [text]));
                    }
                }
                ValueSource::Path(FieldPath::Simple { column, steps }) if steps.is_empty() => {
                    // The column as the warehouse spells it (Snowflake upper-cases).
                    let actual = schema
                        .and_then(|s| crate::map::column_index(s, column).map(|i| s.field(i).name().clone()))
                        .unwrap_or_else(|| column.clone());
                    if let (Some(source), Some(query)) = (source, &plan.source.query) {
                        let values = distinct(source, query, &actual).await;
                        bad.extend(illegal(&legal, values.into_iter().filter_map(|v| transformed(m, v))));
                    }
                }
                _ => {}
            }
            if !bad.is_empty() {
                bad.truncate(5);
                let list: Vec<String> = bad.iter().map(|b| format!("`{b}`")).collect();
                let (code, message) = if from_constant {
                    (
                        Code::PicklistValue,
                        format!(
                            "{} is not a value of the restricted picklist `{object}.{name}`",
                            list.join(", ")
                        ),
                    )
                } else {
                    (
                        Code::PicklistValues,
                        format!(
                            "the query returns values the restricted picklist `{object}.{name}` refuses: {}; those rows will be rejected",
                            list.join(", ")
                        ),
                    )
                };
                out.push(
                    Diagnostic::new(code, m.source_span.clone(), message)
                        .help(format!("the picklist takes {}", crate::diagnostics::one_of(&legal))),
                );
            }
        }
    }

    // Two-way fields: the CRM's modification time must be a time; the warehouse's too.
    if let Some(c) = &plan.conflicts {
        match field(&c.destination_modified) {
            None => out.push(unknown_field(
                &c.destination_modified,
                object,
                &names,
                c.destination_modified_span.clone(),
            )),
            Some(f) if !matches!(f["type"].as_str(), Some("datetime" | "date")) => out.push(
                Diagnostic::new(
                    Code::SalesforceTypeMismatch,
                    c.destination_modified_span.clone(),
                    format!(
                        "`{object}.{}` is a {} field, not a date or time: it cannot say which side changed last",
                        c.destination_modified,
                        f["type"].as_str().unwrap_or("?")
                    ),
                )
                .help("name the record's modification time, e.g. `LastModifiedDate`"),
            ),
            _ => {}
        }
        if let (Some(col), Some(schema)) = (&c.source_modified, schema) {
            if let Some(i) = crate::map::column_index(schema, col) {
                use arrow::datatypes::DataType as T;
                let ty = schema.field(i).data_type();
                if !matches!(
                    ty,
                    T::Timestamp(..) | T::Date32 | T::Date64 | T::Utf8 | T::LargeUtf8 | T::Utf8View
                ) {
                    out.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            c.source_modified_span.clone(),
                            format!("column `{col}` is {ty}, not a date or time"),
                        )
                        .help("name the column holding each row's modification time (a TIMESTAMP)"),
                    );
                }
            }
        }
    }

    // Fields a record cannot be created without.
    if creates {
        let mapped: Vec<String> = plan
            .mappings
            .iter()
            .map(|m| m.destination.to_ascii_lowercase())
            .collect();
        let required: Vec<&str> = fields
            .iter()
            .filter(|f| flag(f, "createable") && !flag(f, "nillable") && !flag(f, "defaultedOnCreate"))
            .filter_map(|f| f["name"].as_str())
            .filter(|n| !mapped.contains(&n.to_ascii_lowercase()) && !n.eq_ignore_ascii_case(&d.key_field))
            .collect();
        if !required.is_empty() {
            let list: Vec<String> = required.iter().map(|n| format!("`{n}`")).collect();
            out.push(
                Diagnostic::new(
                    Code::RequiredFieldUnmapped,
                    plan.spans.mode.clone(),
                    format!(
                        "mode `{}` creates `{object}` records, which need {}; rows for new records will be rejected",
                        d.mode.as_str(),
                        list.join(", ")
                    ),
                )
                .help("map the required fields, or use `mode: update` to only touch existing records"),
            );
        }
    }
    out
}

fn unknown_field(name: &str, object: &str, names: &[&str], span: crate::diagnostics::Span) -> Diagnostic {
    let help = match crate::diagnostics::unique_close_match(name, names.iter().copied()) {
        Some(m) => format!("did you mean `{m}`?"),
        None => "custom fields end in `__c`; `ebb` reads the object's fields with the connection's user".into(),
    };
    Diagnostic::new(
        Code::SalesforceFieldMissing,
        span,
        format!("`{object}` has no field `{name}`"),
    )
    .help(help)
}

/// What a field of Salesforce type `sf` takes, if a value of `kind` does not fit it.
fn incompatible(kind: Kind, sf: &str) -> Option<&'static str> {
    use Kind::*;
    let (fits, want): (&[Kind], &str) = match sf {
        "boolean" => (&[Bool, Text, Any], "true or false"),
        "int" | "double" | "currency" | "percent" => (&[Number, Text, Any], "a number"),
        "date" => (&[Date, Timestamp, Text, Any], "a date (YYYY-MM-DD)"),
        "datetime" => (&[Timestamp, Date, Text, Any], "a date-time (ISO 8601)"),
        "string" | "textarea" | "email" | "phone" | "url" | "picklist" | "multipicklist" | "id" | "reference"
        | "combobox" | "encryptedstring" => (&[Text, Number, Bool, Date, Timestamp, Any], "text"),
        _ => return None,
    };
    (!fits.contains(&kind)).then_some(want)
}

/// The text a value becomes after the mapping's transforms (`None` for null or failure).
pub(super) fn transformed(m: &crate::plan::MappingPlan, mut v: Val) -> Option<String> {
    for t in &m.transforms {
        v = t.apply(v).ok()?;
    }
    v.as_text()
}

pub(super) fn illegal(legal: &[&str], values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut bad: Vec<String> = values.into_iter().filter(|v| !legal.contains(&v.as_str())).collect();
    bad.sort();
    bad.dedup();
    bad
}

/// The distinct non-null values of `column` in the query's result (at most 1,000).
pub(super) async fn distinct(source: &Source, query: &str, column: &str) -> Vec<Val> {
    let sql = format!(
        "SELECT DISTINCT q.\"{}\" FROM ({}) AS q WHERE q.\"{}\" IS NOT NULL LIMIT {DISTINCT_LIMIT}",
        column.replace('"', "\"\""),
        query.trim_end().trim_end_matches(';'),
        column.replace('"', "\"\"")
    );
    let mut out = Vec::new();
    let Ok(mut stream) = source.query(&sql, DISTINCT_LIMIT).await else {
        return out;
    };
    let schema = stream.schema();
    while let Some(Ok(batch)) = stream.next().await {
        for row in 0..batch.num_rows() {
            if let Ok(v) = crate::map::value::read(batch.column(0), schema.field(0), row) {
                out.push(v);
            }
        }
    }
    out
}

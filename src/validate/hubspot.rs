//! HubSpot's checks. Offline, a connection's credentials: a private app's `token` or the
//! three OAuth settings, exactly one of the two ([`check_auth`]). With `validate --connect`,
//! for a model whose destination is HubSpot: the object's properties
//! (`GET /crm/v3/properties/{object}`) against the mappings. The object must exist; every
//! mapped property must exist and be writable (HubSpot's `modificationMetadata`); the key
//! property (`idProperty`) must hold unique values for an upsert or update to match on it;
//! the value a mapping gives must fit the property's type (a boolean does not go into a date);
//! a constant, or the values the query's column gives (up to 1,000 distinct), written to an
//! enumeration must be among its options.

use super::connect::Kind;
use super::salesforce::{distinct, illegal, transformed};
use crate::config::project::HubspotConnection;
use crate::config::ConnectionSpec;
use crate::diagnostics::{Code, Diagnostic};
use crate::map::value::Val;
use crate::path::FieldPath;
use crate::plan::{SyncPlan, ValueSource};

/// What a property of HubSpot type `hs` takes, if a value of `kind` does not fit it.
fn incompatible(kind: Kind, hs: &str) -> Option<&'static str> {
    use Kind::*;
    let (fits, want): (&[Kind], &str) = match hs {
        "bool" | "boolean" => (&[Bool, Text, Any], "true or false"),
        "number" => (&[Number, Text, Any], "a number"),
        "date" => (
            &[Date, Timestamp, Text, Any],
            "a date (sent as the epoch milliseconds of its UTC midnight)",
        ),
        "datetime" => (&[Timestamp, Date, Text, Any], "a date-time"),
        "enumeration" => (&[Text, Number, Bool, Any], "one of its options"),
        _ => return None,
    };
    (!fits.contains(&kind)).then_some(want)
}

/// E207 at the connection's key unless it gives `token` alone or `client_id`,
/// `client_secret` and `refresh_token` together.
pub(super) fn check_auth(c: &HubspotConnection, at: crate::diagnostics::Span, diags: &mut Vec<Diagnostic>) {
    let oauth = [
        ("client_id", c.client_id.is_some()),
        ("client_secret", c.client_secret.is_some()),
        ("refresh_token", c.refresh_token.is_some()),
    ];
    let missing: Vec<String> = oauth
        .iter()
        .filter(|(_, set)| !set)
        .map(|(f, _)| format!("`{f}`"))
        .collect();
    let (message, help) = match (c.token.is_some(), missing.len()) {
        (true, 3) | (false, 0) => return,
        (true, _) => (
            "a hubspot connection takes `token` or the OAuth settings, not both".to_string(),
            "keep `token: ${HUBSPOT_TOKEN}` for a private app, or `client_id`, `client_secret` and `refresh_token` for a public app's OAuth".to_string(),
        ),
        (false, 3) => (
            "a hubspot connection needs `token` or the OAuth settings".to_string(),
            "add `token: ${HUBSPOT_TOKEN}` (a private app), or `client_id: ${HUBSPOT_CLIENT_ID}`, `client_secret: ${HUBSPOT_CLIENT_SECRET}` and `refresh_token: ${HUBSPOT_REFRESH_TOKEN}` (OAuth)".to_string(),
        ),
        (false, _) => (
            format!("the OAuth settings need {} as well", missing.join(" and ")),
            "a refresh token is exchanged with the app's `client_id` and `client_secret`: give all three".to_string(),
        ),
    };
    diags.push(Diagnostic::new(Code::MissingForType, at, message).help(help));
}

/// The checks of one plan whose destination is HubSpot; `schema` is the query's columns
/// and `source` the warehouse, when they could be reached (for types and for the values
/// a column gives an enumeration).
pub async fn check(
    plan: &SyncPlan,
    spec: &ConnectionSpec,
    schema: Option<&arrow::datatypes::SchemaRef>,
    source: Option<&crate::source::Source>,
) -> Vec<Diagnostic> {
    let ConnectionSpec::Hubspot(c) = spec else {
        return Vec::new();
    };
    let d = &plan.destination;
    let Some(object) = d.object.as_deref() else {
        return Vec::new();
    };
    let properties = match properties(&d.connection, c, object).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return vec![Diagnostic::new(
                Code::HubspotObjectMissing,
                plan.spans.object.clone(),
                format!("HubSpot has no object `{object}` the connection's token can see"),
            )
            .help("objects are named in the plural and lower case (`contacts`, `companies`, `deals`), custom ones by their `p_…` name")];
        }
        Err(why) => {
            return vec![Diagnostic::new(
                Code::ConnectFailed,
                plan.spans.object.clone(),
                format!("connection `{}` (hubspot): {why}", d.connection),
            )
            .help("check the connection in ebb.yaml, its token and the variables it reads")]
        }
    };
    let names: Vec<&str> = properties.iter().map(|p| p.name.as_str()).collect();
    let find = |name: &str| properties.iter().find(|p| p.name == name);
    let mut out = Vec::new();
    let missing = |name: &str, span| {
        let help = match crate::diagnostics::unique_close_match(name, names.iter().copied()) {
            Some(m) => format!("did you mean `{m}`?"),
            None => "property names are the internal names (`firstname`, not `First Name`)".into(),
        };
        Diagnostic::new(
            Code::HubspotPropertyInvalid,
            span,
            format!("`{object}` has no property `{name}`"),
        )
        .help(help)
    };
    match find(&d.key_field) {
        None => out.push(missing(&d.key_field, plan.spans.key_field.clone())),
        Some(p) if d.mode != crate::config::Mode::Insert && !p.unique => out.push(
            Diagnostic::new(
                Code::HubspotPropertyInvalid,
                plan.spans.key_field.clone(),
                format!(
                    "`{object}.{}` does not hold unique values, so records cannot be matched on it",
                    d.key_field
                ),
            )
            .help("match on a unique property (`email` for contacts, `domain` for companies, or a custom property created with unique values)"),
        ),
        _ => {}
    }
    for m in &plan.mappings {
        if m.destination == d.key_field {
            continue;
        }
        let Some(p) = find(&m.destination) else {
            out.push(missing(&m.destination, m.destination_span.clone()));
            continue;
        };
        if p.read_only {
            out.push(
                Diagnostic::new(
                    Code::HubspotPropertyInvalid,
                    m.destination_span.clone(),
                    format!("`{object}.{}` is read-only: HubSpot computes it", m.destination),
                )
                .help("map the value to a property that can be written"),
            );
            continue;
        }
        // Types: what the mapping produces against what the property takes.
        let kind = Kind::given(m, schema);
        if let Some(want) = kind.and_then(|k| incompatible(k, &p.kind)) {
            out.push(
                Diagnostic::new(
                    Code::HubspotPropertyInvalid,
                    m.source_span.clone(),
                    format!(
                        "`{object}.{}` is a {} property, but this mapping gives {}",
                        m.destination,
                        p.kind,
                        kind.map_or("a value", Kind::words)
                    ),
                )
                .help(format!(
                    "convert the value in the query or with a transform: the property takes {want}"
                )),
            );
            continue;
        }
        if p.kind != "enumeration" {
            continue;
        }
        let legal: Vec<&str> = p.options.iter().map(String::as_str).collect();
        let (bad, constant) = match &m.value {
            ValueSource::Constant(v) => (
                transformed(m, Val::from_json(v.clone()))
                    .map(|t| illegal(&legal, [t]))
                    .unwrap_or_default(),
                true,
            ),
            ValueSource::Path(FieldPath::Simple { column, steps }) if steps.is_empty() => {
                // The column as the warehouse spells it (Snowflake upper-cases).
                let actual = schema
                    .and_then(|s| crate::map::column_index(s, column).map(|i| s.field(i).name().clone()))
                    .unwrap_or_else(|| column.clone());
                match (source, &plan.source.query) {
                    (Some(source), Some(query)) => {
                        let values = distinct(source, query, &actual).await;
                        (
                            illegal(&legal, values.into_iter().filter_map(|v| transformed(m, v))),
                            false,
                        )
                    }
                    _ => (Vec::new(), false),
                }
            }
            _ => (Vec::new(), false),
        };
        if bad.is_empty() {
            continue;
        }
        let list: Vec<String> = bad.iter().take(5).map(|b| format!("`{b}`")).collect();
        let message = if constant {
            format!("{} is not an option of `{object}.{}`", list.join(", "), m.destination)
        } else {
            format!(
                "the query returns values that are not options of `{object}.{}`: {}; those rows will be rejected",
                m.destination,
                list.join(", ")
            )
        };
        out.push(
            Diagnostic::new(Code::HubspotPropertyInvalid, m.source_span.clone(), message)
                .help(format!("its options: {}", legal.join(", "))),
        );
    }
    out
}

/// The object's properties; `None` when HubSpot has no such object.
pub(crate) async fn properties(
    name: &str,
    c: &HubspotConnection,
    object: &str,
) -> Result<Option<Vec<crate::hubspot::Property>>, String> {
    let conn = crate::hubspot::Conn::shared(name, c).map_err(|e| e.why)?;
    conn.properties(&std::sync::atomic::AtomicU64::new(0), object)
        .await
        .map_err(|e| e.to_string())
}

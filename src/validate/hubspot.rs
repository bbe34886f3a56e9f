//! HubSpot's checks. Offline, a connection's credentials: a private app's `token` or the
//! three OAuth settings, exactly one of the two ([`check_auth`]). With `validate --connect`,
//! for a model whose destination is HubSpot: the object's properties
//! (`GET /crm/v3/properties/{object}`) against the mappings. The object must exist; every
//! mapped property must exist and be writable (HubSpot's `modificationMetadata`); the key
//! property (`idProperty`) must hold unique values for an upsert or update to match on it;
//! a constant written to an enumeration must be one of its options.

use crate::config::project::HubspotConnection;
use crate::config::ConnectionSpec;
use crate::diagnostics::{Code, Diagnostic};
use crate::plan::{SyncPlan, ValueSource};
use serde_json::Value;

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

/// The checks of one plan whose destination is HubSpot.
pub async fn check(plan: &SyncPlan, spec: &ConnectionSpec) -> Vec<Diagnostic> {
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
        if let ("enumeration", ValueSource::Constant(v)) = (p.kind.as_str(), &m.value) {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let options = &p.options;
            if !options.contains(&text) {
                out.push(
                    Diagnostic::new(
                        Code::HubspotPropertyInvalid,
                        m.source_span.clone(),
                        format!("`{text}` is not an option of `{object}.{}`", m.destination),
                    )
                    .help(format!("its options: {}", options.join(", "))),
                );
            }
        }
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

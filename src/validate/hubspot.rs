//! `validate --connect` for a model whose destination is HubSpot: the object's properties
//! (`GET /crm/v3/properties/{object}`) against the mappings. The object must exist; every
//! mapped property must exist and be writable (HubSpot's `modificationMetadata`); the key
//! property (`idProperty`) must hold unique values for an upsert or update to match on it;
//! a constant written to an enumeration must be one of its options.

use crate::config::project::HubspotConnection;
use crate::config::ConnectionSpec;
use crate::diagnostics::{Code, Diagnostic};
use crate::plan::{SyncPlan, ValueSource};
use serde_json::Value;

/// The checks of one plan whose destination is HubSpot.
pub async fn check(plan: &SyncPlan, spec: &ConnectionSpec) -> Vec<Diagnostic> {
    let ConnectionSpec::Hubspot(c) = spec else {
        return Vec::new();
    };
    let d = &plan.destination;
    let Some(object) = d.object.as_deref() else {
        return Vec::new();
    };
    let properties = match properties(c, object).await {
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
    let names: Vec<&str> = properties.iter().filter_map(|p| p["name"].as_str()).collect();
    let find = |name: &str| properties.iter().find(|p| p["name"].as_str() == Some(name));
    let read_only = |p: &Value| p["modificationMetadata"]["readOnlyValue"].as_bool() == Some(true);
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
        Some(p) if d.mode != crate::config::Mode::Insert && p["hasUniqueValue"].as_bool() != Some(true) => out.push(
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
        if read_only(p) {
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
        if let (Some("enumeration"), ValueSource::Constant(v)) = (p["type"].as_str(), &m.value) {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let options: Vec<&str> = p["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["value"].as_str())
                .collect();
            if !options.contains(&text.as_str()) {
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
async fn properties(c: &HubspotConnection, object: &str) -> Result<Option<Vec<Value>>, String> {
    let token = crate::config::env::expand_env(&c.token).map_err(|e| format!("`token`: {e}"))?;
    let base = match &c.base_url {
        Some(u) => crate::config::env::expand_env(u).map_err(|e| format!("`base_url`: {e}"))?,
        None => "https://api.hubapi.com".into(),
    };
    let url = format!("{}/crm/v3/properties/{object}", base.trim_end_matches('/'));
    let client = crate::http::client().map_err(|e| e.to_string())?;
    let response = client
        .get(&url)
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status.as_u16() == 404 {
        return Ok(None);
    }
    if !status.is_success() {
        let text = crate::http::read_prefix(response, crate::http::ERROR_ANSWER_CAP).await;
        let said: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Err(format!(
            "HTTP {status}: {}",
            said["message"]
                .as_str()
                .unwrap_or(&text.chars().take(300).collect::<String>())
        ));
    }
    let text = crate::http::read_text(response, crate::http::DATA_ANSWER_CAP)
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("the properties are not JSON: {e}"))?;
    Ok(Some(v["results"].as_array().cloned().unwrap_or_default()))
}

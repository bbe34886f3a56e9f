//! An object's properties (`GET /crm/v3/properties/{objectType}`), as the source types
//! its columns, the destination converts dates and `validate --connect` checks mappings.

use super::client::{CallError, Conn};
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::AtomicU64;

/// One property of an object, as HubSpot describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// The internal name (`firstname`).
    pub name: String,
    /// `string`, `number`, `date`, `datetime`, `enumeration`, `bool`, `phone_number`, …
    pub kind: String,
    /// Set by HubSpot only (`modificationMetadata.readOnlyValue`).
    pub read_only: bool,
    /// `hasUniqueValue`: no two records share a value; usable as an `idProperty`.
    pub unique: bool,
    /// The values of an enumeration's options.
    pub options: Vec<String>,
}

impl Property {
    /// One entry of the properties' `results`; `None` without a name.
    pub fn parse(v: &Value) -> Option<Property> {
        Some(Property {
            name: v["name"].as_str()?.to_string(),
            kind: v["type"].as_str().unwrap_or("string").to_string(),
            read_only: v["modificationMetadata"]["readOnlyValue"].as_bool() == Some(true),
            unique: v["hasUniqueValue"].as_bool() == Some(true),
            options: v["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["value"].as_str().map(str::to_string))
                .collect(),
        })
    }
}

impl Conn {
    /// The properties of `object`; `None` when HubSpot has no such object (404).
    pub async fn properties(&self, calls: &AtomicU64, object: &str) -> Result<Option<Vec<Property>>, CallError> {
        if object.is_empty()
            || !object
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(CallError::Fatal(format!("`{object}` is not a HubSpot object type")));
        }
        match self
            .call(calls, Method::GET, &format!("properties/{object}"), None)
            .await
        {
            Ok(v) => {
                let Some(results) = v["results"].as_array() else {
                    return Err(CallError::Fatal(format!(
                        "the properties of `{object}` are not a `results` list"
                    )));
                };
                Ok(Some(results.iter().filter_map(Property::parse).collect()))
            }
            Err(CallError::Fatal(m)) if m.contains("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

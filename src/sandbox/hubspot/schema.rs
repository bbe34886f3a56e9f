//! The property schema of `contacts`, `companies`, `deals` and one custom object
//! (`subscriptions`, served as `p_subscriptions` and by its `objectTypeId` `2-1234567`, as
//! HubSpot names custom objects), checking a value against a property, and
//! `GET /crm/v3/properties/{objectType}` in HubSpot's shape. The standard objects answer to
//! their `objectTypeId` too (`0-1`, `0-2`, `0-3`).
//!
//! Values travel as strings. A number is any finite decimal; a date is `YYYY-MM-DD` or a
//! UTC midnight as epoch milliseconds or RFC 3339 (stored as `YYYY-MM-DD`; another time of
//! day is refused, `INVALID_DATE`, as HubSpot refuses it); a datetime is RFC 3339 or epoch
//! milliseconds (stored as `…T…Z` with milliseconds); an enumeration value
//! must be one of its options. An empty string clears any property.

use super::{timestamp, Hub, HubError};
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// A property's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    String,
    Number,
    Date,
    Datetime,
    Enumeration,
}

impl PropType {
    fn name(self) -> &'static str {
        match self {
            PropType::String => "string",
            PropType::Number => "number",
            PropType::Date => "date",
            PropType::Datetime => "datetime",
            PropType::Enumeration => "enumeration",
        }
    }

    fn field_type(self) -> &'static str {
        match self {
            PropType::String => "text",
            PropType::Number => "number",
            PropType::Date => "date",
            PropType::Datetime => "date",
            PropType::Enumeration => "select",
        }
    }
}

/// One property of an object.
#[derive(Debug, Clone)]
pub struct Property {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: PropType,
    pub options: &'static [&'static str],
    /// `hasUniqueValue`: no two records share a value; usable as an `idProperty`.
    pub unique: bool,
    /// Set by HubSpot only (`hs_object_id`, `createdate`, the last-modified dates).
    pub read_only: bool,
}

const fn p(name: &'static str, label: &'static str, kind: PropType) -> Property {
    Property {
        name,
        label,
        kind,
        options: &[],
        unique: false,
        read_only: false,
    }
}

const fn unique(mut prop: Property) -> Property {
    prop.unique = true;
    prop
}

const fn read_only(mut prop: Property) -> Property {
    prop.read_only = true;
    prop
}

const fn options(mut prop: Property, options: &'static [&'static str]) -> Property {
    prop.options = options;
    prop
}

/// An object type: its names, its properties, which of them are returned when none are
/// asked for, and which hold the creation and last-modified times.
pub(crate) struct ObjectType {
    pub name: &'static str,
    /// The other names a path may use: the `objectTypeId`, a custom object's `p_` name.
    pub aliases: &'static [&'static str],
    /// The upper-case singular HubSpot's messages use (`CONTACT`).
    pub singular: &'static str,
    /// The properties' `groupName`.
    pub group: &'static str,
    /// The read-only property that holds the creation time (`hs_createdate` on custom
    /// objects).
    pub created: &'static str,
    pub properties: Vec<Property>,
    pub defaults: &'static [&'static str],
    pub modified: &'static [&'static str],
}

impl ObjectType {
    pub(crate) fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }
}

const LIFECYCLE: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
];
const SEGMENTS: &[&str] = &["Enterprise", "Mid-Market", "SMB", "Consumer"];
const INDUSTRIES: &[&str] = &[
    "COMPUTER_SOFTWARE",
    "FINANCIAL_SERVICES",
    "RETAIL",
    "HOSPITAL_HEALTH_CARE",
    "OTHER",
];

fn contacts() -> ObjectType {
    use PropType::*;
    ObjectType {
        name: "contacts",
        aliases: &["0-1"],
        singular: "CONTACT",
        group: "contactinformation",
        created: "createdate",
        properties: vec![
            read_only(unique(p("hs_object_id", "Record ID", Number))),
            unique(p("email", "Email", String)),
            p("firstname", "First Name", String),
            p("lastname", "Last Name", String),
            p("phone", "Phone Number", String),
            p("company", "Company Name", String),
            options(p("lifecyclestage", "Lifecycle Stage", Enumeration), LIFECYCLE),
            options(p("customer_segment", "Customer Segment", Enumeration), SEGMENTS),
            p("ltv", "Lifetime Value", Number),
            p("last_activity_date", "Last Activity Date", Date),
            p("last_update", "Last Update", Datetime),
            unique(p("warehouse_id", "Warehouse ID", String)),
            read_only(p("createdate", "Create Date", Datetime)),
            read_only(p("lastmodifieddate", "Last Modified Date", Datetime)),
            read_only(p("hs_lastmodifieddate", "Object last modified date/time", Datetime)),
        ],
        defaults: &[
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ],
        modified: &["lastmodifieddate", "hs_lastmodifieddate"],
    }
}

fn companies() -> ObjectType {
    use PropType::*;
    ObjectType {
        name: "companies",
        aliases: &["0-2"],
        singular: "COMPANY",
        group: "companyinformation",
        created: "createdate",
        properties: vec![
            read_only(unique(p("hs_object_id", "Record ID", Number))),
            unique(p("domain", "Company Domain Name", String)),
            p("name", "Name", String),
            p("city", "City", String),
            options(p("industry", "Industry", Enumeration), INDUSTRIES),
            p("numberofemployees", "Number of Employees", Number),
            p("annualrevenue", "Annual Revenue", Number),
            p("founded_date", "Founded Date", Date),
            read_only(p("createdate", "Create Date", Datetime)),
            read_only(p("hs_lastmodifieddate", "Last Modified Date", Datetime)),
        ],
        defaults: &["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
        modified: &["hs_lastmodifieddate"],
    }
}

const DEAL_STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

fn deals() -> ObjectType {
    use PropType::*;
    ObjectType {
        name: "deals",
        aliases: &["0-3"],
        singular: "DEAL",
        group: "dealinformation",
        created: "createdate",
        properties: vec![
            read_only(unique(p("hs_object_id", "Record ID", Number))),
            p("dealname", "Deal Name", String),
            p("amount", "Amount", Number),
            options(p("dealstage", "Deal Stage", Enumeration), DEAL_STAGES),
            p("closedate", "Close Date", Datetime),
            options(p("pipeline", "Pipeline", Enumeration), &["default"]),
            unique(p("warehouse_id", "Warehouse ID", String)),
            read_only(p("createdate", "Create Date", Datetime)),
            read_only(p("hs_lastmodifieddate", "Last Modified Date", Datetime)),
        ],
        defaults: &[
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ],
        modified: &["hs_lastmodifieddate"],
    }
}

/// The custom object: created in an account with `POST /crm/v3/schemas` as `subscriptions`.
fn subscriptions() -> ObjectType {
    use PropType::*;
    ObjectType {
        name: "p_subscriptions",
        aliases: &["2-1234567"],
        singular: "P_SUBSCRIPTIONS",
        group: "subscriptions_information",
        created: "hs_createdate",
        properties: vec![
            read_only(unique(p("hs_object_id", "Record ID", Number))),
            unique(p("subscription_id", "Subscription ID", String)),
            options(
                p("plan", "Plan", Enumeration),
                &["Starter", "Professional", "Enterprise"],
            ),
            p("mrr", "Monthly Recurring Revenue", Number),
            options(
                p("status", "Status", Enumeration),
                &["trialing", "active", "past_due", "canceled"],
            ),
            p("started_on", "Started On", Date),
            read_only(p("hs_createdate", "Object create date/time", Datetime)),
            read_only(p("hs_lastmodifieddate", "Object last modified date/time", Datetime)),
        ],
        defaults: &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
        modified: &["hs_lastmodifieddate"],
    }
}

/// The object types served, in order.
pub(crate) fn object_types() -> Vec<ObjectType> {
    vec![contacts(), companies(), deals(), subscriptions()]
}

/// Why a value does not fit a property: HubSpot's error `code` and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub property: String,
    pub code: &'static str,
    pub message: String,
}

/// Checks `value` against property `name` of `object` and returns it as stored.
pub(crate) fn check(object: &ObjectType, name: &str, value: &Value) -> Result<String, Invalid> {
    let invalid = |code, message: String| Invalid {
        property: name.to_string(),
        code,
        message,
    };
    let Some(prop) = object.property(name) else {
        return Err(invalid(
            "PROPERTY_DOESNT_EXIST",
            format!("Property \"{name}\" does not exist"),
        ));
    };
    if prop.read_only {
        return Err(invalid(
            "READ_ONLY_VALUE",
            format!("\"{name}\" is a read only property; its value cannot be set."),
        ));
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => {
            return Err(invalid(
                "INVALID_VALUE",
                format!("{other} is not a valid value for {name}"),
            ))
        }
    };
    if text.is_empty() {
        return Ok(text);
    }
    match prop.kind {
        PropType::String => Ok(text),
        PropType::Number => match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(text.trim().to_string()),
            _ => Err(invalid("INVALID_INTEGER", format!("{text} was not a valid number."))),
        },
        PropType::Date => parse_date(&text).map_err(|m| invalid("INVALID_DATE", m)),
        PropType::Datetime => parse_datetime(&text)
            .map(timestamp)
            .ok_or_else(|| invalid("INVALID_DATETIME", format!("{text} is not a valid datetime"))),
        PropType::Enumeration => {
            if prop.options.contains(&text.as_str()) {
                Ok(text)
            } else {
                Err(invalid(
                    "INVALID_OPTION",
                    format!(
                        "{text} was not one of the allowed options: [{}]",
                        prop.options.join(", ")
                    ),
                ))
            }
        }
    }
}

/// A date property's value: `YYYY-MM-DD`, or a time that is a UTC midnight (epoch
/// milliseconds or ISO 8601), stored as `YYYY-MM-DD`. Any other time is refused as HubSpot
/// refuses it: `1706693415000 is at 9:30:15.0 UTC, not midnight!`.
fn parse_date(text: &str) -> Result<String, String> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.format("%Y-%m-%d").to_string());
    }
    let Some(t) = parse_datetime(text) else {
        return Err(format!(
            "{text} is not a valid date: give YYYY-MM-DD or the epoch milliseconds of a UTC midnight"
        ));
    };
    let millis = t.timestamp_millis();
    if millis.rem_euclid(86_400_000) != 0 {
        use chrono::Timelike;
        return Err(format!(
            "{millis} is at {}:{}:{}.{} UTC, not midnight!",
            t.hour(),
            t.minute(),
            t.second(),
            t.timestamp_subsec_millis()
        ));
    }
    Ok(t.format("%Y-%m-%d").to_string())
}

pub(crate) fn parse_datetime(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    chrono::DateTime::from_timestamp_millis(text.parse().ok()?)
}

/// A property as `GET /crm/v3/properties/{objectType}` lists it.
fn property_json(object: &ObjectType, prop: &Property, order: usize, epoch: &str) -> Value {
    let options: Vec<Value> = prop
        .options
        .iter()
        .enumerate()
        .map(|(i, o)| json!({"label": o, "value": o, "displayOrder": i, "hidden": false}))
        .collect();
    json!({
        "name": prop.name,
        "label": prop.label,
        "type": prop.kind.name(),
        "fieldType": prop.kind.field_type(),
        "description": "",
        "groupName": object.group,
        "options": options,
        "displayOrder": order,
        "calculated": false,
        "externalOptions": false,
        "hasUniqueValue": prop.unique,
        "hidden": false,
        "hubspotDefined": prop.name.starts_with("hs_") || (!object.name.starts_with("p_") && !prop.name.contains('_')),
        "modificationMetadata": {
            "archivable": !prop.read_only,
            "readOnlyDefinition": prop.read_only,
            "readOnlyValue": prop.read_only,
        },
        "formField": !prop.read_only,
        "createdAt": epoch,
        "updatedAt": epoch,
        "archived": false,
    })
}

/// `GET /crm/v3/properties/{objectType}`.
pub(crate) async fn list_properties(
    State(hub): State<Arc<Hub>>,
    Path(object): Path<String>,
) -> Result<Json<Value>, HubError> {
    let state = hub.lock();
    let t = state.store.object(&object)?;
    let epoch = timestamp(chrono::DateTime::UNIX_EPOCH);
    let results: Vec<Value> = t
        .properties
        .iter()
        .enumerate()
        .map(|(i, p)| property_json(t, p, i, &epoch))
        .collect();
    Ok(Json(json!({ "results": results })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_values_are_checked_against_their_property() {
        let c = contacts();
        assert_eq!(check(&c, "ltv", &json!(12.5)), Ok("12.5".into()));
        assert_eq!(check(&c, "ltv", &json!("x")).unwrap_err().code, "INVALID_INTEGER");
        assert_eq!(
            check(&c, "last_activity_date", &json!("2024-02-29")),
            Ok("2024-02-29".into())
        );
        assert_eq!(
            check(&c, "last_activity_date", &json!("1709164800000")),
            Ok("2024-02-29".into())
        );
        assert_eq!(
            check(&c, "last_activity_date", &json!("1709164800001")),
            Err(Invalid {
                property: "last_activity_date".into(),
                code: "INVALID_DATE",
                message: "1709164800001 is at 0:0:0.1 UTC, not midnight!".into()
            })
        );
        assert_eq!(
            check(&c, "last_activity_date", &json!("2024-01-31T09:30:15Z"))
                .unwrap_err()
                .message,
            "1706693415000 is at 9:30:15.0 UTC, not midnight!"
        );
        assert_eq!(
            check(&c, "last_activity_date", &json!("2024-02-29T00:00:00Z")),
            Ok("2024-02-29".into()),
            "a UTC midnight, however written"
        );
        assert_eq!(
            check(&c, "last_activity_date", &json!("2024-02-29T00:00:00+01:00"))
                .unwrap_err()
                .code,
            "INVALID_DATE",
            "midnight elsewhere is not midnight UTC"
        );
        assert_eq!(
            check(&c, "last_activity_date", &json!("soon")).unwrap_err().code,
            "INVALID_DATE"
        );
        assert_eq!(
            check(&c, "last_update", &json!("2024-01-31T09:30:15+01:00")),
            Ok("2024-01-31T08:30:15.000Z".into())
        );
        assert_eq!(check(&c, "lifecyclestage", &json!("lead")), Ok("lead".into()));
        assert_eq!(
            check(&c, "lifecyclestage", &json!("Lead")).unwrap_err().code,
            "INVALID_OPTION"
        );
        assert_eq!(
            check(&c, "nope", &json!("a")).unwrap_err().code,
            "PROPERTY_DOESNT_EXIST"
        );
        assert_eq!(
            check(&c, "createdate", &json!("a")).unwrap_err().code,
            "READ_ONLY_VALUE"
        );
        assert_eq!(check(&c, "ltv", &json!("")), Ok(String::new()), "empty clears");
    }
}

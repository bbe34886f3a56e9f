//! The sandbox's objects and fields: the default `Contact`, the `--objects` file format, and
//! the describe JSON built from them. Values are checked against these in [`super::value`].

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A field's data type, as describe names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Id,
    String,
    Textarea,
    Email,
    Phone,
    Url,
    Picklist,
    Multipicklist,
    Boolean,
    Int,
    Double,
    Currency,
    Percent,
    Date,
    Datetime,
    Reference,
}

impl FieldType {
    fn name(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::String => "string",
            FieldType::Textarea => "textarea",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Picklist => "picklist",
            FieldType::Multipicklist => "multipicklist",
            FieldType::Boolean => "boolean",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::Currency => "currency",
            FieldType::Percent => "percent",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Reference => "reference",
        }
    }

    fn soap_type(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Boolean => "xsd:boolean",
            FieldType::Int => "xsd:int",
            FieldType::Double | FieldType::Currency | FieldType::Percent => "xsd:double",
            FieldType::Date => "xsd:date",
            FieldType::Datetime => "xsd:dateTime",
            _ => "xsd:string",
        }
    }

    /// Whether values are text with a maximum `length`.
    pub(crate) fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::Textarea
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::Picklist
                | FieldType::Multipicklist
        )
    }

    pub(crate) fn is_number(self) -> bool {
        matches!(
            self,
            FieldType::Int | FieldType::Double | FieldType::Currency | FieldType::Percent
        )
    }

    fn default_length(self) -> u32 {
        match self {
            FieldType::Id | FieldType::Reference => 18,
            FieldType::Textarea => 32_768,
            FieldType::Email => 80,
            FieldType::Phone => 40,
            FieldType::Multipicklist => 4_099,
            t if t.is_text() => 255,
            _ => 0,
        }
    }
}

/// One field of an object, with every describe property the sandbox honours.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub kind: FieldType,
    /// Maximum characters (text types).
    pub length: u32,
    /// Total digits and digits right of the point (number types).
    pub precision: u32,
    pub scale: u32,
    pub nillable: bool,
    pub createable: bool,
    pub updateable: bool,
    pub defaulted_on_create: bool,
    pub external_id: bool,
    pub unique: bool,
    pub case_sensitive: bool,
    pub custom: bool,
    pub restricted_picklist: bool,
    /// Whether a query may filter on it (`WHERE`); some objects' fields are not, even
    /// `SystemModstamp` on a few.
    pub filterable: bool,
    /// Active picklist values, in order.
    pub picklist_values: Vec<String>,
    /// Objects a reference may point to.
    pub reference_to: Vec<String>,
}

impl Field {
    /// A nillable, createable and updateable field with the type's default length.
    pub fn new(name: &str, kind: FieldType) -> Field {
        let (precision, scale) = match kind {
            FieldType::Currency => (18, 2),
            FieldType::Double | FieldType::Percent => (18, 6),
            FieldType::Int => (9, 0),
            _ => (0, 0),
        };
        Field {
            name: name.to_string(),
            label: label_of(name),
            kind,
            length: kind.default_length(),
            precision,
            scale,
            nillable: true,
            createable: true,
            updateable: true,
            defaulted_on_create: false,
            external_id: false,
            unique: false,
            case_sensitive: false,
            custom: name.ends_with("__c"),
            restricted_picklist: false,
            filterable: true,
            picklist_values: Vec::new(),
            reference_to: Vec::new(),
        }
    }

    /// Required on create: `createable && !nillable && !defaultedOnCreate`
    /// (docs/salesforce-protocol.md §5).
    pub(crate) fn required(&self) -> bool {
        self.createable && !self.nillable && !self.defaulted_on_create
    }

    /// Whether upserts and queries can look records up by this field.
    fn id_lookup(&self) -> bool {
        self.kind == FieldType::Id || self.external_id || self.unique || self.kind == FieldType::Email
    }

    fn describe(&self) -> Value {
        let picklist: Vec<Value> = self
            .picklist_values
            .iter()
            .map(|v| json!({"active": true, "defaultValue": false, "label": v, "validFor": null, "value": v}))
            .collect();
        let text = self.kind.is_text() || matches!(self.kind, FieldType::Id | FieldType::Reference);
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind.name(),
            "soapType": self.kind.soap_type(),
            "length": if text { self.length } else { 0 },
            "byteLength": if text { self.length * 3 } else { 0 },
            "precision": if self.kind.is_number() && self.kind != FieldType::Int { self.precision } else { 0 },
            "scale": if self.kind.is_number() && self.kind != FieldType::Int { self.scale } else { 0 },
            "digits": if self.kind == FieldType::Int { self.precision } else { 0 },
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.defaulted_on_create,
            "calculated": false,
            "autoNumber": false,
            "externalId": self.external_id,
            "unique": self.unique,
            "idLookup": self.id_lookup(),
            "caseSensitive": self.case_sensitive,
            "custom": self.custom,
            "filterable": self.filterable,
            "sortable": self.kind != FieldType::Textarea,
            "restrictedPicklist": self.restricted_picklist,
            "picklistValues": picklist,
            "referenceTo": self.reference_to,
            "relationshipName": if self.kind == FieldType::Reference {
                Value::from(self.name.strip_suffix("Id").unwrap_or(&self.name))
            } else {
                Value::Null
            },
        })
    }
}

/// "Customer_Segment__c" → "Customer Segment"; "LastName" → "Last Name".
fn label_of(name: &str) -> String {
    let base = name.strip_suffix("__c").unwrap_or(name);
    let mut out = String::new();
    let mut prev_lower = false;
    for c in base.chars() {
        if c == '_' {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c);
    }
    out
}

/// The system fields every object has; the API never writes them.
pub(crate) const SYSTEM_FIELDS: [&str; 4] = ["IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp"];

/// An sObject type: name, key prefix and fields (the system fields included).
#[derive(Debug, Clone)]
pub struct SObject {
    pub name: String,
    pub label: String,
    /// The first three characters of its record ids (`003` for Contact).
    pub key_prefix: String,
    pub fields: Vec<Field>,
}

impl SObject {
    /// An object with `Id`, the system fields and `fields`.
    pub fn new(name: &str, key_prefix: &str, fields: Vec<Field>) -> SObject {
        let mut all = Vec::with_capacity(fields.len() + 5);
        if !fields.iter().any(|f| f.name == "Id") {
            all.push(system(Field::new("Id", FieldType::Id)));
        }
        all.extend(fields);
        for (name, kind) in [
            ("IsDeleted", FieldType::Boolean),
            ("CreatedDate", FieldType::Datetime),
            ("LastModifiedDate", FieldType::Datetime),
            ("SystemModstamp", FieldType::Datetime),
        ] {
            if !all.iter().any(|f| f.name == name) {
                all.push(system(Field::new(name, kind)));
            }
        }
        let label = label_of(name);
        for f in all.iter_mut().filter(|f| f.name == "Id" && f.label == "Id") {
            f.label = format!("{label} ID");
        }
        SObject {
            name: name.to_string(),
            label,
            key_prefix: key_prefix.to_string(),
            fields: all,
        }
    }

    /// A field by name, case-insensitively (the API treats names that way).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The `GET sobjects/{Object}/describe` body.
    pub(crate) fn describe(&self, version: &str) -> Value {
        let base = format!("/services/data/v{version}/sobjects/{}", self.name);
        json!({
            "name": self.name,
            "label": self.label,
            "labelPlural": format!("{}s", self.label),
            "keyPrefix": self.key_prefix,
            "custom": self.name.ends_with("__c"),
            "createable": true,
            "updateable": true,
            "deletable": true,
            "queryable": true,
            "searchable": true,
            "retrieveable": true,
            "replicateable": true,
            "undeletable": true,
            "fields": self.fields.iter().map(Field::describe).collect::<Vec<_>>(),
            "childRelationships": [],
            "recordTypeInfos": [],
            "urls": {
                "sobject": base,
                "describe": format!("{base}/describe"),
                "rowTemplate": format!("{base}/{{ID}}"),
            },
        })
    }

    /// The object's entry in `GET sobjects` (the global describe).
    pub(crate) fn summary(&self, version: &str) -> Value {
        let base = format!("/services/data/v{version}/sobjects/{}", self.name);
        json!({
            "name": self.name,
            "label": self.label,
            "labelPlural": format!("{}s", self.label),
            "keyPrefix": self.key_prefix,
            "custom": self.name.ends_with("__c"),
            "createable": true, "updateable": true, "deletable": true, "queryable": true,
            "retrieveable": true, "replicateable": true, "searchable": true, "undeletable": true,
            "urls": {"sobject": base, "describe": format!("{base}/describe"), "rowTemplate": format!("{base}/{{ID}}")},
        })
    }
}

fn system(mut f: Field) -> Field {
    f.createable = false;
    f.updateable = false;
    f.nillable = f.name != "Id" && f.name != "IsDeleted";
    f.defaulted_on_create = true;
    f.custom = false;
    f
}

/// The default `Contact`, modelled on the seed's field-mapping tables and the example models.
pub fn default_contact() -> SObject {
    let text = |name: &str, length: u32| Field {
        length,
        ..Field::new(name, FieldType::String)
    };
    let mut last_name = text("LastName", 80);
    last_name.nillable = false;
    let mut lead_source = Field::new("LeadSource", FieldType::Picklist);
    lead_source.length = 255;
    lead_source.picklist_values = [
        "Web",
        "Phone Inquiry",
        "Partner Referral",
        "Purchased List",
        "warehouse",
        "Other",
    ]
    .map(String::from)
    .to_vec();
    let mut segment = Field::new("Customer_Segment__c", FieldType::Picklist);
    segment.restricted_picklist = true;
    segment.picklist_values = ["Enterprise", "Mid-Market", "SMB", "Consumer"]
        .map(String::from)
        .to_vec();
    let mut account = Field::new("AccountId", FieldType::Reference);
    account.label = "Account ID".into();
    account.reference_to = vec!["Account".into()];
    let external = |name: &str, length: u32| Field {
        external_id: true,
        unique: true,
        case_sensitive: true,
        ..text(name, length)
    };
    SObject::new(
        "Contact",
        "003",
        vec![
            text("FirstName", 40),
            last_name,
            Field::new("Email", FieldType::Email),
            Field::new("Phone", FieldType::Phone),
            lead_source,
            account,
            segment,
            Field::new("LTV__c", FieldType::Currency),
            Field::new("Upsell_Score__c", FieldType::Double),
            Field {
                precision: 5,
                scale: 2,
                ..Field::new("Churn_Risk__c", FieldType::Percent)
            },
            Field::new("Last_Activity__c", FieldType::Date),
            Field::new("Last_Update__c", FieldType::Datetime),
            Field::new("Custom_Field__c", FieldType::Textarea),
            external("Crm_Id__c", 18),
            external("Warehouse_Id__c", 255),
        ],
    )
}

/// An objects file: `{"objects": [describe-like objects], "records": {"Contact": [...]}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectsFile {
    objects: Vec<ObjectSpec>,
    #[serde(default)]
    records: SeedRecords,
}

// Describe-like: the keys describe answers with; others (`soapType`, `byteLength`, …) are
// accepted and ignored so that a saved describe body can be used as is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectSpec {
    name: String,
    label: Option<String>,
    key_prefix: String,
    fields: Vec<FieldSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FieldSpec {
    name: String,
    label: Option<String>,
    #[serde(rename = "type")]
    kind: FieldType,
    length: Option<u32>,
    precision: Option<u32>,
    scale: Option<u32>,
    digits: Option<u32>,
    nillable: Option<bool>,
    createable: Option<bool>,
    updateable: Option<bool>,
    defaulted_on_create: Option<bool>,
    external_id: Option<bool>,
    unique: Option<bool>,
    case_sensitive: Option<bool>,
    restricted_picklist: Option<bool>,
    filterable: Option<bool>,
    #[serde(default)]
    picklist_values: Vec<PicklistSpec>,
    #[serde(default)]
    reference_to: Vec<String>,
}

/// A picklist value: `"SMB"` or describe's `{"value": "SMB", "active": true, …}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum PicklistSpec {
    Plain(String),
    Describe { value: String, active: Option<bool> },
}

/// Records to seed, by object name.
pub type SeedRecords = BTreeMap<String, Vec<Map<String, Value>>>;

/// Objects and initial records from an objects file's text.
pub fn parse_objects(text: &str) -> Result<(Vec<SObject>, SeedRecords), String> {
    let file: ObjectsFile = serde_json::from_str(text).map_err(|e| format!("not an objects file: {e}"))?;
    let mut objects = Vec::new();
    for o in file.objects {
        if o.key_prefix.len() != 3 || !o.key_prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("object `{}`: `keyPrefix` must be 3 letters or digits", o.name));
        }
        let mut fields = Vec::new();
        for f in o.fields {
            if SYSTEM_FIELDS.contains(&f.name.as_str()) {
                continue; // always present, never written
            }
            let mut field = Field::new(&f.name, f.kind);
            if f.name == "Id" {
                field = system(field);
            }
            if let Some(l) = f.label {
                field.label = l;
            }
            field.length = f.length.filter(|l| *l > 0).unwrap_or(field.length);
            field.precision = f.precision.or(f.digits).filter(|p| *p > 0).unwrap_or(field.precision);
            field.scale = f.scale.unwrap_or(field.scale);
            field.nillable = f.nillable.unwrap_or(field.nillable);
            field.createable = f.createable.unwrap_or(field.createable);
            field.updateable = f.updateable.unwrap_or(field.updateable);
            field.defaulted_on_create = f.defaulted_on_create.unwrap_or(field.defaulted_on_create);
            field.external_id = f.external_id.unwrap_or(false);
            field.unique = f.unique.unwrap_or(false);
            field.case_sensitive = f.case_sensitive.unwrap_or(false);
            field.restricted_picklist = f.restricted_picklist.unwrap_or(false);
            field.filterable = f.filterable.unwrap_or(true);
            field.picklist_values = f
                .picklist_values
                .into_iter()
                .filter_map(|p| match p {
                    PicklistSpec::Plain(v) => Some(v),
                    PicklistSpec::Describe { value, active } => active.unwrap_or(true).then_some(value),
                })
                .collect();
            field.reference_to = f.reference_to;
            if field.external_id && !(field.kind.is_text() || field.kind.is_number()) {
                return Err(format!(
                    "object `{}`: external ID field `{}` must be text or a number",
                    o.name, field.name
                ));
            }
            fields.push(field);
        }
        let mut object = SObject::new(&o.name, &o.key_prefix, fields);
        if let Some(l) = o.label {
            object.label = l;
        }
        objects.push(object);
    }
    for (i, a) in objects.iter().enumerate() {
        if objects[..i]
            .iter()
            .any(|b| b.name.eq_ignore_ascii_case(&a.name) || b.key_prefix == a.key_prefix)
        {
            return Err(format!("object `{}`: name or key prefix used twice", a.name));
        }
    }
    Ok((objects, file.records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label_of("Customer_Segment__c"), "Customer Segment");
        assert_eq!(label_of("LastName"), "Last Name");
        assert_eq!(label_of("LTV__c"), "LTV");
    }

    #[test]
    fn objects_file_fills_defaults_and_accepts_describe_keys() {
        let (objects, records) = parse_objects(
            r#"{"objects": [{"name": "Lead", "keyPrefix": "00Q", "fields": [
                {"name": "LastName", "type": "string", "length": 80, "nillable": false, "soapType": "xsd:string"},
                {"name": "Tier__c", "type": "picklist", "restrictedPicklist": true,
                 "picklistValues": ["Gold", {"value": "Silver", "active": true}, {"value": "Old", "active": false}]},
                {"name": "Ext__c", "type": "string", "externalId": true, "unique": true}]}],
                "records": {"Lead": [{"LastName": "Doe"}]}}"#,
        )
        .unwrap();
        let lead = &objects[0];
        assert_eq!(lead.fields[0].name, "Id");
        assert!(lead.field("lastname").unwrap().required());
        assert_eq!(lead.field("Tier__c").unwrap().picklist_values, ["Gold", "Silver"]);
        assert!(lead.field("SystemModstamp").is_some());
        assert_eq!(records["Lead"].len(), 1);
        assert!(parse_objects(r#"{"objects": [{"name": "X", "keyPrefix": "0", "fields": []}]}"#).is_err());
    }
}

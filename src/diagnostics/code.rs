//! The stable diagnostic codes. A code never changes meaning once released; `docs/diagnostics.md`
//! lists them with an example each.

use super::Severity;
use serde::{Serialize, Serializer};

macro_rules! codes {
    ($( $variant:ident = $code:literal, $sev:ident, $title:literal; )*) => {
        /// A stable identifier for each kind of problem `ebb validate` reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $( #[doc = $title] $variant, )* }

        impl Code {
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as printed, e.g. `E101`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The severity the code is reported with.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }

            /// A short description of the kind of problem.
            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title,)* }
            }
        }
    };
}

codes! {
    // Files and YAML syntax (E0xx)
    Io = "E001", Error, "a file cannot be read";
    YamlSyntax = "E002", Error, "the file is not valid YAML";
    DuplicateKey = "E003", Error, "a key appears twice in one mapping";
    YamlUnsupported = "E004", Error, "a YAML feature ebb does not accept (complex keys, unknown tags)";
    YamlLimit = "E005", Error, "YAML nested deeper than 128 levels, or anchors and aliases copying over 100,000 nodes";
    // JSON schema (E1xx)
    UnknownKey = "E101", Error, "a key that is not part of the format";
    WrongType = "E102", Error, "a value of the wrong type";
    MissingField = "E103", Error, "a required field is missing";
    InvalidValue = "E104", Error, "a value that is not one of the allowed values";
    BadPattern = "E105", Error, "a value that does not match the required pattern";
    OutOfRange = "E106", Error, "a number outside the allowed range";
    SchemaOther = "E107", Error, "a value the schema rejects";
    UnsupportedVersion = "E108", Error, "a config version this ebb does not know";
    // Names and connections (E2xx)
    DuplicateModel = "E201", Error, "two models share a name";
    UnknownConnection = "E202", Error, "a connection that is not defined in `ebb.yaml`";
    AmbiguousConnection = "E203", Error, "several connections of the type, none named";
    NoConnection = "E204", Error, "no connection of the type is defined";
    ConnectionTypeMismatch = "E205", Error, "the named connection has another type";
    WrongRole = "E206", Error, "a connection type used where it cannot serve (e.g. `file` as a source)";
    MissingForType = "E207", Error, "a field the source or destination type needs is missing";
    IrrelevantField = "W208", Warning, "a field the source or destination type ignores";
    InsecureUrl = "E209", Error, "a URL that must be https (or a loopback host) is not";
    BadUrl = "E210", Error, "a URL that does not parse or has the wrong scheme";
    BadRateLimit = "E211", Error, "a rate limit not of the form N/second|minute|hour|day";
    BadTableName = "E212", Error, "a destination table not written `name` or `schema.name` with plain identifiers";
    // SQL (E3xx)
    SqlSyntax = "E301", Error, "the source query does not parse";
    SqlNotQuery = "E302", Error, "the source query is not a single SELECT";
    KeyNotSelected = "E303", Error, "the query does not select the `unique_identifier`";
    ColumnNotSelected = "E304", Error, "the query does not select a mapping's source column";
    SelectStar = "N305", Note, "`SELECT *`: the selected columns are not known until run time";
    FieldNotFetched = "E306", Error, "an inbound mapping reads a CRM field the source does not fetch";
    CursorSystemModstamp = "N307", Note, "an inbound source reads changes by `SystemModstamp`, not `LastModifiedDate`";
    BadDuration = "E308", Error, "a `lookback` or `settle` not of the form <n>s|<n>m|<n>h|<n>d";
    // Mappings (E4xx)
    DuplicateDestination = "E401", Error, "two mappings write the same destination field";
    BadPath = "E402", Error, "an invalid dotted path or JSONPath";
    MappingShape = "E403", Error, "a mapping needs exactly one of `source` and `constant`";
    UnknownTransform = "E404", Error, "an unknown transform";
    BadTransformArgs = "E405", Error, "a transform with wrong arguments";
    KeyMappedTwice = "W406", Warning, "the key column is mapped to a field other than the destination key";
    NoMappings = "E407", Error, "a model that sends no field";
    // Modes (E5xx)
    ModeConflict = "E501", Error, "a combination of mode and options that cannot work";
    UpsertById = "N502", Note, "Salesforce cannot upsert by record `Id`: rows are updated";
    ApiNotApplicable = "E503", Error, "`api` is only for Salesforce destinations";
    DefaultDeleteGuard = "N504", Note, "a model that deletes or clears records gets ebb's default guard on deletes";
    ConflictSettings = "E505", Error, "`conflicts` settings that cannot work: not a CRM destination, an unmapped field, no modification time for `newest_wins`, or a `crm_state` model that does not cover the fields";
    // Schedules (E6xx)
    BadInterval = "E601", Error, "an interval not of the form hourly|daily|weekly|<n>s|<n>m|<n>h|<n>d";
    BadCron = "E602", Error, "an invalid cron expression";
    BadTimezone = "E603", Error, "an unknown IANA timezone";
    ScheduleShape = "E604", Error, "a schedule needs exactly one of `interval` and `cron`";
    ShortInterval = "W605", Warning, "an interval under a minute";
    // Secrets and environment (E7xx)
    LiteralSecret = "E701", Error, "a secret written literally instead of as `${VAR}`";
    UnsetVariable = "W702", Warning, "a `${VAR}` that is not set in the environment";
    BadVariable = "E703", Error, "a malformed `${…}` reference";
    // Checks against the live systems, `validate --connect` (E9xx)
    ConnectFailed = "E901", Error, "a connection cannot be reached or refuses the credentials";
    QueryFailed = "E902", Error, "the warehouse rejects the query";
    ColumnMissing = "E903", Error, "the query does not return a column the model reads";
    TypeMismatch = "E904", Error, "a column's type does not fit its path or transforms";
    SalesforceObjectMissing = "E905", Error, "the Salesforce object does not exist or the user cannot see it";
    SalesforceFieldMissing = "E906", Error, "a mapped field does not exist on the Salesforce object";
    SalesforceFieldReadOnly = "E907", Error, "a mapped field cannot be written in the model's mode";
    SalesforceKeyNotExternal = "E908", Error, "the key field is neither `Id` nor an external ID";
    SalesforceTypeMismatch = "E909", Error, "a mapped value's type does not fit the Salesforce field";
    PicklistValue = "E910", Error, "a constant is not a value of a restricted picklist";
    PicklistValues = "W911", Warning, "the query returns values a restricted picklist refuses";
    RequiredFieldUnmapped = "W912", Warning, "a field required to create a record is not mapped";
    TableIncompatible = "E913", Error, "the destination table exists with columns that cannot hold the model's rows";
    TableCreated = "N914", Note, "the destination table does not exist yet: the first run creates it";
    HubspotObjectMissing = "E915", Error, "the HubSpot object does not exist or the token cannot see it";
    HubspotPropertyInvalid = "E916", Error, "a mapped HubSpot property does not exist, is read-only, or (the key) is not unique";
    // Project (E8xx)
    NoModels = "W801", Warning, "the project has no model files";
    BadModelsDir = "E802", Error, "`models_dir` is not a directory";
    BadCondition = "E803", Error, "an alert condition that does not parse or names an unknown metric";
    UnknownChannel = "E804", Error, "an alert notifies a channel not declared under `notifications:` (or nobody)";
    DuplicateAlert = "E805", Error, "two alerts share a name";
    UnknownModel = "E806", Error, "an alert's `models:` names a model the project does not have";
    SlackComment = "N807", Note, "`slack: #channel` reads as an empty value (YAML comment): the default Slack channel is used";
    BadRetention = "E809", Error, "a `retention` period not of the form <n>d|<n>w|<n>h (at least a day) or `forever`";
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

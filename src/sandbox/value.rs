//! Field values: checking what a request sends against the field's describe (type, length,
//! picklist, range) and converting it to the stored form, which is the form the API answers
//! with (dates `2024-01-31`, datetimes `2024-01-31T09:30:00.000+0000`, numbers as JSON
//! numbers). JSON bodies (REST, Collections) and CSV cells (Bulk 2.0) share the checks.

use super::schema::{Field, FieldType};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{json, Value};

/// One per-record error, as Collections (`statusCode`), REST (`errorCode`) and Bulk
/// (`sf__Error`) render it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordError {
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>, fields: &[&str]) -> RecordError {
        RecordError {
            code,
            message: message.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// The Collections form: `{"statusCode", "message", "fields"}`.
    pub(crate) fn collection_json(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }

    /// The top-level REST form: `{"message", "errorCode", "fields"}`.
    pub(crate) fn rest_json(&self) -> Value {
        json!({"message": self.message, "errorCode": self.code, "fields": self.fields})
    }

    /// The Bulk 2.0 `sf__Error` form: `CODE:message:Field1,Field2 --`.
    pub(crate) fn bulk_text(&self) -> String {
        format!("{}:{}:{} --", self.code, self.message, self.fields.join(","))
    }
}

/// A value as sent: a JSON value (REST, Collections) or a CSV cell (Bulk).
#[derive(Clone, Copy)]
pub(crate) enum Input<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> Input<'a> {
    /// The text of a CSV cell or a JSON string.
    pub(crate) fn text(&self) -> Option<&'a str> {
        match *self {
            Input::Text(s) => Some(s),
            Input::Json(Value::String(s)) => Some(s.as_str()),
            Input::Json(_) => None,
        }
    }

    fn display(&self) -> String {
        match self.text() {
            Some(s) => s.to_string(),
            None => match self {
                Input::Json(v) => v.to_string(),
                Input::Text(s) => s.to_string(),
            },
        }
    }
}

/// The stored form of a non-null `input` for `field`, or the record error Salesforce gives.
pub(crate) fn coerce(field: &Field, input: Input<'_>) -> Result<Value, RecordError> {
    let wrong_type = || {
        RecordError::new(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            format!("{}: value not of required type: {}", field.label, input.display()),
            &[&field.name],
        )
    };
    match field.kind {
        t if t.is_text() => {
            let text = match (input, input.text()) {
                (_, Some(s)) => s.to_string(),
                // Salesforce's JSON reader turns scalars into text for text fields.
                (Input::Json(v @ (Value::Number(_) | Value::Bool(_))), _) => v.to_string(),
                _ => return Err(wrong_type()),
            };
            check_text(field, text)
        }
        FieldType::Id | FieldType::Reference => input.text().map(Value::from).ok_or_else(wrong_type),
        FieldType::Boolean => {
            let b = match (input, input.text()) {
                (Input::Json(Value::Bool(b)), _) => Some(*b),
                (_, Some(s)) => match s.to_ascii_lowercase().as_str() {
                    "true" | "1" => Some(true),
                    "false" | "0" => Some(false),
                    _ => None,
                },
                _ => None,
            };
            b.map(Value::Bool).ok_or_else(wrong_type)
        }
        t if t.is_number() => {
            let n = match (input, input.text()) {
                (Input::Json(Value::Number(n)), _) => n.as_f64(),
                (_, Some(s)) => parse_number(s),
                _ => None,
            }
            .ok_or_else(wrong_type)?;
            number(field, n, &input.display())
        }
        FieldType::Date => input
            .text()
            .and_then(parse_date)
            .map(|d| Value::from(d.format("%Y-%m-%d").to_string()))
            .ok_or_else(wrong_type),
        FieldType::Datetime => input
            .text()
            .and_then(parse_datetime)
            .map(|d| Value::from(format_datetime(d)))
            .ok_or_else(wrong_type),
        _ => Err(wrong_type()),
    }
}

fn check_text(field: &Field, text: String) -> Result<Value, RecordError> {
    let chars = text.chars().count();
    if chars > field.length as usize {
        return Err(RecordError::new(
            "STRING_TOO_LONG",
            format!(
                "{}: data value too large: {} (max length={})",
                field.label,
                text.chars().take(80).collect::<String>(),
                field.length
            ),
            &[&field.name],
        ));
    }
    if field.kind == FieldType::Email && !text.is_empty() && !valid_email(&text) {
        return Err(RecordError::new(
            "INVALID_EMAIL_ADDRESS",
            format!("{}: invalid email address: {text}", field.label),
            &[&field.name],
        ));
    }
    if field.restricted_picklist {
        let values: Vec<&str> = match field.kind {
            FieldType::Multipicklist => text.split(';').collect(),
            _ => vec![text.as_str()],
        };
        if let Some(bad) = values.iter().find(|v| !field.picklist_values.iter().any(|p| p == *v)) {
            return Err(RecordError::new(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                format!("{}: bad value for restricted picklist field: {bad}", field.label),
                &[&field.name],
            ));
        }
    }
    Ok(Value::String(text))
}

fn number(field: &Field, n: f64, shown: &str) -> Result<Value, RecordError> {
    let out_of_range = || {
        RecordError::new(
            "NUMBER_OUTSIDE_VALID_RANGE",
            format!(
                "{}: value outside of valid range on numeric field: {shown}",
                field.label
            ),
            &[&field.name],
        )
    };
    if field.kind == FieldType::Int {
        if n.fract() != 0.0 {
            return Err(RecordError::new(
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                format!("{}: value not of required type: {shown}", field.label),
                &[&field.name],
            ));
        }
        if n.abs() >= 10f64.powi(field.precision as i32) {
            return Err(out_of_range());
        }
        return Ok(Value::from(n as i64));
    }
    let rounded = round_decimal(n, field.scale);
    if rounded.abs() >= 10f64.powi(field.precision.saturating_sub(field.scale) as i32) {
        return Err(out_of_range());
    }
    serde_json::Number::from_f64(rounded)
        .map(Value::Number)
        .ok_or_else(out_of_range)
}

/// `n` rounded half away from zero to `scale` decimal places, in decimal (as Salesforce
/// stores numbers): 10.555 → 10.56, where binary arithmetic would give 10.55.
fn round_decimal(n: f64, scale: u32) -> f64 {
    // `Display` prints the shortest text that reads back as `n`, never in exponent form.
    let text = format!("{}", n.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let scale = scale as usize;
    if frac.len() <= scale {
        return n;
    }
    let mut digits: Vec<u8> = format!("{int}{}", &frac[..scale]).into_bytes();
    if frac.as_bytes()[scale] >= b'5' {
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, b'1');
                break;
            }
            i -= 1;
            if digits[i] == b'9' {
                digits[i] = b'0';
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let point = digits.len() - scale;
    let rounded = format!(
        "{}.{}",
        String::from_utf8_lossy(&digits[..point]),
        String::from_utf8_lossy(&digits[point..])
    );
    rounded
        .trim_end_matches('.')
        .parse::<f64>()
        .map_or(n, |r| r.copysign(n))
}

fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    ok.then(|| s.parse::<f64>().ok()).flatten().filter(|n| n.is_finite())
}

/// `local@domain.tld`, no spaces: the shape Salesforce's email check insists on.
fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|p| !p.is_empty())
}

/// A `YYYY-MM-DD` date.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    (s.len() == 10)
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
}

/// An ISO 8601 datetime with an offset: `2024-01-31T09:30:00Z`, `…+01:00`, `….000+0000`.
pub(crate) fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Salesforce's datetime form: `2024-01-31T09:30:00.000+0000`.
pub(crate) fn format_datetime(d: DateTime<Utc>) -> String {
    let s = d.to_rfc3339_opts(SecondsFormat::Millis, true);
    format!("{}+0000", s.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: FieldType) -> Field {
        Field::new("X__c", kind)
    }

    #[test]
    fn numbers_round_to_scale_and_check_range() {
        let ltv = field(FieldType::Currency);
        assert_eq!(coerce(&ltv, Input::Json(&json!(12.345))).unwrap(), json!(12.35));
        assert_eq!(coerce(&ltv, Input::Json(&json!(10.555))).unwrap(), json!(10.56));
        assert_eq!(coerce(&ltv, Input::Json(&json!(-0.125))).unwrap(), json!(-0.13));
        assert_eq!(coerce(&ltv, Input::Json(&json!(99.999))).unwrap(), json!(100.0));
        assert_eq!(
            coerce(&ltv, Input::Json(&json!(7.000000000000001))).unwrap(),
            json!(7.0)
        );
        assert_eq!(round_decimal(1e-7, 6), 0.0);
        assert_eq!(round_decimal(5e-7, 6), 1e-6);
        assert_eq!(coerce(&ltv, Input::Text("7")).unwrap(), json!(7.0));
        assert_eq!(
            coerce(&ltv, Input::Json(&json!("abc"))).unwrap_err().code,
            "INVALID_TYPE_ON_FIELD_IN_RECORD"
        );
        assert_eq!(
            coerce(&ltv, Input::Json(&json!(1e17))).unwrap_err().code,
            "NUMBER_OUTSIDE_VALID_RANGE"
        );
        assert_eq!(
            coerce(&ltv, Input::Text("nan")).unwrap_err().code,
            "INVALID_TYPE_ON_FIELD_IN_RECORD"
        );
    }

    #[test]
    fn dates_and_datetimes() {
        let d = field(FieldType::Date);
        assert_eq!(coerce(&d, Input::Text("2024-02-29")).unwrap(), json!("2024-02-29"));
        assert!(coerce(&d, Input::Text("2023-02-29")).is_err());
        assert!(coerce(&d, Input::Text("2024-2-1")).is_err());
        let dt = field(FieldType::Datetime);
        assert_eq!(
            coerce(&dt, Input::Text("2024-01-31T10:30:00+01:00")).unwrap(),
            json!("2024-01-31T09:30:00.000+0000")
        );
        assert_eq!(
            coerce(&dt, Input::Text("2024-01-31T09:30:00.250+0000")).unwrap(),
            json!("2024-01-31T09:30:00.250+0000")
        );
        assert!(coerce(&dt, Input::Text("2024-01-31")).is_err());
    }

    #[test]
    fn text_checks() {
        let mut s = field(FieldType::String);
        s.length = 3;
        assert_eq!(coerce(&s, Input::Json(&json!(12))).unwrap(), json!("12"));
        assert_eq!(coerce(&s, Input::Text("abcd")).unwrap_err().code, "STRING_TOO_LONG");
        let e = Field::new("Email", FieldType::Email);
        assert!(coerce(&e, Input::Text("a@b.co")).is_ok());
        for bad in ["a@b", "a b@c.d", "@c.d", "a@@c.d", "a@c..d"] {
            assert_eq!(
                coerce(&e, Input::Text(bad)).unwrap_err().code,
                "INVALID_EMAIL_ADDRESS",
                "{bad}"
            );
        }
        let mut p = field(FieldType::Picklist);
        p.restricted_picklist = true;
        p.picklist_values = vec!["SMB".into()];
        assert!(coerce(&p, Input::Text("SMB")).is_ok());
        let err = coerce(&p, Input::Text("smb")).unwrap_err();
        assert_eq!(err.code, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
        assert_eq!(
            err.bulk_text(),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:X: bad value for restricted picklist field: smb:X__c --"
        );
    }
}

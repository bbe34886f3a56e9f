//! `Val`: one cell of a row as the mapping sees it, read from an Arrow array, and its
//! JSON form. Decimals stay exact from the warehouse to the wire: they are carried as an
//! integer and a scale (or as the number's text when it exceeds 38 digits) and written
//! as JSON numbers digit for digit.

use super::error::ValueError;
use crate::source::{DECIMAL_TEXT, JSON_TEXT};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use std::fmt::Write;

/// A value on its way from a row to a destination field.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// `v / 10^scale`, exact.
    Decimal {
        v: i128,
        scale: u8,
    },
    /// An exact number too large for `Decimal`, as its text.
    NumberText(String),
    Str(String),
    Date(NaiveDate),
    /// A timestamp; `utc` when the source type had a time zone (the instant is UTC).
    Timestamp {
        at: NaiveDateTime,
        utc: bool,
    },
    Json(serde_json::Value),
    Bytes(Vec<u8>),
}

impl Val {
    /// What kind of value it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "a boolean",
            Val::Int(_) | Val::UInt(_) => "an integer",
            Val::Float(_) | Val::Decimal { .. } | Val::NumberText(_) => "a number",
            Val::Str(_) => "text",
            Val::Date(_) => "a date",
            Val::Timestamp { .. } => "a timestamp",
            Val::Json(_) => "a JSON value",
            Val::Bytes(_) => "binary data",
        }
    }

    /// The value as JSON, written into `out`. Fails for non-finite floats.
    pub fn write_json(&self, out: &mut String) -> Result<(), ValueError> {
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Val::UInt(u) => out.push_str(itoa::Buffer::new().format(*u)),
            Val::Float(f) => write_float(*f, out)?,
            Val::Decimal { v, scale } => out.push_str(&decimal_text(*v, *scale)),
            Val::NumberText(t) => out.push_str(t),
            Val::Str(s) => write_json_string(s, out),
            Val::Date(d) => {
                let _ = write!(out, "\"{}\"", d.format("%Y-%m-%d"));
            }
            Val::Timestamp { at, utc } => {
                out.push('"');
                push_timestamp(at, *utc, out);
                out.push('"');
            }
            Val::Json(v) => out.push_str(&v.to_string()),
            Val::Bytes(b) => {
                out.push('"');
                for x in b {
                    let _ = write!(out, "{x:02x}");
                }
                out.push('"');
            }
        }
        Ok(())
    }

    /// The value as a `serde_json::Value` (decimals through their exact text).
    pub fn to_json(&self) -> Result<serde_json::Value, ValueError> {
        let mut s = String::new();
        self.write_json(&mut s)?;
        serde_json::from_str(&s).map_err(ValueError::BadJson)
    }

    /// Text of the value for text transforms and keys: strings as they are, other scalars
    /// in their JSON form without quotes.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Val::Null => None,
            Val::Str(s) => Some(s.clone()),
            Val::Date(d) => Some(d.format("%Y-%m-%d").to_string()),
            Val::Timestamp { at, utc } => Some(timestamp_text(at, *utc)),
            other => {
                let mut s = String::new();
                other.write_json(&mut s).ok()?;
                Some(s)
            }
        }
    }

    /// As [`Val::as_text`], taking the value (a string is moved, not copied).
    pub fn into_text(self) -> Option<String> {
        match self {
            Val::Str(s) => Some(s),
            other => other.as_text(),
        }
    }

    /// The value as a JSON document to look into with a path.
    pub fn as_document(&self) -> Result<serde_json::Value, ValueError> {
        match self {
            Val::Json(v) => Ok(v.clone()),
            Val::Str(s) => serde_json::from_str(s).map_err(ValueError::NotJson),
            Val::Null => Ok(serde_json::Value::Null),
            other => Err(ValueError::NoKeys(other.kind())),
        }
    }

    /// A JSON value (from a path lookup) as a `Val`.
    pub fn from_json(v: serde_json::Value) -> Val {
        match v {
            serde_json::Value::Null => Val::Null,
            serde_json::Value::Bool(b) => Val::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Val::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Val::UInt(u)
                } else {
                    Val::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Val::Str(s),
            other => Val::Json(other),
        }
    }

    /// The value as a float, for arithmetic transforms.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::UInt(u) => Some(*u as f64),
            Val::Float(f) => Some(*f),
            Val::Decimal { v, scale } => Some(*v as f64 / 10f64.powi(i32::from(*scale))),
            Val::NumberText(t) => t.parse().ok(),
            _ => None,
        }
    }
}

/// `12345, 2` → `"123.45"`.
pub fn decimal_text(v: i128, scale: u8) -> String {
    if scale == 0 {
        return v.to_string();
    }
    let digits = v.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale - digits.len() + 1))
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

/// A float as JSON, as `serde_json` writes it, without allocating; non-finite floats
/// have no JSON form.
pub fn write_float(f: f64, out: &mut String) -> Result<(), ValueError> {
    if !f.is_finite() {
        return Err(ValueError::NotFinite(f));
    }
    if let Some(n) = serde_json::Number::from_f64(f) {
        let _ = write!(out, "{n}");
    }
    Ok(())
}

fn timestamp_text(at: &NaiveDateTime, utc: bool) -> String {
    let mut s = String::with_capacity(27);
    push_timestamp(at, utc, &mut s);
    s
}

/// Appends a timestamp as ISO 8601 text: microseconds when not whole, `Z` when `utc`.
pub fn push_timestamp(at: &NaiveDateTime, utc: bool, s: &mut String) {
    use chrono::{Datelike, Timelike};
    // Written by hand: chrono's format strings are parsed on every call, and this is on
    // every row of a model with a timestamp.
    let (y, mo, d) = (at.year(), at.month(), at.day());
    let (h, mi, se) = (at.hour(), at.minute(), at.second());
    if (0..=9999).contains(&y) {
        push_digits(s, y as u32, 4);
    } else {
        let _ = write!(s, "{y:+05}");
    }
    s.push('-');
    push_digits(s, mo, 2);
    s.push('-');
    push_digits(s, d, 2);
    s.push('T');
    push_digits(s, h, 2);
    s.push(':');
    push_digits(s, mi, 2);
    s.push(':');
    push_digits(s, se, 2);
    let micros = at.and_utc().timestamp_subsec_micros();
    if micros != 0 {
        s.push('.');
        push_digits(s, micros.min(999_999), 6);
    }
    if utc {
        s.push('Z');
    }
}

/// Appends `n` as exactly `width` decimal digits (zero-padded).
fn push_digits(s: &mut String, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        s.push(char::from(b'0' + ((n / div) % 10) as u8));
        div /= 10;
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    // Runs of bytes that need no escape are copied whole (the common case: all of it).
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'"' && b != b'\\' && b >= 0x20 {
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            other => {
                let _ = write!(out, "\\u{:04x}", other);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Reads row `i` of `array` (a column described by `field`).
pub fn read(array: &ArrayRef, field: &arrow::datatypes::Field, i: usize) -> Result<Val, ValueError> {
    if array.is_null(i) {
        return Ok(Val::Null);
    }
    let marked = |key: &str| field.metadata().contains_key(key);
    Ok(match array.data_type() {
        DataType::Null => Val::Null,
        DataType::Boolean => Val::Bool(array.as_boolean().value(i)),
        DataType::Int8 => Val::Int(array.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Val::Int(array.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Val::Int(array.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Val::Int(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Val::Int(array.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Val::Int(array.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Val::Int(array.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => Val::UInt(array.as_primitive::<UInt64Type>().value(i)),
        DataType::Float16 => Val::Float(array.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => Val::Float(array.as_primitive::<Float32Type>().value(i).into()),
        DataType::Float64 => Val::Float(array.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(i);
            match u8::try_from(*scale) {
                Ok(s) => Val::Decimal { v, scale: s },
                // A negative scale multiplies: write the number out.
                Err(_) => Val::NumberText(format!("{v}{}", "0".repeat(scale.unsigned_abs() as usize))),
            }
        }
        DataType::Utf8 => text(array.as_string::<i32>().value(i), marked),
        DataType::LargeUtf8 => text(array.as_string::<i64>().value(i), marked),
        DataType::Utf8View => text(array.as_string_view().value(i), marked),
        DataType::Date32 => {
            let d = array.as_primitive::<Date32Type>().value(i);
            Val::Date(
                DateTime::from_timestamp(i64::from(d) * 86_400, 0)
                    .ok_or(ValueError::DateOutOfRange)?
                    .date_naive(),
            )
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(i);
            Val::Date(
                DateTime::from_timestamp_millis(ms)
                    .ok_or(ValueError::DateOutOfRange)?
                    .date_naive(),
            )
        }
        DataType::Timestamp(unit, tz) => {
            let at = match unit {
                TimeUnit::Second => DateTime::from_timestamp(array.as_primitive::<TimestampSecondType>().value(i), 0),
                TimeUnit::Millisecond => {
                    DateTime::from_timestamp_millis(array.as_primitive::<TimestampMillisecondType>().value(i))
                }
                TimeUnit::Microsecond => {
                    DateTime::from_timestamp_micros(array.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(
                    array.as_primitive::<TimestampNanosecondType>().value(i),
                )),
            }
            .ok_or(ValueError::TimestampOutOfRange)?;
            Val::Timestamp {
                at: at.naive_utc(),
                utc: tz.is_some(),
            }
        }
        DataType::Binary => Val::Bytes(array.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Val::Bytes(array.as_binary::<i64>().value(i).to_vec()),
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let key = dictionary_key(dict.keys(), i).ok_or(ValueError::DictionaryKey)?;
            let values = dict.values();
            let vf = arrow::datatypes::Field::new("v", values.data_type().clone(), true);
            read(values, &vf, key)?
        }
        DataType::Struct(_)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::Map(_, _)
        | DataType::FixedSizeList(_, _) => Val::Json(nested(array, i)?),
        other => return Err(ValueError::UnsupportedType(other.clone())),
    })
}

fn text(s: &str, marked: impl Fn(&str) -> bool) -> Val {
    if marked(DECIMAL_TEXT) {
        Val::NumberText(s.to_string())
    } else if marked(JSON_TEXT) {
        match serde_json::from_str(s) {
            Ok(v) => Val::Json(v),
            Err(_) => Val::Str(s.to_string()),
        }
    } else {
        Val::Str(s.to_string())
    }
}

/// Entry `i` of a dictionary's keys, as an index into its values.
fn dictionary_key(keys: &dyn Array, i: usize) -> Option<usize> {
    match keys.data_type() {
        DataType::Int8 => usize::try_from(keys.as_primitive::<Int8Type>().value(i)).ok(),
        DataType::Int16 => usize::try_from(keys.as_primitive::<Int16Type>().value(i)).ok(),
        DataType::Int32 => usize::try_from(keys.as_primitive::<Int32Type>().value(i)).ok(),
        DataType::Int64 => usize::try_from(keys.as_primitive::<Int64Type>().value(i)).ok(),
        DataType::UInt8 => Some(usize::from(keys.as_primitive::<UInt8Type>().value(i))),
        DataType::UInt16 => Some(usize::from(keys.as_primitive::<UInt16Type>().value(i))),
        DataType::UInt32 => usize::try_from(keys.as_primitive::<UInt32Type>().value(i)).ok(),
        DataType::UInt64 => usize::try_from(keys.as_primitive::<UInt64Type>().value(i)).ok(),
        _ => None,
    }
}

/// A struct, list or map cell as JSON.
fn nested(array: &ArrayRef, i: usize) -> Result<serde_json::Value, ValueError> {
    use serde_json::Value as J;
    if array.is_null(i) {
        return Ok(J::Null);
    }
    Ok(match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut m = serde_json::Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), nested(col, i)?);
            }
            J::Object(m)
        }
        DataType::List(_) => {
            let l = array.as_list::<i32>();
            let items = l.value(i);
            J::Array((0..items.len()).map(|j| nested(&items, j)).collect::<Result<_, _>>()?)
        }
        DataType::LargeList(_) => {
            let l = array.as_list::<i64>();
            let items = l.value(i);
            J::Array((0..items.len()).map(|j| nested(&items, j)).collect::<Result<_, _>>()?)
        }
        DataType::FixedSizeList(_, _) => {
            let l = array.as_fixed_size_list();
            let items = l.value(i);
            J::Array((0..items.len()).map(|j| nested(&items, j)).collect::<Result<_, _>>()?)
        }
        DataType::Map(_, _) => {
            let m = array.as_map();
            let entries = m.value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut out = serde_json::Map::new();
            for j in 0..entries.len() {
                let kf = arrow::datatypes::Field::new("k", keys.data_type().clone(), true);
                let k = read(keys, &kf, j)?.as_text().unwrap_or_default();
                out.insert(k, nested(values, j)?);
            }
            J::Object(out)
        }
        _ => {
            let f = arrow::datatypes::Field::new("v", array.data_type().clone(), true);
            read(array, &f, i)?.to_json()?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_serde_json_writes_them() {
        for f in [
            0.0,
            -0.0,
            1.0,
            1.5,
            -2.25,
            0.1 + 0.2,
            1e21,
            1e-7,
            123456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            let mut out = String::new();
            write_float(f, &mut out).unwrap();
            assert_eq!(out, serde_json::Number::from_f64(f).unwrap().to_string(), "{f}");
        }
        assert!(write_float(f64::NAN, &mut String::new()).is_err());
        assert!(write_float(f64::INFINITY, &mut String::new()).is_err());
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls_only() {
        let mut out = String::new();
        write_json_string("Zoë \"Q\" a\\b\n\t\r\u{1}é—ok", &mut out);
        assert_eq!(out, r#""Zoë \"Q\" a\\b\n\t\r\u0001é—ok""#);
        let mut out = String::new();
        write_json_string("", &mut out);
        assert_eq!(out, "\"\"");
        // Whatever serde_json makes of it, it reads back the same text.
        let text = "plain ✓ \u{7f} \u{1f} end";
        let mut out = String::new();
        write_json_string(text, &mut out);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
    }

    fn json(v: Val) -> String {
        let mut s = String::new();
        v.write_json(&mut s).unwrap();
        s
    }

    #[test]
    fn decimals_are_written_digit_for_digit() {
        assert_eq!(
            json(Val::Decimal {
                v: 123_456_789,
                scale: 2
            }),
            "1234567.89"
        );
        assert_eq!(json(Val::Decimal { v: -5, scale: 2 }), "-0.05");
        assert_eq!(json(Val::Decimal { v: 7, scale: 0 }), "7");
        assert_eq!(
            json(Val::NumberText("123456789012345678901234567890.1".into())),
            "123456789012345678901234567890.1"
        );
    }

    #[test]
    fn strings_dates_and_timestamps() {
        assert_eq!(json(Val::Str("a\"b\n".into())), r#""a\"b\n""#);
        assert_eq!(
            json(Val::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())),
            r#""2026-01-02""#
        );
        let at = NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 600)
            .unwrap();
        assert_eq!(
            json(Val::Timestamp { at, utc: true }),
            r#""2026-01-02T03:04:05.000600Z""#
        );
        assert!(Val::Float(f64::NAN).write_json(&mut String::new()).is_err());
    }
}

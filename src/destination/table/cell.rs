//! A mapped [`Val`] turned into a cell of its column's type ([`cell`]), failing with the
//! reason when it does not fit, and a column of cells as the Arrow array both warehouses
//! load ([`to_arrow`]). Which type a column gets is decided in [`super::types`].

use super::types::ColumnType;
use crate::map::error::ValueError;
use crate::map::value::Val;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use std::sync::Arc;

/// Why a value does not fit its column (without the column's name or the row's key: the
/// caller adds them).
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("{kind} cannot be written to a {ty} column")]
    Refused { kind: &'static str, ty: ColumnType },
    #[error("no text form")]
    NoText,
    #[error("the text is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    #[error(transparent)]
    Encode(#[from] ValueError),
    #[error("{value} is out of the bigint range")]
    OutOfBigint { value: String },
    #[error("{value} does not fit a {ty} column")]
    TooWide { value: String, ty: ColumnType },
    #[error("{value} is not a whole number")]
    NotWhole { value: String },
    #[error("{value} is not a number")]
    NotNumber { value: String },
    #[error("the date is out of range")]
    DateOutOfRange,
}

/// One cell converted to its column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Double(f64),
    /// Scaled by the column's scale.
    Decimal(i128),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 UTC.
    Timestamp(i64),
}

impl Cell {
    /// A text form, for keys and messages.
    pub fn key_text(&self) -> String {
        match self {
            Cell::Null => "null".into(),
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Double(f) => f.to_string(),
            Cell::Decimal(v) => v.to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Date(d) => d.to_string(),
            Cell::Timestamp(t) => t.to_string(),
        }
    }
}

/// `v` as a cell of a `ty` column, or why it does not fit (without the column's name:
/// the caller adds it, with the row's key).
pub fn cell(ty: ColumnType, v: Val) -> Result<Cell, CellError> {
    if matches!(v, Val::Null) {
        return Ok(Cell::Null);
    }
    let refuse = |v: &Val| Err(CellError::Refused { kind: v.kind(), ty });
    Ok(match ty {
        ColumnType::Text => match v {
            Val::Str(s) => Cell::Text(s),
            Val::Bytes(_) => return refuse(&v),
            other => Cell::Text(other.as_text().ok_or(CellError::NoText)?),
        },
        ColumnType::Json => match v {
            Val::Str(s) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&s).map_err(CellError::NotJson)?;
                Cell::Text(s)
            }
            Val::Json(j) => Cell::Text(j.to_string()),
            Val::Bytes(_) => return refuse(&v),
            other => {
                let mut s = String::new();
                other.write_json(&mut s)?;
                Cell::Text(s)
            }
        },
        ColumnType::Bigint => match v {
            Val::Int(i) => Cell::Int(i),
            Val::UInt(u) => Cell::Int(i64::try_from(u).map_err(|_| CellError::OutOfBigint { value: u.to_string() })?),
            Val::Float(f) if f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) => {
                Cell::Int(f as i64)
            }
            Val::Decimal { .. } | Val::NumberText(_) | Val::Float(_) => {
                let text = v.as_text().unwrap_or_default();
                let Some(d) = parse_decimal(&text, 0).filter(|_| exact_integer(&text)) else {
                    return Err(CellError::NotWhole { value: text });
                };
                match i64::try_from(d) {
                    Ok(i) => Cell::Int(i),
                    Err(_) => return Err(CellError::OutOfBigint { value: text }),
                }
            }
            other => return refuse(&other),
        },
        ColumnType::Double => match v.as_f64() {
            Some(f)
                if matches!(
                    v,
                    Val::Int(_) | Val::UInt(_) | Val::Float(_) | Val::Decimal { .. } | Val::NumberText(_)
                ) =>
            {
                Cell::Double(f)
            }
            _ => return refuse(&v),
        },
        ColumnType::Decimal { precision, scale } => {
            let limit = 10i128.pow(u32::from(precision));
            // Exact integers and decimals scale without going through text.
            let direct = match &v {
                Val::Int(i) => 10i128
                    .checked_pow(u32::from(scale))
                    .and_then(|m| i128::from(*i).checked_mul(m)),
                Val::Decimal { v: d, scale: from } if *from <= scale => 10i128
                    .checked_pow(u32::from(scale - from))
                    .and_then(|m| d.checked_mul(m)),
                _ => None,
            };
            if let Some(d) = direct {
                if d.abs() >= limit {
                    return Err(CellError::TooWide {
                        value: v.as_text().unwrap_or_default(),
                        ty,
                    });
                }
                return Ok(Cell::Decimal(d));
            }
            let text = match &v {
                Val::Int(_) | Val::UInt(_) | Val::Decimal { .. } | Val::NumberText(_) | Val::Float(_) => {
                    v.as_text().ok_or(CellError::NoText)?
                }
                other => return refuse(other),
            };
            let Some(d) = parse_decimal(&text, scale) else {
                return Err(CellError::NotNumber { value: text });
            };
            if d.abs() >= limit {
                return Err(CellError::TooWide { value: text, ty });
            }
            Cell::Decimal(d)
        }
        ColumnType::Boolean => match v {
            Val::Bool(b) => Cell::Bool(b),
            other => return refuse(&other),
        },
        ColumnType::Date => match v {
            Val::Date(d) => Cell::Date(
                i32::try_from((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days())
                    .map_err(|_| CellError::DateOutOfRange)?,
            ),
            other => return refuse(&other),
        },
        ColumnType::Timestamp => match v {
            Val::Timestamp { at, .. } => Cell::Timestamp(at.and_utc().timestamp_micros()),
            other => return refuse(&other),
        },
    })
}

/// Whether `text` (a number's text) has no non-zero fraction digits.
fn exact_integer(text: &str) -> bool {
    let t = text.trim();
    let mantissa = t.split(['e', 'E']).next().unwrap_or(t);
    match mantissa.split_once('.') {
        Some((_, frac)) => frac.chars().all(|c| c == '0') && !t.contains(['e', 'E']),
        None => !t.contains(['e', 'E']),
    }
}

/// A decimal number's text (`-12.345`, `1e3`, `1.5E-2`) scaled to `scale` digits after the
/// point, rounding half away from zero as the warehouses' casts do.
pub fn parse_decimal(text: &str, scale: u8) -> Option<i128> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    // value = digits × 10^(exp − frac.len()); we want value × 10^scale.
    let shift = exp - frac.len() as i32 + i32::from(scale);
    let digits = digits.trim_start_matches('0');
    let mut v: i128 = 0;
    if shift >= 0 {
        for c in digits.chars() {
            v = v.checked_mul(10)?.checked_add(i128::from(c as u8 - b'0'))?;
        }
        v = v.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let cut = (-shift) as usize;
        let keep = digits.len().saturating_sub(cut);
        for c in digits[..keep].chars() {
            v = v.checked_mul(10)?.checked_add(i128::from(c as u8 - b'0'))?;
        }
        // The first dropped digit decides the rounding (half away from zero).
        let dropped = if cut > digits.len() {
            None
        } else {
            digits[keep..].chars().next()
        };
        if dropped.is_some_and(|c| c >= '5') {
            v = v.checked_add(1)?;
        }
    }
    Some(if neg { -v } else { v })
}

/// Builds the Arrow array of one column from its cells.
pub fn to_arrow(ty: ColumnType, cells: &[Cell]) -> ArrayRef {
    match ty {
        ColumnType::Text | ColumnType::Json => {
            let mut b = StringBuilder::with_capacity(cells.len(), cells.len() * 16);
            for c in cells {
                match c {
                    Cell::Text(s) => b.append_value(s),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Bigint => {
            let mut b = Int64Builder::with_capacity(cells.len());
            for c in cells {
                b.append_option(if let Cell::Int(i) = c { Some(*i) } else { None });
            }
            Arc::new(b.finish())
        }
        ColumnType::Double => {
            let mut b = Float64Builder::with_capacity(cells.len());
            for c in cells {
                b.append_option(if let Cell::Double(f) = c { Some(*f) } else { None });
            }
            Arc::new(b.finish())
        }
        ColumnType::Decimal { precision, scale } => {
            let mut b = Decimal128Builder::with_capacity(cells.len());
            for c in cells {
                b.append_option(if let Cell::Decimal(v) = c { Some(*v) } else { None });
            }
            Arc::new(
                b.finish()
                    .with_precision_and_scale(precision, scale as i8)
                    .expect("precision and scale within Arrow's limits"),
            )
        }
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(cells.len());
            for c in cells {
                b.append_option(if let Cell::Bool(v) = c { Some(*v) } else { None });
            }
            Arc::new(b.finish())
        }
        ColumnType::Date => {
            let mut b = Date32Builder::with_capacity(cells.len());
            for c in cells {
                b.append_option(if let Cell::Date(v) = c { Some(*v) } else { None });
            }
            Arc::new(b.finish())
        }
        ColumnType::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(cells.len()).with_timezone("UTC");
            for c in cells {
                b.append_option(if let Cell::Timestamp(v) = c { Some(*v) } else { None });
            }
            Arc::new(b.finish())
        }
    }
}

/// The text of row `i` of a column built by [`to_arrow`] (`None` for null): what Snowflake
/// casts back to the column's type, and what a first load hashes a key by. Decimals with
/// their scale, dates `YYYY-MM-DD`, timestamps `YYYY-MM-DD HH:MM:SS.ffffff+00:00`, doubles
/// in Rust's shortest round-trip form (`1e300`, `NaN`, `inf`).
pub fn text_at(array: &dyn Array, i: usize) -> Option<String> {
    use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType};
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(i).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float64 => format!("{:?}", array.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(i);
            let s = (*scale).max(0) as usize;
            let digits = format!("{:0>width$}", v.unsigned_abs(), width = s + 1);
            let (int, frac) = digits.split_at(digits.len() - s);
            let sign = if v < 0 { "-" } else { "" };
            if s == 0 {
                format!("{sign}{int}")
            } else {
                format!("{sign}{int}.{frac}")
            }
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(i);
            (chrono::NaiveDate::from_ymd_opt(1970, 1, 1)? + chrono::Duration::days(i64::from(days)))
                .format("%Y-%m-%d")
                .to_string()
        }
        DataType::Timestamp(_, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(i);
            chrono::DateTime::from_timestamp_micros(micros)?
                .format("%Y-%m-%d %H:%M:%S%.6f+00:00")
                .to_string()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn texts_of_each_type() {
        let dec = to_arrow(
            ColumnType::Decimal {
                precision: 12,
                scale: 2,
            },
            &[Cell::Decimal(-5), Cell::Decimal(123_456), Cell::Null],
        );
        assert_eq!(text_at(dec.as_ref(), 0).as_deref(), Some("-0.05"));
        assert_eq!(text_at(dec.as_ref(), 1).as_deref(), Some("1234.56"));
        assert_eq!(text_at(dec.as_ref(), 2), None);
        let ts = to_arrow(ColumnType::Timestamp, &[Cell::Timestamp(1_764_324_672_345_678)]);
        assert_eq!(
            text_at(ts.as_ref(), 0).as_deref(),
            Some("2025-11-28 10:11:12.345678+00:00")
        );
        let d = to_arrow(ColumnType::Date, &[Cell::Date(-1)]);
        assert_eq!(text_at(d.as_ref(), 0).as_deref(), Some("1969-12-31"));
        let f = to_arrow(ColumnType::Double, &[Cell::Double(1e300), Cell::Double(0.25)]);
        assert_eq!(text_at(f.as_ref(), 0).as_deref(), Some("1e300"));
        assert_eq!(text_at(f.as_ref(), 1).as_deref(), Some("0.25"));
    }
}

//! Column types of a warehouse table written by ebb: what a mapped column becomes
//! ([`ColumnType::from_arrow`], [`ColumnType::after`], [`ColumnType::of_constant`]), its
//! DDL in each warehouse, whether an existing column can hold it ([`DbType::holds`]), and
//! how a mapped [`Val`] is turned into a cell of that type ([`to_arrow`]), failing with the
//! column and the reason when it does not fit. The table of mappings is in docs/tables.md;
//! keep the two in step.

use crate::map::value::Val;
use crate::source::{DECIMAL_TEXT, JSON_TEXT};
use crate::transform::Transform;
use arrow::datatypes::{DataType, TimeUnit};
use std::collections::HashMap;
use std::fmt;

pub use super::cell::{cell, parse_decimal, to_arrow, Cell, CellError};

/// The largest precision of an exact decimal both warehouses store (DuckDB's limit).
pub const MAX_PRECISION: u8 = 38;
/// The precision and scale given to exact numbers of unbounded precision
/// ([`DECIMAL_TEXT`] columns).
pub const UNBOUNDED_DECIMAL: (u8, u8) = (38, 9);

/// Why a column's type is not one ebb can write, or an existing column cannot hold it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("columns of Arrow type {0} cannot be written to a table yet")]
    Unsupported(DataType),
    #[error("`default({value})` does not fit a {ty} column")]
    DefaultDoesNotFit { value: serde_json::Value, ty: ColumnType },
    #[error("a timestamp without time zone cannot hold UTC instants unambiguously (use timestamptz)")]
    NaiveTimestamp,
    #[error("a {bits}-bit integer cannot hold every bigint value")]
    NarrowInteger { bits: u16 },
    #[error("decimal({precision},{scale}) cannot hold every {ty} value")]
    NarrowDecimal { precision: u8, scale: u8, ty: ColumnType },
    #[error("{} cannot hold {ty} values", column.describe())]
    CannotHold { column: DbType, ty: ColumnType },
}

/// The type of a column ebb writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Text,
    Bigint,
    Double,
    /// Exact: `precision` digits, `scale` of them after the point.
    Decimal {
        precision: u8,
        scale: u8,
    },
    Boolean,
    Date,
    /// A UTC instant (`TIMESTAMPTZ`).
    Timestamp,
    /// DuckDB `JSON`, PostgreSQL `jsonb`.
    Json,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Text => f.write_str("text"),
            ColumnType::Bigint => f.write_str("bigint"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamptz"),
            ColumnType::Json => f.write_str("json"),
        }
    }
}

impl ColumnType {
    /// The type of a column read as `dt` (with its field `metadata`): what the Salesforce
    /// reader and the warehouse sources produce.
    pub fn from_arrow(dt: &DataType, metadata: &HashMap<String, String>) -> Result<ColumnType, TypeError> {
        Ok(match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                if metadata.contains_key(JSON_TEXT) {
                    ColumnType::Json
                } else if metadata.contains_key(DECIMAL_TEXT) {
                    let (precision, scale) = UNBOUNDED_DECIMAL;
                    ColumnType::Decimal { precision, scale }
                } else {
                    ColumnType::Text
                }
            }
            DataType::Null => ColumnType::Text,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => ColumnType::Bigint,
            DataType::UInt64 => ColumnType::Decimal {
                precision: 20,
                scale: 0,
            },
            DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Double,
            DataType::Decimal128(p, s) => {
                if *s < 0 {
                    ColumnType::Decimal {
                        precision: (i16::from(*p) - i16::from(*s)).min(i16::from(MAX_PRECISION)) as u8,
                        scale: 0,
                    }
                } else {
                    ColumnType::Decimal {
                        precision: (*p).min(MAX_PRECISION),
                        scale: *s as u8,
                    }
                }
            }
            DataType::Date32 | DataType::Date64 => ColumnType::Date,
            DataType::Timestamp(_, _) => ColumnType::Timestamp,
            DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::Map(_, _) => ColumnType::Json,
            DataType::Dictionary(_, values) => return ColumnType::from_arrow(values, metadata),
            other => return Err(TypeError::Unsupported(other.clone())),
        })
    }

    /// The type of a constant mapping's value.
    pub fn of_constant(v: &serde_json::Value) -> ColumnType {
        match v {
            serde_json::Value::Bool(_) => ColumnType::Boolean,
            serde_json::Value::Number(n) if n.is_i64() => ColumnType::Bigint,
            serde_json::Value::Number(_) => ColumnType::Double,
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => ColumnType::Json,
            serde_json::Value::String(_) | serde_json::Value::Null => ColumnType::Text,
        }
    }

    /// The type of the values `t` returns when given values of this type (what
    /// `map::apply` does: text transforms return text, `parse_json` JSON, `round` keeps
    /// integers and decimals exact, `scale` returns a double).
    pub fn after(self, t: &Transform) -> Result<ColumnType, TypeError> {
        Ok(match t {
            Transform::Lower
            | Transform::Upper
            | Transform::Initcap
            | Transform::Trim
            | Transform::Phone
            | Transform::Sha256
            | Transform::Hash(_)
            | Transform::Date(_)
            | Transform::Truncate(_) => ColumnType::Text,
            Transform::ParseJson => ColumnType::Json,
            Transform::Scale { .. } => ColumnType::Double,
            Transform::Round(n) => match self {
                ColumnType::Decimal { precision, scale } if u32::from(scale) > *n => {
                    let n = *n as u8;
                    // Rounding may carry into one more integer digit (9.996 → 10.00).
                    ColumnType::Decimal {
                        precision: (precision - scale + n + 1).min(MAX_PRECISION),
                        scale: n,
                    }
                }
                ColumnType::Bigint | ColumnType::Decimal { .. } | ColumnType::Double => self,
                _ => ColumnType::Double,
            },
            Transform::Default(v) => {
                let fits = match self {
                    ColumnType::Text | ColumnType::Json => true,
                    _ => cell(self, Val::from_json(v.clone())).is_ok(),
                };
                if !fits {
                    return Err(TypeError::DefaultDoesNotFit {
                        value: v.clone(),
                        ty: self,
                    });
                }
                self
            }
        })
    }

    /// The type as DuckDB DDL.
    pub fn duckdb(self) -> String {
        match self {
            ColumnType::Text => "VARCHAR".into(),
            ColumnType::Bigint => "BIGINT".into(),
            ColumnType::Double => "DOUBLE".into(),
            ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::Date => "DATE".into(),
            ColumnType::Timestamp => "TIMESTAMPTZ".into(),
            ColumnType::Json => "JSON".into(),
        }
    }

    /// The type as PostgreSQL DDL.
    pub fn postgres(self) -> String {
        match self {
            ColumnType::Text => "text".into(),
            ColumnType::Bigint => "bigint".into(),
            ColumnType::Double => "double precision".into(),
            ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamptz".into(),
            ColumnType::Json => "jsonb".into(),
        }
    }

    /// The type as Snowflake DDL (`NUMERIC` and `FLOAT` are Snowflake's `NUMBER` and
    /// double-precision `FLOAT`).
    pub fn snowflake(self) -> String {
        match self {
            ColumnType::Text => "VARCHAR".into(),
            ColumnType::Bigint => "NUMERIC(38,0)".into(),
            ColumnType::Double => "FLOAT".into(),
            ColumnType::Decimal { precision, scale } => format!("NUMERIC({precision},{scale})"),
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::Date => "DATE".into(),
            ColumnType::Timestamp => "TIMESTAMP_TZ".into(),
            ColumnType::Json => "VARIANT".into(),
        }
    }

    /// The Arrow type cells of this type are built as (JSON as its text).
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Text | ColumnType::Json => DataType::Utf8,
            ColumnType::Bigint => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale as i8),
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// The type of an existing column, as the warehouse reports it, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbType {
    Text,
    /// An integer of this many bits (16, 32, 64, 128).
    Integer(u16),
    Double,
    Real,
    /// `None`: numeric without a declared precision (PostgreSQL).
    Decimal(Option<(u8, u8)>),
    Boolean,
    Date,
    Timestamp,
    TimestampTz,
    Json,
    Other(String),
}

impl DbType {
    /// From a DuckDB type name (`duckdb_columns().data_type`), e.g. `DECIMAL(18,2)`.
    pub fn from_duckdb(name: &str) -> DbType {
        let n = name.trim().to_ascii_uppercase();
        match n.as_str() {
            "VARCHAR" | "TEXT" | "STRING" => DbType::Text,
            "SMALLINT" | "TINYINT" | "UTINYINT" => DbType::Integer(16),
            "INTEGER" | "USMALLINT" => DbType::Integer(32),
            "BIGINT" | "UINTEGER" => DbType::Integer(64),
            "HUGEINT" => DbType::Integer(128),
            "DOUBLE" => DbType::Double,
            "FLOAT" | "REAL" => DbType::Real,
            "BOOLEAN" => DbType::Boolean,
            "DATE" => DbType::Date,
            "TIMESTAMP" | "TIMESTAMP_NS" | "TIMESTAMP_MS" | "TIMESTAMP_S" => DbType::Timestamp,
            "TIMESTAMP WITH TIME ZONE" | "TIMESTAMPTZ" => DbType::TimestampTz,
            "JSON" => DbType::Json,
            _ => match decimal_args(&n, "DECIMAL(") {
                Some(ps) => DbType::Decimal(Some(ps)),
                None if n.starts_with("VARCHAR(") => DbType::Text,
                None => DbType::Other(name.to_string()),
            },
        }
    }

    /// From PostgreSQL's `format_type()`, e.g. `numeric(12,2)`, `character varying(80)`.
    pub fn from_postgres(name: &str) -> DbType {
        let n = name.trim().to_ascii_lowercase();
        match n.as_str() {
            "text" | "character varying" | "name" => DbType::Text,
            "smallint" => DbType::Integer(16),
            "integer" => DbType::Integer(32),
            "bigint" => DbType::Integer(64),
            "double precision" => DbType::Double,
            "real" => DbType::Real,
            "numeric" => DbType::Decimal(None),
            "boolean" => DbType::Boolean,
            "date" => DbType::Date,
            "timestamp without time zone" => DbType::Timestamp,
            "timestamp with time zone" => DbType::TimestampTz,
            "json" | "jsonb" => DbType::Json,
            _ if n.starts_with("character varying(") || n.starts_with("character(") => DbType::Text,
            _ if n.starts_with("timestamp(") && n.ends_with("with time zone") && !n.ends_with("without time zone") => {
                DbType::TimestampTz
            }
            _ if n.starts_with("timestamp(") => DbType::Timestamp,
            _ => match decimal_args(&n, "numeric(") {
                Some(ps) => DbType::Decimal(Some(ps)),
                None => DbType::Other(name.to_string()),
            },
        }
    }

    /// From Snowflake's `information_schema.columns`: `data_type` (`TEXT`, `NUMBER`,
    /// `FLOAT`, `TIMESTAMP_TZ`, …) with `numeric_precision` and `numeric_scale`.
    pub fn from_snowflake(name: &str, precision: Option<u8>, scale: Option<u8>) -> DbType {
        match name.trim().to_ascii_uppercase().as_str() {
            "TEXT" | "VARCHAR" | "STRING" | "CHAR" => DbType::Text,
            "NUMBER" | "DECIMAL" | "NUMERIC" | "FIXED" => {
                DbType::Decimal(Some((precision.unwrap_or(38), scale.unwrap_or(0))))
            }
            "FLOAT" | "DOUBLE" | "REAL" => DbType::Double,
            "BOOLEAN" => DbType::Boolean,
            "DATE" => DbType::Date,
            // LTZ keeps the instant (shown in the session's zone): it holds what ebb writes.
            "TIMESTAMP_TZ" | "TIMESTAMP_LTZ" => DbType::TimestampTz,
            "TIMESTAMP_NTZ" => DbType::Timestamp,
            "VARIANT" => DbType::Json,
            _ => DbType::Other(name.to_string()),
        }
    }

    /// Whether a column of this type holds every value of `ty` as ebb writes it; when
    /// not, why.
    pub fn holds(&self, ty: ColumnType) -> Result<(), TypeError> {
        let ok = match (ty, self) {
            (ColumnType::Text, DbType::Text) => true,
            (ColumnType::Json, DbType::Json | DbType::Text) => true,
            (ColumnType::Bigint, DbType::Integer(bits)) => *bits >= 64,
            (ColumnType::Bigint, DbType::Decimal(None)) => true,
            (ColumnType::Bigint, DbType::Decimal(Some((p, s)))) => p.saturating_sub(*s) >= 19,
            (ColumnType::Double, DbType::Double) => true,
            (ColumnType::Decimal { .. }, DbType::Decimal(None)) => true,
            (ColumnType::Decimal { precision, scale }, DbType::Decimal(Some((p, s)))) => {
                *s >= scale && p.saturating_sub(*s) >= precision - scale
            }
            (ColumnType::Decimal { precision, scale: 0 }, DbType::Integer(bits)) => {
                // 18 digits always fit 64 bits, 38 fit 128.
                (*bits >= 64 && precision <= 18) || (*bits >= 128 && precision <= 38)
            }
            (ColumnType::Boolean, DbType::Boolean) => true,
            (ColumnType::Date, DbType::Date) => true,
            (ColumnType::Timestamp, DbType::TimestampTz) => true,
            _ => false,
        };
        if ok {
            return Ok(());
        }
        Err(match (ty, self) {
            (ColumnType::Timestamp, DbType::Timestamp) => TypeError::NaiveTimestamp,
            (ColumnType::Bigint, DbType::Integer(bits)) => TypeError::NarrowInteger { bits: *bits },
            (ColumnType::Decimal { .. }, DbType::Decimal(Some((p, s)))) => TypeError::NarrowDecimal {
                precision: *p,
                scale: *s,
                ty,
            },
            _ => TypeError::CannotHold {
                column: self.clone(),
                ty,
            },
        })
    }

    fn describe(&self) -> String {
        match self {
            DbType::Text => "text".into(),
            DbType::Integer(b) => format!("a {b}-bit integer"),
            DbType::Double => "double".into(),
            DbType::Real => "real (single precision)".into(),
            DbType::Decimal(None) => "numeric".into(),
            DbType::Decimal(Some((p, s))) => format!("decimal({p},{s})"),
            DbType::Boolean => "boolean".into(),
            DbType::Date => "date".into(),
            DbType::Timestamp => "timestamp without time zone".into(),
            DbType::TimestampTz => "timestamptz".into(),
            DbType::Json => "json".into(),
            DbType::Other(n) => format!("`{n}`"),
        }
    }
}

/// `(p,s)` of `PREFIXp,s)` or `PREFIXp)`.
fn decimal_args(n: &str, prefix: &str) -> Option<(u8, u8)> {
    let inner = n.strip_prefix(prefix)?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn arrow_types_and_metadata() {
        let none = HashMap::new();
        let json: HashMap<String, String> = [(JSON_TEXT.to_string(), "1".to_string())].into();
        let dec: HashMap<String, String> = [(DECIMAL_TEXT.to_string(), "1".to_string())].into();
        assert_eq!(ColumnType::from_arrow(&DataType::Utf8, &none), Ok(ColumnType::Text));
        assert_eq!(ColumnType::from_arrow(&DataType::Utf8, &json), Ok(ColumnType::Json));
        assert_eq!(
            ColumnType::from_arrow(&DataType::Utf8, &dec),
            Ok(ColumnType::Decimal {
                precision: 38,
                scale: 9
            })
        );
        assert_eq!(ColumnType::from_arrow(&DataType::Int32, &none), Ok(ColumnType::Bigint));
        assert_eq!(
            ColumnType::from_arrow(&DataType::Decimal128(18, 2), &none),
            Ok(ColumnType::Decimal {
                precision: 18,
                scale: 2
            })
        );
        assert_eq!(
            ColumnType::from_arrow(&DataType::Timestamp(TimeUnit::Millisecond, None), &none),
            Ok(ColumnType::Timestamp)
        );
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        assert_eq!(ColumnType::from_arrow(&list, &none), Ok(ColumnType::Json));
        assert!(ColumnType::from_arrow(&DataType::Binary, &none).is_err());
    }

    #[test]
    fn transforms_change_the_type_as_apply_does() {
        let t = |s: &str| Transform::parse(s).unwrap();
        for name in [
            "lower",
            "upper",
            "initcap",
            "trim",
            "phone",
            "sha256",
            "date",
            "truncate(3)",
        ] {
            assert_eq!(ColumnType::Bigint.after(&t(name)), Ok(ColumnType::Text), "{name}");
        }
        assert_eq!(ColumnType::Text.after(&t("parse_json")), Ok(ColumnType::Json));
        assert_eq!(ColumnType::Bigint.after(&t("scale(0,1,0,100)")), Ok(ColumnType::Double));
        assert_eq!(ColumnType::Bigint.after(&t("round(2)")), Ok(ColumnType::Bigint));
        assert_eq!(
            ColumnType::Decimal {
                precision: 10,
                scale: 4
            }
            .after(&t("round(2)")),
            Ok(ColumnType::Decimal { precision: 9, scale: 2 })
        );
        assert_eq!(ColumnType::Bigint.after(&t("default(0)")), Ok(ColumnType::Bigint));
        assert!(ColumnType::Bigint.after(&t("default('n/a')")).is_err());
        // What apply returns has the type `after` says.
        let v = t("round(2)").apply(Val::Decimal { v: 99_996, scale: 4 }).unwrap();
        assert_eq!(
            cell(ColumnType::Decimal { precision: 9, scale: 2 }, v).unwrap(),
            Cell::Decimal(1000)
        );
    }

    #[test]
    fn values_fit_or_say_why() {
        let d = |p, s| ColumnType::Decimal { precision: p, scale: s };
        assert_eq!(cell(ColumnType::Bigint, Val::Int(7)).unwrap(), Cell::Int(7));
        assert_eq!(
            cell(ColumnType::Bigint, Val::Str("7".into())).unwrap_err().to_string(),
            "text cannot be written to a bigint column"
        );
        assert_eq!(
            cell(ColumnType::Bigint, Val::Decimal { v: 700, scale: 2 }).unwrap(),
            Cell::Int(7)
        );
        assert!(cell(ColumnType::Bigint, Val::Decimal { v: 701, scale: 2 }).is_err());
        assert_eq!(
            cell(d(5, 2), Val::Decimal { v: 12345, scale: 3 }).unwrap(),
            Cell::Decimal(1235)
        );
        assert_eq!(cell(d(5, 2), Val::Int(-12)).unwrap(), Cell::Decimal(-1200));
        assert_eq!(cell(d(5, 2), Val::Float(0.1)).unwrap(), Cell::Decimal(10));
        assert_eq!(
            cell(d(5, 2), Val::Int(1000)).unwrap_err().to_string(),
            "1000 does not fit a decimal(5,2) column"
        );
        assert_eq!(
            cell(d(38, 9), Val::NumberText("1e-3".into())).unwrap(),
            Cell::Decimal(1_000_000)
        );
        let e = cell(ColumnType::Json, Val::Str("{".into())).unwrap_err();
        assert!(matches!(e, CellError::NotJson(_)), "{e}");
        assert!(e.to_string().starts_with("the text is not JSON ("), "{e}");
        assert!(matches!(
            cell(ColumnType::Bigint, Val::NumberText("7.5".into())),
            Err(CellError::NotWhole { value }) if value == "7.5"
        ));
        assert!(matches!(
            cell(ColumnType::Bigint, Val::UInt(u64::MAX)),
            Err(CellError::OutOfBigint { .. })
        ));
        assert_eq!(cell(ColumnType::Json, Val::Int(3)).unwrap(), Cell::Text("3".into()));
        assert_eq!(cell(ColumnType::Text, Val::Int(3)).unwrap(), Cell::Text("3".into()));
        assert!(cell(ColumnType::Boolean, Val::Int(1)).is_err());
        assert_eq!(cell(ColumnType::Date, Val::Null).unwrap(), Cell::Null);
    }

    #[test]
    fn existing_column_types() {
        assert_eq!(DbType::from_duckdb("DECIMAL(18,2)"), DbType::Decimal(Some((18, 2))));
        assert_eq!(DbType::from_postgres("numeric(12,2)"), DbType::Decimal(Some((12, 2))));
        assert_eq!(
            DbType::from_postgres("timestamp(3) with time zone"),
            DbType::TimestampTz
        );
        assert_eq!(DbType::from_postgres("character varying(80)"), DbType::Text);
        assert_eq!(
            DbType::from_snowflake("NUMBER", Some(38), Some(0)),
            DbType::Decimal(Some((38, 0)))
        );
        assert!(DbType::from_snowflake("NUMBER", Some(38), Some(0))
            .holds(ColumnType::Bigint)
            .is_ok());
        assert!(DbType::from_snowflake("NUMBER", Some(10), Some(0))
            .holds(ColumnType::Bigint)
            .is_err());
        assert_eq!(
            DbType::from_snowflake("TIMESTAMP_NTZ", None, None).holds(ColumnType::Timestamp),
            Err(TypeError::NaiveTimestamp)
        );
        assert!(DbType::from_snowflake("TIMESTAMP_LTZ", None, None)
            .holds(ColumnType::Timestamp)
            .is_ok());
        assert!(DbType::from_snowflake("VARIANT", None, None)
            .holds(ColumnType::Json)
            .is_ok());
        assert!(DbType::Integer(32).holds(ColumnType::Bigint).is_err());
        assert!(DbType::Decimal(Some((20, 4)))
            .holds(ColumnType::Decimal {
                precision: 18,
                scale: 2
            })
            .is_ok());
        assert!(DbType::Decimal(Some((18, 4)))
            .holds(ColumnType::Decimal {
                precision: 18,
                scale: 2
            })
            .is_err());
        assert_eq!(
            DbType::Timestamp.holds(ColumnType::Timestamp),
            Err(TypeError::NaiveTimestamp)
        );
        assert!(TypeError::NaiveTimestamp.to_string().contains("without time zone"));
        assert_eq!(
            DbType::Integer(32).holds(ColumnType::Bigint).unwrap_err().to_string(),
            "a 32-bit integer cannot hold every bigint value"
        );
        assert!(DbType::Text.holds(ColumnType::Json).is_ok());
        assert!(DbType::Json.holds(ColumnType::Text).is_err());
    }
}

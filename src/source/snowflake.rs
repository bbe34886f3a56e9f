//! Snowflake source: a query through the SQL API (crate::snowflake), its result read as
//! Arrow batches.
//!
//! The first partition comes with the result, the others are fetched one by one, in
//! order, as the consumer asks for them, so at most one partition is held at a time. Every
//! cell arrives as a string (or null) and is converted by the column's `rowType`: FIXED to
//! integers or exact decimals, REAL to floats, DATE from days since the epoch, timestamps
//! from fractional epoch seconds (TIMESTAMP_TZ with its offset), BINARY from hex, and
//! VARIANT, OBJECT and ARRAY kept as JSON text.

use super::{channel, BatchStream, Producer, SourceError, DECIMAL_TEXT, JSON_TEXT};
use crate::config::project::SnowflakeConnection;
use crate::snowflake::{Client, RowType};
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tracing::Instrument;

pub use crate::snowflake::public_key_fingerprint;

/// A Snowflake account read by SQL queries.
pub struct SnowflakeSource {
    api: Arc<Client>,
}

impl SnowflakeSource {
    pub fn new(c: &SnowflakeConnection, project_dir: &Path) -> Result<Self, SourceError> {
        Ok(SnowflakeSource {
            api: Arc::new(Client::new(c, project_dir)?),
        })
    }

    /// The columns of `sql`, from its result metadata (the query runs with `LIMIT 0`).
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef, SourceError> {
        let wrapped = format!("SELECT * FROM ({}) LIMIT 0", sql.trim_end().trim_end_matches(';'));
        let rs = self.api.execute(&wrapped).await?;
        Ok(arrow_schema(&rs.result_set_meta_data.row_type)?.0)
    }

    /// Runs `sql` and streams its partitions in order.
    pub async fn query(self: &Arc<Self>, sql: &str, _batch_rows: usize) -> Result<BatchStream, SourceError> {
        let rs = self.api.execute(sql).await?;
        let (schema, kinds) = arrow_schema(&rs.result_set_meta_data.row_type)?;
        let partitions = rs.result_set_meta_data.partition_info.len().max(1);
        let handle = rs.statement_handle.clone();
        let (sender, mut stream) = channel(schema.clone());
        let api = Arc::clone(&self.api);
        let sql = sql.to_string();
        let task = tokio::spawn(
            async move {
                let first = to_batch(&schema, &kinds, rs.data.unwrap_or_default());
                let failed = first.is_err();
                if !sender.send(first).await || failed {
                    return;
                }
                super::fault::after_batch(&sql, 1);
                for n in 1..partitions {
                    if sender.is_cancelled() {
                        return;
                    }
                    let item = match api.partition(&handle, n).await {
                        Ok(rows) => to_batch(&schema, &kinds, rows),
                        Err(e) => Err(e),
                    };
                    let failed = item.is_err();
                    if !sender.send(item).await || failed {
                        return;
                    }
                    super::fault::after_batch(&sql, n as u64 + 1);
                }
                sender.end().await;
            }
            .in_current_span(),
        );
        stream.set_producer(Producer::Task(task));
        Ok(stream)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Decimal { precision: u8, scale: i8 },
    DecimalText,
    Real,
    Text,
    Json,
    Bool,
    Date,
    Timestamp { zoned: bool },
    TimestampTz,
    Time,
    Binary,
}

fn arrow_schema(rows: &[RowType]) -> Result<(SchemaRef, Vec<Kind>), SourceError> {
    let mut fields = Vec::new();
    let mut kinds = Vec::new();
    for r in rows {
        let (kind, dt, meta) = match r.kind.to_ascii_uppercase().as_str() {
            "FIXED" | "NUMBER" => {
                let (p, s) = (r.precision.unwrap_or(38), r.scale.unwrap_or(0));
                if s == 0 && p <= 18 {
                    (Kind::Int, DataType::Int64, None)
                } else if (1..=38).contains(&p) && (0..=37).contains(&s) {
                    let (p, s) = (p as u8, s as i8);
                    (Kind::Decimal { precision: p, scale: s }, DataType::Decimal128(p, s), None)
                } else {
                    (Kind::DecimalText, DataType::Utf8, Some(DECIMAL_TEXT))
                }
            }
            "DECFLOAT" => (Kind::DecimalText, DataType::Utf8, Some(DECIMAL_TEXT)),
            "REAL" | "FLOAT" | "DOUBLE" => (Kind::Real, DataType::Float64, None),
            "TEXT" | "VARCHAR" | "STRING" | "CHAR" => (Kind::Text, DataType::Utf8, None),
            "VARIANT" | "OBJECT" | "ARRAY" => (Kind::Json, DataType::Utf8, Some(JSON_TEXT)),
            "BOOLEAN" => (Kind::Bool, DataType::Boolean, None),
            "DATE" => (Kind::Date, DataType::Date32, None),
            "TIMESTAMP_NTZ" => (Kind::Timestamp { zoned: false }, DataType::Timestamp(TimeUnit::Nanosecond, None), None),
            "TIMESTAMP_LTZ" => (
                Kind::Timestamp { zoned: true },
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                None,
            ),
            "TIMESTAMP_TZ" => (Kind::TimestampTz, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), None),
            "TIME" => (Kind::Time, DataType::Utf8, None),
            "BINARY" => (Kind::Binary, DataType::Binary, None),
            other => {
                return Err(SourceError::Unsupported(format!(
                    "column `{}` has Snowflake type {other}, which ebb cannot read yet; cast it in the query, e.g. `{}::VARCHAR`",
                    r.name, r.name
                )))
            }
        };
        let mut field = Field::new(&r.name, dt, true);
        if let Some(k) = meta {
            field = field.with_metadata(HashMap::from([(k.to_string(), "true".to_string())]));
        }
        fields.push(field);
        kinds.push(kind);
    }
    Ok((Arc::new(Schema::new(fields)), kinds))
}

/// `"1616173619.123456789"` → nanoseconds since the epoch.
fn epoch_nanos(s: &str) -> Option<i64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let neg = secs.starts_with('-');
    let secs: i64 = secs.parse().ok()?;
    let mut f = frac.to_string();
    f.truncate(9);
    while f.len() < 9 {
        f.push('0');
    }
    let nanos: i64 = f.parse().ok()?;
    let total = secs.checked_mul(1_000_000_000)?;
    Some(if neg { total - nanos } else { total + nanos })
}

fn to_batch(schema: &SchemaRef, kinds: &[Kind], rows: Vec<Vec<Option<String>>>) -> Result<RecordBatch, SourceError> {
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let name = schema.field(i).name();
        let bad = |v: &str| {
            SourceError::Query(format!(
                "column `{name}`: Snowflake sent `{v}`, which is not a valid {kind:?}"
            ))
        };
        let cells = rows.iter().map(|r| r.get(i).and_then(|c| c.as_deref()));
        macro_rules! build {
            ($builder:expr, |$v:ident| $conv:expr) => {{
                let mut b = $builder;
                for c in cells {
                    match c {
                        None => b.append_null(),
                        Some($v) => b.append_value($conv),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let array = match *kind {
            Kind::Int => build!(Int64Builder::with_capacity(n), |v| v
                .parse::<i64>()
                .map_err(|_| bad(v))?),
            Kind::Decimal { precision, scale } => {
                let b = Decimal128Builder::with_capacity(n)
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| SourceError::Query(e.to_string()))?;
                build!(b, |v| crate::source::postgres::scaled_decimal(v, scale)
                    .ok_or_else(|| bad(v))?)
            }
            Kind::DecimalText | Kind::Text | Kind::Json | Kind::Time => {
                build!(StringBuilder::with_capacity(n, n * 16), |v| v)
            }
            Kind::Real => build!(Float64Builder::with_capacity(n), |v| v
                .parse::<f64>()
                .map_err(|_| bad(v))?),
            Kind::Bool => build!(BooleanBuilder::with_capacity(n), |v| match v {
                "true" | "TRUE" | "1" => true,
                "false" | "FALSE" | "0" => false,
                _ => return Err(bad(v)),
            }),
            Kind::Date => build!(Date32Builder::with_capacity(n), |v| v
                .parse::<i32>()
                .map_err(|_| bad(v))?),
            Kind::Timestamp { zoned } => {
                let b = TimestampNanosecondBuilder::with_capacity(n);
                let b = if zoned { b.with_timezone("UTC") } else { b };
                build!(b, |v| epoch_nanos(v).ok_or_else(|| bad(v))?)
            }
            // "<epoch seconds> <offset + 1440>": the epoch part is already UTC.
            Kind::TimestampTz => build!(TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"), |v| {
                epoch_nanos(v.split(' ').next().unwrap_or(v)).ok_or_else(|| bad(v))?
            }),
            Kind::Binary => build!(BinaryBuilder::with_capacity(n, n * 16), |v| hex(v)
                .ok_or_else(|| bad(v))?),
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| SourceError::Query(e.to_string()))
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_with_nanoseconds() {
        assert_eq!(epoch_nanos("1616173619.000000001"), Some(1_616_173_619_000_000_001));
        assert_eq!(epoch_nanos("82919"), Some(82_919_000_000_000));
        assert_eq!(epoch_nanos("-1.5"), Some(-1_500_000_000));
        assert_eq!(epoch_nanos("x"), None);
    }
}

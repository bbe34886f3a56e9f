//! PostgreSQL source: a server-side cursor (a portal in an open transaction) fetched
//! `fetch_size` rows at a time, so the result is never held whole on either side. TLS
//! follows the URL's `sslmode` (see `postgres_tls`).
//! Values are read in PostgreSQL's binary format and decoded straight into Arrow arrays.

use super::{channel, BatchStream, Producer, SourceError, DECIMAL_TEXT, JSON_TEXT};
use crate::config::env;
use crate::config::project::PostgresConnection;
use crate::diagnostics::{lowercase_first, root_cause};
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Row};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_FETCH: usize = 10_000;
/// Days and microseconds between 1970-01-01 (Arrow) and 2000-01-01 (PostgreSQL).
const EPOCH_DAYS: i32 = 10_957;
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL warehouse.
pub struct PostgresSource {
    config: tokio_postgres::Config,
    /// The TLS connector the URL's `sslmode` asks for.
    tls: super::postgres_tls::MakeRustls,
    fetch_size: usize,
    /// `host:port/db`, for messages (never the password).
    target: String,
}

impl PostgresSource {
    pub fn new(c: &PostgresConnection) -> Result<Self, SourceError> {
        let url =
            crate::redact::escape_userinfo(&env::expand_env(&c.url).map_err(|e| SourceError::Connect(e.to_string()))?);
        let (url, tls) = super::postgres_tls::from_url(&url).map_err(SourceError::Connect)?;
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| SourceError::Connect(format!("invalid PostgreSQL URL: {e}")))?;
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config.get_dbname().unwrap_or("postgres");
        Ok(PostgresSource {
            target: format!("{host}:{port}/{db}"),
            config,
            tls,
            fetch_size: c.fetch_size.map(|n| n as usize).unwrap_or(DEFAULT_FETCH),
        })
    }

    async fn connect(&self) -> Result<Client, SourceError> {
        let connecting = self.config.connect(self.tls.clone());
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(SourceError::Connect(format!(
                    "{} did not answer within {}s",
                    self.target,
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(connect_error(&self.target, &e)),
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            // Errors here surface on the client's next call.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The columns of `sql`, from preparing it (nothing runs).
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef, SourceError> {
        let client = self.connect().await?;
        let stmt = client.prepare(sql).await.map_err(|e| query_error(&e))?;
        let (schema, _) = arrow_schema(stmt.columns())?;
        Ok(schema)
    }

    /// Opens a cursor over `sql` and streams it.
    pub async fn query(&self, sql: &str, batch_rows: usize) -> Result<BatchStream, SourceError> {
        let mut client = self.connect().await?;
        let fetch = if batch_rows == 0 {
            self.fetch_size
        } else {
            batch_rows.min(self.fetch_size.max(1))
        };
        let sql = sql.to_string();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let tx = match client.transaction().await {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = ready_tx.send(Err(query_error(&e)));
                    return;
                }
            };
            let stmt = match tx.prepare(&sql).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(query_error(&e)));
                    return;
                }
            };
            let (schema, kinds) = match arrow_schema(stmt.columns()) {
                Ok(x) => x,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let portal = match tx.bind(&stmt, &[]).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = ready_tx.send(Err(query_error(&e)));
                    return;
                }
            };
            let (sender, stream) = channel(schema.clone());
            if ready_tx.send(Ok(stream)).is_err() {
                return;
            }
            let mut sent = 0u64;
            loop {
                if sender.is_cancelled() {
                    return;
                }
                let rows = match tx.query_portal(&portal, fetch as i32).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        sender.send(Err(query_error(&e))).await;
                        return;
                    }
                };
                if rows.is_empty() {
                    break;
                }
                let done = rows.len() < fetch;
                let batch = to_batch(&schema, &kinds, &rows);
                let failed = batch.is_err();
                if !sender.send(batch).await || failed {
                    return;
                }
                sent += 1;
                super::fault::after_batch(&sql, sent);
                if done {
                    break;
                }
            }
            // Read-only: nothing to commit; ending the transaction closes the cursor.
            let _ = tx.rollback().await;
            sender.end().await;
        });
        match ready_rx.await {
            Ok(Ok(mut stream)) => {
                stream.set_producer(Producer::Task(task));
                Ok(stream)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SourceError::Query("the query task ended unexpectedly".into())),
        }
    }
}

fn connect_error(target: &str, e: &tokio_postgres::Error) -> SourceError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 28000 invalid_authorization_specification, 28P01 invalid_password
        if code.starts_with("28") {
            return SourceError::Auth(format!("{target}: {}", db.message()));
        }
        return SourceError::Connect(format!("{target}: {}", db.message()));
    }
    SourceError::Connect(format!("{target}: {}", lowercase_first(&root_cause(e))))
}

fn query_error(e: &tokio_postgres::Error) -> SourceError {
    match e.as_db_error() {
        Some(db) => {
            let mut msg = db.message().to_string();
            if let Some(tokio_postgres::error::ErrorPosition::Original(p)) = db.position() {
                msg.push_str(&format!(" (at character {p} of the query)"));
            }
            if let Some(h) = db.hint() {
                msg.push_str(&format!("; hint: {h}"));
            }
            SourceError::Query(msg)
        }
        None => SourceError::Query(lowercase_first(&e.to_string())),
    }
}

/// How a column is decoded.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric { precision: u8, scale: i8 },
    NumericText,
    Text,
    Json,
    Jsonb,
    Uuid,
    Date,
    Timestamp,
    TimestampTz,
    Bytea,
}

fn arrow_schema(columns: &[tokio_postgres::Column]) -> Result<(SchemaRef, Vec<Kind>), SourceError> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut kinds = Vec::with_capacity(columns.len());
    for c in columns {
        let ty = c.type_();
        let (kind, dt, meta) = match *ty {
            Type::BOOL => (Kind::Bool, DataType::Boolean, None),
            Type::INT2 => (Kind::I16, DataType::Int16, None),
            Type::INT4 => (Kind::I32, DataType::Int32, None),
            Type::INT8 => (Kind::I64, DataType::Int64, None),
            Type::OID => (Kind::I32, DataType::Int32, None),
            Type::FLOAT4 => (Kind::F32, DataType::Float32, None),
            Type::FLOAT8 => (Kind::F64, DataType::Float64, None),
            Type::NUMERIC => {
                let m = c.type_modifier();
                let (precision, scale) = if m >= 4 {
                    (((m - 4) >> 16) & 0xffff, (m - 4) & 0xffff)
                } else {
                    (0, 0)
                };
                if (1..=38).contains(&precision) {
                    let (p, s) = (precision as u8, scale as i8);
                    (
                        Kind::Numeric { precision: p, scale: s },
                        DataType::Decimal128(p, s),
                        None,
                    )
                } else {
                    (Kind::NumericText, DataType::Utf8, Some(DECIMAL_TEXT))
                }
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                (Kind::Text, DataType::Utf8, None)
            }
            Type::JSON => (Kind::Json, DataType::Utf8, Some(JSON_TEXT)),
            Type::JSONB => (Kind::Jsonb, DataType::Utf8, Some(JSON_TEXT)),
            Type::UUID => (Kind::Uuid, DataType::Utf8, None),
            Type::DATE => (Kind::Date, DataType::Date32, None),
            Type::TIMESTAMP => (Kind::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, None), None),
            Type::TIMESTAMPTZ => (
                Kind::TimestampTz,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                None,
            ),
            Type::BYTEA => (Kind::Bytea, DataType::Binary, None),
            _ => {
                let hint = if matches!(ty.kind(), tokio_postgres::types::Kind::Array(_)) {
                    format!("`to_json({})`", c.name())
                } else {
                    format!("`{}::text`", c.name())
                };
                return Err(SourceError::Unsupported(format!(
                    "column `{}` has PostgreSQL type `{}`, which ebb cannot read yet; convert it in the query, e.g. {hint}",
                    c.name(),
                    ty.name()
                )));
            }
        };
        let mut field = Field::new(c.name(), dt, true);
        if let Some(key) = meta {
            field = field.with_metadata(HashMap::from([(key.to_string(), "true".to_string())]));
        }
        fields.push(field);
        kinds.push(kind);
    }
    Ok((Arc::new(Schema::new(fields)), kinds))
}

/// Any value, as the raw bytes of PostgreSQL's binary format.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn bad(column: &str, what: &str) -> SourceError {
    SourceError::Query(format!("column `{column}`: {what}"))
}

fn fixed<const N: usize>(b: &[u8], column: &str) -> Result<[u8; N], SourceError> {
    b.try_into().map_err(|_| bad(column, "malformed binary value"))
}

fn to_batch(schema: &SchemaRef, kinds: &[Kind], rows: &[Row]) -> Result<RecordBatch, SourceError> {
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let name = schema.field(i).name().as_str();
        let values = rows.iter().map(|r| {
            r.try_get::<_, Raw>(i)
                .map(|r| r.0)
                .map_err(|e| bad(name, &e.to_string()))
        });
        macro_rules! build {
            ($builder:expr, |$b:ident| $conv:expr) => {{
                let mut builder = $builder;
                for v in values {
                    match v? {
                        None => builder.append_null(),
                        Some($b) => builder.append_value($conv),
                    }
                }
                Arc::new(builder.finish()) as ArrayRef
            }};
        }
        let array = match *kind {
            Kind::Bool => build!(BooleanBuilder::with_capacity(n), |b| b.first().copied().unwrap_or(0)
                != 0),
            Kind::I16 => build!(Int16Builder::with_capacity(n), |b| i16::from_be_bytes(fixed(b, name)?)),
            Kind::I32 => build!(Int32Builder::with_capacity(n), |b| i32::from_be_bytes(fixed(b, name)?)),
            Kind::I64 => build!(Int64Builder::with_capacity(n), |b| i64::from_be_bytes(fixed(b, name)?)),
            Kind::F32 => build!(Float32Builder::with_capacity(n), |b| f32::from_be_bytes(fixed(
                b, name
            )?)),
            Kind::F64 => build!(Float64Builder::with_capacity(n), |b| f64::from_be_bytes(fixed(
                b, name
            )?)),
            Kind::Numeric { precision, scale } => {
                let builder = Decimal128Builder::with_capacity(n)
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| bad(name, &e.to_string()))?;
                build!(builder, |b| {
                    let text = numeric_text(b).map_err(|m| bad(name, &m.to_string()))?;
                    scaled_decimal(&text, scale)
                        .ok_or_else(|| bad(name, &format!("`{text}` does not fit NUMERIC({precision},{scale})")))?
                })
            }
            Kind::NumericText => build!(StringBuilder::with_capacity(n, n * 8), |b| numeric_text(b)
                .map_err(|m| bad(name, &m.to_string()))?),
            Kind::Text => build!(StringBuilder::with_capacity(n, n * 16), |b| std::str::from_utf8(b)
                .map_err(|_| bad(name, "text is not UTF-8"))?),
            Kind::Json => build!(StringBuilder::with_capacity(n, n * 32), |b| std::str::from_utf8(b)
                .map_err(|_| bad(name, "JSON is not UTF-8"))?),
            Kind::Jsonb => build!(StringBuilder::with_capacity(n, n * 32), |b| {
                // jsonb's binary format is a version byte (1) then the JSON text.
                std::str::from_utf8(b.get(1..).unwrap_or_default()).map_err(|_| bad(name, "JSON is not UTF-8"))?
            }),
            Kind::Uuid => build!(StringBuilder::with_capacity(n, n * 36), |b| uuid_text(&fixed::<16>(
                b, name
            )?)),
            Kind::Date => build!(Date32Builder::with_capacity(n), |b| {
                let d = i32::from_be_bytes(fixed(b, name)?);
                if d == i32::MAX || d == i32::MIN {
                    return Err(bad(
                        name,
                        "`infinity` dates cannot be synced; filter or cast them in the query",
                    ));
                }
                d + EPOCH_DAYS
            }),
            Kind::Timestamp | Kind::TimestampTz => {
                let builder = TimestampMicrosecondBuilder::with_capacity(n);
                let builder = if matches!(kind, Kind::TimestampTz) {
                    builder.with_timezone("UTC")
                } else {
                    builder
                };
                build!(builder, |b| {
                    let t = i64::from_be_bytes(fixed(b, name)?);
                    if t == i64::MAX || t == i64::MIN {
                        return Err(bad(
                            name,
                            "`infinity` timestamps cannot be synced; filter or cast them in the query",
                        ));
                    }
                    t + EPOCH_MICROS
                })
            }
            Kind::Bytea => build!(BinaryBuilder::with_capacity(n, n * 16), |b| b),
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| SourceError::Query(e.to_string()))
}

/// Why a binary NUMERIC has no decimal text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum NumericError {
    #[error("malformed NUMERIC")]
    Malformed,
    #[error("NaN cannot be synced as a number")]
    NaN,
    #[error("infinite NUMERIC cannot be synced")]
    Infinite,
}

/// PostgreSQL's binary NUMERIC as decimal text: `ndigits, weight, sign, dscale` then
/// base-10000 digits.
fn numeric_text(b: &[u8]) -> Result<String, NumericError> {
    let word = |i: usize| -> Result<u16, NumericError> {
        b.get(i..i + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or(NumericError::Malformed)
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(NumericError::NaN),
        _ => return Err(NumericError::Infinite),
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| word(8 + 2 * i)).collect::<Result<_, _>>()?;
    // Integer part: groups with exponent weight..0.
    let mut int = String::new();
    for e in (0..=weight.max(-1)).rev() {
        let idx = weight - e;
        let g = if idx >= 0 {
            digits.get(idx as usize).copied().unwrap_or(0)
        } else {
            0
        };
        if int.is_empty() {
            if g != 0 {
                int = g.to_string();
            }
        } else {
            int.push_str(&format!("{g:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut e = -1;
    while frac.len() < dscale {
        let idx = weight - e;
        let g = if idx >= 0 {
            digits.get(idx as usize).copied().unwrap_or(0)
        } else {
            0
        };
        frac.push_str(&format!("{g:04}"));
        e -= 1;
    }
    frac.truncate(dscale);
    let mut s = String::new();
    if sign == 0x4000 && (int != "0" || frac.bytes().any(|c| c != b'0')) {
        s.push('-');
    }
    s.push_str(&int);
    if !frac.is_empty() {
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

/// `"-12.345"` at `scale` 4 → -123450; None when digits beyond the scale are not zero or it
/// overflows.
pub(crate) fn scaled_decimal(text: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::try_from(scale).ok()?;
    if frac.len() > scale && frac[scale..].bytes().any(|c| c != b'0') {
        return None;
    }
    let mut v: i128 = 0;
    for c in int
        .bytes()
        .chain(frac.bytes().chain(std::iter::repeat(b'0')).take(scale))
    {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i128::from(c - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// 16 bytes in the 8-4-4-4-12 hexadecimal form of a UUID.
pub(crate) fn uuid_text(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_binary_decodes_exactly() {
        // 12345.6789 = [1, 2345, 6789] weight 1
        assert_eq!(
            numeric_text(&numeric(3, 1, 0, 4, &[1, 2345, 6789])).unwrap(),
            "12345.6789"
        );
        // -0.05 = [500] weight -1, dscale 2
        assert_eq!(numeric_text(&numeric(1, -1, 0x4000, 2, &[500])).unwrap(), "-0.05");
        // 100000000 = [1] weight 2
        assert_eq!(numeric_text(&numeric(1, 2, 0, 0, &[1])).unwrap(), "100000000");
        assert_eq!(numeric_text(&numeric(0, 0, 0, 2, &[])).unwrap(), "0.00");
        assert!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).is_err());
    }

    #[test]
    fn decimals_scale_without_rounding() {
        assert_eq!(scaled_decimal("-12.345", 4), Some(-123_450));
        assert_eq!(scaled_decimal("7", 2), Some(700));
        assert_eq!(scaled_decimal("1.005", 2), None);
        assert_eq!(scaled_decimal("1.000", 2), Some(100));
    }
}

//! Snowflake source, through the SQL API v2 with key-pair (JWT) authentication.
//!
//! A statement is submitted synchronously; when Snowflake answers 202 (still running),
//! its status URL is polled with backoff until the result is ready. The first partition
//! comes with the result, the others are fetched one by one, in order, as the consumer
//! asks for them, so at most one partition is held at a time. Every cell arrives as a
//! string (or null) and is converted by the column's `rowType`: FIXED to integers or exact
//! decimals, REAL to floats, DATE from days since the epoch, timestamps from fractional
//! epoch seconds (TIMESTAMP_TZ with its offset), BINARY from hex, and VARIANT, OBJECT and
//! ARRAY kept as JSON text. A 422 surfaces Snowflake's own message.

use super::{channel, BatchStream, Producer, SourceError, DECIMAL_TEXT, JSON_TEXT};
use crate::config::env;
use crate::config::project::SnowflakeConnection;
use crate::diagnostics::root_cause;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How long the whole statement may run before ebb gives up.
const STATEMENT_TIMEOUT_SECS: u64 = 3600;
const MAX_TRANSIENT_RETRIES: u32 = 6;

/// A Snowflake account reached through the SQL API.
pub struct SnowflakeSource {
    base: String,
    /// `ACCOUNT.USER` for the JWT subject.
    subject: String,
    /// `ACCOUNT.USER.SHA256:<fingerprint>` for the JWT issuer.
    issuer: String,
    key: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    context: serde_json::Map<String, serde_json::Value>,
    client: reqwest::Client,
}

/// The account identifier as used in the JWT: upper case, up to the first `.`.
fn jwt_account(account: &str) -> String {
    account.split('.').next().unwrap_or(account).to_ascii_uppercase()
}

/// `SHA256:` + base64 of the SHA-256 of the public key's DER SubjectPublicKeyInfo: what
/// `DESCRIBE USER` shows as `RSA_PUBLIC_KEY_FP`.
pub fn public_key_fingerprint(key: &rsa::PrivateKey) -> Result<String, rsa::pkcs8::spki::Error> {
    use sha2::Digest;
    let public = rsa::PublicKey::from(key);
    let der = public.to_public_key_der()?;
    let digest = sha2::Sha256::digest(der.as_bytes());
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// The connection's `url`, if ebb may send it the key-pair JWT: https, or plain http only to
/// a loopback host (a test server on this machine), and no user info. Messages show the URL
/// as `written` when it takes variables (their values may be secrets).
fn trusted_url(written: &str, url: &str) -> Result<String, SourceError> {
    let shown = if env::has_reference(written) {
        written.to_string()
    } else {
        crate::redact::url(url)
    };
    let u = url::Url::parse(url).map_err(|e| SourceError::Connect(format!("`url` `{shown}` is not a URL ({e})")))?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(SourceError::Connect(format!(
                "`url` `{shown}` must be https: the key-pair token would travel in clear (plain http only \
                 reaches a server on this machine)"
            )))
        }
        other => {
            return Err(SourceError::Connect(format!(
                "`url` `{shown}` is a `{other}` URL, not https"
            )))
        }
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(SourceError::Connect(format!("`url` `{shown}` carries user info")));
    }
    Ok(url.to_string())
}

impl SnowflakeSource {
    pub fn new(c: &SnowflakeConnection, project_dir: &Path) -> Result<Self, SourceError> {
        let pem = match (&c.private_key, &c.private_key_path) {
            (Some(k), _) => env::expand_env(k).map_err(|e| SourceError::Auth(e.to_string()))?,
            (None, Some(p)) => {
                let path = project_dir.join(env::expand_env(p).map_err(|e| SourceError::Auth(e.to_string()))?);
                std::fs::read_to_string(&path)
                    .map_err(|e| SourceError::Auth(format!("cannot read the private key `{}`: {e}", path.display())))?
            }
            (None, None) => return Err(SourceError::Auth("no `private_key` or `private_key_path`".into())),
        };
        if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(SourceError::Auth(
                "the private key is encrypted; give ebb an unencrypted PKCS#8 key (`openssl pkcs8 -topk8 -nocrypt`)"
                    .into(),
            ));
        }
        let key = rsa::PrivateKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| SourceError::Auth(format!("the private key is not a PKCS#8 RSA key in PEM form ({e})")))?;
        let fingerprint = public_key_fingerprint(&key).map_err(|e| SourceError::Auth(e.to_string()))?;
        let account = env::expand_env(&c.account).map_err(|e| SourceError::Auth(e.to_string()))?;
        let user = env::expand_env(&c.user)
            .map_err(|e| SourceError::Auth(e.to_string()))?
            .to_ascii_uppercase();
        let subject = format!("{}.{user}", jwt_account(&account));
        let base = match &c.url {
            Some(u) => trusted_url(u, &env::expand_env(u).map_err(|e| SourceError::Connect(e.to_string()))?)?,
            None => format!("https://{}.snowflakecomputing.com", account.to_ascii_lowercase()),
        };
        let mut context = serde_json::Map::new();
        for (k, v) in [
            ("database", &c.database),
            ("schema", &c.schema),
            ("warehouse", &c.warehouse),
            ("role", &c.role),
        ] {
            if let Some(v) = v {
                context.insert(
                    k.into(),
                    env::expand_env(v)
                        .map_err(|e| SourceError::Connect(e.to_string()))?
                        .into(),
                );
            }
        }
        Ok(SnowflakeSource {
            base: base.trim_end_matches('/').to_string(),
            issuer: format!("{subject}.{fingerprint}"),
            subject,
            key: rsa::pkcs1v15::SigningKey::new(key),
            context,
            client: crate::http::client().map_err(|e| SourceError::Connect(e.to_string()))?,
        })
    }

    /// A fresh RS256 JWT (valid for 59 minutes).
    fn jwt(&self) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = chrono::Utc::now().timestamp();
        let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = b64.encode(
            serde_json::json!({"iss": self.issuer, "sub": self.subject, "iat": now, "exp": now + 59 * 60}).to_string(),
        );
        let signing_input = format!("{header}.{claims}");
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64.encode(signature.to_bytes()))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, String), SourceError> {
        let mut attempt = 0;
        loop {
            let r = req
                .try_clone()
                .ok_or_else(|| SourceError::Query("request cannot be retried".into()))?
                .bearer_auth(self.jwt())
                .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT")
                .header("Accept", "application/json")
                .header("User-Agent", concat!("ebb/", env!("CARGO_PKG_VERSION")))
                .send()
                .await;
            let transient = match r {
                Ok(resp) => {
                    let status = resp.status();
                    if matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504) && attempt < MAX_TRANSIENT_RETRIES {
                        true
                    } else if status.is_redirection() {
                        // Never followed: the JWT would go wherever the Location says.
                        return Err(SourceError::Connect(format!(
                            "{}: {}",
                            self.base,
                            crate::http::redirect_message(status, resp.headers())
                        )));
                    } else {
                        // Bounded: a result or partition past the cap is refused, not held.
                        match crate::http::read_text(resp, crate::http::DATA_ANSWER_CAP).await {
                            Ok(body) => return Ok((status, body)),
                            Err(e) if e.is_transient() && attempt < MAX_TRANSIENT_RETRIES => true,
                            Err(e) => return Err(SourceError::Connect(format!("{}: {e}", self.base))),
                        }
                    }
                }
                Err(e) if e.is_connect() && attempt == 0 => {
                    return Err(SourceError::Connect(format!("{}: {}", self.base, root_cause(&e))))
                }
                Err(e) if attempt < MAX_TRANSIENT_RETRIES && (e.is_timeout() || e.is_connect()) => true,
                Err(e) => return Err(SourceError::Connect(format!("{}: {}", self.base, root_cause(&e)))),
            };
            if transient {
                attempt += 1;
                tracing::warn!(
                    event = "request_retried",
                    attempt,
                    delay_ms = backoff(attempt).as_millis() as u64,
                    "a Snowflake SQL API request failed transiently and is sent again"
                );
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }

    /// Submits `sql` and waits for its result (polling while Snowflake answers 202).
    async fn execute(&self, sql: &str) -> Result<ResultSet, SourceError> {
        let request_id = uuid_v4();
        let mut body = serde_json::Map::new();
        body.insert("statement".into(), sql.into());
        body.insert("timeout".into(), STATEMENT_TIMEOUT_SECS.into());
        body.extend(self.context.clone());
        body.insert(
            "parameters".into(),
            serde_json::json!({"query_tag": "ebb", "timezone": "UTC"}),
        );
        let url = format!("{}/api/v2/statements?requestId={request_id}", self.base);
        let (mut status, mut text) = self.send(self.client.post(&url).json(&body)).await?;
        let mut poll = 0;
        let started = std::time::Instant::now();
        loop {
            match status.as_u16() {
                200 => {
                    return serde_json::from_str(&text)
                        .map_err(|e| SourceError::Query(format!("Snowflake sent a result ebb cannot read: {e}")))
                }
                202 => {
                    let status_url: QueryStatus = serde_json::from_str(&text)
                        .map_err(|e| SourceError::Query(format!("Snowflake sent a status ebb cannot read: {e}")))?;
                    if started.elapsed() > Duration::from_secs(STATEMENT_TIMEOUT_SECS) {
                        return Err(SourceError::Query(
                            "the statement is still running after an hour".into(),
                        ));
                    }
                    poll += 1;
                    tokio::time::sleep(poll_delay(poll)).await;
                    // The JWT goes with the poll: only to the account's own origin.
                    let url = crate::http::join_same_origin(&self.base, &status_url.statement_status_url).ok_or_else(
                        || {
                            SourceError::Query(format!(
                                "Snowflake sent the status URL `{}`, which is not a path on {}",
                                crate::redact::url(&status_url.statement_status_url),
                                self.base
                            ))
                        },
                    )?;
                    (status, text) = self.send(self.client.get(url)).await?;
                }
                401 | 403 => return Err(SourceError::Auth(api_message(&text, status))),
                422 | 408 | 400 => return Err(SourceError::Query(api_message(&text, status))),
                _ => {
                    return Err(SourceError::Query(format!(
                        "Snowflake answered {status}: {}",
                        api_message(&text, status)
                    )))
                }
            }
        }
    }

    /// The columns of `sql`, from its result metadata (the query runs with `LIMIT 0`).
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef, SourceError> {
        let wrapped = format!("SELECT * FROM ({}) LIMIT 0", sql.trim_end().trim_end_matches(';'));
        let rs = self.execute(&wrapped).await?;
        Ok(arrow_schema(&rs.result_set_meta_data.row_type)?.0)
    }

    /// Runs `sql` and streams its partitions in order.
    pub async fn query(self: &Arc<Self>, sql: &str, _batch_rows: usize) -> Result<BatchStream, SourceError> {
        let rs = self.execute(sql).await?;
        let (schema, kinds) = arrow_schema(&rs.result_set_meta_data.row_type)?;
        let partitions = rs.result_set_meta_data.partition_info.len().max(1);
        let handle = rs.statement_handle.clone();
        let (sender, mut stream) = channel(schema.clone());
        let this = Arc::clone(self);
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
                    let url = format!("{}/api/v2/statements/{handle}?partition={n}", this.base);
                    let item = match this.send(this.client.get(&url)).await {
                        Ok((s, text)) if s.as_u16() == 200 => match serde_json::from_str::<Partition>(&text) {
                            Ok(p) => to_batch(&schema, &kinds, p.data),
                            Err(e) => Err(SourceError::Query(format!("partition {n} cannot be read: {e}"))),
                        },
                        Ok((s, text)) => Err(SourceError::Query(format!("partition {n}: {}", api_message(&text, s)))),
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

fn backoff(attempt: u32) -> Duration {
    let base = 200u64 * 2u64.pow(attempt.min(6));
    Duration::from_millis(base / 2 + rand::random_range(0..=base / 2))
}

fn poll_delay(poll: u32) -> Duration {
    Duration::from_millis((50u64 * 2u64.pow(poll.min(6))).min(2_000))
}

/// A random (version 4) UUID for `requestId`.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    super::postgres::uuid_text(&b)
}

/// Snowflake's message from an error body (QueryFailureStatus, or the REST error shape).
fn api_message(body: &str, status: reqwest::StatusCode) -> String {
    #[derive(Deserialize)]
    struct Failure {
        message: Option<String>,
        code: Option<String>,
        #[serde(rename = "sqlState")]
        sql_state: Option<String>,
    }
    match serde_json::from_str::<Failure>(body) {
        Ok(Failure {
            message: Some(m),
            code,
            sql_state,
        }) => {
            // "SQL compilation error:\nObject …": one line, as every ebb message.
            let mut s = m.split_whitespace().collect::<Vec<_>>().join(" ");
            if let Some(c) = code {
                s.push_str(&format!(" (code {c}"));
                if let Some(st) = sql_state {
                    s.push_str(&format!(", SQL state {st}"));
                }
                s.push(')');
            }
            s
        }
        _ => format!("HTTP {status}"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultSet {
    statement_handle: String,
    result_set_meta_data: MetaData,
    data: Option<Vec<Vec<Option<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaData {
    row_type: Vec<RowType>,
    #[serde(default)]
    partition_info: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RowType {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    precision: Option<u32>,
    #[serde(default)]
    scale: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryStatus {
    statement_status_url: String,
}

#[derive(Debug, Deserialize)]
struct Partition {
    data: Vec<Vec<Option<String>>>,
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

    #[test]
    fn jwt_account_is_upper_case_up_to_the_first_dot() {
        assert_eq!(jwt_account("xy12345.eu-central-1"), "XY12345");
        assert_eq!(jwt_account("myorg-myaccount"), "MYORG-MYACCOUNT");
    }
}

//! The Snowflake SQL API v2 with key-pair (JWT) authentication: one [`Client`] per
//! connection, shared by the source (queries, src/source/snowflake.rs) and the table
//! writer (src/destination/table/snowflake.rs).
//!
//! A statement is submitted synchronously; when Snowflake answers 202 (still running),
//! its status URL is polled with backoff until the result is ready. A multi-statement
//! request (`MULTI_STATEMENT_COUNT`) answers with one handle per statement, whose results
//! are fetched by [`Client::result`]. 429, 5xx and timeouts are retried with the same
//! `requestId` (Snowflake runs a resubmitted request once). A 422 surfaces Snowflake's
//! own message; redirects are never followed (the JWT would go with them).

use crate::config::env;
use crate::config::project::SnowflakeConnection;
use crate::diagnostics::root_cause;
use crate::source::SourceError;
use base64::Engine;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// How long the whole statement may run before ebb gives up.
const STATEMENT_TIMEOUT_SECS: u64 = 3600;
const MAX_TRANSIENT_RETRIES: u32 = 6;

/// A Snowflake account reached through the SQL API.
pub struct Client {
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

impl Client {
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
        Ok(Client {
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

    /// Submits `sql` (one statement) and waits for its result.
    pub async fn execute(&self, sql: &str) -> Result<ResultSet, SourceError> {
        self.submit(sql, 1, &[]).await
    }

    /// Submits `sql`, `statements` statements separated by `;` (more than one: a
    /// multi-statement request, whose result names each statement's handle), with `binds`
    /// as the text values of its `?` placeholders, and waits for the result (polling while
    /// Snowflake answers 202).
    pub async fn submit(&self, sql: &str, statements: usize, binds: &[&str]) -> Result<ResultSet, SourceError> {
        let request_id = uuid_v4();
        let mut body = serde_json::Map::new();
        body.insert("statement".into(), sql.into());
        body.insert("timeout".into(), STATEMENT_TIMEOUT_SECS.into());
        body.extend(self.context.clone());
        let mut parameters = serde_json::json!({"query_tag": "ebb", "timezone": "UTC"});
        if statements != 1 {
            parameters["multi_statement_count"] = statements.to_string().into();
        }
        body.insert("parameters".into(), parameters);
        if !binds.is_empty() {
            let bindings: serde_json::Map<String, serde_json::Value> = binds
                .iter()
                .enumerate()
                .map(|(i, v)| ((i + 1).to_string(), serde_json::json!({"type": "TEXT", "value": v})))
                .collect();
            body.insert("bindings".into(), bindings.into());
        }
        let url = format!("{}/api/v2/statements?requestId={request_id}", self.base);
        let (status, text) = self.send(self.client.post(&url).json(&body)).await?;
        self.finish(status, text).await
    }

    /// The result of the statement `handle` (one statement of a multi-statement request).
    pub async fn result(&self, handle: &str) -> Result<ResultSet, SourceError> {
        let url = format!("{}/api/v2/statements/{}", self.base, encode_handle(handle));
        let (status, text) = self.send(self.client.get(&url)).await?;
        self.finish(status, text).await
    }

    /// The rows of partition `n` (from 1) of the statement `handle`.
    pub async fn partition(&self, handle: &str, n: usize) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let url = format!(
            "{}/api/v2/statements/{}?partition={n}",
            self.base,
            encode_handle(handle)
        );
        match self.send(self.client.get(&url)).await? {
            (s, text) if s.as_u16() == 200 => serde_json::from_str::<Partition>(&text)
                .map(|p| p.data)
                .map_err(|e| SourceError::Query(format!("partition {n} cannot be read: {e}"))),
            (s, text) => Err(SourceError::Query(format!("partition {n}: {}", api_message(&text, s)))),
        }
    }

    /// Reads an answer, polling its status URL while Snowflake answers 202.
    async fn finish(&self, mut status: reqwest::StatusCode, mut text: String) -> Result<ResultSet, SourceError> {
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
}

/// A statement handle as a URL path segment: Snowflake's are UUIDs; anything else is
/// percent-encoded so that it stays one segment of the account's own URL.
fn encode_handle(handle: &str) -> String {
    url::form_urlencoded::byte_serialize(handle.as_bytes()).collect()
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
    crate::source::postgres::uuid_text(&b)
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

/// A statement's answer: its handle, the columns and the first partition's rows, or for
/// a multi-statement request, the handles of its statements.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultSet {
    pub statement_handle: String,
    pub result_set_meta_data: MetaData,
    pub data: Option<Vec<Vec<Option<String>>>>,
    /// A multi-statement request: one handle per statement, in order.
    #[serde(default)]
    pub statement_handles: Option<Vec<String>>,
    /// DML counts (`numRowsInserted`, `numRowsUpdated`, `numRowsDeleted`).
    #[serde(default)]
    pub stats: Option<Stats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    #[serde(default)]
    pub num_rows_inserted: Option<u64>,
    #[serde(default)]
    pub num_rows_updated: Option<u64>,
    #[serde(default)]
    pub num_rows_deleted: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaData {
    pub row_type: Vec<RowType>,
    #[serde(default)]
    pub partition_info: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct RowType {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub precision: Option<u32>,
    #[serde(default)]
    pub scale: Option<i32>,
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

impl ResultSet {
    /// The first row's cell of the column named `name` (case ignored), as a count: how
    /// Snowflake reports a DML statement (`number of rows inserted`, …).
    pub fn count(&self, name: &str) -> Option<u64> {
        let at = self
            .result_set_meta_data
            .row_type
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))?;
        self.data.as_ref()?.first()?.get(at)?.as_deref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_account_is_upper_case_up_to_the_first_dot() {
        assert_eq!(jwt_account("xy12345.eu-central-1"), "XY12345");
        assert_eq!(jwt_account("myorg-myaccount"), "MYORG-MYACCOUNT");
    }
}

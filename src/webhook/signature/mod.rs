//! Signature checks of inbound webhooks, on the raw bytes of the body, before anything parses
//! it. Three schemes (docs/webhooks.md has the wire forms and their sources):
//!
//! - `standard` (Standard Webhooks): `webhook-id`, `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature`, a space-separated list of `v1,<base64>` entries, each an
//!   HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret (`whsec_` + base64 of the key
//!   bytes). Any entry under any configured secret verifies (rotation).
//! - `hubspot_v3`: `X-HubSpot-Signature-v3`, base64 of HMAC-SHA256 of
//!   `{method}{uri}{body}{timestamp}` under the app's client secret, where `uri` is the URL
//!   HubSpot called (`public_url` + path and query, with the characters HubSpot decodes
//!   decoded) and the timestamp (`X-HubSpot-Request-Timestamp`) is in milliseconds.
//! - `hmac_sha256`: one header of the sender's choice holding `prefix` + hex (or base64) of
//!   HMAC-SHA256 of the body. No timestamp: a replay is caught by the inbox's event ids.
//!
//! Timestamps more than the tolerance (default 5 minutes) old or ahead are refused. Every
//! comparison of a signature is constant-time (`hmac`'s `verify_slice`).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// The default tolerance of a signed timestamp, both ways.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Standard Webhooks headers.
pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// HubSpot v3 headers.
pub const HUBSPOT_SIGNATURE: &str = "x-hubspot-signature-v3";
pub const HUBSPOT_TIMESTAMP: &str = "x-hubspot-request-timestamp";

/// How a signature is encoded in an `hmac_sha256` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// A signing scheme and what it needs besides the secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Standard,
    HubspotV3 {
        /// The scheme and host the sender calls, e.g. `https://hooks.example.com` (no path):
        /// HubSpot signs the full URL. `None`: `http://` and the request's `Host`.
        public_url: Option<String>,
    },
    HmacSha256 {
        /// The header holding the signature (any case).
        header: String,
        encoding: Encoding,
        /// Text before the signature in the header, e.g. `sha256=`.
        prefix: String,
    },
}

impl Scheme {
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::HubspotV3 { .. } => "hubspot_v3",
            Scheme::HmacSha256 { .. } => "hmac_sha256",
        }
    }
}

/// Checks requests of one webhook connection.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    /// The current secret's key bytes first, then the previous one's (rotation).
    keys: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// The parts of a request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path and query as received (`/webhooks/model?x=1`).
    pub path_and_query: &'a str,
    /// The `Host` header, when there is one.
    pub host: Option<&'a str>,
    pub body: &'a [u8],
}

/// What a good signature told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The message id the sender signed (`webhook-id`), when the scheme has one.
    pub id: Option<String>,
    /// The signed timestamp, when the scheme has one.
    pub timestamp: Option<DateTime<Utc>>,
}

/// Why a request is refused (answered 401). Never says which secret or what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the `{0}` header is missing")]
    Missing(String),
    #[error("the `{header}` header is malformed: {why}")]
    Malformed { header: String, why: String },
    #[error("the signed timestamp is {secs} s old, beyond the tolerance of {tolerance} s")]
    TooOld { secs: i64, tolerance: u64 },
    #[error("the signed timestamp is {secs} s ahead, beyond the tolerance of {tolerance} s")]
    TooNew { secs: i64, tolerance: u64 },
    #[error("no signature matches the body")]
    Mismatch,
}

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret is empty")]
    Empty,
    /// (The decoder's own message is not kept: it quotes the offending byte of the secret.)
    #[error(
        "a Standard Webhooks secret is `whsec_` followed by base64 (24 to 64 random bytes); this one is not base64"
    )]
    NotBase64,
    #[error("a Standard Webhooks secret should hold at least 16 bytes; this one holds {0}")]
    Short(usize),
}

impl Verifier {
    /// A verifier for `scheme` with the current secret and, during a rotation, the previous
    /// one. Standard Webhooks secrets are `whsec_` + base64 (the prefix may be left out);
    /// the other schemes use the secret's bytes as they are.
    pub fn new(scheme: Scheme, secrets: &[&str], tolerance: Duration) -> Result<Verifier, SecretError> {
        let mut keys = Vec::with_capacity(secrets.len());
        for s in secrets {
            if s.is_empty() {
                return Err(SecretError::Empty);
            }
            let key = match scheme {
                Scheme::Standard => {
                    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
                    let key = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| SecretError::NotBase64)?;
                    if key.len() < 16 {
                        return Err(SecretError::Short(key.len()));
                    }
                    key
                }
                _ => s.as_bytes().to_vec(),
            };
            keys.push(key);
        }
        Ok(Verifier {
            scheme,
            keys,
            tolerance,
        })
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Checks `req` against `headers` at `now`.
    pub fn verify(
        &self,
        req: Signed<'_>,
        headers: &axum::http::HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<Verified, SignatureError> {
        match &self.scheme {
            Scheme::Standard => {
                let id = header(headers, WEBHOOK_ID)?;
                let ts_text = header(headers, WEBHOOK_TIMESTAMP)?;
                let ts: i64 = ts_text.trim().parse().map_err(|_| SignatureError::Malformed {
                    header: WEBHOOK_TIMESTAMP.into(),
                    why: "not a whole number of seconds".into(),
                })?;
                let at = self.fresh(ts.saturating_mul(1000), now)?;
                let given = header(headers, WEBHOOK_SIGNATURE)?;
                let mut candidates = Vec::new();
                for entry in given.split(' ').filter(|e| !e.is_empty()) {
                    let Some((version, sig)) = entry.split_once(',') else {
                        continue;
                    };
                    if version != "v1" {
                        continue;
                    }
                    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(sig) {
                        candidates.push(bytes);
                    }
                }
                let mut content = Vec::with_capacity(id.len() + ts_text.len() + req.body.len() + 2);
                content.extend_from_slice(id.as_bytes());
                content.push(b'.');
                content.extend_from_slice(ts_text.trim().as_bytes());
                content.push(b'.');
                content.extend_from_slice(req.body);
                self.any_matches(&[&content], &candidates)?;
                Ok(Verified {
                    id: Some(id.to_string()),
                    timestamp: Some(at),
                })
            }
            Scheme::HubspotV3 { public_url } => {
                let ts_text = header(headers, HUBSPOT_TIMESTAMP)?;
                let ms: i64 = ts_text.trim().parse().map_err(|_| SignatureError::Malformed {
                    header: HUBSPOT_TIMESTAMP.into(),
                    why: "not a whole number of milliseconds".into(),
                })?;
                let at = self.fresh(ms, now)?;
                let given = header(headers, HUBSPOT_SIGNATURE)?;
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(given.trim())
                    .map_err(|_| SignatureError::Malformed {
                        header: HUBSPOT_SIGNATURE.into(),
                        why: "not base64".into(),
                    })?;
                let base = match public_url {
                    Some(u) => u.trim_end_matches('/').to_string(),
                    None => format!("http://{}", req.host.unwrap_or_default()),
                };
                let uri = hubspot_decode(&format!("{base}{}", req.path_and_query));
                let head = format!("{}{uri}", req.method);
                self.any_matches(&[head.as_bytes(), req.body, ts_text.trim().as_bytes()], &[sig])?;
                Ok(Verified {
                    id: None,
                    timestamp: Some(at),
                })
            }
            Scheme::HmacSha256 {
                header: name,
                encoding,
                prefix,
            } => {
                let given = header(headers, name)?;
                let text = given.trim();
                let text = text
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(|| SignatureError::Malformed {
                        header: name.clone(),
                        why: format!("it does not start with `{prefix}`"),
                    })?;
                let sig = match encoding {
                    Encoding::Hex => decode_hex(text),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text).ok(),
                }
                .ok_or_else(|| SignatureError::Malformed {
                    header: name.clone(),
                    why: match encoding {
                        Encoding::Hex => "not hex".into(),
                        Encoding::Base64 => "not base64".into(),
                    },
                })?;
                self.any_matches(&[req.body], &[sig])?;
                Ok(Verified {
                    id: None,
                    timestamp: None,
                })
            }
        }
    }

    /// The instant of a signed timestamp in milliseconds, when within the tolerance.
    fn fresh(&self, ms: i64, now: DateTime<Utc>) -> Result<DateTime<Utc>, SignatureError> {
        let tolerance = self.tolerance.as_millis() as i64;
        let age = now.timestamp_millis().saturating_sub(ms);
        if age > tolerance {
            return Err(SignatureError::TooOld {
                secs: age / 1000,
                tolerance: self.tolerance.as_secs(),
            });
        }
        if -age > tolerance {
            return Err(SignatureError::TooNew {
                secs: -age / 1000,
                tolerance: self.tolerance.as_secs(),
            });
        }
        DateTime::from_timestamp_millis(ms).ok_or_else(|| SignatureError::Malformed {
            header: "timestamp".into(),
            why: "out of range".into(),
        })
    }

    /// Whether one of `candidates` is the MAC of the concatenated `parts` under one of the
    /// keys; every comparison constant-time.
    fn any_matches(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> Result<(), SignatureError> {
        let mut ok = false;
        for key in &self.keys {
            let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
                continue;
            };
            for p in parts {
                mac.update(p);
            }
            for c in candidates {
                // Every candidate is checked, so the time does not tell which one matched.
                ok |= mac.clone().verify_slice(c).is_ok();
            }
        }
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Signs as a Standard Webhooks sender does (for `ebb demo` and `ebb sandbox --webhook`):
/// the `webhook-signature` value, `v1,<base64>`, of `{id}.{timestamp}.{body}`.
pub fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SecretError> {
    let v = Verifier::new(Scheme::Standard, &[secret], DEFAULT_TOLERANCE)?;
    let mut mac = HmacSha256::new_from_slice(&v.keys[0]).map_err(|_| SecretError::Empty)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Result<&'a str, SignatureError> {
    let v = headers
        .get(name)
        .ok_or_else(|| SignatureError::Missing(name.to_string()))?;
    v.to_str().map_err(|_| SignatureError::Malformed {
        header: name.to_string(),
        why: "not visible ASCII".into(),
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The URI as HubSpot signs it: these escapes decoded, every other byte as sent.
fn hubspot_decode(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("%3A", ':'),
        ("%2F", '/'),
        ("%3F", '?'),
        ("%40", '@'),
        ("%21", '!'),
        ("%24", '$'),
        ("%27", '\''),
        ("%28", '('),
        ("%29", ')'),
        ("%2A", '*'),
        ("%2C", ','),
        ("%3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or("");
        match DECODED.iter().find(|(e, _)| e.eq_ignore_ascii_case(esc)) {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;

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
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    /// A Standard Webhooks secret (24 random bytes, base64), as senders hand them out.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    /// Headers as the reference library (`standardwebhooks`, not ebb) signs them.
    fn standard(secret: &str, id: &str, ts: i64, body: &[u8]) -> HeaderMap {
        let sig = standardwebhooks::Webhook::new(secret)
            .unwrap()
            .sign(id, ts, body)
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(WEBHOOK_ID, HeaderValue::from_str(id).unwrap());
        h.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert(WEBHOOK_SIGNATURE, HeaderValue::from_str(&sig).unwrap());
        h
    }

    fn req(body: &[u8]) -> Signed<'_> {
        Signed {
            method: "POST",
            path_and_query: "/webhooks/customers",
            host: Some("127.0.0.1:7878"),
            body,
        }
    }

    fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
        Verifier::new(scheme, secrets, DEFAULT_TOLERANCE).unwrap()
    }

    #[test]
    fn standard_webhooks_signed_by_the_reference_library_verify() {
        let body = br#"{"type":"customer.created","data":{"id":"c1"}}"#;
        let ts = now().timestamp();
        let h = standard(SECRET, "msg_1", ts, body);
        let v = verifier(Scheme::Standard, &[SECRET])
            .verify(req(body), &h, now())
            .unwrap();
        assert_eq!(v.id.as_deref(), Some("msg_1"));
        assert_eq!(v.timestamp.unwrap().timestamp(), ts);
        // The secret without its prefix is the same key.
        let bare = SECRET.strip_prefix("whsec_").unwrap();
        assert!(verifier(Scheme::Standard, &[bare]).verify(req(body), &h, now()).is_ok());
        // And the library accepts what it signed: the two agree on the wire form.
        assert!(standardwebhooks::Webhook::new(SECRET).unwrap().verify(body, &h).is_ok());
    }

    #[test]
    fn what_ebb_signs_the_reference_library_verifies() {
        let body = br#"{"type":"customer.created"}"#;
        let ts = now().timestamp();
        let sig = sign_standard(SECRET, "msg_9", ts, body).unwrap();
        let mut h = HeaderMap::new();
        h.insert(WEBHOOK_ID, HeaderValue::from_static("msg_9"));
        h.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert(WEBHOOK_SIGNATURE, HeaderValue::from_str(&sig).unwrap());
        assert!(standardwebhooks::Webhook::new(SECRET).unwrap().verify(body, &h).is_ok());
    }

    #[test]
    fn a_tampered_body_a_wrong_secret_or_a_changed_id_do_not_verify() {
        let body = br#"{"type":"customer.created","data":{"id":"c1"}}"#;
        let ts = now().timestamp();
        let h = standard(SECRET, "msg_1", ts, body);
        let v = verifier(Scheme::Standard, &[SECRET]);
        let tampered = br#"{"type":"customer.created","data":{"id":"c2"}}"#;
        assert_eq!(v.verify(req(tampered), &h, now()), Err(SignatureError::Mismatch));
        assert_eq!(
            verifier(Scheme::Standard, &[OTHER]).verify(req(body), &h, now()),
            Err(SignatureError::Mismatch)
        );
        let mut other_id = h.clone();
        other_id.insert(WEBHOOK_ID, HeaderValue::from_static("msg_2"));
        assert_eq!(v.verify(req(body), &other_id, now()), Err(SignatureError::Mismatch));
        let mut missing = h.clone();
        missing.remove(WEBHOOK_SIGNATURE);
        assert_eq!(
            v.verify(req(body), &missing, now()),
            Err(SignatureError::Missing(WEBHOOK_SIGNATURE.into()))
        );
        let mut garbage = h;
        garbage.insert(WEBHOOK_SIGNATURE, HeaderValue::from_static("v1,not-base64!! v2,xyz"));
        assert_eq!(v.verify(req(body), &garbage, now()), Err(SignatureError::Mismatch));
    }

    #[test]
    fn timestamps_beyond_five_minutes_either_way_are_refused() {
        let body = b"{}";
        let v = verifier(Scheme::Standard, &[SECRET]);
        let t = now().timestamp();
        let old = standard(SECRET, "m", t - 301, body);
        assert!(matches!(
            v.verify(req(body), &old, now()),
            Err(SignatureError::TooOld { .. })
        ));
        let ahead = standard(SECRET, "m", t + 301, body);
        assert!(matches!(
            v.verify(req(body), &ahead, now()),
            Err(SignatureError::TooNew { .. })
        ));
        assert!(v
            .verify(req(body), &standard(SECRET, "m", t - 290, body), now())
            .is_ok());
        // The reference library draws the same line.
        assert!(standardwebhooks::Webhook::new(SECRET)
            .unwrap()
            .verify(body, &old)
            .is_err());
        let mut bad = standard(SECRET, "m", t, body);
        bad.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static("soon"));
        assert!(matches!(
            v.verify(req(body), &bad, now()),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn rotation_accepts_either_secret_and_any_of_several_signatures() {
        let body = br#"{"type":"customer.updated"}"#;
        let ts = now().timestamp();
        let rotating = verifier(Scheme::Standard, &[OTHER, SECRET]);
        // Signed with the previous secret only.
        assert!(rotating
            .verify(req(body), &standard(SECRET, "m", ts, body), now())
            .is_ok());
        // Signed with the new secret only.
        assert!(rotating
            .verify(req(body), &standard(OTHER, "m", ts, body), now())
            .is_ok());
        // Two signatures in one header (the sender rotating): the second one matches.
        let a = standardwebhooks::Webhook::new(OTHER)
            .unwrap()
            .sign("m", ts, body)
            .unwrap();
        let b = standardwebhooks::Webhook::new(SECRET)
            .unwrap()
            .sign("m", ts, body)
            .unwrap();
        let mut h = standard(SECRET, "m", ts, body);
        h.insert(WEBHOOK_SIGNATURE, HeaderValue::from_str(&format!("{a} {b}")).unwrap());
        assert!(verifier(Scheme::Standard, &[SECRET])
            .verify(req(body), &h, now())
            .is_ok());
        // A `v1a` (asymmetric) entry is skipped, not an error.
        h.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::from_str(&format!("v1a,AAAA {b}")).unwrap(),
        );
        assert!(verifier(Scheme::Standard, &[SECRET])
            .verify(req(body), &h, now())
            .is_ok());
        // Neither secret: refused.
        let stranger = "whsec_c3RyYW5nZXJzdHJhbmdlcnN0cmFuZ2Vy";
        assert_eq!(
            rotating.verify(req(body), &standard(stranger, "m", ts, body), now()),
            Err(SignatureError::Mismatch)
        );
    }

    /// HubSpot v3 as its docs describe it, computed with another HMAC implementation.
    fn hubspot(secret: &str, method: &str, url: &str, body: &[u8], ms: i64) -> HeaderMap {
        let mut signed = Vec::new();
        signed.extend_from_slice(method.as_bytes());
        signed.extend_from_slice(url.as_bytes());
        signed.extend_from_slice(body);
        signed.extend_from_slice(ms.to_string().as_bytes());
        let mac = hmac_sha256::HMAC::mac(&signed, secret.as_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            HUBSPOT_SIGNATURE,
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(mac)).unwrap(),
        );
        h.insert(HUBSPOT_TIMESTAMP, HeaderValue::from_str(&ms.to_string()).unwrap());
        h
    }

    #[test]
    fn hubspot_v3_signs_method_url_body_and_milliseconds() {
        let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
        let body =
            br#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123,"occurredAt":1564113600000}]"#;
        let ms = now().timestamp_millis();
        let public = Scheme::HubspotV3 {
            public_url: Some("https://hooks.example.com/".into()),
        };
        let h = hubspot(secret, "POST", "https://hooks.example.com/webhooks/customers", body, ms);
        assert!(verifier(public.clone(), &[secret]).verify(req(body), &h, now()).is_ok());
        // Without `public_url`: http and the Host header.
        let h2 = hubspot(secret, "POST", "http://127.0.0.1:7878/webhooks/customers", body, ms);
        let local = Scheme::HubspotV3 { public_url: None };
        assert!(verifier(local, &[secret]).verify(req(body), &h2, now()).is_ok());
        // The URL HubSpot signs has `%3A`-style escapes of its list decoded.
        let q = Signed {
            path_and_query: "/webhooks/customers?at=10%3A30",
            ..req(body)
        };
        let h3 = hubspot(
            secret,
            "POST",
            "https://hooks.example.com/webhooks/customers?at=10:30",
            body,
            ms,
        );
        assert!(verifier(public.clone(), &[secret]).verify(q, &h3, now()).is_ok());
        // Seconds where milliseconds belong are 55 years old.
        let h4 = hubspot(
            secret,
            "POST",
            "https://hooks.example.com/webhooks/customers",
            body,
            ms / 1000,
        );
        assert!(matches!(
            verifier(public.clone(), &[secret]).verify(req(body), &h4, now()),
            Err(SignatureError::TooOld { .. })
        ));
        assert_eq!(
            verifier(public, &["another"]).verify(req(body), &h, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn hmac_sha256_reads_its_header_in_hex_or_base64_after_a_prefix() {
        let body = br#"{"id":"evt_1","type":"customer.created"}"#;
        let mac = hmac_sha256::HMAC::mac(body, b"shared-key");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        let scheme = |encoding, prefix: &str| Scheme::HmacSha256 {
            header: "x-signature".into(),
            encoding,
            prefix: prefix.into(),
        };
        let mut h = HeaderMap::new();
        h.insert("x-signature", HeaderValue::from_str(&format!("sha256={hex}")).unwrap());
        assert!(verifier(scheme(Encoding::Hex, "sha256="), &["shared-key"])
            .verify(req(body), &h, now())
            .is_ok());
        assert!(matches!(
            verifier(scheme(Encoding::Hex, "sha1="), &["shared-key"]).verify(req(body), &h, now()),
            Err(SignatureError::Malformed { .. })
        ));
        let b64 = base64::engine::general_purpose::STANDARD.encode(mac);
        h.insert("x-signature", HeaderValue::from_str(&b64).unwrap());
        assert!(verifier(scheme(Encoding::Base64, ""), &["shared-key"])
            .verify(req(body), &h, now())
            .is_ok());
        assert_eq!(
            verifier(scheme(Encoding::Base64, ""), &["other-key"]).verify(req(body), &h, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn hubspot_decodes_only_its_escapes() {
        assert_eq!(
            hubspot_decode("https://h/x%3Fa%3Db%2Fc%20d%2a%"),
            "https://h/x?a%3Db/c%20d*%"
        );
    }
    #[test]
    fn hex_decodes_pairs_only() {
        assert_eq!(decode_hex("0aFF"), Some(vec![10, 255]));
        assert_eq!(decode_hex("0aF"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn a_standard_secret_must_be_base64_of_enough_bytes() {
        let e = Verifier::new(Scheme::Standard, &["whsec_not base64!"], DEFAULT_TOLERANCE).unwrap_err();
        assert_eq!(e, SecretError::NotBase64);
        // Nothing of the secret in the message (a decoder names the byte it stopped at).
        assert!(!e.to_string().contains('!') && !e.to_string().contains("32"), "{e}");
        assert_eq!(
            Verifier::new(Scheme::Standard, &["whsec_AAAA"], DEFAULT_TOLERANCE).unwrap_err(),
            SecretError::Short(3)
        );
        assert_eq!(
            Verifier::new(Scheme::Standard, &[""], DEFAULT_TOLERANCE).unwrap_err(),
            SecretError::Empty
        );
    }
}

//! The OAuth 2.0 token endpoint, `POST /services/oauth2/token`
//! (docs/salesforce-protocol.md §1), and the bearer-token check of the data API.
//!
//! Flows: `client_credentials` (client id and secret), `refresh_token` (the configured
//! refresh token; the secret is checked when sent), and
//! `urn:ietf:params:oauth:grant-type:jwt-bearer` (an RS256 assertion whose `iss` is the
//! client id, `aud` the login host or the sandbox, `exp` within 3 minutes; the signature is
//! checked when a public key is configured). The 200 body is the documented one: `issued_at`
//! as a string of milliseconds, a `signature`, no `expires_in`, no refresh token (except on
//! rotation). Errors are 400 `{"error", "error_description"}`.
//!
//! The client id and secret are taken from `Authorization: Basic` (RFC 6749 §2.3.1: each
//! form-urlencoded, joined by `:`, base64; what simple-salesforce sends for client
//! credentials) or, without that header, from the body's `client_id` and `client_secret`.
//! Either way an unknown id is `invalid_client_id` and a wrong secret `invalid_client`; a
//! Basic header that does not decode is `invalid_client`.

use super::{id, Shared, State};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};
use std::sync::Arc;

/// The JWT `aud` values accepted besides the sandbox's own URL.
const AUDIENCES: [&str; 2] = ["https://login.salesforce.com", "https://test.salesforce.com"];
/// How far in the future `exp` may be: "within 3 minutes", plus a little clock skew.
const MAX_EXP_SECS: i64 = 3 * 60 + 10;

/// Parses a PEM public key (SubjectPublicKeyInfo).
pub(crate) fn public_key(pem: &str) -> Result<rsa::PublicKey, String> {
    use rsa::pkcs8::DecodePublicKey;
    rsa::PublicKey::from_public_key_pem(pem.trim())
        .map_err(|e| format!("the JWT public key is not a PEM `PUBLIC KEY`: {e}"))
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The client id and secret of `Authorization: Basic` (RFC 6749 §2.3.1), `Ok(None)`
/// without that header, `Err` when it does not decode. RFC 6749 form-urlencodes each part
/// before joining them; clients that do not (simple-salesforce joins them as they are) are
/// understood too: a part that matches the app's value as sent is taken as sent.
fn basic_credentials(headers: &HeaderMap, settings: &super::Settings) -> Result<Option<(String, String)>, ()> {
    let Some(value) = headers.get("authorization") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?.trim();
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ())?;
    let text = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = text.split_once(':').ok_or(())?;
    // Each part is form-urlencoded before joining (RFC 6749 §2.3.1).
    let decode = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let pick = |raw: &str, expected: &str| {
        if raw == expected {
            raw.to_string()
        } else {
            decode(raw)
        }
    };
    Ok(Some((
        pick(id, &settings.client_id),
        pick(secret, &settings.client_secret),
    )))
}

/// `POST /services/oauth2/token`.
pub(crate) async fn token(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    match basic_credentials(&headers, &shared.settings) {
        Ok(Some((id, secret))) => {
            // The header's credentials stand for the body's.
            params.retain(|(k, _)| k != "client_id" && k != "client_secret");
            params.push(("client_id".into(), id));
            params.push(("client_secret".into(), secret));
        }
        Ok(None) => {}
        Err(()) => {
            *shared.lock().counts.entry("token".into()).or_default() += 1;
            return oauth_error("invalid_client", "invalid client credentials");
        }
    }
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let settings = &shared.settings;
    let mut state = shared.lock();
    *state.counts.entry("token".into()).or_default() += 1;
    let bad_client = || oauth_error("invalid_client_id", "client identifier invalid");
    let bad_secret = || oauth_error("invalid_client", "invalid client credentials");
    let mut new_refresh = None;
    match param("grant_type") {
        Some("client_credentials") => {
            if param("client_id") != Some(settings.client_id.as_str()) {
                return bad_client();
            }
            if param("client_secret") != Some(settings.client_secret.as_str()) {
                return bad_secret();
            }
        }
        Some("refresh_token") => {
            if param("client_id") != Some(settings.client_id.as_str()) {
                return bad_client();
            }
            // The secret is optional unless the app requires it; a wrong one is refused.
            if param("client_secret").is_some_and(|s| s != settings.client_secret) {
                return bad_secret();
            }
            let Some(refresh) = param("refresh_token").filter(|r| state.refresh_tokens.contains(*r)) else {
                return oauth_error("invalid_grant", "expired access/refresh token");
            };
            if settings.rotate_refresh_tokens {
                let refresh = refresh.to_string();
                state.refresh_tokens.remove(&refresh);
                let fresh = format!("5Aep{}", random_text(&mut state, 83));
                state.refresh_tokens.insert(fresh.clone());
                new_refresh = Some(fresh);
            }
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            if let Err((error, description)) = check_jwt(&shared, param("assertion").unwrap_or_default()) {
                return oauth_error(error, description);
            }
        }
        _ => return oauth_error("unsupported_grant_type", "grant type not supported"),
    }
    let body = issue(&shared, &mut state, new_refresh);
    (StatusCode::OK, Json(body)).into_response()
}

fn random_text(state: &mut State, n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    (0..n)
        .map(|_| ALPHABET[state.rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new access token and the documented 200 body.
fn issue(shared: &Shared, state: &mut State, refresh_token: Option<String>) -> Value {
    let org = id::org_id();
    let access = format!("{}!AR{}", &org[..15], random_text(state, 96));
    state.tokens.insert(access.clone(), 0);
    let issued_at = chrono::Utc::now().timestamp_millis().to_string();
    let identity = format!("{}/id/{org}/{}", shared.url, id::user_id());
    let signature = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
        shared.settings.client_secret.as_bytes(),
        format!("{identity}{issued_at}").as_bytes(),
    ));
    let mut body = json!({
        "access_token": access,
        "signature": signature,
        "scope": "api",
        "instance_url": shared.url,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
    });
    if let Some(r) = refresh_token {
        body["refresh_token"] = Value::from(r);
    }
    body
}

/// Checks a JWT bearer assertion; the error is the OAuth `error` and its description.
fn check_jwt(shared: &Shared, assertion: &str) -> Result<(), (&'static str, &'static str)> {
    let invalid = ("invalid_grant", "invalid assertion");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return Err(invalid);
    }
    let decode = |p: &str| -> Option<Value> { serde_json::from_slice(&b64.decode(p.trim_end_matches('=')).ok()?).ok() };
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return Err(invalid);
    };
    if header["alg"] != "RS256" {
        return Err(invalid);
    }
    if claims["iss"].as_str() != Some(shared.settings.client_id.as_str()) {
        return Err(("invalid_client_id", "client identifier invalid"));
    }
    let aud_ok = |a: &Value| {
        a.as_str().is_some_and(|a| {
            let a = a.trim_end_matches('/');
            AUDIENCES.contains(&a) || a == shared.url
        })
    };
    let aud = &claims["aud"];
    if !(aud_ok(aud) || aud.as_array().is_some_and(|l| l.iter().any(aud_ok))) {
        return Err(("invalid_grant", "audience is invalid"));
    }
    let now = chrono::Utc::now().timestamp();
    let Some(exp) = claims["exp"]
        .as_i64()
        .or_else(|| claims["exp"].as_f64().map(|f| f as i64))
    else {
        return Err(invalid);
    };
    if exp <= now {
        return Err(("invalid_grant", "expired authorization code"));
    }
    if exp > now + MAX_EXP_SECS {
        // Salesforce asks for an expiry "within 3 minutes"; the sandbox holds clients to it.
        return Err(invalid);
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if sub.is_empty() {
        return Err(invalid);
    }
    if shared.settings.jwt_username.as_deref().is_some_and(|u| u != sub) {
        return Err(("invalid_grant", "user hasn't approved this consumer"));
    }
    if let Some(key) = &shared.settings.jwt_key {
        use rsa::signature::Verifier;
        let sig = b64
            .decode(parts[2].trim_end_matches('='))
            .ok()
            .and_then(|s| rsa::pkcs1v15::Signature::try_from(s.as_slice()).ok())
            .ok_or(invalid)?;
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .map_err(|_| invalid)?;
    }
    Ok(())
}

/// HMAC-SHA256 (RFC 2104), for the token response's `signature`.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().to_vec()
}

/// The outcome of checking a data-API request's token.
pub(crate) enum Session {
    Valid,
    Invalid,
}

/// Checks `Authorization: Bearer <token>` (Salesforce also takes the older `OAuth <token>`)
/// and counts the call on the token; a token past its call budget is dropped.
pub(crate) fn check(state: &mut State, authorization: Option<&str>) -> Session {
    let token = authorization.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("OAuth ")));
    let Some(token) = token.map(str::trim) else {
        return Session::Invalid;
    };
    let ttl = state.faults.token_ttl_calls;
    match state.tokens.get_mut(token) {
        Some(calls) if ttl.is_none_or(|n| *calls < n) => {
            *calls += 1;
            Session::Valid
        }
        Some(_) => {
            state.tokens.remove(token);
            Session::Invalid
        }
        None => Session::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}

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
    let body = br#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123,"occurredAt":1564113600000}]"#;
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

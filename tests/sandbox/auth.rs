//! The token endpoint (`src/sandbox/auth.rs`): client credentials (in the form or as HTTP
//! Basic), refresh with rotation, JWT bearer, and what an expired or missing session gets
//! on the data API (docs/salesforce-protocol.md §1).

use super::*;

const KEY: &str = include_str!("../fixtures/keys/snowflake_test_key.p8");

#[tokio::test]
async fn client_credentials_token_has_the_documented_shape_and_errors_are_oauth_400s() {
    let api = Api::start(SandboxConfig::default()).await;
    let r = api
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ebb-sandbox"),
            ("client_secret", "ebb-sandbox"),
        ])
        .await;
    assert_eq!(r.status, 200);
    let t = r.json.as_object().unwrap();
    let keys: BTreeSet<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "access_token",
            "signature",
            "scope",
            "instance_url",
            "id",
            "token_type",
            "issued_at"
        ]),
        "no expires_in, no refresh_token: {}",
        r.text
    );
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["instance_url"], json!(api.sandbox.url()));
    let issued_at = t["issued_at"].as_str().expect("issued_at is a string");
    let ms: i64 = issued_at.parse().expect("of digits");
    assert!(
        (ms - chrono::Utc::now().timestamp_millis()).abs() < 60_000,
        "milliseconds: {issued_at}"
    );
    // signature = base64(HMAC-SHA256(client_secret, id + issued_at))
    let id = t["id"].as_str().unwrap();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(t["signature"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        signature,
        hmac_sha256(b"ebb-sandbox", format!("{id}{issued_at}").as_bytes())
    );
    assert!(t["access_token"].as_str().unwrap().starts_with("00D"));

    for (form, error, description) in [
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "ebb-sandbox"),
                ("client_secret", "nope"),
            ],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "other"),
                ("client_secret", "ebb-sandbox"),
            ],
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            vec![("grant_type", "password")],
            "unsupported_grant_type",
            "grant type not supported",
        ),
        (vec![], "unsupported_grant_type", "grant type not supported"),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "ebb-sandbox"),
                ("refresh_token", "stale"),
            ],
            "invalid_grant",
            "expired access/refresh token",
        ),
    ] {
        let r = api.token_request(&form).await;
        assert_eq!(r.status, 400, "{form:?}");
        assert_eq!(
            r.json,
            json!({"error": error, "error_description": description}),
            "{form:?}"
        );
    }
    assert_eq!(api.sandbox.calls_to("token"), 7);
    assert_eq!(api.sandbox.calls(), 0, "the token endpoint is not an API call");
}

#[tokio::test]
async fn refresh_token_flow_with_rotation() {
    let api = Api::start(SandboxConfig {
        refresh_token: "R1".into(),
        rotate_refresh_tokens: true,
        ..SandboxConfig::default()
    })
    .await;
    let r = api
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ebb-sandbox"),
            ("refresh_token", "R1"),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let next = r.json["refresh_token"]
        .as_str()
        .expect("rotation returns a new refresh token")
        .to_string();
    assert_ne!(next, "R1");
    let reused = api
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ebb-sandbox"),
            ("refresh_token", "R1"),
        ])
        .await;
    assert_eq!(
        (reused.status, &reused.json["error"]),
        (400, &json!("invalid_grant")),
        "the old one is spent"
    );
    let wrong_secret = api
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ebb-sandbox"),
            ("client_secret", "x"),
            ("refresh_token", &next),
        ])
        .await;
    assert_eq!(wrong_secret.json["error"], "invalid_client");
    let r = api
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ebb-sandbox"),
            ("refresh_token", &next),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.json["access_token"].as_str().unwrap();
    assert_eq!(api.call_with(Method::GET, "limits", None, token).await.status, 200);
}

fn jwt(header: Value, claims: Value) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa::PrivateKey::from_pkcs8_pem(KEY).unwrap());
    let input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64.encode(sig.to_bytes()))
}

#[tokio::test]
async fn jwt_bearer_checks_structure_claims_and_signature() {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let public = rsa::PublicKey::from(&rsa::PrivateKey::from_pkcs8_pem(KEY).unwrap())
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let api = Api::start(SandboxConfig {
        jwt_public_key: Some(public),
        ..SandboxConfig::default()
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let rs256 = json!({"alg": "RS256"});
    let claims = |iss: &str, aud: &str, exp: i64| json!({"iss": iss, "sub": "etl@acme.com", "aud": aud, "exp": exp});
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let api = &api;
    let ask = |assertion: String| async move {
        api.token_request(&[("grant_type", grant), ("assertion", &assertion)])
            .await
    };

    let ok = ask(jwt(
        rs256.clone(),
        claims("ebb-sandbox", "https://login.salesforce.com", now + 170),
    ))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(
        ok.json.get("refresh_token").is_none(),
        "the JWT flow issues no refresh token"
    );
    let own_url = ask(jwt(rs256.clone(), claims("ebb-sandbox", &api.sandbox.url(), now + 60))).await;
    assert_eq!(
        own_url.status, 200,
        "aud may be the sandbox (My Domain): {}",
        own_url.text
    );

    let cases = [
        (
            jwt(
                rs256.clone(),
                claims("someone", "https://login.salesforce.com", now + 60),
            ),
            "invalid_client_id",
        ),
        (
            jwt(rs256.clone(), claims("ebb-sandbox", "https://example.com", now + 60)),
            "invalid_grant",
        ),
        (
            jwt(
                rs256.clone(),
                claims("ebb-sandbox", "https://login.salesforce.com", now - 5),
            ),
            "invalid_grant",
        ),
        (
            jwt(
                rs256.clone(),
                claims("ebb-sandbox", "https://login.salesforce.com", now + 3600),
            ),
            "invalid_grant",
        ),
        (
            jwt(
                json!({"alg": "HS256"}),
                claims("ebb-sandbox", "https://login.salesforce.com", now + 60),
            ),
            "invalid_grant",
        ),
        ("not.a-jwt".to_string(), "invalid_grant"),
    ];
    for (assertion, error) in cases {
        let r = ask(assertion.clone()).await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (400, Some(error)),
            "{assertion}: {}",
            r.text
        );
        assert!(r.json["error_description"].is_string());
    }
    // A valid structure with a signature that does not match the claims.
    let good = jwt(
        rs256.clone(),
        claims("ebb-sandbox", "https://login.salesforce.com", now + 60),
    );
    let other = jwt(rs256, claims("ebb-sandbox", "https://test.salesforce.com", now + 60));
    let forged = format!(
        "{}.{}",
        other.rsplit_once('.').unwrap().0,
        good.rsplit_once('.').unwrap().1
    );
    let r = ask(forged).await;
    assert_eq!(
        r.json,
        json!({"error": "invalid_grant", "error_description": "invalid assertion"})
    );
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn an_expired_or_missing_session_is_401_invalid_session_id() {
    let api = Api::start(SandboxConfig::default()).await;
    let expected = json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
    assert_eq!(api.call(Method::GET, "limits", None).await.status, 200);
    let none = api.call_with(Method::GET, "limits", None, "").await;
    assert_eq!((none.status, &none.json), (401, &expected));
    api.sandbox.expire_tokens();
    let r = api.call(Method::GET, "sobjects/Contact/describe", None).await;
    assert_eq!((r.status, &r.json), (401, &expected));
    assert!(
        r.limit_info().starts_with("api-usage=1/"),
        "401s are not counted: {}",
        r.limit_info()
    );
    assert_eq!(api.sandbox.calls(), 1);

    // A token that expires after 2 calls.
    let api = Api::start(SandboxConfig {
        faults: Faults {
            token_ttl_calls: Some(2),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let statuses = [
        api.call(Method::GET, "limits", None).await.status,
        api.call(Method::GET, "limits", None).await.status,
        api.call(Method::GET, "limits", None).await.status,
    ];
    assert_eq!(statuses, [200, 200, 401]);
}

/// A token request with `Authorization: <authorization>` and the form `form`.
async fn token_with_header(api: &Api, authorization: &str, form: &[(&str, &str)]) -> Resp {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let r = api
        .http
        .post(format!("{}/services/oauth2/token", api.sandbox.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", authorization)
        .body(body)
        .send()
        .await
        .unwrap();
    read(r).await
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[tokio::test]
async fn client_credentials_are_accepted_as_http_basic_and_a_wrong_secret_is_invalid_client() {
    // A secret with characters RFC 6749 encodes; `Api::start` would ask with the default.
    let config = SandboxConfig {
        client_secret: "s3cr+t:x".into(),
        ..SandboxConfig::default()
    };
    let api = Api {
        sandbox: Sandbox::start("127.0.0.1:0", config).await.unwrap(),
        http: ebb::http::client().unwrap(),
        token: String::new(),
    };
    let grant = [("grant_type", "client_credentials")];
    // As simple-salesforce sends it: the id and secret joined as they are.
    let r = token_with_header(&api, &basic("ebb-sandbox", "s3cr+t:x"), &grant).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(r.json["token_type"], "Bearer");
    let data = api.call_with(Method::GET, "limits", None, &token).await;
    assert_eq!(data.status, 200, "{}", data.text);
    // As RFC 6749 §2.3.1 has it: each part form-urlencoded first.
    let r = token_with_header(&api, &basic("ebb-sandbox", "s3cr%2Bt%3Ax"), &grant).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The header stands for the body's credentials; the scheme's case does not matter.
    let r = token_with_header(
        &api,
        &basic("ebb-sandbox", "s3cr+t:x").replace("Basic", "basic"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "other"),
            ("client_secret", "other"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A wrong secret is invalid_client either way; an unknown id invalid_client_id.
    let wrong = token_with_header(&api, &basic("ebb-sandbox", "nope"), &grant).await;
    let body = api
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ebb-sandbox"),
            ("client_secret", "nope"),
        ])
        .await;
    for r in [&wrong, &body] {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json["error"], "invalid_client", "{}", r.text);
        assert_eq!(r.json["error_description"], "invalid client credentials");
    }
    let r = token_with_header(&api, &basic("someone", "s3cr+t:x"), &grant).await;
    assert_eq!((r.status, r.json["error"].as_str()), (400, Some("invalid_client_id")));
    let r = token_with_header(&api, "Basic !!not base64!!", &grant).await;
    assert_eq!((r.status, r.json["error"].as_str()), (400, Some("invalid_client")));
    // The refresh-token flow takes the header too.
    let r = token_with_header(
        &api,
        &basic("ebb-sandbox", "s3cr+t:x"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "ebb-sandbox-refresh-token"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

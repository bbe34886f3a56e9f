//! The sandbox (`ebb::sandbox`, `ebb sandbox`) over real HTTP: the documented Salesforce
//! wire protocol (`reference/crm-apis.md` §1-5) a client relies on.

use base64::Engine;
use ebb::sandbox::{Faults, Sandbox, SandboxConfig};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const V: &str = "v62.0";
const KEY: &str = include_str!("fixtures/keys/snowflake_test_key.p8");

/// A response: status, headers, body as JSON (Null when empty or not JSON) and text.
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
    text: String,
}

impl Resp {
    fn limit_info(&self) -> String {
        self.headers
            .get("sforce-limit-info")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_else(|| panic!("no Sforce-Limit-Info on a {} response: {}", self.status, self.text))
            .to_string()
    }
}

/// A sandbox on this test's runtime, a client and a token.
struct Api {
    sandbox: Sandbox,
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn start(config: SandboxConfig) -> Api {
        let sandbox = Sandbox::start("127.0.0.1:0", config).await.expect("the sandbox starts");
        let http = ebb::http::client().unwrap();
        let mut api = Api {
            sandbox,
            http,
            token: String::new(),
        };
        let r = api
            .token_request(&[
                ("grant_type", "client_credentials"),
                ("client_id", "ebb-sandbox"),
                ("client_secret", "ebb-sandbox"),
            ])
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        api.token = r.json["access_token"].as_str().unwrap().to_string();
        api
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Resp {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = self
            .http
            .post(format!("{}/services/oauth2/token", self.sandbox.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        read(r).await
    }

    /// A data-API call: `path` under `/services/data/v62.0/` (or absolute when it starts
    /// with `/`), with the token.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.call_with(method, path, body, &self.token).await
    }

    async fn call_with(&self, method: Method, path: &str, body: Option<Value>, token: &str) -> Resp {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.sandbox.url())
        } else {
            format!("{}/services/data/{V}/{path}", self.sandbox.url())
        };
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    async fn csv_put(&self, path: &str, csv: &str) -> Resp {
        let r = self
            .http
            .put(format!("{}/services/data/{V}/{path}", self.sandbox.url()))
            .bearer_auth(&self.token)
            .header("content-type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .unwrap();
        read(r).await
    }

    async fn upsert(&self, field: &str, all_or_none: bool, records: Vec<Value>) -> Resp {
        self.call(
            Method::PATCH,
            &format!("composite/sobjects/Contact/{field}"),
            Some(json!({"allOrNone": all_or_none, "records": records})),
        )
        .await
    }

    async fn query(&self, q: &str) -> Resp {
        let encoded: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        self.call(Method::GET, &format!("query?q={encoded}"), None).await
    }
}

async fn read(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        json,
        text,
    }
}

fn contact(fields: Value) -> Value {
    let mut m = json!({"attributes": {"type": "Contact"}});
    for (k, v) in fields.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

/// The `statusCode`s of one per-record result.
fn codes(result: &Value) -> Vec<String> {
    result["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {result}"))
        .iter()
        .map(|e| e["statusCode"].as_str().unwrap().to_string())
        .collect()
}

fn by_key(sandbox: &Sandbox, key: &str) -> Map<String, Value> {
    sandbox
        .records("Contact")
        .into_iter()
        .find(|r| r.get("Warehouse_Id__c") == Some(&json!(key)))
        .unwrap_or_else(|| panic!("no Contact with Warehouse_Id__c {key}"))
}

// ---------------------------------------------------------------- OAuth

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

// ---------------------------------------------------------------- versions, describe, limits

#[tokio::test]
async fn versions_from_46_up_to_the_configured_one_are_served() {
    let api = Api::start(SandboxConfig::default()).await;
    let list = api.call(Method::GET, "/services/data/", None).await;
    assert_eq!(list.status, 200);
    assert!(
        list.headers.get("sforce-limit-info").is_none(),
        "not on the versions URI"
    );
    let versions: Vec<&str> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!((versions[0], *versions.last().unwrap()), ("46.0", "66.0"));
    for (v, status) in [
        ("v46.0", 200),
        ("v62.0", 200),
        ("v66.0", 200),
        ("v45.0", 404),
        ("v67.0", 404),
        ("v62.00", 404),
        ("62.0", 404),
    ] {
        let r = api.call(Method::GET, &format!("/services/data/{v}/limits"), None).await;
        assert_eq!(r.status, status, "{v}: {}", r.text);
    }
    let r = api.call(Method::GET, "no/such/resource", None).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (
            404,
            json!([{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}])
        )
    );
}

#[tokio::test]
async fn describe_lists_the_contact_fields_with_their_properties() {
    let api = Api::start(SandboxConfig::default()).await;
    let r = api.call(Method::GET, "sobjects/Contact/describe", None).await;
    assert_eq!(r.status, 200);
    let d = &r.json;
    assert_eq!(
        (d["name"].as_str(), d["keyPrefix"].as_str()),
        (Some("Contact"), Some("003"))
    );
    let field = |name: &str| {
        d["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no field {name}"))
            .clone()
    };
    for key in [
        "name",
        "label",
        "type",
        "length",
        "precision",
        "scale",
        "nillable",
        "createable",
        "updateable",
        "defaultedOnCreate",
        "externalId",
        "unique",
        "idLookup",
        "restrictedPicklist",
        "picklistValues",
    ] {
        assert!(field("Email").get(key).is_some(), "describe field key {key}");
    }
    let id = field("Id");
    assert_eq!(
        (id["type"].as_str(), id["createable"].as_bool()),
        (Some("id"), Some(false))
    );
    let last = field("LastName");
    assert_eq!(
        (
            last["nillable"].as_bool(),
            last["createable"].as_bool(),
            last["defaultedOnCreate"].as_bool()
        ),
        (Some(false), Some(true), Some(false)),
        "required on create"
    );
    let segment = field("Customer_Segment__c");
    assert_eq!(segment["type"], "picklist");
    assert_eq!(segment["restrictedPicklist"], true);
    let values: Vec<&str> = segment["picklistValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["Enterprise", "Mid-Market", "SMB", "Consumer"]);
    let ltv = field("LTV__c");
    assert_eq!(
        (ltv["type"].as_str(), ltv["precision"].as_u64(), ltv["scale"].as_u64()),
        (Some("currency"), Some(18), Some(2))
    );
    assert_eq!(field("Upsell_Score__c")["type"], "double");
    assert_eq!(field("Churn_Risk__c")["type"], "percent");
    assert_eq!(field("Last_Activity__c")["type"], "date");
    assert_eq!(field("Last_Update__c")["type"], "datetime");
    assert_eq!(field("Email")["type"], "email");
    assert_eq!(field("LeadSource")["type"], "picklist");
    let crm = field("Crm_Id__c");
    assert_eq!(
        (
            crm["length"].as_u64(),
            crm["externalId"].as_bool(),
            crm["unique"].as_bool(),
            crm["idLookup"].as_bool()
        ),
        (Some(18), Some(true), Some(true), Some(true))
    );
    assert_eq!(field("Warehouse_Id__c")["externalId"], true);
    assert_eq!(field("LastModifiedDate")["updateable"], false);

    assert_eq!(api.call(Method::GET, "sobjects/Nope/describe", None).await.status, 404);
    let global = api.call(Method::GET, "sobjects", None).await;
    assert_eq!(global.json["sobjects"][0]["name"], "Contact");
    assert_eq!(api.sandbox.calls_to("describe"), 3);
}

#[tokio::test]
async fn every_response_carries_sforce_limit_info_and_limits_reports_the_allocation() {
    let api = Api::start(SandboxConfig {
        daily_api_limit: 500,
        ..SandboxConfig::default()
    })
    .await;
    let a = api.call(Method::GET, "sobjects/Contact/describe", None).await;
    assert_eq!(a.limit_info(), "api-usage=1/500");
    let b = api
        .call(Method::POST, "composite/sobjects", Some(json!({"records": "x"})))
        .await;
    assert_eq!(
        (b.status, b.limit_info()),
        (400, "api-usage=2/500".to_string()),
        "errors count and carry it too"
    );
    let l = api.call(Method::GET, "limits", None).await;
    assert_eq!(l.limit_info(), "api-usage=3/500");
    assert_eq!(l.json["DailyApiRequests"], json!({"Max": 500, "Remaining": 497}));
    assert_eq!(api.sandbox.calls(), 3);
    assert_eq!(api.sandbox.calls_to("limits"), 1);
}

#[tokio::test]
async fn the_two_request_limit_exceeded_causes_are_distinguishable() {
    let api = Api::start(SandboxConfig::default()).await;
    // Daily: the allocation is used up; api-usage is at its maximum.
    api.sandbox.set_allocation(1000, 1000);
    let r = api.call(Method::GET, "limits", None).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(r.limit_info(), "api-usage=1000/1000");
    assert_eq!(api.sandbox.calls(), 0, "a refused request is not counted");

    // Concurrency: more than 1 in flight; api-usage is below its maximum.
    api.sandbox.set_allocation(10, 1000);
    api.sandbox.set_faults(Faults {
        latency: Duration::from_millis(300),
        max_concurrent: Some(1),
        ..Faults::default()
    });
    let (a, b) = tokio::join!(api.call(Method::GET, "limits", None), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.call(Method::GET, "limits", None).await
    });
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 403, "{}", b.text);
    assert_eq!(b.json[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert_ne!(b.json[0]["message"], "TotalRequests Limit exceeded.");
    let (used, max) = parse_usage(&b.limit_info());
    assert!(used < max, "{}", b.limit_info());
    assert_eq!(api.sandbox.max_in_flight(), 2);
}

fn parse_usage(info: &str) -> (u64, u64) {
    let (used, max) = info.strip_prefix("api-usage=").unwrap().split_once('/').unwrap();
    (used.parse().unwrap(), max.parse().unwrap())
}

#[tokio::test]
async fn injected_503s_and_request_timing_are_observable() {
    let api = Api::start(SandboxConfig::default()).await;
    api.sandbox.set_faults(Faults {
        unavailable_next: 2,
        ..Faults::default()
    });
    let statuses = [
        api.call(Method::GET, "limits", None).await,
        api.call(Method::GET, "limits", None).await,
        api.call(Method::GET, "limits", None).await,
    ];
    assert_eq!(statuses.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 503, 200]);
    assert_eq!(statuses[0].json[0]["errorCode"], "SERVER_UNAVAILABLE");
    assert_eq!(api.sandbox.calls(), 1);
    api.sandbox.set_faults(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let (x, y, z) = tokio::join!(
        api.call(Method::GET, "limits", None),
        api.call(Method::GET, "limits", None),
        api.call(Method::GET, "limits", None)
    );
    assert!([x.status, y.status, z.status].iter().all(|s| *s == 200));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(api.sandbox.max_in_flight(), 3);
    assert_eq!(api.sandbox.request_starts().len(), 6);
    assert_eq!(api.sandbox.max_starts_within(Duration::from_millis(100)), 3);
}

#[tokio::test]
async fn a_call_time_is_a_floor_that_includes_the_latency_and_the_orgs_own_work() {
    let api = Api::start(SandboxConfig::default()).await;
    // Far apart, so a loaded machine's stalls cannot blur "within" and "added".
    api.sandbox.set_faults(Faults {
        call_time: Duration::from_millis(1500),
        latency: Duration::from_millis(1200),
        ..Faults::default()
    });
    let started = Instant::now();
    let r = api.call(Method::GET, "limits", None).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(took >= Duration::from_millis(1500), "at least the call time: {took:?}");
    // Added latency would make it 2.7 s or more.
    assert!(
        took < Duration::from_millis(2500),
        "the latency is within the call time: {took:?}"
    );
}

// ---------------------------------------------------------------- sObject Collections

#[tokio::test]
async fn collections_upsert_creates_and_updates_in_request_order() {
    let api = Api::start(SandboxConfig::default()).await;
    let r = api
        .upsert(
            "Warehouse_Id__c",
            false,
            vec![
                contact(json!({"Warehouse_Id__c": "w1", "LastName": "One", "LTV__c": 10.555})),
                contact(json!({"Warehouse_Id__c": "w2", "LastName": "Two", "Email": "two@example.com"})),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let res = r.json.as_array().unwrap();
    assert_eq!(res.len(), 2);
    for x in res {
        assert_eq!(
            (x["success"].as_bool(), x["created"].as_bool()),
            (Some(true), Some(true)),
            "{x}"
        );
        assert_eq!(x["errors"], json!([]));
        let id = x["id"].as_str().unwrap();
        assert!(id.len() == 18 && id.starts_with("003"), "{id}");
    }
    let w1 = res[0]["id"].clone();
    assert_eq!(
        by_key(&api.sandbox, "w1")["LTV__c"],
        json!(10.56),
        "currency keeps 2 decimals"
    );
    // w3 is new, w1 changes: results in request order, created false for the update.
    let r = api
        .upsert(
            "Warehouse_Id__c",
            false,
            vec![
                contact(json!({"Warehouse_Id__c": "w3", "LastName": "Three"})),
                contact(json!({"Warehouse_Id__c": "w1", "Customer_Segment__c": "SMB", "Email": null})),
            ],
        )
        .await;
    let res = r.json.as_array().unwrap();
    assert_eq!(res[0]["created"], true);
    assert_eq!((res[1]["created"].as_bool(), &res[1]["id"]), (Some(false), &w1));
    let one = by_key(&api.sandbox, "w1");
    assert_eq!(
        (one["LastName"].as_str(), one["Customer_Segment__c"].as_str()),
        (Some("One"), Some("SMB"))
    );
    assert_eq!(api.sandbox.records("Contact").len(), 3);
    assert_eq!(api.sandbox.calls_to("collections"), 2);

    // Never by record Id; only external-ID fields.
    for field in ["Id", "Email"] {
        let r = api.upsert(field, false, vec![contact(json!({"LastName": "X"}))]).await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some("INVALID_FIELD")),
            "{field}"
        );
    }
    assert_eq!(
        api.upsert("Nope__c", false, vec![]).await.json[0]["errorCode"],
        "INVALID_FIELD"
    );
    let r = api
        .call(
            Method::PATCH,
            "composite/sobjects/Nope/Ext__c",
            Some(json!({"records": []})),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn collections_report_salesforce_validation_errors_per_record() {
    let api = Api::start(SandboxConfig::default()).await;
    let long = "x".repeat(81);
    let records = vec![
        contact(json!({"Warehouse_Id__c": "ok", "LastName": "Fine"})),
        contact(json!({"Warehouse_Id__c": "a", "LastName": "A", "Nope__c": 1})),
        contact(json!({"Warehouse_Id__c": "b", "LastName": "B", "Customer_Segment__c": "Gold"})),
        contact(json!({"Warehouse_Id__c": "c", "LastName": long})),
        contact(json!({"Warehouse_Id__c": "d", "FirstName": "No last name"})),
        contact(json!({"Warehouse_Id__c": "e", "LastName": "E", "LTV__c": "lots"})),
        contact(json!({"Warehouse_Id__c": "f", "LastName": "F", "Last_Activity__c": "2024-13-45"})),
        contact(json!({"Warehouse_Id__c": "g", "LastName": "G", "Email": "not-an-email"})),
        contact(json!({"Warehouse_Id__c": "h", "LastName": "H", "Last_Update__c": "yesterday"})),
        contact(json!({"Warehouse_Id__c": "dup", "LastName": "D1"})),
        contact(json!({"Warehouse_Id__c": "dup", "LastName": "D2"})),
        contact(json!({"LastName": "no key"})),
    ];
    let r = api.upsert("Warehouse_Id__c", false, records).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let res = r.json.as_array().unwrap();
    let got: Vec<Vec<String>> = res.iter().map(codes).collect();
    let want: Vec<Vec<&str>> = vec![
        vec![],
        vec!["INVALID_FIELD"],
        vec!["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"],
        vec!["STRING_TOO_LONG"],
        vec!["REQUIRED_FIELD_MISSING"],
        vec!["INVALID_TYPE_ON_FIELD_IN_RECORD"],
        vec!["INVALID_TYPE_ON_FIELD_IN_RECORD"],
        vec!["INVALID_EMAIL_ADDRESS"],
        vec!["INVALID_TYPE_ON_FIELD_IN_RECORD"],
        vec!["DUPLICATE_EXTERNAL_ID"],
        vec!["DUPLICATE_EXTERNAL_ID"],
        vec!["MISSING_ARGUMENT"],
    ];
    assert_eq!(got, want, "{}", r.text);
    assert!(res
        .iter()
        .skip(1)
        .all(|x| x["success"] == false && x.get("id").is_none() && x.get("created").is_none()));
    let missing = &res[4]["errors"][0];
    assert_eq!(
        (missing["message"].as_str(), missing["fields"].clone()),
        (Some("Required fields are missing: [LastName]"), json!(["LastName"]))
    );
    assert_eq!(res[2]["errors"][0]["fields"], json!(["Customer_Segment__c"]));
    assert!(res[2]["errors"][0]["message"].as_str().unwrap().contains("Gold"));
    assert!(
        res[1]["errors"][0].get("errorCode").is_none(),
        "per-record errors use statusCode"
    );
    assert_eq!(
        api.sandbox.records("Contact").len(),
        1,
        "only the valid record was written"
    );

    // Update by id: unknown, deleted, malformed and read-only.
    let ok_id = res[0]["id"].as_str().unwrap().to_string();
    let deleted = api
        .call(
            Method::POST,
            "composite/sobjects",
            Some(json!({"records": [contact(json!({"LastName": "Gone"}))]})),
        )
        .await
        .json[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = api
        .call(Method::DELETE, &format!("composite/sobjects?ids={deleted}"), None)
        .await;
    assert_eq!(d.json, json!([{"id": deleted, "success": true, "errors": []}]));
    let r = api
        .call(
            Method::PATCH,
            "composite/sobjects",
            Some(json!({"records": [
                contact(json!({"id": ok_id, "Phone": "555"})),
                contact(json!({"id": deleted, "Phone": "555"})),
                contact(json!({"id": "001A0000006Vm9rIAC", "Phone": "555"})),
                contact(json!({"id": "garbage", "Phone": "555"})),
                contact(json!({"id": ok_id, "LastModifiedDate": "2024-01-01T00:00:00Z"})),
                contact(json!({"id": ok_id, "LastName": null})),
                contact(json!({"Phone": "555"})),
            ]})),
        )
        .await;
    let got: Vec<Vec<String>> = r.json.as_array().unwrap().iter().map(codes).collect();
    assert_eq!(
        got,
        vec![
            vec![],
            vec!["ENTITY_IS_DELETED".to_string()],
            vec!["MALFORMED_ID".to_string()],
            vec!["MALFORMED_ID".to_string()],
            vec!["INVALID_FIELD_FOR_INSERT_UPDATE".to_string()],
            vec!["REQUIRED_FIELD_MISSING".to_string()],
            vec!["MISSING_ARGUMENT".to_string()],
        ],
        "{}",
        r.text
    );
    assert_eq!(
        r.json[4]["id"],
        json!(ok_id),
        "a failed update of an existing record names it"
    );
    assert_eq!(by_key(&api.sandbox, "ok")["Phone"], "555");
    // A unique value taken by another record.
    let r = api
        .call(
            Method::POST,
            "composite/sobjects",
            Some(json!({"records": [contact(json!({"LastName": "Copy", "Warehouse_Id__c": "ok"}))]})),
        )
        .await;
    assert_eq!(codes(&r.json[0]), ["DUPLICATE_VALUE"]);
}

#[tokio::test]
async fn null_clears_a_field_and_create_refuses_an_id() {
    let api = Api::start(SandboxConfig::default()).await;
    let r = api
        .upsert(
            "Warehouse_Id__c",
            false,
            vec![contact(
                json!({"Warehouse_Id__c": "n", "LastName": "N", "Phone": "1", "Upsell_Score__c": 0.25}),
            )],
        )
        .await;
    let id = r.json[0]["id"].as_str().unwrap().to_string();
    let r = api
        .call(
            Method::PATCH,
            "composite/sobjects",
            Some(json!({"records": [contact(json!({"id": id, "Phone": null}))]})),
        )
        .await;
    assert_eq!(r.json[0]["success"], true, "{}", r.text);
    let held = by_key(&api.sandbox, "n");
    assert!(held.get("Phone").is_none_or(Value::is_null), "{held:?}");
    assert_eq!(held["Upsell_Score__c"], json!(0.25), "other fields unchanged");
    let r = api
        .call(
            Method::POST,
            "composite/sobjects",
            Some(json!({"records": [contact(json!({"Id": id, "LastName": "X"}))]})),
        )
        .await;
    assert_eq!(r.json[0]["errors"][0]["message"], "cannot specify Id in an insert call");
}

#[tokio::test]
async fn more_than_200_records_is_a_400_and_malformed_bodies_too() {
    let api = Api::start(SandboxConfig::default()).await;
    let records: Vec<Value> = (0..201)
        .map(|i| contact(json!({"Warehouse_Id__c": format!("k{i}"), "LastName": "L"})))
        .collect();
    let r = api.upsert("Warehouse_Id__c", false, records.clone()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    let r = api
        .call(Method::POST, "composite/sobjects", Some(json!({"records": records})))
        .await;
    assert_eq!(r.status, 400);
    let ids: Vec<String> = (0..201).map(|_| "003000000000000AAA".to_string()).collect();
    let r = api
        .call(
            Method::DELETE,
            &format!("composite/sobjects?ids={}", ids.join(",")),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(api.sandbox.records("Contact").is_empty());
    let r = api.upsert("Warehouse_Id__c", false, records[..200].to_vec()).await;
    assert_eq!(
        (r.status, r.json.as_array().map(Vec::len)),
        (200, Some(200)),
        "200 is allowed"
    );

    let raw = api
        .http
        .post(format!("{}/services/data/{V}/composite/sobjects", api.sandbox.url()))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let r = read(raw).await;
    assert_eq!(
        (r.status, r.json[0]["errorCode"].as_str()),
        (400, Some("JSON_PARSER_ERROR"))
    );
    let r = api
        .call(
            Method::POST,
            "composite/sobjects",
            Some(json!({"records": [{"LastName": "no type"}]})),
        )
        .await;
    assert_eq!((r.status, r.json[0]["errorCode"].as_str()), (400, Some("INVALID_TYPE")));
}

#[tokio::test]
async fn all_or_none_rolls_back_every_record_and_marks_the_others() {
    let api = Api::start(SandboxConfig::default()).await;
    let first = api
        .upsert(
            "Warehouse_Id__c",
            false,
            vec![contact(json!({"Warehouse_Id__c": "old", "LastName": "Before"}))],
        )
        .await;
    let old_id = first.json[0]["id"].clone();
    let r = api
        .upsert(
            "Warehouse_Id__c",
            true,
            vec![
                contact(json!({"Warehouse_Id__c": "new", "LastName": "New"})),
                contact(json!({"Warehouse_Id__c": "old", "LastName": "After"})),
                contact(json!({"Warehouse_Id__c": "bad", "LastName": "Bad", "Customer_Segment__c": "Gold"})),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let res = r.json.as_array().unwrap();
    assert_eq!(codes(&res[0]), ["ALL_OR_NONE_OPERATION_ROLLED_BACK"]);
    assert!(res[0].get("id").is_none(), "a rolled-back create has no id: {}", res[0]);
    assert_eq!(codes(&res[1]), ["ALL_OR_NONE_OPERATION_ROLLED_BACK"]);
    assert_eq!(res[1]["id"], old_id, "a rolled-back update keeps its id");
    assert_eq!(codes(&res[2]), ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"]);
    let held = api.sandbox.records("Contact");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["LastName"], "Before");
    // The same without allOrNone: the valid ones are written.
    let r = api
        .upsert(
            "Warehouse_Id__c",
            false,
            vec![
                contact(json!({"Warehouse_Id__c": "new", "LastName": "New"})),
                contact(json!({"Warehouse_Id__c": "bad", "LastName": "Bad", "Customer_Segment__c": "Gold"})),
            ],
        )
        .await;
    assert_eq!(r.json[0]["success"], true);
    assert_eq!(api.sandbox.records("Contact").len(), 2);
    // Delete with allOrNone: a malformed id keeps the other.
    let new_id = r.json[0]["id"].as_str().unwrap();
    let d = api
        .call(
            Method::DELETE,
            &format!("composite/sobjects?ids={new_id},bogus&allOrNone=true"),
            None,
        )
        .await;
    assert_eq!(codes(&d.json[0]), ["ALL_OR_NONE_OPERATION_ROLLED_BACK"]);
    assert_eq!(
        d.json[1]["errors"][0],
        json!({"statusCode": "MALFORMED_ID", "message": "malformed id bogus", "fields": []})
    );
    assert_eq!(api.sandbox.records("Contact").len(), 2);
}

#[tokio::test]
async fn unable_to_lock_row_fails_single_records() {
    let api = Api::start(SandboxConfig::default()).await;
    api.sandbox.set_faults(Faults {
        lock_row_next: 1,
        ..Faults::default()
    });
    let r = api
        .upsert(
            "Warehouse_Id__c",
            false,
            vec![
                contact(json!({"Warehouse_Id__c": "l1", "LastName": "A"})),
                contact(json!({"Warehouse_Id__c": "l2", "LastName": "B"})),
            ],
        )
        .await;
    assert_eq!(codes(&r.json[0]), ["UNABLE_TO_LOCK_ROW"]);
    assert_eq!(r.json[1]["success"], true);
    assert_eq!(api.sandbox.records("Contact").len(), 1);
}

// ---------------------------------------------------------------- single-record upsert

#[tokio::test]
async fn single_record_upsert_answers_201_200_300_and_404() {
    let objects = r#"{"objects": [{"name": "Lead", "keyPrefix": "00Q", "fields": [
        {"name": "LastName", "type": "string", "length": 80, "nillable": false},
        {"name": "Ext__c", "type": "string", "externalId": true, "unique": true},
        {"name": "Loose__c", "type": "string", "externalId": true}]}],
        "records": {"Lead": [{"LastName": "A", "Loose__c": "same"}, {"LastName": "B", "Loose__c": "same"}]}}"#;
    let api = Api::start(SandboxConfig::default().with_objects_file(objects).unwrap()).await;
    let created = api
        .call(
            Method::PATCH,
            "sobjects/Lead/Ext__c/E-1",
            Some(json!({"LastName": "First"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("00Q"));
    assert_eq!(
        created.json,
        json!({"id": id, "success": true, "errors": [], "created": true})
    );
    let updated = api
        .call(
            Method::PATCH,
            "sobjects/Lead/Ext__c/E-1",
            Some(json!({"LastName": "Second"})),
        )
        .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.json,
        json!({"id": id, "success": true, "errors": [], "created": false})
    );
    let lead = api.call(Method::GET, &format!("sobjects/Lead/{id}"), None).await;
    assert_eq!(
        (lead.json["LastName"].as_str(), lead.json["Ext__c"].as_str()),
        (Some("Second"), Some("E-1"))
    );
    assert_eq!(lead.json["attributes"]["type"], "Lead");

    let several = api
        .call(
            Method::PATCH,
            "sobjects/Lead/Loose__c/same",
            Some(json!({"LastName": "C"})),
        )
        .await;
    assert_eq!(several.status, 300, "{}", several.text);
    assert_eq!(several.json.as_array().map(Vec::len), Some(2));
    let not_found = json!([{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]);
    for path in ["sobjects/Lead/Nope__c/x", "sobjects/Nope/Ext__c/x"] {
        let r = api.call(Method::PATCH, path, Some(json!({"LastName": "C"}))).await;
        assert_eq!((r.status, &r.json), (404, &not_found), "{path}");
    }
    let r = api
        .call(
            Method::PATCH,
            "sobjects/Lead/Ext__c/E-2?updateOnly=true",
            Some(json!({"LastName": "C"})),
        )
        .await;
    assert_eq!(r.status, 404, "updateOnly creates nothing");
    let r = api
        .call(
            Method::PATCH,
            "sobjects/Lead/Ext__c/E-3",
            Some(json!({"Ext__c": "E-3"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json[0]["errorCode"].as_str()),
        (400, Some("REQUIRED_FIELD_MISSING")),
        "{}",
        r.text
    );
    assert_eq!(api.sandbox.records("Lead").len(), 3);
    assert_eq!(api.sandbox.calls_to("sobject"), 8);
}

// ---------------------------------------------------------------- Bulk API 2.0

/// Polls a job until it ends; returns the states seen, in order, and the last JobInfo.
async fn wait_for_job(api: &Api, id: &str) -> (Vec<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states: Vec<String> = Vec::new();
    loop {
        let r = api.call(Method::GET, &format!("jobs/ingest/{id}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let state = r.json["state"].as_str().unwrap().to_string();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if ["JobComplete", "Failed", "Aborted"].contains(&state.as_str()) {
            return (states, r.json);
        }
        assert!(Instant::now() < deadline, "the job did not end: {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn results_csv(api: &Api, id: &str, which: &str) -> (u16, String, Option<String>) {
    let r = api.call(Method::GET, &format!("jobs/ingest/{id}/{which}/"), None).await;
    let content_type = r
        .headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    (r.status, r.text, content_type)
}

#[tokio::test]
async fn bulk_upsert_job_lifecycle_with_shuffled_results() {
    let api = Api::start(SandboxConfig {
        bulk_step_delay: Duration::from_millis(150),
        ..SandboxConfig::default()
    })
    .await;
    // An existing record, to be updated by the job.
    api.upsert(
        "Warehouse_Id__c",
        false,
        vec![contact(
            json!({"Warehouse_Id__c": "b0", "LastName": "Old", "Phone": "1"}),
        )],
    )
    .await;
    let job = api
        .call(
            Method::POST,
            "jobs/ingest",
            Some(
                json!({"object": "Contact", "externalIdFieldName": "Warehouse_Id__c", "operation": "upsert",
                        "contentType": "CSV", "lineEnding": "LF", "columnDelimiter": "COMMA"}),
            ),
        )
        .await;
    assert_eq!(job.status, 200, "{}", job.text);
    let info = &job.json;
    let id = info["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750"));
    assert_eq!(info["state"], "Open");
    assert_eq!(info["apiVersion"], json!(62.0));
    assert_eq!(
        info["contentUrl"],
        json!(format!("services/data/v62.0/jobs/ingest/{id}/batches"))
    );
    for key in [
        "operation",
        "object",
        "createdById",
        "createdDate",
        "systemModstamp",
        "externalIdFieldName",
        "concurrencyMode",
        "contentType",
        "jobType",
        "lineEnding",
        "columnDelimiter",
    ] {
        assert!(info.get(key).is_some(), "JobInfo key {key}: {info}");
    }
    let (early, _, _) = results_csv(&api, &id, "successfulResults").await;
    assert_eq!(early, 409, "no results before the job ends");

    let mut csv = String::from("Warehouse_Id__c,LastName,Phone,Customer_Segment__c\n");
    csv.push_str("b0,,#N/A,SMB\n"); // empty: unchanged; #N/A: null
    for i in 1..=40 {
        csv.push_str(&format!("b{i},\"Name, {i}\",555-{i},Enterprise\n"));
    }
    csv.push_str("bad,Bad,1,Gold\n");
    csv.push_str("nolast,,1,SMB\n");
    let content_url = info["contentUrl"]
        .as_str()
        .unwrap()
        .strip_prefix("services/data/v62.0/")
        .unwrap();
    let put = api.csv_put(content_url, &csv).await;
    assert_eq!((put.status, put.text.as_str()), (201, ""));
    let again = api.csv_put(content_url, &csv).await;
    assert_eq!(
        (again.status, again.json[0]["errorCode"].as_str()),
        (400, Some("BULK_API_ERROR"))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        api.call(Method::GET, &format!("jobs/ingest/{id}"), None).await.json["state"],
        "Open",
        "nothing happens before UploadComplete"
    );
    let closed = api
        .call(
            Method::PATCH,
            &format!("jobs/ingest/{id}"),
            Some(json!({"state": "UploadComplete"})),
        )
        .await;
    assert_eq!(
        (closed.status, closed.json["state"].as_str()),
        (200, Some("UploadComplete"))
    );
    let (states, done) = wait_for_job(&api, &id).await;
    assert_eq!(states, ["UploadComplete", "InProgress", "JobComplete"]);
    assert_eq!(
        (
            done["numberRecordsProcessed"].as_u64(),
            done["numberRecordsFailed"].as_u64()
        ),
        (Some(43), Some(2))
    );

    let (status, ok, content_type) = results_csv(&api, &id, "successfulResults").await;
    assert_eq!((status, content_type.as_deref()), (200, Some("text/csv")));
    let mut lines: Vec<&str> = ok.lines().collect();
    assert_eq!(
        lines.remove(0),
        r#""sf__Id","sf__Created","Warehouse_Id__c","LastName","Phone","Customer_Segment__c""#
    );
    assert_eq!(lines.len(), 41);
    let keys: Vec<String> = lines
        .iter()
        .map(|l| l.split(',').nth(2).unwrap().trim_matches('"').to_string())
        .collect();
    let in_order: Vec<String> = std::iter::once("b0".to_string())
        .chain((1..=40).map(|i| format!("b{i}")))
        .collect();
    assert_ne!(keys, in_order, "results are shuffled");
    let mut sorted = keys.clone();
    sorted.sort();
    let mut want = in_order.clone();
    want.sort();
    assert_eq!(sorted, want);
    let b0 = lines.iter().find(|l| l.contains("\"b0\"")).unwrap();
    assert!(b0.contains("\"false\""), "b0 was updated: {b0}");
    let b7 = lines.iter().find(|l| l.contains("\"b7\"")).unwrap();
    assert!(b7.contains("\"true\"") && b7.contains("\"Name, 7\""), "{b7}");

    let (_, failed, _) = results_csv(&api, &id, "failedResults").await;
    let mut lines: Vec<&str> = failed.lines().collect();
    assert_eq!(
        lines.remove(0),
        r#""sf__Id","sf__Error","Warehouse_Id__c","LastName","Phone","Customer_Segment__c""#
    );
    lines.sort();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with(r#""","INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(r#""","REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --""#),
        "{}",
        lines[1]
    );
    let (_, unprocessed, _) = results_csv(&api, &id, "unprocessedrecords").await;
    assert_eq!(
        unprocessed,
        "\"Warehouse_Id__c\",\"LastName\",\"Phone\",\"Customer_Segment__c\"\n"
    );

    let b0 = by_key(&api.sandbox, "b0");
    assert_eq!(b0["LastName"], "Old", "an empty cell leaves the field as it was");
    assert!(b0.get("Phone").is_none(), "#N/A cleared it: {b0:?}");
    assert_eq!(b0["Customer_Segment__c"], "SMB");
    assert_eq!(by_key(&api.sandbox, "b7")["LastName"], "Name, 7");
    assert_eq!(api.sandbox.records("Contact").len(), 41);
    assert!(api.sandbox.calls_to("bulk") >= 9);
}

#[tokio::test]
async fn bulk_jobs_fail_on_bad_data_and_can_be_aborted() {
    let api = Api::start(SandboxConfig {
        bulk_step_delay: Duration::from_millis(20),
        ..SandboxConfig::default()
    })
    .await;
    let create = |body: Value| api.call(Method::POST, "jobs/ingest", Some(body));
    let r = create(json!({"object": "Contact", "operation": "upsert"})).await;
    assert_eq!(
        (r.status, r.json[0]["errorCode"].as_str()),
        (400, Some("INVALIDJOB")),
        "upsert needs an external ID"
    );
    let r = create(json!({"object": "Nope", "operation": "insert"})).await;
    assert_eq!(r.status, 400);
    let r = create(json!({"object": "Contact", "operation": "merge"})).await;
    assert_eq!(r.status, 400);

    // CRLF data on an LF job fails the job.
    let job = create(json!({"object": "Contact", "operation": "insert"})).await;
    let id = job.json["id"].as_str().unwrap().to_string();
    let put = api
        .csv_put(
            &format!("jobs/ingest/{id}/batches"),
            "LastName,Email\r\nA,a@example.com\r\n",
        )
        .await;
    assert_eq!(put.status, 201);
    api.call(
        Method::PATCH,
        &format!("jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    let (_, info) = wait_for_job(&api, &id).await;
    assert_eq!(info["state"], "Failed");
    assert!(info["errorMessage"].as_str().unwrap().contains("LineEnding"), "{info}");
    let (_, unprocessed, _) = results_csv(&api, &id, "unprocessedrecords").await;
    assert_eq!(unprocessed.lines().count(), 2, "{unprocessed}");

    // An unknown column fails the job; a pipe-delimited one is read with its delimiter.
    let job = create(json!({"object": "Contact", "operation": "insert", "columnDelimiter": "PIPE"})).await;
    let id = job.json["id"].as_str().unwrap().to_string();
    api.csv_put(&format!("jobs/ingest/{id}/batches"), "LastName|Nope__c\nA|1\n")
        .await;
    api.call(
        Method::PATCH,
        &format!("jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    let (_, info) = wait_for_job(&api, &id).await;
    assert_eq!(info["errorMessage"], "InvalidBatch : Field name not found : Nope__c");

    // Aborted before closing: nothing is processed.
    let job = create(json!({"object": "Contact", "operation": "insert"})).await;
    let id = job.json["id"].as_str().unwrap().to_string();
    api.csv_put(&format!("jobs/ingest/{id}/batches"), "LastName\nA\nB\n")
        .await;
    let r = api
        .call(
            Method::PATCH,
            &format!("jobs/ingest/{id}"),
            Some(json!({"state": "Aborted"})),
        )
        .await;
    assert_eq!(r.json["state"], "Aborted");
    let (_, unprocessed, _) = results_csv(&api, &id, "unprocessedrecords").await;
    assert_eq!(unprocessed, "\"LastName\"\n\"A\"\n\"B\"\n");
    let wrong_type = api
        .http
        .put(format!(
            "{}/services/data/{V}/jobs/ingest/{id}/batches",
            api.sandbox.url()
        ))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert!(api.sandbox.records("Contact").is_empty());

    // Delete by Id, and a job that is gone is 404.
    let seeded = api
        .sandbox
        .insert("Contact", vec![json!({"LastName": "X"}).as_object().unwrap().clone()])
        .unwrap();
    let job = create(json!({"object": "Contact", "operation": "delete"})).await;
    let id = job.json["id"].as_str().unwrap().to_string();
    api.csv_put(
        &format!("jobs/ingest/{id}/batches"),
        &format!("Id\n{}\n003000000000000AAA\n", seeded[0]),
    )
    .await;
    api.call(
        Method::PATCH,
        &format!("jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    let (_, info) = wait_for_job(&api, &id).await;
    assert_eq!(
        (
            info["numberRecordsProcessed"].as_u64(),
            info["numberRecordsFailed"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(api.sandbox.records("Contact").is_empty());
    assert_eq!(
        api.call(Method::DELETE, &format!("jobs/ingest/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        api.call(Method::GET, &format!("jobs/ingest/{id}"), None).await.status,
        404
    );
}

// ---------------------------------------------------------------- SOQL

#[tokio::test]
async fn soql_pages_through_results_and_filters_on_last_modified_date() {
    let api = Api::start(SandboxConfig {
        query_page_size: 4,
        ..SandboxConfig::default()
    })
    .await;
    let records: Vec<Value> = (0..10)
        .map(|i| {
            contact(json!({"Warehouse_Id__c": format!("q{i}"), "LastName": format!("L{i}"), "Upsell_Score__c": i}))
        })
        .collect();
    api.upsert("Warehouse_Id__c", false, records).await;

    let r = api
        .query("SELECT Id, LastName, Upsell_Score__c FROM Contact ORDER BY Upsell_Score__c DESC")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["totalSize"].as_u64(), r.json["done"].as_bool()),
        (Some(10), Some(false))
    );
    let mut names: Vec<String> = Vec::new();
    let mut page = r.json;
    let mut pages = 1;
    loop {
        for rec in page["records"].as_array().unwrap() {
            assert_eq!(rec["attributes"]["type"], "Contact");
            assert!(rec["attributes"]["url"]
                .as_str()
                .unwrap()
                .starts_with("/services/data/v62.0/sobjects/Contact/003"));
            let keys: Vec<&String> = rec.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["attributes", "Id", "LastName", "Upsell_Score__c"]);
            names.push(rec["LastName"].as_str().unwrap().to_string());
        }
        if page["done"] == true {
            assert!(page.get("nextRecordsUrl").is_none_or(Value::is_null));
            break;
        }
        let next = page["nextRecordsUrl"]
            .as_str()
            .expect("nextRecordsUrl while not done")
            .to_string();
        assert!(next.starts_with("/services/data/v62.0/query/"), "{next}");
        page = api.call(Method::GET, &next, None).await.json;
        pages += 1;
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..10).rev().map(|i| format!("L{i}")).collect();
    assert_eq!(names, want);
    assert_eq!(api.sandbox.calls_to("query"), 3, "each page is a call");

    // LastModifiedDate: only what changed after the watermark.
    let all = api
        .query("SELECT Id, LastModifiedDate FROM Contact ORDER BY LastModifiedDate DESC LIMIT 1")
        .await;
    let watermark = all.json["records"][0]["LastModifiedDate"].as_str().unwrap().to_string();
    assert!(watermark.ends_with("+0000") && watermark.len() == 28, "{watermark}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    api.upsert(
        "Warehouse_Id__c",
        false,
        vec![contact(json!({"Warehouse_Id__c": "q3", "LastName": "Changed"}))],
    )
    .await;
    let changed = api
        .query(&format!(
            "SELECT Id, LastName FROM Contact WHERE LastModifiedDate > {watermark}"
        ))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.json["totalSize"], 1);
    assert_eq!(changed.json["records"][0]["LastName"], "Changed");
    let z = watermark.replace(".000+0000", "Z");
    let same = api
        .query(&format!(
            "SELECT Id FROM Contact WHERE LastModifiedDate > {z} AND Upsell_Score__c >= 3"
        ))
        .await;
    assert!(same.json["totalSize"].as_u64().unwrap() <= 1, "{}", same.text);

    // A quoted datetime literal is refused like Salesforce refuses it.
    let quoted = api
        .query(&format!(
            "SELECT Id FROM Contact WHERE LastModifiedDate > '{watermark}'"
        ))
        .await;
    assert_eq!(
        (quoted.status, quoted.json[0]["errorCode"].as_str()),
        (400, Some("INVALID_FIELD"))
    );
    let like = api
        .query("SELECT COUNT() FROM Contact WHERE LastName LIKE 'l%' AND NOT LastName = 'L1'")
        .await;
    assert_eq!(like.json["totalSize"], 8, "{}", like.text);
    let r = api.query("SELECT Id FROM Contact WHERE").await;
    assert_eq!(
        (r.status, r.json[0]["errorCode"].as_str()),
        (400, Some("MALFORMED_QUERY"))
    );
    let count = api
        .query("SELECT COUNT() FROM Contact WHERE Warehouse_Id__c IN ('q1', 'q2', 'zz')")
        .await;
    assert_eq!(count.json, json!({"totalSize": 2, "done": true, "records": []}));
    let r = api.query("SELECT Id, Nope__c FROM Contact").await;
    assert_eq!(
        (r.status, r.json[0]["errorCode"].as_str()),
        (400, Some("INVALID_FIELD"))
    );
    let r = api.query("SELECT Id FROM Nope").await;
    assert_eq!((r.status, r.json[0]["errorCode"].as_str()), (400, Some("INVALID_TYPE")));
    let r = api.call(Method::GET, "query/01gnope-2000", None).await;
    assert_eq!(r.json[0]["errorCode"], "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn seeded_records_keep_their_ids_and_timestamps() {
    let mut config = SandboxConfig::default();
    // A 15-character id is stored in its 18-character form.
    let seeded = json!({"Id": "0035g000001AbCd", "LastName": "Seed", "Crm_Id__c": "0035g000001AbCdAAK",
                        "LastModifiedDate": "2020-01-01T00:00:00Z"});
    config
        .records
        .insert("Contact".into(), vec![seeded.as_object().unwrap().clone()]);
    let api = Api::start(config).await;
    let held = api.sandbox.records("Contact");
    assert_eq!(held[0]["Id"], "0035g000001AbCdAAK");
    let r = api
        .query("SELECT Id, LastModifiedDate FROM Contact WHERE LastModifiedDate < 2021-01-01T00:00:00Z")
        .await;
    assert_eq!(r.json["records"][0]["LastModifiedDate"], "2020-01-01T00:00:00.000+0000");
    // An update by that id works like any.
    let r = api
        .call(
            Method::PATCH,
            "composite/sobjects",
            Some(json!({"records": [contact(json!({"id": "0035g000001AbCdAAK", "Churn_Risk__c": 12.345}))]})),
        )
        .await;
    assert_eq!(r.json[0]["success"], true, "{}", r.text);
    assert_eq!(api.sandbox.records("Contact")[0]["Churn_Risk__c"], json!(12.35));
    let bad = SandboxConfig::default();
    let mut bad = bad;
    bad.records.insert(
        "Contact".into(),
        vec![json!({"FirstName": "no last"}).as_object().unwrap().clone()],
    );
    let err = Sandbox::start("127.0.0.1:0", bad)
        .await
        .err()
        .expect("an invalid seed refuses to start");
    assert!(err.contains("LastName"), "{err}");
}

// ---------------------------------------------------------------- `ebb sandbox`

#[test]
fn ebb_sandbox_serves_the_token_endpoint_and_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.json");
    std::fs::write(
        &objects,
        r#"{"objects": [{"name": "Lead", "keyPrefix": "00Q", "fields": [{"name": "LastName", "type": "string"}]}]}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["sandbox", "--port", "0", "--objects"])
        .arg(&objects)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let url = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("`ebb sandbox` exited before printing its URL: {printed}");
        }
        printed.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("instance_url") {
            break u.trim().to_string();
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        printed.push_str(&line);
    }
    assert!(
        printed.contains("client_id      ebb-sandbox") && printed.contains("client_secret  ebb-sandbox"),
        "{printed}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (token, describe) = rt.block_on(async {
        let http = ebb::http::client().unwrap();
        let r = http
            .post(format!("{url}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&client_id=ebb-sandbox&client_secret=ebb-sandbox")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap().to_string();
        let d = http
            .get(format!("{url}/services/data/v62.0/sobjects/Lead/describe"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (token, d.status().as_u16())
    });
    assert!(!token.is_empty());
    assert_eq!(describe, 200, "--objects replaced the objects");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`ebb sandbox` did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("POST /services/oauth2/token -> 200"),
        "one line per request: {log}"
    );
    assert!(
        log.contains("GET /services/data/v62.0/sobjects/Lead/describe -> 200"),
        "{log}"
    );
}

// ---------------------------------------------------------------- what real clients send

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

#[tokio::test]
async fn resource_names_match_whatever_their_case_and_trailing_slashes_are_accepted() {
    let api = Api::start(SandboxConfig {
        bulk_step_delay: Duration::from_millis(10),
        ..SandboxConfig::default()
    })
    .await;
    // simple-salesforce's create: POST …/sobjects/Contact/ (a trailing slash).
    let r = api
        .call(Method::POST, "SObjects/contact/", Some(json!({"LastName": "Case"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    for path in [
        "sobjects/CONTACT/DESCRIBE/",
        "sobjects/Contact/describe",
        "Sobjects/contact/Describe",
    ] {
        let r = api.call(Method::GET, path, None).await;
        assert_eq!(
            (r.status, r.json["name"].as_str()),
            (200, Some("Contact")),
            "{path}: {}",
            r.text
        );
    }
    let r = api.call(Method::GET, &format!("sobjects/contact/{id}/"), None).await;
    assert_eq!(
        (r.status, r.json["LastName"].as_str()),
        (200, Some("Case")),
        "{}",
        r.text
    );
    assert_eq!(r.json["attributes"]["type"], "Contact");
    let r = api
        .call(
            Method::PATCH,
            &format!("SOBJECTS/Contact/{id}/"),
            Some(json!({"FirstName": "Upper"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    for path in [
        "sobjects/",
        "limits/",
        "Limits",
        "QUERY/?q=SELECT+Id+FROM+contact",
        "query/?q=SELECT+Id+FROM+Contact",
    ] {
        let r = api.call(Method::GET, path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let r = api
        .call(
            Method::PATCH,
            "Composite/SObjects/contact/crm_id__c",
            Some(json!({"records": [contact(json!({"Crm_Id__c": "C-1", "LastName": "Coll"}))]})),
        )
        .await;
    assert_eq!(
        (r.status, r.json[0]["success"].as_bool()),
        (200, Some(true)),
        "{}",
        r.text
    );
    // Bulk 2.0: the guide writes `unprocessedrecords/`, simple-salesforce `unprocessedRecords`.
    let job = api
        .call(
            Method::POST,
            "jobs/Ingest/",
            Some(json!({"object": "Contact", "operation": "insert", "contentType": "CSV", "lineEnding": "LF"})),
        )
        .await;
    assert_eq!(job.status, 200, "{}", job.text);
    let job_id = job.json["id"].as_str().unwrap().to_string();
    let r = api
        .csv_put(&format!("jobs/ingest/{job_id}/Batches/"), "LastName\nBulk\n")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = api
        .call(
            Method::PATCH,
            &format!("jobs/ingest/{job_id}/"),
            Some(json!({"state": "UploadComplete"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, info) = wait_for_job(&api, &job_id).await;
    assert_eq!(info["state"], "JobComplete");
    for which in [
        "unprocessedRecords",
        "unprocessedrecords/",
        "unprocessedRecords/",
        "SuccessfulResults",
        "failedresults/",
    ] {
        let r = api
            .call(Method::GET, &format!("jobs/ingest/{job_id}/{which}"), None)
            .await;
        assert_eq!(r.status, 200, "{which}: {}", r.text);
    }
    // What is not a resource stays 404, and names are not made up.
    for path in [
        "sobjects/Nope/describe/".to_string(),
        "sobjectz/".to_string(),
        format!("jobs/ingest/{job_id}/unprocessed"),
    ] {
        let r = api.call(Method::GET, &path, None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn query_all_includes_deleted_records_with_is_deleted() {
    let api = Api::start(SandboxConfig {
        query_page_size: 1,
        ..SandboxConfig::default()
    })
    .await;
    let mut ids = Vec::new();
    for name in ["Kept", "Gone"] {
        let r = api
            .call(Method::POST, "sobjects/Contact", Some(json!({"LastName": name})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    let r = api
        .call(Method::DELETE, &format!("sobjects/Contact/{}", ids[1]), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let q = "SELECT Id, LastName, IsDeleted, LastModifiedDate, SystemModstamp FROM Contact";
    let live = api.query(q).await;
    assert_eq!(live.json["totalSize"], 1, "{}", live.text);
    // queryAll: both, in pages, the deleted one flagged.
    let encoded: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let first = api.call(Method::GET, &format!("queryAll/?q={encoded}"), None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        (first.json["totalSize"].as_u64(), first.json["done"].as_bool()),
        (Some(2), Some(false))
    );
    let next = first.json["nextRecordsUrl"].as_str().unwrap().to_string();
    let second = api.call(Method::GET, &next, None).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json["done"], true);
    let rows: Vec<&Value> = first.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.json["records"].as_array().unwrap())
        .collect();
    let shown: Vec<(&str, bool)> = rows
        .iter()
        .map(|r| (r["LastName"].as_str().unwrap(), r["IsDeleted"].as_bool().unwrap()))
        .collect();
    assert_eq!(shown, [("Kept", false), ("Gone", true)]);
    let gone = rows[1];
    assert_eq!(gone["Id"], json!(ids[1]));
    assert_eq!(
        gone["attributes"]["url"],
        json!(format!("/services/data/{V}/sobjects/Contact/{}", ids[1]))
    );
    assert!(gone["SystemModstamp"].as_str().unwrap() >= gone["LastModifiedDate"].as_str().unwrap());
    let r = api
        .call(
            Method::GET,
            "queryAll?q=SELECT+Id+FROM+Contact+WHERE+IsDeleted+=+true",
            None,
        )
        .await;
    assert_eq!(r.json["totalSize"], 1, "{}", r.text);
    assert_eq!(r.json["records"][0]["Id"], json!(ids[1]));
    // Still deleted for the write and read resources.
    let r = api
        .call(Method::GET, &format!("sobjects/Contact/{}", ids[1]), None)
        .await;
    assert_eq!(r.status, 404);
    let r = api
        .call(
            Method::PATCH,
            &format!("sobjects/Contact/{}", ids[1]),
            Some(json!({"FirstName": "x"})),
        )
        .await;
    assert_eq!(r.json[0]["errorCode"], "ENTITY_IS_DELETED", "{}", r.text);
    // A delete rolled back by allOrNone leaves the record live and out of the bin.
    let r = api
        .call(
            Method::DELETE,
            &format!("composite/sobjects?ids={},003000000000000AAA&allOrNone=true", ids[0]),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json[0]["success"], false, "{}", r.text);
    let r = api
        .call(
            Method::GET,
            "queryAll?q=SELECT+Id+FROM+Contact+WHERE+IsDeleted+=+true",
            None,
        )
        .await;
    assert_eq!(r.json["totalSize"], 1, "{}", r.text);
    assert_eq!(api.query("SELECT Id FROM Contact").await.json["totalSize"], 1);
}

/// `2024-01-31T09:30:15+00:00` URL-encoded as simple-salesforce sends it.
fn replication_time(d: chrono::DateTime<chrono::Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
        .replace(':', "%3A")
        .replace('+', "%2B")
}

#[tokio::test]
async fn updated_and_deleted_list_the_changes_of_a_window_by_system_modstamp() {
    use chrono::{Duration as D, Timelike, Utc};
    let now = Utc::now();
    // Seeded two hours ago, 30 seconds into a minute.
    let then = (now - D::hours(2)).with_second(30).unwrap().with_nanosecond(0).unwrap();
    let stamp = then.to_rfc3339();
    let mut config = SandboxConfig::default();
    let seed: Vec<Map<String, Value>> = ["Deleted", "Updated", "Untouched"]
        .iter()
        .map(|name| {
            json!({"LastName": name, "CreatedDate": stamp, "LastModifiedDate": stamp})
                .as_object()
                .unwrap()
                .clone()
        })
        .collect();
    config.records.insert("Contact".into(), seed);
    let api = Api::start(config).await;
    let id_of = |name: &str| -> String {
        api.sandbox
            .records("Contact")
            .into_iter()
            .find(|r| r["LastName"] == name)
            .unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (deleted, updated, untouched) = (id_of("Deleted"), id_of("Updated"), id_of("Untouched"));
    let r = api
        .call(Method::DELETE, &format!("sobjects/Contact/{deleted}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = api
        .call(
            Method::PATCH,
            &format!("sobjects/Contact/{updated}"),
            Some(json!({"FirstName": "Now"})),
        )
        .await;
    assert_eq!(r.status, 204);
    let created = api
        .call(Method::POST, "sobjects/Contact/", Some(json!({"LastName": "Created"})))
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let window = |what: &str, start: chrono::DateTime<Utc>, end: chrono::DateTime<Utc>| {
        format!(
            "sobjects/Contact/{what}/?start={}&end={}",
            replication_time(start),
            replication_time(end)
        )
    };
    // The last hour, to an end in the future: what was created or updated, not deleted.
    let r = api
        .call(
            Method::GET,
            &window("updated", now - D::hours(1), now + D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: BTreeSet<&str> = r.json["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([updated.as_str(), created.as_str()]));
    let covered = r.json["latestDateCovered"].as_str().unwrap();
    assert!(covered.ends_with(":00.000+0000"), "{covered}");
    let covered = chrono::DateTime::parse_from_str(covered, "%Y-%m-%dT%H:%M:%S%.3f%z").unwrap();
    assert!(covered <= Utc::now() && covered > now - D::minutes(2), "{covered}");
    // Two hours ago: the seconds of `start` are ignored (12:30:45 is 12:30), so the record
    // seeded at :30 is in; the updated one moved out, the deleted one is not listed.
    let r = api
        .call(
            Method::GET,
            &window("updated", then + D::seconds(15), now - D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.json["ids"], json!([untouched]), "{}", r.text);
    assert_eq!(
        r.json["latestDateCovered"],
        json!(format!("{}:00.000+0000", (now - D::hours(1)).format("%Y-%m-%dT%H:%M")))
    );
    // Deleted: the record and when, from the recycle bin.
    let r = api
        .call(
            Method::GET,
            &window("deleted", now - D::hours(1), now + D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = r.json["deletedRecords"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", r.text);
    assert_eq!(list[0]["id"], json!(deleted));
    let when = list[0]["deletedDate"].as_str().unwrap();
    assert!(when > stamp.as_str() && when.ends_with("+0000"), "{when}");
    assert!(r.json["earliestDateAvailable"]
        .as_str()
        .unwrap()
        .ends_with(":00.000+0000"));
    assert!(r.json["latestDateCovered"].is_string());
    let r = api
        .call(
            Method::GET,
            &window("deleted", now - D::hours(3), now - D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.json["deletedRecords"], json!([]), "{}", r.text);
    // An unencoded `+` (a space once decoded) and the object's name in any case.
    let r = api
        .call(
            Method::GET,
            &format!(
                "SObjects/contact/Updated?start={}&end={}",
                (now - D::hours(1)).format("%Y-%m-%dT%H:%M:%S+00:00"),
                (now + D::hours(1)).format("%Y-%m-%dT%H:%M:%S+00:00")
            ),
            None,
        )
        .await;
    assert_eq!(r.json["ids"].as_array().map(Vec::len), Some(2), "{}", r.text);
    // Windows Salesforce refuses.
    for (path, code) in [
        // :30 and :50 of one minute: the same minute once the seconds are dropped.
        (
            window("updated", then, then + D::seconds(20)),
            "INVALID_REPLICATION_DATE",
        ),
        (window("updated", now, now - D::hours(1)), "INVALID_REPLICATION_DATE"),
        (window("updated", now - D::days(31), now), "INVALID_REPLICATION_DATE"),
        (window("deleted", now - D::days(16), now), "INVALID_REPLICATION_DATE"),
        (
            "sobjects/Contact/updated/?start=yesterday&end=today".to_string(),
            "INVALID_REPLICATION_DATE",
        ),
        ("sobjects/Contact/deleted/".to_string(), "MISSING_ARGUMENT"),
    ] {
        let r = api.call(Method::GET, &path, None).await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some(code)),
            "{path}: {}",
            r.text
        );
    }
    let r = api
        .call(Method::GET, &window("updated", now - D::days(29), now), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api
        .call(Method::GET, &window("updated", now - D::hours(1), now), None)
        .await;
    let r2 = api
        .call(Method::GET, "sobjects/Nope/updated/?start=x&end=y", None)
        .await;
    assert_eq!((r.status, r2.status), (200, 404));
}

#[tokio::test]
async fn basic_information_and_global_describe_name_the_objects() {
    let api = Api::start(SandboxConfig::default()).await;
    let r = api.call(Method::GET, "sobjects/Contact/", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.json["objectDescribe"];
    assert_eq!(
        (d["name"].as_str(), d["keyPrefix"].as_str()),
        (Some("Contact"), Some("003"))
    );
    assert_eq!(d["replicateable"], true);
    assert_eq!(
        d["urls"]["describe"],
        json!(format!("/services/data/{V}/sobjects/Contact/describe"))
    );
    assert_eq!(r.json["recentItems"], json!([]));
    let r = api.call(Method::GET, "sobjects/", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<&str> = r.json["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Contact"]);
    assert_eq!(api.call(Method::GET, "sobjects/Lead/", None).await.status, 404);
}

#[tokio::test]
async fn a_bulk_hard_delete_skips_the_recycle_bin_but_not_the_delete_log() {
    use chrono::{Duration as D, Utc};
    let api = Api::start(SandboxConfig {
        bulk_step_delay: Duration::from_millis(10),
        ..SandboxConfig::default()
    })
    .await;
    let mut ids = Vec::new();
    for name in ["Hard", "Soft"] {
        let r = api
            .call(Method::POST, "sobjects/Contact", Some(json!({"LastName": name})))
            .await;
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    for (operation, id) in [("hardDelete", &ids[0]), ("delete", &ids[1])] {
        let job = api
            .call(
                Method::POST,
                "jobs/ingest",
                Some(json!({"object": "Contact", "operation": operation, "contentType": "CSV"})),
            )
            .await;
        let job_id = job.json["id"].as_str().unwrap().to_string();
        let r = api
            .csv_put(&format!("jobs/ingest/{job_id}/batches"), &format!("Id\n{id}\n"))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        api.call(
            Method::PATCH,
            &format!("jobs/ingest/{job_id}"),
            Some(json!({"state": "UploadComplete"})),
        )
        .await;
        let (_, info) = wait_for_job(&api, &job_id).await;
        assert_eq!(
            (
                info["numberRecordsProcessed"].as_u64(),
                info["numberRecordsFailed"].as_u64()
            ),
            (Some(1), Some(0))
        );
    }
    let r = api
        .call(
            Method::GET,
            "queryAll?q=SELECT+Id+FROM+Contact+WHERE+IsDeleted+=+true",
            None,
        )
        .await;
    assert_eq!(r.json["records"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.json["records"][0]["Id"], json!(ids[1]));
    let now = Utc::now();
    let r = api
        .call(
            Method::GET,
            &format!(
                "sobjects/Contact/deleted/?start={}&end={}",
                replication_time(now - D::hours(1)),
                replication_time(now + D::hours(1))
            ),
            None,
        )
        .await;
    let listed: BTreeSet<&str> = r.json["deletedRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, BTreeSet::from([ids[0].as_str(), ids[1].as_str()]), "{}", r.text);
    let r = api
        .call(Method::DELETE, &format!("sobjects/Contact/{}", ids[0]), None)
        .await;
    assert_eq!(
        (r.status, r.json[0]["errorCode"].as_str()),
        (404, Some("ENTITY_IS_DELETED"))
    );
}

//! The sandbox's HubSpot OAuth (`src/sandbox/hubspot/oauth.rs`), its faults (latency,
//! every access token expired at once, 503 from the token endpoint), and the objects beside
//! contacts and companies: `deals` and the custom object `p_subscriptions` (`2-1234567`).

use super::*;

impl Hub {
    /// `POST /oauth/v1/token` with `form`, form-urlencoded.
    async fn token(&self, form: &[(&str, &str)]) -> Resp {
        let r = self
            .http
            .post(format!("{}/oauth/v1/token", self.sandbox.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        Resp::read(r).await
    }

    async fn refresh(&self) -> Resp {
        let (id, secret, refresh) = self.sandbox.hubspot().oauth_app();
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("refresh_token", refresh.as_str()),
        ])
        .await
    }
}

#[tokio::test]
async fn hubspot_refresh_token_grant_issues_access_tokens_the_api_accepts_until_they_expire() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let (id, secret, refresh) = hub.sandbox.hubspot().oauth_app();
    let r = hub.refresh().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["token_type"], "bearer");
    assert_eq!(r.json["expires_in"], 1800, "HubSpot's 30 minutes");
    assert_eq!(
        r.json["refresh_token"],
        refresh.as_str(),
        "HubSpot answers the same refresh token"
    );
    let access = r.json["access_token"].as_str().unwrap().to_string();
    let ok = hub
        .call_with(reqwest::Method::GET, "/crm/v3/objects/contacts", None, Some(&access))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(hub.sandbox.hubspot().calls(), 1, "the token endpoint is not counted");

    // Each wrong field: 400 in HubSpot's OAuth shape, its own code.
    for (form, code) in [
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("refresh_token", "nope"),
            ],
            "BAD_REFRESH_TOKEN",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "nope"),
                ("client_secret", secret.as_str()),
                ("refresh_token", refresh.as_str()),
            ],
            "BAD_CLIENT_ID",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", id.as_str()),
                ("client_secret", "nope"),
                ("refresh_token", refresh.as_str()),
            ],
            "BAD_CLIENT_SECRET",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("code", "x"),
            ],
            "BAD_GRANT_TYPE",
        ),
    ] {
        let r = hub.token(&form).await;
        assert_eq!((r.status, r.json["status"].as_str()), (400, Some(code)), "{}", r.text);
        assert!(
            r.json["message"].is_string() && r.json["correlationId"].is_string(),
            "{}",
            r.text
        );
    }
    assert_eq!(hub.sandbox.hubspot().token_requests(), 5);

    // Expired: 401 EXPIRED_AUTHENTICATION with the time it expired; the private-app token
    // is untouched; a new access token works.
    hub.sandbox.hubspot().expire_tokens();
    let expired = hub
        .call_with(reqwest::Method::GET, "/crm/v3/objects/contacts", None, Some(&access))
        .await;
    assert_eq!(expired.status, 401, "{}", expired.text);
    assert_eq!(expired.json["category"], "EXPIRED_AUTHENTICATION");
    assert!(
        expired.json["message"].as_str().is_some_and(|m| m
            .starts_with("The OAuth token used to make this call expired ")
            && m.ends_with(" second(s) ago.")),
        "{}",
        expired.text
    );
    assert!(expired.json["context"]["expire time"][0]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        hub.get("/crm/v3/objects/contacts").await.status,
        200,
        "the private-app token still works"
    );
    let again = hub.refresh().await;
    let fresh = again.json["access_token"].as_str().unwrap();
    assert_ne!(fresh, access);
    let ok = hub
        .call_with(reqwest::Method::GET, "/crm/v3/objects/contacts", None, Some(fresh))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(hub.sandbox.hubspot().unauthorized(), 1);

    // A short life: the token lapses by itself.
    hub.sandbox.hubspot().set_token_lifetime(Duration::from_millis(1200));
    let short = hub.refresh().await;
    assert_eq!(short.json["expires_in"], 1);
    let short = short.json["access_token"].as_str().unwrap().to_string();
    let call = || hub.call_with(reqwest::Method::GET, "/crm/v3/objects/contacts", None, Some(&short));
    assert_eq!(call().await.status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(call().await.json["category"], "EXPIRED_AUTHENTICATION");
}

#[tokio::test]
async fn hubspot_refresh_tokens_rotate_when_configured_and_faults_apply() {
    let hub = Hub::start(SandboxConfig {
        hubspot: HubSpotConfig {
            rotate_refresh_tokens: true,
            ..HubSpotConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let first = hub.refresh().await;
    assert_eq!(first.status, 200, "{}", first.text);
    let rotated = first.json["refresh_token"].as_str().unwrap().to_string();
    let (id, secret, configured) = hub.sandbox.hubspot().oauth_app();
    assert_ne!(rotated, configured);
    assert_eq!(
        hub.refresh().await.json["status"],
        "BAD_REFRESH_TOKEN",
        "the used one is forgotten"
    );
    let next = hub
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("refresh_token", rotated.as_str()),
        ])
        .await;
    assert_eq!(next.status, 200, "{}", next.text);

    // 503 from the token endpoint, then served again.
    hub.sandbox.hubspot().fail_token_requests(1);
    let rotated = next.json["refresh_token"].as_str().unwrap().to_string();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
        ("refresh_token", rotated.as_str()),
    ];
    assert_eq!(hub.token(&form).await.status, 503);
    assert_eq!(hub.token(&form).await.status, 200);

    // Latency on every request, the token endpoint's too.
    hub.sandbox.hubspot().set_latency(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(hub.get("/crm/v3/objects/contacts").await.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    hub.refresh().await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn hubspot_deals_and_the_custom_object_are_served_by_every_name() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let props = hub.get("/crm/v3/properties/deals").await;
    assert_eq!(props.status, 200, "{}", props.text);
    let list = props.json["results"].as_array().unwrap();
    let prop = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(prop("amount")["type"], "number");
    assert_eq!(prop("closedate")["type"], "datetime");
    assert_eq!(prop("dealstage")["type"], "enumeration");
    assert_eq!(prop("warehouse_id")["hasUniqueValue"], true);
    assert_eq!(
        prop("hs_lastmodifieddate")["modificationMetadata"]["readOnlyValue"],
        true
    );
    assert_eq!(prop("dealname")["groupName"], "dealinformation");
    let by_id = hub.get("/crm/v3/properties/0-3").await;
    assert_eq!(by_id.json, props.json, "deals by their objectTypeId");

    let deal = |wid: &str, stage: &str| {
        json!({"idProperty": "warehouse_id", "id": wid, "objectWriteTraceId": wid,
               "properties": {"dealname": format!("Deal {wid}"), "amount": "1200.5", "dealstage": stage,
                              "closedate": "2024-06-30T00:00:00Z", "pipeline": "default"}})
    };
    let r = hub
        .batch("deals", "upsert", vec![deal("D-1", "closedwon"), deal("D-2", "won")])
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.json["numErrors"], 1, "`won` is not a deal stage: {}", r.text);
    let d1 = &r.json["results"][0];
    assert_eq!(d1["properties"]["dealstage"], "closedwon", "{}", r.text);
    assert!(d1["properties"]["hs_lastmodifieddate"].is_string());
    assert!(d1["properties"]["createdate"].is_string());

    // The custom object: written by its `p_` name, read by its objectTypeId.
    let sub = json!({"idProperty": "subscription_id", "id": "S-1",
                     "properties": {"plan": "Enterprise", "mrr": "990", "status": "active", "started_on": "2024-01-01"}});
    let r = hub.batch("p_subscriptions", "upsert", vec![sub.clone()]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["results"][0]["new"], true);
    let again = hub.batch("2-1234567", "upsert", vec![sub]).await;
    assert_eq!(
        again.json["results"][0]["new"], false,
        "the same record by either name: {}",
        again.text
    );
    let listed = hub
        .get("/crm/v3/objects/2-1234567?properties=plan,subscription_id")
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let one = &listed.json["results"][0]["properties"];
    assert_eq!(
        (one["plan"].as_str(), one["subscription_id"].as_str()),
        (Some("Enterprise"), Some("S-1"))
    );
    assert!(
        one["hs_createdate"].is_string(),
        "custom objects carry hs_createdate: {one}"
    );
    let props = hub.get("/crm/v3/properties/p_subscriptions").await;
    let names: Vec<&str> = props.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["hasUniqueValue"] == true)
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["hs_object_id", "subscription_id"]);
    assert_eq!(hub.sandbox.hubspot().records("p_subscriptions").len(), 1);
    let missing = hub.get("/crm/v3/objects/2-999").await;
    assert_eq!(missing.status, 404);
}

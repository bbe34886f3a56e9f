//! `POST /crm/v3/objects/{objectType}/search` (`src/sandbox/hubspot/search.rs`).

use super::*;

#[tokio::test]
async fn hubspot_search_filters_on_last_modified_sorts_and_pages() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let inputs: Vec<Value> = (0..6)
        .map(|i| by_email(&format!("s{i}@x.com"), json!({"ltv": i * 10}), &i.to_string()))
        .collect();
    let r = hub.batch("contacts", "upsert", inputs).await;
    assert_eq!(r.status, 200, "{}", r.text);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let touched = hub
        .batch(
            "contacts",
            "upsert",
            vec![
                by_email("s4@x.com", json!({"firstname": "Four"}), "a"),
                by_email("s1@x.com", json!({"firstname": "One"}), "b"),
            ],
        )
        .await;
    assert_eq!(touched.status, 200, "{}", touched.text);
    let until = chrono::Utc::now().timestamp_millis() + 1;
    let window = |after: Option<&str>| {
        let mut body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": since.to_string()},
                {"propertyName": "lastmodifieddate", "operator": "LT", "value": until.to_string()},
            ]}],
            "sorts": [{"propertyName": "ltv", "direction": "DESCENDING"}],
            "properties": ["email", "ltv"],
            "limit": 1,
        });
        if let Some(a) = after {
            body["after"] = json!(a);
        }
        body
    };
    let first = hub.post("/crm/v3/objects/contacts/search", window(None)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["total"], 2);
    assert_eq!(first.json["results"][0]["properties"]["email"], "s4@x.com");
    let after = first.json["paging"]["next"]["after"].as_str().unwrap().to_string();
    let second = hub.post("/crm/v3/objects/contacts/search", window(Some(&after))).await;
    assert_eq!(second.json["results"][0]["properties"]["email"], "s1@x.com");
    assert!(second.json.get("paging").is_none(), "{}", second.text);

    let too_big = hub.post("/crm/v3/objects/contacts/search", json!({"limit": 201})).await;
    assert_eq!(
        (too_big.status, too_big.json["category"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    let unknown = hub
        .post(
            "/crm/v3/objects/contacts/search",
            json!({"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]}),
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
}

#[tokio::test]
async fn hubspot_search_cannot_page_past_10000_results() {
    let hub = Hub::start(SandboxConfig::default()).await;
    for call in 0..101 {
        let inputs: Vec<Value> = (0..100)
            .map(|i| json!({"properties": {"email": format!("{call}-{i}@x.com")}}))
            .collect();
        let r = hub.batch("contacts", "create", inputs).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let body = |after: &str| {
        json!({
            "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "limit": 200,
            "after": after,
        })
    };
    let last = hub.post("/crm/v3/objects/contacts/search", body("9800")).await;
    assert_eq!(last.status, 200, "{}", last.text);
    assert_eq!(last.json["total"], 10_100);
    assert_eq!(last.json["results"].as_array().unwrap().len(), 200);
    assert_eq!(last.json["paging"]["next"]["after"], "10000");
    let past = hub.post("/crm/v3/objects/contacts/search", body("10000")).await;
    assert_eq!(past.status, 400, "{}", past.text);
    assert_eq!(past.json["category"], "VALIDATION_ERROR");
}

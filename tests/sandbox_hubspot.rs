//! The sandbox's HubSpot CRM v3 API (`src/sandbox/hubspot/`) over real HTTP: auth, the
//! property schema, the batch endpoints (upsert, create, update, archive, read) with 207
//! multi-status, listing with paging and `archived=true`, search, and the rate limits.
//! Search, OAuth (with the faults, deals and the custom object) and the official Python
//! client are in modules of their own.

use ebb::sandbox::{HubSpotConfig, Sandbox, SandboxConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

mod client; // hubspot-api-client, the official Python client, against the sandbox (its OAuth token call too)
mod oauth; // POST /oauth/v1/token, access tokens and their expiry, the faults, deals and the custom object
mod search; // POST objects/{type}/search: filters, sorts, paging, the 10,000-result cap

const TOKEN: &str = "pat-na1-ebb-sandbox";

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
    text: String,
}

impl Resp {
    /// The status, headers and body of an answer (its JSON, or null).
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

    fn header(&self, name: &str) -> u64 {
        self.headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {name} on a {} answer: {:?}", self.status, self.headers))
    }
}

struct Hub {
    sandbox: Sandbox,
    http: reqwest::Client,
}

impl Hub {
    async fn start(config: SandboxConfig) -> Hub {
        let sandbox = Sandbox::start("127.0.0.1:0", config).await.expect("the sandbox starts");
        Hub {
            sandbox,
            http: ebb::http::client().unwrap(),
        }
    }

    async fn call_with(&self, method: reqwest::Method, path: &str, body: Option<Value>, token: Option<&str>) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.sandbox.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::read(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.call_with(reqwest::Method::GET, path, None, Some(TOKEN)).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.call_with(reqwest::Method::POST, path, Some(body), Some(TOKEN))
            .await
    }

    async fn batch(&self, object: &str, op: &str, inputs: Vec<Value>) -> Resp {
        self.post(
            &format!("/crm/v3/objects/{object}/batch/{op}"),
            json!({ "inputs": inputs }),
        )
        .await
    }
}

fn by_email(email: &str, properties: Value, trace: &str) -> Value {
    json!({"idProperty": "email", "id": email, "properties": properties, "objectWriteTraceId": trace})
}

#[tokio::test]
async fn hubspot_requests_need_the_private_app_token_and_401s_are_in_hubspots_shape() {
    let hub = Hub::start(SandboxConfig::default()).await;
    assert_eq!(hub.sandbox.hubspot().token(), TOKEN);
    let none = hub
        .call_with(reqwest::Method::GET, "/crm/v3/objects/contacts", None, None)
        .await;
    assert_eq!(none.status, 401, "{}", none.text);
    assert_eq!(none.json["status"], "error");
    assert_eq!(none.json["category"], "INVALID_AUTHENTICATION");
    assert!(none.json["correlationId"].as_str().is_some_and(|c| c.len() == 36));
    let wrong = hub
        .call_with(
            reqwest::Method::GET,
            "/crm/v3/objects/contacts",
            None,
            Some("pat-na1-nope"),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json["category"], "INVALID_AUTHENTICATION");
    assert_eq!(wrong.header("x-hubspot-ratelimit-max"), 190, "headers on refusals too");
    assert_eq!(hub.sandbox.hubspot().calls(), 0, "refused requests are not counted");
    let ok = hub.get("/crm/v3/objects/contacts").await;
    assert_eq!((ok.status, &ok.json["results"]), (200, &json!([])));
    let unknown = hub.get("/crm/v3/objects/widgets").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    // The Salesforce API is still there, beside it.
    let sf = hub
        .http
        .get(format!("{}/services/data", hub.sandbox.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sf.status(), 200);
}

#[tokio::test]
async fn hubspot_properties_list_the_schema_with_types_options_and_unique_values() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let r = hub.get("/crm/v3/properties/contacts").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let props = r.json["results"].as_array().unwrap();
    let prop = |name: &str| props.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(prop("email")["hasUniqueValue"], true);
    assert_eq!(prop("email")["type"], "string");
    assert_eq!(prop("firstname")["hasUniqueValue"], false);
    assert_eq!(prop("ltv")["type"], "number");
    assert_eq!(prop("last_activity_date")["type"], "date");
    assert_eq!(prop("lastmodifieddate")["type"], "datetime");
    assert_eq!(prop("lastmodifieddate")["modificationMetadata"]["readOnlyValue"], true);
    let stage = prop("lifecyclestage");
    assert_eq!(stage["type"], "enumeration");
    assert!(stage["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["value"] == "customer"));
    let c = hub.get("/crm/v3/properties/companies").await;
    let domain = c.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "domain")
        .cloned();
    assert_eq!(domain.unwrap()["hasUniqueValue"], true);
}

#[tokio::test]
async fn hubspot_upsert_creates_then_updates_the_same_record() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let first = hub
        .batch(
            "contacts",
            "upsert",
            vec![by_email("jane@x.com", json!({"firstname": "Jane"}), "row-1")],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["status"], "COMPLETE");
    assert!(first.json.get("numErrors").is_none());
    let r = &first.json["results"][0];
    assert_eq!(
        (r["new"].clone(), r["objectWriteTraceId"].clone()),
        (json!(true), json!("row-1"))
    );
    assert_eq!(r["properties"]["email"], "jane@x.com");
    assert_eq!(r["properties"]["firstname"], "Jane");
    assert_eq!(r["archived"], false);
    for key in ["createdAt", "updatedAt"] {
        assert!(r[key].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
    }
    let id = r["id"].as_str().unwrap().to_string();
    let modified = r["properties"]["lastmodifieddate"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = hub
        .batch(
            "contacts",
            "upsert",
            vec![by_email("jane@x.com", json!({"lastname": "Doe", "ltv": 12.5}), "row-1")],
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    let r = &second.json["results"][0];
    assert_eq!((r["id"].as_str(), r["new"].clone()), (Some(id.as_str()), json!(false)));
    assert!(r["properties"]["lastmodifieddate"].as_str().unwrap() > modified.as_str());
    assert_eq!(
        r["properties"]["hs_lastmodifieddate"],
        r["properties"]["lastmodifieddate"]
    );
    let records = hub.sandbox.hubspot().records("contacts");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["firstname"], "Jane");
    assert_eq!(records[0]["lastname"], "Doe");
    assert_eq!(records[0]["ltv"], "12.5");
    // Companies upsert by domain.
    let co = hub
        .batch(
            "companies",
            "upsert",
            vec![
                json!({"idProperty": "domain", "id": "acme.com", "properties": {"name": "Acme", "industry": "RETAIL"}}),
            ],
        )
        .await;
    assert_eq!(co.status, 200, "{}", co.text);
    assert!(co.json["results"][0]["properties"]["hs_lastmodifieddate"].is_string());
    // An idProperty that is not unique breaks the call.
    let bad = hub
        .batch(
            "contacts",
            "upsert",
            vec![json!({"idProperty": "firstname", "id": "Jane", "properties": {}})],
        )
        .await;
    assert_eq!(
        (bad.status, bad.json["category"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
}

#[tokio::test]
async fn hubspot_a_bad_input_gives_207_matched_by_its_object_write_trace_id() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let inputs = vec![
        by_email(
            "a@x.com",
            json!({"lifecyclestage": "lead", "last_activity_date": "2024-02-29"}),
            "row-1",
        ),
        by_email("b@x.com", json!({"lifecyclestage": "Not a stage"}), "row-2"),
        by_email("c@x.com", json!({"ltv": "lots", "nope": "x"}), "row-3"),
        by_email("d@x.com", json!({"last_activity_date": 1709164800000i64}), "row-4"),
    ];
    let r = hub.batch("contacts", "upsert", inputs).await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.json["numErrors"], 2);
    let traces = |key: &str| -> Vec<String> {
        r.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                if key == "results" {
                    x["objectWriteTraceId"].as_str().unwrap().to_string()
                } else {
                    x["context"]["objectWriteTraceId"][0].as_str().unwrap().to_string()
                }
            })
            .collect()
    };
    assert_eq!(traces("results"), ["row-1", "row-4"]);
    assert_eq!(traces("errors"), ["row-2", "row-3"]);
    let e2 = &r.json["errors"][0];
    assert_eq!(e2["category"], "VALIDATION_ERROR");
    assert!(e2["message"]
        .as_str()
        .unwrap()
        .starts_with("Property values were not valid: ["));
    assert_eq!(e2["errors"][0]["code"], "INVALID_OPTION");
    let codes: Vec<&str> = r.json["errors"][1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["INVALID_INTEGER", "PROPERTY_DOESNT_EXIST"]);
    assert_eq!(r.json["results"][1]["properties"]["last_activity_date"], "2024-02-29");
    assert_eq!(
        hub.sandbox.hubspot().records("contacts").len(),
        2,
        "failed inputs write nothing"
    );

    // create and update answer the same way; update fails an unknown id.
    let c = hub
        .batch(
            "contacts",
            "create",
            vec![json!({"properties": {"email": "e@x.com"}, "objectWriteTraceId": "n1"})],
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    let id = c.json["results"][0]["id"].as_str().unwrap().to_string();
    let u = hub
        .batch(
            "contacts",
            "update",
            vec![
                json!({"id": id, "properties": {"firstname": "Eve"}, "objectWriteTraceId": "u1"}),
                json!({"id": "999999", "properties": {"firstname": "Nobody"}, "objectWriteTraceId": "u2"}),
            ],
        )
        .await;
    assert_eq!(u.status, 207, "{}", u.text);
    assert_eq!(u.json["results"][0]["properties"]["firstname"], "Eve");
    assert_eq!(u.json["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(u.json["errors"][0]["context"]["objectWriteTraceId"], json!(["u2"]));
}

#[tokio::test]
async fn hubspot_duplicate_ids_or_more_than_100_inputs_reject_the_whole_call() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let dup = hub
        .batch(
            "contacts",
            "upsert",
            vec![
                by_email("a@x.com", json!({}), "1"),
                by_email("b@x.com", json!({}), "2"),
                by_email("a@x.com", json!({"firstname": "A"}), "3"),
            ],
        )
        .await;
    assert_eq!(dup.status, 400, "{}", dup.text);
    assert_eq!(dup.json["status"], "error");
    assert_eq!(dup.json["category"], "VALIDATION_ERROR");
    assert_eq!(
        dup.json["message"],
        "Duplicate IDs found in batch input: [a@x.com]. IDs must be unique"
    );
    assert_eq!(dup.json["context"]["ids"], json!(["a@x.com"]));
    assert!(dup.json["correlationId"].is_string());
    assert!(hub.sandbox.hubspot().records("contacts").is_empty(), "nothing written");

    let dup_archive = hub
        .batch(
            "contacts",
            "archive",
            vec![json!({"id": "1001"}), json!({"id": "1001"})],
        )
        .await;
    assert_eq!(dup_archive.status, 400);

    let many: Vec<Value> = (0..101)
        .map(|i| by_email(&format!("{i}@x.com"), json!({}), &i.to_string()))
        .collect();
    let r = hub.batch("contacts", "upsert", many.clone()).await;
    assert_eq!(
        (r.status, r.json["category"].as_str()),
        (400, Some("VALIDATION_ERROR")),
        "{}",
        r.text
    );
    assert!(hub.sandbox.hubspot().records("contacts").is_empty());
    let ok = hub.batch("contacts", "upsert", many[..100].to_vec()).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["results"].as_array().unwrap().len(), 100);

    let bad_json = hub
        .http
        .post(format!("{}/crm/v3/objects/contacts/batch/create", hub.sandbox.url()))
        .bearer_auth(TOKEN)
        .body("{\"inputs\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);

    // Bodies are bounded (4 MiB).
    let huge = json!({"inputs": [{"properties": {"firstname": "x".repeat(5 << 20)}}]});
    let r = hub.post("/crm/v3/objects/contacts/batch/create", huge).await;
    assert_eq!(r.status, 413, "{}", r.text);
}

#[tokio::test]
async fn hubspot_archived_records_are_listed_with_archived_true_and_lists_page() {
    let hub = Hub::start(SandboxConfig::default()).await;
    let inputs: Vec<Value> = (0..25)
        .map(|i| {
            by_email(
                &format!("p{i:02}@x.com"),
                json!({"firstname": format!("P{i}")}),
                &i.to_string(),
            )
        })
        .collect();
    let r = hub.batch("contacts", "upsert", inputs).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: Vec<String> = r.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();

    // Pages of 10: 10, 10, 5, in id order, each with the cursor of the next.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/crm/v3/objects/contacts?limit=10&after={a}&properties=email,firstname"),
            None => "/crm/v3/objects/contacts?limit=10&properties=email,firstname".into(),
        };
        let page = hub.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        pages += 1;
        for x in page.json["results"].as_array().unwrap() {
            assert!(x["properties"]["firstname"].is_string());
            assert!(
                x["properties"].get("lastname").is_none(),
                "only what was asked, and the system ones"
            );
            seen.push(x["id"].as_str().unwrap().to_string());
        }
        match page.json["paging"]["next"]["after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!((pages, &seen), (3, &ids));

    let archive = hub
        .batch(
            "contacts",
            "archive",
            vec![json!({"id": ids[3]}), json!({"id": ids[7]}), json!({"id": "424242"})],
        )
        .await;
    assert_eq!((archive.status, archive.text.as_str()), (204, ""));
    let live = hub.get("/crm/v3/objects/contacts?limit=100").await;
    assert_eq!(live.json["results"].as_array().unwrap().len(), 23);
    assert!(live.json.get("paging").is_none());
    let gone = hub.get("/crm/v3/objects/contacts?archived=true").await;
    let gone_ids: Vec<&str> = gone.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(gone_ids, [ids[3].as_str(), ids[7].as_str()]);
    assert_eq!(gone.json["results"][0]["archived"], true);
    let python_style = hub
        .get("/crm/v3/objects/contacts?archived=True&properties=email&properties=lastname")
        .await;
    assert_eq!(
        python_style.json["results"].as_array().unwrap().len(),
        2,
        "{}",
        python_style.text
    );
    assert!(python_style.json["results"][0]["properties"]["lastname"].is_null());
    assert_eq!(python_style.json["results"][0]["properties"]["email"], "p03@x.com");
    assert!(gone.json["results"][0]["archivedAt"].is_string());

    // batch/read: found ones, and one OBJECT_NOT_FOUND error listing the rest.
    let read = hub
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"inputs": [{"id": ids[0]}, {"id": ids[3]}], "properties": ["email"]}),
        )
        .await;
    assert_eq!(read.status, 207, "{}", read.text);
    assert_eq!(read.json["results"][0]["properties"]["email"], "p00@x.com");
    assert_eq!(read.json["errors"][0]["context"]["ids"], json!([ids[3]]));
    // An archived email is free again: upserting it makes a new record.
    let again = hub
        .batch("contacts", "upsert", vec![by_email("p03@x.com", json!({}), "x")])
        .await;
    assert_eq!(again.json["results"][0]["new"], true, "{}", again.text);
}

#[tokio::test]
async fn hubspot_rate_limit_headers_count_down_and_429_names_its_policy() {
    let hub = Hub::start(SandboxConfig {
        hubspot: HubSpotConfig {
            ten_second_limit: 3,
            daily_limit: 1000,
            ..HubSpotConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let a = hub.get("/crm/v3/objects/contacts").await;
    assert_eq!(a.header("x-hubspot-ratelimit-max"), 3);
    assert_eq!(a.header("x-hubspot-ratelimit-remaining"), 2);
    assert_eq!(a.header("x-hubspot-ratelimit-interval-milliseconds"), 10_000);
    assert_eq!(a.header("x-hubspot-ratelimit-daily"), 1000);
    assert_eq!(a.header("x-hubspot-ratelimit-daily-remaining"), 999);
    let b = hub
        .batch("contacts", "upsert", vec![json!({"idProperty": "email"})])
        .await;
    assert_eq!(b.status, 400, "errors count too");
    assert_eq!(b.header("x-hubspot-ratelimit-remaining"), 1);
    hub.get("/crm/v3/properties/contacts").await;
    let refused = hub.get("/crm/v3/objects/contacts").await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(refused.json["errorType"], "RATE_LIMIT");
    assert_eq!(refused.json["status"], "error");
    assert!(refused.json["correlationId"].is_string());
    assert_eq!(refused.header("x-hubspot-ratelimit-remaining"), 0);
    assert!((1..=10).contains(&refused.header("retry-after")));
    assert_eq!(hub.sandbox.hubspot().calls(), 3, "a refused request is not counted");

    hub.sandbox.hubspot().set_ten_second_limit(100);
    hub.sandbox.hubspot().set_daily(1000, 1000);
    let daily = hub.get("/crm/v3/objects/contacts").await;
    assert_eq!(daily.status, 429, "{}", daily.text);
    assert_eq!(daily.json["policyName"], "DAILY");
    assert_eq!(daily.json["message"], "You have reached your daily limit.");
    assert_eq!(daily.header("x-hubspot-ratelimit-daily-remaining"), 0);

    // Searches have a per-second limit of their own.
    hub.sandbox.hubspot().set_daily(0, 1000);
    hub.sandbox.hubspot().set_search_per_second(2);
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = hub.post("/crm/v3/objects/contacts/search", json!({})).await;
        if r.status == 429 {
            assert_eq!(r.json["policyName"], "SECONDLY", "{}", r.text);
            assert_eq!(r.json["message"], "You have reached your secondly limit.");
        }
        statuses.push(r.status);
    }
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(statuses, [200, 200, 429]);
        let other = hub.get("/crm/v3/objects/contacts").await;
        assert_eq!(other.status, 200, "only searches are limited per second");
    }
}

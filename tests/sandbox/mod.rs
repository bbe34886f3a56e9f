//! The sandbox (`ebb::sandbox`, `ebb sandbox`) over real HTTP: the documented Salesforce
//! wire protocol (docs/salesforce-protocol.md) a client relies on. One module per part of
//! `src/sandbox/`; the shared client and helpers are here.

mod api; // routing, versions, describe
mod auth; // the token endpoint and sessions
mod bulk; // Bulk API 2.0 ingest jobs
mod bulk_query; // Bulk API 2.0 query jobs
mod collections; // sObject Collections
mod command; // the `ebb sandbox` command
mod limits; // Sforce-Limit-Info, REQUEST_LIMIT_EXCEEDED, injected faults and latency
mod records; // single records: get, create, update, delete, upsert by external ID
mod replication; // `updated` and `deleted`
mod soql; // `query` and `queryAll`
mod webhook; // `--webhook`: a signed event per record written

use base64::Engine;
use ebb::sandbox::{Faults, Sandbox, SandboxConfig};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const V: &str = "v62.0";

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

/// Polls a job until it ends; returns the states seen, in order, and the last JobInfo.
/// Closes the ingest job `id` (`UploadComplete`) and waits for it to end: its final info.
async fn close_and_wait(api: &Api, id: &str) -> Value {
    api.call(
        Method::PATCH,
        &format!("jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    wait_for_job(api, id).await.1
}

async fn wait_for_job(api: &Api, id: &str) -> (Vec<String>, Value) {
    wait_for_job_in(api, "ingest", id).await
}

/// Polls job `id` of `kind` (`ingest` or `query`) until it ends; the states seen, in order,
/// and the last JobInfo.
async fn wait_for_job_in(api: &Api, kind: &str, id: &str) -> (Vec<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states: Vec<String> = Vec::new();
    loop {
        let r = api.call(Method::GET, &format!("jobs/{kind}/{id}"), None).await;
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

/// `2024-01-31T09:30:15+00:00` URL-encoded as simple-salesforce sends it.
fn replication_time(d: chrono::DateTime<chrono::Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
        .replace(':', "%3A")
        .replace('+', "%2B")
}

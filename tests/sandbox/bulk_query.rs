//! Bulk API 2.0 query jobs (`src/sandbox/bulk_query.rs`, docs/salesforce-protocol.md §7).

use super::*;

/// Polls query job `id` until it ends; the states seen, in order, and the last JobInfo.
async fn wait_for_query_job(api: &Api, id: &str) -> (Vec<String>, Value) {
    wait_for_job_in(api, "query", id).await
}

async fn create_query_job(api: &Api, operation: &str, query: &str) -> Resp {
    api.call(
        Method::POST,
        "jobs/query",
        Some(json!({"operation": operation, "query": query, "contentType": "CSV",
                    "columnDelimiter": "COMMA", "lineEnding": "LF"})),
    )
    .await
}

fn header(r: &Resp, name: &str) -> String {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} on a {} answer: {}", r.status, r.text))
        .to_str()
        .unwrap()
        .to_string()
}

fn seed(api: &Api, n: usize) -> Vec<String> {
    let records = (0..n)
        .map(|i| {
            json!({"LastName": format!("Q{i:03}"), "Email": format!("q{i}@example.com"),
                   "LTV__c": 10.5 + i as f64, "Last_Activity__c": "2024-01-31",
                   "Last_Update__c": "2024-01-31T10:30:00+01:00"})
            .as_object()
            .unwrap()
            .clone()
        })
        .collect();
    api.sandbox.insert("Contact", records).unwrap()
}

#[tokio::test]
async fn query_job_lifecycle_pages_csv_with_locators() {
    let api = Api::start(SandboxConfig {
        bulk_step_delay: Duration::from_millis(150),
        ..SandboxConfig::default()
    })
    .await;
    let ids = seed(&api, 5);
    // A record with a quote, a comma, a line break and nulls.
    api.sandbox
        .insert(
            "Contact",
            vec![json!({"LastName": "O\"Brien, Jr.\nII"}).as_object().unwrap().clone()],
        )
        .unwrap();
    let soql = "SELECT Id, LastName, Email, LTV__c, Last_Activity__c, Last_Update__c, IsDeleted FROM Contact";
    let job = create_query_job(&api, "query", soql).await;
    assert_eq!(job.status, 200, "{}", job.text);
    let id = job.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750"), "{id}");
    assert_eq!(job.json["state"], "UploadComplete");
    assert_eq!(job.json["operation"], "query");
    assert_eq!(job.json["object"], "Contact");
    assert_eq!(job.json["apiVersion"], json!(62.0));
    for key in [
        "createdById",
        "createdDate",
        "systemModstamp",
        "concurrencyMode",
        "contentType",
        "lineEnding",
        "columnDelimiter",
    ] {
        assert!(job.json.get(key).is_some(), "JobInfo lacks {key}: {}", job.json);
    }
    // Results before the job completes: 409.
    let early = api.call(Method::GET, &format!("jobs/query/{id}/results"), None).await;
    assert_eq!(
        (early.status, early.json[0]["errorCode"].as_str()),
        (409, Some("INVALIDJOBSTATE"))
    );
    let (states, info) = wait_for_query_job(&api, &id).await;
    assert_eq!(states, ["UploadComplete", "InProgress", "JobComplete"]);
    assert_eq!(info["numberRecordsProcessed"], 6);
    assert_eq!(info["jobType"], "V2Query");

    // Pages of 4: two pages, the second ending with the locator "null".
    let first = api
        .call(Method::GET, &format!("jobs/query/{id}/results?maxRecords=4"), None)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(header(&first, "content-type").starts_with("text/csv"));
    assert_eq!(header(&first, "sforce-numberofrecords"), "4");
    let locator = header(&first, "sforce-locator");
    assert_ne!(locator, "null");
    assert!(!locator.contains('4'), "the locator is opaque: {locator}");
    let lines: Vec<&str> = first.text.lines().collect();
    assert_eq!(
        lines[0],
        r#""Id","LastName","Email","LTV__c","Last_Activity__c","Last_Update__c","IsDeleted""#
    );
    assert_eq!(
        lines[1],
        format!(
            r#""{}","Q000","q0@example.com","10.5","2024-01-31","2024-01-31T09:30:00.000Z","false""#,
            ids[0]
        )
    );
    assert_eq!(lines.len(), 5);
    let second = api
        .call(
            Method::GET,
            &format!("jobs/query/{id}/results?maxRecords=4&locator={locator}"),
            None,
        )
        .await;
    assert_eq!(header(&second, "sforce-numberofrecords"), "2");
    assert_eq!(header(&second, "sforce-locator"), "null");
    assert!(
        second.text.starts_with("\"Id\",\"LastName\""),
        "every page has the header"
    );
    assert!(
        second
            .text
            .ends_with("\"O\"\"Brien, Jr.\nII\",\"\",\"\",\"\",\"\",\"false\"\n"),
        "quotes doubled, nulls empty: {}",
        second.text
    );
    // A locator stays valid while the job exists.
    let again = api
        .call(
            Method::GET,
            &format!("jobs/query/{id}/results?maxRecords=4&locator={locator}"),
            None,
        )
        .await;
    assert_eq!(again.text, second.text);
    // Without maxRecords, the rest in one page.
    let all = api.call(Method::GET, &format!("jobs/query/{id}/results"), None).await;
    assert_eq!(header(&all, "sforce-numberofrecords"), "6");
    // Another API version than the job's: 409.
    let other = api
        .call(
            Method::GET,
            &format!("/services/data/v61.0/jobs/query/{id}/results"),
            None,
        )
        .await;
    assert_eq!(other.status, 409, "{}", other.text);
    let bad = api
        .call(Method::GET, &format!("jobs/query/{id}/results?locator=nonsense"), None)
        .await;
    assert_eq!(
        (bad.status, bad.json[0]["errorCode"].as_str()),
        (400, Some("INVALID_QUERY_LOCATOR"))
    );
    let bad = api
        .call(Method::GET, &format!("jobs/query/{id}/results?maxRecords=0"), None)
        .await;
    assert_eq!(bad.status, 400);

    // Listed, then deleted.
    let list = api.call(Method::GET, "jobs/query", None).await;
    assert!(list.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == json!(id)));
    let gone = api.call(Method::DELETE, &format!("jobs/query/{id}"), None).await;
    assert_eq!(gone.status, 204);
    let r = api.call(Method::GET, &format!("jobs/query/{id}"), None).await;
    assert_eq!(r.status, 404);
    // Ingest and query jobs are apart.
    assert_eq!(
        api.call(Method::GET, &format!("jobs/ingest/{id}"), None).await.status,
        404
    );
}

#[tokio::test]
async fn query_all_jobs_include_the_recycle_bin() {
    let api = Api::start(SandboxConfig {
        bulk_step_delay: Duration::from_millis(10),
        ..SandboxConfig::default()
    })
    .await;
    let ids = seed(&api, 3);
    let r = api
        .call(Method::DELETE, &format!("sobjects/Contact/{}", ids[1]), None)
        .await;
    assert_eq!(r.status, 204);
    let q = "SELECT Id, IsDeleted FROM Contact";
    let mut got = Vec::new();
    for op in ["query", "queryAll"] {
        let job = create_query_job(&api, op, q).await;
        let id = job.json["id"].as_str().unwrap().to_string();
        wait_for_query_job(&api, &id).await;
        let r = api.call(Method::GET, &format!("jobs/query/{id}/results"), None).await;
        got.push(r.text);
    }
    assert_eq!(
        got[0],
        format!(
            "\"Id\",\"IsDeleted\"\n\"{}\",\"false\"\n\"{}\",\"false\"\n",
            ids[0], ids[2]
        )
    );
    assert_eq!(
        got[1],
        format!(
            "\"Id\",\"IsDeleted\"\n\"{}\",\"false\"\n\"{}\",\"true\"\n\"{}\",\"false\"\n",
            ids[0], ids[1], ids[2]
        )
    );
}

#[tokio::test]
async fn unsupported_and_invalid_queries_are_refused_at_creation() {
    let api = Api::start(SandboxConfig::default()).await;
    for q in [
        "SELECT COUNT() FROM Contact",
        "SELECT Id FROM Contact OFFSET 10",
        "SELECT Id, (SELECT Id FROM Cases) FROM Contact",
        "SELECT FIELDS(ALL) FROM Contact",
    ] {
        let r = create_query_job(&api, "query", q).await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some("API_ERROR")),
            "{q}: {}",
            r.text
        );
        assert!(
            r.json[0]["message"]
                .as_str()
                .unwrap()
                .contains("not supported in Bulk API 2.0"),
            "{}",
            r.text
        );
    }
    for (q, code) in [
        ("SELECT Id, Nope__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Nope", "INVALID_TYPE"),
        (
            "SELECT Id FROM Contact WHERE SystemModstamp > 2024-01-31T09:30:00",
            "MALFORMED_QUERY",
        ),
    ] {
        let r = create_query_job(&api, "queryAll", q).await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some(code)),
            "{q}: {}",
            r.text
        );
    }
    for body in [
        json!({"operation": "upsert", "query": "SELECT Id FROM Contact"}),
        json!({"operation": "query"}),
        json!({"operation": "query", "query": "SELECT Id FROM Contact", "contentType": "JSON"}),
        json!({"operation": "query", "query": "SELECT Id FROM Contact", "lineEnding": "CR"}),
    ] {
        let r = api.call(Method::POST, "jobs/query", Some(body.clone())).await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some("INVALIDJOB")),
            "{body}: {}",
            r.text
        );
    }
    assert_eq!(api.sandbox.calls_to("bulk"), 11);
}

#[tokio::test]
async fn failed_aborted_and_crlf_jobs() {
    let api = Api::start(SandboxConfig {
        bulk_step_delay: Duration::from_millis(100),
        ..SandboxConfig::default()
    })
    .await;
    seed(&api, 2);
    api.sandbox.set_faults(Faults {
        fail_query_jobs_next: 1,
        ..Faults::default()
    });
    let job = create_query_job(&api, "query", "SELECT Id FROM Contact").await;
    let id = job.json["id"].as_str().unwrap().to_string();
    let (states, info) = wait_for_query_job(&api, &id).await;
    assert_eq!(states.last().map(String::as_str), Some("Failed"));
    assert!(info["errorMessage"].as_str().unwrap().contains("fault"), "{info}");
    let r = api.call(Method::GET, &format!("jobs/query/{id}/results"), None).await;
    assert_eq!(r.status, 409);

    // Aborted while in progress: it stays aborted, and can be deleted.
    let job = create_query_job(&api, "query", "SELECT Id FROM Contact").await;
    let id = job.json["id"].as_str().unwrap().to_string();
    let r = api
        .call(
            Method::PATCH,
            &format!("jobs/query/{id}"),
            Some(json!({"state": "Aborted"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["state"].as_str()),
        (200, Some("Aborted")),
        "{}",
        r.text
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (states, _) = wait_for_query_job(&api, &id).await;
    assert_eq!(states, ["Aborted"]);
    let r = api
        .call(
            Method::PATCH,
            &format!("jobs/query/{id}"),
            Some(json!({"state": "Aborted"})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        api.call(Method::DELETE, &format!("jobs/query/{id}"), None).await.status,
        204
    );

    // CRLF line endings and another delimiter.
    let r = api
        .call(
            Method::POST,
            "jobs/query",
            Some(
                json!({"operation": "query", "query": "SELECT LastName, Email FROM Contact",
                        "columnDelimiter": "PIPE", "lineEnding": "CRLF"}),
            ),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        (r.json["lineEnding"].as_str(), r.json["columnDelimiter"].as_str()),
        (Some("CRLF"), Some("PIPE"))
    );
    wait_for_query_job(&api, &id).await;
    let r = api.call(Method::GET, &format!("jobs/query/{id}/results"), None).await;
    assert_eq!(
        r.text,
        "\"LastName\"|\"Email\"\r\n\"Q000\"|\"q0@example.com\"\r\n\"Q001\"|\"q1@example.com\"\r\n"
    );
}

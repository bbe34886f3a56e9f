//! Bulk API 2.0 ingest jobs (`src/sandbox/bulk.rs`, docs/salesforce-protocol.md §4).

use super::*;

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
    let info = close_and_wait(&api, &id).await;
    assert_eq!(info["state"], "Failed");
    assert!(info["errorMessage"].as_str().unwrap().contains("LineEnding"), "{info}");
    let (_, unprocessed, _) = results_csv(&api, &id, "unprocessedrecords").await;
    assert_eq!(unprocessed.lines().count(), 2, "{unprocessed}");

    // An unknown column fails the job; a pipe-delimited one is read with its delimiter.
    let job = create(json!({"object": "Contact", "operation": "insert", "columnDelimiter": "PIPE"})).await;
    let id = job.json["id"].as_str().unwrap().to_string();
    api.csv_put(&format!("jobs/ingest/{id}/batches"), "LastName|Nope__c\nA|1\n")
        .await;
    let info = close_and_wait(&api, &id).await;
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
    let info = close_and_wait(&api, &id).await;
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
        let info = close_and_wait(&api, &job_id).await;
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

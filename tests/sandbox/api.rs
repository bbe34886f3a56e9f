//! Routing, versions and describe (`src/sandbox/api.rs`, docs/salesforce-protocol.md §5).

use super::*;

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

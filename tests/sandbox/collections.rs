//! sObject Collections (`src/sandbox/collections.rs`, docs/salesforce-protocol.md §2):
//! order, per-record errors, allOrNone, limits on the request.

use super::*;

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

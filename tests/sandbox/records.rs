//! The single-record resources (`src/sandbox/records.rs`, docs/salesforce-protocol.md §3).

use super::*;

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

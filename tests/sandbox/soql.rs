//! SOQL `query` and `queryAll` (`src/sandbox/soql.rs`, docs/salesforce-protocol.md §6) and the
//! seed they read.

use super::*;

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
    // SOQL writes the offset `+00:00` (the answer's `+0000` is not a SOQL literal).
    let literal = watermark.replace("+0000", "+00:00");
    let changed = api
        .query(&format!(
            "SELECT Id, LastName FROM Contact WHERE LastModifiedDate > {literal}"
        ))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.json["totalSize"], 1);
    assert_eq!(changed.json["records"][0]["LastName"], "Changed");
    let z = chrono::DateTime::parse_from_rfc3339(&literal)
        .unwrap()
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
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

/// Datetime literals in the documented forms compare as instants whatever their offset;
/// dates compare with date fields; anything else is refused as an org refuses it.
#[tokio::test]
async fn datetime_and_date_literals_compare_as_instants() {
    let api = Api::start(SandboxConfig::default()).await;
    api.sandbox
        .insert(
            "Contact",
            vec![
                json!({"LastName": "Early", "CreatedDate": "2024-01-31T09:00:00Z",
                       "LastModifiedDate": "2024-01-31T09:00:00Z", "Last_Activity__c": "2024-01-30"})
                .as_object()
                .unwrap()
                .clone(),
                json!({"LastName": "Late", "CreatedDate": "2024-01-31T09:30:00.500Z",
                       "LastModifiedDate": "2024-01-31T09:30:00.500Z", "Last_Activity__c": "2024-02-01"})
                .as_object()
                .unwrap()
                .clone(),
            ],
        )
        .unwrap();
    let names = |r: &Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["LastName"].as_str().unwrap().to_string())
            .collect()
    };
    // The same instant written three ways.
    for at in [
        "2024-01-31T09:30:00Z",
        "2024-01-31T10:30:00+01:00",
        "2024-01-31T01:30:00-08:00",
    ] {
        let r = api
            .query(&format!(
                "SELECT LastName FROM Contact WHERE SystemModstamp >= {at} ORDER BY LastName"
            ))
            .await;
        assert_eq!(names(&r), ["Late"], "{at}");
        let r = api
            .query(&format!("SELECT LastName FROM Contact WHERE LastModifiedDate < {at}"))
            .await;
        assert_eq!(names(&r), ["Early"], "{at}");
    }
    // Fractional seconds are accepted and compared.
    let r = api
        .query("SELECT LastName FROM Contact WHERE SystemModstamp > 2024-01-31T09:30:00.499Z")
        .await;
    assert_eq!(names(&r), ["Late"]);
    let r = api
        .query("SELECT LastName FROM Contact WHERE SystemModstamp > 2024-01-31T09:30:00.500Z")
        .await;
    assert_eq!(names(&r), Vec::<String>::new());
    // A date literal on a date field.
    let r = api
        .query("SELECT LastName FROM Contact WHERE Last_Activity__c >= 2024-01-31")
        .await;
    assert_eq!(names(&r), ["Late"]);
    // A date on a datetime field, a datetime on a date field: INVALID_FIELD.
    for q in [
        "SELECT Id FROM Contact WHERE SystemModstamp > 2024-01-31",
        "SELECT Id FROM Contact WHERE Last_Activity__c > 2024-01-31T00:00:00Z",
    ] {
        let r = api.query(q).await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some("INVALID_FIELD")),
            "{q}: {}",
            r.text
        );
    }
    // Forms SOQL does not have: MALFORMED_QUERY.
    for bad in [
        "2024-01-31T09:30:00",
        "2024-01-31T09:30:00.000+0000",
        "2024-01-31T9:30:00Z",
        "2024-02-30T09:30:00Z",
    ] {
        let r = api
            .query(&format!("SELECT Id FROM Contact WHERE SystemModstamp > {bad}"))
            .await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some("MALFORMED_QUERY")),
            "{bad}: {}",
            r.text
        );
    }
}

/// A field the describe says is not filterable cannot be in a `WHERE`.
#[tokio::test]
async fn a_field_that_is_not_filterable_is_refused_in_where() {
    let objects = r#"{"objects": [{"name": "Event__c", "keyPrefix": "a01", "fields": [
        {"name": "Name__c", "type": "string"},
        {"name": "Seen_At__c", "type": "datetime", "filterable": false}]}]}"#;
    let api = Api::start(SandboxConfig::default().with_objects_file(objects).unwrap()).await;
    let d = api.call(Method::GET, "sobjects/Event__c/describe", None).await;
    let field = |name: &str| {
        d.json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(field("Seen_At__c")["filterable"], false);
    assert_eq!(field("SystemModstamp")["filterable"], true);
    let r = api
        .query("SELECT Id FROM Event__c WHERE Seen_At__c > 2024-01-31T09:30:00Z")
        .await;
    assert_eq!(
        (r.status, r.json[0]["errorCode"].as_str()),
        (400, Some("INVALID_FIELD")),
        "{}",
        r.text
    );
    assert_eq!(
        r.json[0]["message"],
        "field 'Seen_At__c' can not be filtered in query call"
    );
    // Selecting it is fine.
    let r = api.query("SELECT Id, Seen_At__c FROM Event__c").await;
    assert_eq!(r.status, 200, "{}", r.text);
}

//! The replication resources `updated` and `deleted` (`src/sandbox/replication.rs`,
//! docs/salesforce-protocol.md §6).

use super::*;

#[tokio::test]
async fn updated_and_deleted_list_the_changes_of_a_window_by_system_modstamp() {
    use chrono::{Duration as D, Timelike, Utc};
    let now = Utc::now();
    // Seeded two hours ago, 30 seconds into a minute.
    let then = (now - D::hours(2)).with_second(30).unwrap().with_nanosecond(0).unwrap();
    let stamp = then.to_rfc3339();
    let mut config = SandboxConfig::default();
    let seed: Vec<Map<String, Value>> = ["Deleted", "Updated", "Untouched"]
        .iter()
        .map(|name| {
            json!({"LastName": name, "CreatedDate": stamp, "LastModifiedDate": stamp})
                .as_object()
                .unwrap()
                .clone()
        })
        .collect();
    config.records.insert("Contact".into(), seed);
    let api = Api::start(config).await;
    let id_of = |name: &str| -> String {
        api.sandbox
            .records("Contact")
            .into_iter()
            .find(|r| r["LastName"] == name)
            .unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (deleted, updated, untouched) = (id_of("Deleted"), id_of("Updated"), id_of("Untouched"));
    let r = api
        .call(Method::DELETE, &format!("sobjects/Contact/{deleted}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = api
        .call(
            Method::PATCH,
            &format!("sobjects/Contact/{updated}"),
            Some(json!({"FirstName": "Now"})),
        )
        .await;
    assert_eq!(r.status, 204);
    let created = api
        .call(Method::POST, "sobjects/Contact/", Some(json!({"LastName": "Created"})))
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let window = |what: &str, start: chrono::DateTime<Utc>, end: chrono::DateTime<Utc>| {
        format!(
            "sobjects/Contact/{what}/?start={}&end={}",
            replication_time(start),
            replication_time(end)
        )
    };
    // The last hour, to an end in the future: what was created or updated, not deleted.
    let r = api
        .call(
            Method::GET,
            &window("updated", now - D::hours(1), now + D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: BTreeSet<&str> = r.json["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([updated.as_str(), created.as_str()]));
    let covered = r.json["latestDateCovered"].as_str().unwrap();
    assert!(covered.ends_with(":00.000+0000"), "{covered}");
    let covered = chrono::DateTime::parse_from_str(covered, "%Y-%m-%dT%H:%M:%S%.3f%z").unwrap();
    assert!(covered <= Utc::now() && covered > now - D::minutes(2), "{covered}");
    // Two hours ago: the seconds of `start` are ignored (12:30:45 is 12:30), so the record
    // seeded at :30 is in; the updated one moved out, the deleted one is not listed.
    let r = api
        .call(
            Method::GET,
            &window("updated", then + D::seconds(15), now - D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.json["ids"], json!([untouched]), "{}", r.text);
    assert_eq!(
        r.json["latestDateCovered"],
        json!(format!("{}:00.000+0000", (now - D::hours(1)).format("%Y-%m-%dT%H:%M")))
    );
    // Deleted: the record and when, from the recycle bin.
    let r = api
        .call(
            Method::GET,
            &window("deleted", now - D::hours(1), now + D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = r.json["deletedRecords"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", r.text);
    assert_eq!(list[0]["id"], json!(deleted));
    let when = list[0]["deletedDate"].as_str().unwrap();
    assert!(when > stamp.as_str() && when.ends_with("+0000"), "{when}");
    assert!(r.json["earliestDateAvailable"]
        .as_str()
        .unwrap()
        .ends_with(":00.000+0000"));
    assert!(r.json["latestDateCovered"].is_string());
    let r = api
        .call(
            Method::GET,
            &window("deleted", now - D::hours(3), now - D::hours(1)),
            None,
        )
        .await;
    assert_eq!(r.json["deletedRecords"], json!([]), "{}", r.text);
    // An unencoded `+` (a space once decoded) and the object's name in any case.
    let r = api
        .call(
            Method::GET,
            &format!(
                "SObjects/contact/Updated?start={}&end={}",
                (now - D::hours(1)).format("%Y-%m-%dT%H:%M:%S+00:00"),
                (now + D::hours(1)).format("%Y-%m-%dT%H:%M:%S+00:00")
            ),
            None,
        )
        .await;
    assert_eq!(r.json["ids"].as_array().map(Vec::len), Some(2), "{}", r.text);
    // Windows Salesforce refuses.
    for (path, code) in [
        // :30 and :50 of one minute: the same minute once the seconds are dropped.
        (
            window("updated", then, then + D::seconds(20)),
            "INVALID_REPLICATION_DATE",
        ),
        (window("updated", now, now - D::hours(1)), "INVALID_REPLICATION_DATE"),
        (window("updated", now - D::days(31), now), "INVALID_REPLICATION_DATE"),
        (window("deleted", now - D::days(16), now), "INVALID_REPLICATION_DATE"),
        (
            "sobjects/Contact/updated/?start=yesterday&end=today".to_string(),
            "INVALID_REPLICATION_DATE",
        ),
        ("sobjects/Contact/deleted/".to_string(), "MISSING_ARGUMENT"),
    ] {
        let r = api.call(Method::GET, &path, None).await;
        assert_eq!(
            (r.status, r.json[0]["errorCode"].as_str()),
            (400, Some(code)),
            "{path}: {}",
            r.text
        );
    }
    let r = api
        .call(Method::GET, &window("updated", now - D::days(29), now), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api
        .call(Method::GET, &window("updated", now - D::hours(1), now), None)
        .await;
    let r2 = api
        .call(Method::GET, "sobjects/Nope/updated/?start=x&end=y", None)
        .await;
    assert_eq!((r.status, r2.status), (200, 404));
}

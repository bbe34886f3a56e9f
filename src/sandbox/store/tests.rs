use super::*;
use crate::sandbox::schema::default_contact;
use serde_json::json;

fn contact(store: &Store, v: Value) -> Map<String, Value> {
    let m = v.as_object().unwrap().clone();
    let pairs: Vec<(String, Value)> = m.into_iter().collect();
    store
        .prepare(
            0,
            Access::Create,
            pairs.iter().map(|(k, v)| (k.as_str(), Input::Json(v))),
        )
        .unwrap()
}

#[test]
fn unique_values_required_fields_and_rollback() {
    let mut s = Store::new(vec![default_contact()]);
    let now = Utc::now();
    let mut undo = Vec::new();
    let a = s
        .create(
            0,
            contact(&s, json!({"LastName": "A", "crm_id__c": "X1"})),
            now,
            None,
            &mut undo,
        )
        .unwrap();
    assert_eq!(s.find(0, "Crm_Id__c", &json!("X1")), vec![a.clone()]);
    let dup = s.create(
        0,
        contact(&s, json!({"LastName": "B", "Crm_Id__c": "X1"})),
        now,
        None,
        &mut undo,
    );
    assert_eq!(dup.unwrap_err().errors[0].code, "DUPLICATE_VALUE");
    let missing = s.create(0, contact(&s, json!({"FirstName": "C"})), now, None, &mut undo);
    let e = &missing.unwrap_err().errors[0];
    assert_eq!(
        (e.code, e.message.as_str()),
        ("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]")
    );
    let mut undo2 = Vec::new();
    s.update(0, &a, contact(&s, json!({"Crm_Id__c": "X2"})), now, &mut undo2)
        .unwrap();
    s.delete(0, &a, now, &mut undo2).unwrap();
    assert_eq!(s.existing(0, &a).unwrap_err().code, "ENTITY_IS_DELETED");
    s.rollback(undo2);
    assert_eq!(s.find(0, "Crm_Id__c", &json!("X1")), vec![a.clone()]);
    assert!(s.find(0, "Crm_Id__c", &json!("X2")).is_empty());
    assert!(s.existing(0, &a).is_ok());
    let wrong = s.prepare(
        0,
        Access::Create,
        [
            ("Nope__c", Input::Json(&json!(1))),
            ("CreatedDate", Input::Json(&json!(1))),
        ],
    );
    let codes: Vec<&str> = wrong.unwrap_err().iter().map(|e| e.code).collect();
    assert_eq!(codes, ["INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE"]);
}

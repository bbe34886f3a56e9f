use super::*;
use serde_json::json;

fn plan(policy: ConflictPolicy) -> ConflictPlan {
    let span = crate::diagnostics::Span::file_start(&crate::diagnostics::SourceFile::new("m.yaml", String::new()));
    ConflictPlan {
        policy,
        fields: vec!["Email".into(), "Phone".into()],
        fields_defaulted: false,
        source_modified: Some("modified".into()),
        destination_modified: "LastModifiedDate".into(),
        crm_state_model: None,
        crm_state: None,
        write_back: None,
        crm_state_span: None,
        source_modified_span: span.clone(),
        destination_modified_span: span,
    }
}

fn crm(email: &str, phone: &str, modified: &str) -> CrmRecord {
    let mut values = Map::new();
    values.insert("Email".into(), json!(email));
    values.insert("Phone".into(), json!(phone));
    CrmRecord {
        values,
        modified: Some(json!(modified)),
    }
}

fn base(email: (&str, &str), phone: (&str, &str)) -> Base {
    let mut b = Base::new();
    b.insert("Email".into(), agreed(&json!(email.0), &json!(email.1)));
    b.insert("Phone".into(), agreed(&json!(phone.0), &json!(phone.1)));
    b
}

fn payload(email: &str, phone: &str, modified: &str) -> String {
    json!({"$ebb_modified": modified, "Email": email, "Ext__c": "1", "Phone": phone}).to_string()
}

fn run(policy: ConflictPolicy, p: &str, b: Option<&Base>, c: Option<&CrmRecord>) -> Checked {
    let cp = plan(policy);
    RowCheck {
        plan: &cp,
        model: "m",
        key_field: "Ext__c",
        run_id: 7,
        now_ms: 1000,
    }
    .check("1", p, b, c)
}

fn written(c: &Checked) -> Value {
    match &c.decision {
        Decision::Write { payload, .. } => serde_json::from_str(payload).unwrap(),
        other => panic!("not a write: {other:?}"),
    }
}

const T1: &str = "2026-01-01T10:00:00Z";
const T2: &str = "2026-01-01T11:00:00.000+0000";

#[test]
fn only_the_warehouse_changed_writes_without_a_conflict() {
    let b = base(("a@x", "a@x"), ("1", "1"));
    let c = run(
        ConflictPolicy::ManualReview,
        &payload("b@x", "1", T1),
        Some(&b),
        Some(&crm("a@x", "1", T2)),
    );
    assert!(c.conflicts.is_empty());
    // A two-way field the warehouse did not change is not written: the CRM holds it.
    assert_eq!(written(&c), json!({"Email": "b@x", "Ext__c": "1"}));
}

#[test]
fn only_the_crm_changed_leaves_its_field_out() {
    let b = base(("a@x", "a@x"), ("1", "1"));
    let c = run(
        ConflictPolicy::ManualReview,
        &payload("a@x", "2", T1),
        Some(&b),
        Some(&crm("c@x", "1", T2)),
    );
    assert!(c.conflicts.is_empty());
    assert_eq!(written(&c), json!({"Ext__c": "1", "Phone": "2"}));
    // The CRM's value is the new agreement.
    let Decision::Write { base, .. } = &c.decision else {
        panic!()
    };
    assert_eq!(base["Email"].c, Some(json!("c@x")));
}

#[test]
fn nothing_left_to_write_settles_the_row() {
    let b = base(("a@x", "a@x"), ("1", "1"));
    let c = run(
        ConflictPolicy::ManualReview,
        &payload("a@x", "1", T1),
        Some(&b),
        Some(&crm("c@x", "1", T2)),
    );
    assert!(matches!(c.decision, Decision::Settle { .. }), "{:?}", c.decision);
}

#[test]
fn one_way_fields_are_written_unless_they_are_as_last_settled() {
    let cp = plan(ConflictPolicy::ManualReview);
    let check = RowCheck {
        plan: &cp,
        model: "m",
        key_field: "Ext__c",
        run_id: 7,
        now_ms: 1000,
    };
    let row = |name: &str| {
        json!({"$ebb_modified": T1, "Email": "a@x", "Ext__c": "1", "LastName": name, "Phone": "1"}).to_string()
    };
    // The first write: everything, and the one-way fields' hash is kept.
    let first = check.check("1", &row("Ann"), None, None);
    let Decision::Write { base, .. } = first.decision else {
        panic!()
    };
    // The CRM changed Email since: nothing of the row changed in the warehouse.
    let crm = crm("c@x", "1", T2);
    assert!(matches!(
        check.check("1", &row("Ann"), Some(&base), Some(&crm)).decision,
        Decision::Settle { .. }
    ));
    // The one-way LastName changed: written, without the two-way fields.
    let c = check.check("1", &row("Bob"), Some(&base), Some(&crm));
    assert_eq!(written(&c), json!({"Ext__c": "1", "LastName": "Bob"}));
}

#[test]
fn each_policy_decides_a_conflict() {
    let b = base(("a@x", "a@x"), ("1", "1"));
    let p = payload("w@x", "1", T1);
    let cr = crm("c@x", "1", T2);
    let wh = run(ConflictPolicy::WarehouseWins, &p, Some(&b), Some(&cr));
    assert_eq!(written(&wh)["Email"], json!("w@x"));
    assert_eq!(wh.conflicts[0].winner, Some(Side::Warehouse));
    assert_eq!(wh.conflicts[0].status, ConflictStatus::Decided);
    let cw = run(ConflictPolicy::CrmWins, &p, Some(&b), Some(&cr));
    assert!(matches!(cw.decision, Decision::Settle { .. }));
    assert_eq!(cw.conflicts[0].winner, Some(Side::Crm));
    // CRM newer (T2 > T1).
    let nw = run(ConflictPolicy::NewestWins, &p, Some(&b), Some(&cr));
    assert_eq!(nw.conflicts[0].winner, Some(Side::Crm));
    assert_eq!(nw.conflicts[0].reason, "CRM newer");
    // Warehouse newer.
    let nw = run(
        ConflictPolicy::NewestWins,
        &payload("w@x", "1", "2026-01-01 12:00:00"),
        Some(&b),
        Some(&cr),
    );
    assert_eq!(nw.conflicts[0].winner, Some(Side::Warehouse));
    assert_eq!(written(&nw)["Email"], json!("w@x"));
    // A tie, and a missing time, go to review.
    let tie = run(
        ConflictPolicy::NewestWins,
        &payload("w@x", "1", "2026-01-01T11:00:00"),
        Some(&b),
        Some(&cr),
    );
    assert_eq!(tie.decision, Decision::Hold);
    assert_eq!(tie.conflicts[0].status, ConflictStatus::Open);
    let none = run(
        ConflictPolicy::NewestWins,
        &json!({"Email": "w@x", "Ext__c": "1", "Phone": "1"}).to_string(),
        Some(&b),
        Some(&cr),
    );
    assert_eq!(none.decision, Decision::Hold);
    let mr = run(ConflictPolicy::ManualReview, &p, Some(&b), Some(&cr));
    assert_eq!(mr.decision, Decision::Hold);
    assert_eq!(mr.conflicts[0].crm_value, json!("c@x"));
    assert_eq!(mr.conflicts[0].warehouse_value, json!("w@x"));
}

#[test]
fn without_a_base_a_difference_is_a_conflict_and_no_record_is_none() {
    let p = payload("w@x", "1", T1);
    let c = run(ConflictPolicy::ManualReview, &p, None, Some(&crm("c@x", "1", T2)));
    assert_eq!(c.decision, Decision::Hold);
    assert_eq!(c.conflicts.len(), 1);
    let c = run(ConflictPolicy::ManualReview, &p, None, None);
    assert!(c.conflicts.is_empty());
    assert_eq!(written(&c)["Email"], json!("w@x"));
}

#[test]
fn values_compare_as_the_crm_keeps_them() {
    assert!(same(&json!(null), &json!("")));
    assert!(same(&json!(12.5), &json!("12.50")));
    assert!(same(&json!(3), &json!(3.0)));
    assert!(same(&json!(true), &json!("true")));
    assert!(same(
        &json!("2026-01-01T10:00:00Z"),
        &json!("2026-01-01T10:00:00.000+0000")
    ));
    assert!(!same(&json!("a"), &json!("A")));
    assert!(!same(&json!(null), &json!("x")));
}

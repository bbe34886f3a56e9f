//! `ebb demo`: the quickstart on a copy of the example project.

use crate::support::{copy_tree, ebb, repo, stderr, stdout};

fn example_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("ebb.yaml"), dir.path().join("ebb.yaml")).unwrap();
    copy_tree(&repo().join("models"), &dir.path().join("models"));
    dir
}

#[test]
fn demo_builds_the_warehouse_and_previews_every_outbound_model() {
    let dir = example_project();
    let o = ebb(dir.path(), &["demo", "--customers", "500"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.starts_with("built the demo warehouse warehouse.duckdb (connection `warehouse`): 500 customers, "),
        "{out}"
    );
    assert!(
        out.contains("validated 4 models against the warehouse: 0 errors"),
        "{out}"
    );
    for model in ["customer_segments", "churn_risk", "high_value_export"] {
        assert!(out.contains(&format!("model {model} → ")), "{model} missing:\n{out}");
    }
    assert!(out.contains("Customer_Segment__c  LTV__c   Upsell_Score__c"), "{out}");
    assert!(!out.contains("invalid ("), "{out}");
    // The file export really runs: one JSON Lines file with every high-value customer.
    let line = out
        .lines()
        .find(|l| l.starts_with("ebb run high_value_export: succeeded"))
        .unwrap_or_else(|| panic!("no run of high_value_export:\n{out}"));
    let exported = std::fs::read_to_string(dir.path().join("exports/high_value_export-1.jsonl")).unwrap();
    assert!(exported.lines().count() > 0);
    assert!(line.contains(&format!("sent {}", exported.lines().count())), "{line}");
    // A second run reuses the warehouse, and sends nothing: nothing changed.
    let o = ebb(dir.path(), &["demo"]);
    let again = stdout(&o);
    assert!(
        again.starts_with("using the demo warehouse warehouse.duckdb"),
        "{again}"
    );
    assert!(
        again.contains("ebb run high_value_export: succeeded") && again.contains("sent 0, confirmed 0"),
        "{again}"
    );
    // The models validate against it, and preview maps JSON paths and transforms.
    let o = ebb(dir.path(), &["validate", "--connect"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = ebb(
        dir.path(),
        &["preview", "customer_segments", "-n", "5", "--format", "json"],
    );
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        let r = &l["record"];
        assert!(
            r["Upsell_Score__c"].as_f64().is_some_and(|v| (0.0..1.0).contains(&v)),
            "{l}"
        );
        let ltv = r["LTV__c"].to_string();
        assert!(ltv.split('.').nth(1).is_none_or(|d| d.len() <= 2), "{ltv}");
        assert!(["Enterprise", "Mid-Market", "SMB", "Consumer"].contains(&r["Customer_Segment__c"].as_str().unwrap()));
    }
}

#[test]
fn the_same_seed_builds_the_same_warehouse() {
    let dir = tempfile::tempdir().unwrap();
    let digest = |path: &std::path::Path| -> String {
        let conn = duckdb::Connection::open(path).unwrap();
        conn.query_row(
            "SELECT md5(string_agg(crm_id || customer_segment || lifetime_value || churn_risk_score, ',' ORDER BY customer_id))
             FROM presentation.customer_360",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let a = dir.path().join("a.duckdb");
    let b = dir.path().join("b.duckdb");
    ebb::demo::build_warehouse(&a, 1000, 7).unwrap();
    ebb::demo::build_warehouse(&b, 1000, 7).unwrap();
    assert_eq!(digest(&a), digest(&b));
    ebb::demo::build_warehouse(&b, 1000, 8).unwrap();
    assert_ne!(digest(&a), digest(&b));
}

//! `ebb demo`: the quickstart on a copy of the example project.

use crate::support::{copy_tree, ebb, repo, stderr, stdout};

fn example_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // The sandbox on a free port, so that tests (or a running `ebb sandbox`) do not collide.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let project = std::fs::read_to_string(repo().join("ebb.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8787", &format!("http://127.0.0.1:{port}"));
    std::fs::write(dir.path().join("ebb.yaml"), project).unwrap();
    copy_tree(&repo().join("models"), &dir.path().join("models"));
    dir
}

/// Points the project's `salesforce` and `hubspot` connections at the sandbox at `url`.
fn point_at(dir: &std::path::Path, url: &str) {
    let mut project = std::fs::read_to_string(dir.join("ebb.yaml")).unwrap();
    for setting in ["instance_url: ", "base_url: "] {
        let start = project.find(setting).unwrap() + setting.len();
        let end = start + project[start..].find([' ', '\n']).unwrap();
        project = format!("{}{url}{}", &project[..start], &project[end..]);
    }
    std::fs::write(dir.join("ebb.yaml"), project).unwrap();
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
        out.contains("validated 8 models against the warehouse: 0 errors"),
        "{out}"
    );
    // The webhook models come with a signed `curl`; the reference library verifies it.
    let curl: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("curl -i http://127.0.0.1:7878/webhooks/crm_customer_events"))
        .take(4)
        .collect();
    assert_eq!(curl.len(), 4, "{out}");
    let text = curl.join("\n");
    let quoted = |name: &str| -> String {
        let start = text
            .find(&format!("'{name}: "))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            + name.len()
            + 3;
        text[start..start + text[start..].find('\'').unwrap()].to_string()
    };
    let body = {
        let start = text.find("-d '").unwrap() + 4;
        &text[start..start + text[start..].find('\'').unwrap()]
    };
    let mut headers = axum::http::HeaderMap::new();
    for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(h, quoted(h).parse().unwrap());
    }
    standardwebhooks::Webhook::new(ebb::cli::DEMO_WEBHOOK_SECRET)
        .unwrap()
        .verify(body.as_bytes(), &headers)
        .expect("the demo's curl carries a valid signature");
    assert!(body.contains("\"event_type\":\"customer.created\""), "{body}");
    for model in [
        "customer_segments",
        "churn_risk",
        "high_value_export",
        "hubspot_contacts",
    ] {
        assert!(out.contains(&format!("model {model} → ")), "{model} missing:\n{out}");
    }
    assert!(out.contains("Customer_Segment__c  LTV__c   Upsell_Score__c"), "{out}");
    assert!(!out.contains("invalid ("), "{out}");
    // The sandbox starts with a Contact per CRM customer, and the Salesforce models update
    // them for real.
    assert!(
        out.contains("(connection `salesforce`) with 500 Contacts, one per CRM customer"),
        "{out}"
    );
    for model in ["customer_segments", "churn_risk"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("ebb run {model}: ")))
            .unwrap_or_else(|| panic!("no run of {model}:\n{out}"));
        assert!(line.starts_with(&format!("ebb run {model}: succeeded")), "{line}");
        assert!(!line.contains("confirmed 0"), "{line}");
    }
    // The same customers land in the sandbox's HubSpot API, one contact per flagged one.
    let flagged: u64 = out
        .lines()
        .next()
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the flagged count in {out}"));
    let line = out
        .lines()
        .find(|l| l.starts_with("ebb run hubspot_contacts: "))
        .unwrap_or_else(|| panic!("no run of hubspot_contacts:\n{out}"));
    assert!(
        line.starts_with("ebb run hubspot_contacts: succeeded") && line.contains(&format!("confirmed {flagged}")),
        "{line}"
    );
    // The file export really runs: one JSON Lines file with every high-value customer.
    let line = out
        .lines()
        .find(|l| l.starts_with("ebb run high_value_export: succeeded"))
        .unwrap_or_else(|| panic!("no run of high_value_export:\n{out}"));
    let file = std::fs::read_dir(dir.path().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("high_value_export-")
        })
        .expect("the export file");
    let exported = std::fs::read_to_string(file).unwrap();
    assert!(exported.lines().count() > 0);
    assert!(line.contains(&format!("sent {}", exported.lines().count())), "{line}");
    // The inbound model reads every Contact back into raw.crm_customers, after them.
    assert!(
        out.contains("ebb run crm_contacts_inbound: succeeded") && out.contains("read 500 from the CRM, written 500"),
        "{out}"
    );
    {
        let c = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
        let (n, emails): (i64, i64) = c
            .query_row(
                "SELECT count(*), count(email) FROM raw.crm_customers WHERE NOT is_deleted",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((n, emails), (500, 500));
    }
    // A second run reuses the warehouse, and sends nothing: nothing changed.
    let o = ebb(dir.path(), &["demo"]);
    let again = stdout(&o);
    assert!(
        again.starts_with("using the demo warehouse warehouse.duckdb"),
        "{again}"
    );
    for model in ["customer_segments", "churn_risk", "high_value_export"] {
        assert!(
            again
                .lines()
                .any(|l| l.starts_with(&format!("ebb run {model}: succeeded")) && l.contains("sent 0, confirmed 0")),
            "{model}: {again}"
        );
    }
    // Nor does it read anything new back.
    assert!(
        again.contains("ebb run crm_contacts_inbound: succeeded") && again.contains("read 0 from the CRM, written 0"),
        "{again}"
    );
    // With the demo gone, its sandbox is too: `validate --connect` says the connection is down.
    let o = ebb(dir.path(), &["validate", "--connect"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("error[E901]: connection `salesforce`"),
        "{}",
        stdout(&o)
    );
    // Against a running sandbox, every model validates against both systems.
    let sandbox = ebb::sandbox::Sandbox::start_in_thread(ebb::sandbox::SandboxConfig::default());
    point_at(dir.path(), &sandbox.url());
    let o = ebb(dir.path(), &["validate", "--connect"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Preview maps JSON paths and transforms.
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

/// The seed's `customer_segments` model, from the demo warehouse into the sandbox: the first
/// sync (over 10,000 rows) goes through Bulk API 2.0, a 1% change through Collections in
/// ceil(changed / 200) calls, and the sandbox ends up holding exactly the mapped rows.
#[test]
fn customer_segments_syncs_from_the_demo_warehouse_into_the_sandbox() {
    use ebb::sandbox::{Sandbox, SandboxConfig};
    let dir = example_project();
    ebb::demo::build_warehouse(&dir.path().join("warehouse.duckdb"), 12_000, 42).unwrap();
    // The org: a Contact for every customer, as `ebb demo` seeds it.
    let db = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    let mut contacts = Vec::new();
    {
        let mut stmt = db
            .prepare("SELECT crm_id, last_name FROM presentation.customer_360")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap();
        for row in rows {
            let (id, last) = row.unwrap();
            let mut m = serde_json::Map::new();
            m.insert("Id".into(), id.into());
            m.insert("LastName".into(), last.into());
            contacts.push(m);
        }
    }
    drop(db);
    let mut config = SandboxConfig::default();
    config.records.insert("Contact".into(), contacts);
    let sandbox = Sandbox::start_in_thread(config);
    point_at(dir.path(), &sandbox.url());

    let run = |args: &[&str]| {
        let o = ebb(
            dir.path(),
            &[&["run", "customer_segments", "--format", "json"], args].concat(),
        );
        let v: serde_json::Value =
            serde_json::from_str(stdout(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
        (o.status.code(), v["runs"][0].clone())
    };
    let (code, first) = run(&[]);
    assert_eq!(code, Some(0), "{first}");
    let sent = first["counts"]["sent"].as_u64().unwrap();
    assert!(sent > 10_000, "{first}");
    assert!(
        sandbox.calls_to("bulk") >= 5,
        "over 10,000 rows go through Bulk API 2.0"
    );
    assert_eq!(sandbox.calls_to("collections"), 0);

    // The sandbox holds what `preview` says the model sends.
    let check = |context: &str| {
        let o = ebb(
            dir.path(),
            &["preview", "customer_segments", "-n", "20000", "--format", "json"],
        );
        let held: std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>> = sandbox
            .records("Contact")
            .into_iter()
            .map(|r| (r["Id"].as_str().unwrap().to_string(), r))
            .collect();
        let mut n = 0;
        for line in stdout(&o).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let rec = &v["record"];
            let h = &held[v["key"].as_str().unwrap()];
            for field in ["Customer_Segment__c", "LTV__c", "Upsell_Score__c"] {
                let (want, got) = (&rec[field], h.get(field).unwrap_or(&serde_json::Value::Null));
                let same = match (want.as_f64(), got.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                    _ => want == got,
                };
                assert!(same, "{context}: {} {field}: model {want}, sandbox {got}", v["key"]);
            }
            n += 1;
        }
        assert_eq!(n as u64, sent, "{context}");
    };
    check("after the Bulk first sync");

    // 1%: Collections, ceil(changed / 200) calls.
    let db = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    db.execute_batch(
        "UPDATE presentation.customer_analytics SET customer_segment = 'Enterprise'
         WHERE customer_id % 100 = 1 AND customer_segment <> 'Enterprise' AND sync_to_crm",
    )
    .unwrap();
    drop(db);
    let before = sandbox.calls_to("collections");
    let (code, second) = run(&[]);
    assert_eq!(code, Some(0), "{second}");
    let changed = second["counts"]["changed"].as_u64().unwrap();
    assert!(changed > 50, "{second}");
    assert_eq!(
        second["counts"]["api_calls"].as_u64().unwrap(),
        changed.div_ceil(200),
        "{second}"
    );
    assert_eq!(sandbox.calls_to("collections") - before, changed.div_ceil(200));
    check("after a 1% change");
}

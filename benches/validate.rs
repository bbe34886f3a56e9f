//! Benchmark: `ebb validate` over a project of 1,000 model files.
//!
//! Run: `cargo bench --bench validate` (release build). The target is under one second
//! for the whole project: parse, schema, SQL parse and every semantic check.

use std::time::{Duration, Instant};

const FILES: usize = 1000;

fn model(i: usize) -> String {
    let schedule = if i.is_multiple_of(2) {
        "      interval: hourly\n      timezone: UTC\n".to_string()
    } else {
        format!(
            "      cron: \"{} 6 * * MON-FRI\"\n      timezone: Europe/Berlin\n",
            i % 60
        )
    };
    format!(
        "# yaml-language-server: $schema=../schemas/model.schema.json
models:
  - name: model_{i:04}
    description: Generated model number {i}
    source:
      type: duckdb
      query: |
        SELECT crm_id, first_name, last_name, email, phone, lifetime_value, churn_risk_score, scores
        FROM presentation.customer_360_{i}
        WHERE sync_to_crm = TRUE AND updated_at > now() - INTERVAL 1 DAY
    destination:
      type: salesforce
      object: Contact
      mode: upsert
      unique_identifier: crm_id
      external_id_field: Warehouse_Id__c
    mappings:
      - source: crm_id
        destination: Warehouse_Id__c
      - source: first_name
        destination: FirstName
        transform: initcap
      - source: email
        destination: Email
        transform: [trim, lower]
      - source: phone
        destination: Phone
        transform: phone
      - source: lifetime_value
        destination: LTV__c
        transform: round(2)
      - source: churn_risk_score
        destination: Churn_Risk__c
        transform:
          - scale(0, 1, 0, 100)
          - round(1)
      - source: scores.upsell
        destination: Upsell_Score__c
      - source: $.scores.history[0]
        destination: Last_Score__c
    schedule:
{schedule}    guard:
      max_change_ratio: 0.5
      max_deletes: 1000
"
    )
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::write(
        root.join("ebb.yaml"),
        "version: 1
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  salesforce:
    type: salesforce
    instance_url: https://acme.my.salesforce.com
    api_version: \"62.0\"
    auth:
      flow: client_credentials
      client_id: ${SF_CLIENT_ID:-x}
      client_secret: ${SF_CLIENT_SECRET:-x}
    rate_limit: 1000/hour
",
    )
    .unwrap();
    std::fs::create_dir(root.join("models")).unwrap();
    let mut bytes = 0;
    for i in 0..FILES {
        let text = model(i);
        bytes += text.len();
        std::fs::write(root.join("models").join(format!("model_{i:04}.yaml")), text).unwrap();
    }

    // One warm-up run (compiles the JSON-schema validators), then timed runs.
    let report = ebb::validate::validate(root, &[]).expect("loads");
    assert_eq!(
        report.plans.len(),
        FILES,
        "every generated model must be valid: {:#?}",
        &report.diagnostics[..report.diagnostics.len().min(3)]
    );
    let mut times: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let r = ebb::validate::validate(root, &[]).expect("loads");
            let e = t.elapsed();
            assert_eq!(r.plans.len(), FILES);
            e
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let min = times[0];
    println!(
        "validate: {FILES} model files ({:.1} MiB), median {:.3} s, min {:.3} s, {:.0} files/s  (target < 1 s: {})",
        bytes as f64 / (1024.0 * 1024.0),
        median.as_secs_f64(),
        min.as_secs_f64(),
        FILES as f64 / median.as_secs_f64(),
        if median < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}

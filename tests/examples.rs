//! Every shipped model validates, and so does the seed's own example, unchanged.

use crate::support::{fixtures, repo};
use ebb::diagnostics::Severity;

#[test]
fn every_model_in_models_validates_without_errors_or_warnings() {
    let report = ebb::validate::validate(&repo(), &[]).unwrap();
    let problems: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let files = ebb::config::files::model_files(&repo().join("models"));
    assert!(files.len() >= 3, "models/ holds {} files", files.len());
    // Every model compiled to a plan.
    assert_eq!(report.plans.len(), report.models.len());
    for name in ["customer_segments", "churn_risk", "crm_contacts_inbound"] {
        assert!(report.model_names().contains(&name), "models/ lacks `{name}`");
    }
}

#[test]
fn example_files_point_editors_at_the_schema() {
    for f in ebb::config::files::model_files(&repo().join("models")) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/model.schema.json\n"),
            "{} does not start with the schema line",
            f.display()
        );
    }
    let project = std::fs::read_to_string(repo().join("ebb.yaml")).unwrap();
    assert!(project.starts_with("# yaml-language-server: $schema=schemas/project.schema.json\n"));
}

#[test]
fn the_seed_example_validates_unchanged() {
    // tests/fixtures/seed/models/customer_segments.yaml is the YAML example of the brief ebb
    // was built from, byte for byte (checked against it when this test was written), and
    // stays so: it is what analysts coming from Hightouch or Census write.
    let report = ebb::validate::validate(&fixtures().join("seed"), &[]).unwrap();
    let errors: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(report.plans.len(), 1);
    let plan = &report.plans[0];
    assert_eq!(plan.source.connection, "snowflake");
    assert_eq!(plan.destination.key_field, "Id");
    // Upsert by record Id is an update in Salesforce: validate says so in a note.
    let note = report
        .diagnostics
        .iter()
        .find(|d| d.code == ebb::diagnostics::Code::UpsertById)
        .expect("a note");
    assert_eq!(note.severity, Severity::Note);
}

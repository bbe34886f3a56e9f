//! Inbound models (CRM → warehouse table) as compiled: the defaults, the effective cursor,
//! the fields read, the deleted column and the direction, from real model files validated
//! against the fixture project; and `ebb plan` printing them. The diagnostics each have a
//! fixture in tests/fixtures/invalid (`inbound_*`).

use crate::support::{ebb, fixtures, repo, stderr, stdout};
use ebb::config::model::{OnDeleted, ReadApi};
use ebb::config::Mode;
use ebb::diagnostics::{Code, Severity};
use ebb::plan::{Direction, SyncPlan};
use std::time::Duration;

/// Validates `models` (one model file) in a copy of the fixture project; returns the one
/// plan and every diagnostic.
fn compile(model: &str) -> (Option<SyncPlan>, Vec<ebb::diagnostics::Diagnostic>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("project/ebb.yaml"), dir.path().join("ebb.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/m.yaml"), model).unwrap();
    let report = ebb::validate::validate(dir.path(), &[]).unwrap();
    assert!(report.plans.len() <= 1);
    (report.plans.into_iter().next(), report.diagnostics)
}

fn model(source_extra: &str, destination_extra: &str, mappings: &str) -> String {
    format!(
        "models:
  - name: inbound
    source:
      type: salesforce
      object: Contact
{source_extra}    destination:
      type: postgres
      connection: analytics_pg
      table: raw.contacts
      unique_identifier: Id
{destination_extra}    mappings:
{mappings}"
    )
}

const MAPPINGS: &str = "      - source: Id
        destination: crm_id
      - source: Email
        destination: email
";

#[test]
fn an_inbound_model_without_options_gets_the_documented_defaults() {
    let (plan, diags) = compile(&model("", "", MAPPINGS));
    let plan = plan.unwrap_or_else(|| panic!("{diags:#?}"));
    assert_eq!(plan.direction(), Direction::Inbound);
    let read = plan.source.read.as_ref().unwrap();
    assert_eq!(read.cursor.as_deref(), Some("SystemModstamp"));
    assert!(read.cursor_defaulted);
    assert_eq!(read.lookback, Duration::from_secs(600));
    assert_eq!(read.settle, Duration::from_secs(5));
    assert_eq!(read.api, ReadApi::Auto);
    // The fixture's salesforce connection sets no bulk_threshold: the destination's default.
    assert_eq!(read.bulk_threshold, 10_000);
    // No `fields`: the mappings' source fields, then what every read needs.
    assert_eq!(plan.source.fields, ["Id", "Email", "IsDeleted", "SystemModstamp"]);
    assert_eq!(plan.source.added_fields, ["IsDeleted", "SystemModstamp"]);
    assert_eq!(plan.source.incremental, None);
    let d = &plan.destination;
    assert_eq!(d.mode, Mode::Upsert);
    assert_eq!(d.key_column, "Id");
    assert_eq!(d.key_field, "crm_id");
    assert_eq!(d.on_deleted, Some(OnDeleted::Soft));
    assert_eq!(d.deleted_column.as_deref(), Some("is_deleted"));
    assert!(d.deleted_column_added);
    // An incremental read has no snapshot guard.
    assert!(!plan.guard.is_set());
    // The cursor note is the only diagnostic, at the `source` key.
    let shown: Vec<(Code, usize, usize)> = diags.iter().map(|d| (d.code, d.span.line, d.span.col)).collect();
    assert_eq!(shown, [(Code::CursorSystemModstamp, 3, 5)]);
    assert_eq!(diags[0].severity, Severity::Note);
}

#[test]
fn written_options_land_in_the_plan() {
    let (plan, diags) = compile(&model(
        "      fields: [Id, Email, CreatedDate]
      incremental: CreatedDate
      lookback: 2h
      settle: 0s
      api: bulk
",
        "      mode: append
      on_deleted: soft
",
        "      - source: Id
        destination: crm_id
      - source: Email
        destination: email
      - source: IsDeleted
        destination: deleted
      - source: CreatedDate
        destination: created_at
",
    ));
    let plan = plan.unwrap_or_else(|| panic!("{diags:#?}"));
    // Any cursor but LastModifiedDate is used as written, without a note.
    assert!(diags.is_empty(), "{diags:#?}");
    let read = plan.source.read.as_ref().unwrap();
    assert_eq!(read.cursor.as_deref(), Some("CreatedDate"));
    assert!(!read.cursor_defaulted);
    assert_eq!(read.lookback, Duration::from_secs(7200));
    assert_eq!(read.settle, Duration::ZERO);
    assert_eq!(read.api, ReadApi::Bulk);
    assert_eq!(plan.source.incremental.as_deref(), Some("CreatedDate"));
    // IsDeleted is mapped, so it is not "added" to the table, only to the fields read.
    assert_eq!(plan.source.fields, ["Id", "Email", "CreatedDate", "IsDeleted"]);
    assert_eq!(plan.source.added_fields, ["IsDeleted"]);
    assert_eq!(plan.destination.mode, Mode::Append);
    // Versions are told apart by the column the cursor is mapped to.
    assert_eq!(plan.destination.version_column.as_deref(), Some("created_at"));
    assert_eq!(plan.destination.deleted_column.as_deref(), Some("deleted"));
    assert!(!plan.destination.deleted_column_added);
}

#[test]
fn incremental_off_is_a_full_read_and_allows_mirror_with_its_guard() {
    let (plan, diags) = compile(&model(
        "      incremental: off\n",
        "      mode: mirror\n      on_deleted: hard\n",
        MAPPINGS,
    ));
    let plan = plan.unwrap_or_else(|| panic!("{diags:#?}"));
    let read = plan.source.read.as_ref().unwrap();
    assert_eq!(read.cursor, None);
    assert!(!read.cursor_defaulted);
    // No cursor to add: only Id and IsDeleted.
    assert_eq!(plan.source.fields, ["Id", "Email", "IsDeleted"]);
    assert_eq!(plan.destination.on_deleted, Some(OnDeleted::Hard));
    assert_eq!(plan.destination.deleted_column, None);
    // A full-read mirror deletes rows: the default delete guard applies (N504).
    assert_eq!(plan.guard.max_deletes, Some(10_000));
    let codes: Vec<Code> = diags.iter().map(|d| d.code).collect();
    assert_eq!(codes, [Code::DefaultDeleteGuard]);
}

#[test]
fn a_mapping_may_read_the_fields_every_read_adds() {
    // `fields` leaves out Id, IsDeleted and the cursor, yet mapping them is no error: they
    // are read anyway.
    let (plan, diags) = compile(&model(
        "      fields: [Email]\n      incremental: SystemModstamp\n",
        "",
        "      - source: Id
        destination: crm_id
      - source: Email
        destination: email
      - source: SystemModstamp
        destination: modstamp
",
    ));
    let plan = plan.unwrap_or_else(|| panic!("{diags:#?}"));
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(plan.source.fields, ["Email", "Id", "IsDeleted", "SystemModstamp"]);
    assert_eq!(plan.source.added_fields, ["Id", "IsDeleted", "SystemModstamp"]);
}

#[test]
fn outbound_plans_are_outbound_and_carry_no_inbound_parts() {
    let report = ebb::validate::validate(&repo(), &[]).unwrap();
    for plan in &report.plans {
        let webhook = plan.source.webhook.is_some();
        let inbound = ["crm_contacts_inbound", "hubspot_contacts_inbound"].contains(&plan.name.as_str()) || webhook;
        assert_eq!(plan.direction() == Direction::Inbound, inbound, "{}", plan.name);
        assert_eq!(
            webhook,
            ["crm_customer_events", "sandbox_contact_events"].contains(&plan.name.as_str()),
            "{}",
            plan.name
        );
        if webhook {
            assert!(plan.source.read.is_none(), "{}", plan.name);
        }
        if !inbound {
            assert!(plan.source.read.is_none() && plan.source.fields.is_empty());
            assert_eq!(plan.destination.on_deleted, None);
            assert_eq!(plan.destination.deleted_column, None);
        }
    }
}

#[test]
fn a_snowflake_table_destination_validates() {
    let (plan, diags) = compile(&model("", "", MAPPINGS).replace(
        "      type: postgres\n      connection: analytics_pg\n",
        "      type: snowflake\n",
    ));
    let plan = plan.unwrap_or_else(|| panic!("{diags:#?}"));
    assert_eq!(plan.destination.table.as_deref(), Some("raw.contacts"));
}

#[test]
fn plan_shows_the_inbound_example_read_and_write() {
    let o = ebb(&repo(), &["plan", "crm_contacts_inbound"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "source:       connection `salesforce` (salesforce)\n",
        "  object:     Contact\n",
        "  fields:     Id, FirstName, LastName, Email, Phone, AccountId, Custom_Field__c, LastModifiedDate, IsDeleted, SystemModstamp (added)\n",
        "  cursor:     SystemModstamp (for LastModifiedDate: indexed, moves on system updates too, never earlier)\n",
        "  window:     SystemModstamp >= watermark - 10m (lookback) and < run start - 5s (settle); the first run reads everything\n",
        "  read api:   auto: REST query below 10000 records, Bulk API 2.0 query jobs at or above\n",
        "destination:  connection `warehouse` (duckdb) → raw.crm_customers\n",
        "  mode:       upsert\n",
        "  on_deleted: soft: the row stays, column `is_deleted` set true\n",
        "  key:        field `Id` → column `crm_id`\n",
        "  batches:    50000 rows per write\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("on_removed"), "{out}");
}

#[test]
fn plan_json_of_the_inbound_example() {
    let o = ebb(&repo(), &["plan", "crm_contacts_inbound", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let p = &v[0];
    assert_eq!(p["direction"], "inbound");
    assert_eq!(
        p["source"]["read"],
        serde_json::json!({
            "cursor": "SystemModstamp",
            "cursor_defaulted": true,
            "lookback_secs": 600,
            "settle_secs": 5,
            "api": "auto",
            "bulk_threshold": 10000,
        })
    );
    assert_eq!(p["source"]["added_fields"], serde_json::json!(["SystemModstamp"]));
    assert_eq!(p["destination"]["on_deleted"], "soft");
    assert_eq!(p["destination"]["deleted_column"], "is_deleted");
    assert_eq!(p["destination"]["deleted_column_added"], false);
    assert_eq!(p["destination"]["key_field"], "crm_id");
}

#[test]
fn a_hubspot_source_reads_by_hs_lastmodifieddate_and_adds_id_archived_and_the_cursor() {
    let m = "models:
  - name: hs_in
    source:
      type: hubspot
      object: contacts
      fields: [email]
      api: bulk
    destination:
      type: postgres
      connection: analytics_pg
      table: raw.hs_contacts
      unique_identifier: id
    mappings:
      - source: id
        destination: hubspot_id
      - source: email
        destination: email
      - source: archived
        destination: gone
";
    let (plan, diags) = compile(m);
    let plan = plan.unwrap_or_else(|| panic!("{diags:#?}"));
    assert_eq!(plan.direction(), Direction::Inbound);
    let read = plan.source.read.as_ref().unwrap();
    assert_eq!(read.cursor.as_deref(), Some("hs_lastmodifieddate"));
    assert!(!read.cursor_defaulted, "no SystemModstamp note for HubSpot");
    assert_eq!(plan.source.fields, ["email", "id", "archived", "hs_lastmodifieddate"]);
    assert_eq!(plan.source.added_fields, ["id", "archived", "hs_lastmodifieddate"]);
    // `archived` mapped: that column is the deleted one, no `is_deleted` added.
    assert_eq!(plan.destination.deleted_column.as_deref(), Some("gone"));
    // `api` means nothing to HubSpot, and says so.
    let w: Vec<_> = diags.iter().filter(|d| d.code == Code::IrrelevantField).collect();
    assert_eq!(w.len(), 1, "{diags:#?}");
    assert!(w[0].message.contains("search API"), "{}", w[0].message);
    assert!(!diags.iter().any(|d| d.severity == Severity::Error), "{diags:#?}");
}

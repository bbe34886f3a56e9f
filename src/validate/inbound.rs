//! `ebb validate --connect` for inbound models (CRM → warehouse table): the object is
//! described, so a field it does not have is reported here; the table's columns are
//! derived from the describe and the transforms as a run derives them; and the table,
//! when it exists, is checked against them, so a table that cannot hold the rows is an
//! error before any run, not a failed write during one.

use crate::config::{ConnectionSpec, ProjectSpec};
use crate::destination::table::{TableCheck, TableWriter};
use crate::diagnostics::{Code, Diagnostic};
use crate::engine::inbound::{table_columns, table_spec};
use crate::plan::SyncPlan;
use crate::source::hubspot::HubspotSource;
use crate::source::salesforce::SalesforceSource;
use crate::source::SourceError;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// What is wrong with `plan`'s object and table.
pub(super) async fn check(plan: &SyncPlan, project: &ProjectSpec, dir: &Path) -> Vec<Diagnostic> {
    let connections = &project.connections;
    let schema = if plan.source.webhook.is_some() {
        // A webhook model's records have the types its `types` give: nothing to describe.
        match crate::engine::webhook::record_schema(plan) {
            Some((_, schema)) => schema,
            None => return Vec::new(),
        }
    } else {
        match describe(plan, project, dir).await {
            Ok(Some(schema)) => schema,
            Ok(None) => return Vec::new(),
            Err(d) => return d,
        }
    };
    let columns = match table_columns(plan, &schema) {
        Ok(c) => c,
        Err(e) => {
            return vec![
                Diagnostic::new(Code::TypeMismatch, plan.spans.object.clone(), e.to_string())
                    .help("a transform must fit the field's type: `ebb plan` shows each field's type"),
            ]
        }
    };
    let Some(dest) = connections.get(&plan.destination.connection) else {
        return Vec::new();
    };
    // A DuckDB file that does not exist yet holds no table: validating does not create it.
    if let ConnectionSpec::Duckdb(c) = dest {
        if c.path != ":memory:" && !dir.join(&c.path).exists() {
            return vec![table_created(plan)];
        }
    }
    let checked = match TableWriter::open(table_spec(plan, columns), dest, dir).await {
        Ok(mut w) => tokio::time::timeout(TIMEOUT, w.check()).await,
        Err(e) => Ok(Err(e)),
    };
    match checked {
        Ok(Ok(TableCheck::Compatible)) => Vec::new(),
        Ok(Ok(TableCheck::Missing)) => vec![table_created(plan)],
        Ok(Ok(TableCheck::Incompatible(why))) => vec![Diagnostic::new(
            Code::TableIncompatible,
            plan.spans.object.clone(),
            format!("model `{}`: {why}", plan.name),
        )
        .help("alter the table (or drop it: the first run creates it), or map to another table")],
        Ok(Err(e)) => vec![Diagnostic::new(
            Code::ConnectFailed,
            plan.spans.object.clone(),
            format!("model `{}`: {e}", plan.name),
        )
        .help("check the connection in ebb.yaml and the variables it reads")],
        Err(_) => vec![Diagnostic::new(
            Code::ConnectFailed,
            plan.spans.object.clone(),
            format!(
                "model `{}`: no answer from connection `{}` within {} s",
                plan.name,
                plan.destination.connection,
                TIMEOUT.as_secs()
            ),
        )],
    }
}

fn table_created(plan: &SyncPlan) -> Diagnostic {
    Diagnostic::new(
        Code::TableCreated,
        plan.spans.object.clone(),
        format!(
            "model `{}`: table `{}` does not exist yet: the first run creates it",
            plan.name,
            plan.destination.table.as_deref().unwrap_or_default()
        ),
    )
    .help("its columns come from the object's describe and the transforms (docs/tables.md)")
}

/// The Arrow schema of the records a CRM source's read returns (the describe of its
/// object); `None` when the connection is not a Salesforce or HubSpot one (`validate`
/// said so).
async fn describe(
    plan: &SyncPlan,
    project: &ProjectSpec,
    dir: &Path,
) -> Result<Option<arrow::datatypes::SchemaRef>, Vec<Diagnostic>> {
    let connections = &project.connections;
    let conn = &plan.source.connection;
    let object = plan.source.object.clone().unwrap_or_default();
    let source_span = plan.spans.source.clone();
    let connect_failed = |message: String| {
        vec![Diagnostic::new(Code::ConnectFailed, source_span.clone(), message)
            .help("check the connection in ebb.yaml and the variables it reads")]
    };
    let timed_out = || {
        connect_failed(format!(
            "model `{}`: connection `{conn}`: no answer to the describe of `{object}` within {} s",
            plan.name,
            TIMEOUT.as_secs()
        ))
    };
    let described = match connections.get(conn) {
        Some(ConnectionSpec::Salesforce(spec)) => {
            let source = SalesforceSource::new(conn, spec, dir)
                .map_err(|e| connect_failed(format!("model `{}`: connection `{conn}`: {e}", plan.name)))?;
            tokio::time::timeout(TIMEOUT, source.describe(&object, &plan.source.fields))
                .await
                .map_err(|_| timed_out())?
                .map(|d| d.schema)
        }
        Some(ConnectionSpec::Hubspot(spec)) => {
            let source = HubspotSource::new(conn, spec)
                .map_err(|e| connect_failed(format!("model `{}`: connection `{conn}`: {e}", plan.name)))?;
            tokio::time::timeout(TIMEOUT, source.describe(&object, &plan.source.fields))
                .await
                .map_err(|_| timed_out())?
                .map(|d| d.schema)
        }
        _ => return Ok(None), // `validate` reported it already
    };
    let schema = match described {
        Ok(schema) => schema,
        Err(SourceError::Query(m)) => {
            let (code, help) = if m.contains("has no field") {
                (
                    Code::SalesforceFieldMissing,
                    "fields are matched by API name (custom fields end in `__c`); `ebb plan` lists what the model reads",
                )
            } else if m.contains("has no object") {
                (
                    Code::SalesforceObjectMissing,
                    "use the object's API name, and check the integration user can see it",
                )
            } else if m.contains("has no property") {
                (
                    Code::HubspotPropertyInvalid,
                    "properties are named by their internal names (`firstname`, `hs_lastmodifieddate`); `ebb plan` lists what the model reads",
                )
            } else if m.contains("HubSpot has no object") {
                (
                    Code::HubspotObjectMissing,
                    "objects are named in the plural and lower case (`contacts`, `companies`, `deals`), custom ones by their `p_…` name",
                )
            } else {
                (
                    Code::ConnectFailed,
                    "check the connection in ebb.yaml and the variables it reads",
                )
            };
            return Err(vec![Diagnostic::new(
                code,
                source_span,
                format!("model `{}`: {m}", plan.name),
            )
            .help(help)]);
        }
        Err(e) => {
            return Err(connect_failed(format!(
                "model `{}`: connection `{conn}`: {e}",
                plan.name
            )))
        }
    };
    Ok(Some(schema))
}

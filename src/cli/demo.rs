//! `ebb demo`: the quickstart. Builds the demo warehouse (embedded DuckDB) with seeded
//! customer data, checks every model against it and shows what each would send.

use crate::config::project::ConnectionSpec;
use crate::diagnostics::{render, Severity};
use std::io::Write;
use std::path::PathBuf;

pub fn run(project: Option<PathBuf>, customers: usize, seed: u64, rebuild: bool, color: bool) -> anyhow::Result<u8> {
    let dir = super::project_dir(project)?;
    let mut report = crate::validate::validate(&dir, &[])?;
    let Some(spec) = report.project.clone() else {
        eprint!("{}", render::render(&report.diagnostics, render::Format::Human, color));
        anyhow::bail!("`ebb.yaml` has errors; fix them first");
    };
    let duckdb: Vec<(&String, &crate::config::project::DuckdbConnection)> = spec
        .connections
        .iter()
        .filter_map(|(n, c)| match c {
            ConnectionSpec::Duckdb(d) => Some((n, d)),
            _ => None,
        })
        .collect();
    let (name, conn) = match duckdb
        .iter()
        .find(|(n, _)| n.as_str() == "warehouse")
        .or(duckdb.first())
    {
        Some(x) => *x,
        None => anyhow::bail!("the project has no duckdb connection to hold the demo warehouse"),
    };
    if conn.path == ":memory:" {
        anyhow::bail!("connection `{name}` is in memory; the demo warehouse needs a file");
    }
    let path = dir.join(&conn.path);
    let mut out = std::io::stdout().lock();
    if rebuild || !path.exists() {
        let built = crate::demo::build_warehouse(&path, customers, seed)?;
        writeln!(
            out,
            "built the demo warehouse {} (connection `{name}`): {} customers, {} flagged sync_to_crm",
            crate::config::files::display_path(&path).display(),
            built.customers,
            built.synced_to_crm
        )?;
    } else {
        writeln!(
            out,
            "using the demo warehouse {} (`ebb demo --rebuild` makes a fresh one)",
            crate::config::files::display_path(&path).display()
        )?;
    }
    // Every model, checked against the warehouse as `validate --connect` would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // A Salesforce connection on this machine is the sandbox: started here, seeded with a
    // Contact for every customer the warehouse knows (the models update them by Id).
    let mut sandboxes = Vec::new();
    for (name, c) in spec.connections.iter().filter_map(|(n, c)| match c {
        ConnectionSpec::Salesforce(s) => Some((n, s)),
        _ => None,
    }) {
        match rt.block_on(start_sandbox(name, c, conn_spec(&spec, name_of_duckdb(&spec)), &dir)) {
            Ok(Some((sandbox, seeded))) => {
                writeln!(
                    out,
                    "started the Salesforce sandbox at {} (connection `{name}`) with {seeded} Contacts, one per CRM customer",
                    sandbox.url()
                )?;
                sandboxes.push(sandbox);
            }
            Ok(None) => {}
            Err(e) => writeln!(out, "the Salesforce sandbox for connection `{name}` did not start: {e}")?,
        }
    }
    rt.block_on(crate::validate::connect::check(&mut report));
    report.scrub_diagnostics();
    let problems: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
        .cloned()
        .collect();
    if !problems.is_empty() {
        out.write_all(render::render(&problems, render::Format::Human, color).as_bytes())?;
    }
    let errors = problems.iter().filter(|d| d.severity == Severity::Error).count();
    writeln!(
        out,
        "validated {} models against the warehouse: {errors} error{}\n",
        report.models.len(),
        if errors == 1 { "" } else { "s" }
    )?;
    for plan in &report.plans {
        if plan.source.webhook.is_some() {
            writeln!(
                out,
                "model {} takes signed webhooks (connection `{}`) into table {}: start `ebb daemon`, then send one:",
                plan.name,
                plan.source.connection,
                plan.destination.table.as_deref().unwrap_or("?"),
            )?;
            match webhook_curl(&spec, plan) {
                Ok(curl) => writeln!(
                    out,
                    "{curl}
  (signed now, valid for 5 minutes; `ebb inbox {}` shows what arrived)
",
                    plan.name
                )?,
                Err(e) => writeln!(out, "  cannot sign an example: {e}\n")?,
            }
            continue;
        }
        if plan.source.query.is_none() {
            writeln!(
                out,
                "model {} reads {} `{}` into table {} (connection `{}`): an inbound sync, run after the outbound models\n",
                plan.name,
                plan.source.kind,
                plan.source.object.as_deref().unwrap_or("?"),
                plan.destination.table.as_deref().unwrap_or("?"),
                plan.destination.connection,
            )?;
            continue;
        }
        let target = plan
            .destination
            .object
            .as_deref()
            .or(plan.destination.table.as_deref())
            .unwrap_or("records");
        writeln!(
            out,
            "model {} → {} {target} (connection `{}`), first rows as they would be sent:",
            plan.name, plan.destination.kind, plan.destination.connection
        )?;
        match super::preview::fetch(&report, plan, &dir, 3) {
            Ok((batches, mapper)) => {
                let (table, _, _) = super::preview::human_table(plan, &batches, &mapper, false);
                out.write_all(table.as_bytes())?;
                writeln!(out)?;
            }
            Err(e) => writeln!(out, "  cannot preview: {e}\n")?,
        }
    }
    // A real run of every model: the outbound ones, then the inbound ones (which read back
    // what the outbound ones wrote to the CRM). The demo's sandbox is in this process and
    // every write to it has returned before an inbound read starts, so nothing is still
    // being committed there: the inbound runs read up to now (`settle: 0s`), not to 5
    // seconds ago, or they would leave the Contacts just updated to the next demo.
    let mut runnable: Vec<crate::plan::SyncPlan> = report
        .plans
        .iter()
        .filter(|p| p.direction() == crate::plan::Direction::Outbound)
        .cloned()
        .collect();
    for p in report
        .plans
        .iter()
        .filter(|p| p.direction() == crate::plan::Direction::Inbound && p.source.webhook.is_none())
    {
        let mut p = p.clone();
        if let Some(read) = p.source.read.as_mut() {
            read.settle = std::time::Duration::ZERO;
        }
        runnable.push(p);
    }
    let mut failed = false;
    if !runnable.is_empty() {
        let url = spec.state.as_ref().and_then(|s| s.url.clone());
        let store = rt.block_on(crate::state::StateStore::open(url.as_deref(), &dir));
        match store {
            Err(e) => {
                writeln!(out, "cannot open the state store: {e}")?;
                failed = true;
            }
            Ok(store) => {
                let mut waited = false;
                for plan in &runnable {
                    // A window ends at a whole second: the Contacts the outbound runs just
                    // updated are read once the second they were stamped in is over.
                    if plan.direction() == crate::plan::Direction::Inbound && !waited {
                        waited = true;
                        let ms = chrono::Utc::now().timestamp_subsec_millis();
                        std::thread::sleep(std::time::Duration::from_millis(u64::from(1000 - ms.min(999))));
                    }
                    let progress = crate::engine::Progress::default();
                    let r = rt.block_on(crate::engine::run(
                        &dir,
                        &spec,
                        &store,
                        plan,
                        &crate::engine::RunOptions::default(),
                        &progress,
                    ));
                    let k = r.counts;
                    if plan.direction() == crate::plan::Direction::Inbound {
                        writeln!(
                            out,
                            "ebb run {}: {} in {:.2}s: read {} from the CRM, written {}, deleted {}, unchanged {}, invalid {}; {}{}",
                            plan.name,
                            r.status.as_str(),
                            r.elapsed.as_secs_f64(),
                            k.read,
                            k.added,
                            k.removed,
                            k.unchanged,
                            k.invalid,
                            r.notes.join(", "),
                            r.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                        )?;
                        failed |= r.status.exit_code() != 0;
                        continue;
                    }
                    writeln!(
                        out,
                        "ebb run {}: {} in {:.2}s: read {}, added {}, changed {}, removed {}, unchanged {}, sent {}, confirmed {}{}",
                        plan.name,
                        r.status.as_str(),
                        r.elapsed.as_secs_f64(),
                        k.read,
                        k.added,
                        k.changed,
                        k.removed,
                        k.unchanged,
                        k.sent,
                        k.confirmed,
                        r.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                    )?;
                    failed |= r.status.exit_code() != 0;
                }
                writeln!(
                    out,
                    "(run `ebb demo` again: nothing changed, so nothing is sent, and nothing new is read back)\n\n\
                     where to look: `ebb status` (health of every model), `ebb runs <model>` (history),\n\
                     `ebb errors <model>` (rejected rows with Salesforce's code and message);\n\
                     `ebb sandbox` serves the same local Salesforce API for your own tries.\n"
                )?;
            }
        }
    }
    writeln!(
        out,
        "next: `ebb plan <model>` shows a compiled model, `ebb preview <model> -n 20` more rows,\n\
         `ebb run <model> --dry-run` what a run would send."
    )?;
    drop(sandboxes);
    Ok(if errors > 0 || failed { 1 } else { 0 })
}

/// A `curl` command sending one signed event to a webhook model on the daemon's address.
fn webhook_curl(spec: &crate::config::project::ProjectSpec, plan: &crate::plan::SyncPlan) -> Result<String, String> {
    let Some(ConnectionSpec::Webhook(c)) = spec.connections.get(&plan.source.connection) else {
        return Err(format!(
            "connection `{}` is not a webhook connection",
            plan.source.connection
        ));
    };
    if c.signing != crate::config::project::WebhookSigning::Standard {
        return Err("the demo signs Standard Webhooks only".into());
    }
    let secret = crate::config::env::expand_env(&c.secret).map_err(|e| e.to_string())?;
    let listen = spec
        .daemon
        .as_ref()
        .and_then(|d| d.listen.clone())
        .unwrap_or_else(|| crate::daemon::DEFAULT_LISTEN.to_string());
    let now = chrono::Utc::now();
    let body = sample_event(plan, now).ok_or("the model's paths cannot be filled in")?;
    let id = format!("msg_demo_{}", now.timestamp_millis());
    let ts = now.timestamp();
    let sig = crate::webhook::signature::sign_standard(&secret, &id, ts, body.as_bytes()).map_err(|e| e.to_string())?;
    Ok(format!(
        "  curl -i http://{listen}/webhooks/{} \\\n    -H 'content-type: application/json' -H 'webhook-id: {id}' \\\n    -H 'webhook-timestamp: {ts}' -H 'webhook-signature: {sig}' \\\n    -d '{body}'",
        plan.name
    ))
}

/// An event the model takes: its first upsert type, and a record with a value of each
/// field's type (names that say email, phone, first or last name get such values).
fn sample_event(plan: &crate::plan::SyncPlan, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    use crate::config::model::FieldType;
    use serde_json::{json, Value};
    let w = plan.source.webhook.as_ref()?;
    let rules = &w.rules;
    let ty = rules
        .events
        .iter()
        .find(|(_, a)| **a == crate::webhook::Action::Upsert)
        .map(|(t, _)| t.clone())?;
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut record = serde_json::Map::new();
    for (name, t) in &w.fields {
        let lower = name.to_ascii_lowercase();
        let v = match t {
            _ if *name == plan.destination.key_column => json!("demo-0001"),
            FieldType::Text if lower.contains("email") => json!(" Ada.Lovelace@Example.com "),
            FieldType::Text if lower.contains("phone") => json!("(415) 555-0100"),
            FieldType::Text if lower.contains("first") => json!("ada"),
            FieldType::Text if lower.contains("last") => json!("LOVELACE"),
            FieldType::Text => json!("demo"),
            FieldType::Bigint => json!(1),
            FieldType::Double => json!(1.5),
            FieldType::Boolean => json!(true),
            FieldType::Date => json!(now.format("%Y-%m-%d").to_string()),
            FieldType::Timestamp => json!(stamp),
            FieldType::Json => json!({}),
        };
        record.insert(name.clone(), v);
    }
    let mut event = Value::Object(serde_json::Map::new());
    if !rules.record.set(&mut event, Value::Object(record)) {
        return None;
    }
    rules.event_type.first()?.set(&mut event, json!(ty));
    if let Some(p) = &rules.event_time {
        p.set(&mut event, json!(stamp));
    }
    if let Some(p) = &rules.event_id {
        p.set(&mut event, json!(format!("evt_demo_{}", now.timestamp_millis())));
    }
    Some(event.to_string())
}

/// The project's demo warehouse connection name (`warehouse`, else the first duckdb one).
fn name_of_duckdb(spec: &crate::config::project::ProjectSpec) -> Option<&str> {
    let mut names = spec
        .connections
        .iter()
        .filter(|(_, c)| matches!(c, ConnectionSpec::Duckdb(_)))
        .map(|(n, _)| n.as_str());
    let first = names.next();
    if spec.connections.contains_key("warehouse") {
        Some("warehouse")
    } else {
        first
    }
}

fn conn_spec<'a>(spec: &'a crate::config::project::ProjectSpec, name: Option<&str>) -> Option<&'a ConnectionSpec> {
    name.and_then(|n| spec.connections.get(n))
}

/// When the demo's Contacts were created and last modified, as the sandbox seeds them.
const SEEDED_AT: &str = "2026-01-01T00:00:00Z";

/// Starts the sandbox for connection `name` if its `instance_url` is on this machine,
/// seeded from the warehouse's customers; `None` for a real org.
async fn start_sandbox(
    name: &str,
    c: &crate::config::project::SalesforceConnection,
    warehouse: Option<&ConnectionSpec>,
    dir: &std::path::Path,
) -> Result<Option<(crate::sandbox::Sandbox, usize)>, String> {
    use crate::config::env::expand_env;
    let url = expand_env(&c.instance_url).map_err(|e| e.to_string())?;
    let parsed = url::Url::parse(&url).map_err(|e| format!("`{url}`: {e}"))?;
    let local = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !local {
        return Ok(None);
    }
    let port = parsed.port_or_known_default().unwrap_or(8787);
    let mut contacts = Vec::new();
    if let Some(w) = warehouse {
        let source = crate::source::Source::open("warehouse", w, dir).map_err(|e| e.to_string())?;
        let mut rows = source
            .query(
                "SELECT crm_id, first_name, last_name, email FROM presentation.customer_360 WHERE crm_id IS NOT NULL",
                8192,
            )
            .await
            .map_err(|e| e.to_string())?;
        let schema = rows.schema();
        while let Some(batch) = rows.next().await {
            let batch = batch.map_err(|e| e.to_string())?;
            for row in 0..batch.num_rows() {
                let mut r = serde_json::Map::new();
                // Stamped as created long ago: the records the demo's models leave alone
                // are not new to an inbound read of a later demo.
                for f in ["CreatedDate", "LastModifiedDate"] {
                    r.insert(f.into(), serde_json::Value::String(SEEDED_AT.into()));
                }
                for (i, field) in ["Id", "FirstName", "LastName", "Email"].into_iter().enumerate() {
                    let v =
                        crate::map::value::read(batch.column(i), schema.field(i), row).map_err(|e| e.to_string())?;
                    if let Some(text) = v.as_text() {
                        r.insert(field.into(), serde_json::Value::String(text));
                    }
                }
                contacts.push(r);
            }
        }
    }
    let seeded = contacts.len();
    let mut config = crate::sandbox::SandboxConfig {
        client_id: expand_env(&c.auth.client_id).map_err(|e| e.to_string())?,
        ..crate::sandbox::SandboxConfig::default()
    };
    if let Some(secret) = &c.auth.client_secret {
        config.client_secret = expand_env(secret).map_err(|e| e.to_string())?;
    }
    config.records.insert("Contact".into(), contacts);
    let sandbox = crate::sandbox::Sandbox::start(&format!("127.0.0.1:{port}"), config)
        .await
        .map_err(|e| format!("port {port}: {e} (is `ebb sandbox` already running there?)"))?;
    let _ = name;
    Ok(Some((sandbox, seeded)))
}

//! `ebb conflicts [MODEL]` (conflicts of two-way fields: held for review, decided),
//! `ebb conflicts resolve MODEL KEY --take warehouse|crm` and `ebb conflicts export`
//! (every decision into a warehouse table). docs/conflicts.md.

use super::history::one_model;
use super::run::shown;
use super::PlanFormat;
use crate::destination::table::types::ColumnType;
use crate::destination::table::{Column, Mode, OnDeleted, TableRow, TableSpec, TableWriter};
use crate::map::value::Val;
use crate::state::conflicts::{Conflict, ConflictQuery, ConflictStatus, Side};
use std::io::Write;
use std::path::PathBuf;

fn statuses(list: &[String]) -> Result<Vec<ConflictStatus>, String> {
    if list.iter().any(|s| s == "all") {
        return Ok(Vec::new());
    }
    if list.is_empty() {
        return Ok(vec![ConflictStatus::Open]);
    }
    list.iter()
        .map(|s| {
            ConflictStatus::parse(s).ok_or_else(|| {
                format!(
                    "`{s}` is not a status; one of {}, or all",
                    ConflictStatus::ALL.map(|s| s.as_str()).join(", ")
                )
            })
        })
        .collect()
}

/// The model must have `conflicts`.
fn check_model(report: &crate::validate::Report, model: &str) -> Result<(), u8> {
    match report.plans.iter().find(|p| p.name == model) {
        Some(p) if p.conflicts.is_some() => Ok(()),
        Some(_) => {
            eprintln!("error: model `{model}` has no `conflicts` (two-way fields)");
            Err(2)
        }
        None => {
            eprintln!("error: model `{model}` is not valid (`ebb validate` says why)");
            Err(2)
        }
    }
}

fn short(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `ebb conflicts [MODEL] [--status …] [--key KEY]`.
/// The conflicts as ebb shows them: values of personal fields (`pii: true`) masked.
fn masked(report: &crate::validate::Report, list: &[Conflict]) -> Vec<Conflict> {
    list.iter()
        .map(|c| {
            let pii = report
                .plans
                .iter()
                .find(|p| p.name == c.model)
                .map(|p| p.pii_fields())
                .unwrap_or_default();
            c.shown(&pii)
        })
        .collect()
}

pub fn show(
    project: Option<PathBuf>,
    model: Option<&str>,
    key: Option<&str>,
    status: &[String],
    limit: usize,
    format: PlanFormat,
) -> anyhow::Result<u8> {
    let wanted = match statuses(status) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(2);
        }
    };
    let (report, store, rt) = match one_model(project, model.unwrap_or(""))? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if let Some(m) = model {
        if let Err(code) = check_model(&report, m) {
            return Ok(code);
        }
    }
    let q = ConflictQuery {
        model: model.map(str::to_string),
        key: key.map(str::to_string),
        statuses: wanted.clone(),
        limit: limit as i64,
    };
    let got = rt.block_on(async {
        store.conflicts_init().await?;
        Ok::<_, crate::state::StateError>((store.conflicts_open().await?, store.conflicts(q).await?))
    });
    let (open, list) = match got {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
            return Ok(1);
        }
    };
    let list = masked(&report, &list);
    let mut out = std::io::stdout().lock();
    if format == PlanFormat::Json {
        for c in &list {
            writeln!(out, "{}", c.to_json())?;
        }
        return Ok(0);
    }
    let models: Vec<&str> = report
        .plans
        .iter()
        .filter(|p| p.conflicts.is_some() && model.is_none_or(|m| m == p.name))
        .map(|p| p.name.as_str())
        .collect();
    if models.is_empty() {
        writeln!(out, "the project has no model with `conflicts` (two-way fields)")?;
        return Ok(0);
    }
    for m in &models {
        let n = open.iter().find(|(x, _)| x == m).map_or(0, |(_, n)| *n);
        writeln!(out, "{m}: {n} open")?;
    }
    if list.is_empty() {
        let what: Vec<&str> = wanted.iter().map(|s| s.as_str()).collect();
        writeln!(
            out,
            "no {} conflicts",
            if what.is_empty() {
                "".to_string()
            } else {
                what.join(" or ")
            }
        )?;
        return Ok(0);
    }
    writeln!(out)?;
    let header: Vec<String> = [
        "id",
        "model",
        "key",
        "field",
        "warehouse",
        "CRM",
        "warehouse modified",
        "CRM modified",
        "status",
        "winner",
        "reason",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.model.clone(),
                c.key.clone(),
                c.field.clone(),
                short(&c.warehouse_value),
                short(&c.crm_value),
                c.warehouse_time.clone().unwrap_or_else(|| "-".into()),
                c.crm_time.clone().unwrap_or_else(|| "-".into()),
                c.status.as_str().to_string(),
                c.winner.map_or("-", Side::as_str).to_string(),
                c.reason.clone(),
            ]
        })
        .collect();
    out.write_all(super::text_table(&header, &rows, Some(60)).as_bytes())?;
    if let Some(c) = list.iter().find(|c| c.status == ConflictStatus::Open) {
        writeln!(
            out,
            "\n`ebb conflicts resolve {} {} --take warehouse|crm` decides a held record; the next run applies it",
            c.model, c.key
        )?;
    }
    Ok(0)
}

/// `ebb conflicts resolve MODEL KEY --take warehouse|crm`.
pub fn resolve(project: Option<PathBuf>, model: &str, key: &str, take: &str, format: PlanFormat) -> anyhow::Result<u8> {
    let Some(side) = Side::parse(take) else {
        eprintln!("error: `--take` is `warehouse` or `crm`, not `{take}`");
        return Ok(2);
    };
    let (report, store, rt) = match one_model(project, model)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if let Err(code) = check_model(&report, model) {
        return Ok(code);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let got = rt.block_on(async {
        store.conflicts_init().await?;
        store
            .conflict_resolve(model, key, side, &crate::audit::cli_actor(), now)
            .await
    });
    let resolved = match got {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e.to_string()));
            return Ok(1);
        }
    };
    if resolved.is_empty() {
        eprintln!("error: record `{key}` of `{model}` has no open conflict (`ebb conflicts {model}` lists them)");
        return Ok(1);
    }
    let entry = crate::audit::conflict_resolved(
        crate::audit::cli_actor(),
        model,
        key,
        side.as_str(),
        resolved.iter().map(|c| c.field.clone()).collect(),
    );
    if let Err(code) = super::audit::record(&rt, &store, &report.secrets, entry) {
        return Ok(code);
    }
    // `--take crm`: the CRM's value written back to the inbound model's table, if any.
    let plan = report.plans.iter().find(|p| p.name == model).expect("checked above");
    let written = match (report.project.as_ref(), side) {
        (Some(project), Side::Crm) => rt.block_on(crate::engine::conflict::write_back(
            plan,
            project,
            &report.project_dir,
            &resolved,
        )),
        _ => Ok(None),
    };
    let display = masked(&report, &resolved);
    let mut out = std::io::stdout().lock();
    if format == PlanFormat::Json {
        for c in &display {
            writeln!(out, "{}", c.to_json())?;
        }
    } else {
        print_resolved(&mut out, model, key, side, &display)?;
    }
    match written {
        Ok(Some((table, n))) => eprintln!(
            "the CRM's value written back to `{table}` ({n} row{})",
            if n == 1 { "" } else { "s" }
        ),
        Ok(None) => {}
        Err(e) => {
            // The decision stands; only the write-back failed.
            eprintln!(
                "warning: the decision is recorded, but writing the CRM's value back to the inbound model's table failed: {}",
                shown(&report.secrets, &e.to_string())
            );
            return Ok(1);
        }
    }
    Ok(0)
}

fn print_resolved(
    out: &mut impl Write,
    model: &str,
    key: &str,
    side: Side,
    resolved: &[Conflict],
) -> std::io::Result<()> {
    for c in resolved {
        let kept = match side {
            Side::Warehouse => short(&c.warehouse_value),
            Side::Crm => short(&c.crm_value),
        };
        writeln!(
            out,
            "{model} {key}: `{}` takes the {} value {kept}",
            c.field,
            side.as_str()
        )?;
    }
    writeln!(
        out,
        "the next run of `{model}` applies it ({})",
        match side {
            Side::Warehouse => "the warehouse's value is written to the CRM",
            Side::Crm => "the CRM keeps its value",
        }
    )
}

/// The columns of an export, in [`export_row`]'s order.
fn export_columns() -> Vec<Column> {
    let col = |name: &str, ty: ColumnType| Column { name: name.into(), ty };
    vec![
        col("conflict_id", ColumnType::Bigint),
        col("model", ColumnType::Text),
        col("record_key", ColumnType::Text),
        col("field", ColumnType::Text),
        col("warehouse_value", ColumnType::Text),
        col("crm_value", ColumnType::Text),
        col("warehouse_modified", ColumnType::Text),
        col("crm_modified", ColumnType::Text),
        col("policy", ColumnType::Text),
        col("status", ColumnType::Text),
        col("master_source", ColumnType::Text),
        col("reason", ColumnType::Text),
        col("run_id", ColumnType::Bigint),
        col("detected_at", ColumnType::Timestamp),
        col("resolution_timestamp", ColumnType::Timestamp),
        col("decided_by", ColumnType::Text),
    ]
}

fn export_row(c: &Conflict) -> TableRow {
    let text = |s: Option<String>| s.map_or(Val::Null, Val::Str);
    let at = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map_or(Val::Null, |t| Val::Timestamp {
                at: t.naive_utc(),
                utc: true,
            })
    };
    let j = c.to_json();
    TableRow {
        values: vec![
            Val::Int(c.id),
            Val::Str(c.model.clone()),
            Val::Str(c.key.clone()),
            Val::Str(c.field.clone()),
            Val::Str(short(&c.warehouse_value)),
            Val::Str(short(&c.crm_value)),
            text(c.warehouse_time.clone()),
            text(c.crm_time.clone()),
            Val::Str(c.policy.clone()),
            Val::Str(c.status.as_str().into()),
            text(j["master_source"].as_str().map(str::to_string)),
            Val::Str(c.reason.clone()),
            Val::Int(c.run_id),
            at(Some(c.detected_ms)),
            at(c.decided_ms),
            text(c.decided_by.clone()),
        ],
        deleted: false,
    }
}

/// `ebb conflicts export [MODEL] --connection NAME --table T`: every conflict (all
/// statuses) upserted into a warehouse table by its id, the table created when missing.
pub fn export(project: Option<PathBuf>, model: Option<&str>, connection: &str, table: &str) -> anyhow::Result<u8> {
    let dir = super::project_dir(project.clone())?;
    let (report, store, rt) = match one_model(project, model.unwrap_or(""))? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let Some(spec) = report.project.as_ref().and_then(|p| p.connections.get(connection)) else {
        eprintln!("error: ebb.yaml defines no connection `{connection}`");
        return Ok(2);
    };
    let q = ConflictQuery {
        model: model.map(str::to_string),
        key: None,
        statuses: Vec::new(),
        limit: i64::MAX,
    };
    let spec = spec.clone();
    let result = rt.block_on(async {
        store.conflicts_init().await.map_err(|e| e.to_string())?;
        let list = masked(&report, &store.conflicts(q).await.map_err(|e| e.to_string())?);
        let table_spec = TableSpec {
            connection: connection.to_string(),
            table: table.to_string(),
            key: "conflict_id".into(),
            mode: Mode::Upsert,
            on_deleted: OnDeleted::Hard,
            deleted_column: crate::destination::table::DELETED_COLUMN.into(),
            version_column: None,
            columns: export_columns(),
            delete_by_key: false,
        };
        let mut w = TableWriter::open(table_spec, &spec, &dir)
            .await
            .map_err(|e| e.to_string())?;
        w.ensure().await.map_err(|e| e.to_string())?;
        let n = list.len();
        let counts = w
            .write(list.iter().map(export_row).collect(), chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((n, counts))
    });
    match result {
        Ok((n, counts)) => {
            println!(
                "{n} conflicts exported to `{table}` on `{connection}` ({} new or changed, {} unchanged)",
                counts.upserted, counts.skipped
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {}", shown(&report.secrets, &e));
            Ok(1)
        }
    }
}

//! `ebb preview`: the first rows of a model as the destination would receive them.

use super::PlanFormat;
use crate::diagnostics::{render, Severity};
use crate::map::RowMapper;
use crate::plan::SyncPlan;
use crate::source::Source;
use arrow::record_batch::RecordBatch;
use std::io::Write;
use std::path::PathBuf;

pub fn run(
    project: Option<PathBuf>,
    model: &str,
    limit: usize,
    format: PlanFormat,
    show_pii: bool,
    color: bool,
) -> anyhow::Result<u8> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    let known = report.model_names();
    if !known.contains(&model) {
        anyhow::bail!(
            "no model named `{model}`; {}",
            crate::plan::compile::suggest_model(model, &known)
        );
    }
    let Some(plan) = report.plans.iter().find(|p| p.name == model) else {
        let file = report.models.iter().find(|(n, _)| n == model).map(|(_, f)| f.clone());
        let errors: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .filter(|d| {
                Some(&d.span.file.path) == file.as_ref() || d.span.file.path.ends_with(crate::config::PROJECT_FILE)
            })
            .cloned()
            .collect();
        eprint!("{}", render::render(&errors, render::Format::Human, color));
        eprintln!("error: cannot preview `{model}`: fix the errors above first");
        return Ok(1);
    };
    let context = format!(
        "model `{model}`, connection `{}` ({})",
        plan.source.connection, plan.source.kind
    );
    let (batches, mapper) = match fetch(&report, plan, &dir, limit) {
        Ok(x) => x,
        Err(e) => {
            let e = report.secrets.scrub(&e.to_string());
            eprintln!("error: {context}: {}", crate::diagnostics::terminal_safe(&e, true));
            return Ok(1);
        }
    };
    let mut out = std::io::stdout().lock();
    match format {
        PlanFormat::Json => {
            let pii = if show_pii { Vec::new() } else { plan.pii_fields() };
            for line in json_lines(&batches, &mapper, &pii) {
                writeln!(out, "{line}")?;
            }
        }
        PlanFormat::Human => {
            let (table, rows, invalid) = human_table(plan, &batches, &mapper, show_pii);
            out.write_all(table.as_bytes())?;
            writeln!(
                out,
                "{rows} row{} shown, {invalid} invalid",
                if rows == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(0)
}

/// Each row as `{"key": …, "record": {…}}`, or `{"key": …, "invalid": {"code", "message"}}`.
fn json_lines(batches: &[RecordBatch], mapper: &RowMapper, pii: &[&str]) -> Vec<String> {
    let mut lines = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let key = mapper.key(batch, row);
            let record = key
                .clone()
                .and_then(|_| mapper.map_row(batch, row))
                .and_then(|f| RowMapper::to_json_object(&f))
                .map(|r| crate::redact::mask_fields(&r, pii));
            lines.push(match record {
                Ok(record) => format!(
                    "{{\"key\":{},\"record\":{record}}}",
                    serde_json::Value::String(key.unwrap_or_default())
                ),
                Err(e) => {
                    serde_json::json!({"key": key.ok(), "invalid": {"code": e.code, "message": e.message}}).to_string()
                }
            });
        }
    }
    lines
}

/// The rows as a table (key, then each destination field), with the number of rows and of
/// invalid rows.
pub(crate) fn human_table(
    plan: &SyncPlan,
    batches: &[RecordBatch],
    mapper: &RowMapper,
    show_pii: bool,
) -> (String, usize, usize) {
    let pii = if show_pii { Vec::new() } else { plan.pii_fields() };
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut invalid = 0;
    for batch in batches {
        for row in 0..batch.num_rows() {
            let key = mapper.key(batch, row);
            let mut cells = vec![key.clone().unwrap_or_else(|_| "∅".into())];
            match key.and_then(|_| mapper.map_row(batch, row)) {
                Ok(f) => cells.extend(f.iter().map(|(name, v)| {
                    let mut s = String::new();
                    match v.write_json(&mut s) {
                        Ok(()) if pii.contains(name) => match serde_json::from_str(&s) {
                            Ok(j) => crate::redact::mask_json(&j).to_string(),
                            Err(_) => "\"***\"".into(),
                        },
                        Ok(()) => s,
                        Err(e) => format!("<{e}>"),
                    }
                })),
                Err(e) => {
                    invalid += 1;
                    cells.push(format!("invalid ({}): {}", e.code, e.message));
                }
            }
            table.push(cells);
        }
    }
    let mut header = vec![format!("{} (key)", plan.destination.key_column)];
    header.extend(plan.mappings.iter().map(|m| m.destination.clone()));
    let rows = table.len();
    (super::text_table(&header, &table, Some(40)), rows, invalid)
}

/// Runs the model's query with a LIMIT and binds its mapping to the result.
pub(crate) fn fetch(
    report: &crate::validate::Report,
    plan: &SyncPlan,
    dir: &std::path::Path,
    limit: usize,
) -> Result<(Vec<RecordBatch>, RowMapper), String> {
    let Some(query) = &plan.source.query else {
        return Err(format!(
            "it reads {} `{}`; previewing CRM sources comes with the {} connector",
            plan.source.kind,
            plan.source.object.as_deref().unwrap_or("?"),
            plan.source.kind
        ));
    };
    let spec = report
        .project
        .as_ref()
        .and_then(|p| p.connections.get(&plan.source.connection))
        .ok_or_else(|| format!("connection `{}` is not defined", plan.source.connection))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (schema, batches) = rt
        .block_on(async {
            let source = Source::open(&plan.source.connection, spec, dir)?;
            let sql = format!(
                "SELECT * FROM ({}) AS ebb_preview LIMIT {limit}",
                query.trim_end().trim_end_matches(';')
            );
            let mut stream = source.query(&sql, limit.max(1)).await?;
            let mut batches = Vec::new();
            while let Some(b) = stream.next().await {
                batches.push(b?);
            }
            Ok::<_, crate::source::SourceError>((stream.schema(), batches))
        })
        .map_err(|e| e.to_string())?;
    let mapper = RowMapper::new(plan, schema).map_err(|missing| {
        let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
        format!("the query returns no column {}", names.join(", "))
    })?;
    Ok((batches, mapper))
}

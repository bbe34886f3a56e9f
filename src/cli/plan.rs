//! `ebb plan`.

use super::PlanFormat;
use crate::diagnostics::{render, Severity};
use std::io::Write;
use std::path::PathBuf;

pub fn run(project: Option<PathBuf>, models: &[String], format: PlanFormat, color: bool) -> anyhow::Result<u8> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    let known = report.model_names();
    for m in models {
        if !known.contains(&m.as_str()) {
            anyhow::bail!(
                "no model named `{m}`; {}",
                crate::plan::compile::suggest_model(m, &known)
            );
        }
    }
    let wanted = |name: &str| models.is_empty() || models.iter().any(|m| m == name);
    let plans: Vec<_> = report.plans.iter().filter(|p| wanted(&p.name)).collect();
    // A wanted model without a plan has errors: show those of its file and of ebb.yaml.
    let unplanned: Vec<&(String, PathBuf)> = report
        .models
        .iter()
        .filter(|(n, _)| wanted(n) && !plans.iter().any(|p| &p.name == n))
        .collect();
    if !unplanned.is_empty() {
        let files: Vec<&PathBuf> = unplanned.iter().map(|(_, f)| f).collect();
        let blocking: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .filter(|d| d.span.file.path.ends_with(crate::config::PROJECT_FILE) || files.contains(&&d.span.file.path))
            .cloned()
            .collect();
        eprint!("{}", render::render(&blocking, render::Format::Human, color));
        let names: Vec<String> = unplanned.iter().map(|(m, _)| format!("`{m}`")).collect();
        eprintln!("error: cannot plan {}: fix the errors above first", names.join(", "));
        return Ok(1);
    }
    let now = chrono::Utc::now();
    match format {
        PlanFormat::Human => {
            let texts: Vec<String> = plans.iter().map(|p| crate::plan::explain(p, now)).collect();
            // Queries and descriptions may hold control characters written as YAML escapes.
            let text = crate::diagnostics::terminal_safe(&texts.join("\n"), true).into_owned();
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        PlanFormat::Json => {
            let list: Vec<_> = plans.iter().map(|p| crate::plan::explain_json(p, now)).collect();
            let mut text = serde_json::to_string_pretty(&list)?;
            text.push('\n');
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    Ok(0)
}

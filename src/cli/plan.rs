//! `ebb plan`.

use super::PlanFormat;
use crate::diagnostics::render;
use crate::diagnostics::Severity;
use std::path::PathBuf;

pub fn run(project: Option<PathBuf>, models: &[String], format: PlanFormat, color: bool) -> anyhow::Result<u8> {
    let dir = super::project_dir(project)?;
    let report = crate::validate::validate(&dir, &[])?;
    let known: Vec<&str> = report.model_names.iter().map(String::as_str).collect();
    for m in models {
        if !known.contains(&m.as_str()) {
            anyhow::bail!(
                "no model named `{m}`; {}",
                crate::plan::compile::suggest_model(m, &known)
            );
        }
    }
    let wanted = |name: &str| models.is_empty() || models.iter().any(|m| m == name);
    // Errors in the wanted models (or the project file) stop the plan: show them.
    let blocking: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .filter(|d| {
            models.is_empty()
                || d.span.file.path.ends_with(crate::config::PROJECT_FILE)
                || !report.plans.iter().any(|p| p.file == d.span.file.path)
                || report
                    .plans
                    .iter()
                    .any(|p| p.file == d.span.file.path && wanted(&p.name))
        })
        .cloned()
        .collect();
    let plans: Vec<_> = report.plans.iter().filter(|p| wanted(&p.name)).collect();
    let missing: Vec<&str> = known
        .iter()
        .copied()
        .filter(|n| wanted(n) && !plans.iter().any(|p| p.name == *n))
        .collect();
    if !missing.is_empty() {
        eprint!("{}", render::render(&blocking, render::Format::Human, false));
        anyhow::bail!(
            "cannot plan {}: fix the errors above (`ebb validate` lists them)",
            missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        );
    }
    let now = chrono::Utc::now();
    match format {
        PlanFormat::Human => {
            let texts: Vec<String> = plans.iter().map(|p| crate::plan::explain(p, now)).collect();
            let body = texts.join("\n");
            if color {
                print!("{body}");
            } else {
                print!("{body}");
            }
        }
        PlanFormat::Json => {
            let list: Vec<_> = plans.iter().map(|p| crate::plan::explain_json(p, now)).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
    }
    Ok(0)
}

//! `ebb schema`.

use crate::schema::{model_schema, project_schema, to_file_text, MODEL_SCHEMA_FILE, PROJECT_SCHEMA_FILE};
use std::path::PathBuf;

pub fn run(project: Option<PathBuf>, write: bool, check: bool, project_file: bool) -> anyhow::Result<u8> {
    if !write && !check {
        let s = if project_file { project_schema() } else { model_schema() };
        print!("{}", to_file_text(s));
        return Ok(0);
    }
    let dir = super::project_dir(project)?.join("schemas");
    let files = [
        (MODEL_SCHEMA_FILE, to_file_text(model_schema())),
        (PROJECT_SCHEMA_FILE, to_file_text(project_schema())),
    ];
    if write {
        std::fs::create_dir_all(&dir)?;
        for (name, text) in &files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))?;
            println!("wrote {}", crate::config::files::display_path(&path).display());
        }
        return Ok(0);
    }
    let mut stale = Vec::new();
    for (name, text) in &files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(crate::config::files::display_path(&path).display().to_string());
        }
    }
    if stale.is_empty() {
        println!("schemas are up to date");
        Ok(0)
    } else {
        eprintln!("stale: {}\nregenerate them with `ebb schema --write`", stale.join(", "));
        Ok(1)
    }
}

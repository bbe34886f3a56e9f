//! `ebb validate`: load the project and every model file and report all problems.
//!
//! Layers, each adding to one list of diagnostics: YAML syntax (a file that does not
//! parse stops there), JSON schema (shape and types, at YAML positions), then semantics,
//! which is compiling each model into a [`SyncPlan`]. Nothing here touches the network.

pub mod connect;
pub mod project;
mod salesforce;
mod schema_check;
pub mod sql;

use crate::config::{ModelSpec, ProjectSpec, PROJECT_FILE};
use crate::diagnostics::{Code, Diagnostic, Severity, SourceFile, Span};
use crate::plan::compile::{compile_model, duplicate_names, ModelCtx};
use crate::plan::SyncPlan;
use crate::yaml;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A project that could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no `ebb.yaml` in `{0}` or any directory above it")]
    NoProject(PathBuf),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything `validate` found.
#[derive(Debug, Default)]
pub struct Report {
    /// In file order, then by position.
    pub diagnostics: Vec<Diagnostic>,
    /// Plans of the models that compiled without error.
    pub plans: Vec<SyncPlan>,
    /// Every model found, valid or not: its name and the file (as shown) defining it.
    pub models: Vec<(String, PathBuf)>,
    /// Model files read (plus `ebb.yaml`).
    pub files: usize,
    /// A file could not be read: the exit code is 2, not 1.
    pub io_error: bool,
    /// The project file, when it loaded.
    pub project: Option<ProjectSpec>,
    pub project_dir: PathBuf,
    /// With PATH arguments: the (absolute) files whose diagnostics are reported.
    pub only: Option<HashSet<PathBuf>>,
}

impl Report {
    /// Whether diagnostics in `file` (as shown) are reported.
    pub fn reports_on(&self, file: &Path) -> bool {
        match &self.only {
            None => true,
            Some(keep) => {
                file.ends_with(PROJECT_FILE)
                    || keep.contains(&std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()))
            }
        }
    }

    /// Names of every model found.
    pub fn model_names(&self) -> Vec<&str> {
        self.models.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }
}

/// The directory holding `ebb.yaml`: `start` or the closest parent that has one.
pub fn find_project(start: &Path) -> Result<PathBuf, LoadError> {
    let start = if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        start
    };
    let abs = std::path::absolute(start).map_err(|source| LoadError::Io {
        path: start.to_path_buf(),
        source,
    })?;
    let mut dir = Some(abs.as_path());
    while let Some(d) = dir {
        if d.join(PROJECT_FILE).is_file() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    Err(LoadError::NoProject(start.to_path_buf()))
}

fn model_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        jsonschema::validator_for(crate::schema::model_schema()).expect("the generated model schema is valid")
    })
}

fn project_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        jsonschema::validator_for(crate::schema::project_schema()).expect("the generated project schema is valid")
    })
}

/// How a path is shown: relative to the working directory when it is below it.
pub fn display_path(p: &Path) -> PathBuf {
    let cwd = std::env::current_dir().ok();
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match cwd.as_deref().and_then(|c| abs.strip_prefix(c).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => p.to_path_buf(),
    }
}

/// The model files of a project: `*.yaml` and `*.yml` below `models_dir`, sorted.
pub fn model_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Validates the project in `project_dir`. With `only`, model files (or directories of
/// them) outside the project's models directory are added, and only their diagnostics
/// (and `ebb.yaml`'s) are reported; cross-file checks still see the whole project.
pub fn validate(project_dir: &Path, only: &[PathBuf]) -> Result<Report, LoadError> {
    let mut report = Report {
        project_dir: project_dir.to_path_buf(),
        ..Report::default()
    };
    let project_path = project_dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&project_path).map_err(|source| LoadError::Io {
        path: project_path.clone(),
        source,
    })?;
    let pfile = SourceFile::new(display_path(&project_path), text);
    let mut buckets: Vec<Vec<Diagnostic>> = vec![Vec::new()];
    report.files = 1;

    // ebb.yaml
    let mut project: Option<ProjectSpec> = None;
    match yaml::parse(&pfile) {
        Err(d) => buckets[0].push(d),
        Ok((mut root, ds)) => {
            buckets[0].extend(ds);
            if matches!(root.value, yaml::Value::Null) {
                buckets[0].push(
                    Diagnostic::new(Code::MissingField, Span::file_start(&pfile), "`ebb.yaml` is empty")
                        .help("start with `version: 1` and a `connections:` mapping"),
                );
            } else {
                let (ds, bad) =
                    schema_check::check(&mut root, crate::schema::project_schema(), project_validator(), &pfile);
                buckets[0].extend(ds);
                project::check_secrets_and_vars(&root, &pfile, &mut buckets[0]);
                match from_value_repairing::<ProjectSpec>(root.to_json(), &bad) {
                    Ok(spec) => {
                        project::check_project(&spec, &root, &pfile, project_dir, &mut buckets[0]);
                        project = Some(spec);
                    }
                    Err(e) if bad.is_empty() => buckets[0].push(Diagnostic::new(
                        Code::SchemaOther,
                        Span::file_start(&pfile),
                        e.to_string(),
                    )),
                    Err(_) => {}
                }
            }
        }
    }

    // Model files: the project's, then any named on the command line.
    let models_dir = project_dir.join(
        project
            .as_ref()
            .and_then(|p| p.models_dir.as_deref())
            .unwrap_or("models"),
    );
    let mut files = model_files(&models_dir);
    let mut keep: Option<HashSet<PathBuf>> = None;
    if !only.is_empty() {
        let mut set = HashSet::new();
        for p in only {
            let listed = if p.is_dir() { model_files(p) } else { vec![p.clone()] };
            for f in listed {
                let abs = std::path::absolute(&f).unwrap_or(f.clone());
                if !files.iter().any(|x| std::path::absolute(x).ok().as_ref() == Some(&abs)) {
                    files.push(f.clone());
                }
                set.insert(abs);
            }
        }
        keep = Some(set);
    }
    let bad_models_dir = buckets[0].iter().any(|d| d.code == Code::BadModelsDir);
    if files.is_empty() && only.is_empty() && project.is_some() && !bad_models_dir {
        buckets[0].push(
            Diagnostic::new(
                Code::NoModels,
                Span::file_start(&pfile),
                format!("no model files in `{}`", display_path(&models_dir).display()),
            )
            .help("add `models/*.yaml` files with a `models:` list"),
        );
    }

    let connections = project.as_ref().map(|p| &p.connections);
    let mut names: Vec<(String, Span, usize)> = Vec::new();
    for path in &files {
        report.files += 1;
        let bucket = buckets.len();
        buckets.push(Vec::new());
        let shown = display_path(path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                report.io_error = true;
                let f = SourceFile::new(shown.clone(), String::new());
                buckets[bucket].push(Diagnostic::new(
                    Code::Io,
                    Span::file_start(&f),
                    format!("cannot read `{}`: {e}", shown.display()),
                ));
                continue;
            }
        };
        let file = SourceFile::new(shown, text);
        let mut root = match yaml::parse(&file) {
            Err(d) => {
                buckets[bucket].push(d);
                continue;
            }
            Ok((root, ds)) => {
                buckets[bucket].extend(ds);
                root
            }
        };
        if matches!(root.value, yaml::Value::Null) {
            buckets[bucket].push(
                Diagnostic::new(Code::MissingField, Span::file_start(&file), "the model file is empty")
                    .help("a model file holds a `models:` list"),
            );
            continue;
        }
        let (ds, bad) = schema_check::check(&mut root, crate::schema::model_schema(), model_validator(), &file);
        buckets[bucket].extend(ds);
        let json = root.to_json();
        let Some(items) = json.get("models").and_then(Value::as_array) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let prefix = ["models".to_string(), i.to_string()];
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                let (node, _) = root.deepest(&["models", &i.to_string(), "name"]);
                names.push((name.to_string(), node.pos.in_file(&file), bucket));
                report.models.push((name.to_string(), file.path.clone()));
            }
            let rel_bad: Vec<Vec<String>> = bad
                .iter()
                .filter(|b| b.starts_with(&prefix))
                .map(|b| b[2..].to_vec())
                .collect();
            let spec: ModelSpec = match from_value_repairing(item.clone(), &rel_bad) {
                Ok(s) => s,
                Err(e) => {
                    if rel_bad.is_empty() {
                        let (node, _) = root.deepest(&prefix);
                        buckets[bucket].push(Diagnostic::new(
                            Code::SchemaOther,
                            node.pos.in_file(&file),
                            e.to_string(),
                        ));
                    }
                    continue;
                }
            };
            let ctx = ModelCtx {
                file: &file,
                root: &root,
                index: i,
                connections,
                skip: &bad,
            };
            let (plan, ds) = compile_model(&ctx, &spec);
            buckets[bucket].extend(ds);
            if let Some(plan) = plan {
                report.plans.push(plan);
            }
        }
    }
    let dup_input: Vec<(String, Span)> = names.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    for d in duplicate_names(&dup_input) {
        if let Some((name, span, bucket)) = names.iter().find(|(_, s, _)| *s == d.span) {
            // The later definition does not get a plan; `plan` and `run` see the first.
            if let Some(i) = report
                .plans
                .iter()
                .rposition(|p| &p.name == name && p.file == span.file.path)
            {
                report.plans.remove(i);
            }
            buckets[*bucket].push(d);
        }
    }
    for mut b in buckets {
        b.sort_by_key(|d| (d.span.line, d.span.col));
        report.diagnostics.extend(b);
    }
    report.only = keep;
    let diagnostics = std::mem::take(&mut report.diagnostics);
    report.diagnostics = diagnostics
        .into_iter()
        .filter(|d| report.reports_on(&d.span.file.path))
        .collect();
    report.project = project;
    Ok(report)
}

/// Deserializes `v`; when that fails, drops the values at `bad` (which already have a
/// schema diagnostic) and tries again, so one bad optional field does not hide every
/// other check of the model.
fn from_value_repairing<T: DeserializeOwned>(v: Value, bad: &[Vec<String>]) -> Result<T, serde_json::Error> {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Ok(t),
        Err(e) if bad.is_empty() => Err(e),
        Err(_) => {
            let mut v = v;
            for path in bad {
                remove_at(&mut v, path);
            }
            serde_json::from_value(v)
        }
    }
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        cur = match cur {
            Value::Object(o) => match o.get_mut(p) {
                Some(x) => x,
                None => return,
            },
            Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
    }
    match cur {
        Value::Object(o) => {
            o.shift_remove(last);
        }
        Value::Array(a) => {
            // Removing shifts indices; null keeps them (and fails again if required).
            if let Some(x) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *x = Value::Null;
            }
        }
        _ => {}
    }
}

//! `ebb validate`: load the project and every model file and report all problems.
//!
//! Layers, each adding to one list of diagnostics: YAML syntax (a file that does not
//! parse stops there), JSON schema (shape and types, at YAML positions), then semantics,
//! which is compiling each model into a [`SyncPlan`]. Nothing here touches the network.

mod alerts;
pub mod connect;
mod hubspot;
mod inbound;
pub mod project;
mod retention;
mod salesforce;
mod schema_check;

use crate::config::env::Scrubber;
use crate::config::files::{self, display_path, scan_model_files, FileError, LoadError};
use crate::config::{ModelSpec, ProjectSpec, PROJECT_FILE};
use crate::diagnostics::{Code, Diagnostic, Severity, SourceFile, Span};
use crate::plan::compile::{compile_model, duplicate_names, ModelCtx};
use crate::plan::SyncPlan;
use crate::yaml;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    /// The values of the variables `ebb.yaml` reads, to mask in anything printed.
    pub secrets: Scrubber,
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

    /// Masks the values of the project's variables in every diagnostic's message, notes
    /// and help (a check that quotes an error from a library may quote an expanded URL).
    pub fn scrub_diagnostics(&mut self) {
        for d in &mut self.diagnostics {
            d.message = self.secrets.scrub(&d.message);
            d.help = d.help.as_deref().map(|h| self.secrets.mask_values(h));
            for n in &mut d.notes {
                *n = self.secrets.mask_values(n);
            }
        }
    }
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

/// The directory a file named on the command line must stay in: the project, if the
/// path is below it, else the directory it is in.
fn root_for(project_dir: &Path, path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let project = std::path::absolute(project_dir).unwrap_or_else(|_| project_dir.to_path_buf());
    let real_project = std::fs::canonicalize(project_dir).unwrap_or_else(|_| project.clone());
    if abs.starts_with(&project) || abs.starts_with(&real_project) {
        project_dir.to_path_buf()
    } else {
        abs.parent()
            .map_or_else(|| project_dir.to_path_buf(), Path::to_path_buf)
    }
}

/// E002 for a file that is not YAML text: where, what kind of character, never the bytes.
fn not_text(shown: &Path, line: usize, col: usize, what: &str) -> Diagnostic {
    // The file's text is left out, so no snippet quotes it.
    let file = SourceFile::new(shown.to_path_buf(), String::new());
    Diagnostic::new(
        Code::YamlSyntax,
        Span {
            file,
            line,
            col,
            end_line: line,
            end_col: col + 1,
        },
        format!(
            "`{}` is not YAML text: it holds {what} here (not shown)",
            shown.display()
        ),
    )
    .help(
        "config files are UTF-8 text; write a special character in a double-quoted string as an escape, e.g. `\"\\t\"`",
    )
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
    let mut buckets: Vec<Vec<Diagnostic>> = vec![Vec::new()];
    let (text, unreadable) = match files::read_text(project_dir, &project_path) {
        Ok(t) => (t, None),
        Err(FileError::Refused(why)) => {
            return Err(LoadError::Io {
                path: project_path.clone(),
                source: std::io::Error::other(why),
            })
        }
        Err(FileError::NotText { line, col, what }) => (
            String::new(),
            Some(not_text(&display_path(&project_path), line, col, &what)),
        ),
    };
    let pfile = SourceFile::new(display_path(&project_path), text);
    report.files = 1;

    // ebb.yaml
    let mut project: Option<ProjectSpec> = None;
    let mut alert_scopes = Vec::new();
    match unreadable.map_or_else(|| yaml::parse(&pfile), Err) {
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
                project::check_secrets_and_vars(&root, &pfile, &mut buckets[0], &mut report.secrets);
                match from_value_repairing::<ProjectSpec>(root.to_json(), &bad) {
                    Ok(spec) => {
                        project::check_project(&spec, &root, &pfile, project_dir, &mut buckets[0]);
                        alert_scopes = alerts::check(&spec, &root, &pfile, &mut buckets[0]);
                        retention::check(&spec, &root, &pfile, &mut buckets[0]);
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
    let bad_models_dir = buckets[0].iter().any(|d| d.code == Code::BadModelsDir);
    let mut files = if bad_models_dir {
        Vec::new()
    } else {
        scan_model_files(project_dir, &models_dir)
    };
    let mut keep: Option<HashSet<PathBuf>> = None;
    if !only.is_empty() {
        let mut set = HashSet::new();
        let mut listed_abs: HashSet<PathBuf> = files
            .iter()
            .map(|x| std::path::absolute(x).unwrap_or_else(|_| x.clone()))
            .collect();
        for p in only {
            let listed = if std::fs::metadata(p).is_ok_and(|m| m.is_dir()) {
                scan_model_files(&root_for(project_dir, p), p)
            } else {
                vec![p.clone()]
            };
            for f in listed {
                let abs = std::path::absolute(&f).unwrap_or(f.clone());
                if listed_abs.insert(abs.clone()) {
                    files.push(f.clone());
                }
                set.insert(abs);
            }
        }
        keep = Some(set);
    }
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
        let text = match files::read_text(&root_for(project_dir, path), path) {
            Ok(t) => t,
            Err(FileError::Refused(why)) => {
                report.io_error = true;
                let f = SourceFile::new(shown.clone(), String::new());
                buckets[bucket].push(
                    Diagnostic::new(
                        Code::Io,
                        Span::file_start(&f),
                        format!("cannot read `{}`: {why}", shown.display()),
                    )
                    .help("model files are regular files of at most 1 MiB inside the project"),
                );
                continue;
            }
            Err(FileError::NotText { line, col, what }) => {
                buckets[bucket].push(not_text(&shown, line, col, &what));
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
        // The schema problems of each model (and those above every model), found in one
        // pass: with one list for all, 10,000 models with an error each took 10^8 steps.
        let mut bad_of: HashMap<usize, Vec<Vec<String>>> = HashMap::new();
        let mut bad_above: Vec<Vec<String>> = Vec::new();
        for b in &bad {
            match b
                .get(1)
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|_| b[0] == "models")
            {
                Some(i) => bad_of.entry(i).or_default().push(b.clone()),
                // Only the root and `models` itself contain a model.
                None if (b.is_empty() || (b.len() == 1 && b[0] == "models")) && !bad_above.contains(b) => {
                    bad_above.push(b.clone())
                }
                None => {}
            }
        }
        for (i, item) in items.iter().enumerate() {
            let prefix = ["models".to_string(), i.to_string()];
            let mut bad: Vec<Vec<String>> = bad_of.remove(&i).unwrap_or_default();
            bad.extend(bad_above.iter().cloned());
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
    let mut at: HashMap<(&Path, usize, usize), usize> = HashMap::new();
    for (i, (_, s, _)) in names.iter().enumerate() {
        at.entry((s.file.path.as_path(), s.line, s.col)).or_insert(i);
    }
    // How many later definitions of each (name, file) lose their plan.
    let mut unplan: HashMap<(String, PathBuf), usize> = HashMap::new();
    for d in duplicate_names(&dup_input) {
        let key = (d.span.file.path.as_path(), d.span.line, d.span.col);
        if let Some(&i) = at.get(&key) {
            let (name, span, bucket) = &names[i];
            *unplan.entry((name.clone(), span.file.path.clone())).or_default() += 1;
            buckets[*bucket].push(d);
        }
    }
    if !unplan.is_empty() {
        // The later definition does not get a plan; `plan` and `run` see the first.
        let mut keep = vec![true; report.plans.len()];
        for (i, p) in report.plans.iter().enumerate().rev() {
            if let Some(n) = unplan.get_mut(&(p.name.clone(), p.file.clone())).filter(|n| **n > 0) {
                *n -= 1;
                keep[i] = false;
            }
        }
        let mut k = keep.into_iter();
        report.plans.retain(|_| k.next().unwrap_or(true));
    }
    // Alerts scoped to models: checked once the model names are known.
    let known: Vec<&str> = names.iter().map(|(n, _, _)| n.as_str()).collect();
    buckets[0].extend(alerts::check_scopes(&alert_scopes, &known));
    // `conflicts.crm_state` names another model: checked once every model has its plan.
    let linked = crate::plan::compile::conflicts::link(&mut report.plans);
    if !linked.is_empty() {
        let failed: Vec<String> = linked.iter().map(|(n, _)| n.clone()).collect();
        for (name, d) in linked {
            if let Some((_, _, bucket)) = names
                .iter()
                .find(|(n, s, _)| *n == name && s.file.path == d.span.file.path)
            {
                buckets[*bucket].push(d);
            }
        }
        report.plans.retain(|p| !failed.contains(&p.name));
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
    report.scrub_diagnostics();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file is indexed for line lookups once, however many diagnostics point into
    /// it: rendering 10,000 of them must not scan the file 10,000 times.
    #[test]
    fn many_diagnostics_cost_one_line_index_per_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ebb.yaml"),
            "version: 1\nconnections:\n  out:\n    type: file\n    path: out\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let mut text = String::from("models:\n  - name: wide\n    destination:\n");
        for i in 0..10_000 {
            text.push_str(&format!("      extra_{i}: {i}\n"));
        }
        std::fs::write(dir.path().join("models/wide.yaml"), &text).unwrap();
        let total = text.len() + std::fs::metadata(dir.path().join("ebb.yaml")).unwrap().len() as usize;
        let before = crate::diagnostics::line_index_bytes();
        let report = validate(dir.path(), &[]).unwrap();
        let unknown = report.diagnostics.iter().filter(|d| d.code == Code::UnknownKey).count();
        assert_eq!(unknown, 10_000);
        for format in [
            crate::diagnostics::render::Format::Human,
            crate::diagnostics::render::Format::Github,
        ] {
            let out = crate::diagnostics::render::render(&report.diagnostics, format, false);
            assert!(out.contains("extra_9999"));
        }
        let scanned = crate::diagnostics::line_index_bytes() - before;
        assert!(scanned <= total, "scanned {scanned} bytes for {total} bytes of files");
    }
}

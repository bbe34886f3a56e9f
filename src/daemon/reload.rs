//! Loading the project and picking up changes to its files while the daemon runs.
//!
//! The [`Loader`] hashes `ebb.yaml` and every model file; when a hash changes (the daemon
//! polls every second), it validates the whole project again and decides file by file:
//! a changed model file without errors replaces the models it defined; a changed file with
//! errors is rejected, its diagnostics are reported and the models it defined before keep
//! their previous plans; a deleted file drops its models. An `ebb.yaml` with errors rejects
//! the whole change. Validation is offline and pure, so a reload never touches the network.

use crate::config::{ProjectSpec, PROJECT_FILE};
use crate::diagnostics::{Diagnostic, Severity};
use crate::plan::SyncPlan;
use crate::validate::{display_path, model_files, validate, LoadError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a load found, file by file.
#[derive(Debug)]
pub enum Event {
    /// A model file was added or changed and validates: its models run its new version.
    Accepted {
        file: PathBuf,
        models: Vec<String>,
        added: bool,
        warnings: usize,
    },
    /// A model file changed and has errors: nothing of it changes.
    Rejected {
        file: PathBuf,
        diagnostics: Vec<Diagnostic>,
        /// The models still run from the previous version of the file.
        kept: Vec<String>,
    },
    /// A model file was deleted: its models stop (after any run in progress).
    Removed { file: PathBuf, models: Vec<String> },
    /// `ebb.yaml` changed and validates.
    ProjectAccepted {
        /// Settings that only a restart applies (`daemon`, `state`).
        restart_needed: Vec<&'static str>,
    },
    /// `ebb.yaml` has errors: nothing changes.
    ProjectRejected { diagnostics: Vec<Diagnostic> },
    /// The project could not be read at all (e.g. `ebb.yaml` deleted): nothing changes.
    Unreadable { error: String },
    /// Two accepted files define the same model: the first one's runs.
    Duplicate {
        model: String,
        file: PathBuf,
        kept: PathBuf,
    },
}

/// The project as accepted so far.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub project: Arc<ProjectSpec>,
    /// Every model to run, one per name.
    pub plans: Vec<Arc<SyncPlan>>,
}

/// Loads the project and keeps what was accepted, file by file.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    /// The hash of each file at the last load, by path as shown: a poll that finds
    /// another loads again.
    seen: BTreeMap<PathBuf, u64>,
    /// The hash of each file when it was last judged (accepted or rejected).
    evaluated: BTreeMap<PathBuf, u64>,
    /// The plans of each accepted model file, by path as shown.
    files: BTreeMap<PathBuf, Vec<Arc<SyncPlan>>>,
    project: Option<Arc<ProjectSpec>>,
}

/// The hash of a file's content (0 when it cannot be read).
fn hash_file(path: &Path) -> u64 {
    match std::fs::read(path) {
        Ok(bytes) => xxhash_rust::xxh3::xxh3_64(&bytes) | 1,
        Err(_) => 0,
    }
}

fn errors_in<'a>(diagnostics: &'a [Diagnostic], file: &Path) -> Vec<&'a Diagnostic> {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error && d.span.path() == file)
        .collect()
}

impl Loader {
    pub fn new(dir: &Path) -> Loader {
        Loader {
            dir: dir.to_path_buf(),
            seen: BTreeMap::new(),
            evaluated: BTreeMap::new(),
            files: BTreeMap::new(),
            project: None,
        }
    }

    pub fn project_file(&self) -> PathBuf {
        display_path(&self.dir.join(PROJECT_FILE))
    }

    /// The hashes of `ebb.yaml` and the model files now (the models directory of `project`).
    fn fingerprint(&self, project: Option<&ProjectSpec>) -> BTreeMap<PathBuf, u64> {
        let mut out = BTreeMap::new();
        let pfile = self.dir.join(PROJECT_FILE);
        out.insert(display_path(&pfile), hash_file(&pfile));
        let models_dir = project.and_then(|p| p.models_dir.as_deref()).unwrap_or("models");
        for f in model_files(&self.dir.join(models_dir)) {
            out.insert(display_path(&f), hash_file(&f));
        }
        out
    }

    /// Whether a file changed, appeared or went since the last load.
    pub fn changed(&self) -> bool {
        self.fingerprint(self.project.as_deref()) != self.seen
    }

    /// What is accepted now (`None` before a first successful load).
    pub fn accepted(&self) -> Option<Accepted> {
        let project = self.project.clone()?;
        let mut plans: Vec<Arc<SyncPlan>> = Vec::new();
        let mut names = BTreeSet::new();
        for list in self.files.values() {
            for p in list {
                if names.insert(p.name.clone()) {
                    plans.push(p.clone());
                }
            }
        }
        Some(Accepted { project, plans })
    }

    /// Validates the project and takes what validates, file by file. Reads files: call it
    /// off the async threads.
    pub fn load(&mut self) -> Vec<Event> {
        let before = self.fingerprint(self.project.as_deref());
        let report = match validate(&self.dir, &[]) {
            Ok(r) => r,
            Err(e @ LoadError::NoProject(_)) | Err(e @ LoadError::Io { .. }) => {
                self.seen = before;
                return vec![Event::Unreadable { error: e.to_string() }];
            }
        };
        let pfile = self.project_file();
        let project_errors: Vec<Diagnostic> = errors_in(&report.diagnostics, &pfile).into_iter().cloned().collect();
        let new_project = match (&report.project, project_errors.is_empty()) {
            (Some(p), true) => p.clone(),
            _ => {
                // Model files are evaluated once `ebb.yaml` is fixed.
                self.seen = before;
                return vec![Event::ProjectRejected {
                    diagnostics: project_errors,
                }];
            }
        };
        let mut events = Vec::new();
        let project_changed = self.project.as_deref().map(as_json) != Some(as_json(&new_project));
        if project_changed {
            if let Some(old) = &self.project {
                let mut restart_needed = Vec::new();
                if json_of(&old.daemon) != json_of(&new_project.daemon) {
                    restart_needed.push("daemon");
                }
                if json_of(&old.state) != json_of(&new_project.state) {
                    restart_needed.push("state");
                }
                events.push(Event::ProjectAccepted { restart_needed });
            }
        }
        let after = self.fingerprint(Some(&new_project));
        let mut touched = BTreeSet::new();
        for (file, hash) in &after {
            if *file == pfile {
                continue;
            }
            let edited = self.evaluated.get(file) != Some(hash);
            if !project_changed && !edited {
                continue; // unchanged, and evaluated against the same project
            }
            let errors = errors_in(&report.diagnostics, file);
            if errors.is_empty() {
                let plans: Vec<Arc<SyncPlan>> = report
                    .plans
                    .iter()
                    .filter(|p| p.file == *file)
                    .map(|p| Arc::new(p.clone()))
                    .collect();
                let warnings = report
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Warning && d.span.path() == file)
                    .count();
                let models = plans.iter().map(|p| p.name.clone()).collect();
                let previous = self.files.insert(file.clone(), plans);
                if previous.is_none() || edited {
                    touched.insert(file.clone());
                    events.push(Event::Accepted {
                        file: file.clone(),
                        models,
                        added: previous.is_none(),
                        warnings,
                    });
                }
            } else {
                let kept = self
                    .files
                    .get(file)
                    .map(|l| l.iter().map(|p| p.name.clone()).collect())
                    .unwrap_or_default();
                events.push(Event::Rejected {
                    file: file.clone(),
                    diagnostics: errors.into_iter().cloned().collect(),
                    kept,
                });
            }
        }
        let gone: Vec<PathBuf> = self.files.keys().filter(|f| !after.contains_key(*f)).cloned().collect();
        for file in gone {
            let models = self
                .files
                .remove(&file)
                .map(|l| l.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default();
            events.push(Event::Removed { file, models });
        }
        let mut owner: BTreeMap<&str, &PathBuf> = BTreeMap::new();
        for (file, list) in &self.files {
            for p in list {
                match owner.get(p.name.as_str()) {
                    Some(first) if touched.contains(file) => events.push(Event::Duplicate {
                        model: p.name.clone(),
                        file: file.clone(),
                        kept: (*first).clone(),
                    }),
                    Some(_) => {}
                    None => {
                        owner.insert(&p.name, file);
                    }
                }
            }
        }
        self.project = Some(Arc::new(new_project));
        // A file that changed while the project was validated (its hash differs before and
        // after) is marked unseen, so the next poll evaluates it again.
        let mut seen = after;
        for (file, hash) in seen.iter_mut() {
            if before.get(file) != Some(hash) {
                *hash = 0;
            }
        }
        self.evaluated = seen.clone();
        self.seen = seen;
        events
    }
}

fn as_json(p: &ProjectSpec) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

fn json_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A diagnostic on one line: `models/x.yaml:3:7: error[E101]: message (help: …)`.
pub fn one_line(d: &Diagnostic) -> String {
    let mut s = format!(
        "{}:{}:{}: {}[{}]: {}",
        d.span.path().display(),
        d.span.line,
        d.span.col,
        d.severity.as_str(),
        d.code,
        d.message
    );
    if let Some(h) = &d.help {
        s.push_str(&format!(" (help: {h})"));
    }
    s
}

/// A diagnostic as a JSON object for the JSON log.
pub fn diagnostic_json(d: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "file": d.span.path().display().to_string(),
        "line": d.span.line,
        "col": d.span.col,
        "severity": d.severity.as_str(),
        "code": d.code.to_string(),
        "message": d.message,
        "help": d.help,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "version: 1\nconnections:\n  pg:\n    type: postgres\n    url: postgres://u@127.0.0.1/db\n  out:\n    type: file\n    path: out\n";

    fn model(name: &str, interval: &str) -> String {
        format!(
            "models:\n  - name: {name}\n    source:\n      type: postgres\n      query: SELECT id, name FROM t\n    destination:\n      type: file\n      object: x\n      mode: upsert\n      unique_identifier: id\n    mappings:\n      - source: name\n        destination: name\n    schedule:\n      interval: {interval}\n"
        )
    }

    fn names(a: &Accepted) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = a
            .plans
            .iter()
            .map(|p| (p.name.clone(), p.schedule.as_ref().unwrap().written.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_bad_edit_keeps_the_previous_plan_and_a_deleted_file_drops_its_models() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ebb.yaml"), PROJECT).unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        std::fs::write(dir.path().join("models/a.yaml"), model("a", "1s")).unwrap();
        let mut l = Loader::new(dir.path());
        let events = l.load();
        assert!(
            matches!(&events[..], [Event::Accepted { models, added: true, .. }] if models == &["a"]),
            "{events:?}"
        );
        assert!(!l.changed());
        assert!(l.load().is_empty(), "nothing changed, nothing to say");

        std::fs::write(dir.path().join("models/b.yaml"), model("b", "2s")).unwrap();
        assert!(l.changed());
        let events = l.load();
        assert!(
            matches!(&events[..], [Event::Accepted { added: true, .. }]),
            "{events:?}"
        );
        assert_eq!(
            names(&l.accepted().unwrap()),
            [("a".into(), "1s".into()), ("b".into(), "2s".into())]
        );

        // An invalid edit of b: rejected with its diagnostic, b keeps running every 2s.
        std::fs::write(dir.path().join("models/b.yaml"), model("b", "2 seconds")).unwrap();
        let events = l.load();
        match &events[..] {
            [Event::Rejected { diagnostics, kept, .. }] => {
                assert_eq!(kept, &["b"]);
                assert!(
                    one_line(&diagnostics[0]).contains("is not an interval unit in `2 seconds`"),
                    "{diagnostics:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(names(&l.accepted().unwrap())[1], ("b".into(), "2s".into()));
        // A valid edit of b is taken.
        std::fs::write(dir.path().join("models/b.yaml"), model("b", "5s")).unwrap();
        assert!(matches!(&l.load()[..], [Event::Accepted { added: false, .. }]));
        assert_eq!(names(&l.accepted().unwrap())[1], ("b".into(), "5s".into()));

        // ebb.yaml with an error: nothing changes.
        std::fs::write(dir.path().join("ebb.yaml"), "version: 1\nconnections: 7\n").unwrap();
        std::fs::remove_file(dir.path().join("models/a.yaml")).unwrap();
        assert!(matches!(&l.load()[..], [Event::ProjectRejected { .. }]));
        assert_eq!(l.accepted().unwrap().plans.len(), 2);
        // Fixed: a's deletion is seen.
        std::fs::write(dir.path().join("ebb.yaml"), PROJECT).unwrap();
        let events = l.load();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Removed { models, .. } if models == &["a"])),
            "{events:?}"
        );
        assert_eq!(names(&l.accepted().unwrap()), [("b".into(), "5s".into())]);
    }

    #[test]
    fn at_start_up_invalid_files_are_rejected_and_the_rest_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ebb.yaml"), PROJECT).unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        std::fs::write(dir.path().join("models/a.yaml"), model("a", "1s")).unwrap();
        std::fs::write(dir.path().join("models/z.yaml"), "models:\n  - name: Bad Name\n").unwrap();
        let mut l = Loader::new(dir.path());
        let events = l.load();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(&events[1], Event::Rejected { kept, .. } if kept.is_empty()));
        assert_eq!(l.accepted().unwrap().plans.len(), 1);
    }
}

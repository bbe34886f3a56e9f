//! Loading the project and picking up changes to its files while the daemon runs.
//!
//! The [`Loader`] hashes `ebb.yaml` and every model file; when a hash changes (the daemon
//! polls every second), it validates the whole project again with the very function
//! `ebb validate` uses ([`validate`]), so every check applies, the cross-file ones
//! (duplicate model names, E201) included.
//!
//! A reload is all or nothing: it is taken only when it brings no new error. An error that
//! was already reported at the last load, unchanged, in a file that was not loaded then
//! (a file broken since start-up) does not hold the others back; any other error rejects
//! the reload, its diagnostics are reported and every model keeps its previous plan, until
//! a later edit fixes it. Judging file by file instead would let a cross-file error land
//! on the wrong file: a new file redefining an existing model's name would take it over.
//!
//! At start-up there is no previous plan: files with errors are left out and the rest
//! runs. A model name defined more than once never runs until only one definition is
//! left: which one is meant is not known, and running the wrong one could delete records.
//! Validation is offline and pure, so a reload never touches the network.

use crate::config::files::{display_path, model_files, LoadError};
use crate::config::{ProjectSpec, PROJECT_FILE};
use crate::diagnostics::{Code, Diagnostic, Severity};
use crate::plan::SyncPlan;
use crate::validate::validate;
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
    /// A reload was rejected (the `Rejected` events before say why): these changed files
    /// are not applied either; they are once the project validates.
    Held { files: Vec<PathBuf> },
}

/// The project as accepted so far.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub project: Arc<ProjectSpec>,
    /// Every model to run, one per name.
    pub plans: Vec<Arc<SyncPlan>>,
}

/// Loads the project and keeps what was accepted.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    /// The hash of each file at the last load, by path as shown: a poll that finds
    /// another loads again.
    seen: BTreeMap<PathBuf, u64>,
    /// The hash of each file at the last accepted load.
    evaluated: BTreeMap<PathBuf, u64>,
    /// The plans of each loaded model file, by path as shown.
    files: BTreeMap<PathBuf, Vec<Arc<SyncPlan>>>,
    /// The errors (one line each) of each model file left out at the last accepted load.
    standing: BTreeMap<PathBuf, Vec<String>>,
    project: Option<Arc<ProjectSpec>>,
}

/// The hash of a file's content (0 when it cannot be read). Read as `validate` reads it:
/// a regular file inside the project, size-capped, so a FIFO or `/dev/zero` planted as
/// `ebb.yaml` cannot stall or exhaust the polling loop.
fn hash_file(root: &Path, path: &Path) -> u64 {
    match crate::config::files::read_bytes(root, path) {
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
            standing: BTreeMap::new(),
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
        out.insert(display_path(&pfile), hash_file(&self.dir, &pfile));
        let models_dir = project.and_then(|p| p.models_dir.as_deref()).unwrap_or("models");
        for f in model_files(&self.dir.join(models_dir)) {
            out.insert(display_path(&f), hash_file(&self.dir, &f));
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

    fn names_in(&self, file: &Path) -> Vec<String> {
        self.files
            .get(file)
            .map(|l| l.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Validates the project as `ebb validate` does and takes it if it brings no new error
    /// (see the module's doc). Reads files: call it off the async threads.
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
        // A models directory that cannot be listed (out of file descriptors, say) would look
        // like every model file deleted: nothing changes.
        let models_dir = self.dir.join(new_project.models_dir.as_deref().unwrap_or("models"));
        if let Some(error) = listing_error(&models_dir) {
            self.seen = before;
            return vec![Event::Unreadable { error }];
        }
        let after = self.fingerprint(Some(&new_project));
        // The errors of each model file.
        let mut errors: BTreeMap<PathBuf, Vec<Diagnostic>> = BTreeMap::new();
        for d in report.diagnostics.iter().filter(|d| d.severity == Severity::Error) {
            if d.span.path() != pfile {
                errors.entry(d.span.path().to_path_buf()).or_default().push(d.clone());
            }
        }
        let first_load = self.project.is_none();
        if !first_load {
            let fresh: Vec<(&PathBuf, &Vec<Diagnostic>)> = errors
                .iter()
                .filter(|(file, ds)| {
                    let standing = !self.files.contains_key(*file)
                        && after.contains_key(*file)
                        && self.evaluated.get(*file) == after.get(*file)
                        && self.standing.get(*file) == Some(&ds.iter().map(one_line).collect::<Vec<String>>());
                    !standing
                })
                .collect();
            if !fresh.is_empty() {
                let mut events: Vec<Event> = fresh
                    .into_iter()
                    .map(|(file, ds)| Event::Rejected {
                        file: file.clone(),
                        diagnostics: ds.clone(),
                        kept: self.names_in(file),
                    })
                    .collect();
                let mut held: Vec<PathBuf> = before
                    .iter()
                    .filter(|(f, h)| self.evaluated.get(*f) != Some(*h))
                    .map(|(f, _)| f.clone())
                    .chain(self.evaluated.keys().filter(|f| !before.contains_key(*f)).cloned())
                    .filter(|f| !errors.contains_key(f))
                    .collect();
                held.sort();
                held.dedup();
                if !held.is_empty() {
                    events.push(Event::Held { files: held });
                }
                // Nothing changes; the next edit is judged again.
                self.seen = before;
                return events;
            }
        }

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
        // A name defined more than once: none of its definitions runs.
        let mut defined: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, _) in &report.models {
            *defined.entry(name.as_str()).or_default() += 1;
        }
        let mut files = BTreeMap::new();
        let mut standing = BTreeMap::new();
        for (file, hash) in &after {
            if *file == pfile {
                continue;
            }
            let edited = self.evaluated.get(file) != Some(hash);
            let was_loaded = self.files.contains_key(file);
            let own: Vec<Diagnostic> = errors.get(file).cloned().unwrap_or_default();
            let clashing: Vec<&str> = report
                .models
                .iter()
                .filter(|(n, f)| f == file && defined.get(n.as_str()).is_some_and(|c| *c > 1))
                .map(|(n, _)| n.as_str())
                .collect();
            if own.is_empty() && clashing.is_empty() {
                let plans: Vec<Arc<SyncPlan>> = report
                    .plans
                    .iter()
                    .filter(|p| p.file == *file)
                    .map(|p| Arc::new(p.clone()))
                    .collect();
                if edited || project_changed || !was_loaded {
                    events.push(Event::Accepted {
                        file: file.clone(),
                        models: plans.iter().map(|p| p.name.clone()).collect(),
                        added: !was_loaded,
                        warnings: report
                            .diagnostics
                            .iter()
                            .filter(|d| d.severity == Severity::Warning && d.span.path() == file)
                            .count(),
                    });
                }
                files.insert(file.clone(), plans);
            } else {
                let mut diagnostics = own.clone();
                // The clash is reported at the other definition: show it here too.
                for d in &report.diagnostics {
                    if d.code == Code::DuplicateModel
                        && !diagnostics.iter().any(|x| one_line(x) == one_line(d))
                        && clashing.iter().any(|n| d.message.contains(&format!("`{n}`")))
                    {
                        diagnostics.push(d.clone());
                    }
                }
                if first_load || edited || project_changed || was_loaded {
                    events.push(Event::Rejected {
                        file: file.clone(),
                        diagnostics,
                        kept: Vec::new(),
                    });
                }
                standing.insert(file.clone(), own.iter().map(one_line).collect());
            }
        }
        for (file, list) in &self.files {
            if !after.contains_key(file) {
                events.push(Event::Removed {
                    file: file.clone(),
                    models: list.iter().map(|p| p.name.clone()).collect(),
                });
            }
        }
        self.files = files;
        self.standing = standing;
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

/// Why `dir` (or a directory below it) cannot be listed, if it cannot; a missing `dir`
/// is an empty one.
fn listing_error(dir: &Path) -> Option<String> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d == dir && e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(format!("cannot list `{}`: {e}", display_path(&d).display())),
        };
        for e in entries {
            match e {
                Ok(e) if !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir() => stack.push(e.path()),
                Ok(_) => {}
                Err(e) => return Some(format!("cannot list `{}`: {e}", display_path(&d).display())),
            }
        }
    }
    None
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
    for n in &d.notes {
        s.push_str(&format!(" (note: {n})"));
    }
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
        "notes": d.notes,
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

    #[test]
    fn a_new_file_redefining_a_model_is_rejected_wherever_the_clash_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ebb.yaml"), PROJECT).unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        std::fs::write(dir.path().join("models/m.yaml"), model("a", "1s")).unwrap();
        std::fs::write(dir.path().join("models/other.yaml"), model("o", "1s")).unwrap();
        let mut l = Loader::new(dir.path());
        assert_eq!(l.load().len(), 2);
        // Sorted before m.yaml, so `validate` reports the clash at m.yaml's definition.
        // Another file's valid edit in the same change is held back too.
        std::fs::write(dir.path().join("models/0dup.yaml"), model("a", "7s")).unwrap();
        std::fs::write(dir.path().join("models/other.yaml"), model("o", "3s")).unwrap();
        let events = l.load();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Rejected { diagnostics, kept, .. }
                if kept == &["a"] && diagnostics.iter().any(|d| d.code == Code::DuplicateModel))),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Held { files } if files.iter().any(|f| f.ends_with("other.yaml")))),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, Event::Accepted { .. })),
            "{events:?}"
        );
        assert_eq!(
            names(&l.accepted().unwrap()),
            [("a".into(), "1s".into()), ("o".into(), "1s".into())]
        );
        assert!(!l.changed(), "judged once, not again every poll");
        // The duplicate goes: the held edit is taken.
        std::fs::remove_file(dir.path().join("models/0dup.yaml")).unwrap();
        let events = l.load();
        assert!(
            matches!(&events[..], [Event::Accepted { models, added: false, .. }] if models == &["o"]),
            "{events:?}"
        );
        assert_eq!(
            names(&l.accepted().unwrap()),
            [("a".into(), "1s".into()), ("o".into(), "3s".into())]
        );
    }

    #[test]
    fn a_name_defined_twice_at_start_up_runs_neither_definition_and_a_standing_error_holds_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ebb.yaml"), PROJECT).unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        std::fs::write(dir.path().join("models/a1.yaml"), model("a", "1s")).unwrap();
        std::fs::write(dir.path().join("models/a2.yaml"), model("a", "2s")).unwrap();
        std::fs::write(dir.path().join("models/b.yaml"), model("b", "1s")).unwrap();
        std::fs::write(dir.path().join("models/z.yaml"), "models:\n  - name: Bad Name\n").unwrap();
        let mut l = Loader::new(dir.path());
        let events = l.load();
        let rejected: Vec<&PathBuf> = events
            .iter()
            .filter_map(|e| match e {
                Event::Rejected { file, .. } => Some(file),
                _ => None,
            })
            .collect();
        assert_eq!(rejected.len(), 3, "{events:?}");
        assert_eq!(names(&l.accepted().unwrap()), [("b".into(), "1s".into())]);
        // z.yaml's errors are the same as at start-up: an edit of b is taken.
        std::fs::write(dir.path().join("models/b.yaml"), model("b", "4s")).unwrap();
        let events = l.load();
        assert!(matches!(&events[..], [Event::Accepted { .. }]), "{events:?}");
        assert_eq!(names(&l.accepted().unwrap()), [("b".into(), "4s".into())]);
        // One definition of `a` left: it runs.
        std::fs::remove_file(dir.path().join("models/a1.yaml")).unwrap();
        let events = l.load();
        assert!(
            matches!(&events[..], [Event::Accepted { models, added: true, .. }] if models == &["a"]),
            "{events:?}"
        );
        assert_eq!(
            names(&l.accepted().unwrap()),
            [("a".into(), "2s".into()), ("b".into(), "4s".into())]
        );
    }
}

//! Diagnostics: what `ebb validate` reports, as data.
//!
//! A [`Diagnostic`] is a severity, a stable [`Code`], a message, the [`Span`] of the
//! offending YAML node and optional help and notes. Everything that checks config pushes
//! diagnostics into one list and never stops at the first; rendering (terminal, JSON,
//! GitHub annotations) lives in [`render`] and knows nothing about how they were found.

mod code;
pub mod render;

pub use code::Code;

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails a validation.
    Note,
    /// Probably a mistake; fails only with `--deny-warnings`.
    Warning,
    /// The model cannot run as written.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A region of one source file. Lines and columns are 1-based and count characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub file: Arc<SourceFile>,
    pub line: usize,
    pub col: usize,
    /// Where the region ends (exclusive); equal to the start for a point.
    pub end_line: usize,
    pub end_col: usize,
}

/// The text of a file that diagnostics point into, shared by all of its spans.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the user should see it (relative to the working directory when possible).
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Arc<Self> {
        Arc::new(SourceFile {
            path: path.into(),
            text,
        })
    }

    /// The text of 1-based line `n`, without its line break.
    pub fn line(&self, n: usize) -> Option<&str> {
        self.text
            .split('\n')
            .nth(n.checked_sub(1)?)
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
    }
}

impl Span {
    /// A span covering the whole first line of a file: for problems that belong to the
    /// file rather than to one node in it.
    pub fn file_start(file: &Arc<SourceFile>) -> Span {
        Span {
            file: file.clone(),
            line: 1,
            col: 1,
            end_line: 1,
            end_col: 1,
        }
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

/// One finding about the config.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub span: Span,
    /// One line telling how to fix it.
    pub help: Option<String>,
    /// Further context, e.g. where the first of two duplicates is.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic at `span` with the code's default severity.
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: code.severity(),
            code,
            message: message.into(),
            span,
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

/// Counts of a diagnostic list, for summaries and exit codes.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Tally {
    pub errors: usize,
    pub warnings: usize,
    pub notes: usize,
}

impl Tally {
    pub fn of(diagnostics: &[Diagnostic]) -> Tally {
        let mut t = Tally::default();
        for d in diagnostics {
            match d.severity {
                Severity::Error => t.errors += 1,
                Severity::Warning => t.warnings += 1,
                Severity::Note => t.notes += 1,
            }
        }
        t
    }
}

/// "did you mean" support: the candidates close to `word`, closest first.
pub fn close_matches<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let cl = c.to_ascii_lowercase();
            if cl == lower {
                return Some((0, c));
            }
            let d = strsim::damerau_levenshtein(&lower, &cl);
            let limit = (word.chars().count().max(c.chars().count()) / 3).max(1);
            (d <= limit).then_some((d, c))
        })
        .collect();
    scored.sort_by_key(|(d, c)| (*d, *c));
    scored.dedup_by_key(|(_, c)| *c);
    scored.into_iter().map(|(_, c)| c).collect()
}

/// The close match of `word`, if exactly one candidate is close.
pub fn unique_close_match<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> Option<&'a str> {
    let m = close_matches(word, candidates);
    (m.len() == 1).then(|| m[0])
}

/// "`a`, `b` or `c`"
pub fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{s}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// A message from another library as ebb writes messages: first letter lower case.
pub fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The innermost cause of an error: usually the one sentence worth showing
/// ("Connection refused (os error 111)").
pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

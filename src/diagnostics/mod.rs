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
#[derive(Debug, Clone, Eq)]
pub struct Span {
    pub file: Arc<SourceFile>,
    pub line: usize,
    pub col: usize,
    /// Where the region ends (exclusive); equal to the start for a point.
    pub end_line: usize,
    pub end_col: usize,
}

/// Two spans are equal when they cover the same region of the same file: the file is
/// compared by identity or path, never by its whole text.
impl PartialEq for Span {
    fn eq(&self, other: &Span) -> bool {
        (self.line, self.col, self.end_line, self.end_col) == (other.line, other.col, other.end_line, other.end_col)
            && (Arc::ptr_eq(&self.file, &other.file) || self.file.path == other.file.path)
    }
}

/// The text of a file that diagnostics point into, shared by all of its spans.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the user should see it (relative to the working directory when possible).
    pub path: PathBuf,
    /// The text, or empty when it must not be shown (a file that is not YAML text): its
    /// diagnostics then have no snippet.
    pub text: String,
    /// Byte offset of the start of each line, built once: looking up the line of a
    /// diagnostic costs the same for the 10,000th as for the first.
    line_starts: Vec<usize>,
}

thread_local! {
    /// Bytes scanned to build line indexes on this thread (for tests of the cost of
    /// rendering many diagnostics).
    static LINE_INDEX_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Bytes scanned to build line indexes on this thread so far.
pub fn line_index_bytes() -> usize {
    LINE_INDEX_BYTES.with(|c| c.get())
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Arc<Self> {
        let mut line_starts = vec![0];
        line_starts.extend(after_line_breaks(&text));
        LINE_INDEX_BYTES.with(|c| c.set(c.get() + text.len()));
        Arc::new(SourceFile {
            path: path.into(),
            text,
            line_starts,
        })
    }

    /// The text of 1-based line `n`, without its line break.
    pub fn line(&self, n: usize) -> Option<&str> {
        let start = *self.line_starts.get(n.checked_sub(1)?)?;
        let end = self.line_starts.get(n).map_or(self.text.len(), |next| next - 1);
        let l = &self.text[start..end];
        Some(l.strip_suffix('\r').unwrap_or(l))
    }

    /// Lines in the file (a final line break does not start another line).
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }
}

/// The offsets just past each `\n` in `text`.
fn after_line_breaks(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i + 1)
}

/// `s` made safe to print on a terminal: control characters (ESC, BEL, CR, NUL, DEL, the C1
/// range…) and the Unicode bidirectional overrides become `\u{…}` escapes, so text from a
/// file, a warehouse or a destination cannot move the cursor, clear the screen, retitle
/// the window or reorder what is shown. Tab and newline are kept when `keep_lines`.
pub fn terminal_safe(s: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && !(keep_lines && (c == '\n' || c == '\t')))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
    };
    if !s.contains(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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
    let len = word.chars().count();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let cl = c.to_ascii_lowercase();
            if cl == lower {
                return Some((0, c));
            }
            let c_len = c.chars().count();
            let limit = (len.max(c_len) / 3).max(1);
            // The distance is at least the difference in length: most candidates are
            // ruled out without computing it (10,000 unknown keys are 70,000 candidates).
            if len.abs_diff(c_len) > limit {
                return None;
            }
            let d = strsim::damerau_levenshtein(&lower, &cl);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_from_the_index() {
        let f = SourceFile::new("t.yaml", "a: 1\r\nb: 2\n\nc".to_string());
        assert_eq!(f.line(1), Some("a: 1"));
        assert_eq!(f.line(2), Some("b: 2"));
        assert_eq!(f.line(3), Some(""));
        assert_eq!(f.line(4), Some("c"));
        assert_eq!(f.line(5), None);
        assert_eq!(f.line(0), None);
        let f = SourceFile::new("t.yaml", "x\n".to_string());
        assert_eq!((f.line(1), f.line(2), f.line(3)), (Some("x"), Some(""), None));
    }

    #[test]
    fn control_characters_are_escaped_for_terminals() {
        assert_eq!(terminal_safe("plain ünïcode", false), "plain ünïcode");
        assert_eq!(
            terminal_safe("\x1b[2J\x07x\u{9b}1m", false),
            "\\u{1b}[2J\\u{7}x\\u{9b}1m"
        );
        assert_eq!(terminal_safe("a\tb\nc\rd", true), "a\tb\nc\\u{d}d");
        assert_eq!(terminal_safe("a\tb\nc", false), "a\\u{9}b\\u{a}c");
        assert_eq!(terminal_safe("abc\u{202e}fed", false), "abc\\u{202e}fed");
    }
}

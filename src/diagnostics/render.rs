//! Rendering diagnostics: for people (`human`, coloured on a terminal), for programs
//! (`json`) and for pull-request annotations (`github`).

use super::{terminal_safe, Diagnostic, Severity, Tally};
use std::fmt::Write;

/// Output format of `ebb validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Github,
}

/// Renders `diagnostics` in `format`. `color` applies to `human` only.
pub fn render(diagnostics: &[Diagnostic], format: Format, color: bool) -> String {
    match format {
        Format::Human => {
            let mut out = String::new();
            for d in diagnostics {
                out.push_str(&human(d, color));
                out.push('\n');
            }
            out
        }
        Format::Json => json(diagnostics),
        Format::Github => diagnostics.iter().map(github).collect(),
    }
}

struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn severity(&self, s: Severity, text: &str) -> String {
        let code = match s {
            Severity::Error => "1;31",
            Severity::Warning => "1;33",
            Severity::Note => "1;36",
        };
        self.paint(code, text)
    }
    fn dim(&self, text: &str) -> String {
        self.paint("1;34", text)
    }
    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
}

/// One diagnostic in the compiler style:
///
/// ```text
/// error[E101]: unknown key `destinaton`
///   --> models/contacts.yaml:12:5
///    |
/// 12 |     destinaton: Contact
///    |     ^^^^^^^^^^
///    = help: did you mean `destination`?
/// ```
pub fn human(d: &Diagnostic, color: bool) -> String {
    let st = Style { on: color };
    let mut out = String::new();
    let head = format!("{}[{}]", d.severity.as_str(), d.code);
    let _ = writeln!(
        out,
        "{}{} {}",
        st.severity(d.severity, &head),
        st.bold(":"),
        st.bold(&terminal_safe(&d.message, true))
    );
    let s = &d.span;
    let line_no = s.line.to_string();
    let pad = " ".repeat(line_no.len());
    let _ = writeln!(
        out,
        "{pad}{} {}:{}:{}",
        st.dim("-->"),
        terminal_safe(&s.path().display().to_string(), false),
        s.line,
        s.col
    );
    // A file whose text must not be shown (not YAML text) has none to quote.
    let text = if s.file.text.is_empty() {
        None
    } else {
        s.file.line(s.line)
    };
    if let Some(text) = text {
        let text = text.replace('\t', " ");
        let _ = writeln!(out, "{pad} {}", st.dim("|"));
        let _ = writeln!(
            out,
            "{} {} {}",
            st.dim(&line_no),
            st.dim("|"),
            terminal_safe(&text, false)
        );
        let width = if s.end_line == s.line && s.end_col > s.col {
            s.end_col - s.col
        } else {
            // A node that spans lines (or a point): underline to the end of this line.
            text.chars().count().saturating_sub(s.col - 1).max(1)
        };
        let lead = " ".repeat(s.col.saturating_sub(1));
        let _ = writeln!(
            out,
            "{pad} {} {lead}{}",
            st.dim("|"),
            st.severity(d.severity, &"^".repeat(width))
        );
    }
    for note in &d.notes {
        let _ = writeln!(
            out,
            "{pad} {} {}: {}",
            st.dim("="),
            st.bold("note"),
            terminal_safe(note, true)
        );
    }
    if let Some(help) = &d.help {
        let _ = writeln!(
            out,
            "{pad} {} {}: {}",
            st.dim("="),
            st.bold("help"),
            terminal_safe(help, true)
        );
    }
    out
}

/// The summary line printed after the diagnostics.
pub fn summary(tally: Tally, models: usize, files: usize, color: bool) -> String {
    let st = Style { on: color };
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let counts = format!(
        "{}, {}",
        plural(tally.errors, "error"),
        plural(tally.warnings, "warning")
    );
    let scope = format!("{} in {}", plural(models, "model"), plural(files, "file"));
    if tally.errors > 0 {
        format!("{}: {counts} ({scope})\n", st.severity(Severity::Error, "failed"))
    } else {
        format!("{}: {scope} valid, {counts}\n", st.paint("1;32", "ok"))
    }
}

fn json(diagnostics: &[Diagnostic]) -> String {
    let list: Vec<serde_json::Value> = diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "severity": d.severity,
                "code": d.code,
                "message": d.message,
                "file": d.span.path().display().to_string(),
                "line": d.span.line,
                "column": d.span.col,
                "end_line": d.span.end_line,
                "end_column": d.span.end_col,
                "help": d.help,
                "notes": d.notes,
            })
        })
        .collect();
    let tally = Tally::of(diagnostics);
    let doc = serde_json::json!({ "diagnostics": list, "summary": tally });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// A GitHub Actions workflow command:
/// `::error file=F,line=L,col=C,endLine=…,endColumn=…,title=E101::message`.
/// Property values escape `%`, CR, LF, `:` and `,`; the message escapes `%`, CR and LF.
pub fn github(d: &Diagnostic) -> String {
    let cmd = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "notice",
    };
    let s = &d.span;
    let mut props = format!(
        "file={},line={},col={}",
        escape_property(&s.path().display().to_string()),
        s.line,
        s.col
    );
    if s.end_line == s.line && s.end_col > s.col {
        let _ = write!(props, ",endLine={},endColumn={}", s.end_line, s.end_col);
    }
    let _ = write!(props, ",title={}", escape_property(&format!("ebb {}", d.code)));
    let mut message = d.message.clone();
    for note in &d.notes {
        let _ = write!(message, "\nnote: {note}");
    }
    if let Some(help) = &d.help {
        let _ = write!(message, "\nhelp: {help}");
    }
    format!("::{cmd} {props}::{}\n", escape_data(&message))
}

/// `%`, CR and LF as the workflow-command syntax wants them; other control characters
/// (an escape sequence would reach the log viewer and any terminal tailing it) as `\u{…}`.
fn escape_data(s: &str) -> String {
    let s = s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    terminal_safe(&s, true).into_owned()
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

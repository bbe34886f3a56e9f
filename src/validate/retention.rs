//! `retention:` of `ebb.yaml` checked: every period parses (`<n>d`, `<n>w`, `<n>h` or
//! `forever`) and is at least a day, reported at the value (E809).

use crate::config::retention::{fields, parse_period, PeriodError};
use crate::config::ProjectSpec;
use crate::diagnostics::{Code, Diagnostic, SourceFile};
use crate::yaml::Node;
use std::sync::Arc;

pub fn check(spec: &ProjectSpec, root: &Node, file: &Arc<SourceFile>, diags: &mut Vec<Diagnostic>) {
    let Some(r) = &spec.retention else { return };
    for (name, text) in fields(r) {
        let Err(e) = parse_period(text) else { continue };
        let at = root.deepest(&["retention", name]).0.pos.in_file(file);
        let help = match e {
            PeriodError::Malformed(_) => {
                "write a whole number of days, weeks or hours, e.g. `30d`, `4w` or `72h`, or `forever`"
            }
            PeriodError::TooShort(_) => "ebb purges once a day: keep rows at least `1d` (or `forever`)",
        };
        diags.push(Diagnostic::new(Code::BadRetention, at, format!("`retention.{name}`: {e}")).help(help));
    }
}

//! The JSON-schema layer: shape and types of a parsed file, reported at YAML positions.
//!
//! Two passes. First a walk of the YAML tree beside the schema finds keys the format does
//! not have; a misspelt key with one close match is reported ("did you mean …") and then
//! renamed, so everything inside it is still validated as that key; other unknown keys are
//! reported and dropped. Tagged objects (`type: duckdb`) are checked against their own
//! variant. Then `jsonschema` validates the result, and each error's instance path is
//! mapped back to the YAML node (or key) it names.
//!
//! The parts: this file runs the two passes and holds what they share; `keys` is the
//! first (unknown and misspelt keys, tagged variants), `report` turns each `jsonschema`
//! error into a diagnostic at its YAML position.

mod keys;
mod report;

use crate::diagnostics::{Diagnostic, SourceFile};
use crate::yaml::{Node, Value as Y};
use serde_json::Value;
use std::sync::Arc;

/// Validates `root` against `schema`, correcting misspelt keys in place. Returns the
/// diagnostics and the instance paths they concern (so later layers can skip those).
pub fn check(
    root: &mut Node,
    schema: &Value,
    validator: &jsonschema::Validator,
    file: &Arc<SourceFile>,
) -> (Vec<Diagnostic>, Vec<Vec<String>>) {
    let mut w = Walker {
        root_schema: schema,
        file,
        diags: Vec::new(),
        handled: Vec::new(),
        handled_set: Default::default(),
    };
    let mut path = Vec::new();
    w.fix_keys(root, None, schema, &mut path);
    w.handled_set = w.handled.iter().cloned().collect();
    let json = root.to_json();
    let mut bad_paths = w.handled.clone();
    for err in validator.iter_errors(&json) {
        w.report(root, &err, &mut bad_paths);
    }
    (w.diags, bad_paths)
}

struct Walker<'a> {
    root_schema: &'a Value,
    file: &'a Arc<SourceFile>,
    diags: Vec<Diagnostic>,
    /// Paths already reported by the key walk; jsonschema errors under them are dropped.
    handled: Vec<Vec<String>>,
    /// `handled` as a set, filled after the walk.
    handled_set: std::collections::HashSet<Vec<String>>,
}

impl<'a> Walker<'a> {
    fn resolve(&self, mut s: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with("#/") => match self.root_schema.pointer(&r[1..]) {
                    Some(target) => s = target,
                    None => return s,
                },
                _ => return s,
            }
        }
        s
    }

    fn is_handled(&self, path: &[String]) -> bool {
        // Usually a handful of paths; a file with thousands of bad connections is checked
        // prefix by prefix instead of against every one.
        if self.handled.len() <= 16 {
            return self.handled.iter().any(|h| path.starts_with(h));
        }
        (0..=path.len()).any(|n| self.handled_set.contains(&path[..n]))
    }
}

/// The JSON type of a YAML node, as the schema names it.
fn json_kind(node: &Node) -> &'static str {
    match node.value {
        Y::Null => "null",
        Y::Bool(_) => "boolean",
        Y::Int(_) => "integer",
        Y::Float(_) => "number",
        Y::Str(_) => "string",
        Y::Seq(_) => "array",
        Y::Map(_) => "object",
    }
}

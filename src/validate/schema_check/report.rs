//! The second pass: each `jsonschema` error as a diagnostic at the YAML node (or key) its
//! instance path names, in words a model's author reads (an enum's options, the expected
//! type, a bound), with errors under a path the key walk already reported dropped.

use super::Walker;
use crate::diagnostics::{one_of, unique_close_match, Code, Diagnostic};
use crate::yaml::{Node, Pos, Value as Y};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;

impl<'a> Walker<'a> {
    pub(super) fn report(&mut self, root: &Node, err: &ValidationError<'_>, bad: &mut Vec<Vec<String>>) {
        let path: Vec<String> = err.instance_path().into_iter().map(|s| s.to_string()).collect();
        if self.is_handled(&path) {
            return;
        }
        match err.kind() {
            ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context }
                if !context.is_empty()
                    && context.iter().all(|errs| {
                        errs.len() == 1 && matches!(errs[0].kind(), ValidationErrorKind::Constant { .. })
                    }) =>
            {
                // A documented enum is a `oneOf` of constants: report it as an enum.
                let options: Vec<String> = context
                    .iter()
                    .filter_map(|errs| match errs[0].kind() {
                        ValidationErrorKind::Constant { expected_value } => expected_value.as_str().map(str::to_string),
                        _ => None,
                    })
                    .collect();
                self.enum_error(root, &path, &options, bad);
                return;
            }
            ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
                // Report the branch that came closest (fewest errors, a matching type first).
                let best = context.iter().min_by_key(|errs| {
                    let type_mismatch = errs.iter().any(|e| {
                        matches!(
                            e.kind(),
                            ValidationErrorKind::Type { .. } | ValidationErrorKind::Constant { .. }
                        ) && e.instance_path().as_str() == err.instance_path().as_str()
                    });
                    (type_mismatch, errs.len())
                });
                match best {
                    Some(errs)
                        if !errs.is_empty()
                            && !errs.iter().all(|e| {
                                e.instance_path().as_str() == err.instance_path().as_str()
                                    && matches!(e.kind(), ValidationErrorKind::Type { .. })
                            }) =>
                    {
                        for e in errs {
                            self.report(root, e, bad);
                        }
                    }
                    _ => self.push_type_error(root, &path, &expected_of_alternatives(context), bad),
                }
                return;
            }
            ValidationErrorKind::AdditionalProperties { .. } => return, // reported by the walk
            _ => {}
        }
        let (node, key_pos) = root.deepest(&path);
        let value_span = node.pos.in_file(self.file);
        let field = path.last().cloned().unwrap_or_default();
        let d = match err.kind() {
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => vec![t.to_string()],
                    TypeKind::Multiple(ts) => ts.into_iter().map(|t| t.to_string()).collect(),
                };
                self.push_type_error(root, &path, &expected, bad);
                return;
            }
            ValidationErrorKind::Required { property } => {
                let prop = property.as_str().unwrap_or_default();
                // At the key of the mapping that lacks the field; a list item has no key,
                // so its first key stands for it.
                let span = match key_pos {
                    Some(k) => k.in_file(self.file),
                    None => container_span(root, &path).in_file(self.file),
                };
                let mut d = Diagnostic::new(Code::MissingField, span, format!("missing field `{prop}`"));
                if let Some(desc) = self.describe_property(err, prop) {
                    d = d.help(format!("`{prop}`: {desc}"));
                }
                d
            }
            ValidationErrorKind::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                self.enum_error(root, &path, &opts, bad);
                return;
            }
            ValidationErrorKind::Constant { expected_value } => Diagnostic::new(
                Code::InvalidValue,
                value_span,
                format!("`{field}` must be {expected_value}, found {}", shown_value(node)),
            ),
            ValidationErrorKind::Pattern { pattern } => {
                let help = if field == "name" {
                    "model names are lowercase letters, digits and `_`, starting with a letter, e.g. `customer_segments`".to_string()
                } else {
                    format!("the value must match `{pattern}`")
                };
                let msg = if field == "api_version" {
                    format!("{} is not a Salesforce API version", shown_value(node))
                } else {
                    format!("{} is not a valid `{field}`", shown_value(node))
                };
                let help = if field == "api_version" {
                    "write the version quoted, e.g. `\"62.0\"`".to_string()
                } else {
                    help
                };
                Diagnostic::new(Code::BadPattern, value_span, msg).help(help)
            }
            ValidationErrorKind::Minimum { limit }
            | ValidationErrorKind::Maximum { limit }
            | ValidationErrorKind::ExclusiveMinimum { limit }
            | ValidationErrorKind::ExclusiveMaximum { limit } => {
                let (lo, hi) = self.bounds(err);
                let range = match (lo, hi) {
                    (Some(l), Some(h)) => format!("from {l} to {h}"),
                    (Some(l), None) => format!("at least {l}"),
                    (None, Some(h)) => format!("at most {h}"),
                    (None, None) => format!("within {limit}"),
                };
                if field == "version" {
                    Diagnostic::new(
                        Code::UnsupportedVersion,
                        value_span,
                        format!("unsupported version {}", shown_value(node)),
                    )
                    .help("this ebb reads version 1")
                } else {
                    Diagnostic::new(
                        Code::OutOfRange,
                        value_span,
                        format!("`{field}` must be {range}, found {}", shown_value(node)),
                    )
                }
            }
            ValidationErrorKind::MaxLength { limit } => Diagnostic::new(
                Code::OutOfRange,
                value_span,
                format!("`{field}` is longer than {limit} characters"),
            ),
            ValidationErrorKind::MinLength { limit } => Diagnostic::new(
                Code::OutOfRange,
                value_span,
                format!(
                    "`{field}` must have at least {limit} character{}",
                    if *limit == 1 { "" } else { "s" }
                ),
            ),
            ValidationErrorKind::MinItems { limit } => Diagnostic::new(
                Code::OutOfRange,
                value_span,
                format!(
                    "`{field}` needs at least {limit} item{}",
                    if *limit == 1 { "" } else { "s" }
                ),
            ),
            _ => Diagnostic::new(Code::SchemaOther, value_span, err.to_string()),
        };
        bad.push(path);
        self.diags.push(d);
    }

    fn enum_error(&mut self, root: &Node, path: &[String], options: &[String], bad: &mut Vec<Vec<String>>) {
        let (node, _) = root.deepest(path);
        let field = field_name(path);
        let opts: Vec<&str> = options.iter().map(String::as_str).collect();
        let help = match node.as_str().and_then(|s| unique_close_match(s, opts.iter().copied())) {
            Some(m) => format!("did you mean `{m}`? `{field}` is one of {}", one_of(&opts)),
            None => format!("`{field}` is one of {}", one_of(&opts)),
        };
        bad.push(path.to_vec());
        self.diags.push(
            Diagnostic::new(
                Code::InvalidValue,
                node.pos.in_file(self.file),
                format!("{} is not a valid `{field}`", shown_value(node)),
            )
            .help(help),
        );
    }

    fn push_type_error(&mut self, root: &Node, path: &[String], expected: &[String], bad: &mut Vec<Vec<String>>) {
        let (node, _) = root.deepest(path);
        let field = field_name(path);
        let words: Vec<&str> = expected.iter().map(|t| type_word(t)).collect();
        let subject = if path.is_empty() {
            "the file".to_string()
        } else {
            format!("`{field}`")
        };
        let mut d = Diagnostic::new(
            Code::WrongType,
            node.pos.in_file(self.file),
            format!("{subject} must be {}, found {}", words.join(" or "), node.kind()),
        );
        if path.is_empty() {
            let keys: Vec<&str> = self
                .root_schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            d = d.help(format!(
                "the file is a mapping of keys, starting with {}",
                one_of(&keys)
            ));
        }
        let in_transform_list = path.len() >= 2 && path[path.len() - 2] == "transform";
        let numeric = expected.iter().any(|t| t == "integer" || t == "number");
        let boolean = expected.iter().any(|t| t == "boolean");
        let unquote = match (&node.value, numeric || boolean) {
            (Y::Str(text), true) => {
                let t = text.trim();
                ((numeric && t.parse::<f64>().is_ok()) || (boolean && (t == "true" || t == "false")))
                    .then(|| t.to_string())
            }
            _ => None,
        };
        if let Some(t) = unquote {
            d = d.help(format!("remove the quotes: `{t}`"));
        }
        if in_transform_list && !matches!(node.value, Y::Str(_)) {
            d = d.help("inside `[…]` commas separate the items, so `scale(0, 1, 0, 100)` falls apart: write one transform per line with `- `, or quote it: `[\"scale(0, 1, 0, 100)\", round(1)]`");
        } else if expected.iter().any(|t| t == "string") {
            match &node.value {
                Y::Float(_) | Y::Int(_) | Y::Bool(_) => {
                    let raw: String = self
                        .file
                        .line(node.pos.line)
                        .map(|l| {
                            l.chars()
                                .skip(node.pos.col - 1)
                                .take(node.pos.end_col.saturating_sub(node.pos.col).max(1))
                                .collect()
                        })
                        .unwrap_or_default();
                    d = d.help(format!("quote it to make it a string: `\"{}\"`", raw.trim()));
                }
                Y::Null => {
                    d = d.help(format!(
                        "`{field}` has no value; write one after the colon or remove the key"
                    ))
                }
                _ => {}
            }
        } else if matches!(node.value, Y::Null) {
            d = d.help(format!(
                "`{field}` has no value; write one after the colon or remove the key"
            ));
        }
        bad.push(path.to_vec());
        self.diags.push(d);
    }

    fn schema_at(&self, err: &ValidationError<'_>) -> Option<&'a Value> {
        // The schema path ends at the failing keyword; its parent is the subschema.
        let sp = err.schema_path().as_str().to_string();
        let parent = sp.rsplit_once('/').map(|(p, _)| p.to_string())?;
        let mut s = self.root_schema;
        for seg in parent.split('/').skip(1) {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            s = self.resolve(s);
            s = match s {
                Value::Object(o) => o.get(&seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(self.resolve(s))
    }

    fn describe_property(&self, err: &ValidationError<'_>, prop: &str) -> Option<String> {
        let s = self.schema_at(err)?;
        let raw = s.get("properties")?.get(prop)?;
        let p = self.resolve(raw);
        // For a field with a fixed set of values, the values say more than a description.
        let values: Vec<&str> = match (p.get("enum"), p.get("oneOf")) {
            (Some(Value::Array(e)), _) => e.iter().filter_map(Value::as_str).collect(),
            (_, Some(Value::Array(alts))) => alts
                .iter()
                .filter_map(|a| a.get("const").and_then(Value::as_str))
                .collect(),
            _ => Vec::new(),
        };
        if !values.is_empty() {
            return Some(format!("one of {}", one_of(&values)));
        }
        let d = raw.get("description").or_else(|| p.get("description"))?;
        d.as_str()
            .map(|d| d.split("\n\n").next().unwrap_or(d).replace('\n', " "))
    }

    fn bounds(&self, err: &ValidationError<'_>) -> (Option<String>, Option<String>) {
        let Some(s) = self.schema_at(err) else {
            return (None, None);
        };
        let num = |k: &str| s.get(k).map(|v| v.to_string());
        let lo = num("minimum").or_else(|| num("exclusiveMinimum").map(|v| format!("more than {v}")));
        let hi = num("maximum").or_else(|| num("exclusiveMaximum").map(|v| format!("less than {v}")));
        (lo, hi)
    }
}

/// Where to report a missing field: the mapping that lacks it.
fn container_span(root: &Node, path: &[String]) -> Pos {
    let (node, key) = root.deepest(path);
    match (&node.value, key) {
        (Y::Map(entries), _) if !entries.is_empty() => entries[0].key_pos,
        (_, Some(k)) => k,
        _ => node.pos,
    }
}

fn expected_of_alternatives(context: &[Vec<ValidationError<'_>>]) -> Vec<String> {
    let mut out = Vec::new();
    for errs in context {
        for e in errs {
            if let ValidationErrorKind::Type { kind } = e.kind() {
                match kind {
                    TypeKind::Single(t) => out.push(t.to_string()),
                    TypeKind::Multiple(ts) => out.extend(ts.into_iter().map(|t| t.to_string())),
                }
            }
        }
    }
    out.dedup();
    out
}

/// The name of the field a path ends in (list indices skipped): `transform` for
/// `/models/0/mappings/2/transform/1`.
fn field_name(path: &[String]) -> String {
    path.iter()
        .rev()
        .find(|s| s.parse::<usize>().is_err())
        .cloned()
        .unwrap_or_default()
}

fn type_word(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "true or false",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "null",
        _ => "a value",
    }
}

fn shown_value(node: &Node) -> String {
    match &node.value {
        Y::Str(s) => format!("`{s}`"),
        Y::Int(i) => format!("`{i}`"),
        Y::Float(f) => format!("`{f}`"),
        Y::Bool(b) => format!("`{b}`"),
        _ => node.kind().to_string(),
    }
}

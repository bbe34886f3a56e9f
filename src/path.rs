//! Field paths: where a mapping reads its value in a row.
//!
//! `col` is a column; `col.a.b` is key `a` then `b` inside JSON column `col`; a path
//! starting with `$` is a JSONPath whose root is the row (`$.col.history[0]`). Simple
//! paths (keys and indices only) compile to pre-split segments, which is several times
//! faster per row than a general JSONPath engine; filters and wildcards keep a compiled
//! `jsonpath-rust` query.

use std::fmt;

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A compiled path.
#[derive(Debug, Clone)]
pub enum FieldPath {
    /// A column and the steps into it.
    Simple { column: String, steps: Vec<Segment> },
    /// A JSONPath with filters, wildcards or recursion; `column` is its first key when it
    /// starts with one.
    Query {
        text: String,
        column: Option<String>,
        query: Box<jsonpath_rust::parser::model::JpQuery>,
    },
}

/// Why a path does not parse: byte offset in the text and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub offset: usize,
    pub message: String,
}

impl FieldPath {
    /// Parses a mapping's `source`.
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        if text.starts_with('$') {
            return parse_jsonpath(text);
        }
        if text.trim() != text || text.is_empty() {
            return Err(PathError {
                offset: 0,
                message: "a source path may not be empty or start or end with spaces".into(),
            });
        }
        let mut parts = Vec::new();
        let mut offset = 0;
        for part in text.split('.') {
            if part.is_empty() {
                // Point at a dot: the one after the empty step, or for a trailing dot, itself.
                return Err(PathError {
                    offset: offset.min(text.len() - 1),
                    message: format!("empty step in path `{text}` (two dots, or a dot at an end)"),
                });
            }
            if let Some(bad) = part.find(['[', ']', '*', '?', '(', ')', ' ']) {
                return Err(PathError {
                    offset: offset + bad,
                    message: format!(
                        "`{}` is not allowed in a dotted path; start the path with `$` to use JSONPath",
                        &part[bad..bad + 1]
                    ),
                });
            }
            parts.push(part.to_string());
            offset += part.len() + 1;
        }
        let column = parts.remove(0);
        Ok(FieldPath::Simple {
            column,
            steps: parts.into_iter().map(Segment::Key).collect(),
        })
    }

    /// The row column the path starts at, when known.
    pub fn column(&self) -> Option<&str> {
        match self {
            FieldPath::Simple { column, .. } => Some(column),
            FieldPath::Query { column, .. } => column.as_deref(),
        }
    }

    /// Whether the path reads inside a JSON value rather than a plain column.
    pub fn is_nested(&self) -> bool {
        match self {
            FieldPath::Simple { steps, .. } => !steps.is_empty(),
            FieldPath::Query { .. } => true,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Simple { column, steps } => {
                write!(f, "column `{column}`")?;
                for s in steps {
                    match s {
                        Segment::Key(k) => write!(f, " → key `{k}`")?,
                        Segment::Index(i) => write!(f, " → [{i}]")?,
                    }
                }
                Ok(())
            }
            FieldPath::Query { text, .. } => write!(f, "JSONPath `{text}`"),
        }
    }
}

/// `$` then `.name`, `['name']`, `["name"]` or `[n]` steps compile to segments; anything
/// else goes to jsonpath-rust, whose parse error is reported if it fails too.
fn parse_jsonpath(text: &str) -> Result<FieldPath, PathError> {
    if let Some(steps) = simple_jsonpath(text) {
        let mut steps = steps;
        return match steps.first() {
            Some(Segment::Key(_)) => {
                let Segment::Key(column) = steps.remove(0) else {
                    unreachable!()
                };
                Ok(FieldPath::Simple { column, steps })
            }
            _ => Err(PathError {
                offset: 0,
                message: format!("JSONPath `{text}` must start with a column name, e.g. `$.scores.upsell`"),
            }),
        };
    }
    match jsonpath_rust::parser::parse_json_path(text) {
        Ok(q) => {
            let column = text
                .strip_prefix("$.")
                .map(|rest| rest.split(['.', '[']).next().unwrap_or(""))
                .filter(|c| !c.is_empty() && !c.contains('*'))
                .map(str::to_string);
            Ok(FieldPath::Query {
                text: text.to_string(),
                column,
                query: Box::new(q),
            })
        }
        Err(e) => {
            let full = e.to_string();
            // pest renders "--> 1:COL" and "= expected …": keep the column and the reason.
            let col = full
                .lines()
                .find_map(|l| l.trim().strip_prefix("--> 1:"))
                .and_then(|c| c.trim().parse::<usize>().ok())
                .unwrap_or(1);
            let reason = full
                .lines()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or("invalid syntax")
                .to_string();
            Err(PathError {
                offset: col.saturating_sub(1),
                message: format!("invalid JSONPath `{text}`: {reason}"),
            })
        }
    }
}

fn simple_jsonpath(text: &str) -> Option<Vec<Segment>> {
    let mut rest = text.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                return None;
            }
            steps.push(Segment::Key(name.to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let inner = &r[..close];
            let quoted = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            match quoted {
                Some(k) if !k.contains(['\'', '"', '\\']) => steps.push(Segment::Key(k.to_string())),
                Some(_) => return None,
                None => steps.push(Segment::Index(inner.parse().ok()?)),
            }
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(text: &str) -> (String, Vec<Segment>) {
        match FieldPath::parse(text).unwrap() {
            FieldPath::Simple { column, steps } => (column, steps),
            other => panic!("not simple: {other:?}"),
        }
    }

    #[test]
    fn dotted_paths_split_into_steps() {
        assert_eq!(simple("crm_id"), ("crm_id".into(), vec![]));
        assert_eq!(
            simple("propensity_scores.upsell"),
            ("propensity_scores".into(), vec![Segment::Key("upsell".into())])
        );
    }

    #[test]
    fn simple_jsonpaths_compile_to_steps() {
        assert_eq!(
            simple("$.scores.history[0]"),
            ("scores".into(), vec![Segment::Key("history".into()), Segment::Index(0)])
        );
        assert_eq!(
            simple("$['odd key'].x"),
            ("odd key".into(), vec![Segment::Key("x".into())])
        );
    }

    #[test]
    fn general_jsonpaths_are_kept_compiled() {
        let p = FieldPath::parse("$.scores[?@.v > 1].name").unwrap();
        assert!(matches!(p, FieldPath::Query { .. }));
        assert_eq!(p.column(), Some("scores"));
    }

    #[test]
    fn bad_paths_are_rejected_with_an_offset() {
        assert_eq!(FieldPath::parse("a..b").unwrap_err().offset, 2);
        assert_eq!(FieldPath::parse("profile.").unwrap_err().offset, 7);
        assert_eq!(FieldPath::parse(".a").unwrap_err().offset, 0);
        assert!(FieldPath::parse("a.b[0]").unwrap_err().message.contains("JSONPath"));
        assert!(FieldPath::parse("$.a[").is_err());
        assert!(FieldPath::parse("$[0]").is_err());
    }
}

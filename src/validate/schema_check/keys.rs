//! The first pass: a walk of the YAML tree beside the schema. Keys the format does not
//! have are reported; a misspelt key with one close match is renamed so what is inside it
//! is still validated; a tagged object (`type: duckdb`) is walked against its own variant.

use super::{json_kind, Walker};
use crate::diagnostics::{close_matches, one_of, unique_close_match, Code, Diagnostic};
use crate::yaml::{Node, Pos, Value as Y};
use serde_json::Value;

impl<'a> Walker<'a> {
    pub(super) fn fix_keys(&mut self, node: &mut Node, key: Option<Pos>, schema: &'a Value, path: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let (Some(Value::Array(branches)), Y::Map(_)) = (schema.get("oneOf"), &node.value) {
            self.fix_tagged(node, key, branches, path);
            return;
        }
        if let Some(Value::Array(alts)) = schema.get("anyOf") {
            let kind = json_kind(node);
            if let Some(alt) = alts.iter().find(|a| {
                let a = self.resolve(a);
                a.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t == kind || (t == "number" && kind == "integer"))
            }) {
                self.fix_keys(node, key, alt, path);
            }
            return;
        }
        match &mut node.value {
            Y::Map(entries) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let addl = schema.get("additionalProperties");
                if props.is_none() && addl.is_none() {
                    return;
                }
                let present: std::collections::HashSet<String> = entries.iter().map(|e| e.key.clone()).collect();
                let known: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                // The known keys not written here: candidates for a misspelt one. Worked out
                // once per mapping, not once per unknown key.
                let free: Vec<&str> = known.iter().copied().filter(|k| !present.contains(*k)).collect();
                let mut drop = Vec::new();
                for (i, e) in entries.iter_mut().enumerate() {
                    if let Some(sub) = props.and_then(|p| p.get(&e.key)) {
                        path.push(e.key.clone());
                        self.fix_keys(&mut e.value, Some(e.key_pos), sub, path);
                        path.pop();
                        continue;
                    }
                    match addl {
                        Some(Value::Bool(false)) => {}
                        Some(sub @ Value::Object(_)) => {
                            path.push(e.key.clone());
                            self.fix_keys(&mut e.value, Some(e.key_pos), sub, path);
                            path.pop();
                            continue;
                        }
                        _ => continue,
                    }
                    let span = e.key_pos.in_file(self.file);
                    // One distance computation per known key: the close free keys are the
                    // close keys that are free.
                    let close = close_matches(&e.key, known.iter().copied());
                    let close_free: Vec<&str> = close.iter().copied().filter(|c| free.contains(c)).collect();
                    match (close_free.len() == 1).then(|| close_free[0]) {
                        Some(m) => {
                            self.diags.push(
                                Diagnostic::new(Code::UnknownKey, span, format!("unknown key `{}`", e.key))
                                    .help(format!("did you mean `{m}`?")),
                            );
                            e.key = m.to_string();
                            path.push(e.key.clone());
                            if let Some(sub) = props.and_then(|p| p.get(m)) {
                                self.fix_keys(&mut e.value, Some(e.key_pos), sub, path);
                            }
                            path.pop();
                        }
                        None => {
                            let help = if close.len() > 1 {
                                format!("did you mean {}?", one_of(&close))
                            } else {
                                format!("keys here: {}", one_of(&known))
                            };
                            self.diags.push(
                                Diagnostic::new(Code::UnknownKey, span, format!("unknown key `{}`", e.key)).help(help),
                            );
                            drop.push(i);
                        }
                    }
                }
                if !drop.is_empty() {
                    let mut i = 0;
                    let mut drop = drop.into_iter().peekable();
                    entries.retain(|_| {
                        let gone = drop.next_if_eq(&i).is_some();
                        i += 1;
                        !gone
                    });
                }
            }
            Y::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        path.push(i.to_string());
                        self.fix_keys(item, None, item_schema, path);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }

    /// An internally tagged object: check it against the branch its `type` selects.
    fn fix_tagged(&mut self, node: &mut Node, key: Option<Pos>, branches: &'a [Value], path: &mut Vec<String>) {
        let tags: Vec<(&str, &'a Value)> = branches
            .iter()
            .filter_map(|b| {
                let b = self.resolve(b);
                let t = b.pointer("/properties/type")?;
                let tag = t.get("const").and_then(Value::as_str).or_else(|| {
                    t.get("enum")
                        .and_then(Value::as_array)
                        .filter(|a| a.len() == 1)
                        .and_then(|a| a[0].as_str())
                })?;
                Some((tag, b))
            })
            .collect();
        if tags.is_empty() {
            return;
        }
        let names: Vec<&str> = tags.iter().map(|(t, _)| *t).collect();
        match node.entry("type").map(|e| (e.value.clone(), e.key_pos)) {
            None => {
                self.diags.push(
                    Diagnostic::new(
                        Code::MissingField,
                        key.unwrap_or(node.pos).in_file(self.file),
                        "missing field `type`",
                    )
                    .help(format!("`type` is one of {}", one_of(&names))),
                );
                self.handled.push(path.clone());
            }
            Some((tnode, _)) => match tnode.as_str().and_then(|t| tags.iter().find(|(n, _)| *n == t)) {
                Some((_, branch)) => self.fix_keys(node, key, branch, path),
                None => {
                    let shown = match &tnode.value {
                        Y::Str(s) => format!("`{s}`"),
                        _ => tnode.kind().to_string(),
                    };
                    let help = match tnode
                        .as_str()
                        .and_then(|t| unique_close_match(t, names.iter().copied()))
                    {
                        Some(m) => format!("did you mean `{m}`? types: {}", names.join(", ")),
                        None => format!("`type` is one of {}", one_of(&names)),
                    };
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            tnode.pos.in_file(self.file),
                            format!("{shown} is not a connection type"),
                        )
                        .help(help),
                    );
                    self.handled.push(path.clone());
                }
            },
        }
    }
}

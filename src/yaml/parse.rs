//! Building the tree from `saphyr-parser`'s event stream: a stack of open lists and
//! mappings, anchors kept for aliases, `<<` merges applied when a mapping ends, duplicate
//! keys and unknown tags reported as the events come.

use super::limits::{count_nodes, too_deep_at};
use super::scalar::resolve_plain;
use super::{Entry, Node, Pos, Value};
use crate::diagnostics::{Code, Diagnostic, SourceFile};
use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;
use std::sync::Arc;

/// Parses one YAML document. Syntax errors end parsing (the rest cannot be trusted);
/// duplicate keys and unsupported features are reported and parsing goes on.
/// An empty file is a null node.
pub fn parse(file: &Arc<SourceFile>) -> Result<(Node, Vec<Diagnostic>), Diagnostic> {
    let mut b = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        copied: 0,
        docs: Vec::new(),
        diags: Vec::new(),
    };
    for item in Parser::new_from_str(&file.text) {
        match item {
            Ok((ev, span)) => b.event(ev, Pos::of(span))?,
            Err(e) => {
                let m = e.marker();
                let pos = Pos {
                    line: m.line(),
                    col: m.col() + 1,
                    end_line: m.line(),
                    end_col: m.col() + 2,
                };
                // The scanner has a nesting limit of its own for flow style (`[[[…`),
                // met before ours since it reads ahead: the same problem, the same code.
                if e.info().contains("recursion limit") {
                    return Err(too_deep_at(pos, file));
                }
                return Err(Diagnostic::new(
                    Code::YamlSyntax,
                    pos.in_file(file),
                    format!("invalid YAML: {}", e.info()),
                )
                .help("check the indentation and quoting on this line and the one before"));
            }
        }
    }
    let mut docs = std::mem::take(&mut b.docs);
    if docs.len() > 1 {
        let extra = &docs[1];
        b.diags.push(
            Diagnostic::new(
                Code::YamlUnsupported,
                extra.pos.in_file(file),
                "a config file holds one YAML document; this is a second one",
            )
            .help("remove the `---` separator or move the second document to its own file"),
        );
    }
    let root = if docs.is_empty() {
        Node {
            pos: Pos {
                line: 1,
                col: 1,
                end_line: 1,
                end_col: 1,
            },
            value: Value::Null,
        }
    } else {
        docs.swap_remove(0)
    };
    Ok((root, b.diags))
}

pub(super) enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        /// `None` where a later duplicate key replaced the entry.
        entries: Vec<Option<Entry>>,
        /// Where each key is in `entries`: duplicate checks in constant time, so a mapping
        /// of 100,000 keys is not 10^10 comparisons.
        index: HashMap<String, usize>,
        /// A key waiting for its value.
        key: Option<(String, Pos)>,
        /// Keys written `<<`, merged when the mapping ends.
        merges: Vec<Node>,
    },
}

pub(super) struct Builder {
    pub(super) file: Arc<SourceFile>,
    pub(super) stack: Vec<Frame>,
    /// Each anchored node and the number of nodes in it.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes copied so far by anchors and aliases (see [`super::MAX_COPIED_NODES`]).
    pub(super) copied: usize,
    docs: Vec<Node>,
    diags: Vec<Diagnostic>,
}

impl Builder {
    fn event(&mut self, ev: Event<'_>, pos: Pos) -> Result<(), Diagnostic> {
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                self.push(Node { pos, value }, anchor)?;
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                self.too_deep(pos)?;
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                })
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                self.too_deep(pos)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    index: HashMap::new(),
                    key: None,
                    merges: Vec::new(),
                })
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    pos: start,
                    anchor,
                    items,
                }) = self.stack.pop()
                {
                    let pos = Pos {
                        end_line: pos.end_line,
                        end_col: pos.end_col,
                        ..start
                    };
                    self.push(
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    )?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos: start,
                    anchor,
                    entries,
                    mut index,
                    merges,
                    ..
                }) = self.stack.pop()
                {
                    let mut entries: Vec<Entry> = entries.into_iter().flatten().collect();
                    for m in merges {
                        let sources = match m.value {
                            Value::Seq(items) => items,
                            _ => vec![m],
                        };
                        for src in sources {
                            if let Value::Map(src_entries) = src.value {
                                for e in src_entries {
                                    if !index.contains_key(&e.key) {
                                        index.insert(e.key.clone(), usize::MAX);
                                        entries.push(e);
                                    }
                                }
                            }
                        }
                    }
                    let pos = Pos {
                        end_line: pos.end_line,
                        end_col: pos.end_col,
                        ..start
                    };
                    self.push(
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    )?;
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some((n, size)) => {
                        let (value, size) = (n.value.clone(), *size);
                        self.copy(size, pos, "this alias")?;
                        Node { pos, value }
                    }
                    None => Node {
                        pos,
                        value: Value::Null,
                    },
                };
                self.push(node, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Core-schema tags (`!!str`, `!!int`, …) are understood; any other tag would change
    /// the meaning of a value in a way ebb cannot honour, so it is reported.
    fn check_tag(&mut self, tag: Option<&saphyr_parser::Tag>, pos: Pos) {
        let Some(tag) = tag else { return };
        let core = tag.handle == "tag:yaml.org,2002:"
            && matches!(
                tag.suffix.as_str(),
                "str" | "int" | "float" | "bool" | "null" | "seq" | "map"
            );
        if !core {
            let shown = if tag.handle == "!" {
                format!("!{}", tag.suffix)
            } else {
                format!("{}{}", tag.handle, tag.suffix)
            };
            self.diags.push(
                Diagnostic::new(
                    Code::YamlUnsupported,
                    pos.in_file(&self.file),
                    format!("unknown YAML tag `{shown}`"),
                )
                .help("remove the tag; quote the value if it should be a string"),
            );
        }
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            // Keeping the anchored value is a copy too: nested anchors would otherwise copy
            // the same nodes once per level.
            let size = count_nodes(&node);
            self.copy(size, node.pos, "this anchor")?;
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                index,
                key,
                merges,
                ..
            }) => match key.take() {
                None => {
                    let name = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Null => String::new(),
                        Value::Bool(b) => b.to_string(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            self.diags.push(
                                Diagnostic::new(
                                    Code::YamlUnsupported,
                                    node.pos.in_file(&self.file),
                                    "a mapping key must be a plain value, not a list or mapping",
                                )
                                .help("write keys as `name: value`"),
                            );
                            "?".to_string()
                        }
                    };
                    *key = Some((name, node.pos));
                }
                Some((name, key_pos)) => {
                    if name == "<<" {
                        merges.push(node);
                        return Ok(());
                    }
                    if let Some(first) = index.get(&name).and_then(|&i| entries[i].take()) {
                        let first_line = first.key_pos.line;
                        self.diags.push(
                            Diagnostic::new(
                                Code::DuplicateKey,
                                key_pos.in_file(&self.file),
                                format!("duplicate key `{name}`"),
                            )
                            .note(format!("`{name}` is first set on line {first_line}"))
                            .help("remove one of the two; this later one would win"),
                        );
                    }
                    index.insert(name.clone(), entries.len());
                    entries.push(Some(Entry {
                        key: name,
                        key_pos,
                        value: node,
                    }));
                }
            },
        }
        Ok(())
    }
}

//! YAML with a position on every node.
//!
//! Config files are parsed with `saphyr-parser`'s event stream into a small tree of
//! [`Node`]s, each carrying the region it came from, and every mapping key keeps its own
//! region too. That tree is what lets any later layer (JSON schema, semantics) point at
//! the exact key or value it complains about. Scalars resolve by the YAML 1.2 core schema
//! (so `yes` is a string and `62.0` a number); anchors, aliases and `<<` merge keys work.
//! Duplicate keys are reported instead of silently keeping one of the values.
//!
//! A config file may come from anyone who can open a pull request, so the tree is bounded:
//! nesting deeper than [`MAX_DEPTH`] and anchors and aliases copying more than
//! [`MAX_COPIED_NODES`] nodes (the "billion laughs" alias bomb) stop parsing with E005.

use crate::diagnostics::{Code, Diagnostic, SourceFile, Span};
use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;
use std::sync::Arc;

/// How deep lists and mappings may nest. A model file needs about 6 levels; 128 leaves
/// room for anything hand-written while keeping every recursive walk of the tree (schema
/// checks, conversion to JSON, dropping it) far from the end of the stack.
pub const MAX_DEPTH: usize = 128;

/// How many nodes anchors and aliases may copy in one file. Each `*alias` copies the
/// anchored tree, so ten lines of nested aliases can expand to billions of nodes; a real
/// project reuses a few mappings (hundreds of nodes). 100,000 nodes is a few tens of MB
/// of tree at most, even in a daemon that reloads the file.
pub const MAX_COPIED_NODES: usize = 100_000;

/// A region of the source: 1-based line and column, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
    pub end_line: usize,
    pub end_col: usize,
}

impl Pos {
    fn of(span: saphyr_parser::Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
            end_line: span.end.line(),
            end_col: span.end.col() + 1,
        }
    }

    /// This region in `file`, as a diagnostic span.
    pub fn in_file(self, file: &Arc<SourceFile>) -> Span {
        Span {
            file: file.clone(),
            line: self.line.max(1),
            col: self.col.max(1),
            end_line: self.end_line.max(1),
            end_col: self.end_col.max(1),
        }
    }
}

/// A YAML node and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

impl Node {
    /// The entry `key` of a mapping node.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The value at `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The element `i` of a sequence node.
    pub fn index(&self, i: usize) -> Option<&Node> {
        match &self.value {
            Value::Seq(items) => items.get(i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Follows a JSON-pointer-like path of keys and indices. Returns the node and, when the
    /// last step was a mapping key, that key's position.
    pub fn lookup<S: AsRef<str>>(&self, path: &[S]) -> Option<(&Node, Option<Pos>)> {
        let mut node = self;
        let mut key_pos = None;
        for seg in path {
            let seg = seg.as_ref();
            match &node.value {
                Value::Map(entries) => {
                    let e = entries.iter().find(|e| e.key == seg)?;
                    key_pos = Some(e.key_pos);
                    node = &e.value;
                }
                Value::Seq(items) => {
                    node = items.get(seg.parse::<usize>().ok()?)?;
                    key_pos = None;
                }
                _ => return None,
            }
        }
        Some((node, key_pos))
    }

    /// The deepest node along `path` that exists: where to point when the path itself does
    /// not (a missing field is reported at its parent).
    pub fn deepest<S: AsRef<str>>(&self, path: &[S]) -> (&Node, Option<Pos>) {
        let mut node = self;
        let mut key_pos = None;
        for seg in path {
            match node.lookup(&[seg.as_ref()]) {
                Some((n, k)) => {
                    node = n;
                    key_pos = k;
                }
                None => break,
            }
        }
        (node, key_pos)
    }

    /// The plain JSON form of the tree, for JSON-schema validation and serde.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(f.to_string())),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect()),
        }
    }

    /// What kind of value this is, in words, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

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
                    return Err(Diagnostic::new(
                        Code::YamlLimit,
                        pos.in_file(file),
                        format!("lists and mappings nest deeper than {MAX_DEPTH} levels here"),
                    )
                    .help("a model file needs a handful of levels; flatten the structure"));
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

enum Frame {
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

struct Builder {
    file: Arc<SourceFile>,
    stack: Vec<Frame>,
    /// Each anchored node and the number of nodes in it.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes copied so far by anchors and aliases (see [`MAX_COPIED_NODES`]).
    copied: usize,
    docs: Vec<Node>,
    diags: Vec<Diagnostic>,
}

/// The number of nodes in the tree under `node`, itself included.
fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|e| 1 + count_nodes(&e.value)).sum(),
        _ => 0,
    }
}

impl Builder {
    fn too_deep(&self, pos: Pos) -> Result<(), Diagnostic> {
        if self.stack.len() < MAX_DEPTH {
            return Ok(());
        }
        Err(Diagnostic::new(
            Code::YamlLimit,
            pos.in_file(&self.file),
            format!("lists and mappings nest deeper than {MAX_DEPTH} levels here"),
        )
        .help("a model file needs a handful of levels; flatten the structure"))
    }

    /// Counts `n` more copied nodes against [`MAX_COPIED_NODES`].
    fn copy(&mut self, n: usize, pos: Pos, what: &str) -> Result<(), Diagnostic> {
        self.copied = self.copied.saturating_add(n);
        if self.copied <= MAX_COPIED_NODES {
            return Ok(());
        }
        Err(Diagnostic::new(
            Code::YamlLimit,
            pos.in_file(&self.file),
            format!("{what} takes the nodes copied by anchors and aliases in this file past {MAX_COPIED_NODES}"),
        )
        .note("each `*alias` repeats the whole anchored value, so nested aliases grow exponentially")
        .help("write the repeated part out, or reuse fewer and smaller anchors"))
    }

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

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Int(i);
        }
    }
    if is_float(digits) {
        if let Ok(f) = s.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(s.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() && !frac.is_empty() || !int.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Node, Vec<Diagnostic>) {
        parse(&SourceFile::new("t.yaml", text.to_string())).expect("parses")
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let (n, _) = load("a: 1\nb: 62.0\nc: \"62.0\"\nd: yes\ne: ~\nf: true\ng: 1e3\nh: 0x1F\n");
        let j = n.to_json();
        assert_eq!(j["a"], 1);
        assert_eq!(j["b"], 62.0);
        assert_eq!(j["c"], "62.0");
        assert_eq!(j["d"], "yes");
        assert!(j["e"].is_null());
        assert_eq!(j["f"], true);
        assert_eq!(j["g"], 1000.0);
        assert_eq!(j["h"], 31);
    }

    #[test]
    fn keys_and_values_keep_their_positions() {
        let (n, _) = load("models:\n  - name: x\n    source:\n      query: select 1\n");
        let (node, key) = n.lookup(&["models", "0", "source", "query"]).unwrap();
        assert_eq!((node.pos.line, node.pos.col), (4, 14));
        let key = key.unwrap();
        assert_eq!((key.line, key.col, key.end_col), (4, 7, 12));
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_later_one() {
        let (n, d) = load("a: 1\nb: 2\na: 3\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::DuplicateKey);
        assert_eq!((d[0].span.line, d[0].span.col), (3, 1));
        assert_eq!(n.to_json()["a"], 3);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let (n, d) = load("base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\n");
        assert!(d.is_empty());
        let j = n.to_json();
        assert_eq!(j["use"]["x"], 1);
        assert_eq!(j["use"]["y"], 3);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse(&SourceFile::new("t.yaml", "a: [1, 2\nb: 3\n".to_string())).unwrap_err();
        assert_eq!(err.code, Code::YamlSyntax);
        assert!(err.span.line >= 1);
    }

    /// The classic "billion laughs": each level repeats the one before ten times.
    fn alias_bomb() -> String {
        let mut t = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, cur) = (w[0], w[1]);
            t.push_str(&format!("{cur}: &{cur} [{}]\n", vec![format!("*{prev}"); 10].join(",")));
        }
        t
    }

    #[test]
    fn an_alias_bomb_stops_at_the_alias_that_crosses_the_limit() {
        let err = parse(&SourceFile::new("t.yaml", alias_bomb())).unwrap_err();
        assert_eq!(err.code, Code::YamlLimit);
        // Lines 1-4 copy about 22,000 nodes; each `*d` on line 5 copies 10,111 more, and
        // the eighth crosses 100,000.
        assert_eq!((err.span.line, err.span.col), (5, 29), "{}", err.message);
        assert!(err.message.contains("100000"), "{}", err.message);
    }

    #[test]
    fn nested_anchors_count_as_copies_too() {
        // No alias at all, but every level keeps a copy of everything inside it.
        let mut t = String::new();
        for i in 0..100 {
            t.push_str(&format!("{}- &a{i}\n", "  ".repeat(i)));
        }
        t.push_str(&format!("{}- [{}]\n", "  ".repeat(100), vec!["1"; 2000].join(",")));
        let err = parse(&SourceFile::new("t.yaml", t)).unwrap_err();
        assert_eq!(err.code, Code::YamlLimit);
    }

    #[test]
    fn reasonable_reuse_is_fine() {
        let mut t = String::from("base: &b {x: 1, y: [1, 2, 3], z: {a: 1}}\nlist:\n");
        for _ in 0..500 {
            t.push_str("  - {<<: *b, y: 3}\n");
        }
        let (n, d) = load(&t);
        assert!(d.is_empty());
        assert_eq!(n.to_json()["list"][499]["x"], 1);
    }

    #[test]
    fn nesting_is_limited_in_block_and_flow_style() {
        let block = "- ".repeat(10_000) + "x";
        let flow = "[".repeat(10_000) + &"]".repeat(10_000);
        let maps = "{a: ".repeat(10_000) + &"}".repeat(10_000);
        for text in [block, flow, maps] {
            let err = parse(&SourceFile::new("t.yaml", text)).unwrap_err();
            assert_eq!(
                err.code,
                Code::YamlLimit,
                "{} at {}:{}",
                err.message,
                err.span.line,
                err.span.col
            );
            assert!(err.message.contains("deeper than 128"), "{}", err.message);
        }
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&SourceFile::new("t.yaml", ok)).is_ok());
    }

    #[test]
    fn a_mapping_with_many_duplicate_keys_keeps_the_last_of_each() {
        let mut t = String::new();
        for round in 0..3 {
            for k in 0..2000 {
                t.push_str(&format!("k{k}: {round}\n"));
            }
        }
        let (n, d) = load(&t);
        assert_eq!(d.len(), 4000);
        let j = n.to_json();
        assert_eq!(j.as_object().unwrap().len(), 2000);
        assert_eq!(j["k1999"], 2);
    }
}

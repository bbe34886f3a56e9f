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
//!
//! The parts: this file holds the tree and its lookups; `parse` builds it from the
//! parser's events; `limits` bounds it; `scalar` resolves plain scalars.

mod limits;
mod parse;
mod scalar;
#[cfg(test)]
mod tests;

pub use limits::{MAX_COPIED_NODES, MAX_DEPTH};
pub use parse::parse;

use crate::diagnostics::{SourceFile, Span};
use std::sync::Arc;

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

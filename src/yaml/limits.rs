//! The bounds on a tree built from a file anyone may have written: how deep it nests and
//! how many nodes anchors and aliases may copy. Apart from the builder so the numbers and
//! their reasons sit together, with the one E005 message each.

use super::parse::Builder;
use super::{Node, Pos, Value};
use crate::diagnostics::{Code, Diagnostic, SourceFile};
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

/// Nesting past [`MAX_DEPTH`] at `pos`, ours or the scanner's (which meets its own limit
/// first for flow style, `[[[…`).
pub(super) fn too_deep_at(pos: Pos, file: &Arc<SourceFile>) -> Diagnostic {
    Diagnostic::new(
        Code::YamlLimit,
        pos.in_file(file),
        format!("lists and mappings nest deeper than {MAX_DEPTH} levels here"),
    )
    .help("a model file needs a handful of levels; flatten the structure")
}

/// The number of nodes in the tree under `node`, itself included.
pub(super) fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|e| 1 + count_nodes(&e.value)).sum(),
        _ => 0,
    }
}

impl Builder {
    pub(super) fn too_deep(&self, pos: Pos) -> Result<(), Diagnostic> {
        if self.stack.len() < MAX_DEPTH {
            return Ok(());
        }
        Err(too_deep_at(pos, &self.file))
    }

    /// Counts `n` more copied nodes against [`MAX_COPIED_NODES`].
    pub(super) fn copy(&mut self, n: usize, pos: Pos, what: &str) -> Result<(), Diagnostic> {
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
}

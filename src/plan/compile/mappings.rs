//! The `mappings:` list: each mapping's source (column, CRM field or constant), its
//! destination path, and its transforms, checked against what the query selects.

use super::sql::Selection;
use super::Compiler;
use crate::config::model::ModelSpec;
use crate::config::Mode;
use crate::diagnostics::{Code, Diagnostic};
use crate::path::FieldPath;
use crate::plan::{MappingPlan, SourcePlan, ValueSource};
use crate::transform::Transform;
use std::collections::HashMap;

impl Compiler<'_, '_> {
    pub(super) fn mappings(
        &mut self,
        spec: &ModelSpec,
        selection: &Option<Selection>,
        source: &SourcePlan,
    ) -> Vec<MappingPlan> {
        // Explicit `fields`, with those every read adds (`Id`, `IsDeleted`, the cursor).
        let crm_fields: Option<Vec<String>> = ((spec.source.kind.is_crm()
            || spec.source.kind == crate::config::ConnectionType::Webhook)
            && spec.source.fields.is_some())
        .then(|| source.fields.clone());
        let key = spec.destination.unique_identifier.as_str();
        if !self.ctx.skipped(&["destination", "unique_identifier"]) {
            if let Some(sel) = selection {
                if sel.has(key) == Some(false) {
                    self.column_missing(
                        Code::KeyNotSelected,
                        &["destination", "unique_identifier"],
                        key,
                        sel,
                        "the `unique_identifier` column",
                    );
                }
            }
            if let Some(fields) = &crm_fields {
                if !fields.iter().any(|f| f.eq_ignore_ascii_case(key)) {
                    self.push(
                        Diagnostic::new(
                            Code::KeyNotSelected,
                            self.ctx.at(&["destination", "unique_identifier"]),
                            format!("the `unique_identifier` field `{key}` is not in the source's `fields`"),
                        )
                        .help(format!("add `{key}` to `source.fields`")),
                    );
                }
            }
        }
        let case_insensitive = spec.destination.kind.is_crm();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut plans = Vec::new();
        if spec.mappings.is_empty() && spec.destination.mode != Some(Mode::Delete) {
            self.push(
                Diagnostic::new(
                    Code::NoMappings,
                    self.ctx.key(&["mappings"]),
                    "the model maps no field, so it would send nothing",
                )
                .help("add `- source: column` / `destination: Field` entries"),
            );
        }
        for (i, m) in spec.mappings.iter().enumerate() {
            let idx = i.to_string();
            let base = ["mappings", idx.as_str()];
            let value = match (&m.source, &m.constant) {
                (Some(_), Some(_)) => {
                    self.push(
                        Diagnostic::new(
                            Code::MappingShape,
                            self.ctx.key(&[base[0], base[1], "constant"]),
                            "a mapping has both `source` and `constant`",
                        )
                        .help("keep `source` to read a column, or `constant` to send a fixed value"),
                    );
                    None
                }
                (None, None) => {
                    self.push(
                        Diagnostic::new(
                            Code::MappingShape,
                            self.ctx.key(&[base[0], base[1], "destination"]),
                            "a mapping needs `source` or `constant`",
                        )
                        .help("add `source: column` (or `constant: value`)"),
                    );
                    None
                }
                (None, Some(c)) => Some(ValueSource::Constant(c.clone())),
                (Some(p), None) => match FieldPath::parse(p) {
                    Err(e) => {
                        self.push(
                            Diagnostic::new(Code::BadPath, self.ctx.inside(&[base[0], base[1], "source"], e.offset), e.message)
                                .help("a source is `column`, `json_column.key.key` or a JSONPath like `$.json_column.list[0]`"),
                        );
                        None
                    }
                    Ok(path) => {
                        if let (Some(col), Some(sel)) = (path.column(), selection) {
                            if sel.has(col) == Some(false) {
                                self.column_missing(
                                    Code::ColumnNotSelected,
                                    &[base[0], base[1], "source"],
                                    col,
                                    sel,
                                    "column",
                                );
                            }
                        }
                        if let (Some(col), Some(fields)) = (path.column(), &crm_fields) {
                            if !fields.iter().any(|f| f.eq_ignore_ascii_case(col)) {
                                self.push(
                                    Diagnostic::new(
                                        Code::FieldNotFetched,
                                        self.ctx.at(&[base[0], base[1], "source"]),
                                        format!("field `{col}` is not in the source's `fields`"),
                                    )
                                    .help(format!(
                                        "add `{col}` to `source.fields` ({})",
                                        source.object.as_deref().unwrap_or("the object")
                                    )),
                                );
                            }
                        }
                        Some(ValueSource::Path(path))
                    }
                },
            };
            let transforms = self.transforms(m, &base);
            let dest_key = if case_insensitive {
                m.destination.to_ascii_lowercase()
            } else {
                m.destination.clone()
            };
            match seen.get(&dest_key) {
                Some(&first) => {
                    let first_line = self.ctx.at(&["mappings", &first.to_string(), "destination"]).line;
                    self.push(
                        Diagnostic::new(
                            Code::DuplicateDestination,
                            self.ctx.at(&[base[0], base[1], "destination"]),
                            format!("destination field `{}` is mapped twice", m.destination),
                        )
                        .note(format!("first mapped on line {first_line}"))
                        .help("each destination field takes one value; remove one mapping"),
                    );
                }
                None => {
                    seen.insert(dest_key, i);
                }
            }
            if let (Some(value), Some(transforms)) = (value, transforms) {
                let value_key = if m.source.is_some() { "source" } else { "constant" };
                let transform_spans = match &m.transform {
                    Some(crate::config::model::Transforms::Many(list)) => (0..list.len())
                        .map(|j| self.ctx.at(&[base[0], base[1], "transform", &j.to_string()]))
                        .collect(),
                    Some(_) => vec![self.ctx.at(&[base[0], base[1], "transform"])],
                    None => Vec::new(),
                };
                plans.push(MappingPlan {
                    destination: m.destination.clone(),
                    value,
                    transforms,
                    source_span: self.ctx.at(&[base[0], base[1], value_key]),
                    transform_spans,
                    destination_span: self.ctx.at(&[base[0], base[1], "destination"]),
                    pii: m.pii == Some(true),
                });
            }
        }
        plans
    }

    pub(super) fn transforms(&mut self, m: &crate::config::MappingSpec, base: &[&str; 2]) -> Option<Vec<Transform>> {
        let list = m.transform.as_ref().map(|t| t.as_slice()).unwrap_or_default();
        let many = matches!(m.transform, Some(crate::config::model::Transforms::Many(_)));
        let mut out = Vec::new();
        let mut ok = true;
        for (j, t) in list.iter().enumerate() {
            match Transform::parse(t) {
                Ok(Transform::Hash(var)) => {
                    // The key is read at run time; say now when it is not there.
                    if std::env::var(&var).map(|v| v.is_empty()).unwrap_or(true) {
                        let jj = j.to_string();
                        let path: Vec<&str> = if many {
                            vec![base[0], base[1], "transform", &jj]
                        } else {
                            vec![base[0], base[1], "transform"]
                        };
                        self.push(
                            Diagnostic::new(
                                Code::UnsetVariable,
                                self.ctx.at(&path),
                                format!("`hash` reads its key from `{var}`, which is not set"),
                            )
                            .help(format!(
                                "set it before `ebb run` (`export {var}=…`, a long random secret); without it every row is invalid"
                            )),
                        );
                    }
                    out.push(Transform::Hash(var));
                }
                Ok(t) => out.push(t),
                Err(e) => {
                    ok = false;
                    let jj = j.to_string();
                    let path: Vec<&str> = if many {
                        vec![base[0], base[1], "transform", &jj]
                    } else {
                        vec![base[0], base[1], "transform"]
                    };
                    let code = if e.is_unknown() {
                        Code::UnknownTransform
                    } else {
                        Code::BadTransformArgs
                    };
                    let mut d = Diagnostic::new(code, self.ctx.at(&path), e.to_string());
                    if let Some(h) = e.help() {
                        d = d.help(h);
                    } else if let Some((_, sig)) = crate::transform::SIGNATURES
                        .iter()
                        .find(|(n, _)| t.trim().starts_with(n))
                    {
                        d = d.help(format!("usage: `{sig}`"));
                    }
                    self.push(d);
                }
            }
        }
        ok.then_some(out)
    }
}

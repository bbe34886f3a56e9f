//! The JSON schemas of the two file kinds, generated from the `*Spec` types.
//!
//! `ebb schema --write` writes them to `schemas/`; a test fails when the checked-in files
//! differ from what the types generate. Optional fields are written without `null` in
//! their type: a key written with no value is a mistake the analyst should hear about.

use crate::config::alerts::NULL_MEANT;
use crate::config::{ModelFile, ProjectSpec};
use schemars::generate::SchemaSettings;
use serde_json::Value;
use std::sync::OnceLock;

/// File name of the model schema under `schemas/`.
pub const MODEL_SCHEMA_FILE: &str = "model.schema.json";
/// File name of the project schema under `schemas/`.
pub const PROJECT_SCHEMA_FILE: &str = "project.schema.json";

/// The JSON schema of model files.
pub fn model_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| generate::<ModelFile>("https://ebb.dev/schemas/model.schema.json"))
}

/// The JSON schema of `ebb.yaml`.
pub fn project_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| generate::<ProjectSpec>("https://ebb.dev/schemas/project.schema.json"))
}

/// The schema text as written to disk (pretty, with a final newline).
pub fn to_file_text(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}

fn generate<T: schemars::JsonSchema>(id: &str) -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut v = schema.to_value();
    strip_null(&mut v);
    if let Value::Object(o) = &mut v {
        o.insert("$id".into(), Value::String(id.into()));
    }
    v
}

/// Removes the `null` alternative schemars adds to `Option` fields (a missing key is
/// written by leaving it out), except where a schema says null is a value ([`NULL_MEANT`]).
fn strip_null(v: &mut Value) {
    match v {
        Value::Object(o) if o.get("$comment").and_then(Value::as_str) == Some(NULL_MEANT) => {}
        Value::Object(o) => {
            if let Some(Value::Array(types)) = o.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    o.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = o.get_mut(key) {
                    alts.retain(|a| {
                        a.get("type").and_then(Value::as_str) != Some("null")
                            || a.as_object().is_some_and(|m| m.len() > 1)
                    });
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        o.remove(key);
                        if let Value::Object(inner) = only {
                            for (k, val) in inner {
                                o.entry(k).or_insert(val);
                            }
                        }
                    }
                }
            }
            if o.get("enum")
                .is_some_and(|e| e.as_array().is_some_and(|a| a.iter().any(Value::is_null)))
            {
                if let Some(Value::Array(e)) = o.get_mut("enum") {
                    e.retain(|x| !x.is_null());
                }
            }
            for (_, child) in o.iter_mut() {
                strip_null(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_null),
        _ => {}
    }
}

//! The checked-in schemas are what the Rust types generate.

use crate::support::repo;

#[test]
fn checked_in_schemas_are_up_to_date() {
    for (file, schema) in [
        (ebb::schema::MODEL_SCHEMA_FILE, ebb::schema::model_schema()),
        (ebb::schema::PROJECT_SCHEMA_FILE, ebb::schema::project_schema()),
    ] {
        let path = repo().join("schemas").join(file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == ebb::schema::to_file_text(schema),
            "schemas/{file} is stale: regenerate it with `cargo run -- schema --write`"
        );
    }
}

#[test]
fn every_field_has_a_description() {
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                if k != "type" && p.get("description").is_none() {
                    missing.push(format!("{path}/{k}"));
                }
                walk(p, &format!("{path}/{k}"), missing);
            }
        }
        for key in ["$defs", "oneOf", "anyOf", "items"] {
            match v.get(key) {
                Some(serde_json::Value::Object(o)) => {
                    o.iter().for_each(|(k, x)| walk(x, &format!("{path}/{k}"), missing))
                }
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .for_each(|(i, x)| walk(x, &format!("{path}/{i}"), missing)),
                _ => {}
            }
        }
    }
    for schema in [ebb::schema::model_schema(), ebb::schema::project_schema()] {
        let mut missing = Vec::new();
        walk(schema, "", &mut missing);
        assert!(missing.is_empty(), "fields without a doc comment: {missing:?}");
    }
}

#[test]
fn the_schema_accepts_the_examples_and_rejects_unknown_keys() {
    let v = jsonschema::validator_for(ebb::schema::model_schema()).unwrap();
    let ok = serde_json::json!({"models": [{"name": "a", "source": {"type": "duckdb", "query": "select 1 as id"},
        "destination": {"type": "file", "unique_identifier": "id"}, "mappings": [{"source": "id", "destination": "id"}]}]});
    assert!(v.is_valid(&ok));
    let mut bad = ok.clone();
    bad["models"][0]["destinaton"] = serde_json::json!({});
    assert!(!v.is_valid(&bad));
}

#[test]
fn every_diagnostic_code_is_documented() {
    let doc = std::fs::read_to_string(repo().join("docs/diagnostics.md")).unwrap();
    for code in ebb::diagnostics::Code::ALL {
        assert!(
            doc.contains(&format!("| {} |", code.as_str())),
            "docs/diagnostics.md lacks {}",
            code.as_str()
        );
    }
}

//! CSV for Bulk jobs: the upload's cells (a null or an empty string as `#N/A`, fields
//! quoted when they need to be). Result sets are read by the reader both directions share
//! (`salesforce::csv`).

/// One CSV cell's value from a JSON value (unquoted).
pub(super) fn cell_value(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::Null => return "#N/A".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    if text.is_empty() {
        // An empty cell would leave the field unchanged; an empty string clears it too.
        return "#N/A".into();
    }
    text
}

/// A value as a CSV field, quoted when it needs to be.
pub(super) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One CSV cell from a JSON value.
#[cfg(test)]
fn cell(v: &serde_json::Value) -> String {
    csv_field(&cell_value(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        assert_eq!(cell(&serde_json::Value::Null), "#N/A");
        assert_eq!(cell(&serde_json::json!("a,b")), "\"a,b\"");
        assert_eq!(cell(&serde_json::json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(cell(&serde_json::json!(12.5)), "12.5");
        assert_eq!(cell(&serde_json::json!(true)), "true");
        assert_eq!(cell(&serde_json::json!("")), "#N/A");
    }
}

//! CSV for Bulk jobs: the upload's cells (a null or an empty string as `#N/A`, fields
//! quoted when they need to be), and result sets read as a stream ([`CsvStream`], RFC 4180),
//! one row at a time, so a result set of any size costs one row of memory.

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

/// A result row longer than this is not a Bulk result (a record holds at most 400,000
/// characters, docs/salesforce-protocol.md §4).
pub(super) const MAX_RESULT_ROW: usize = 4 * 1024 * 1024;

/// RFC 4180 CSV read as it arrives (quoted fields, `""` escapes, newlines inside quotes),
/// one row at a time, so a result set of any size costs one row of memory.
#[derive(Default)]
pub(super) struct CsvStream {
    row: Vec<String>,
    field: Vec<u8>,
    quoted: bool,
    /// The byte before closed a quoted section: a `"` now is an escaped quote.
    after_quote: bool,
    any: bool,
    row_bytes: usize,
}

impl CsvStream {
    fn end_field(&mut self) {
        let field = std::mem::take(&mut self.field);
        self.row.push(match String::from_utf8(field) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        });
    }

    /// Feeds bytes; `row` is called with each complete row.
    pub(super) fn feed<E>(
        &mut self,
        bytes: &[u8],
        mut row: impl FnMut(Vec<String>) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        for &b in bytes {
            self.any = true;
            self.row_bytes += 1;
            if self.row_bytes > MAX_RESULT_ROW {
                return Err(StreamError::RowTooLong);
            }
            if self.quoted {
                if b == b'"' {
                    self.quoted = false;
                    self.after_quote = true;
                } else {
                    self.field.push(b);
                }
                continue;
            }
            if std::mem::take(&mut self.after_quote) && b == b'"' {
                self.field.push(b'"');
                self.quoted = true;
                continue;
            }
            match b {
                b'"' => self.quoted = true,
                b',' => self.end_field(),
                b'\r' => {}
                b'\n' => {
                    self.end_field();
                    self.any = false;
                    self.row_bytes = 0;
                    row(std::mem::take(&mut self.row)).map_err(StreamError::Row)?;
                }
                _ => self.field.push(b),
            }
        }
        Ok(())
    }

    /// Ends the input: the last row, if it had no line end.
    pub(super) fn finish<E>(mut self, mut row: impl FnMut(Vec<String>) -> Result<(), E>) -> Result<(), E> {
        if self.any {
            self.end_field();
            row(std::mem::take(&mut self.row))?;
        }
        Ok(())
    }
}

pub(super) enum StreamError<E> {
    RowTooLong,
    Row(E),
}

/// Parses CSV (RFC 4180: quoted fields, `""` escapes, newlines inside quotes).
#[cfg(test)]
pub(super) fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut csv = CsvStream::default();
    let mut push = |r: Vec<String>| -> Result<(), ()> {
        rows.push(r);
        Ok(())
    };
    if csv.feed(text.as_bytes(), &mut push).is_ok() {
        let _ = csv.finish(&mut push);
    }
    rows
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

    #[test]
    fn csv_round_trip() {
        let rows = parse_csv("\"sf__Id\",\"sf__Created\",Name\n003,true,\"A, \"\"B\"\"\nC\"\n004,false,x\n");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], ["sf__Id", "sf__Created", "Name"]);
        assert_eq!(rows[1], ["003", "true", "A, \"B\"\nC"]);
        assert_eq!(rows[2], ["004", "false", "x"]);
        assert!(parse_csv("").is_empty());
    }

    #[test]
    fn csv_arrives_in_chunks_of_any_size() {
        let text = "\"sf__Id\",\"sf__Created\",Name\n003,true,\"A, \"\"B\"\"\nC\"\r\n004,false,x";
        for size in 1..9 {
            let mut rows = Vec::new();
            let mut csv = CsvStream::default();
            for chunk in text.as_bytes().chunks(size) {
                let fed = csv.feed(chunk, |r| -> Result<(), ()> {
                    rows.push(r);
                    Ok(())
                });
                assert!(fed.is_ok());
            }
            csv.finish(|r| -> Result<(), ()> {
                rows.push(r);
                Ok(())
            })
            .unwrap();
            assert_eq!(rows, parse_csv(text), "chunks of {size}");
            assert_eq!(rows[1], ["003", "true", "A, \"B\"\nC"]);
            assert_eq!(rows[2], ["004", "false", "x"]);
        }
    }
}

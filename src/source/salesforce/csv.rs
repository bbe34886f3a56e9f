//! The CSV of Bulk API 2.0 query results, read as it arrives: RFC 4180 quoting (quoted
//! cells may hold commas, doubled quotes and line breaks), `\n` or `\r\n` line ends. One
//! row is held at a time, so a result of any size costs one row of memory; a row longer
//! than [`MAX_ROW`] is not a Salesforce record and stops the read.

/// A record holds at most 400,000 characters (docs/salesforce-protocol.md §4), up to 4
/// bytes each in UTF-8.
pub const MAX_ROW: usize = 4 * 400_000;

/// The reader's state between chunks.
#[derive(Default)]
pub struct CsvReader {
    row: Vec<String>,
    cell: Vec<u8>,
    quoted: bool,
    /// The byte before closed a quoted section: a `"` now is an escaped quote.
    after_quote: bool,
    /// The current row has started (a blank line is not a row).
    started: bool,
    row_bytes: usize,
    /// A `\r` ended the previous chunk outside quotes.
    pending_cr: bool,
}

impl CsvReader {
    fn end_cell(&mut self) -> Result<(), String> {
        let cell = std::mem::take(&mut self.cell);
        let text = String::from_utf8(cell).map_err(|_| "a cell is not UTF-8".to_string())?;
        self.row.push(text);
        Ok(())
    }

    fn end_row(&mut self, on_row: &mut impl FnMut(Vec<String>) -> Result<(), String>) -> Result<(), String> {
        if self.started {
            self.end_cell()?;
            self.started = false;
            self.row_bytes = 0;
            self.after_quote = false;
            on_row(std::mem::take(&mut self.row))?;
        }
        Ok(())
    }

    /// Feeds the next bytes; `on_row` gets each complete row.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        delimiter: u8,
        mut on_row: impl FnMut(Vec<String>) -> Result<(), String>,
    ) -> Result<(), String> {
        for &b in bytes {
            self.row_bytes += 1;
            if self.row_bytes > MAX_ROW {
                return Err(format!("a CSV row is longer than {MAX_ROW} bytes"));
            }
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    return Err("a carriage return that does not end a line".into());
                }
                self.end_row(&mut on_row)?;
                continue;
            }
            if self.quoted {
                if b == b'"' {
                    self.quoted = false;
                    self.after_quote = true;
                } else {
                    self.cell.push(b);
                }
                continue;
            }
            match b {
                b'"' if self.after_quote => {
                    // `""` inside a quoted cell: one quote, still quoted.
                    self.cell.push(b'"');
                    self.quoted = true;
                    self.after_quote = false;
                }
                b'"' if self.cell.is_empty() => {
                    self.quoted = true;
                    self.started = true;
                }
                b'"' => return Err("a quote inside an unquoted cell".into()),
                b'\n' => self.end_row(&mut on_row)?,
                b'\r' => self.pending_cr = true,
                d if d == delimiter => {
                    self.started = true;
                    self.after_quote = false;
                    self.end_cell()?;
                }
                _ if self.after_quote => return Err("text after a closing quote".into()),
                _ => {
                    self.started = true;
                    self.cell.push(b);
                }
            }
        }
        Ok(())
    }

    /// The end of the data: a last row without a line end is a row; an open quote is an
    /// error.
    pub fn finish(mut self, mut on_row: impl FnMut(Vec<String>) -> Result<(), String>) -> Result<(), String> {
        if self.quoted {
            return Err("the data ends inside a quoted cell".into());
        }
        if self.pending_cr {
            return Err("a carriage return that does not end a line".into());
        }
        self.end_row(&mut on_row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(text: &str, size: usize) -> Result<Vec<Vec<String>>, String> {
        let mut rows = Vec::new();
        let mut r = CsvReader::default();
        for chunk in text.as_bytes().chunks(size) {
            r.feed(chunk, b',', |row| {
                rows.push(row);
                Ok(())
            })?;
        }
        r.finish(|row| {
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }

    #[test]
    fn rows_arrive_whole_whatever_the_chunks() {
        let text = "\"Id\",\"Name\"\r\n\"1\",\"say \"\"hi\"\", x\"\r\n\"2\",\"two\nlines\"\r\n\"3\",\"\"\r\n";
        let want = vec![
            vec!["Id", "Name"],
            vec!["1", "say \"hi\", x"],
            vec!["2", "two\nlines"],
            vec!["3", ""],
        ];
        for size in [1, 2, 3, 7, 1000] {
            assert_eq!(parse_in_chunks(text, size).unwrap(), want, "chunks of {size}");
            assert_eq!(parse_in_chunks(&text.replace("\r\n", "\n"), size).unwrap(), want);
        }
        assert_eq!(parse_in_chunks("a,b", 1).unwrap(), vec![vec!["a", "b"]]);
        assert_eq!(parse_in_chunks("a,,\n", 1).unwrap(), vec![vec!["a", "", ""]]);
        assert!(parse_in_chunks("\"a", 1).is_err());
        assert!(parse_in_chunks("a\"b\n", 1).is_err());
        assert!(parse_in_chunks("\"a\"b\n", 1).is_err());
    }
}

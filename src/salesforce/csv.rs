//! The CSV of Bulk API 2.0 results, read as it arrives: RFC 4180 quoting (quoted cells may
//! hold the delimiter, doubled quotes and line breaks), `\n` or `\r\n` line ends. One row
//! is held at a time, so a result set of any size costs one row of memory; a row longer
//! than [`MAX_ROW`] is not a Salesforce result and stops the read.
//!
//! Both directions read it: the Salesforce source's query results and the destination's
//! ingest job results (successful, failed and unprocessed records). It is strict: a cell
//! that is not UTF-8 or a stray quote is an error, never guessed at, since a mangled
//! record id would be written to a warehouse or joined to the wrong row.

/// The longest row read: a record holds at most 400,000 characters
/// (docs/salesforce-protocol.md §4), up to 4 bytes each in UTF-8, and an ingest result
/// adds its `sf__` columns (an error message) to the uploaded row.
pub const MAX_ROW: usize = 4 * 1024 * 1024;

/// Why the CSV does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("a CSV row is longer than {} bytes", MAX_ROW)]
    RowTooLong,
    #[error("a cell is not UTF-8")]
    NotUtf8,
    #[error("a carriage return that does not end a line")]
    StrayCarriageReturn,
    #[error("a quote inside an unquoted cell")]
    QuoteInCell,
    #[error("text after a closing quote")]
    TextAfterQuote,
    #[error("the data ends inside a quoted cell")]
    OpenQuote,
}

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
    fn end_cell(&mut self) -> Result<(), CsvError> {
        let cell = std::mem::take(&mut self.cell);
        let text = String::from_utf8(cell).map_err(|_| CsvError::NotUtf8)?;
        self.row.push(text);
        Ok(())
    }

    fn end_row<E: From<CsvError>>(&mut self, on_row: &mut impl FnMut(Vec<String>) -> Result<(), E>) -> Result<(), E> {
        if self.started {
            self.end_cell()?;
            self.started = false;
            self.row_bytes = 0;
            self.after_quote = false;
            on_row(std::mem::take(&mut self.row))?;
        }
        Ok(())
    }

    /// Feeds the next bytes; `on_row` gets each complete row. A parse error comes back as
    /// the callback's error type.
    pub fn feed<E: From<CsvError>>(
        &mut self,
        bytes: &[u8],
        delimiter: u8,
        mut on_row: impl FnMut(Vec<String>) -> Result<(), E>,
    ) -> Result<(), E> {
        for &b in bytes {
            self.row_bytes += 1;
            if self.row_bytes > MAX_ROW {
                return Err(CsvError::RowTooLong.into());
            }
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    return Err(CsvError::StrayCarriageReturn.into());
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
                b'"' => return Err(CsvError::QuoteInCell.into()),
                b'\n' => self.end_row(&mut on_row)?,
                b'\r' => self.pending_cr = true,
                d if d == delimiter => {
                    self.started = true;
                    self.after_quote = false;
                    self.end_cell()?;
                }
                _ if self.after_quote => return Err(CsvError::TextAfterQuote.into()),
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
    pub fn finish<E: From<CsvError>>(mut self, mut on_row: impl FnMut(Vec<String>) -> Result<(), E>) -> Result<(), E> {
        if self.quoted {
            return Err(CsvError::OpenQuote.into());
        }
        if self.pending_cr {
            return Err(CsvError::StrayCarriageReturn.into());
        }
        self.end_row(&mut on_row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(text: &str, size: usize) -> Result<Vec<Vec<String>>, CsvError> {
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
        assert_eq!(parse_in_chunks("\"a", 1), Err(CsvError::OpenQuote));
        assert_eq!(parse_in_chunks("a\"b\n", 1), Err(CsvError::QuoteInCell));
        assert_eq!(parse_in_chunks("\"a\"b\n", 1), Err(CsvError::TextAfterQuote));
        assert_eq!(parse_in_chunks("a\rb\n", 1), Err(CsvError::StrayCarriageReturn));
        let mut r = CsvReader::default();
        let fed: Result<(), CsvError> = r.feed(b"\"\xff\"\n", b',', |_| Ok(()));
        assert_eq!(fed, Err(CsvError::NotUtf8));
    }

    /// Ingest results: `sf__` columns first, a quoted cell with the delimiter, escaped
    /// quotes and a line break, the last row without a line end; a tab-delimited query
    /// result.
    #[test]
    fn ingest_results_and_other_delimiters() {
        let text = "\"sf__Id\",\"sf__Created\",Name\n003,true,\"A, \"\"B\"\"\nC\"\r\n004,false,x";
        for size in 1..9 {
            let rows = parse_in_chunks(text, size).unwrap();
            assert_eq!(rows.len(), 3, "chunks of {size}");
            assert_eq!(rows[0], ["sf__Id", "sf__Created", "Name"]);
            assert_eq!(rows[1], ["003", "true", "A, \"B\"\nC"]);
            assert_eq!(rows[2], ["004", "false", "x"]);
        }
        assert!(parse_in_chunks("", 1).unwrap().is_empty());
        let mut rows = Vec::new();
        let mut r = CsvReader::default();
        r.feed(b"Id\tName\n1\t\"a\tb\"\n", b'\t', |row| -> Result<(), CsvError> {
            rows.push(row);
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, [vec!["Id", "Name"], vec!["1", "a\tb"]]);
    }

    #[test]
    fn a_row_past_the_cap_stops_the_read() {
        let mut r = CsvReader::default();
        let long = vec![b'x'; MAX_ROW + 1];
        let fed: Result<(), CsvError> = r.feed(&long, b',', |_| Ok(()));
        assert_eq!(fed, Err(CsvError::RowTooLong));
    }
}

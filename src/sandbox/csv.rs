//! The CSV of Bulk API 2.0: RFC 4180 quoting with the job's column delimiter, and a record
//! of which line endings the data used (a job declares `LF` or `CRLF` and Salesforce
//! refuses data that does not match).

/// Parsed CSV: rows of cells, and how many line breaks were `\r\n` and bare `\n`.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub rows: Vec<Vec<String>>,
    pub crlf: usize,
    pub lf: usize,
}

/// Parses `text`. Quoted cells may hold delimiters, quotes (doubled) and line breaks.
pub(crate) fn parse(text: &str, delimiter: char) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut row: Vec<String> = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut cell_started_quoted = false;
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cell.push('"');
                } else {
                    quoted = false;
                }
            } else {
                if c == '\n' {
                    line += 1;
                }
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() && !cell_started_quoted => {
                quoted = true;
                cell_started_quoted = true;
            }
            '"' => return Err(format!("a quote inside an unquoted cell on line {line}")),
            c if c == delimiter => {
                row.push(std::mem::take(&mut cell));
                cell_started_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                out.crlf += 1;
                line += 1;
                end_row(&mut out.rows, &mut row, &mut cell, cell_started_quoted);
                cell_started_quoted = false;
            }
            '\n' => {
                out.lf += 1;
                line += 1;
                end_row(&mut out.rows, &mut row, &mut cell, cell_started_quoted);
                cell_started_quoted = false;
            }
            c => {
                if cell_started_quoted {
                    return Err(format!("text after a closing quote on line {line}"));
                }
                cell.push(c);
            }
        }
    }
    if quoted {
        return Err("a quoted cell is not closed".into());
    }
    if !cell.is_empty() || !row.is_empty() || cell_started_quoted {
        row.push(cell);
        out.rows.push(row);
    }
    Ok(out)
}

fn end_row(rows: &mut Vec<Vec<String>>, row: &mut Vec<String>, cell: &mut String, quoted: bool) {
    if row.is_empty() && cell.is_empty() && !quoted {
        return; // a blank line
    }
    row.push(std::mem::take(cell));
    rows.push(std::mem::take(row));
}

/// Writes rows with every cell quoted, lines ended by `\n`.
pub(crate) fn write(rows: &[Vec<String>], delimiter: char) -> String {
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.push(delimiter);
            }
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_delimiters_and_line_endings() {
        let p = parse("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\r\n,\"multi\nline\"\r\n", ',').unwrap();
        assert_eq!(
            p.rows,
            vec![vec!["a", "b"], vec!["x,1", "say \"hi\""], vec!["", "multi\nline"]]
        );
        assert_eq!((p.crlf, p.lf), (3, 0));
        let p = parse("a|b\n1|2", '|').unwrap();
        assert_eq!(p.rows, vec![vec!["a", "b"], vec!["1", "2"]]);
        assert_eq!((p.crlf, p.lf), (0, 1));
        assert!(parse("a,\"b", ',').is_err());
        assert!(parse("a,b\"c\n", ',').is_err());
        assert_eq!(
            write(&[vec!["sf__Id".into(), "a\"b".into()]], ','),
            "\"sf__Id\",\"a\"\"b\"\n"
        );
    }
}

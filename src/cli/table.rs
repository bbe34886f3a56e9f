//! Plain output helpers of the commands: text tables, JSON lines, cells.

/// A table's header from its column names.
pub(crate) fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A JSON line per value (`--format json` of a listing).
pub(crate) fn json_lines(out: &mut impl std::io::Write, lines: &[serde_json::Value]) -> std::io::Result<()> {
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// A JSON string as a cell, `-` for anything else.
pub(crate) fn cell(v: &serde_json::Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| "-".into())
}

/// A plain text table, columns padded to their widest cell; with `max_cell`, longer cells
/// are cut with `…`.
pub(crate) fn text_table(header: &[String], rows: &[Vec<String>], max_cell: Option<usize>) -> String {
    // Cells hold data (row keys, messages from a destination): escaped, they cannot drive
    // the terminal or break the table's lines.
    let cut = |s: &str| -> String {
        let safe = crate::diagnostics::terminal_safe(s, false);
        let s: &str = &safe;
        match max_cell {
            Some(max) if s.chars().count() > max => s.chars().take(max - 1).collect::<String>() + "…",
            _ => s.to_string(),
        }
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cut(c).chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = cut(c);
                let w = widths.get(i).copied().unwrap_or(0);
                format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count())))
            })
            .collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut s = line(header);
    s.push_str(&line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>()));
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

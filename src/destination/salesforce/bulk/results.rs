//! A Bulk job's result sets read back: where a result set may be fetched from
//! ([`result_cap`]), and [`ResultReader`], which finds the columns in a set's header and
//! joins each row to the record it is about (on the key's column, or on the whole uploaded
//! row when the key is not uploaded) with its outcome.

use crate::destination::Outcome;
use std::collections::{HashMap, VecDeque};

/// Why a result set cannot be read: its header lacks a column ebb needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ResultError {
    /// An uploaded column is not among the result's columns.
    #[error("its {kind} results have no column `{column}`")]
    NoColumn { kind: &'static str, column: String },
    /// The `sf__Id` (successful) or `sf__Error` (failed) column is missing.
    #[error("its {kind} results have no `{column}` column")]
    NoResultColumn { kind: &'static str, column: &'static str },
    /// The result set's CSV does not parse.
    #[error(transparent)]
    Csv(#[from] crate::salesforce::csv::CsvError),
}

/// Joins the uploaded values of a row when the key is not among them.
pub(super) const JOIN_SEPARATOR: &str = "\u{1f}";

/// The most one result set of a job may hold: what was uploaded, twice over (values come
/// back quoted), plus 1 KiB a record for the `sf__` columns and errors, and 1 MiB; never
/// less than [`crate::http::DATA_ANSWER_CAP`].
pub(super) fn result_cap(uploaded: usize, records: usize) -> usize {
    uploaded
        .saturating_mul(2)
        .saturating_add(records.saturating_mul(1024))
        .saturating_add(1024 * 1024)
        .max(crate::http::DATA_ANSWER_CAP)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResultKind {
    Successful,
    Failed,
    Unprocessed,
}

impl ResultKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            ResultKind::Successful => "successful",
            ResultKind::Failed => "failed",
            ResultKind::Unprocessed => "unprocessed",
        }
    }
}

/// Reads one result set's rows: the header first, then each row to its record.
pub(super) struct ResultReader<'a> {
    pub(super) kind: ResultKind,
    /// The uploaded columns.
    pub(super) columns: &'a [String],
    /// The uploaded column rows are joined on, or the whole row.
    pub(super) join_column: Option<usize>,
    /// From the header: where each uploaded column is, `sf__Id` and `sf__Error`.
    pub(super) positions: Option<(Vec<usize>, Option<usize>, Option<usize>)>,
}

impl ResultReader<'_> {
    /// The record a result row is about and its outcome; `None` for the header, a blank
    /// line, or a row that matches no record still waiting for its result.
    pub(super) fn row(
        &mut self,
        row: Vec<String>,
        join: &mut HashMap<String, VecDeque<usize>>,
        state: &str,
        job_error: &str,
    ) -> Result<Option<(usize, Outcome)>, ResultError> {
        let Some((cols, id_col, err_col)) = &self.positions else {
            // The header. `sf__` columns first, then the uploaded ones (any order is read).
            let find = |name: &str| row.iter().position(|h| h == name);
            let mut cols = Vec::with_capacity(self.columns.len());
            for c in self.columns {
                let at = row
                    .iter()
                    .enumerate()
                    .position(|(n, h)| h == c && !cols.contains(&n))
                    .ok_or_else(|| ResultError::NoColumn {
                        kind: self.kind.name(),
                        column: c.clone(),
                    })?;
                cols.push(at);
            }
            let (id_col, err_col) = (find("sf__Id"), find("sf__Error"));
            match self.kind {
                ResultKind::Successful if id_col.is_none() => {
                    return Err(ResultError::NoResultColumn {
                        kind: "successful",
                        column: "sf__Id",
                    })
                }
                ResultKind::Failed if err_col.is_none() => {
                    return Err(ResultError::NoResultColumn {
                        kind: "failed",
                        column: "sf__Error",
                    })
                }
                _ => {}
            }
            self.positions = Some((cols, id_col, err_col));
            return Ok(None);
        };
        if row.len() == 1 && row[0].is_empty() {
            return Ok(None);
        }
        let value = |c: usize| row.get(cols[c]).map(String::as_str).unwrap_or("");
        let key = match self.join_column {
            Some(c) => value(c).to_string(),
            None => (0..cols.len()).map(value).collect::<Vec<_>>().join(JOIN_SEPARATOR),
        };
        let Some(i) = join.get_mut(&key).and_then(VecDeque::pop_front) else {
            return Ok(None);
        };
        let outcome = match self.kind {
            ResultKind::Successful => Outcome::Confirmed {
                record_id: id_col.and_then(|c| row.get(c)).filter(|s| !s.is_empty()).cloned(),
            },
            ResultKind::Failed => {
                // `REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --`
                let e = err_col.and_then(|c| row.get(c)).cloned().unwrap_or_default();
                let (code, message) = e.split_once(':').unwrap_or(("UNKNOWN", e.as_str()));
                Outcome::Rejected {
                    code: code.to_string(),
                    message: message.trim_end_matches(" --").to_string(),
                }
            }
            ResultKind::Unprocessed => Outcome::Rejected {
                code: "UNPROCESSED".into(),
                message: format!("the Bulk job ended {state} before processing this record{job_error}"),
            },
        };
        Ok(Some((i, outcome)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::csv::{CsvError, CsvReader};

    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut r = CsvReader::default();
        r.feed(text.as_bytes(), b',', |row| -> Result<(), CsvError> {
            rows.push(row);
            Ok(())
        })
        .unwrap();
        rows
    }

    #[test]
    fn results_join_on_the_whole_uploaded_row_when_the_key_is_not_uploaded() {
        let columns = vec!["LastName".to_string(), "Email".to_string()];
        let mut join: HashMap<String, VecDeque<usize>> = HashMap::new();
        // Two identical rows, and a third.
        for (i, row) in [["Doe", "a@x"], ["Doe", "a@x"], ["Roe", "b@x"]].iter().enumerate() {
            join.entry(row.join(JOIN_SEPARATOR)).or_default().push_back(i);
        }
        let mut reader = ResultReader {
            kind: ResultKind::Successful,
            columns: &columns,
            join_column: None,
            positions: None,
        };
        // Columns by name, in any order; rows in any order; a row of no record is ignored.
        let csv = "\"sf__Id\",\"sf__Created\",Email,LastName\n003C,true,b@x,Roe\n003A,true,a@x,Doe\n003Z,true,z@x,Zoe\n003B,true,a@x,Doe\n";
        let got: Vec<(usize, Outcome)> = parse_csv(csv)
            .into_iter()
            .filter_map(|r| reader.row(r, &mut join, "JobComplete", "").unwrap())
            .collect();
        let ok = |id: &str| Outcome::Confirmed {
            record_id: Some(id.into()),
        };
        assert_eq!(got, vec![(2, ok("003C")), (0, ok("003A")), (1, ok("003B"))]);

        let mut reader = ResultReader {
            kind: ResultKind::Successful,
            columns: &columns,
            join_column: None,
            positions: None,
        };
        let err = reader
            .row(
                vec!["sf__Id".into(), "sf__Created".into(), "Email".into()],
                &mut join,
                "",
                "",
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "its successful results have no column `LastName`");
    }
}

//! Static checks of a source query: does it parse in the connection's dialect, and which
//! columns does it select (when that is knowable without running it).

use crate::config::ConnectionType;
use crate::diagnostics::lowercase_first;
use sqlparser::ast::{Expr, Ident, SelectItem, SetExpr, Statement};
use sqlparser::dialect::{Dialect, DuckDbDialect, GenericDialect, PostgreSqlDialect, SnowflakeDialect};
use sqlparser::parser::Parser;

/// A selected column's name as the warehouse will report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Quoted identifiers keep their case; unquoted ones match case-insensitively.
    pub quoted: bool,
}

/// What a query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every column is named: the list is exact.
    Known(Vec<Column>),
    /// `*`, or an expression without an alias: columns are only known at run time.
    Unknown { wildcard: bool },
}

impl Selection {
    /// Whether `column` is selected; `None` when that cannot be known statically.
    pub fn has(&self, column: &str) -> Option<bool> {
        match self {
            Selection::Known(cols) => Some(cols.iter().any(|c| {
                if c.quoted {
                    c.name == column
                } else {
                    c.name.eq_ignore_ascii_case(column)
                }
            })),
            Selection::Unknown { .. } => None,
        }
    }

    pub fn names(&self) -> Vec<&str> {
        match self {
            Selection::Known(cols) => cols.iter().map(|c| c.name.as_str()).collect(),
            Selection::Unknown { .. } => Vec::new(),
        }
    }
}

/// A query problem, at a 1-based line and column of the query text when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub not_a_query: bool,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

fn dialect(kind: ConnectionType) -> Box<dyn Dialect> {
    match kind {
        ConnectionType::Duckdb => Box::new(DuckDbDialect {}),
        ConnectionType::Postgres => Box::new(PostgreSqlDialect {}),
        ConnectionType::Snowflake => Box::new(SnowflakeDialect),
        _ => Box::new(GenericDialect {}),
    }
}

/// Parses `query` in the dialect of `kind` and works out what it selects.
pub fn analyze(query: &str, kind: ConnectionType) -> Result<Selection, SqlError> {
    let statements = Parser::parse_sql(dialect(kind).as_ref(), query).map_err(|e| {
        let text = match e {
            sqlparser::parser::ParserError::TokenizerError(s) | sqlparser::parser::ParserError::ParserError(s) => s,
            sqlparser::parser::ParserError::RecursionLimitExceeded => "the query nests too deeply".into(),
        };
        let (message, line, col) = split_location(&text);
        SqlError {
            not_a_query: false,
            line,
            col,
            message,
        }
    })?;
    let not_query = |message: String| SqlError {
        not_a_query: true,
        line: 1,
        col: 1,
        message,
    };
    match statements.as_slice() {
        [Statement::Query(q)] => Ok(selection_of(&q.body)),
        [] => Err(not_query("the query is empty".into())),
        [_] => Err(not_query("the source query must be a SELECT (or WITH … SELECT)".into())),
        many => Err(not_query(format!(
            "the source query must be one statement, found {}",
            many.len()
        ))),
    }
}

fn selection_of(body: &SetExpr) -> Selection {
    match body {
        SetExpr::Select(select) => {
            let mut cols = Vec::new();
            for item in &select.projection {
                match item {
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                        return Selection::Unknown { wildcard: true }
                    }
                    SelectItem::ExprWithAlias { alias, .. } => cols.push(column(alias)),
                    SelectItem::ExprWithAliases { aliases, .. } => cols.extend(aliases.iter().map(column)),
                    SelectItem::UnnamedExpr(expr) => match expr {
                        Expr::Identifier(id) => cols.push(column(id)),
                        Expr::CompoundIdentifier(parts) => match parts.last() {
                            Some(id) => cols.push(column(id)),
                            None => return Selection::Unknown { wildcard: false },
                        },
                        _ => return Selection::Unknown { wildcard: false },
                    },
                }
            }
            Selection::Known(cols)
        }
        SetExpr::Query(q) => selection_of(&q.body),
        // The first branch of UNION/INTERSECT/EXCEPT names the columns.
        SetExpr::SetOperation { left, .. } => selection_of(left),
        _ => Selection::Unknown { wildcard: false },
    }
}

fn column(id: &Ident) -> Column {
    Column {
        name: id.value.clone(),
        quoted: id.quote_style.is_some(),
    }
}

/// sqlparser appends " at Line: L, Column: C" to its messages.
fn split_location(text: &str) -> (String, usize, usize) {
    if let Some(i) = text.rfind(" at Line: ") {
        let rest = &text[i + " at Line: ".len()..];
        if let Some((l, c)) = rest.split_once(", Column: ") {
            if let (Ok(l), Ok(c)) = (l.trim().parse(), c.trim().parse()) {
                return (lowercase_first(&text[..i]), l, c);
            }
        }
    }
    (lowercase_first(text), 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_columns_are_known() {
        let s = analyze(
            "SELECT crm_id, t.segment, ltv * 2 AS ltv2, \"Mixed\" FROM x t WHERE sync = TRUE",
            ConnectionType::Duckdb,
        )
        .unwrap();
        assert_eq!(s.names(), ["crm_id", "segment", "ltv2", "Mixed"]);
        assert_eq!(s.has("CRM_ID"), Some(true));
        assert_eq!(s.has("mixed"), Some(false));
        assert_eq!(s.has("other"), Some(false));
    }

    #[test]
    fn wildcards_and_unnamed_expressions_are_unknown() {
        assert_eq!(
            analyze("SELECT * FROM x", ConnectionType::Postgres).unwrap(),
            Selection::Unknown { wildcard: true }
        );
        assert_eq!(
            analyze("SELECT a + 1 FROM x", ConnectionType::Postgres)
                .unwrap()
                .has("a"),
            None
        );
    }

    #[test]
    fn cte_and_union_use_the_first_select() {
        let s = analyze(
            "WITH c AS (SELECT 1 AS a) SELECT a, b FROM c UNION ALL SELECT 1, 2",
            ConnectionType::Snowflake,
        )
        .unwrap();
        assert_eq!(s.names(), ["a", "b"]);
    }

    #[test]
    fn errors_carry_a_position() {
        let e = analyze("SELECT a,\nFROM x WHERE", ConnectionType::Duckdb).unwrap_err();
        assert!(!e.not_a_query);
        assert!(e.line >= 1);
        let e = analyze("DELETE FROM x", ConnectionType::Duckdb).unwrap_err();
        assert!(e.not_a_query);
        assert!(
            analyze("SELECT 1; SELECT 2", ConnectionType::Duckdb)
                .unwrap_err()
                .not_a_query
        );
    }
}

//! The mapping layer's errors, as data: why a cell cannot be read or written as JSON
//! ([`ValueError`]), why a transform does not fit a value ([`ApplyError`]), and the cause
//! of an invalid row ([`RowCause`]), which adds where (a column, a destination field) and
//! picks the row's stable code. A [`RowError`] (code and message, what the state store
//! keeps) is made from a `RowCause`, so its text is written in one place.

use super::RowError;

/// Why one cell cannot be read from its column or written as JSON.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// NaN and the infinities have no JSON form.
    #[error("{0} cannot be sent as a JSON number")]
    NotFinite(f64),
    #[error("date out of range")]
    DateOutOfRange,
    #[error("timestamp out of range")]
    TimestampOutOfRange,
    #[error("a dictionary key is out of range")]
    DictionaryKey,
    #[error("columns of Arrow type {0} cannot be mapped yet")]
    UnsupportedType(arrow::datatypes::DataType),
    /// A path looks into a text cell that does not parse as JSON.
    #[error("the column holds text that is not JSON ({0})")]
    NotJson(serde_json::Error),
    /// A path looks into a scalar (the kind, as [`super::value::Val::kind`] words it).
    #[error("{0} has no keys to look into")]
    NoKeys(&'static str),
    /// A value's JSON text does not read back (an exact number's text that is not one).
    #[error("{0}")]
    BadJson(serde_json::Error),
}

/// Why a transform cannot be applied to a value: it fails for that row only.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The value is of a kind the transform does not take.
    #[error("`{transform}` needs {needs}, found {found}")]
    WrongKind {
        transform: &'static str,
        /// What it takes, in words: `text`, `a number`.
        needs: &'static str,
        /// What it was given ([`super::value::Val::kind`]).
        found: &'static str,
    },
    #[error("`parse_json`: the text is not JSON ({0})")]
    NotJson(serde_json::Error),
    #[error("`date`: `{0}` is not a date or timestamp")]
    NotADate(String),
    #[error("`round`: `{0}` is not a number")]
    NotANumber(String),
    /// `hash`'s key variable is not set (or empty): no row can be pseudonymised.
    #[error("`hash`: its key `{0}` is not set in the environment")]
    NoHashKey(String),
}

impl ApplyError {
    /// The error with the value it quotes masked ([`crate::redact::mask`]): for a `pii`
    /// field, whose values never reach a message in clear.
    pub fn masked(self) -> ApplyError {
        match self {
            ApplyError::NotADate(v) => ApplyError::NotADate(crate::redact::mask(&v)),
            ApplyError::NotANumber(v) => ApplyError::NotANumber(crate::redact::mask(&v)),
            other => other,
        }
    }
}

/// Why a row cannot be sent, and where: the typed cause of a [`RowError`].
#[derive(Debug, thiserror::Error)]
pub enum RowCause {
    /// The key column is null in this row (`null_key`).
    #[error("the key column `{column}` is null")]
    NullKey { column: String },
    /// A source column's cell cannot be read (`bad_value`).
    #[error("column `{column}`: {cause}")]
    Column { column: String, cause: ValueError },
    /// A destination field's value cannot be written as JSON (`bad_value`).
    #[error("`{field}`: {cause}")]
    Field { field: String, cause: ValueError },
    /// A path looks into a column's cell that has no document to look into (`bad_value`).
    #[error("`{column}` for `{field}`: {cause}")]
    Path {
        column: String,
        field: String,
        cause: ValueError,
    },
    /// A JSONPath query fails on the row (`bad_value`).
    #[error("JSONPath for `{field}`: {cause}")]
    JsonPath {
        field: String,
        cause: jsonpath_rust::parser::errors::JsonPathError,
    },
    /// A transform does not fit the field's value (`transform_failed`).
    #[error("`{field}`: {cause}")]
    Transform { field: String, cause: ApplyError },
}

impl RowCause {
    /// The stable code of a row error with this cause.
    pub fn code(&self) -> &'static str {
        match self {
            RowCause::NullKey { .. } => "null_key",
            RowCause::Transform { .. } => "transform_failed",
            RowCause::Column { .. } | RowCause::Field { .. } | RowCause::Path { .. } | RowCause::JsonPath { .. } => {
                "bad_value"
            }
        }
    }
}

impl From<RowCause> for RowError {
    fn from(cause: RowCause) -> RowError {
        RowError {
            code: cause.code(),
            message: cause.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_error_takes_its_code_and_message_from_the_cause() {
        let e = RowError::from(RowCause::Transform {
            field: "Email".into(),
            cause: ApplyError::WrongKind {
                transform: "lower",
                needs: "text",
                found: "an integer",
            },
        });
        assert_eq!(e.code, "transform_failed");
        assert_eq!(e.message, "`Email`: `lower` needs text, found an integer");
        let e = RowError::from(RowCause::Column {
            column: "seen_at".into(),
            cause: ValueError::TimestampOutOfRange,
        });
        assert_eq!(
            (e.code, e.message.as_str()),
            ("bad_value", "column `seen_at`: timestamp out of range")
        );
        let e = RowError::from(RowCause::NullKey { column: "id".into() });
        assert_eq!(
            (e.code, e.message.as_str()),
            ("null_key", "the key column `id` is null")
        );
    }
}

//! Transforms: the functions a mapping applies to a value before it is sent.
//!
//! This module owns their grammar (`name` or `name(arg, …)`), the checks of their
//! arguments (so that `validate` reports `round(-1)` before anything runs), and how they
//! are written back. What they do to a row's value ([`Transform::apply`]) is the mapping
//! layer's, in `map::apply`.

use std::fmt;

/// A parsed, checked transform.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Lowercase.
    Lower,
    /// Uppercase.
    Upper,
    /// First letter of each word upper, the rest lower (`INITCAP()` in SQL).
    Initcap,
    /// Strip leading and trailing white space.
    Trim,
    /// Strip phone formatting: keep digits and a leading `+`.
    Phone,
    /// Parse a JSON string into a value.
    ParseJson,
    /// Hex SHA-256 of the value (for hashed identifiers).
    Sha256,
    /// Hex HMAC-SHA256 of the value under the key in this environment variable (default
    /// `EBB_HASH_KEY`): a pseudonym that stays joinable and that nobody without the key
    /// can reverse by hashing guesses.
    Hash(String),
    /// Round a number to `n` decimal places.
    Round(u32),
    /// Map `[from_min, from_max]` linearly onto `[to_min, to_max]`.
    Scale {
        from_min: f64,
        from_max: f64,
        to_min: f64,
        to_max: f64,
    },
    /// Format a date or timestamp with a strftime format.
    Date(String),
    /// Keep at most `n` characters.
    Truncate(usize),
    /// Use this value when the input is null.
    Default(serde_json::Value),
}

/// Names and signatures of all transforms, for help lines.
pub const SIGNATURES: &[(&str, &str)] = &[
    ("lower", "lower"),
    ("upper", "upper"),
    ("initcap", "initcap"),
    ("trim", "trim"),
    ("phone", "phone"),
    ("parse_json", "parse_json"),
    ("sha256", "sha256"),
    ("hash", "hash | hash(KEY_VARIABLE)"),
    ("round", "round(n)"),
    ("scale", "scale(from_min, from_max, to_min, to_max)"),
    ("date", "date(format)"),
    ("truncate", "truncate(n)"),
    ("default", "default(value)"),
];

/// Why a transform does not parse or check, and where: `offset` is the byte offset in
/// the text. Its message is the kind's; [`TransformError::help`] suggests a fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}")]
pub struct TransformError {
    pub offset: usize,
    pub kind: TransformErrorKind,
}

/// What is wrong with a transform as written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformErrorKind {
    #[error("missing `)` at the end of the arguments")]
    MissingParen,
    #[error("a quoted argument is not closed")]
    UnclosedQuote,
    /// No transform has this name; `close` is the one name it is a likely misspelling of.
    #[error("unknown transform `{name}`")]
    Unknown { name: String, close: Option<&'static str> },
    #[error("`{name}` takes {expected} argument{} (`{signature}`), found {found}", plural_s(.expected))]
    Arity {
        name: &'static str,
        signature: &'static str,
        expected: usize,
        found: usize,
    },
    /// An argument that must be a number is text; `what` names the argument.
    #[error("`{name}` needs a number for {what}, found `{found}`")]
    NotANumber {
        name: &'static str,
        what: String,
        found: String,
    },
    #[error("`round` takes a whole number of decimal places from 0 to 15, found `{0}`")]
    RoundPlaces(String),
    #[error("`scale` needs from_min ≠ from_max: the input range {from_min}..{from_max} is empty")]
    EmptyRange { from_min: String, from_max: String },
    #[error("`date` format `{0}` is not a valid strftime format")]
    DateFormat(String),
    #[error("`truncate` takes a length of at least 1, found `{0}`")]
    TruncateLength(String),
    #[error("`hash` takes the name of the environment variable holding its key (`EBB_HASH_KEY`), found `{0}`")]
    HashKeyVariable(String),
}

/// The environment variable of `hash`'s key unless it names another.
pub const DEFAULT_HASH_KEY: &str = "EBB_HASH_KEY";

fn plural_s(n: &usize) -> &'static str {
    if *n == 1 {
        ""
    } else {
        "s"
    }
}

impl TransformError {
    /// Whether no transform has the name (E-code for an unknown transform, not bad arguments).
    pub fn is_unknown(&self) -> bool {
        matches!(self.kind, TransformErrorKind::Unknown { .. })
    }

    /// A suggested fix, when the kind has one of its own.
    pub fn help(&self) -> Option<String> {
        match &self.kind {
            TransformErrorKind::Unknown { close, .. } => {
                let all = SIGNATURES.iter().map(|(_, s)| *s).collect::<Vec<_>>().join(", ");
                Some(match close {
                    Some(m) => format!("did you mean `{m}`? transforms: {all}"),
                    None => format!("transforms: {all}"),
                })
            }
            TransformErrorKind::EmptyRange { .. } => {
                Some("e.g. `scale(0, 1, 0, 100)` turns a 0-1 score into a percentage".into())
            }
            TransformErrorKind::DateFormat(_) => Some("e.g. `date(%Y-%m-%d)` or `date('%Y-%m-%dT%H:%M:%SZ')`".into()),
            _ => None,
        }
    }
}

/// One argument as written.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Number(f64, String),
    Text(String),
}

impl Arg {
    fn raw(&self) -> &str {
        match self {
            Arg::Number(_, s) | Arg::Text(s) => s,
        }
    }
}

impl Transform {
    /// Parses and checks one transform, e.g. `scale(0, 1, 0, 100)`.
    pub fn parse(text: &str) -> Result<Transform, TransformError> {
        let t = text.trim();
        let lead = text.len() - text.trim_start().len();
        let (name, args_text) = match t.find('(') {
            Some(open) => {
                if !t.ends_with(')') {
                    return Err(err(lead + t.len(), TransformErrorKind::MissingParen));
                }
                (t[..open].trim(), Some(&t[open + 1..t.len() - 1]))
            }
            None => (t, None),
        };
        let args = match args_text {
            Some(a) => split_args(a).map_err(|k| err(lead, k))?,
            None => Vec::new(),
        };
        let Some(&(name, sig)) = SIGNATURES.iter().find(|(n, _)| *n == name) else {
            let close = crate::diagnostics::unique_close_match(name, SIGNATURES.iter().map(|(n, _)| *n));
            return Err(err(
                lead,
                TransformErrorKind::Unknown {
                    name: name.to_string(),
                    close,
                },
            ));
        };
        let arity = |n: usize, args: &[Arg]| -> Result<(), TransformError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(err(
                    lead,
                    TransformErrorKind::Arity {
                        name,
                        signature: sig,
                        expected: n,
                        found: args.len(),
                    },
                ))
            }
        };
        let number = |a: &Arg, what: &str| -> Result<f64, TransformError> {
            match a {
                Arg::Number(n, _) => Ok(*n),
                Arg::Text(s) => Err(err(
                    lead,
                    TransformErrorKind::NotANumber {
                        name,
                        what: what.to_string(),
                        found: s.clone(),
                    },
                )),
            }
        };
        let simple = |t: Transform, args: &[Arg]| -> Result<Transform, TransformError> { arity(0, args).map(|_| t) };
        match name {
            "lower" => simple(Transform::Lower, &args),
            "upper" => simple(Transform::Upper, &args),
            "initcap" => simple(Transform::Initcap, &args),
            "trim" => simple(Transform::Trim, &args),
            "phone" => simple(Transform::Phone, &args),
            "parse_json" => simple(Transform::ParseJson, &args),
            "sha256" => simple(Transform::Sha256, &args),
            "hash" => {
                if args.is_empty() {
                    return Ok(Transform::Hash(DEFAULT_HASH_KEY.into()));
                }
                arity(1, &args)?;
                let var = args[0].raw().to_string();
                let ok = !var.is_empty()
                    && !var.starts_with(|c: char| c.is_ascii_digit())
                    && var
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    return Err(err(lead, TransformErrorKind::HashKeyVariable(var)));
                }
                Ok(Transform::Hash(var))
            }
            "round" => {
                arity(1, &args)?;
                let n = number(&args[0], "the number of decimal places")?;
                if n.fract() != 0.0 || !(0.0..=15.0).contains(&n) {
                    return Err(err(lead, TransformErrorKind::RoundPlaces(args[0].raw().to_string())));
                }
                Ok(Transform::Round(n as u32))
            }
            "scale" => {
                arity(4, &args)?;
                let v: Vec<f64> = args
                    .iter()
                    .zip(["from_min", "from_max", "to_min", "to_max"])
                    .map(|(a, w)| number(a, &format!("`{w}`")))
                    .collect::<Result<_, _>>()?;
                if v[0] == v[1] {
                    return Err(err(
                        lead,
                        TransformErrorKind::EmptyRange {
                            from_min: args[0].raw().to_string(),
                            from_max: args[1].raw().to_string(),
                        },
                    ));
                }
                Ok(Transform::Scale {
                    from_min: v[0],
                    from_max: v[1],
                    to_min: v[2],
                    to_max: v[3],
                })
            }
            "date" => {
                if args.is_empty() {
                    return Ok(Transform::Date("%Y-%m-%d".into()));
                }
                arity(1, &args)?;
                let fmt = args[0].raw().to_string();
                let bad = chrono::format::StrftimeItems::new(&fmt).any(|i| matches!(i, chrono::format::Item::Error));
                if bad || fmt.is_empty() {
                    return Err(err(lead, TransformErrorKind::DateFormat(fmt)));
                }
                Ok(Transform::Date(fmt))
            }
            "truncate" => {
                arity(1, &args)?;
                let n = number(&args[0], "the length")?;
                if n.fract() != 0.0 || n < 1.0 {
                    return Err(err(lead, TransformErrorKind::TruncateLength(args[0].raw().to_string())));
                }
                Ok(Transform::Truncate(n as usize))
            }
            "default" => {
                arity(1, &args)?;
                Ok(Transform::Default(match &args[0] {
                    Arg::Number(n, raw) => raw
                        .parse::<i64>()
                        .map(serde_json::Value::from)
                        .unwrap_or_else(|_| serde_json::json!(n)),
                    Arg::Text(s) if s == "true" || s == "false" => serde_json::Value::Bool(s == "true"),
                    Arg::Text(s) if s == "null" => serde_json::Value::Null,
                    Arg::Text(s) => serde_json::Value::String(s.clone()),
                }))
            }
            _ => unreachable!("every signature is matched above"),
        }
    }
}

fn err(offset: usize, kind: TransformErrorKind) -> TransformError {
    TransformError { offset, kind }
}

/// Splits `a, 'b, c', 3` at top-level commas. Quoted text keeps its content; numbers are
/// recognised; anything else is bare text.
fn split_args(s: &str) -> Result<Vec<Arg>, TransformErrorKind> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut quoted = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                quoted = true;
            }
            (None, ',') => {
                args.push(finish(&cur, quoted));
                cur.clear();
                quoted = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(TransformErrorKind::UnclosedQuote);
    }
    args.push(finish(&cur, quoted));
    Ok(args)
}

fn finish(raw: &str, quoted: bool) -> Arg {
    if quoted {
        return Arg::Text(raw.to_string());
    }
    let t = raw.trim();
    match t.parse::<f64>() {
        Ok(n) if n.is_finite() => Arg::Number(n, t.to_string()),
        _ => Arg::Text(t.to_string()),
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Lower => f.write_str("lower"),
            Transform::Upper => f.write_str("upper"),
            Transform::Initcap => f.write_str("initcap"),
            Transform::Trim => f.write_str("trim"),
            Transform::Phone => f.write_str("phone"),
            Transform::ParseJson => f.write_str("parse_json"),
            Transform::Sha256 => f.write_str("sha256"),
            Transform::Hash(v) if v == DEFAULT_HASH_KEY => f.write_str("hash"),
            Transform::Hash(v) => write!(f, "hash({v})"),
            Transform::Round(n) => write!(f, "round({n})"),
            Transform::Scale {
                from_min,
                from_max,
                to_min,
                to_max,
            } => write!(f, "scale({from_min}, {from_max}, {to_min}, {to_max})"),
            Transform::Date(fmt) => write!(f, "date('{fmt}')"),
            Transform::Truncate(n) => write!(f, "truncate({n})"),
            Transform::Default(v) => write!(f, "default({v})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_transforms() {
        assert_eq!(Transform::parse("round(2)").unwrap(), Transform::Round(2));
        assert_eq!(
            Transform::parse("scale(0,1,0,100)").unwrap(),
            Transform::Scale {
                from_min: 0.0,
                from_max: 1.0,
                to_min: 0.0,
                to_max: 100.0
            }
        );
        assert_eq!(Transform::parse(" initcap ").unwrap(), Transform::Initcap);
        assert_eq!(
            Transform::parse("date('%Y-%m-%d')").unwrap(),
            Transform::Date("%Y-%m-%d".into())
        );
        assert_eq!(
            Transform::parse("default(unknown)").unwrap(),
            Transform::Default("unknown".into())
        );
        assert_eq!(Transform::parse("default(0)").unwrap(), Transform::Default(0.into()));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(Transform::parse("round(-1)")
            .unwrap_err()
            .to_string()
            .contains("from 0 to 15"));
        assert!(Transform::parse("round(1.5)").is_err());
        assert!(Transform::parse("round")
            .unwrap_err()
            .to_string()
            .contains("takes 1 argument"));
        assert!(Transform::parse("scale(1,1,0,100)")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(Transform::parse("scale(0,1,0)").is_err());
        assert!(Transform::parse("lower(1)").is_err());
        assert!(Transform::parse("truncate(0)").is_err());
        assert!(Transform::parse("date(%Q)").is_err());
        assert!(Transform::parse("round(2").is_err());
    }

    #[test]
    fn unknown_transforms_suggest_the_close_one() {
        let e = Transform::parse("rond(2)").unwrap_err();
        assert!(e.is_unknown());
        assert_eq!(e.to_string(), "unknown transform `rond`");
        assert!(e.help().unwrap().starts_with("did you mean `round`?"));
    }
}

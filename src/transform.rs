//! Transforms: the functions a mapping applies to a value before it is sent.
//!
//! This module owns their grammar (`name` or `name(arg, …)`), the checks of their
//! arguments (so that `validate` reports `round(-1)` before anything runs) and what they
//! do to a value ([`Transform::apply`]). A transform that cannot handle a row's value
//! (an unparseable date, text where a number is needed) fails for that row only.

use crate::map::value::Val;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
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
    ("round", "round(n)"),
    ("scale", "scale(from_min, from_max, to_min, to_max)"),
    ("date", "date(format)"),
    ("truncate", "truncate(n)"),
    ("default", "default(value)"),
];

/// Why a transform does not parse or check. `offset` is the byte offset in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformError {
    pub unknown: bool,
    pub offset: usize,
    pub message: String,
    pub help: Option<String>,
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
                    return Err(err(lead + t.len(), "missing `)` at the end of the arguments"));
                }
                (t[..open].trim(), Some(&t[open + 1..t.len() - 1]))
            }
            None => (t, None),
        };
        let args = match args_text {
            Some(a) => split_args(a).map_err(|m| err(lead, &m))?,
            None => Vec::new(),
        };
        let sig = SIGNATURES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
        let Some(sig) = sig else {
            let names: Vec<&str> = SIGNATURES.iter().map(|(n, _)| *n).collect();
            let all = SIGNATURES.iter().map(|(_, s)| *s).collect::<Vec<_>>().join(", ");
            let help = match crate::diagnostics::unique_close_match(name, names.iter().copied()) {
                Some(m) => format!("did you mean `{m}`? transforms: {all}"),
                None => format!("transforms: {all}"),
            };
            return Err(TransformError {
                unknown: true,
                offset: lead,
                message: format!("unknown transform `{name}`"),
                help: Some(help),
            });
        };
        let arity = |n: usize, args: &[Arg]| -> Result<(), TransformError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(err(
                    lead,
                    &format!(
                        "`{name}` takes {n} argument{} (`{sig}`), found {}",
                        if n == 1 { "" } else { "s" },
                        args.len()
                    ),
                ))
            }
        };
        let number = |a: &Arg, what: &str| -> Result<f64, TransformError> {
            match a {
                Arg::Number(n, _) => Ok(*n),
                Arg::Text(s) => Err(err(lead, &format!("`{name}` needs a number for {what}, found `{s}`"))),
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
            "round" => {
                arity(1, &args)?;
                let n = number(&args[0], "the number of decimal places")?;
                if n.fract() != 0.0 || !(0.0..=15.0).contains(&n) {
                    return Err(err(
                        lead,
                        &format!(
                            "`round` takes a whole number of decimal places from 0 to 15, found `{}`",
                            args[0].raw()
                        ),
                    ));
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
                    return Err(TransformError {
                        unknown: false,
                        offset: lead,
                        message: format!(
                            "`scale` needs from_min ≠ from_max: the input range {}..{} is empty",
                            args[0].raw(),
                            args[1].raw()
                        ),
                        help: Some("e.g. `scale(0, 1, 0, 100)` turns a 0-1 score into a percentage".into()),
                    });
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
                    return Err(TransformError {
                        unknown: false,
                        offset: lead,
                        message: format!("`date` format `{fmt}` is not a valid strftime format"),
                        help: Some("e.g. `date(%Y-%m-%d)` or `date('%Y-%m-%dT%H:%M:%SZ')`".into()),
                    });
                }
                Ok(Transform::Date(fmt))
            }
            "truncate" => {
                arity(1, &args)?;
                let n = number(&args[0], "the length")?;
                if n.fract() != 0.0 || n < 1.0 {
                    return Err(err(
                        lead,
                        &format!("`truncate` takes a length of at least 1, found `{}`", args[0].raw()),
                    ));
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

impl Transform {
    /// Applies the transform to one value. Null passes through every transform but
    /// `default`. The error says what the value was and why it does not fit.
    pub fn apply(&self, v: Val) -> Result<Val, String> {
        if matches!(v, Val::Null) {
            return Ok(match self {
                Transform::Default(d) => Val::from_json(d.clone()),
                _ => Val::Null,
            });
        }
        fn text_only<'v>(name: &str, v: &'v Val) -> Result<&'v str, String> {
            match v {
                Val::Str(s) => Ok(s),
                other => Err(format!("`{name}` needs text, found {}", other.kind())),
            }
        }
        Ok(match self {
            Transform::Lower => Val::Str(text_only("lower", &v)?.to_lowercase()),
            Transform::Upper => Val::Str(text_only("upper", &v)?.to_uppercase()),
            Transform::Trim => Val::Str(text_only("trim", &v)?.trim().to_string()),
            Transform::Initcap => Val::Str(initcap(text_only("initcap", &v)?)),
            Transform::Phone => {
                let t = v.as_text().unwrap_or_default();
                let plus = t.trim_start().starts_with('+');
                let digits: String = t.chars().filter(char::is_ascii_digit).collect();
                Val::Str(if plus { format!("+{digits}") } else { digits })
            }
            Transform::ParseJson => match v {
                Val::Str(s) => Val::Json(
                    serde_json::from_str(&s).map_err(|e| format!("`parse_json`: the text is not JSON ({e})"))?,
                ),
                Val::Json(j) => Val::Json(j),
                other => return Err(format!("`parse_json` needs text, found {}", other.kind())),
            },
            Transform::Sha256 => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(v.as_text().unwrap_or_default().as_bytes());
                Val::Str(digest.iter().map(|b| format!("{b:02x}")).collect())
            }
            Transform::Round(n) => round(v, *n)?,
            Transform::Scale {
                from_min,
                from_max,
                to_min,
                to_max,
            } => {
                let x = v
                    .as_f64()
                    .ok_or_else(|| format!("`scale` needs a number, found {}", v.kind()))?;
                Val::Float(to_min + (x - from_min) * (to_max - to_min) / (from_max - from_min))
            }
            Transform::Date(fmt) => {
                let formatted = match &v {
                    Val::Date(d) => d.format(fmt).to_string(),
                    Val::Timestamp { at, .. } => at.format(fmt).to_string(),
                    Val::Str(s) => match parse_date_text(s) {
                        Some(at) => at.format(fmt).to_string(),
                        None => return Err(format!("`date`: `{s}` is not a date or timestamp")),
                    },
                    other => {
                        return Err(format!(
                            "`date` needs a date, timestamp or text, found {}",
                            other.kind()
                        ))
                    }
                };
                Val::Str(formatted)
            }
            Transform::Truncate(n) => Val::Str(text_only("truncate", &v)?.chars().take(*n).collect()),
            Transform::Default(_) => v,
        })
    }
}

/// `INITCAP()`: the first letter of each word upper case, the rest lower case.
fn initcap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

/// Rounds half away from zero; decimals stay exact.
fn round(v: Val, n: u32) -> Result<Val, String> {
    Ok(match v {
        Val::Int(_) | Val::UInt(_) => v,
        Val::Decimal { v: x, scale } => {
            let n8 = u8::try_from(n).unwrap_or(u8::MAX);
            if scale <= n8 {
                Val::Decimal { v: x, scale }
            } else {
                let div = 10i128.pow(u32::from(scale - n8));
                let q = x / div;
                let r = x % div;
                let q = if r.abs() * 2 >= div { q + x.signum() } else { q };
                Val::Decimal { v: q, scale: n8 }
            }
        }
        Val::NumberText(t) => {
            let f: f64 = t.parse().map_err(|_| format!("`round`: `{t}` is not a number"))?;
            round(Val::Float(f), n)?
        }
        Val::Float(f) => {
            let p = 10f64.powi(i32::try_from(n).unwrap_or(15));
            Val::Float((f * p).round() / p)
        }
        other => return Err(format!("`round` needs a number, found {}", other.kind())),
    })
}

/// Dates and timestamps written as text: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` or `YYYY-MM-DD`.
fn parse_date_text(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.naive_utc());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

fn err(offset: usize, message: &str) -> TransformError {
    TransformError {
        unknown: false,
        offset,
        message: message.to_string(),
        help: None,
    }
}

/// Splits `a, 'b, c', 3` at top-level commas. Quoted text keeps its content; numbers are
/// recognised; anything else is bare text.
fn split_args(s: &str) -> Result<Vec<Arg>, String> {
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
        return Err("a quoted argument is not closed".into());
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
            .message
            .contains("from 0 to 15"));
        assert!(Transform::parse("round(1.5)").is_err());
        assert!(Transform::parse("round")
            .unwrap_err()
            .message
            .contains("takes 1 argument"));
        assert!(Transform::parse("scale(1,1,0,100)")
            .unwrap_err()
            .message
            .contains("empty"));
        assert!(Transform::parse("scale(0,1,0)").is_err());
        assert!(Transform::parse("lower(1)").is_err());
        assert!(Transform::parse("truncate(0)").is_err());
        assert!(Transform::parse("date(%Q)").is_err());
        assert!(Transform::parse("round(2").is_err());
    }

    fn apply(t: &str, v: Val) -> Result<Val, String> {
        Transform::parse(t).unwrap().apply(v)
    }

    #[test]
    fn the_seed_field_mappings() {
        // CRM to data platform: INITCAP(), LOWER(), clean phone regex, parse JSON.
        assert_eq!(
            apply("initcap", Val::Str("mARY-jane o'NEIL".into())).unwrap(),
            Val::Str("Mary-Jane O'Neil".into())
        );
        assert_eq!(
            apply("lower", Val::Str("Ada@Example.COM".into())).unwrap(),
            Val::Str("ada@example.com".into())
        );
        assert_eq!(
            apply("phone", Val::Str("+1 (555) 010-9999".into())).unwrap(),
            Val::Str("+15550109999".into())
        );
        assert_eq!(
            apply("parse_json", Val::Str(r#"{"tier":"gold"}"#.into())).unwrap(),
            Val::Json(serde_json::json!({"tier": "gold"}))
        );
        // Data platform to CRM: round to 2 decimals (currency), scale 0-100 (percentage), format date.
        assert_eq!(
            apply("round(2)", Val::Decimal { v: 1_234_567, scale: 3 }).unwrap(),
            Val::Decimal { v: 123_457, scale: 2 }
        );
        assert_eq!(
            apply(
                "round(2)",
                Val::Decimal {
                    v: -1_234_565,
                    scale: 3
                }
            )
            .unwrap(),
            Val::Decimal { v: -123_457, scale: 2 }
        );
        assert_eq!(apply("round(2)", Val::Float(2.675_000_1)).unwrap(), Val::Float(2.68));
        assert_eq!(apply("scale(0,1,0,100)", Val::Float(0.42)).unwrap(), Val::Float(42.0));
        assert_eq!(
            apply("scale(0,1,0,100)", Val::Decimal { v: 5, scale: 1 }).unwrap(),
            Val::Float(50.0)
        );
        let d = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        assert_eq!(
            apply("date(%Y-%m-%d)", Val::Date(d)).unwrap(),
            Val::Str("2026-11-28".into())
        );
        assert_eq!(
            apply("date('%d/%m/%Y')", Val::Str("2026-11-28T10:00:00Z".into())).unwrap(),
            Val::Str("28/11/2026".into())
        );
    }

    #[test]
    fn failures_are_per_value_with_a_reason() {
        assert_eq!(
            apply("date", Val::Str("yesterday".into())).unwrap_err(),
            "`date`: `yesterday` is not a date or timestamp"
        );
        assert_eq!(
            apply("lower", Val::Int(3)).unwrap_err(),
            "`lower` needs text, found an integer"
        );
        assert!(apply("round(1)", Val::Str("x".into())).is_err());
        assert!(apply("parse_json", Val::Str("{".into())).is_err());
    }

    #[test]
    fn null_passes_through_except_for_default() {
        assert_eq!(apply("lower", Val::Null).unwrap(), Val::Null);
        assert_eq!(apply("default('n/a')", Val::Null).unwrap(), Val::Str("n/a".into()));
        assert_eq!(apply("default(0)", Val::Str("x".into())).unwrap(), Val::Str("x".into()));
        assert_eq!(
            apply("truncate(3)", Val::Str("abcdef".into())).unwrap(),
            Val::Str("abc".into())
        );
        let h = apply("sha256", Val::Str("ada@example.com".into())).unwrap();
        assert!(matches!(h, Val::Str(ref s) if s.len() == 64));
    }

    #[test]
    fn unknown_transforms_suggest_the_close_one() {
        let e = Transform::parse("rond(2)").unwrap_err();
        assert!(e.unknown);
        assert!(e.help.unwrap().starts_with("did you mean `round`?"));
    }
}

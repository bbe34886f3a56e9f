//! What a transform does to one value ([`Transform::apply`]): the run-time half of
//! [`crate::transform`], which owns their grammar and argument checks. A transform that
//! cannot handle a row's value (an unparseable date, text where a number is needed) fails
//! for that row only.

use super::error::ApplyError;
use super::value::Val;
use crate::transform::Transform;
use chrono::{DateTime, NaiveDate, NaiveDateTime};

impl Transform {
    /// Applies the transform to one value. Null passes through every transform but
    /// `default`. The error says what the value was and why it does not fit.
    pub fn apply(&self, v: Val) -> Result<Val, ApplyError> {
        if matches!(v, Val::Null) {
            return Ok(match self {
                Transform::Default(d) => Val::from_json(d.clone()),
                _ => Val::Null,
            });
        }
        fn text_only<'v>(transform: &'static str, v: &'v Val) -> Result<&'v str, ApplyError> {
            match v {
                Val::Str(s) => Ok(s),
                other => Err(ApplyError::WrongKind {
                    transform,
                    needs: "text",
                    found: other.kind(),
                }),
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
                Val::Str(s) => Val::Json(serde_json::from_str(&s).map_err(ApplyError::NotJson)?),
                Val::Json(j) => Val::Json(j),
                other => {
                    return Err(ApplyError::WrongKind {
                        transform: "parse_json",
                        needs: "text",
                        found: other.kind(),
                    })
                }
            },
            Transform::Sha256 => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(v.as_text().unwrap_or_default().as_bytes());
                Val::Str(digest.iter().map(|b| format!("{b:02x}")).collect())
            }
            Transform::Hash(var) => {
                use hmac::{KeyInit, Mac};
                let key = std::env::var(var).ok().filter(|k| !k.is_empty());
                let key = key.ok_or_else(|| ApplyError::NoHashKey(var.clone()))?;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
                    .map_err(|_| ApplyError::NoHashKey(var.clone()))?;
                mac.update(v.as_text().unwrap_or_default().as_bytes());
                Val::Str(mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
            }
            Transform::Round(n) => round(v, *n)?,
            Transform::Scale {
                from_min,
                from_max,
                to_min,
                to_max,
            } => {
                let x = v.as_f64().ok_or_else(|| ApplyError::WrongKind {
                    transform: "scale",
                    needs: "a number",
                    found: v.kind(),
                })?;
                Val::Float(to_min + (x - from_min) * (to_max - to_min) / (from_max - from_min))
            }
            Transform::Date(fmt) => {
                let formatted = match &v {
                    Val::Date(d) => d.format(fmt).to_string(),
                    Val::Timestamp { at, .. } => at.format(fmt).to_string(),
                    Val::Str(s) => match parse_date_text(s) {
                        Some(at) => at.format(fmt).to_string(),
                        None => return Err(ApplyError::NotADate(s.clone())),
                    },
                    other => {
                        return Err(ApplyError::WrongKind {
                            transform: "date",
                            needs: "a date, timestamp or text",
                            found: other.kind(),
                        })
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
fn round(v: Val, n: u32) -> Result<Val, ApplyError> {
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
            let f: f64 = t.parse().map_err(|_| ApplyError::NotANumber(t.clone()))?;
            round(Val::Float(f), n)?
        }
        Val::Float(f) => {
            let p = 10f64.powi(i32::try_from(n).unwrap_or(15));
            Val::Float((f * p).round() / p)
        }
        other => {
            return Err(ApplyError::WrongKind {
                transform: "round",
                needs: "a number",
                found: other.kind(),
            })
        }
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

#[cfg(test)]
mod tests {

    #[test]
    fn hash_is_the_keyed_hmac_python_computes_and_needs_its_key() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'k3y',b'ada@example.com',hashlib.sha256).hexdigest())"
        std::env::set_var("EBB_TEST_HASH_KEY_UNIT", "k3y");
        let t = Transform::parse("hash(EBB_TEST_HASH_KEY_UNIT)").unwrap();
        let h = t.apply(Val::Str("ada@example.com".into())).unwrap();
        assert_eq!(
            h,
            Val::Str("9ae450d30547cff6a7c4c006e3e511196b21c4a45597b35b57519c5672b313d0".into())
        );
        let missing = Transform::parse("hash(EBB_TEST_HASH_KEY_NEVER_SET)").unwrap();
        let e = missing.apply(Val::Str("x".into())).unwrap_err().to_string();
        assert!(e.contains("`EBB_TEST_HASH_KEY_NEVER_SET` is not set"), "{e}");
        assert_eq!(
            Transform::parse("hash").unwrap(),
            Transform::Hash("EBB_HASH_KEY".into())
        );
        assert_eq!(Transform::parse("hash").unwrap().to_string(), "hash");
        assert!(Transform::parse("hash(my key)").is_err());
    }

    use super::*;

    fn apply(t: &str, v: Val) -> Result<Val, ApplyError> {
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
            apply("date", Val::Str("yesterday".into())).unwrap_err().to_string(),
            "`date`: `yesterday` is not a date or timestamp"
        );
        assert_eq!(
            apply("lower", Val::Int(3)).unwrap_err().to_string(),
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
}

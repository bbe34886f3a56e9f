//! `${VAR}` references in config strings.
//!
//! `${NAME}` is replaced by the environment variable `NAME`; `${NAME:-fallback}` uses
//! `fallback` when `NAME` is unset or empty; `$$` is a literal `$`. Names are
//! `[A-Za-z_][A-Za-z0-9_]*`. References are resolved when a connection is opened, never
//! written back, so secrets stay out of files, plans and logs.

/// One `${…}` in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef {
    pub name: String,
    pub default: Option<String>,
    /// Byte offset of the `$` in the string.
    pub start: usize,
}

/// A malformed reference: byte offset of its `$` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarError {
    pub offset: usize,
    pub message: String,
}

/// Every reference in `s`, in order.
pub fn references(s: &str) -> Result<Vec<VarRef>, VarError> {
    let mut refs = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let close = s[i..].find('}').map(|c| i + c).ok_or_else(|| VarError {
                    offset: i,
                    message: "`${` is not closed by `}`".into(),
                })?;
                let inner = &s[i + 2..close];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d.to_string())),
                    None => (inner, None),
                };
                if !is_var_name(name) {
                    return Err(VarError {
                        offset: i,
                        message: format!(
                            "`${{{inner}}}` is not a variable reference: names are letters, digits and `_`, not starting with a digit"
                        ),
                    });
                }
                refs.push(VarRef {
                    name: name.to_string(),
                    default,
                    start: i,
                });
                i = close + 1;
            }
            _ => i += 1,
        }
    }
    Ok(refs)
}

fn is_var_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` holds any reference.
pub fn has_reference(s: &str) -> bool {
    references(s).map(|r| !r.is_empty()).unwrap_or(true)
}

/// `s` with every reference replaced through `lookup`. Fails on the first unset variable
/// that has no fallback, naming it.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push_str(&s[last..i + 1]);
                i += 2;
                last = i;
            }
            Some(b'{') => {
                let close = s[i..]
                    .find('}')
                    .map(|c| i + c)
                    .ok_or_else(|| "`${` is not closed by `}`".to_string())?;
                let inner = &s[i + 2..close];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                out.push_str(&s[last..i]);
                match (lookup(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => return Err(format!("environment variable `{name}` is not set")),
                }
                i = close + 1;
                last = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&s[last..]);
    Ok(out)
}

/// Expands from the process environment.
pub fn expand_env(s: &str) -> Result<String, String> {
    expand(s, |n| std::env::var(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_with_offsets() {
        let r = references("Bearer ${TOKEN} and ${X:-y} $$ {z}").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].name.as_str(), r[0].start), ("TOKEN", 7));
        assert_eq!(r[1].default.as_deref(), Some("y"));
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(references("${1A}").is_err());
        assert!(references("${OPEN").is_err());
        assert!(references("${}").is_err());
    }

    #[test]
    fn expands_with_fallbacks_and_escapes() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("x${A}y${B:-2}$$", lookup).unwrap(), "x1y2$");
        assert_eq!(
            expand("${B}", lookup).unwrap_err(),
            "environment variable `B` is not set"
        );
    }
}

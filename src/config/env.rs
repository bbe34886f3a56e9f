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

/// What is wrong with a `${…}` reference, or with expanding it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("`${{` is not closed by `}}`")]
    Unclosed,
    /// What is between the braces is not a name (`${1A}`, `${}`).
    #[error("`${{{0}}}` is not a variable reference: names are letters, digits and `_`, not starting with a digit")]
    BadName(String),
    /// The variable is unset or empty and the reference gives no fallback.
    #[error("environment variable `{0}` is not set")]
    Unset(String),
}

/// A malformed reference: byte offset of its `$` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct VarError {
    pub offset: usize,
    pub kind: EnvError,
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
                let close = s[i..].find('}').map(|c| i + c).ok_or(VarError {
                    offset: i,
                    kind: EnvError::Unclosed,
                })?;
                let inner = &s[i + 2..close];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d.to_string())),
                    None => (inner, None),
                };
                if !is_var_name(name) {
                    return Err(VarError {
                        offset: i,
                        kind: EnvError::BadName(inner.to_string()),
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
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, EnvError> {
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
                let close = s[i..].find('}').map(|c| i + c).ok_or(EnvError::Unclosed)?;
                let inner = &s[i + 2..close];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                out.push_str(&s[last..i]);
                match (lookup(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => return Err(EnvError::Unset(name.to_string())),
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
pub fn expand_env(s: &str) -> Result<String, EnvError> {
    expand(s, |n| std::env::var(n).ok())
}

/// The text of `s` outside its references, as it would expand (`$$` is `$`): what is
/// written literally. `refs` are `references(s)`.
pub fn literal_text(s: &str, refs: &[VarRef]) -> String {
    let mut out = String::new();
    let mut last = 0;
    for r in refs {
        out.push_str(&s[last..r.start]);
        let close = s[r.start..].find('}').map_or(s.len(), |c| r.start + c + 1);
        last = close;
    }
    out.push_str(&s[last..]);
    out.replace("$$", "$")
}

/// Masks the values of the environment variables a project reads, wherever they appear
/// in text ebb prints: an error from a library that quotes an expanded URL, a header or a
/// connection string shows `${NAME}` instead of the value. URLs are also passed through
/// [`crate::redact::text`]. `Debug` shows how many values it holds, never them.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// (value, `${NAME}`), longest value first.
    values: Vec<(String, String)>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} values)", self.values.len())
    }
}

/// Whether a variable name says it holds a credential.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASS", "PWD", "SECRET", "TOKEN", "KEY", "AUTH", "CRED", "SIG"]
        .iter()
        .any(|w| n.contains(w))
}

impl Scrubber {
    /// Adds the values of the variables `s` references (as set now). A value is masked if
    /// it is at least 6 characters long, or at least 2 when the variable is a credential
    /// (`secret`: it sits in a secret field or a URL's password, or its name says so):
    /// shorter values (a port, `true`) would mask unrelated text.
    pub fn add_references(&mut self, s: &str, secret: bool) {
        let Ok(refs) = references(s) else { return };
        for r in refs {
            let Ok(v) = std::env::var(&r.name) else { continue };
            let min = if secret || secret_name(&r.name) { 2 } else { 6 };
            if v.chars().count() >= min && !self.values.iter().any(|(x, _)| *x == v) {
                self.values.push((v, format!("${{{}}}", r.name)));
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
    }

    /// `text` with every known value masked and URL credentials redacted.
    pub fn scrub(&self, text: &str) -> String {
        crate::redact::text(&self.mask_values(text))
    }

    /// `text` with every known value masked (for text ebb wrote itself, such as a help
    /// line's example URL `postgres://user:${PGPASSWORD}@host/db`).
    pub fn mask_values(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, shown) in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), shown);
            }
        }
        out
    }
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
        assert_eq!(
            references("${1A}").unwrap_err().to_string(),
            "`${1A}` is not a variable reference: names are letters, digits and `_`, not starting with a digit"
        );
        assert!(references("${OPEN").is_err());
        assert!(references("${}").is_err());
    }

    #[test]
    fn literal_text_is_what_is_outside_references() {
        let s = "Bearer ${T}x$${Y}${Z:-d}";
        assert_eq!(literal_text(s, &references(s).unwrap()), "Bearer x${Y}");
        assert_eq!(literal_text("${A}", &references("${A}").unwrap()), "");
    }

    #[test]
    fn the_scrubber_masks_referenced_values_and_shows_nothing_in_debug() {
        std::env::set_var("EBB_TEST_SCRUB_TOKEN", "s3cr3t-value");
        std::env::set_var("EBB_TEST_SCRUB_PORT", "5432");
        let mut s = Scrubber::default();
        s.add_references("https://h/${EBB_TEST_SCRUB_TOKEN}:${EBB_TEST_SCRUB_PORT}", false);
        assert_eq!(
            s.scrub("GET https://h/s3cr3t-value failed on 5432"),
            "GET https://h/${EBB_TEST_SCRUB_TOKEN} failed on 5432"
        );
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn expands_with_fallbacks_and_escapes() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("x${A}y${B:-2}$$", lookup).unwrap(), "x1y2$");
        assert_eq!(expand("${B}", lookup).unwrap_err(), EnvError::Unset("B".into()));
        assert_eq!(
            expand("${B}", lookup).unwrap_err().to_string(),
            "environment variable `B` is not set"
        );
        assert_eq!(
            expand("${A", lookup).unwrap_err().to_string(),
            "`${` is not closed by `}`"
        );
    }
}

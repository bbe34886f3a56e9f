//! Credentials out of everything ebb prints, logs or stores.
//!
//! URLs reach messages from many places: a connection's `${VAR}`-expanded `url`, the
//! state store's URL, a request that failed. [`url`] masks the password of a URL's
//! userinfo and the values of query parameters that carry secrets; [`text`] does the same
//! to every URL inside free text (an error chain, a log line). Both work on text that is
//! not a valid URL too (a password holding `@` or `/`, a half-written URL), since the
//! text that fails to parse is exactly the one an error message quotes.
//!
//! Std only, so every layer (config, state, sources, destinations, daemon) can use it.

/// What a masked value becomes.
pub const MASK: &str = "***";

/// Query parameter names whose values are secrets (compared lowercase, `-` as `_`).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "private_key",
    "sig",
    "signature",
    "sslpassword",
    "auth",
    "authorization",
    "credentials",
    "code",
    "assertion",
    "hapikey",
];

/// Whether a query parameter (or form field) named `name` holds a secret.
pub fn is_secret_param(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase().replace('-', "_");
    SECRET_PARAMS.contains(&n.as_str())
        || n.ends_with("_password")
        || n.ends_with("_secret")
        || n.ends_with("_token")
        || n.ends_with("_key")
}

/// `s` with the password of its userinfo and secret query values masked.
///
/// `postgres://ebb:p@ss@db/x?sslpassword=y` → `postgres://ebb:***@db/x?sslpassword=***`.
/// Text without `://` is returned as it is, except for secret `key=value` pairs.
pub fn url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return mask_params(s);
    };
    let rest_start = scheme_end + 3;
    let rest = &s[rest_start..];
    // The authority ends at the first `/`, `?` or `#` after the *last* `@` that precedes
    // them: a password may hold `@`, `/` or `?` unescaped in a hand-written URL, so look
    // for the last `@` before any whitespace first.
    let end_of_token = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let token = &rest[..end_of_token];
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..rest_start]);
    let after_userinfo = match token.rfind('@') {
        Some(at) => {
            let userinfo = &token[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push(':');
                    out.push_str(MASK);
                }
                // A user alone is not secret, unless it looks like a token (no password
                // means the whole userinfo may be a credential, as in `https://TOKEN@host`).
                None if userinfo.len() >= 20 => out.push_str(MASK),
                None => out.push_str(userinfo),
            }
            out.push('@');
            &token[at + 1..]
        }
        None => token,
    };
    out.push_str(&mask_params(after_userinfo));
    out.push_str(&rest[end_of_token..]);
    out
}

/// Masks the value of every `name=value` pair (separated by `?`, `&`, `;` or a space, as in
/// a libpq conninfo string) whose name is a secret parameter.
fn mask_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < s.len() {
        // The start of a pair: the text start, or just after a separator.
        let pair_end = s[i..].find(['&', ';', '?', '#', ' ']).map_or(s.len(), |p| i + p);
        let pair = &s[i..pair_end];
        match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name.rsplit('/').next().unwrap_or(name)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
        if pair_end < s.len() {
            out.push(bytes[pair_end] as char);
        }
        i = pair_end + 1;
    }
    out
}

/// `s` with every URL in it (anything of the form `scheme://…` up to whitespace or a
/// quote) passed through [`url`]; outside URLs, the values of `password=…`-like pairs (a
/// libpq conninfo string) and the word after `Bearer ` are masked too.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("://") {
        // Back up over the scheme.
        let scheme_start = rest[..p]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |q| q + 1);
        let end = rest[p..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`' || c == '<' || c == '>')
            .map_or(rest.len(), |q| p + q);
        out.push_str(&outside_urls(&rest[..scheme_start]));
        out.push_str(&url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(&outside_urls(rest));
    out
}

/// Masks, in text that is not a URL, the value of each `name=value` word whose name is
/// clearly a secret's (not the looser names [`is_secret_param`] accepts in a query, like
/// `code` or `key`, which plain messages use), and the token after `Bearer `.
fn outside_urls(s: &str) -> String {
    if !s.contains('=') && !s.contains("Bearer ") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut bearer = false;
    for (i, word) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if bearer && !word.is_empty() {
            out.push_str(MASK);
            bearer = false;
            continue;
        }
        bearer = word == "Bearer";
        match word.split_once('=') {
            Some((name, _)) if is_clear_secret(name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())) => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(word),
        }
    }
    out
}

fn is_clear_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('-', "_");
    is_secret_param(&n) && !matches!(n.as_str(), "code" | "key" | "auth" | "sig" | "signature" | "pass")
}

/// A hand-written URL whose password holds `@` made unambiguous: every `@` of the
/// authority but the last is written `%40`. (URL parsers disagree on such a URL: the WHATWG
/// one takes the last `@` as the end of the userinfo, libpq and `tokio-postgres` the first,
/// which makes the rest of the password the host, and so puts it in error messages.) Only
/// the part before the first `/`, `?` or `#` is looked at; anything else is left as is.
pub fn escape_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let start = scheme_end + 3;
    let authority_end = s[start..].find(['/', '?', '#']).map_or(s.len(), |p| start + p);
    let authority = &s[start..authority_end];
    let Some(last) = authority.rfind('@') else {
        return s.to_string();
    };
    if !authority[..last].contains('@') {
        return s.to_string();
    }
    format!(
        "{}{}{}{}",
        &s[..start],
        authority[..last].replace('@', "%40"),
        &authority[last..],
        &s[authority_end..]
    )
}

/// A personal value as ebb shows it: an email's first letter and domain (`j***@x.com`),
/// else the first character and `***`; nothing of a short value.
pub fn mask(text: &str) -> String {
    let first: String = text.chars().take(1).collect();
    match text.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => format!("{first}***@{domain}"),
        _ if text.chars().count() > 3 => format!("{first}***"),
        _ => "***".into(),
    }
}

/// A JSON value masked ([`mask`]); null stays null.
pub fn mask_json(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Null => serde_json::Value::Null,
        serde_json::Value::String(s) => serde_json::Value::String(mask(s)),
        other => serde_json::Value::String(mask(&other.to_string())),
    }
}

/// `text` with each value of the fields in `pii` of the JSON object `payload` masked where
/// it appears: a destination's message quoting the value it refused (Salesforce's
/// `Email: invalid email address: …`) is kept without it. Values under 3 characters are
/// left (they would mask unrelated text, and say little).
pub fn mask_quoted(text: &str, payload: &str, pii: &[&str]) -> String {
    if pii.is_empty() {
        return text.to_string();
    }
    let Ok(o) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(payload) else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for f in pii {
        let value = match o.get(*f) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => continue,
            Some(other) => other.to_string(),
        };
        if value.chars().count() >= 3 && out.contains(&value) {
            out = out.replace(&value, &mask(&value));
        }
    }
    out
}

/// A JSON object's text with the fields in `pii` masked; other text as it is.
pub fn mask_fields(object: &str, pii: &[&str]) -> String {
    if pii.is_empty() {
        return object.to_string();
    }
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(object) {
        Ok(mut o) => {
            for f in pii {
                if let Some(v) = o.get_mut(*f) {
                    *v = mask_json(v);
                }
            }
            serde_json::Value::Object(o).to_string()
        }
        Err(_) => object.to_string(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn personal_values_are_masked() {
        assert_eq!(mask("ada@example.com"), "a***@example.com");
        assert_eq!(mask("+1 555 0100"), "+***");
        assert_eq!(mask("Ada"), "***");
        assert_eq!(mask_json(&serde_json::json!(12345)), serde_json::json!("1***"));
        assert_eq!(mask_json(&serde_json::Value::Null), serde_json::Value::Null);
        assert_eq!(
            mask_fields(r#"{"Email":"ada@x.com","Name":"Ada"}"#, &["Email"]),
            r#"{"Email":"a***@x.com","Name":"Ada"}"#
        );
    }

    #[test]
    fn a_destination_quoting_a_personal_value_is_kept_without_it() {
        let payload = r#"{"Email":"ada@@example.com","Phone":12345678,"Name":"Ada Lovelace"}"#;
        let said = "Email: invalid email address: ada@@example.com (Phone 12345678, Ada Lovelace)";
        assert_eq!(
            mask_quoted(said, payload, &["Email", "Phone"]),
            "Email: invalid email address: a***@example.com (Phone 1***, Ada Lovelace)"
        );
        assert_eq!(mask_quoted(said, payload, &[]), said);
        assert_eq!(mask_quoted(said, "not json", &["Email"]), said);
    }

    use super::*;

    #[test]
    fn a_urls_password_is_masked() {
        assert_eq!(url("postgres://ebb:hunter2@db:5432/x"), "postgres://ebb:***@db:5432/x");
        assert_eq!(url("postgres://ebb@db/x"), "postgres://ebb@db/x");
        assert_eq!(url("https://example.com/a?b=1"), "https://example.com/a?b=1");
    }

    #[test]
    fn a_password_holding_at_slash_or_question_mark_is_masked_whole() {
        assert_eq!(url("postgres://ebb:p@ss@db/x"), "postgres://ebb:***@db/x");
        assert_eq!(url("postgres://ebb:a/b?c@db/x"), "postgres://ebb:***@db/x");
    }

    #[test]
    fn secret_query_values_are_masked() {
        assert_eq!(
            url("postgres://db/x?user=ebb&password=hunter2&sslmode=require"),
            "postgres://db/x?user=ebb&password=***&sslmode=require"
        );
        assert_eq!(
            url("https://h/p?api_key=abc;X-Token=z#frag"),
            "https://h/p?api_key=***;X-Token=***#frag"
        );
        assert_eq!(url("https://h/p?sig=abc&x=1"), "https://h/p?sig=***&x=1");
    }

    #[test]
    fn a_token_as_user_is_masked() {
        assert_eq!(url("https://ghp_abcdefghijklmnopqrstuvwxyz@h/x"), "https://***@h/x");
    }

    #[test]
    fn urls_inside_text_are_masked() {
        assert_eq!(
            text("cannot connect to postgres://ebb:s3cr3t@db/x: refused (url \"https://h/?token=t\")"),
            "cannot connect to postgres://ebb:***@db/x: refused (url \"https://h/?token=t\")"
                .replace("token=t", "token=***")
        );
        assert_eq!(text("no url here"), "no url here");
        assert_eq!(text("a://b c://u:p@d"), "a://b c://u:***@d");
    }

    #[test]
    fn secrets_outside_urls_in_text_are_masked() {
        assert_eq!(
            text("cannot connect (host=db port=5432 password=hunter2 user=ebb): refused"),
            "cannot connect (host=db port=5432 password=*** user=ebb): refused"
        );
        assert_eq!(
            text("sent Authorization: Bearer abc.def to h"),
            "sent Authorization: Bearer *** to h"
        );
        // Plain messages keep their `code=` and `key=` words.
        assert_eq!(
            text("row key=7 rejected: code=DUPLICATE"),
            "row key=7 rejected: code=DUPLICATE"
        );
        assert_eq!(
            text("`postgres://u:p@ss@word@h:1/x?password=zzz` (schema `ebb`): refused"),
            "`postgres://u:***@h:1/x?password=***` (schema `ebb`): refused"
        );
    }

    #[test]
    fn an_at_sign_in_a_password_is_escaped_for_parsers_that_stop_at_the_first() {
        assert_eq!(
            escape_userinfo("postgres://u:p@ss@word@127.0.0.1:1/x?password=zzz"),
            "postgres://u:p%40ss%40word@127.0.0.1:1/x?password=zzz"
        );
        for plain in [
            "postgres://u:pw@h/x?application_name=a@b",
            "postgres://h/x",
            "host=db password=x",
            "postgres://u:pw@h",
        ] {
            assert_eq!(escape_userinfo(plain), plain);
        }
        let parsed = url::Url::parse(&escape_userinfo("postgres://u:p@ss@h:5/x")).unwrap();
        assert_eq!((parsed.password(), parsed.host_str()), (Some("p%40ss"), Some("h")));
    }

    #[test]
    fn text_without_a_scheme_keeps_its_pairs_unless_secret() {
        assert_eq!(url("host=db password=x"), "host=db password=***");
        assert_eq!(url("a=1&b=2"), "a=1&b=2");
    }
}

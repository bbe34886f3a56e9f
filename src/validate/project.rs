//! Checks of `ebb.yaml` beyond its schema: secrets, `${VAR}` references, URLs, rate
//! limits and what each connection type needs.

use crate::config::env::{self, references};
use crate::config::project::{ConnectionSpec, ProjectSpec, SalesforceAuthFlow};
use crate::config::{is_secret_header, is_secret_key};
use crate::diagnostics::{Code, Diagnostic, SourceFile, Span};
use crate::yaml::{Node, Value as Y};
use std::path::Path;
use std::sync::Arc;

/// Secrets written literally and `${VAR}` problems anywhere in the file.
pub fn check_secrets_and_vars(root: &Node, file: &Arc<SourceFile>, diags: &mut Vec<Diagnostic>) {
    walk(root, None, false, file, diags);
}

fn walk(node: &Node, key: Option<&str>, in_headers: bool, file: &Arc<SourceFile>, diags: &mut Vec<Diagnostic>) {
    match &node.value {
        Y::Map(entries) => {
            for e in entries {
                walk(&e.value, Some(&e.key), key == Some("headers"), file, diags);
            }
        }
        Y::Seq(items) => items.iter().for_each(|i| walk(i, key, false, file, diags)),
        Y::Str(s) => {
            let span = node.pos.in_file(file);
            match references(s) {
                Err(e) => {
                    diags.push(
                        Diagnostic::new(Code::BadVariable, span.clone(), e.message)
                            .help("write `${NAME}` or `${NAME:-fallback}`; `$$` is a literal `$`"),
                    );
                }
                Ok(refs) => {
                    for r in &refs {
                        if r.default.is_none() && std::env::var(&r.name).map(|v| v.is_empty()).unwrap_or(true) {
                            diags.push(
                                Diagnostic::new(
                                    Code::UnsetVariable,
                                    span.clone(),
                                    format!("environment variable `{}` is not set", r.name),
                                )
                                .help(format!(
                                    "set it before `ebb run` (`export {}=…`), or give a fallback: `${{{}:-value}}`",
                                    r.name, r.name
                                )),
                            );
                        }
                    }
                    let Some(key) = key else { return };
                    let secret = if in_headers {
                        is_secret_header(key)
                    } else {
                        is_secret_key(key)
                    };
                    if secret && refs.is_empty() && !s.is_empty() {
                        let var = if in_headers {
                            "HEADER_TOKEN".to_string()
                        } else {
                            key.to_ascii_uppercase()
                        };
                        let example = if in_headers && s.contains(' ') {
                            format!("{} ${{{var}}}", s.split(' ').next().unwrap_or(""))
                        } else {
                            format!("${{{var}}}")
                        };
                        diags.push(
                            Diagnostic::new(
                                Code::LiteralSecret,
                                span,
                                format!("`{key}` is a secret written literally"),
                            )
                            .help(format!(
                                "keep secrets out of files: `{key}: {example}` and set `{var}` in the environment"
                            )),
                        );
                    } else if key == "url" {
                        if let Ok(u) = url::Url::parse(s) {
                            if u.password()
                                .is_some_and(|p| !p.contains("%7B") && !env::has_reference(p))
                            {
                                diags.push(
                                    Diagnostic::new(Code::LiteralSecret, span, "the URL holds a literal password")
                                        .help(
                                            "write the password as `${VAR}`: `postgres://user:${PGPASSWORD}@host/db`",
                                        ),
                                );
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Per-connection checks and the state and models locations.
pub fn check_project(
    spec: &ProjectSpec,
    root: &Node,
    file: &Arc<SourceFile>,
    project_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    let at = |path: &[&str]| -> Span { root.deepest(path).0.pos.in_file(file) };
    let key = |path: &[&str]| -> Span {
        match root.lookup(path) {
            Some((_, Some(k))) => k.in_file(file),
            _ => at(path),
        }
    };
    if let Some(url) = spec.state.as_ref().and_then(|s| s.url.as_deref()) {
        let ok = url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || env::has_reference(url);
        if !ok {
            diags.push(
                Diagnostic::new(
                    Code::BadUrl,
                    at(&["state", "url"]),
                    format!("`{url}` is not a state store URL"),
                )
                .help("use `sqlite://.ebb/state.db` (the default) or `postgres://…`"),
            );
        }
    }
    if let Some(dir) = &spec.models_dir {
        if !project_dir.join(dir).is_dir() {
            diags.push(
                Diagnostic::new(
                    Code::BadModelsDir,
                    at(&["models_dir"]),
                    format!("`{dir}` is not a directory in the project"),
                )
                .help("create it, or point `models_dir` at the folder of the model files"),
            );
        }
    }
    for (name, conn) in &spec.connections {
        let p = |field: &'static str| -> Vec<&str> { vec!["connections", name.as_str(), field] };
        match conn {
            ConnectionSpec::Postgres(c) => {
                let ok = env::has_reference(&c.url)
                    || c.url.starts_with("postgres://")
                    || c.url.starts_with("postgresql://");
                if !ok {
                    diags.push(
                        Diagnostic::new(
                            Code::BadUrl,
                            at(&p("url")),
                            "a PostgreSQL URL starts with `postgres://`",
                        )
                        .help("e.g. `postgres://user:${PGPASSWORD}@host:5432/db`"),
                    );
                }
            }
            ConnectionSpec::Snowflake(c) => {
                if c.private_key.is_some() == c.private_key_path.is_some() {
                    diags.push(
                        Diagnostic::new(Code::MissingForType, key(&["connections", name]), "a snowflake connection needs exactly one of `private_key` and `private_key_path`")
                            .help("key-pair authentication: `private_key_path: keys/rsa_key.p8` or `private_key: ${SNOWFLAKE_PRIVATE_KEY}`"),
                    );
                }
                if let Some(u) = &c.url {
                    check_url(u, &at(&p("url")), diags);
                }
            }
            ConnectionSpec::Salesforce(c) => {
                check_url(&c.instance_url, &at(&p("instance_url")), diags);
                if let Some(u) = &c.auth.login_url {
                    check_url(u, &at(&["connections", name, "auth", "login_url"]), diags);
                }
                if let Some(r) = &c.rate_limit {
                    check_rate(r, &at(&p("rate_limit")), diags);
                }
                let a = &c.auth;
                let flow = match a.flow {
                    SalesforceAuthFlow::ClientCredentials => "client_credentials",
                    SalesforceAuthFlow::JwtBearer => "jwt_bearer",
                    SalesforceAuthFlow::RefreshToken => "refresh_token",
                };
                let need: &[(&str, bool, &str)] = match a.flow {
                    SalesforceAuthFlow::ClientCredentials => &[(
                        "client_secret",
                        a.client_secret.is_some(),
                        "add `client_secret: ${SF_CLIENT_SECRET}` (the connected app's consumer secret)",
                    )],
                    SalesforceAuthFlow::JwtBearer => &[
                        (
                            "username",
                            a.username.is_some(),
                            "add `username:` with the Salesforce user the token is issued for",
                        ),
                        (
                            "private_key_path` or `private_key",
                            a.private_key.is_some() || a.private_key_path.is_some(),
                            "add `private_key_path:` (the PEM key of the app's certificate) or `private_key: ${SF_PRIVATE_KEY}`",
                        ),
                    ],
                    SalesforceAuthFlow::RefreshToken => &[(
                        "refresh_token",
                        a.refresh_token.is_some(),
                        "add `refresh_token: ${SF_REFRESH_TOKEN}`",
                    )],
                };
                for (field, present, help) in need {
                    if !present {
                        diags.push(
                            Diagnostic::new(
                                Code::MissingForType,
                                key(&["connections", name, "auth"]),
                                format!("`flow: {flow}` needs `{field}`"),
                            )
                            .help(*help),
                        );
                    }
                }
            }
            ConnectionSpec::Hubspot(c) => {
                if let Some(u) = &c.base_url {
                    check_url(u, &at(&p("base_url")), diags);
                }
                if let Some(r) = &c.rate_limit {
                    check_rate(r, &at(&p("rate_limit")), diags);
                }
            }
            ConnectionSpec::Http(c) => {
                check_url(&c.url, &at(&p("url")), diags);
                if let Some(r) = &c.rate_limit {
                    check_rate(r, &at(&p("rate_limit")), diags);
                }
            }
            ConnectionSpec::Duckdb(_) | ConnectionSpec::File(_) => {}
        }
    }
}

/// Whether `host` is a loopback name or address (where plain http is allowed).
pub fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

fn check_url(raw: &str, span: &Span, diags: &mut Vec<Diagnostic>) {
    // A URL built from variables is checked once they are known (at run time).
    let text = if env::has_reference(raw) {
        match env::expand_env(raw) {
            Ok(t) => t,
            Err(_) => return,
        }
    } else {
        raw.to_string()
    };
    match url::Url::parse(&text) {
        Err(e) => diags.push(
            Diagnostic::new(Code::BadUrl, span.clone(), format!("`{text}` is not a URL: {e}"))
                .help("write the whole URL, e.g. `https://acme.my.salesforce.com`"),
        ),
        Ok(u) => {
            let loopback = u.host().is_some_and(|h| is_loopback(&h));
            match u.scheme() {
                "https" => {}
                "http" if loopback => {}
                "http" => diags.push(
                    Diagnostic::new(Code::InsecureUrl, span.clone(), format!("`{text}` is not https"))
                        .help("credentials and customer data only travel over https; plain http is allowed on loopback hosts (the sandbox)"),
                ),
                other => diags.push(
                    Diagnostic::new(Code::BadUrl, span.clone(), format!("`{other}` is not an http(s) URL scheme"))
                        .help("use an `https://` URL"),
                ),
            }
        }
    }
}

/// `N/second|minute|hour|day`.
pub fn parse_rate(text: &str) -> Option<(u32, std::time::Duration)> {
    let (n, unit) = text.split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = match unit.trim() {
        "second" | "sec" | "s" => 1,
        "minute" | "min" | "m" => 60,
        "hour" | "h" => 3600,
        "day" | "d" => 86_400,
        _ => return None,
    };
    Some((n, std::time::Duration::from_secs(secs)))
}

fn check_rate(text: &str, span: &Span, diags: &mut Vec<Diagnostic>) {
    if parse_rate(text).is_none() {
        diags.push(
            Diagnostic::new(
                Code::BadRateLimit,
                span.clone(),
                format!("`{text}` is not a rate limit"),
            )
            .help("write a whole number of requests per `second`, `minute`, `hour` or `day`, e.g. `1000/hour`"),
        );
    }
}

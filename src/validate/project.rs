//! Checks of `ebb.yaml` beyond its schema: secrets, `${VAR}` references, URLs, rate
//! limits and what each connection type needs.

use crate::config::env::{self, references};
use crate::config::project::{ConnectionSpec, ProjectSpec, SalesforceAuthFlow};
use crate::config::{is_secret_header, is_secret_key};
use crate::diagnostics::{Code, Diagnostic, SourceFile, Span};
use crate::http::is_loopback;
use crate::http::limit::parse_rate;
use crate::yaml::{Node, Value as Y};
use std::path::Path;
use std::sync::Arc;

/// Secrets written literally and `${VAR}` problems anywhere in the file. Every value the
/// file's references expand to is added to `secrets`, so printed text can mask it.
pub fn check_secrets_and_vars(
    root: &Node,
    file: &Arc<SourceFile>,
    diags: &mut Vec<Diagnostic>,
    secrets: &mut env::Scrubber,
) {
    let mut w = Walk {
        file,
        diags,
        secrets,
        loopback: false,
    };
    let daemon_on_loopback = daemon_on_loopback(root);
    match &root.value {
        Y::Map(entries) => {
            for e in entries {
                match (&e.value.value, e.key.as_str()) {
                    (Y::Map(conns), "connections") => {
                        for c in conns {
                            w.loopback = is_loopback_connection(&c.value)
                                || (daemon_on_loopback && is_webhook_connection(&c.value));
                            w.walk(&c.value, Some(&c.key), false);
                        }
                        w.loopback = false;
                    }
                    _ => w.walk(&e.value, Some(&e.key), false),
                }
            }
        }
        _ => w.walk(root, None, false),
    }
}

/// A connection whose every URL (at least one) is written literally and points at a
/// loopback host: a local sandbox (`ebb sandbox` and its fixed credentials), where a
/// secret's fallback is allowed to be written out. Anywhere else a fallback is a secret
/// in the file.
fn is_loopback_connection(conn: &Node) -> bool {
    let Y::Map(entries) = &conn.value else { return false };
    let mut urls = Vec::new();
    for e in entries {
        match (&e.value.value, e.key.as_str()) {
            (Y::Str(u), k) if is_url_key(k) => urls.push(u.as_str()),
            (Y::Map(inner), "auth") => {
                for a in inner {
                    if let (Y::Str(u), true) = (&a.value.value, is_url_key(&a.key)) {
                        urls.push(u.as_str());
                    }
                }
            }
            _ => {}
        }
    }
    !urls.is_empty()
        && urls.iter().all(|u| {
            !env::has_reference(u)
                && url::Url::parse(u)
                    .ok()
                    .is_some_and(|u| u.host().is_some_and(|h| is_loopback(&h)))
        })
}

/// A `type: webhook` connection: what it guards is the daemon's own listener.
fn is_webhook_connection(conn: &Node) -> bool {
    let Y::Map(entries) = &conn.value else { return false };
    entries
        .iter()
        .any(|e| e.key == "type" && matches!(&e.value.value, Y::Str(t) if t == "webhook"))
}

/// Whether `daemon.listen` is a literal loopback address, or unset (the default,
/// `127.0.0.1:7878`): then a webhook secret guards an endpoint only this machine reaches,
/// as a sandbox's credentials do, and may fall back to a written one (the example
/// project's demo secret).
fn daemon_on_loopback(root: &Node) -> bool {
    let Y::Map(entries) = &root.value else { return true };
    let Some(daemon) = entries.iter().find(|e| e.key == "daemon") else {
        return true;
    };
    let Y::Map(settings) = &daemon.value.value else {
        return true;
    };
    match settings.iter().find(|e| e.key == "listen").map(|e| &e.value.value) {
        None => true,
        Some(Y::Str(addr)) => {
            !env::has_reference(addr) && addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
                || addr.starts_with("localhost:")
        }
        Some(_) => false,
    }
}

/// Keys whose values are URLs (checked for literal passwords and secret query values).
fn is_url_key(key: &str) -> bool {
    key == "url" || key.ends_with("_url")
}

struct Walk<'a> {
    file: &'a Arc<SourceFile>,
    diags: &'a mut Vec<Diagnostic>,
    secrets: &'a mut env::Scrubber,
    /// Inside a connection to a loopback sandbox (see [`is_loopback_connection`]).
    loopback: bool,
}

impl Walk<'_> {
    fn walk(&mut self, node: &Node, key: Option<&str>, in_headers: bool) {
        let file = self.file;
        match &node.value {
            Y::Map(entries) => {
                for e in entries {
                    self.walk(&e.value, Some(&e.key), key == Some("headers"));
                }
            }
            Y::Seq(items) => items.iter().for_each(|i| self.walk(i, key, false)),
            Y::Str(s) => {
                let span = node.pos.in_file(file);
                match references(s) {
                    Err(e) => {
                        self.diags.push(
                            Diagnostic::new(Code::BadVariable, span.clone(), e.kind.to_string())
                                .help("write `${NAME}` or `${NAME:-fallback}`; `$$` is a literal `$`"),
                        );
                    }
                    Ok(refs) => {
                        for r in &refs {
                            if r.default.is_none() && std::env::var(&r.name).map(|v| v.is_empty()).unwrap_or(true) {
                                self.diags.push(
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
                        let Some(key) = key else {
                            self.secrets.add_references(s, false);
                            return;
                        };
                        let secret = if in_headers {
                            is_secret_header(key)
                        } else {
                            is_secret_key(key)
                        };
                        self.secrets.add_references(s, secret || is_url_key(key));
                        if secret && !s.is_empty() {
                            if let Some(d) = literal_secret(key, s, &refs, in_headers, self.loopback, span) {
                                self.diags.push(d);
                            }
                        } else if is_url_key(key) {
                            if let Some(d) = literal_in_url(s, self.loopback, span) {
                                self.diags.push(d);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// E701 for a secret field unless its value is `${VAR}` references only (a header may
/// start with an auth scheme: `Bearer ${TOKEN}`). A fallback (`${X:-hunter2}`) or text
/// around the reference (`hunter2${X}`, `$${X}`) is written in the file, so it is as
/// literal as the secret itself.
fn literal_secret(
    key: &str,
    s: &str,
    refs: &[env::VarRef],
    in_headers: bool,
    loopback: bool,
    span: Span,
) -> Option<Diagnostic> {
    let var = if in_headers {
        "HEADER_TOKEN".to_string()
    } else {
        key.to_ascii_uppercase()
    };
    let literal = env::literal_text(s, refs);
    let scheme = literal
        .strip_suffix(' ')
        .is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let allowed_literal = literal.is_empty() || (in_headers && scheme && s.starts_with(literal.as_str()));
    let example = if in_headers && s.contains(' ') {
        format!("{} ${{{var}}}", s.split(' ').next().unwrap_or(""))
    } else {
        format!("${{{var}}}")
    };
    let help = format!("keep secrets out of files: `{key}: {example}` and set `{var}` in the environment");
    if refs.is_empty() {
        return Some(
            Diagnostic::new(
                Code::LiteralSecret,
                span,
                format!("`{key}` is a secret written literally"),
            )
            .help(help),
        );
    }
    let literal_default = refs
        .iter()
        .find(|r| r.default.as_deref().is_some_and(|d| !d.is_empty()));
    if let Some(r) = literal_default.filter(|_| !loopback) {
        return Some(
            Diagnostic::new(
                Code::LiteralSecret,
                span,
                format!("`{key}` falls back to a secret written literally (`${{{}:-…}}`)", r.name),
            )
            .help(format!(
                "drop the fallback (`${{{}}}`, or `${{{}:-}}` for an empty one): it is in the file like any literal; only a connection to a loopback sandbox may fall back to written credentials",
                r.name, r.name
            )),
        );
    }
    if !allowed_literal {
        return Some(
            Diagnostic::new(
                Code::LiteralSecret,
                span,
                format!("`{key}` holds literal text besides its `${{VAR}}`: that part of the secret is in the file"),
            )
            .help(help),
        );
    }
    None
}

/// E701 for a URL whose password, or a query parameter that carries a secret
/// (`token=`, `api_key=`, `password=`, …), is written literally or falls back to a literal.
fn literal_in_url(s: &str, loopback: bool, span: Span) -> Option<Diagnostic> {
    let rest = &s[s.find("://")? + 3..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let token = &rest[..end];
    // The authority ends at the last `@` (a password may hold `@` or `/`).
    let (userinfo, after) = match token.rfind('@') {
        Some(at) if !token[..at].contains('?') => (Some(&token[..at]), &token[at + 1..]),
        _ => (None, token),
    };
    let is_literal = |part: &str| -> bool {
        match references(part) {
            Err(_) => false, // reported as E703
            Ok(refs) => {
                !part.is_empty()
                    && (refs.is_empty()
                        || !env::literal_text(part, &refs).is_empty()
                        || (!loopback && refs.iter().any(|r| r.default.as_deref().is_some_and(|d| !d.is_empty()))))
            }
        }
    };
    let password = userinfo.and_then(|u| u.split_once(':')).map(|(_, p)| p);
    // `host:8080/path@x`: a port and a path, not a password.
    let is_port = |p: &str| {
        let digits = p.split('/').next().unwrap_or(p);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && p.len() > digits.len()
    };
    if let Some(password) = password.filter(|p| !is_port(p)) {
        if is_literal(password) {
            return Some(
                Diagnostic::new(Code::LiteralSecret, span, "the URL holds a literal password")
                    .help("write the password as `${VAR}` alone: `postgres://user:${PGPASSWORD}@host/db`"),
            );
        }
    }
    let query = after.split_once('?').map(|(_, q)| q.split('#').next().unwrap_or(q))?;
    for pair in query.split(['&', ';']) {
        if let Some((name, value)) = pair.split_once('=') {
            if crate::redact::is_secret_param(name) && is_literal(value) {
                return Some(
                    Diagnostic::new(Code::LiteralSecret, span, format!("the URL holds a literal `{name}`")).help(
                        format!(
                            "write the value as `${{VAR}}`: `{name}=${{{}}}`",
                            name.to_ascii_uppercase().replace('-', "_")
                        ),
                    ),
                );
            }
        }
    }
    None
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
                    format!("`{}` is not a state store URL", crate::redact::url(url)),
                )
                .help("use `sqlite://.ebb/state.db` (the default) or `postgres://…`"),
            );
        }
    }
    if let Some(dir) = &spec.models_dir {
        if !models_dir_inside(project_dir, dir) {
            diags.push(
                Diagnostic::new(
                    Code::BadModelsDir,
                    at(&["models_dir"]),
                    format!("`{dir}` is outside the project"),
                )
                .help("keep the model files in a folder of the project (links included): ebb reads config only inside the project directory"),
            );
        } else if !project_dir.join(dir).is_dir() {
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
    for key in ["allow_ips", "trusted_proxies"] {
        let list = spec.daemon.as_ref().and_then(|d| match key {
            "allow_ips" => d.allow_ips.as_ref(),
            _ => d.trusted_proxies.as_ref(),
        });
        for (i, c) in list.into_iter().flatten().enumerate() {
            if let Err(why) = crate::http::allow::Cidr::parse(c) {
                let idx = i.to_string();
                diags.push(
                    Diagnostic::new(Code::InvalidValue, at(&["daemon", key, idx.as_str()]), why)
                        .help(format!("e.g. `{key}: [10.0.0.0/8, 192.168.1.20]`")),
                );
            }
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
                super::hubspot::check_auth(c, key(&["connections", name]), diags);
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
            ConnectionSpec::Webhook(c) => {
                use crate::config::project::WebhookSigning;
                let hmac = c.signing == WebhookSigning::HmacSha256;
                if hmac && c.header.is_none() {
                    diags.push(
                        Diagnostic::new(
                            Code::MissingForType,
                            key(&["connections", name]),
                            "`signing: hmac_sha256` needs `header`: the header the sender puts the signature in",
                        )
                        .help("e.g. `header: X-Signature`, with `prefix: sha256=` if the value starts with it"),
                    );
                }
                let irrelevant = |field: &'static str, set: bool, why: &str, diags: &mut Vec<Diagnostic>| {
                    if set {
                        diags.push(
                            Diagnostic::new(
                                Code::IrrelevantField,
                                key(&p(field)),
                                format!("`{field}` is ignored: {why}"),
                            )
                            .help("remove it"),
                        );
                    }
                };
                if !hmac {
                    for (field, set) in [
                        ("header", c.header.is_some()),
                        ("encoding", c.encoding.is_some()),
                        ("prefix", c.prefix.is_some()),
                    ] {
                        irrelevant(field, set, "only `signing: hmac_sha256` takes it", diags);
                    }
                } else {
                    irrelevant(
                        "tolerance",
                        c.tolerance.is_some(),
                        "an `hmac_sha256` signature carries no timestamp (the inbox's event ids catch replays)",
                        diags,
                    );
                }
                if c.signing != WebhookSigning::HubspotV3 {
                    irrelevant(
                        "public_url",
                        c.public_url.is_some(),
                        "only `signing: hubspot_v3` signs the URL",
                        diags,
                    );
                }
                if let Some(u) = &c.public_url {
                    check_url(u, &at(&p("public_url")), diags);
                }
                if let Some(t) = c.tolerance.as_ref().filter(|_| !hmac) {
                    if let Err(e) = crate::schedule::parse_duration(t, "tolerance") {
                        diags.push(Diagnostic::new(Code::BadDuration, at(&p("tolerance")), e.message).help(e.help));
                    }
                }
            }
            ConnectionSpec::Duckdb(_) | ConnectionSpec::File(_) => {}
        }
    }
}

/// Whether the models directory `dir` (as written in `ebb.yaml`) is inside the project,
/// links resolved. A directory that does not exist is judged by its path as written.
pub fn models_dir_inside(project_dir: &Path, dir: &str) -> bool {
    let root = std::fs::canonicalize(project_dir).unwrap_or_else(|_| project_dir.to_path_buf());
    match std::fs::canonicalize(project_dir.join(dir)) {
        Ok(real) => real.starts_with(&root),
        Err(_) => {
            let p = Path::new(dir);
            !p.is_absolute() && !p.components().any(|c| matches!(c, std::path::Component::ParentDir))
        }
    }
}

pub(super) fn check_url(raw: &str, span: &Span, diags: &mut Vec<Diagnostic>) {
    // A URL built from variables is checked with their values, but messages show it as
    // written: the values may be secrets (a token in the path, a password).
    let expanded = env::has_reference(raw);
    let text = if expanded {
        match env::expand_env(raw) {
            Ok(t) => t,
            Err(_) => return,
        }
    } else {
        raw.to_string()
    };
    let shown = if expanded {
        format!("`{raw}` (with its variables set)")
    } else {
        format!("`{}`", crate::redact::url(raw))
    };
    match url::Url::parse(&text) {
        Err(e) => diags.push(
            Diagnostic::new(Code::BadUrl, span.clone(), format!("{shown} is not a URL: {e}"))
                .help("write the whole URL, e.g. `https://acme.my.salesforce.com`"),
        ),
        Ok(u) => {
            let loopback = u.host().is_some_and(|h| is_loopback(&h));
            match u.scheme() {
                "https" => {}
                "http" if loopback => {}
                "http" => diags.push(
                    Diagnostic::new(Code::InsecureUrl, span.clone(), format!("{shown} is not https"))
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

//! OAuth 2.0 for Salesforce (docs/salesforce-protocol.md §1): client credentials, JWT
//! bearer and refresh token. The token is cached per connection and shared by every sync on
//! it; a request answered 401 `INVALID_SESSION_ID` asks for a new one once
//! ([`Auth::renew`]) and is replayed.
//!
//! The token answer's `instance_url` decides where the token goes next, so it is checked
//! ([`trusted_instance`]): https (plain http only on loopback), no user info, and the
//! configured instance's host or a Salesforce domain (`*.salesforce.com`, `*.force.com`).
//! A `login_url` must be https too (http only on loopback). Token answers are read up to
//! [`crate::http::TOKEN_ANSWER_CAP`].

use crate::config::env;
use crate::config::project::{SalesforceAuthFlow, SalesforceConnection};
use base64::Engine;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use std::path::Path;

/// An access token and the instance it is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    /// The `instance_url` the token endpoint returned (the data API's base).
    pub instance_url: String,
}

enum Grant {
    ClientCredentials {
        client_id: String,
        client_secret: String,
    },
    Jwt {
        client_id: String,
        username: String,
        audience: String,
        key: Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>,
    },
    Refresh {
        client_id: String,
        client_secret: Option<String>,
        /// Rotated by the token endpoint when the org rotates refresh tokens.
        refresh_token: std::sync::Mutex<String>,
    },
}

/// How a connection gets its tokens, and the current one.
pub struct Auth {
    grant: Grant,
    /// Where the token endpoint is: the instance (client credentials) or the login host.
    token_url: String,
    /// The connection's configured instance, used when the token answer has none.
    instance_url: String,
    client: reqwest::Client,
    current: tokio::sync::Mutex<Option<Token>>,
    connection: String,
}

/// Why no token could be had. Never transient from the client's point of view except when
/// the endpoint could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The endpoint answered no (bad credentials, unapproved user, …): stop.
    #[error("{0}")]
    Refused(String),
    /// The endpoint could not be reached or failed (5xx): retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a connection's configuration gives no usable credentials or client (before any
/// request is made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// A setting is unusable: a variable unset, not a URL, plain http off this machine, a
    /// missing or unreadable secret. `why` names the setting.
    #[error("connection `{connection}`: {why}")]
    Setting { connection: String, why: String },
    /// The HTTP client could not be built.
    #[error("{0}")]
    Client(String),
}

impl ConnectionError {
    pub(crate) fn setting(connection: &str, why: impl Into<String>) -> ConnectionError {
        ConnectionError::Setting {
            connection: connection.to_string(),
            why: why.into(),
        }
    }

    pub(crate) fn client(e: impl std::fmt::Display) -> ConnectionError {
        ConnectionError::Client(e.to_string())
    }
}

/// Why an `instance_url` answered by the token endpoint is not trusted ([`trusted_instance`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(String);

/// `v` with its `${VAR}` references expanded; an error names the connection and the setting.
fn expand(name: &str, what: &str, v: &str) -> Result<String, ConnectionError> {
    env::expand_env(v).map_err(|e| ConnectionError::setting(name, format!("`{what}`: {e}")))
}

impl Auth {
    pub fn new(name: &str, c: &SalesforceConnection, project_dir: &Path) -> Result<Auth, ConnectionError> {
        let a = &c.auth;
        let instance_url = expand(name, "instance_url", &c.instance_url)?
            .trim_end_matches('/')
            .to_string();
        let client_id = expand(name, "client_id", &a.client_id)?;
        let secret = a
            .client_secret
            .as_deref()
            .map(|s| expand(name, "client_secret", s))
            .transpose()?;
        let login = match &a.login_url {
            Some(u) => {
                let login = expand(name, "login_url", u)?.trim_end_matches('/').to_string();
                // The credentials go there: never in clear off this machine.
                let parsed = url::Url::parse(&login)
                    .map_err(|e| ConnectionError::setting(name, format!("`login_url` is not a URL ({e})")))?;
                let loopback = parsed.host().is_some_and(|h| is_loopback(&h));
                if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                    return Err(ConnectionError::setting(
                        name,
                        "`login_url` must be https (plain http only reaches a sandbox on this machine)",
                    ));
                }
                login
            }
            None => "https://login.salesforce.com".to_string(),
        };
        let (grant, token_host) = match a.flow {
            // Client credentials must go to the My Domain host
            // (docs/salesforce-protocol.md §1).
            SalesforceAuthFlow::ClientCredentials => (
                Grant::ClientCredentials {
                    client_id,
                    client_secret: secret.ok_or_else(|| {
                        ConnectionError::setting(name, "the client_credentials flow needs `client_secret`")
                    })?,
                },
                instance_url.clone(),
            ),
            SalesforceAuthFlow::JwtBearer => {
                let pem = match (&a.private_key, &a.private_key_path) {
                    (Some(k), _) => expand(name, "private_key", k)?,
                    (None, Some(p)) => {
                        let path = project_dir.join(expand(name, "private_key_path", p)?);
                        std::fs::read_to_string(&path).map_err(|e| {
                            ConnectionError::setting(
                                name,
                                format!("cannot read the private key `{}`: {e}", path.display()),
                            )
                        })?
                    }
                    (None, None) => {
                        return Err(ConnectionError::setting(
                            name,
                            "the jwt_bearer flow needs `private_key` or `private_key_path`",
                        ))
                    }
                };
                let key = rsa::PrivateKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
                    ConnectionError::setting(
                        name,
                        format!("the private key is not an unencrypted PKCS#8 RSA key in PEM form ({e})"),
                    )
                })?;
                let username = a
                    .username
                    .as_deref()
                    .map(|u| expand(name, "username", u))
                    .transpose()?
                    .ok_or_else(|| ConnectionError::setting(name, "the jwt_bearer flow needs `username`"))?;
                (
                    Grant::Jwt {
                        client_id,
                        username,
                        audience: login.clone(),
                        key: Box::new(rsa::pkcs1v15::SigningKey::new(key)),
                    },
                    login,
                )
            }
            SalesforceAuthFlow::RefreshToken => {
                let token = a
                    .refresh_token
                    .as_deref()
                    .map(|t| expand(name, "refresh_token", t))
                    .transpose()?
                    .ok_or_else(|| ConnectionError::setting(name, "the refresh_token flow needs `refresh_token`"))?;
                (
                    Grant::Refresh {
                        client_id,
                        client_secret: secret,
                        refresh_token: std::sync::Mutex::new(token),
                    },
                    login,
                )
            }
        };
        Ok(Auth {
            grant,
            token_url: format!("{token_host}/services/oauth2/token"),
            instance_url,
            client: crate::http::client().map_err(ConnectionError::client)?,
            current: tokio::sync::Mutex::new(None),
            connection: name.to_string(),
        })
    }

    /// The current token, fetching one if there is none.
    pub async fn token(&self) -> Result<Token, AuthError> {
        let mut cur = self.current.lock().await;
        if let Some(t) = &*cur {
            return Ok(t.clone());
        }
        let t = self.fetch().await?;
        tracing::debug!(event = "token_fetched", connection = %self.connection, "Salesforce access token fetched");
        *cur = Some(t.clone());
        Ok(t)
    }

    /// A new token after `stale` was refused; if another request renewed it meanwhile, that
    /// one is returned without a second fetch.
    pub async fn renew(&self, stale: &str) -> Result<Token, AuthError> {
        let mut cur = self.current.lock().await;
        if let Some(t) = &*cur {
            if t.access_token != stale {
                return Ok(t.clone());
            }
        }
        tracing::info!(
            event = "token_renewed",
            connection = %self.connection,
            "the Salesforce access token was refused (expired or revoked): fetching a new one"
        );
        let t = self.fetch().await?;
        *cur = Some(t.clone());
        Ok(t)
    }

    /// A signed RS256 assertion (docs/salesforce-protocol.md §1: `exp` within 3 minutes).
    fn assertion(
        client_id: &str,
        username: &str,
        audience: &str,
        key: &rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    ) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"RS256"}"#);
        let exp = chrono::Utc::now().timestamp() + 170;
        let claims =
            b64.encode(serde_json::json!({"iss": client_id, "sub": username, "aud": audience, "exp": exp}).to_string());
        let input = format!("{header}.{claims}");
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64.encode(sig.to_bytes()))
    }

    async fn fetch(&self) -> Result<Token, AuthError> {
        let form: Vec<(&str, String)> = match &self.grant {
            Grant::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.clone()),
            ],
            Grant::Jwt {
                client_id,
                username,
                audience,
                key,
            } => vec![
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()),
                ("assertion", Self::assertion(client_id, username, audience, key)),
            ],
            Grant::Refresh {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let mut f = vec![
                    ("grant_type", "refresh_token".into()),
                    (
                        "refresh_token",
                        refresh_token.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                    ),
                    ("client_id", client_id.clone()),
                    ("format", "json".into()),
                ];
                if let Some(s) = client_secret {
                    f.push(("client_secret", s.clone()));
                }
                f
            }
        };
        let who = format!(
            "connection `{}`: the token endpoint {}",
            self.connection, self.token_url
        );
        // Built before the request: the serializer is not `Send`, and the future must be.
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let resp = self
            .client
            .post(&self.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("{who}: {}", crate::diagnostics::root_cause(&e))))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(AuthError::Refused(format!(
                "{who} answered {}",
                crate::http::redirect_message(status, resp.headers())
            )));
        }
        let body = match crate::http::read_text(resp, crate::http::TOKEN_ANSWER_CAP).await {
            Ok(body) => body,
            Err(e) if e.is_transient() => return Err(AuthError::Unavailable(format!("{who}: {e}"))),
            Err(e) => return Err(AuthError::Refused(format!("{who}: {e}"))),
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let msg = match (json["error"].as_str(), json["error_description"].as_str()) {
                (Some(e), Some(d)) => format!("{e}: {d}"),
                (Some(e), None) => e.to_string(),
                _ => body.chars().take(300).collect(),
            };
            let err = format!("{who} answered HTTP {}: {msg}", status.as_u16());
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                AuthError::Unavailable(err)
            } else {
                AuthError::Refused(err)
            });
        }
        let Some(access_token) = json["access_token"].as_str() else {
            return Err(AuthError::Refused(format!("{who} answered without an access_token")));
        };
        if let (Grant::Refresh { refresh_token, .. }, Some(rotated)) = (&self.grant, json["refresh_token"].as_str()) {
            // Rotation: the old token is now invalid; keep the new one for this process.
            *refresh_token.lock().unwrap_or_else(|p| p.into_inner()) = rotated.to_string();
        }
        let instance_url = match json["instance_url"].as_str() {
            Some(u) => trusted_instance(u, &self.instance_url).map_err(|why| {
                AuthError::Refused(format!(
                    "{who} answered the instance_url `{}`, which ebb does not trust: {why}",
                    crate::redact::url(u)
                ))
            })?,
            None => self.instance_url.clone(),
        };
        Ok(Token {
            access_token: access_token.to_string(),
            instance_url,
        })
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Whether `host` is Salesforce's: `salesforce.com`, `force.com` or a subdomain of them
/// (`*.my.salesforce.com`, `*.sandbox.my.salesforce.com`, `*.force.com`, …).
pub fn is_salesforce_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    ["salesforce.com", "force.com"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// The `instance_url` of a token answer, as the origin requests go to, if ebb may send the
/// token there: https (plain http only on loopback), no user info, and the configured
/// instance's host or a Salesforce domain. Otherwise why not.
pub fn trusted_instance(answered: &str, configured: &str) -> Result<String, Untrusted> {
    let u = url::Url::parse(answered.trim()).map_err(|e| Untrusted(format!("it is not a URL ({e})")))?;
    let host = u.host().ok_or_else(|| Untrusted("it has no host".into()))?;
    let loopback = is_loopback(&host);
    match u.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(Untrusted(
                "it is plain http off this machine, where the token would travel in clear".into(),
            ))
        }
        other => return Err(Untrusted(format!("it is a `{other}` URL, not https"))),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(Untrusted("it carries user info".into()));
    }
    let host_text = u.host_str().unwrap_or_default().to_ascii_lowercase();
    let configured_host = url::Url::parse(configured)
        .ok()
        .and_then(|c| c.host_str().map(str::to_ascii_lowercase));
    if configured_host.as_deref() != Some(host_text.as_str()) && (loopback || !is_salesforce_host(&host_text)) {
        return Err(Untrusted(format!(
            "its host `{host_text}` is neither the connection's `instance_url` host nor a Salesforce domain \
             (*.salesforce.com, *.force.com)"
        )));
    }
    Ok(u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls_from_token_answers() {
        let mine = "https://acme.my.salesforce.com";
        for ok in [
            "https://acme.my.salesforce.com",
            "https://acme.my.salesforce.com/",
            "https://other.my.salesforce.com",
            "https://acme--uat.sandbox.my.salesforce.com",
            "https://na1.salesforce.com",
            "https://acme.lightning.force.com",
        ] {
            assert!(trusted_instance(ok, mine).is_ok(), "{ok}");
        }
        assert_eq!(
            trusted_instance("https://acme.my.salesforce.com/", mine).unwrap(),
            "https://acme.my.salesforce.com"
        );
        for bad in [
            "http://acme.my.salesforce.com",
            "https://evil.example",
            "https://salesforce.com.evil.example",
            "https://evilsalesforce.com",
            "https://user:pw@acme.my.salesforce.com",
            "ftp://acme.my.salesforce.com",
            "http://127.0.0.1:9",
            "not a url",
        ] {
            assert!(trusted_instance(bad, mine).is_err(), "{bad}");
        }
        let sandbox = "http://127.0.0.1:8787";
        assert!(trusted_instance("http://127.0.0.1:8787", sandbox).is_ok());
        assert!(trusted_instance("http://127.0.0.1:9999", sandbox).is_ok());
        assert!(trusted_instance("http://localhost:8787", sandbox).is_err());
        assert!(trusted_instance("http://evil.example", sandbox).is_err());
        assert!(trusted_instance("https://acme.my.salesforce.com", sandbox).is_ok());
    }
}

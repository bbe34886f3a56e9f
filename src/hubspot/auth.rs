//! A HubSpot connection's credentials: a private app's access token, sent as
//! `Authorization: Bearer`.

use super::client::CallError;
use crate::config::env::expand_env;
use crate::config::project::HubspotConnection;
use std::sync::atomic::AtomicU64;

/// How a connection authenticates.
pub(crate) enum Auth {
    /// A private app's token: it does not expire, so a 401 is final.
    Token(String),
}

impl Auth {
    pub(crate) fn new(
        _name: &str,
        c: &HubspotConnection,
        _base: &str,
        _client: reqwest::Client,
    ) -> Result<Auth, String> {
        let token = expand_env(&c.token).map_err(|e| format!("`token`: {e}"))?;
        if token.is_empty() {
            return Err("`token` is empty".into());
        }
        Ok(Auth::Token(token))
    }

    /// The token to send now.
    pub(crate) async fn token(&self, _calls: &AtomicU64) -> Result<String, CallError> {
        match self {
            Auth::Token(t) => Ok(t.clone()),
        }
    }

    /// Whether a refused token can be replaced by another.
    pub(crate) fn renewable(&self) -> bool {
        false
    }

    /// `token` was refused: the next [`Auth::token`] fetches a new one.
    pub(crate) fn stale(&self, _token: &str) {}
}

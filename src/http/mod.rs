//! The HTTP client every connector shares: rustls with the ring provider (installed once),
//! the platform's certificate store, gzip, and timeouts; and the rules every answer read
//! through it follows.
//!
//! - **No redirects.** The client never follows a 3xx: a redirected `POST` would become a
//!   `GET` without its body (and look like a success), and a `307`/`308` would carry the
//!   records and the connection's credentials to whatever host the `Location` names. Each
//!   caller turns a 3xx into an error naming the `Location` ([`redirect_message`]).
//! - **Bounded answers.** An answer's body is read chunk by chunk, after gzip decoding, and
//!   the read stops with an error once it passes a cap ([`read_body`]): data answers
//!   [`DATA_ANSWER_CAP`], token answers [`TOKEN_ANSWER_CAP`]. An endless body or a gzip bomb
//!   costs at most the cap in memory.
//! - **One origin.** A path or URL an answer hands back (a next page, a status URL, an
//!   upload URL) is joined to the connection's base only when the result stays on the
//!   base's origin ([`join_same_origin`]), so the credentials sent with it go nowhere else.
//! - **https only**, except to a loopback host ([`is_loopback`]), where plain http is allowed
//!   (the sandbox).
//!
//! [`limit`] holds the per-connection concurrency and rate limits. They live here, beside
//! the client, rather than in `destination` or `salesforce`, because every connector that
//! makes requests takes its permits (the `http` destination and the Salesforce connection
//! layer today, the Salesforce source too), and a rate limit is a property of the
//! connection, whichever direction the data flows.

pub mod allow;
pub mod limit;
pub mod retry;

use std::sync::Once;
use std::time::Duration;

/// The most a data answer (a destination's reply, a Salesforce API answer, a Snowflake
/// result or partition) may hold once decoded: 64 MiB.
pub const DATA_ANSWER_CAP: usize = 64 * 1024 * 1024;
/// The most a token endpoint's answer may hold once decoded: 64 KiB (Salesforce's is under
/// 2 KB).
pub const TOKEN_ANSWER_CAP: usize = 64 * 1024;

/// Whether `host` is a loopback name or address (where plain http is allowed).
pub fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Whether a host name or address as written (`127.0.0.1`, `localhost`, `::1`) is loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    match h.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => is_loopback(&url::Host::Domain(h)),
    }
}

/// The HTTP client could not be built (its TLS configuration failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[source] reqwest::Error);

/// A client for talking to warehouses and CRMs. It never follows redirects.
pub fn client() -> Result<reqwest::Client, ClientError> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .gzip(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(ClientError)
}

/// Why an answer's body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body passed `cap` bytes (after decoding); reading stopped there.
    TooLarge { cap: usize },
    /// The transfer failed part way (a reset connection, a timeout, a corrupt encoding):
    /// worth retrying.
    Transfer(reqwest::Error),
}

impl BodyError {
    /// Whether the failure is worth a retry (a transfer error; never an oversized body).
    pub fn is_transient(&self) -> bool {
        matches!(self, BodyError::Transfer(_))
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { cap } => write!(
                f,
                "the answer is larger than {} (after decoding); ebb stopped reading it",
                size(*cap as u64)
            ),
            BodyError::Transfer(e) => write!(
                f,
                "the answer's body did not arrive whole: {}",
                crate::diagnostics::root_cause(e)
            ),
        }
    }
}

/// `64 MiB`, `512 KiB`, `100 bytes`.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Reads the body of `resp` (decoded) chunk by chunk, handing each chunk to `sink`;
/// stops with [`BodyError::TooLarge`] as soon as more than `cap` bytes arrived.
pub async fn stream_body(
    mut resp: reqwest::Response,
    cap: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize, BodyError> {
    let mut total = 0usize;
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transfer)? {
        total = total.saturating_add(chunk.len());
        if total > cap {
            return Err(BodyError::TooLarge { cap });
        }
        sink(&chunk);
    }
    Ok(total)
}

/// The body of `resp` (decoded), at most `cap` bytes of it.
pub async fn read_body(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    // A declared length past the cap is refused before anything is read (without gzip the
    // length is the decoded one; with it, the decoded body is at least as long).
    if let Some(len) = resp.content_length() {
        if len > cap as u64 {
            return Err(BodyError::TooLarge { cap });
        }
    }
    let mut body = Vec::new();
    stream_body(resp, cap, |chunk| body.extend_from_slice(chunk)).await?;
    Ok(body)
}

/// The body of `resp` as text (invalid UTF-8 replaced), at most `cap` bytes of it.
pub async fn read_text(resp: reqwest::Response, cap: usize) -> Result<String, BodyError> {
    let body = read_body(resp, cap).await?;
    Ok(match String::from_utf8(body) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// How much of an error answer is read to quote from: 64 KiB.
pub const ERROR_ANSWER_CAP: usize = 64 * 1024;

/// At most the first `cap` bytes of the body of `resp` as text (for quoting an error
/// answer); the rest is not read. A transfer error ends the text where it happened.
pub async fn read_prefix(mut resp: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `redirected to <Location>` for a 3xx answer, which ebb never follows.
pub fn redirect_message(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> String {
    let location = headers
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match location {
        Some(l) => format!(
            "HTTP {} redirects to `{}`; ebb does not follow redirects (they would drop the request's body or \
             send it and its credentials elsewhere): configure the final URL",
            status.as_u16(),
            crate::redact::url(&l)
        ),
        None => format!(
            "HTTP {} is a redirect without a Location; ebb does not follow redirects",
            status.as_u16()
        ),
    }
}

/// `base` (an origin, `scheme://host[:port]`, possibly with a path) joined with `path`
/// (`/services/…`, or a full URL), when the result is on `base`'s origin and carries no
/// user info; `None` otherwise.
pub fn join_same_origin(base: &str, path: &str) -> Option<url::Url> {
    let parsed = url::Url::parse(base).ok()?;
    let joined = if path.starts_with('/') && !path.starts_with("//") {
        url::Url::parse(&format!("{}{path}", base.trim_end_matches('/'))).ok()?
    } else {
        url::Url::parse(path).ok()?
    };
    (joined.origin() == parsed.origin() && joined.username().is_empty() && joined.password().is_none())
        .then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_stay_on_the_origin() {
        let base = "https://acme.my.salesforce.com";
        assert_eq!(
            join_same_origin(base, "/services/data/v62.0/query?q=x")
                .unwrap()
                .as_str(),
            "https://acme.my.salesforce.com/services/data/v62.0/query?q=x"
        );
        assert!(join_same_origin(base, "https://acme.my.salesforce.com/services/x").is_some());
        for bad in [
            "//evil.example/x",
            "https://evil.example/services",
            "http://acme.my.salesforce.com/services",
            "https://acme.my.salesforce.com:8443/x",
            "https://user:pw@acme.my.salesforce.com/x",
            "@evil.example/x",
            "services/x",
        ] {
            assert!(join_same_origin(base, bad).is_none(), "{bad}");
        }
        // A base with userinfo tricks: the path cannot move the host.
        assert_eq!(
            join_same_origin("http://127.0.0.1:8787", "/@evil.example/x")
                .unwrap()
                .host_str(),
            Some("127.0.0.1")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size(DATA_ANSWER_CAP as u64), "64 MiB");
        assert_eq!(size(TOKEN_ANSWER_CAP as u64), "64 KiB");
        assert_eq!(size(100), "100 bytes");
    }
}

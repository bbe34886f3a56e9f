//! The `http` destination: a generic JSON webhook.
//!
//! Each batch is one `POST` of
//! `{"model": …, "run_id": …, "operation": "upsert|update|insert|delete|clear", "records": […]}`
//! (docs/delivery.md §3) with `Content-Type: application/json` and the connection's
//! headers. The answer decides each record's fate:
//!
//! - 2xx with `{"results": [{"success": bool, "error"?, "id"?, "code"?}, …]}`, one per record
//!   in request order: record by record (a list of the wrong length is a fatal error);
//!   a `results` that is not a list, or an item that is not an object with a boolean
//!   `success`, is a fatal error too: such an answer confirms nothing;
//! - any other 2xx (an empty body included): every record confirmed;
//! - a 3xx: fatal, naming the `Location` (redirects are never followed, [`crate::http`]);
//! - a body that does not arrive whole (reset mid-body): transient; a body larger than
//!   [`crate::http::DATA_ANSWER_CAP`] once decoded: fatal, read no further;
//! - 408, 425, 429, 5xx, a timeout or a connection error: transient, with the
//!   `Retry-After` (delta-seconds or HTTP-date) when there is one;
//! - any other status: fatal, quoting the start of the body.
//!
//! Every attempt first takes a permit from the connection's shared [`Limits`]. Retrying is
//! [`super::retry`]'s business, not this module's. Messages show the URL as configured, so
//! a secret passed as `${VAR}` in it is not printed.

use super::{Batch, OpenError, Outcome, SendError};
use crate::config::env::expand_env;
use crate::config::project::HttpConnection;
use crate::http::limit::Limits;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Records per request unless the connection says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Requests in flight unless the connection says otherwise.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
/// Seconds before a request is abandoned unless the connection says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// How much of an error answer's body a message quotes.
const BODY_QUOTE_CHARS: usize = 300;

/// An open `http` connection.
#[derive(Debug)]
pub struct HttpDestination {
    name: String,
    /// The URL as configured (references unexpanded), for messages.
    shown_url: String,
    /// The expanded URL, checked by [`HttpDestination::new`].
    url: String,
    /// Boxed, like the URL kept as text, to keep [`super::Destination`] small.
    headers: Box<HeaderMap>,
    batch_size: usize,
    max_concurrency: usize,
    timeout: Duration,
    limits: Arc<Limits>,
    client: reqwest::Client,
}

impl HttpDestination {
    /// Resolves connection `name`: expands `${VAR}` in the URL and header values, checks
    /// them, and joins the connection's shared limits.
    pub fn new(name: &str, c: &HttpConnection) -> Result<Self, OpenError> {
        let shown_url = c.url.clone();
        let expanded = expand_env(&c.url).map_err(|e| OpenError::setting(name, format!("`url`: {e}")))?;
        let url = reqwest::Url::parse(&expanded)
            .map_err(|e| OpenError::setting(name, format!("`{shown_url}` is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if url.host().is_some_and(|h| crate::http::is_loopback(&h)) => {}
            "http" => {
                return Err(OpenError::setting(
                    name,
                    format!("`{shown_url}` uses plain http, which is only allowed on loopback hosts; use https"),
                ))
            }
            other => {
                return Err(OpenError::setting(
                    name,
                    format!("`{shown_url}` is a `{other}` URL, not http(s)"),
                ))
            }
        }

        let mut headers = HeaderMap::new();
        for (key, value) in &c.headers {
            let header = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| OpenError::setting(name, format!("header `{key}`: not a valid header name")))?;
            let expanded = expand_env(value).map_err(|e| OpenError::setting(name, format!("header `{key}`: {e}")))?;
            // The value is not quoted: it may hold a secret.
            let mut v = HeaderValue::from_str(&expanded).map_err(|_| {
                OpenError::setting(name, format!("header `{key}`: the value is not a valid header value"))
            })?;
            v.set_sensitive(crate::config::env::has_reference(value));
            headers.insert(header, v);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }

        let rate = match &c.rate_limit {
            Some(text) => Some(crate::http::limit::parse_rate(text).ok_or_else(|| {
                OpenError::setting(
                    name,
                    format!("`rate_limit: {text}` is not a rate limit (write e.g. `1000/hour`)"),
                )
            })?),
            None => None,
        };
        let max_concurrency = c.max_concurrency.map_or(DEFAULT_MAX_CONCURRENCY, |n| n.max(1) as usize);
        let client = crate::http::client().map_err(|e| OpenError::setting(name, e.to_string()))?;
        Ok(HttpDestination {
            name: name.to_string(),
            shown_url,
            url: url.into(),
            headers: Box::new(headers),
            batch_size: c.batch_size.map_or(DEFAULT_BATCH_SIZE, |n| n.max(1) as usize),
            max_concurrency,
            timeout: Duration::from_secs(c.timeout_secs.map_or(DEFAULT_TIMEOUT_SECS, u64::from)),
            limits: Limits::shared(name, rate, max_concurrency),
            client,
        })
    }

    /// Records per request.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Requests in flight at once on this connection.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// POSTs `batch` once and reads the answer.
    pub async fn send(&self, batch: &Batch) -> Result<Vec<Outcome>, SendError> {
        let body = request_body(batch);
        let _permit = self.limits.acquire().await;
        let response = self
            .client
            .post(&self.url)
            .headers(HeaderMap::clone(&self.headers))
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        if status.is_redirection() {
            // Never followed (crate::http): a 301/302 would turn the POST into a GET without
            // the records, a 307/308 would carry them and the headers elsewhere.
            return Err(SendError::Fatal(format!(
                "POST {} answered {}",
                self.target(),
                crate::http::redirect_message(status, response.headers())
            )));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        if !status.is_success() {
            let text = crate::http::read_prefix(response, crate::http::ERROR_ANSWER_CAP).await;
            return self.interpret(status, retry_after, &text, batch.records.len());
        }
        let text = match crate::http::read_text(response, crate::http::DATA_ANSWER_CAP).await {
            Ok(text) => text,
            Err(e) => {
                let message = format!("POST {}: HTTP {status}, but {e}", self.target());
                return Err(if e.is_transient() {
                    SendError::Transient {
                        message,
                        retry_after: None,
                    }
                } else {
                    SendError::Fatal(message)
                });
            }
        };
        self.interpret(status, retry_after, &text, batch.records.len())
    }

    /// Where a message says the request went.
    fn target(&self) -> String {
        format!("{} (connection `{}`)", self.shown_url, self.name)
    }

    fn request_error(&self, e: reqwest::Error) -> SendError {
        let e = e.without_url();
        let message = if e.is_timeout() {
            format!(
                "POST {} timed out after {} s",
                self.target(),
                self.timeout.as_secs_f64()
            )
        } else if e.is_connect() {
            format!("cannot connect to {}: {}", self.target(), chain(&e))
        } else if e.is_builder() {
            return SendError::Fatal(format!("cannot build the request to {}: {}", self.target(), chain(&e)));
        } else {
            format!("POST {} failed: {}", self.target(), chain(&e))
        };
        SendError::Transient {
            message,
            retry_after: None,
        }
    }

    /// The outcomes of an answered request.
    fn interpret(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &str,
        records: usize,
    ) -> Result<Vec<Outcome>, SendError> {
        if !status.is_success() {
            let message = format!("HTTP {status} from {}{}", self.target(), quote(body));
            let transient = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
            return Err(if transient {
                SendError::Transient { message, retry_after }
            } else {
                SendError::Fatal(message)
            });
        }
        let confirm_all = || vec![Outcome::Confirmed { record_id: None }; records];
        // The usual answer, read without building a document; anything unusual takes the
        // general path below, which says what is wrong with it.
        if let Ok(Answer { results }) = serde_json::from_str::<Answer>(body) {
            if results.len() == records {
                let text = |v: Option<Value>| match v {
                    Some(Value::String(s)) => Some(s),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                return Ok(results
                    .into_iter()
                    .map(|r| {
                        if r.success {
                            Outcome::Confirmed { record_id: text(r.id) }
                        } else {
                            Outcome::Rejected {
                                code: text(r.code).unwrap_or_else(|| "rejected".to_string()),
                                message: text(r.error).unwrap_or_else(|| "rejected without a reason".to_string()),
                            }
                        }
                    })
                    .collect());
            }
        }
        let results = match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(mut answer)) => match answer.remove("results") {
                Some(Value::Array(results)) => results,
                // A `results` that is not a list is not the protocol: it confirms nothing.
                Some(other) => {
                    return Err(SendError::Fatal(format!(
                        "{} answered `results` as {}, not a list of one result per record; nothing is confirmed",
                        self.target(),
                        json_kind(&other)
                    )))
                }
                None => return Ok(confirm_all()),
            },
            _ => return Ok(confirm_all()),
        };
        if results.len() != records {
            return Err(SendError::Fatal(format!(
                "{} answered {} results for {} records; `results` must hold one per record, in order",
                self.target(),
                results.len(),
                records
            )));
        }
        results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if !r.is_object() {
                    return Err(SendError::Fatal(format!(
                        "{} answered result {} of {records} as {}, not an object with a boolean `success`",
                        self.target(),
                        i + 1,
                        json_kind(r)
                    )));
                }
                let success = r.get("success").and_then(Value::as_bool).ok_or_else(|| {
                    SendError::Fatal(format!(
                        "{} answered a result without a boolean `success` (result {} of {records})",
                        self.target(),
                        i + 1
                    ))
                })?;
                let text = |field: &str| match r.get(field) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                Ok(if success {
                    Outcome::Confirmed { record_id: text("id") }
                } else {
                    Outcome::Rejected {
                        code: text("code").unwrap_or_else(|| "rejected".to_string()),
                        message: text("error").unwrap_or_else(|| "rejected without a reason".to_string()),
                    }
                })
            })
            .collect()
    }
}

/// `a string`, `a number`, … for messages about a JSON value's kind.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A `results` answer, as most sinks give it.
#[derive(serde::Deserialize)]
struct Answer {
    results: Vec<AnswerItem>,
}

#[derive(serde::Deserialize)]
struct AnswerItem {
    success: bool,
    id: Option<Value>,
    code: Option<Value>,
    error: Option<Value>,
}

/// The request body. Payloads are JSON object texts already and go in verbatim.
pub fn request_body(batch: &Batch) -> String {
    let size: usize = batch.records.iter().map(|r| r.payload.len() + 1).sum();
    let mut body = String::with_capacity(size + batch.model.len() + 80);
    body.push_str("{\"model\":");
    body.push_str(&Value::String(batch.model.clone()).to_string());
    body.push_str(",\"run_id\":");
    body.push_str(&batch.run_id.to_string());
    body.push_str(",\"operation\":\"");
    body.push_str(batch.op.as_str());
    body.push_str("\",\"records\":[");
    for (i, r) in batch.records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&r.payload);
    }
    body.push_str("]}");
    body
}

/// A `Retry-After` value: delta-seconds or an HTTP-date (a date in the past is zero).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

/// `: <the start of body>` on one line, or nothing for an empty body.
fn quote(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let mut quoted: String = body
        .chars()
        .take(BODY_QUOTE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().nth(BODY_QUOTE_CHARS).is_some() {
        quoted.push('…');
    }
    format!(": {quoted}")
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{Op, Record};

    fn connection(url: &str) -> HttpConnection {
        serde_json::from_value(serde_json::json!({ "url": url })).unwrap()
    }

    fn destination() -> HttpDestination {
        HttpDestination::new("hook", &connection("http://127.0.0.1:9/hook")).unwrap()
    }

    fn batch(payloads: &[&str]) -> Batch {
        Batch {
            model: "users \"v2\"".into(),
            run_id: 42,
            op: Op::Clear,
            key_field: "id".into(),
            records: payloads
                .iter()
                .enumerate()
                .map(|(i, p)| Record {
                    key: i.to_string(),
                    payload: p.to_string(),
                    record_id: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_body_holds_payloads_verbatim() {
        let body = request_body(&batch(&[r#"{"id":1,"b":1.50}"#, r#"{"id":"2","b":null}"#]));
        assert_eq!(
            body,
            r#"{"model":"users \"v2\"","run_id":42,"operation":"clear","records":[{"id":1,"b":1.50},{"id":"2","b":null}]}"#
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["records"].as_array().unwrap().len(), 2);
        assert_eq!(
            request_body(&batch(&[])),
            r#"{"model":"users \"v2\"","run_id":42,"operation":"clear","records":[]}"#
        );
    }

    #[test]
    fn defaults() {
        let d = destination();
        assert_eq!((d.batch_size(), d.max_concurrency()), (100, 4));
        assert_eq!(d.timeout, Duration::from_secs(30));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn statuses_are_transient_or_fatal() {
        let d = destination();
        for code in [408, 425, 429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            match d.interpret(status, Some(Duration::from_secs(3)), "busy", 1) {
                Err(SendError::Transient { message, retry_after }) => {
                    assert_eq!(retry_after, Some(Duration::from_secs(3)));
                    assert!(message.starts_with(&format!("HTTP {code}")), "{message}");
                    assert!(
                        message.contains("http://127.0.0.1:9/hook (connection `hook`): busy"),
                        "{message}"
                    );
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        for code in [400, 401, 403, 404, 409, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(d.interpret(status, None, "", 1), Err(SendError::Fatal(_))),
                "{code}"
            );
        }
    }

    #[test]
    fn error_bodies_are_quoted_briefly() {
        let d = destination();
        let long = format!("line one\nline two {}", "x".repeat(1000));
        let Err(SendError::Fatal(message)) = d.interpret(StatusCode::BAD_REQUEST, None, &long, 1) else {
            panic!("400 is fatal")
        };
        assert!(message.contains(": line one line two xxx"), "{message}");
        assert!(message.ends_with('…'), "{message}");
        assert!(message.chars().count() < 400, "{message}");
        let Err(SendError::Fatal(message)) = d.interpret(StatusCode::FORBIDDEN, None, " ", 1) else {
            panic!("403 is fatal")
        };
        assert_eq!(
            message,
            "HTTP 403 Forbidden from http://127.0.0.1:9/hook (connection `hook`)"
        );
    }

    #[test]
    fn answers_without_results_confirm_everything() {
        let d = destination();
        let all = vec![Outcome::Confirmed { record_id: None }; 2];
        for body in ["", "ok", "[1,2]", r#"{"received":2}"#] {
            assert_eq!(d.interpret(StatusCode::OK, None, body, 2).unwrap(), all, "{body:?}");
        }
        assert_eq!(d.interpret(StatusCode::NO_CONTENT, None, "", 2).unwrap(), all);
    }

    #[test]
    fn results_decide_record_by_record() {
        let d = destination();
        let body = r#"{"results":[
            {"success":true,"id":"a1"},
            {"success":false,"error":"bad email","code":"INVALID_EMAIL"},
            {"success":true,"id":7},
            {"success":false}
        ]}"#;
        assert_eq!(
            d.interpret(StatusCode::OK, None, body, 4).unwrap(),
            vec![
                Outcome::Confirmed {
                    record_id: Some("a1".into())
                },
                Outcome::Rejected {
                    code: "INVALID_EMAIL".into(),
                    message: "bad email".into()
                },
                Outcome::Confirmed {
                    record_id: Some("7".into())
                },
                Outcome::Rejected {
                    code: "rejected".into(),
                    message: "rejected without a reason".into()
                },
            ]
        );
        match d.interpret(StatusCode::OK, None, r#"{"results":[{"success":true}]}"#, 2) {
            Err(SendError::Fatal(m)) => assert!(m.contains("answered 1 results for 2 records"), "{m}"),
            other => panic!("{other:?}"),
        }
        match d.interpret(StatusCode::OK, None, r#"{"results":[{"ok":true}]}"#, 1) {
            Err(SendError::Fatal(m)) => assert!(m.contains("without a boolean `success`"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configuration_errors_name_the_connection() {
        let open = |c: &HttpConnection| HttpDestination::new("crm", c).unwrap_err().to_string();
        let err = open(&connection("http://example.com/hook"));
        assert!(
            err.starts_with("connection `crm`:") && err.contains("plain http"),
            "{err}"
        );
        let err = open(&connection("not a url"));
        assert!(err.contains("`not a url` is not a URL"), "{err}");

        let mut c = connection("https://example.com/${EBB_TEST_SURELY_UNSET_URL_VAR}");
        let err = open(&c);
        assert!(err.contains("EBB_TEST_SURELY_UNSET_URL_VAR` is not set"), "{err}");

        c.url = "https://example.com/hook".into();
        c.headers
            .insert("Authorization".into(), "Bearer ${EBB_TEST_SURELY_UNSET_TOKEN}".into());
        let err = open(&c);
        assert_eq!(
            err,
            "connection `crm`: header `Authorization`: environment variable `EBB_TEST_SURELY_UNSET_TOKEN` is not set"
        );

        c.headers.clear();
        c.rate_limit = Some("lots".into());
        let err = open(&c);
        assert!(err.starts_with("connection `crm`: `rate_limit: lots`"), "{err}");
    }
}

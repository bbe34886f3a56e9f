//! ebb's log: `tracing` events written one line each on standard error, human-readable
//! with a UTC timestamp, or one JSON object per line (`--log-format json`).
//!
//! Code logs with the `tracing` macros and names each event with an `event` field:
//! `tracing::info!(event = "run_finished", model, sent, "run finished")`. The human form
//! is `2026-05-04T10:00:00.123Z INFO  run finished model=contacts sent=12 …`; the JSON
//! form is `{"ts": …, "level": "info", "event": "run_finished", "msg": …, "model": …}`.
//! The fields of the spans an event happens in come after its own (a run's span carries
//! `model` and `run_id`, so a retry deep in a destination says which run it belongs to).
//! A field named `json.NAME` holds JSON text and is written as that JSON value under
//! `NAME` (the diagnostics of a rejected reload, say).
//!
//! Which events are written is chosen like `RUST_LOG`: the `EBB_LOG` variable (else
//! `RUST_LOG`) holds directives such as `info,ebb::destination=debug`; without either, the
//! level given on the command line applies to ebb's own events and `warn` to libraries'.
//! Each line is written with one call on the locked stream, so lines of concurrent runs
//! never interleave. Every line goes through [`crate::redact::text`]: the message and
//! every text in the fields, so a URL in an error chain (a state store that cannot be
//! reached, a source that refused) never shows its password.

use serde_json::{Map, Value};
use std::fmt;
use std::io::Write;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL message key=value …`
    Human,
    /// One JSON object per line.
    Json,
}

/// How much is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn of(level: &tracing::Level) -> Level {
        match *level {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            _ => Level::Debug,
        }
    }
}

/// Installs the process's log: `level` for ebb's events unless `EBB_LOG` or `RUST_LOG`
/// says otherwise. Returns a warning to show when those directives are not valid (the
/// default is used then). A second call does nothing.
pub fn init(format: LogFormat, level: Level) -> Option<String> {
    let default = format!("warn,ebb={}", level.as_str());
    let given = std::env::var("EBB_LOG")
        .ok()
        .map(|v| ("EBB_LOG", v))
        .or_else(|| std::env::var("RUST_LOG").ok().map(|v| ("RUST_LOG", v)))
        .filter(|(_, v)| !v.trim().is_empty());
    let (filter, warning) = match given {
        None => (EnvFilter::new(&default), None),
        Some((var, v)) => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(&default),
                Some(format!("`{var}` is not a valid log filter ({e}); using `{default}`")),
            ),
        },
    };
    if tracing_subscriber::registry()
        .with(Lines { format }.with_filter(filter))
        .try_init()
        .is_ok()
    {
        let _ = FORMAT.set(format);
    }
    warning
}

/// The format [`init`] installed.
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Whether the log is JSON lines (a field can then be written as an array, where a human
/// line wants one readable text).
pub fn json_output() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// The layer that writes the lines.
struct Lines {
    format: LogFormat,
}

impl<S> Layer<S> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = gather(event, &ctx);
        let meta = event.metadata();
        let name = fields.event.take().unwrap_or_else(|| meta.target().to_string());
        let msg = fields.message.take().unwrap_or_default();
        let pairs: Vec<(&str, Value)> = fields.pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let mut text = line(
            self.format,
            chrono::Utc::now(),
            Level::of(meta.level()),
            &name,
            &msg,
            &pairs,
        );
        text.push('\n');
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
}

/// An event's fields, then those of the spans it happens in, innermost first (a nearer
/// span's field wins over an outer one's; the event's own win over all).
fn gather<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Fields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut fields = Fields::default();
    event.record(&mut fields);
    for span in ctx.event_scope(event).into_iter().flatten() {
        if let Some(outer) = span.extensions().get::<Fields>() {
            for (k, v) in &outer.pairs {
                if !fields.pairs.iter().any(|(have, _)| have == k) {
                    fields.pairs.push((k.clone(), v.clone()));
                }
            }
        }
    }
    fields
}

/// The fields of an event or a span, in the order given.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    event: Option<String>,
    pairs: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        match (name, value) {
            ("message", v) => self.message = Some(plain(v)),
            ("event", v) => self.event = Some(plain(v)),
            (name, v) => {
                let (name, v) = match name.strip_prefix("json.") {
                    Some(n) => (n, serde_json::from_str(&plain(v.clone())).unwrap_or(v)),
                    None => (name, v),
                };
                match self.pairs.iter_mut().find(|(k, _)| k == name) {
                    Some(slot) => slot.1 = v,
                    None => self.pairs.push((name.to_string(), v)),
                }
            }
        }
    }
}

fn plain(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

/// The text of one event, without the line break.
pub fn line(
    format: LogFormat,
    ts: chrono::DateTime<chrono::Utc>,
    level: Level,
    event: &str,
    msg: &str,
    fields: &[(&str, Value)],
) -> String {
    let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let msg = &crate::redact::text(msg);
    let fields: Vec<(&str, Value)> = fields.iter().map(|(k, v)| (*k, redacted(v))).collect();
    let fields = fields.as_slice();
    match format {
        LogFormat::Json => {
            let mut o = Map::new();
            o.insert("ts".into(), Value::String(ts));
            o.insert("level".into(), Value::String(level.as_str().into()));
            o.insert("event".into(), Value::String(event.into()));
            o.insert("msg".into(), Value::String(msg.into()));
            for (k, v) in fields {
                if !v.is_null() && !o.contains_key(*k) {
                    o.insert((*k).to_string(), v.clone());
                }
            }
            Value::Object(o).to_string()
        }
        LogFormat::Human => {
            let mut s = format!("{ts} {:<5} {}", level.as_str().to_uppercase(), one_line(msg));
            for (k, v) in fields {
                let text = match v {
                    Value::Null => continue,
                    Value::String(t) => quote(t),
                    other => quote(&other.to_string()),
                };
                s.push(' ');
                s.push_str(k);
                s.push('=');
                s.push_str(&text);
            }
            s
        }
    }
}

/// `v` with every string in it passed through [`crate::redact::text`].
pub(crate) fn redacted(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(crate::redact::text(s)),
        Value::Array(a) => Value::Array(a.iter().map(redacted).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), redacted(v))).collect()),
        other => other.clone(),
    }
}

/// Line breaks become ` | `, so that one event stays one line.
fn one_line(s: &str) -> String {
    if s.contains('\n') {
        s.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    } else {
        s.to_string()
    }
}

/// A value as is when it is one plain word, else in double quotes with `"` and `\` escaped.
fn quote(s: &str) -> String {
    let s = one_line(s);
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\')
    {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    #[test]
    fn human_and_json_lines() {
        let ts = chrono::DateTime::parse_from_rfc3339("2026-05-04T10:00:00.5Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let fields = [
            ("model", json!("contacts")),
            ("sent", json!(12)),
            ("error", json!("HTTP 500: \"boom\"\nagain")),
            ("run_id", Value::Null),
        ];
        let human = line(
            LogFormat::Human,
            ts,
            Level::Info,
            "run_finished",
            "run finished",
            &fields,
        );
        assert_eq!(
            human,
            r#"2026-05-04T10:00:00.500Z INFO  run finished model=contacts sent=12 error="HTTP 500: \"boom\" | again""#
        );
        let text = line(LogFormat::Json, ts, Level::Warn, "e", "m", &fields);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ts"], "2026-05-04T10:00:00.500Z");
        assert_eq!((v["level"].as_str(), v["event"].as_str()), (Some("warn"), Some("e")));
        assert_eq!(v["sent"], 12);
        assert!(v.get("run_id").is_none());
    }

    #[test]
    fn credentials_never_reach_a_line() {
        let ts = chrono::Utc::now();
        let fields = [
            (
                "error",
                json!("cannot open the state store `postgres://u:p@ss@word@db:1/x?password=zzz`: refused"),
            ),
            ("diagnostics", json!([{"message": "bad url https://h/?token=abc"}])),
        ];
        for format in [LogFormat::Human, LogFormat::Json] {
            let text = line(
                format,
                ts,
                Level::Error,
                "store_unavailable",
                "at postgres://a:hunter2@h/x",
                &fields,
            );
            for secret in ["ss@word", "zzz", "abc", "hunter2"] {
                assert!(!text.contains(secret), "{format:?}: {text}");
            }
            assert!(text.contains("postgres://u:***@db:1/x?password=***"), "{text}");
        }
    }

    /// The fields a layer of the same kind sees, through a real `tracing` subscriber:
    /// span fields after the event's own, a later `record` on the span, `json.` fields.
    #[test]
    fn events_take_their_spans_fields() {
        /// (event, message, fields) of each event.
        type Event3 = (String, String, Vec<(String, Value)>);
        #[derive(Clone, Default)]
        struct Seen(Arc<Mutex<Vec<Event3>>>);
        impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Seen {
            fn on_new_span(&self, a: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
                Lines {
                    format: LogFormat::Json,
                }
                .on_new_span(a, id, ctx)
            }
            fn on_record(&self, id: &tracing::span::Id, v: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
                Lines {
                    format: LogFormat::Json,
                }
                .on_record(id, v, ctx)
            }
            fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
                let f = gather(event, &ctx);
                self.0
                    .lock()
                    .unwrap()
                    .push((f.event.unwrap_or_default(), f.message.unwrap_or_default(), f.pairs));
            }
        }
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("run", model = "contacts", run_id = tracing::field::Empty);
            let _in = span.enter();
            span.record("run_id", 7);
            let diagnostics = json!([{"code": "E101"}]).to_string();
            tracing::warn!(event = "retry", attempt = 2, cause = %"HTTP 503", json.diagnostics = %diagnostics, "retrying");
        });
        let got = seen.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        let (event, msg, pairs) = &got[0];
        assert_eq!((event.as_str(), msg.as_str()), ("retry", "retrying"));
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["attempt", "cause", "diagnostics", "model", "run_id"]);
        assert_eq!(pairs[2].1, json!([{"code": "E101"}]));
        assert_eq!(pairs[4].1, json!(7));
    }
}

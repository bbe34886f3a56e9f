//! The daemon's log: one line per event on standard error, human-readable with a UTC
//! timestamp, or one JSON object per line (`--log-format json`).
//!
//! An event has a name (`run_finished`, `reload_rejected`, …), a message and fields. The
//! human form is `2026-05-04T10:00:00.123Z INFO  run finished model=contacts status=…`;
//! the JSON form is `{"ts": …, "level": "info", "event": "run_finished", "msg": …,
//! "model": …}`. Each line is written with one call on the locked stream, so lines of
//! concurrent runs never interleave. Every line goes through [`crate::redact::text`]: the
//! message and every text in the fields, so a URL in an error chain (a state store that
//! cannot be reached, a source that refused) never shows its password.

use serde_json::{Map, Value};
use std::io::Write;

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
}

/// Where events go.
#[derive(Debug, Clone)]
pub struct Logger {
    pub format: LogFormat,
    /// Events below this level are dropped.
    pub min: Level,
}

impl Logger {
    pub fn new(format: LogFormat, min: Level) -> Logger {
        Logger { format, min }
    }

    pub fn enabled(&self, level: Level) -> bool {
        level >= self.min
    }

    pub fn debug(&self, event: &str, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Debug, event, msg, fields);
    }

    pub fn info(&self, event: &str, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Info, event, msg, fields);
    }

    pub fn warn(&self, event: &str, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Warn, event, msg, fields);
    }

    pub fn error(&self, event: &str, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Error, event, msg, fields);
    }

    /// Writes one event (if its level is enabled).
    pub fn log(&self, level: Level, event: &str, msg: &str, fields: &[(&str, Value)]) {
        if !self.enabled(level) {
            return;
        }
        let mut line = self.line(chrono::Utc::now(), level, event, msg, fields);
        line.push('\n');
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    /// The text of one event, without the line break.
    pub fn line(
        &self,
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
        match self.format {
            LogFormat::Json => {
                let mut o = Map::new();
                o.insert("ts".into(), Value::String(ts));
                o.insert("level".into(), Value::String(level.as_str().into()));
                o.insert("event".into(), Value::String(event.into()));
                o.insert("msg".into(), Value::String(msg.into()));
                for (k, v) in fields {
                    if !v.is_null() {
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
        let human =
            Logger::new(LogFormat::Human, Level::Info).line(ts, Level::Info, "run_finished", "run finished", &fields);
        assert_eq!(
            human,
            r#"2026-05-04T10:00:00.500Z INFO  run finished model=contacts sent=12 error="HTTP 500: \"boom\" | again""#
        );
        let line = Logger::new(LogFormat::Json, Level::Info).line(ts, Level::Warn, "e", "m", &fields);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-05-04T10:00:00.500Z");
        assert_eq!((v["level"].as_str(), v["event"].as_str()), (Some("warn"), Some("e")));
        assert_eq!(v["sent"], 12);
        assert!(v.get("run_id").is_none());
        assert!(!Logger::new(LogFormat::Json, Level::Info).enabled(Level::Debug));
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
            let line = Logger::new(format, Level::Info).line(
                ts,
                Level::Error,
                "store_unavailable",
                "at postgres://a:hunter2@h/x",
                &fields,
            );
            for secret in ["ss@word", "zzz", "abc", "hunter2"] {
                assert!(!line.contains(secret), "{format:?}: {line}");
            }
            assert!(line.contains("postgres://u:***@db:1/x?password=***"), "{line}");
        }
    }
}

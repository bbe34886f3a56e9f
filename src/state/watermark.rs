//! An inbound model's watermark: where its reads stand, kept in `ebb_meta` as a small
//! JSON object (docs/state.md), and why a stored one does not read.

/// Where an inbound model's reads stand: kept in `ebb_meta` (key `watermark:MODEL`) as a
/// small JSON object, so that no schema migration was needed (docs/state.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The next run reads records whose cursor is at or after this, less the lookback: the
    /// upper bound of the last window read whole (not the newest stamp seen).
    pub watermark: chrono::DateTime<chrono::Utc>,
    /// The last window read: `[from, to)`, `from` unset on a full read.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: chrono::DateTime<chrono::Utc>,
    /// The newest cursor value loaded so far (the CRM's stamp), for the inbound lag.
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
    /// The run that set it.
    pub run_id: i64,
}

impl Watermark {
    /// `{"watermark": "…Z", "from": "…Z" | null, "to": "…Z", "newest": "…Z" | null, "run_id": N}`.
    pub fn to_json(&self) -> String {
        let t = |d: &chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        serde_json::json!({
            "watermark": t(&self.watermark),
            "from": self.from.as_ref().map(t),
            "to": t(&self.to),
            "newest": self.newest.as_ref().map(t),
            "run_id": self.run_id,
        })
        .to_string()
    }

    /// Reads [`Watermark::to_json`]'s text; the error says which part is wrong.
    pub fn from_json(text: &str) -> Result<Watermark, WatermarkError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| WatermarkError::NotJson(e.to_string()))?;
        let time = |k: &'static str| -> Result<Option<chrono::DateTime<chrono::Utc>>, WatermarkError> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|d| Some(d.with_timezone(&chrono::Utc)))
                    .map_err(|e| WatermarkError::BadTime {
                        key: k,
                        value: s.clone(),
                        reason: e.to_string(),
                    }),
                Some(other) => Err(WatermarkError::NotATime {
                    key: k,
                    value: other.to_string(),
                }),
            }
        };
        Ok(Watermark {
            watermark: time("watermark")?.ok_or(WatermarkError::Missing("watermark"))?,
            from: time("from")?,
            to: time("to")?.ok_or(WatermarkError::Missing("to"))?,
            newest: time("newest")?,
            run_id: v
                .get("run_id")
                .and_then(|r| r.as_i64())
                .ok_or(WatermarkError::Missing("run_id"))?,
        })
    }
}

/// Why a stored watermark cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkError {
    #[error("{0}")]
    NotJson(String),
    #[error("`{key}`: `{value}`: {reason}")]
    BadTime {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("`{key}`: {value} is not a time")]
    NotATime { key: &'static str, value: String },
    #[error("no `{0}`")]
    Missing(&'static str),
}

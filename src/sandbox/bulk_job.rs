//! What Bulk API 2.0 ingest jobs ([`super::bulk`]) and query jobs ([`super::bulk_query`])
//! share: the job states, the job-definition fields (`columnDelimiter`, `lineEnding`),
//! the timestamps of a JobInfo, and the job errors (400 `INVALIDJOB`, 409
//! `INVALIDJOBSTATE`; their texts follow the platform's `InvalidJob : …` form, [U] in
//! docs/salesforce-protocol.md §4).

use super::api::error;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};

/// A job's `state`: ingest jobs start `Open`, query jobs `UploadComplete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    pub(crate) fn ended(self) -> bool {
        matches!(self, JobState::JobComplete | JobState::Failed | JobState::Aborted)
    }
}

/// A job's `createdDate` and `systemModstamp`: `2018-12-18T22:51:36.000+0000`.
pub(crate) fn job_time(d: DateTime<Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// A job's `columnDelimiter` (default `COMMA`) and the character it names.
#[allow(clippy::result_large_err)] // the error is the response to send, built once per request
pub(crate) fn delimiter(name: Option<&str>) -> Result<(&'static str, char), Response> {
    Ok(match name.unwrap_or("COMMA") {
        "COMMA" => ("COMMA", ','),
        "BACKQUOTE" => ("BACKQUOTE", '`'),
        "CARET" => ("CARET", '^'),
        "PIPE" => ("PIPE", '|'),
        "SEMICOLON" => ("SEMICOLON", ';'),
        "TAB" => ("TAB", '\t'),
        other => return Err(invalid_job(&format!("Invalid columnDelimiter: {other}"))),
    })
}

/// A job's `lineEnding`: `LF` (default) or `CRLF`.
#[allow(clippy::result_large_err)] // the error is the response to send
pub(crate) fn line_ending(name: Option<&str>) -> Result<&'static str, Response> {
    match name {
        None | Some("LF") => Ok("LF"),
        Some("CRLF") => Ok("CRLF"),
        Some(other) => Err(invalid_job(&format!("Invalid lineEnding: {other}"))),
    }
}

/// 400 `INVALIDJOB`: the job definition or the requested change is not valid.
pub(crate) fn invalid_job(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALIDJOB",
        &format!("InvalidJob : {message}"),
    )
}

/// 409 `INVALIDJOBSTATE`: the job is `state`, and the request needs it `wanted`.
pub(crate) fn invalid_state_of(state: JobState, wanted: &str) -> Response {
    error(
        StatusCode::CONFLICT,
        "INVALIDJOBSTATE",
        &format!("InvalidJobState : the job is {}, not {wanted}", state.name()),
    )
}

//! `POST /webhooks/{model}`: a signed event (or a batch of them) for a webhook model.
//!
//! In order: the daemon must not be shutting down (503), the model must be a webhook model
//! (404), the body JSON (415) and within the connection's limit (413); the signature is
//! checked on the raw bytes before anything parses them (401); the model's inbox must be
//! under its bound (503 with `Retry-After`); the body must hold events the model takes
//! (400, and the body is kept as a dead letter). Then the events are stored, and only once
//! the store committed them is the answer 202. A redelivered event (same id) gets 202 again
//! and is stored once. No bearer token: the signature is the credential.

use super::error;
use crate::daemon::inbox::NoReceiver;
use crate::daemon::Shared;
use crate::state::inbox::{InboxStatus, NewEvent};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Seconds a sender is asked to wait when the inbox is full or the daemon stops.
const RETRY_AFTER_FULL: &str = "30";
const RETRY_AFTER_STOPPING: &str = "10";

pub(crate) async fn receive(State(shared): State<Arc<Shared>>, Path(model): Path<String>, req: Request) -> Response {
    let (response, known) = handle(&shared, &model, req).await;
    // Unknown paths share one label, so a scan of random names cannot grow the metrics.
    let label = if known { model.as_str() } else { "(unknown)" };
    shared.metrics.record_webhook(label, response.status().as_u16());
    response
}

fn retry_after(mut r: Response, secs: &'static str) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    r
}

async fn handle(shared: &Arc<Shared>, model: &str, req: Request) -> (Response, bool) {
    if *shared.stop.borrow() {
        return (
            retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the daemon is shutting down; send the event again later",
                ),
                RETRY_AFTER_STOPPING,
            ),
            false,
        );
    }
    if !shared.models_loaded.load(std::sync::atomic::Ordering::SeqCst) || shared.store.get().is_none() {
        return (
            retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the daemon is starting; send the event again shortly",
                ),
                RETRY_AFTER_STOPPING,
            ),
            false,
        );
    }
    let receiver = match shared.inboxes.receiver(shared, model) {
        Ok(r) => r,
        Err(NoReceiver::Unknown) => {
            return (
                error(StatusCode::NOT_FOUND, format!("no webhook model named `{model}`")),
                false,
            )
        }
        Err(NoReceiver::Config(why)) => {
            tracing::error!(
                event = "webhook_misconfigured",
                model = %model,
                error = %why,
                "a webhook model cannot receive events: its connection cannot be used"
            );
            return (
                retry_after(
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("webhook model `{model}` cannot receive events now (its connection is misconfigured; the daemon's log says why)"),
                    ),
                    RETRY_AFTER_FULL,
                ),
                true,
            );
        }
    };
    let Some(store) = shared.store.get().cloned() else {
        return (
            retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, "the state store is not open yet"),
                RETRY_AFTER_STOPPING,
            ),
            true,
        );
    };
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/json" || (t.starts_with("application/") && t.ends_with("+json")));
    if !json_body {
        return (
            error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the event as JSON (`Content-Type: application/json`)",
            ),
            true,
        );
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", receiver.max_body),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > receiver.max_body as u64) {
        return (too_large(), true);
    }
    let (parts, body) = req.into_parts();
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(receiver.max_body as u64) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if bytes.len() + c.len() > receiver.max_body {
                    return (too_large(), true);
                }
                bytes.extend_from_slice(&c);
            }
            Err(e) => {
                return (
                    error(StatusCode::BAD_REQUEST, format!("the body could not be read: {e}")),
                    true,
                )
            }
        }
    }
    let now = Utc::now();
    let signed = crate::webhook::signature::Signed {
        method: parts.method.as_str(),
        path_and_query: parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str()),
        host: parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        body: &bytes,
    };
    let verified = match receiver.verifier.verify(signed, &parts.headers, now) {
        Ok(v) => v,
        Err(why) => {
            tracing::warn!(
                event = "webhook_unauthorized",
                model = %model,
                why = %why,
                "a webhook request was refused: its signature does not verify"
            );
            return (
                error(
                    StatusCode::UNAUTHORIZED,
                    format!("invalid signature ({})", receiver.verifier.scheme().name()),
                ),
                true,
            );
        }
    };
    if shared.inboxes.pending(model) >= receiver.max_pending {
        return (
            retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "webhook model `{model}` has {} events waiting to be applied; send again later",
                        receiver.max_pending
                    ),
                ),
                RETRY_AFTER_FULL,
            ),
            true,
        );
    }
    let events = match receiver
        .rules
        .parse(&bytes, verified.id.as_deref(), verified.timestamp, now)
    {
        Ok(events) => events,
        Err(why) => {
            // Kept as a dead letter (once per distinct body), applied never.
            let dead = NewEvent {
                model: model.to_string(),
                event_id: format!("rejected:{}", crate::webhook::event::hex(&Sha256::digest(&bytes))),
                event_type: String::new(),
                action: String::new(),
                event_time: now,
                received: now,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                status: InboxStatus::Rejected,
                reason: Some(why.to_string()),
            };
            if let Err(e) = shared.inboxes.put(&store, model, vec![dead]).await {
                tracing::error!(
                    event = "inbox_failed",
                    model = %model,
                    error = %e,
                    "a refused webhook body could not be kept as a dead letter"
                );
            }
            shared.metrics.record_events(model, "rejected", 1);
            return (error(StatusCode::BAD_REQUEST, why.to_string()), true);
        }
    };
    let n = events.len();
    let new: Vec<NewEvent> = events
        .into_iter()
        .map(|e| NewEvent {
            model: model.to_string(),
            event_id: e.event_id,
            event_type: e.event_type,
            action: e.action.as_str().to_string(),
            event_time: e.event_time,
            received: now,
            body: e.body,
            status: InboxStatus::Pending,
            reason: None,
        })
        .collect();
    match shared.inboxes.put(&store, model, new).await {
        Ok(stored) => {
            let fresh = stored.iter().filter(|s| **s).count();
            shared.metrics.record_events(model, "stored", fresh as u64);
            shared.metrics.record_events(model, "duplicate", (n - fresh) as u64);
            (
                (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "accepted", "events": n, "duplicates": n - fresh})),
                )
                    .into_response(),
                true,
            )
        }
        Err(e) => {
            tracing::error!(
                event = "inbox_failed",
                model = %model,
                error = %e,
                "webhook events could not be stored; the sender was told to retry"
            );
            (
                retry_after(
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the event could not be stored; send it again",
                    ),
                    RETRY_AFTER_STOPPING,
                ),
                true,
            )
        }
    }
}

//! Delivering a batch with retries.
//!
//! [`deliver`] sends a batch until the destination answers it, a fatal error stops it, or
//! the attempts run out, waiting between attempts as the [`RetryPolicy`] says (backoff with
//! jitter, or the destination's `Retry-After`). The policy itself is in `http::retry`,
//! shared with the sources that retry requests.

use super::{Batch, Delivered, Destination, SendError};
use crate::http::retry::RetryPolicy;

/// A batch that could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// Why, with the attempts it took when there were several.
    pub message: String,
    /// Requests made, retries included.
    pub api_calls: u64,
    pub attempts: u32,
}

/// Sends `batch` to `dest`, retrying transient errors under `policy`.
pub async fn deliver(dest: &Destination, batch: &Batch, policy: &RetryPolicy) -> Result<Delivered, Failed> {
    let mut attempts = 0u64;
    let outcomes = call(policy, || {
        attempts += 1;
        async move {
            match dest.send(batch).await {
                Ok(outcomes) if outcomes.len() != batch.records.len() => Err(SendError::Fatal(format!(
                    "the destination answered {} outcomes for {} records",
                    outcomes.len(),
                    batch.records.len()
                ))),
                other => other,
            }
        }
    })
    .await?;
    Ok(Delivered {
        outcomes,
        api_calls: attempts,
    })
}

/// Calls `f` until it answers, a fatal error stops it, or the attempts run out, waiting as
/// `policy` says; for requests that are not a batch's delivery (the conflict check's
/// lookups).
pub async fn call<T, F, Fut>(policy: &RetryPolicy, mut f: F) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SendError>>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let failed = |message: String| Failed {
            message: if attempts > 1 {
                format!("after {attempts} attempts: {message}")
            } else {
                message
            },
            api_calls: u64::from(attempts),
            attempts,
        };
        match f().await {
            Ok(t) => return Ok(t),
            Err(SendError::Fatal(message)) => return Err(failed(message)),
            Err(SendError::Transient { message, retry_after }) => {
                if attempts >= max_attempts {
                    return Err(failed(message));
                }
                let delay = policy.delay(attempts, retry_after, rand::random::<f64>());
                tracing::warn!(
                    event = "request_retried",
                    attempt = attempts,
                    max_attempts,
                    delay_ms = delay.as_millis() as u64,
                    retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                    cause = %message,
                    "a request failed and is sent again"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

//! How patiently a request (or a batch) is retried: the attempts, and the wait between
//! them, an exponential backoff with full jitter (a uniformly random delay up to
//! `base × 2^(attempt−1)`, capped at `max_delay`); when the other side sent a `Retry-After`
//! longer than that, the `Retry-After` instead (capped at [`RETRY_AFTER_CAP`], so a server
//! cannot park a run for hours).
//!
//! It lives in the HTTP layer because both directions retry: the destinations'
//! `deliver` (in `destination::retry`) and the Salesforce and HubSpot readers' requests
//! ([`RetryPolicy::run`]) use one policy.
//!
//! Two environment variables tune the policy of [`RetryPolicy::from_env`], mostly so tests
//! need not wait for real backoffs:
//!
//! - `EBB_RETRY_BASE_MS`: the first backoff step in milliseconds (default 500);
//! - `EBB_RETRY_MAX_ATTEMPTS`: attempts, the first included (default 8, at least 1).
//!
//! A value that is not a whole number is ignored (the default applies).

use std::time::Duration;

/// The longest `Retry-After` honoured; a longer one is waited this long.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// How often and how patiently a request or a batch is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per batch, the first included.
    pub max_attempts: u32,
    /// The first backoff step; each later step doubles it.
    pub base: Duration,
    /// The longest computed backoff (a `Retry-After` may be longer).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The default policy, with `EBB_RETRY_BASE_MS` and `EBB_RETRY_MAX_ATTEMPTS` applied.
    pub fn from_env() -> RetryPolicy {
        RetryPolicy::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> RetryPolicy {
        let var = |name: &str| lookup(name).and_then(|v| v.trim().parse::<u64>().ok());
        let mut policy = RetryPolicy::default();
        if let Some(ms) = var("EBB_RETRY_BASE_MS") {
            policy.base = Duration::from_millis(ms);
        }
        if let Some(n) = var("EBB_RETRY_MAX_ATTEMPTS") {
            policy.max_attempts = u32::try_from(n).unwrap_or(u32::MAX).max(1);
        }
        policy
    }

    /// The wait after failed attempt number `attempt` (1 for the first), given the
    /// destination's `Retry-After` and a jitter draw `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let step = self.base.saturating_mul(1u32 << exponent).min(self.max_delay);
        let jittered = step.mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra.min(RETRY_AFTER_CAP)),
            None => jittered,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out, waiting
    /// [`RetryPolicy::delay`] between two (logged as `request_retried`, with `reader`
    /// naming who reads: "a HubSpot read"). The error is `what: why`, and says how many
    /// attempts were made when they ran out.
    pub async fn run<T, E, F, Fut>(&self, reader: &str, what: &str, mut attempt: F) -> Result<T, String>
    where
        E: Into<Failed>,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match attempt().await.map_err(Into::into) {
                Ok(v) => return Ok(v),
                Err(Failed::Final(m)) => return Err(format!("{what}: {m}")),
                Err(Failed::Transient { message, retry_after }) => {
                    if attempts >= self.max_attempts.max(1) {
                        return Err(format!("{what}: after {attempts} attempts: {message}"));
                    }
                    let delay = self.delay(attempts, retry_after, rand::random::<f64>());
                    tracing::warn!(
                        event = "request_retried",
                        what,
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        cause = %message,
                        "{reader} failed and is sent again"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// How an attempt of [`RetryPolicy::run`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// Worth another attempt, after at least `retry_after` when the server said so.
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Not worth another attempt.
    Final(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        // A jitter draw just under 1 gives (almost) the whole step.
        let top = |attempt| p.delay(attempt, None, 1.0);
        assert_eq!(top(1), Duration::from_millis(500));
        assert_eq!(top(2), Duration::from_secs(1));
        assert_eq!(top(3), Duration::from_secs(2));
        assert_eq!(top(7), Duration::from_secs(30), "64 s is capped at max_delay");
        assert_eq!(top(1000), Duration::from_secs(30), "huge attempts do not overflow");
    }

    #[test]
    fn full_jitter_scales_the_step() {
        let p = policy();
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, None, 0.25), Duration::from_millis(500));
        assert_eq!(p.delay(3, None, 7.0), Duration::from_secs(2), "draws are clamped to 1");
    }

    #[test]
    fn a_longer_retry_after_wins_and_is_capped() {
        let p = policy();
        assert_eq!(p.delay(1, Some(Duration::from_secs(10)), 0.5), Duration::from_secs(10));
        assert_eq!(p.delay(6, Some(Duration::from_secs(1)), 1.0), Duration::from_secs(16));
        assert_eq!(p.delay(1, Some(Duration::from_secs(86_400)), 0.5), RETRY_AFTER_CAP);
    }

    #[test]
    fn the_environment_tunes_the_policy() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        let p = RetryPolicy::from_lookup(env(&[("EBB_RETRY_BASE_MS", "5"), ("EBB_RETRY_MAX_ATTEMPTS", " 3 ")]));
        assert_eq!((p.base, p.max_attempts), (Duration::from_millis(5), 3));
        assert_eq!(p.max_delay, Duration::from_secs(30));
        let p = RetryPolicy::from_lookup(env(&[("EBB_RETRY_BASE_MS", "fast"), ("EBB_RETRY_MAX_ATTEMPTS", "0")]));
        assert_eq!((p.base, p.max_attempts), (Duration::from_millis(500), 1));
    }

    #[test]
    fn the_default_policy() {
        assert_eq!(
            RetryPolicy::default(),
            RetryPolicy {
                max_attempts: 8,
                base: Duration::from_millis(500),
                max_delay: Duration::from_secs(30)
            }
        );
    }
}

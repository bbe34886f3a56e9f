//! The private-app rate limits: a rolling 10-second window and a daily count (per UTC
//! day), reported in `X-HubSpot-RateLimit-*` headers and enforced with a 429 whose
//! `policyName` says which one was hit (`TEN_SECONDLY_ROLLING` or `DAILY`). The search
//! endpoints have their own limit besides, a number per second (`SECONDLY`), as HubSpot's.

use super::HubError;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
const SECOND: Duration = Duration::from_secs(1);

/// The limit a refused request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Secondly,
    TenSecondlyRolling,
    Daily,
}

impl Policy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Policy::Secondly => "SECONDLY",
            Policy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            Policy::Daily => "DAILY",
        }
    }

    /// The word in the message: "You have reached your {word} limit."
    pub(crate) fn word(self) -> &'static str {
        match self {
            Policy::Secondly => "secondly",
            Policy::TenSecondlyRolling => "ten_secondly_rolling",
            Policy::Daily => "daily",
        }
    }
}

pub(crate) struct Limits {
    ten_second_max: u64,
    /// When each counted request of the last 10 seconds arrived, oldest first.
    window: VecDeque<Instant>,
    daily_max: u64,
    daily_used: u64,
    day: chrono::NaiveDate,
    search_max: u64,
    /// When each counted search request of the last second arrived, oldest first.
    searches: VecDeque<Instant>,
    /// Requests refused with a 429 so far, whatever the policy.
    refused: u64,
}

impl Limits {
    pub(crate) fn new(ten_second_max: u64, daily_max: u64, search_max: u64) -> Limits {
        Limits {
            ten_second_max,
            window: VecDeque::new(),
            daily_max,
            daily_used: 0,
            day: chrono::Utc::now().date_naive(),
            search_max,
            searches: VecDeque::new(),
            refused: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        while self.window.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            self.window.pop_front();
        }
        while self.searches.front().is_some_and(|t| now.duration_since(*t) >= SECOND) {
            self.searches.pop_front();
        }
        let today = chrono::Utc::now().date_naive();
        if today != self.day {
            self.day = today;
            self.daily_used = 0;
        }
    }

    /// Counts one request, or refuses it (not counted) with the policy it hit: the daily
    /// count first, then the window, then (for a search) the search's second.
    pub(crate) fn admit(&mut self, search: bool) -> Result<(), HubError> {
        let refused = self.check(search);
        if refused.is_err() {
            self.refused += 1;
        }
        refused
    }

    fn check(&mut self, search: bool) -> Result<(), HubError> {
        let now = Instant::now();
        self.roll(now);
        if self.daily_used >= self.daily_max {
            let midnight = (chrono::Utc::now().date_naive() + chrono::Days::new(1))
                .and_hms_opt(0, 0, 0)
                .map(|m| m.and_utc());
            let retry_after = midnight
                .map(|m| (m - chrono::Utc::now()).num_seconds().max(1) as u64)
                .unwrap_or(1);
            return Err(HubError::RateLimited {
                policy: Policy::Daily,
                retry_after,
            });
        }
        if self.window.len() as u64 >= self.ten_second_max {
            let retry_after = self
                .window
                .front()
                .map(|t| (WINDOW.saturating_sub(now.duration_since(*t))).as_secs_f64().ceil() as u64)
                .unwrap_or(1);
            return Err(HubError::RateLimited {
                policy: Policy::TenSecondlyRolling,
                retry_after,
            });
        }
        if search && self.searches.len() as u64 >= self.search_max {
            return Err(HubError::RateLimited {
                policy: Policy::Secondly,
                retry_after: 1,
            });
        }
        if search {
            self.searches.push_back(now);
        }
        self.window.push_back(now);
        self.daily_used += 1;
        Ok(())
    }

    /// The `X-HubSpot-RateLimit-*` headers as the limits stand.
    pub(crate) fn headers(&mut self) -> [(&'static str, u64); 5] {
        self.roll(Instant::now());
        [
            ("x-hubspot-ratelimit-max", self.ten_second_max),
            (
                "x-hubspot-ratelimit-remaining",
                self.ten_second_max.saturating_sub(self.window.len() as u64),
            ),
            ("x-hubspot-ratelimit-interval-milliseconds", WINDOW.as_millis() as u64),
            ("x-hubspot-ratelimit-daily", self.daily_max),
            (
                "x-hubspot-ratelimit-daily-remaining",
                self.daily_max.saturating_sub(self.daily_used),
            ),
        ]
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    pub(crate) fn daily_used(&self) -> u64 {
        self.daily_used
    }

    pub(crate) fn set_daily(&mut self, used: u64, max: u64) {
        self.daily_used = used;
        self.daily_max = max;
    }

    pub(crate) fn set_search_per_second(&mut self, max: u64) {
        self.search_max = max;
    }

    pub(crate) fn set_ten_second_limit(&mut self, max: u64) {
        self.ten_second_max = max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_window_refuses_past_its_max_and_daily_comes_first() {
        let mut l = Limits::new(2, 10, 1);
        assert!(l.admit(false).is_ok());
        assert!(l.admit(false).is_ok());
        match l.admit(false) {
            Err(HubError::RateLimited { policy, retry_after }) => {
                assert_eq!(policy, Policy::TenSecondlyRolling);
                assert!((1..=10).contains(&retry_after));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(l.daily_used(), 2, "a refused request is not counted");
        assert_eq!(l.refused(), 1, "but it is counted as refused");
        let mut s = Limits::new(10, 10, 1);
        assert!(s.admit(true).is_ok());
        assert!(s.admit(false).is_ok(), "other requests are not searches");
        assert!(matches!(
            s.admit(true),
            Err(HubError::RateLimited {
                policy: Policy::Secondly,
                ..
            })
        ));
        l.set_daily(10, 10);
        assert!(matches!(
            l.admit(false),
            Err(HubError::RateLimited {
                policy: Policy::Daily,
                ..
            })
        ));
        let h = l.headers();
        assert_eq!(h[1], ("x-hubspot-ratelimit-remaining", 0));
        assert_eq!(h[4], ("x-hubspot-ratelimit-daily-remaining", 0));
    }
}

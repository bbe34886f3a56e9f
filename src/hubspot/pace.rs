//! Pacing one HubSpot connection by what HubSpot says of its limit, so that a run goes as
//! fast as the account allows without being refused.
//!
//! Every answer carries `X-HubSpot-RateLimit-Max`, `-Remaining` and
//! `-Interval-Milliseconds` (a private app of a Professional or Enterprise account: 190
//! requests in any 10 seconds). [`Pace`] keeps that window as HubSpot keeps it, rolling,
//! with the connection's own requests in it, and starts a request only when the window has
//! room for it:
//!
//! - Each request counts from its start while in flight and from its answer once answered.
//!   HubSpot counts a request when it arrives, which lies between the two, so the count
//!   here is never below HubSpot's count of the same requests: this connection alone is
//!   never refused, at the price of one request's time per window.
//! - Requests this connection did not make (another integration on the account, another
//!   process) show in `Remaining`: what HubSpot counted beyond this connection's own
//!   requests is kept as "others" until an interval after the answer that reported it, and
//!   takes its room in the window.
//! - A 429 of the short window (`TEN_SECONDLY_ROLLING`, or one without a policy) holds every
//!   request of the connection until its `Retry-After` has passed; the refused request
//!   itself is retried by its caller.
//! - Until an answer has named the limit, requests are not paced (the connection's
//!   concurrency bounds the first ones).
//!
//! It does not handle the daily allocation (a 429 `DAILY` stops the run), the search
//! endpoints' own limit per second (their 429 `SECONDLY` is retried after its
//! `Retry-After`), nor a connection's `rate_limit` setting (`http::limit`, applied first).
//! The decisions are in [`State`], a plain value tested without a clock.

use reqwest::header::HeaderMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Waits at least this long are logged (at debug: shorter ones are the pacing doing its job
/// many times a second).
const LOGGED_WAIT: Duration = Duration::from_secs(1);

/// What one answer said of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// `X-HubSpot-RateLimit-Max`: requests allowed in any interval.
    pub max: u32,
    /// `X-HubSpot-RateLimit-Remaining`: requests left in the interval, this one counted.
    pub remaining: u32,
    /// `X-HubSpot-RateLimit-Interval-Milliseconds`.
    pub interval: Duration,
}

impl Report {
    /// The report of an answer's headers; `None` when they do not say (or say a limit of 0).
    pub fn from_headers(headers: &HeaderMap) -> Option<Report> {
        let number = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        let max = u32::try_from(number("x-hubspot-ratelimit-max")?)
            .ok()
            .filter(|m| *m > 0)?;
        let remaining = u32::try_from(number("x-hubspot-ratelimit-remaining")?).unwrap_or(u32::MAX);
        let interval = number("x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000);
        Some(Report {
            max,
            remaining: remaining.min(max),
            interval: Duration::from_millis(interval.max(1)),
        })
    }
}

/// One connection's pacing, shared by every request on it.
#[derive(Debug, Default)]
pub struct Pace {
    state: Mutex<State>,
    /// Signalled when a request is answered or the state changes otherwise.
    changed: tokio::sync::Notify,
}

/// The right to send one request, entered in the window: close it with
/// [`Ticket::answered`] or [`Ticket::refused`] (the first call counts, later ones do
/// nothing); dropped unanswered (a connection error, a cancelled run), it counts as answered
/// then.
#[derive(Debug)]
pub struct Ticket<'a> {
    pace: &'a Pace,
    id: u64,
    done: bool,
}

impl Pace {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the window as consistent as any single
        // update leaves it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the window has room for one more request and enters it.
    pub async fn start(&self) -> Ticket<'_> {
        let asked = Instant::now();
        loop {
            let changed = self.changed.notified();
            let decision = self.state().decide(Instant::now());
            match decision {
                Decision::Go(id) => {
                    let waited = asked.elapsed();
                    if waited >= LOGGED_WAIT {
                        tracing::debug!(
                            event = "hubspot_paced",
                            waited_ms = waited.as_millis() as u64,
                            "a HubSpot request waited for room in the account's rate window"
                        );
                    }
                    return Ticket {
                        pace: self,
                        id,
                        done: false,
                    };
                }
                Decision::Until(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t) => {}
                        () = changed => {}
                    }
                }
                Decision::Answer => changed.await,
            }
        }
    }

    /// The limit as the latest answer named it: `(max, interval)`.
    pub fn limit(&self) -> Option<(u32, Duration)> {
        self.state().limit
    }
}

impl Ticket<'_> {
    /// HubSpot answered (anything but a 429 of the short window), with `report`.
    pub fn answered(&mut self, report: Option<Report>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.pace.state().answered(self.id, report, Instant::now());
        self.pace.changed.notify_waiters();
    }

    /// HubSpot refused the request for the short window (not counted there): every request
    /// of the connection waits `retry_after`.
    pub fn refused(&mut self, report: Option<Report>, retry_after: Duration) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.pace.state().refused(self.id, report, retry_after, Instant::now());
        self.pace.changed.notify_waiters();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pace.state().answered(self.id, None, Instant::now());
            self.pace.changed.notify_waiters();
        }
    }
}

/// What a request may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start: entered in the window under this id.
    Go(u64),
    /// Ask again at this time (or when something changes before).
    Until(Instant),
    /// Ask again when a request in flight is answered.
    Answer,
}

/// The window as this connection sees it.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// `(max, interval)` as the latest answer said; `None` before any did.
    limit: Option<(u32, Duration)>,
    /// This connection's requests, oldest first, kept two intervals after their answer
    /// (the reports of requests still in flight may count them).
    own: VecDeque<Entry>,
    /// Requests HubSpot counted that were not this connection's, and until when they count.
    others: Option<(u32, Instant)>,
    /// No request starts before this (a 429's `Retry-After`).
    hold: Option<Instant>,
    next_id: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    start: Instant,
    /// When the request was answered; `None` while in flight.
    at: Option<Instant>,
}

impl State {
    /// Whether a request may start at `now`; when it may, it is entered.
    pub(crate) fn decide(&mut self, now: Instant) -> Decision {
        if let Some(hold) = self.hold {
            if now < hold {
                return Decision::Until(hold);
            }
            self.hold = None;
        }
        let Some((max, interval)) = self.limit else {
            return Decision::Go(self.enter(now));
        };
        while self
            .own
            .front()
            .is_some_and(|e| e.at.is_some_and(|t| now.saturating_duration_since(t) >= interval * 2))
        {
            self.own.pop_front();
        }
        let counted = |e: &Entry| e.at.is_none_or(|t| now.saturating_duration_since(t) < interval);
        let own = self.own.iter().filter(|e| counted(e)).count();
        let others = match self.others {
            Some((n, until)) if now < until => n as usize,
            _ => 0,
        };
        if own + others < max as usize {
            return Decision::Go(self.enter(now));
        }
        // Full: room opens when the earliest answered request of ours leaves the window, or
        // when the others' count lapses.
        let own_frees = self
            .own
            .iter()
            .filter(|e| counted(e))
            .filter_map(|e| e.at)
            .min()
            .map(|t| t + interval);
        let others_free = self
            .others
            .filter(|(n, until)| *n > 0 && now < *until)
            .map(|(_, until)| until);
        match (own_frees, others_free) {
            (Some(a), Some(b)) => Decision::Until(a.min(b)),
            (Some(t), None) | (None, Some(t)) => Decision::Until(t),
            (None, None) => Decision::Answer,
        }
    }

    fn enter(&mut self, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.own.push_back(Entry {
            id,
            start: now,
            at: None,
        });
        id
    }

    /// Request `id` was answered at `now`, with `report`.
    pub(crate) fn answered(&mut self, id: u64, report: Option<Report>, now: Instant) {
        let Some(start) = self.own.iter_mut().find(|e| e.id == id).map(|e| {
            e.at = Some(now);
            e.start
        }) else {
            return;
        };
        if let Some(r) = report {
            self.learn(r, start, now);
        }
    }

    /// Request `id` was refused at `now` for the short window: it is not in HubSpot's count,
    /// and nothing starts for `retry_after`.
    pub(crate) fn refused(&mut self, id: u64, report: Option<Report>, retry_after: Duration, now: Instant) {
        let start = self.own.iter().find(|e| e.id == id).map_or(now, |e| e.start);
        self.own.retain(|e| e.id != id);
        if let Some(r) = report {
            self.learn(r, start, now);
        }
        let until = now + retry_after;
        self.hold = Some(self.hold.map_or(until, |h| h.max(until)));
    }

    /// Takes in a report of a request started at `start` and answered at `now`: the limit,
    /// and HubSpot's count beyond this connection's own requests. HubSpot made the report
    /// between `start` and `now`, counting the requests that arrived in the interval before;
    /// every request of ours it can have counted was in flight, or answered after
    /// `start - interval`, so the requests of others are at least the difference.
    fn learn(&mut self, r: Report, start: Instant, now: Instant) {
        self.limit = Some((r.max, r.interval));
        let ours = self
            .own
            .iter()
            .filter(|e| e.at.is_none_or(|t| t + r.interval > start))
            .count();
        let used = r.max.saturating_sub(r.remaining) as usize;
        let others = used.saturating_sub(ours);
        self.others = (others > 0).then_some((others as u32, now + r.interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    fn report(max: u32, remaining: u32) -> Option<Report> {
        Some(Report {
            max,
            remaining,
            interval: TEN,
        })
    }

    fn go(s: &mut State, now: Instant) -> u64 {
        match s.decide(now) {
            Decision::Go(id) => id,
            other => panic!("expected to start, got {other:?}"),
        }
    }

    #[test]
    fn hubspot_requests_go_unpaced_until_an_answer_names_the_limit() {
        let t0 = Instant::now();
        let mut s = State::default();
        let ids: Vec<u64> = (0..50).map(|_| go(&mut s, t0)).collect();
        assert_eq!(ids.len(), 50);
    }

    #[test]
    fn hubspot_window_fills_to_the_limit_and_frees_an_interval_after_each_answer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = State::default();
        // The first answer names a limit of 3: two more may start, then the window is full.
        let a = go(&mut s, t0);
        s.answered(a, report(3, 2), t0 + ms(20));
        let b = go(&mut s, t0 + ms(20));
        let c = go(&mut s, t0 + ms(20));
        assert_eq!(
            s.decide(t0 + ms(25)),
            Decision::Until(t0 + ms(20) + TEN),
            "full until the first answer leaves the window"
        );
        s.answered(b, report(3, 1), t0 + ms(40));
        s.answered(c, report(3, 0), t0 + ms(50));
        // Room opens an interval after the first answer (not its start: HubSpot counted it
        // when it arrived, some time in between).
        assert_eq!(s.decide(t0 + ms(60)), Decision::Until(t0 + ms(20) + TEN));
        assert_eq!(s.decide(t0 + ms(20) + TEN - ms(1)), Decision::Until(t0 + ms(20) + TEN));
        let d = go(&mut s, t0 + ms(20) + TEN);
        assert_eq!(s.decide(t0 + ms(20) + TEN), Decision::Until(t0 + ms(40) + TEN));
        // Over 3 intervals, never more than 3 starts in any interval (the property HubSpot
        // enforces), and the window never idles past an answer's expiry.
        s.answered(d, report(3, 2), t0 + ms(30) + TEN);
        let mut starts = vec![t0, t0 + ms(20), t0 + ms(20), t0 + ms(20) + TEN];
        let mut now = t0 + ms(20) + TEN;
        while now < t0 + TEN * 3 {
            match s.decide(now) {
                Decision::Go(id) => {
                    starts.push(now);
                    now += ms(10);
                    s.answered(id, report(3, 0), now);
                }
                Decision::Until(t) => now = t,
                Decision::Answer => panic!("every request is answered here"),
            }
        }
        for w in starts.windows(4) {
            assert!(w[3] - w[0] >= TEN, "4 starts within {:?}", w[3] - w[0]);
        }
        assert!(starts.len() >= 9, "3 a window: {}", starts.len());
    }

    #[test]
    fn hubspot_others_on_the_account_take_their_room_until_an_interval_passes() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = State::default();
        // Ours: one request. HubSpot says 6 of 10 are used: 5 were someone else's.
        let a = go(&mut s, t0);
        s.answered(a, report(10, 4), t0 + ms(10));
        for _ in 0..4 {
            go(&mut s, t0 + ms(10));
        }
        assert_eq!(
            s.decide(t0 + ms(10)),
            Decision::Until(t0 + ms(10) + TEN),
            "5 of ours and 5 of others fill 10"
        );
        // Alone on the account, our own requests in flight are not mistaken for others'.
        let mut alone = State::default();
        let first = go(&mut alone, t0);
        alone.answered(first, report(10, 9), t0 + ms(5));
        let flying: Vec<u64> = (0..4).map(|_| go(&mut alone, t0 + ms(5))).collect();
        for (i, id) in flying.iter().enumerate() {
            alone.answered(*id, report(10, 8 - i as u32), t0 + ms(20));
        }
        assert_eq!(alone.others, None);
    }

    #[test]
    fn hubspot_a_refusal_holds_every_request_for_its_retry_after_and_is_not_counted() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = State::default();
        let a = go(&mut s, t0);
        let b = go(&mut s, t0);
        s.answered(a, report(3, 2), t0 + ms(10));
        s.refused(b, report(3, 2), Duration::from_secs(3), t0 + ms(12));
        let after = t0 + ms(12) + Duration::from_secs(3);
        assert_eq!(s.decide(t0 + ms(20)), Decision::Until(after));
        // After the hold: the refused request is not in the window, so two may start.
        go(&mut s, after);
        go(&mut s, after);
        assert_eq!(s.decide(after), Decision::Until(t0 + ms(10) + TEN));
    }

    #[test]
    fn hubspot_rate_limit_headers_are_read() {
        let mut h = HeaderMap::new();
        assert_eq!(Report::from_headers(&h), None);
        h.insert("x-hubspot-ratelimit-max", "190".parse().unwrap());
        h.insert("x-hubspot-ratelimit-remaining", "185".parse().unwrap());
        h.insert("x-hubspot-ratelimit-interval-milliseconds", "10000".parse().unwrap());
        assert_eq!(
            Report::from_headers(&h),
            Some(Report {
                max: 190,
                remaining: 185,
                interval: TEN
            })
        );
        h.insert("x-hubspot-ratelimit-max", "0".parse().unwrap());
        assert_eq!(Report::from_headers(&h), None, "a limit of 0 is no limit named");
    }
}

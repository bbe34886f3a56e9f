//! The daemon's side of webhook models: what checks a model's requests ([`Receiver`], built
//! from its plan and connection, rebuilt when either changes), the task that stores events
//! (requests arriving together are stored in one transaction: one commit, many answers), and
//! one loop per webhook model applying its inbox as events arrive ([`appliers`]).
//!
//! An applier loop holds the model's run lock (renewed by a heartbeat), so two daemons
//! sharing a PostgreSQL store never apply one model's inbox at once. It applies a batch as
//! soon as events are pending (a request wakes it; it also looks every 200 ms), up to 1,000
//! events a batch, and lets go of the table's connection once the inbox is empty for a
//! second (a DuckDB file is then free for other processes).

use super::Shared;
use crate::config::project::{ConnectionSpec, ProjectSpec, SignatureEncoding, WebhookSigning};
use crate::engine::webhook::{Applier, DEFAULT_BATCH};
use crate::plan::SyncPlan;
use crate::state::inbox::NewEvent;
use crate::state::lock::{self, LEASE};
use crate::state::{LockOutcome, StateStore};
use crate::webhook::signature::{Encoding, DEFAULT_TOLERANCE};
use crate::webhook::{EventRules, Scheme, Verifier};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};

/// The largest body accepted unless the connection says otherwise.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Events pending per model beyond which requests are answered 503.
pub const DEFAULT_MAX_PENDING: u64 = 100_000;
/// Events stored in one transaction at most.
const PUT_BATCH: usize = 2000;
/// How often an applier looks at the inbox without being woken.
const POLL: Duration = Duration::from_millis(200);
/// How long an applier keeps the table's connection with nothing to apply.
const IDLE_CLOSE: Duration = Duration::from_secs(1);
/// How long settled events are kept, so that a redelivery is recognised (senders retry for
/// up to 3 days); dead letters and pending events are kept until replayed or applied.
pub const KEEP_SETTLED: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often an idle applier purges settled events older than [`KEEP_SETTLED`].
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// What checks and reads one webhook model's requests.
pub(crate) struct Receiver {
    pub verifier: Verifier,
    pub rules: EventRules,
    pub max_body: usize,
    pub max_pending: u64,
}

/// Why a model's requests cannot be received.
#[derive(Debug)]
pub(crate) enum NoReceiver {
    /// No such model, or not a webhook model (404).
    Unknown,
    /// Its connection cannot be used (503; the reason is logged, not sent).
    Config(String),
}

struct PutRequest {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<bool>, String>>,
}

/// A receiver and the plan and project it was built from.
type Built = (Arc<SyncPlan>, Arc<ProjectSpec>, Arc<Receiver>);

/// The pending counts, and the stores of events under way: a count read from the store
/// while events were being stored may hold them already (and they are about to be added),
/// so it replaces the running count only if no store overlapped the read
/// ([`Inboxes::set_pending_if`]).
#[derive(Default)]
struct Pending {
    counts: HashMap<String, u64>,
    /// Stores begun so far.
    begun: u64,
    /// Stores begun and not yet counted.
    under_way: u64,
}

/// Ends a store of events that did not get to count itself.
struct UnderWay<'a>(Option<&'a Inboxes>);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            i.counts().under_way -= 1;
        }
    }
}

/// What the daemon keeps for webhook models.
#[derive(Default)]
pub(crate) struct Inboxes {
    receivers: Mutex<HashMap<String, Built>>,
    /// Events pending per model, as this daemon counts them (read from the store when its
    /// applier starts, then kept up to date).
    pending: Mutex<Pending>,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    writer: OnceLock<mpsc::Sender<PutRequest>>,
}

impl Inboxes {
    /// The receiver of `model`, built again when its plan or the project changed.
    pub fn receiver(&self, shared: &Shared, model: &str) -> Result<Arc<Receiver>, NoReceiver> {
        let (plan, project) = {
            let t = shared.table();
            let e = t.models.get(model).filter(|e| !e.removed).ok_or(NoReceiver::Unknown)?;
            (e.plan.clone(), t.project.clone())
        };
        if plan.source.webhook.is_none() {
            return Err(NoReceiver::Unknown);
        }
        let mut cache = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, pr, r)) = cache.get(model) {
            if Arc::ptr_eq(p, &plan) && Arc::ptr_eq(pr, &project) {
                return Ok(r.clone());
            }
        }
        let r = Arc::new(build(&plan, &project).map_err(NoReceiver::Config)?);
        cache.insert(model.to_string(), (plan, project, r.clone()));
        Ok(r)
    }

    pub fn pending(&self, model: &str) -> u64 {
        self.counts().counts.get(model).copied().unwrap_or(0)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_pending(&self, model: &str, n: i64) -> u64 {
        let mut p = self.counts();
        let e = p.counts.entry(model.to_string()).or_default();
        *e = (*e as i64 + n).max(0) as u64;
        *e
    }

    /// A mark to read a count from the store after: `None` while events are being stored.
    fn mark(&self) -> Option<u64> {
        let p = self.counts();
        (p.under_way == 0).then_some(p.begun)
    }

    /// Sets the pending count of `model` to `n`, read from the store after `mark`, unless a
    /// store of events overlapped the read; whether it was set.
    fn set_pending_if(&self, model: &str, n: u64, mark: Option<u64>) -> bool {
        let mut p = self.counts();
        if mark != Some(p.begun) || p.under_way > 0 {
            return false;
        }
        p.counts.insert(model.to_string(), n);
        true
    }

    fn wake(&self, model: &str) -> Arc<Notify> {
        self.wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(model.to_string())
            .or_default()
            .clone()
    }

    /// Stores `events` (one transaction, shared with requests arriving at the same time);
    /// for each, whether it was new. Wakes the model's applier.
    pub async fn put(&self, store: &Arc<StateStore>, model: &str, events: Vec<NewEvent>) -> Result<Vec<bool>, String> {
        let tx = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(put_task(store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let pending = events
            .iter()
            .filter(|e| e.status == crate::state::inbox::InboxStatus::Pending)
            .count();
        {
            let mut p = self.counts();
            p.begun += 1;
            p.under_way += 1;
        }
        // (A request dropped while its events are stored ends its store too.)
        let mut guard = UnderWay(Some(self));
        let sent = tx.send(PutRequest { events, reply }).await;
        let stored = match sent {
            Ok(()) => answer.await.map_err(|_| "the inbox writer stopped".to_string()),
            Err(_) => Err("the inbox writer stopped".to_string()),
        }
        .and_then(|r| r);
        {
            // Counted in the same step as the store ends, so no read of the store sees
            // the events without this count having them, or the other way round.
            let mut p = self.counts();
            guard.0 = None;
            p.under_way -= 1;
            if let (Ok(stored), true) = (&stored, pending > 0) {
                let new = stored.iter().filter(|s| **s).count() as u64;
                *p.counts.entry(model.to_string()).or_default() += new;
            }
        }
        let stored = stored?;
        if pending > 0 {
            self.wake(model).notify_one();
        }
        Ok(stored)
    }
}

/// The receiver of a plan: the connection's scheme and secrets, the event rules.
fn build(plan: &SyncPlan, project: &ProjectSpec) -> Result<Receiver, String> {
    let w = plan.source.webhook.as_ref().ok_or("not a webhook model")?;
    let name = &plan.source.connection;
    let Some(ConnectionSpec::Webhook(c)) = project.connections.get(name) else {
        return Err(format!("connection `{name}` is not a webhook connection"));
    };
    let expand = |field: &str, v: &str| {
        crate::config::env::expand_env(v).map_err(|e| format!("connection `{name}`, `{field}`: {e}"))
    };
    let mut secrets = vec![expand("secret", &c.secret)?];
    if let Some(p) = &c.previous_secret {
        let p = expand("previous_secret", p)?;
        if !p.is_empty() {
            secrets.push(p);
        }
    }
    let scheme = match c.signing {
        WebhookSigning::Standard => Scheme::Standard,
        WebhookSigning::HubspotV3 => Scheme::HubspotV3 {
            public_url: c.public_url.clone(),
        },
        WebhookSigning::HmacSha256 => Scheme::HmacSha256 {
            header: c
                .header
                .clone()
                .ok_or_else(|| format!("connection `{name}`: `signing: hmac_sha256` needs `header`"))?
                .to_ascii_lowercase(),
            encoding: match c.encoding {
                Some(SignatureEncoding::Base64) => Encoding::Base64,
                _ => Encoding::Hex,
            },
            prefix: c.prefix.clone().unwrap_or_default(),
        },
    };
    let tolerance = match &c.tolerance {
        Some(t) => crate::schedule::parse_duration(t, "tolerance")
            .map_err(|e| format!("connection `{name}`, `tolerance`: {}", e.message))?,
        None => DEFAULT_TOLERANCE,
    };
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let verifier =
        Verifier::new(scheme, &refs, tolerance).map_err(|e| format!("connection `{name}`, `secret`: {e}"))?;
    Ok(Receiver {
        verifier,
        rules: w.rules.clone(),
        max_body: c.max_body_bytes.map_or(DEFAULT_MAX_BODY, |b| b as usize),
        max_pending: c.max_pending.map_or(DEFAULT_MAX_PENDING, u64::from),
    })
}

/// Stores the events of requests as they come, those waiting together in one transaction.
async fn put_task(store: Arc<StateStore>, mut rx: mpsc::Receiver<PutRequest>) {
    // The inbox's tables, before the first events (a model added by a reload may get its
    // first request before its applier starts).
    let mut ready = false;
    while let Some(first) = rx.recv().await {
        let mut requests = vec![first];
        let mut n = requests[0].events.len();
        while n < PUT_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.events.len();
                    requests.push(r);
                }
                Err(_) => break,
            }
        }
        let mut all = Vec::with_capacity(n);
        let mut sizes = Vec::with_capacity(requests.len());
        let mut replies = Vec::with_capacity(requests.len());
        for r in requests {
            sizes.push(r.events.len());
            all.extend(r.events);
            replies.push(r.reply);
        }
        let stored = match ready {
            true => store.inbox_put(all).await,
            false => match store.inbox_init().await {
                Ok(()) => {
                    ready = true;
                    store.inbox_put(all).await
                }
                Err(e) => Err(e),
            },
        };
        match stored {
            Ok(stored) => {
                let mut rest = stored.as_slice();
                for (reply, size) in replies.into_iter().zip(sizes) {
                    let (mine, tail) = rest.split_at(size.min(rest.len()));
                    rest = tail;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// Keeps one applier loop per webhook model of the table, until the daemon stops.
pub(crate) async fn appliers(shared: Arc<Shared>) {
    let mut loops: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut stop = shared.stop.subscribe();
    loop {
        let models: Vec<String> = {
            let t = shared.table();
            t.models
                .iter()
                .filter(|(_, e)| !e.removed && e.plan.source.webhook.is_some())
                .map(|(n, _)| n.clone())
                .collect()
        };
        loops.retain(|name, handle| {
            let keep = models.contains(name) && !handle.is_finished();
            if !keep {
                handle.abort();
            }
            keep
        });
        for m in models {
            if !loops.contains_key(&m) {
                loops.insert(m.clone(), tokio::spawn(apply_loop(shared.clone(), m)));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Each loop ends after its batch in progress.
    for (_, h) in loops {
        let _ = h.await;
    }
}

/// Applies one model's inbox as events arrive, holding its run lock.
async fn apply_loop(shared: Arc<Shared>, model: String) {
    let Some(store) = shared.store.get().cloned() else {
        return;
    };
    let wake = shared.inboxes.wake(&model);
    let mut stop = shared.stop.subscribe();
    if let Err(e) = store.inbox_init().await {
        tracing::error!(
            event = "inbox_failed",
            model = %model,
            error = %e,
            "cannot create the webhook inbox in the state store"
        );
    }
    let me = lock::me(0);
    let mut held = false;
    let mut beat = Instant::now();
    let mut applier: Option<(Arc<SyncPlan>, Applier)> = None;
    let mut idle_since: Option<Instant> = None;
    let mut backoff = Duration::from_secs(1);
    let mut counted = false;
    let mut next_purge = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        // The lock: taken, renewed, or waited for.
        if !held {
            match store.lock(&model, &me, LEASE).await {
                Ok(LockOutcome::Acquired { .. }) => {
                    held = true;
                    beat = Instant::now();
                }
                Ok(LockOutcome::Held(_)) => {
                    pause(&mut stop, &wake, lock::HEARTBEAT).await;
                    continue;
                }
                Err(e) => {
                    log_failure(&model, "cannot take the model's lock", &e.to_string());
                    pause(&mut stop, &wake, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        } else if beat.elapsed() >= lock::HEARTBEAT {
            match store.heartbeat(&model, &me).await {
                Ok(true) => beat = Instant::now(),
                Ok(false) => {
                    held = false;
                    applier = None;
                    continue;
                }
                Err(e) => log_failure(&model, "cannot renew the model's lock", &e.to_string()),
            }
        }
        if !counted {
            let since = shared.inboxes.mark();
            if let Ok(c) = store.inbox_counts(&model).await {
                if shared.inboxes.set_pending_if(&model, c.pending, since) {
                    shared.metrics.set_inbox(&model, c.pending, None);
                    counted = true;
                }
            }
        }
        let plan = {
            let t = shared.table();
            match t.models.get(&model) {
                Some(e) if !e.removed => (e.plan.clone(), t.project.clone()),
                _ => break,
            }
        };
        if applier.as_ref().is_some_and(|(p, _)| !Arc::ptr_eq(p, &plan.0)) {
            applier = None;
        }
        if applier.is_none() {
            match Applier::open(&plan.0, &plan.1, &shared.dir).await {
                Ok(a) => applier = Some((plan.0.clone(), a)),
                Err(e) => {
                    log_failure(&model, "cannot open the model's table", &e.to_string());
                    pause(&mut stop, &wake, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        let Some((_, a)) = applier.as_mut() else { continue };
        let stored_before = shared.inboxes.mark();
        match a.apply_batch(&store, DEFAULT_BATCH).await {
            Ok(done) if done.events > 0 => {
                backoff = Duration::from_secs(1);
                idle_since = None;
                let left = shared.inboxes.add_pending(&model, -(done.events as i64));
                let m = &shared.metrics;
                m.record_events(&model, "applied", done.applied);
                m.record_events(&model, "superseded", done.superseded);
                m.record_events(&model, "ignored", done.ignored);
                m.record_events(&model, "dead", done.dead);
                let lag = done
                    .oldest_received
                    .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
                m.set_inbox(&model, left, lag);
                if done.dead > 0 {
                    tracing::warn!(
                        event = "webhook_dead_letters",
                        model = %model,
                        dead = done.dead,
                        see = %format!("ebb inbox {model}"),
                        "webhook events could not be applied and were kept as dead letters"
                    );
                }
            }
            Ok(_) => {
                if Instant::now() >= next_purge {
                    next_purge = Instant::now() + PURGE_EVERY;
                    let before = chrono::Utc::now().timestamp_millis() - KEEP_SETTLED.as_millis() as i64;
                    match store.inbox_purge(before).await {
                        Ok(n) if n > 0 => tracing::info!(
                            event = "inbox_purged",
                            events = n,
                            "settled webhook events older than 7 days removed from the inbox"
                        ),
                        Ok(_) => {}
                        Err(e) => log_failure(&model, "cannot purge the inbox", &e.to_string()),
                    }
                }
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= IDLE_CLOSE {
                    applier = None;
                }
                if shared.inboxes.set_pending_if(&model, 0, stored_before) {
                    shared.metrics.set_inbox(&model, 0, None);
                }
                pause(&mut stop, &wake, POLL).await;
            }
            Err(e) => {
                log_failure(
                    &model,
                    "applying the inbox failed; its events stay pending",
                    &e.to_string(),
                );
                applier = None;
                pause(&mut stop, &wake, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    drop(applier);
    if held {
        let _ = store.unlock(&model, &me).await;
    }
}

/// Waits `d`, or less when woken or stopping.
async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>, wake: &Notify, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = wake.notified() => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

fn log_failure(model: &str, what: &str, error: &str) {
    tracing::error!(event = "inbox_failed", model, error, "{what}");
}

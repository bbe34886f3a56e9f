//! `ebb daemon`: runs every model on its schedule, serves health, metrics and an HTTP API,
//! picks up changed model files, and shuts down without losing what a destination
//! confirmed.
//!
//! The parts:
//! - [`timing`]: when a model fires (slot, jitter, overdue at start-up, retry backoff);
//!   pure functions of a given clock;
//! - `scheduler`: the model table, one run per model at a time, `max_concurrent_runs`;
//! - `reload`: validates the project again when a file changes; a change with errors is
//!   rejected and the previous plan keeps running;
//! - `watcher`: the loop that polls the files, reloads and reports each load's outcome;
//! - `server`: `/healthz`, `/readyz`, `/metrics`, `/api/…` (axum), the status page at `/`,
//!   bearer-token (or HTTP Basic) auth, and `POST /webhooks/{model}` (signed, no token);
//! - `alerts`: the alert loop (after each run and every minute);
//! - `inbox`: webhook models: their receivers, events stored in grouped transactions, one
//!   loop per model applying its inbox;
//! - [`metrics`]: Prometheus text; the log is `tracing` ([`crate::logging`]).
//!
//! The engine ([`crate::engine::run`]) does each run and takes the model's lock in the
//! state store, so several daemons sharing a PostgreSQL store never run a model twice at
//! once; a run refused because another daemon holds the lock is rescheduled quietly.
//! Not here: the run itself (`engine`), the stores (`state`), signatures (`webhook`).

mod alerts;
mod audit;
mod inbox;
pub mod metrics;
mod reload;
mod runner;
mod scheduler;
mod server;
pub mod timing;
mod tls;
mod watcher;

pub use server::HttpLimits;

use crate::config::project::DaemonSpec;
use crate::state::{StateError, StateStore};
use reload::{Event, Loader};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use watcher::{load, record_reload, reloader, report_event};

/// Where the HTTP server listens unless `daemon.listen` or `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Runs at once unless `daemon.max_concurrent_runs` says otherwise.
pub const DEFAULT_MAX_CONCURRENT_RUNS: u32 = 4;
/// How often the project files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);
/// The least length of `daemon.api_token` when the daemon listens beyond loopback: 32 hex
/// digits are 128 bits, beyond guessing over the network (base64 carries more a character).
pub const MIN_TOKEN_CHARS: usize = 32;
/// The least number of different characters in such a token (`aaaa…` is not a secret).
pub const MIN_TOKEN_DISTINCT: usize = 8;
/// How long to wait before trying to open an unreachable state store again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The project directory (holding `ebb.yaml`).
    pub project_dir: PathBuf,
    /// Overrides `daemon.listen`; port 0 picks a free port (logged at start-up).
    pub listen: Option<String>,
    /// How long in-flight runs get to finish their batches after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Timeouts and the connection cap of the HTTP server.
    pub http: HttpLimits,
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shut down on a signal; every run in progress finished in time.
    Clean,
    /// Runs were still in progress at the deadline; they were abandoned (their unconfirmed
    /// batches are sent again by the next run).
    DeadlineExceeded,
    /// A second signal: exited at once.
    Interrupted,
}

impl Exit {
    /// The process exit code: 0, 1, or 130 (the shell's code for an interrupt).
    pub fn code(self) -> u8 {
        match self {
            Exit::Clean => 0,
            Exit::DeadlineExceeded => 1,
            Exit::Interrupted => 130,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Load(String),
    /// `ebb.yaml` has errors (the diagnostics are in the value).
    #[error("`ebb.yaml` has errors; fix them first (`ebb validate` lists every problem)")]
    InvalidProject(Vec<crate::diagnostics::Diagnostic>),
    #[error("`daemon.api_token`: {0}")]
    Token(crate::config::env::EnvError),
    #[error("cannot listen on `{0}`: {1}")]
    Listen(String, String),
    #[error(
        "refusing to listen on `{0}` without an API token: anyone who can reach it could trigger runs and read the run history; set `daemon.api_token: ${{EBB_API_TOKEN}}` in `ebb.yaml`, or listen on a loopback address (127.0.0.1)"
    )]
    Insecure(String),
    #[error(
        "refusing to listen on `{0}` with a weak API token ({1}): beyond loopback `daemon.api_token` needs at least {MIN_TOKEN_CHARS} characters with at least {MIN_TOKEN_DISTINCT} different ones (128 bits as hex); generate one with `openssl rand -hex 32`"
    )]
    WeakToken(String, String),
    #[error("{0}")]
    Store(StateError),
    #[error("`daemon.tls`: {0}")]
    Tls(String),
}

/// What the parts of the daemon share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub metrics: metrics::Metrics,
    pub store: OnceLock<Arc<StateStore>>,
    table: Mutex<scheduler::Table>,
    /// Wakes the scheduler (a run ended, a model changed).
    pub wake: Notify,
    /// Wakes the alert loop (a run ended).
    pub alerts_wake: Notify,
    /// Run tasks alive.
    pub active: watch::Sender<usize>,
    pub permits: Arc<Semaphore>,
    /// The threads runs execute on.
    pub runner: runner::Runner,
    /// `true` once shutting down: no new runs.
    pub stop: watch::Sender<bool>,
    pub token: Option<String>,
    /// Every API token with its name and role (`api_token` is an admin named so).
    pub(crate) callers: Vec<server::Caller>,
    pub http: HttpLimits,
    /// The outcome of the last load of the project files, as `/api/models` shows it.
    pub reload: Mutex<serde_json::Value>,
    /// Webhook models' receivers, pending counts and the inbox writer.
    pub(crate) inboxes: inbox::Inboxes,
    /// `daemon.allow_ips`: who may connect (empty: anyone who can reach the listener).
    pub(crate) allow: Vec<crate::http::allow::Cidr>,
    /// `daemon.trusted_proxies`: connections from them are checked request by request,
    /// against the client `X-Forwarded-For` names.
    pub(crate) trusted: Vec<crate::http::allow::Cidr>,
    /// `daemon.tls`: connections are HTTPS.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Set once the models are in the table (before, a webhook could not be told from a
    /// model that does not exist).
    pub(crate) models_loaded: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn table(&self) -> std::sync::MutexGuard<'_, scheduler::Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the daemon is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<&'static str> {
        if *self.stop.borrow() {
            Some("shutting down")
        } else if self.store.get().is_none() {
            Some("the state store is not open yet")
        } else {
            None
        }
    }
}

/// Runs the daemon until a signal arrives on `signals` (its name, e.g. `SIGTERM`; a
/// closed channel counts as one). The first signal stops new runs and lets the runs in
/// progress finish their batches, up to `shutdown_timeout`; a second one ends at once.
pub async fn run(opts: DaemonOptions, mut signals: mpsc::Receiver<&'static str>) -> Result<Exit, DaemonError> {
    let dir = opts.project_dir.clone();
    // The project, as the daemon starts: ebb.yaml must validate; bad model files are
    // rejected (and logged) while the others run.
    let loader = Arc::new(Mutex::new(Loader::new(&dir)));
    let (events, accepted) = load(&loader).await;
    let Some(accepted) = accepted else {
        return Err(events
            .into_iter()
            .find_map(|e| match e {
                Event::ProjectRejected { diagnostics } => Some(DaemonError::InvalidProject(diagnostics)),
                Event::Unreadable { error } => Some(DaemonError::Load(error)),
                _ => None,
            })
            .unwrap_or_else(|| DaemonError::Load("the project could not be loaded".into())));
    };
    let project = accepted.project.clone();
    crate::crypt::Keys::global().map_err(|e| DaemonError::Load(e.to_string()))?;
    let settings: DaemonSpec = project.daemon.clone().unwrap_or_default();
    let tls = settings
        .tls
        .as_ref()
        .map(|t| tls::acceptor(&dir, t))
        .transpose()
        .map_err(DaemonError::Tls)?;
    let allow = settings
        .allow_ips
        .iter()
        .flatten()
        .map(|c| crate::http::allow::Cidr::parse(c).map_err(|e| DaemonError::Load(format!("`daemon.allow_ips`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let trusted = settings
        .trusted_proxies
        .iter()
        .flatten()
        .map(|c| {
            crate::http::allow::Cidr::parse(c).map_err(|e| DaemonError::Load(format!("`daemon.trusted_proxies`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let token = match settings.api_token.as_deref() {
        Some(t) => Some(crate::config::env::expand_env(t).map_err(DaemonError::Token)?).filter(|t| !t.is_empty()),
        None => None,
    };
    // Every token the API takes: `api_token` (admin), then the named ones.
    let mut callers: Vec<server::Caller> = token
        .iter()
        .map(|t| server::Caller {
            name: "api_token".into(),
            secret: t.clone(),
            role: crate::config::project::Role::Admin,
        })
        .collect();
    for t in settings.tokens.iter().flatten() {
        let secret = crate::config::env::expand_env(&t.token).map_err(DaemonError::Token)?;
        if !secret.is_empty() {
            callers.push(server::Caller {
                name: t.name.clone(),
                secret,
                role: t.role,
            });
        }
    }
    let listen = opts
        .listen
        .clone()
        .or(settings.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let weakest = callers
        .iter()
        .map(|c| c.secret.as_str())
        .find(|t| token_weakness(t).is_some());
    let (listener, loopback) = bind(&listen, weakest.or(callers.first().map(|c| c.secret.as_str()))).await?;
    let bound = listener
        .local_addr()
        .map_err(|e| DaemonError::Listen(listen.clone(), e.to_string()))?;
    let max_runs = settings
        .max_concurrent_runs
        .unwrap_or(DEFAULT_MAX_CONCURRENT_RUNS)
        .max(1) as usize;
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        metrics: metrics::Metrics::default(),
        store: OnceLock::new(),
        table: Mutex::new(scheduler::Table {
            project: project.clone(),
            models: Default::default(),
        }),
        wake: Notify::new(),
        alerts_wake: Notify::new(),
        active: watch::Sender::new(0),
        permits: Arc::new(Semaphore::new(max_runs)),
        runner: runner::Runner::new(max_runs)
            .map_err(|e| DaemonError::Load(format!("cannot start the run threads: {e}")))?,
        stop: watch::Sender::new(false),
        token,
        callers,
        http: opts.http,
        reload: Mutex::new(serde_json::Value::Null),
        inboxes: inbox::Inboxes::default(),
        models_loaded: std::sync::atomic::AtomicBool::new(false),
        allow,
        trusted,
        tls,
    });
    if let (true, Some(why)) = (loopback, shared.token.as_deref().and_then(token_weakness)) {
        tracing::warn!(
            event = "api_token_weak",
            why = %why,
            min_chars = MIN_TOKEN_CHARS,
            "`daemon.api_token` is weak; the daemon listens on loopback only, but a strong token is needed to listen beyond it"
        );
    }
    for e in &events {
        report_event(&shared, e);
    }
    record_reload(&shared, &events);

    // HTTP first, so that /healthz answers while the store opens.
    let (http_stop, http_stopped) = watch::channel(false);
    let server = tokio::spawn(server::serve(listener, shared.clone(), http_stopped));
    let tokens = json!(shared
        .callers
        .iter()
        .map(|c| format!("{} ({})", c.name, c.role.as_str()))
        .collect::<Vec<_>>());
    tracing::info!(
        event = "listening",
        addr = %bound,
        auth = if shared.callers.is_empty() { "none" } else { "bearer" },
        json.tokens = %tokens,
        tls = shared.tls.is_some(),
        allow_ips = %if shared.allow.is_empty() {
            "any".to_string()
        } else {
            format!("{} networks", shared.allow.len())
        },
        max_connections = shared.http.max_connections,
        header_timeout_secs = shared.http.header_timeout.as_secs_f64(),
        request_timeout_secs = shared.http.request_timeout.as_secs_f64(),
        "HTTP API on {}://{bound}",
        if shared.tls.is_some() { "https" } else { "http" }
    );
    if !loopback && shared.tls.is_none() && shared.trusted.is_empty() {
        tracing::warn!(
            event = "plain_http",
            "the API listens beyond loopback over plain HTTP: tokens and answers cross the network in clear; set `daemon.tls` or put a TLS-terminating proxy in front (`daemon.trusted_proxies`)"
        );
    }
    let url = project.state.as_ref().and_then(|s| s.url.clone());
    let store = match open_store(url.as_deref(), &dir, &mut signals).await {
        Ok(Some(store)) => store,
        other => {
            let _ = http_stop.send(true);
            return other.map(|_| Exit::Clean);
        }
    };
    let store_name = store.name().to_string();
    let _ = shared.store.set(Arc::new(store));
    scheduler::apply(&shared, accepted.project.clone(), accepted.plans.clone()).await;
    shared.models_loaded.store(true, std::sync::atomic::Ordering::SeqCst);
    {
        let t = shared.table();
        let scheduled = t.models.values().filter(|e| e.plan.schedule.is_some()).count();
        tracing::info!(
            event = "ready",
            project = %dir.display(),
            state = %store_name,
            models = t.models.len(),
            scheduled,
            on_demand = t.models.len() - scheduled,
            max_concurrent_runs = max_runs,
            "ready: models scheduled"
        );
        let keeps_values = t
            .models
            .values()
            .any(|e| e.plan.conflicts.is_some() || e.plan.source.kind == crate::config::model::ConnectionType::Webhook);
        if keeps_values && crate::crypt::Keys::global().is_ok_and(|k| k.current_id().is_none()) {
            tracing::warn!(
                event = "values_in_clear",
                "webhook bodies and conflict values are kept in the state store in clear: set `EBB_ENCRYPTION_KEY` (`ebb keys generate`) to seal them"
            );
        }
    }
    let scheduler_task = tokio::spawn(scheduler::scheduler(shared.clone()));
    let appliers = tokio::spawn(inbox::appliers(shared.clone()));
    let reload_task = tokio::spawn(reloader(shared.clone(), loader));
    let alerts_task = tokio::spawn(alerts::alerts(shared.clone()));
    let purge_task = tokio::spawn(audit::purger(shared.clone()));

    let first = signals.recv().await.unwrap_or("end of input");
    let exit = drain(&shared, first, opts.shutdown_timeout, &mut signals).await;
    if exit == Exit::Interrupted {
        return Ok(exit);
    }
    scheduler_task.abort();
    reload_task.abort();
    alerts_task.abort();
    purge_task.abort();
    let _ = http_stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    // The webhook appliers end after their batch in progress (events not applied stay
    // pending in the inbox).
    let _ = tokio::time::timeout(opts.shutdown_timeout.max(Duration::from_secs(1)), appliers).await;
    match exit {
        Exit::Clean => tracing::info!(event = "stopped", "stopped: every run in progress finished"),
        _ => tracing::error!(
            event = "stopped",
            runs_in_progress = *shared.active.borrow(),
            "deadline reached with runs in progress: exiting; their unconfirmed batches are sent again by the next run"
        ),
    }
    Ok(exit)
}

/// Why an API token is too weak to guard an address beyond loopback, if it is.
fn token_weakness(token: &str) -> Option<String> {
    let chars = token.chars().count();
    let distinct = token.chars().collect::<std::collections::HashSet<char>>().len();
    if chars < MIN_TOKEN_CHARS {
        Some(format!("it has {chars} character{}", if chars == 1 { "" } else { "s" }))
    } else if distinct < MIN_TOKEN_DISTINCT {
        Some(format!("it has only {distinct} different characters"))
    } else {
        None
    }
}

/// Binds the HTTP listener, refusing an address beyond loopback without a strong token;
/// says whether every address bound is loopback.
async fn bind(listen: &str, token: Option<&str>) -> Result<(tokio::net::TcpListener, bool), DaemonError> {
    let fail = |e: String| DaemonError::Listen(listen.to_string(), e);
    let listen = crate::config::env::expand_env(listen).map_err(|e| fail(e.to_string()))?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen.as_str())
        .await
        .map_err(|e| fail(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(fail("the name resolves to no address".into()));
    }
    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
    if !loopback {
        match token {
            None => return Err(DaemonError::Insecure(listen)),
            Some(t) => {
                if let Some(why) = token_weakness(t) {
                    return Err(DaemonError::WeakToken(listen, why));
                }
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(addrs.as_slice())
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok((listener, loopback))
}

/// Opens the state store, trying again while it cannot be reached; `None` if a signal
/// came first. A store that is not ebb's, or is newer, is an error at once.
async fn open_store(
    url: Option<&str>,
    dir: &std::path::Path,
    signals: &mut mpsc::Receiver<&'static str>,
) -> Result<Option<StateStore>, DaemonError> {
    loop {
        let outcome = tokio::select! {
            r = StateStore::open(url, dir) => Some(r),
            sig = signals.recv() => {
                tracing::info!(event = "shutdown", signal = sig, "signal before the state store opened: exiting");
                None
            }
        };
        match outcome {
            None => return Ok(None),
            Some(Ok(s)) => return Ok(Some(s)),
            Some(Err(e @ (StateError::Newer { .. } | StateError::Foreign(..)))) => return Err(DaemonError::Store(e)),
            Some(Err(e)) => tracing::error!(
                event = "store_unavailable",
                error = %e,
                retry_in_secs = STORE_RETRY.as_secs(),
                "cannot open the state store; trying again"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(STORE_RETRY) => {}
            sig = signals.recv() => {
                tracing::info!(event = "shutdown", signal = sig, "signal before the state store opened: exiting");
                return Ok(None);
            }
        }
    }
}

/// After the first signal: no new runs, the runs in progress are told to stop after their
/// batches in flight, and waited for up to `deadline`, or until a second signal.
async fn drain(shared: &Shared, signal: &str, deadline: Duration, signals: &mut mpsc::Receiver<&'static str>) -> Exit {
    let _ = shared.stop.send(true);
    shared.wake.notify_waiters();
    let in_progress = {
        let t = shared.table();
        let running: Vec<&scheduler::Running> = t.models.values().filter_map(|e| e.run.as_ref()).collect();
        for r in &running {
            r.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        running.len()
    };
    tracing::info!(
        event = "shutdown",
        signal,
        runs_in_progress = in_progress,
        deadline_secs = deadline.as_secs_f64(),
        "shutting down: no new runs; runs in progress finish their batches (a second signal exits at once)"
    );
    let mut active = shared.active.subscribe();
    tokio::select! {
        r = tokio::time::timeout(deadline, active.wait_for(|n| *n == 0)) => {
            if r.is_ok() { Exit::Clean } else { Exit::DeadlineExceeded }
        }
        // (A closed channel disables this branch.)
        Some(sig) = signals.recv() => {
            tracing::warn!(
                event = "shutdown_now",
                signal = sig,
                "second signal: exiting at once; batches not yet confirmed are sent again by the next run"
            );
            Exit::Interrupted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_guarding_more_than_loopback_is_long_and_varied() {
        assert_eq!(token_weakness("x").as_deref(), Some("it has 1 character"));
        assert_eq!(
            token_weakness(&"ab".repeat(16)).as_deref(),
            Some("it has only 2 different characters")
        );
        assert_eq!(token_weakness("9f86d081884c7d659a2feaa0c55ad015"), None);
        assert!(
            token_weakness("9f86d081884c7d659a2feaa0c55ad01").is_some(),
            "31 characters"
        );
    }

    #[tokio::test]
    async fn beyond_loopback_a_weak_token_is_refused_and_on_loopback_it_binds() {
        let weak = bind("0.0.0.0:0", Some("short")).await.unwrap_err();
        assert!(matches!(weak, DaemonError::WeakToken(..)), "{weak}");
        assert!(!weak.to_string().contains("short"), "{weak}");
        assert!(matches!(
            bind("0.0.0.0:0", None).await.unwrap_err(),
            DaemonError::Insecure(_)
        ));
        let (_, loopback) = bind("127.0.0.1:0", Some("short")).await.unwrap();
        assert!(loopback);
    }
}

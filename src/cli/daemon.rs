//! `ebb daemon`: the process around [`crate::daemon::run`]: the runtime, the signals and
//! the exit code.

use crate::daemon::{DaemonError, DaemonOptions};
use crate::diagnostics::render;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

pub fn run(project: Option<PathBuf>, listen: Option<String>, shutdown_timeout: f64) -> anyhow::Result<u8> {
    let dir = super::project_dir(project)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (tx, rx) = mpsc::channel(4);
    // The handlers go in first: a signal during start-up is a shutdown, not a kill.
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if tx.send(name).await.is_err() {
                    break;
                }
            }
        });
        Ok::<_, std::io::Error>(())
    })?;
    let opts = DaemonOptions {
        project_dir: dir,
        listen,
        shutdown_timeout: Duration::from_secs_f64(shutdown_timeout.max(0.0)),
        http: crate::daemon::HttpLimits::from_env(|k| std::env::var(k).ok()),
    };
    let result = rt.block_on(crate::daemon::run(opts, rx));
    let code = match result {
        Ok(exit) => exit.code(),
        Err(DaemonError::InvalidProject(diagnostics)) => {
            // (Masked: a literal password in `ebb.yaml` is one of the errors it can show.)
            eprint!(
                "{}",
                crate::redact::text(&render::render(
                    &diagnostics,
                    render::Format::Human,
                    super::color_stderr()
                ))
            );
            eprintln!("error: {}", DaemonError::InvalidProject(Vec::new()));
            1
        }
        Err(e) => {
            eprintln!("error: {}", crate::redact::text(&e.to_string()));
            1
        }
    };
    // Runs abandoned at the deadline or by a second signal are not waited for.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(code)
}

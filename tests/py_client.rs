//! Independent Python clients the tests drive the sandbox with (simple-salesforce,
//! hubspot-api-client), each in a venv of its own that `.ci/run` installs: finding the
//! interpreter (required under CI, else the test is skipped, loudly) and running a check
//! script with a deadline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A Python client library in its venv.
pub struct PyClient {
    /// Overrides the interpreter's path.
    pub env: &'static str,
    /// The venv, under `$HOME`.
    pub venv: &'static str,
    /// The module the client imports as.
    pub module: &'static str,
    /// How to install it, for the message.
    pub install: &'static str,
}

impl PyClient {
    /// The interpreter that has the client. Without one: a panic under CI (or
    /// `EBB_REQUIRE_PY_CLIENT`), else `None` after saying that `test` is skipped.
    pub fn python(&self, test: &str) -> Option<PathBuf> {
        let why = match self.find() {
            Ok(p) => return Some(p),
            Err(why) => why,
        };
        let install = self.install;
        if std::env::var_os("CI").is_some() || std::env::var_os("EBB_REQUIRE_PY_CLIENT").is_some() {
            panic!("the Python client is required here (CI or EBB_REQUIRE_PY_CLIENT) and missing: {why}; install: {install}");
        }
        // Written past libtest's capture, so that a skipped check is seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}; install it with: {install}");
        None
    }

    fn find(&self) -> Result<PathBuf, String> {
        let path = match std::env::var_os(self.env) {
            Some(p) => PathBuf::from(p),
            None => {
                let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
                Path::new(&home).join(self.venv).join("bin/python")
            }
        };
        let probe = Command::new(&path)
            .args(["-c", &format!("import {}", self.module)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(s) if s.success() => Ok(path),
            Ok(_) => Err(format!("{} cannot import {}", path.display(), self.module)),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// Runs `tests/clients/{script}` with `args` under `python`, within 120 s: its status,
/// stdout and stderr (read as they come, so that a full pipe never stalls the script).
pub fn run_check(python: &Path, script: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    let mut child = Command::new(python)
        .arg(&path)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

//! The sandbox's HubSpot API driven by HubSpot's official Python client,
//! hubspot-api-client (`tests/clients/hubspot_check.py`): the independent check. The
//! interpreter is `$EBB_TEST_HUBSPOT_PYTHON`, else `$HOME/.cache/ebb-hubspot-py/bin/python`
//! (the venv `.ci/run` installs); without it the test fails under CI (`CI` set) or with
//! `EBB_REQUIRE_PY_CLIENT` set, and otherwise says on stderr how to install it and passes.

use super::TOKEN;
use ebb::sandbox::{Sandbox, SandboxConfig};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "python3 -m venv $HOME/.cache/ebb-hubspot-py && $HOME/.cache/ebb-hubspot-py/bin/pip install hubspot-api-client==12.0.0";

/// The interpreter that has hubspot-api-client, or why there is none.
fn python() -> Result<PathBuf, String> {
    let path = match std::env::var_os("EBB_TEST_HUBSPOT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
            Path::new(&home).join(".cache/ebb-hubspot-py/bin/python")
        }
    };
    let probe = Command::new(&path)
        .args(["-c", "import hubspot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Ok(path),
        Ok(_) => Err(format!("{} cannot import hubspot", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[test]
fn hubspot_api_client_works_against_the_sandbox() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            let required = std::env::var_os("CI").is_some() || std::env::var_os("EBB_REQUIRE_PY_CLIENT").is_some();
            if required {
                panic!("the HubSpot Python client is required here (CI or EBB_REQUIRE_PY_CLIENT) and missing: {why}; install: {INSTALL}");
            }
            // Written past libtest's capture, so that a skipped check is seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED hubspot_api_client_works_against_the_sandbox: {why}; install it with: {INSTALL}"
            );
            return;
        }
    };
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/hubspot_check.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args([sandbox.url().as_str(), TOKEN])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    // Read as it comes, so that a full pipe never stalls the script.
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
            panic!("the hubspot-api-client check did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.success() && stdout.contains("all checks passed"),
        "the hubspot-api-client check failed ({status}):\n{stdout}\n{stderr}"
    );
    // What the client left: five contacts, the last archived, the first with a last name.
    let records = sandbox.hubspot().records("contacts");
    assert_eq!(records.len(), 5);
    assert_eq!(records.iter().filter(|r| r["archived"] == true).count(), 1);
    assert_eq!(records[0]["lastname"], "Zero");
}

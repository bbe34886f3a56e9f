//! `ebb sandbox` driven by an independent Salesforce client: simple-salesforce (Python)
//! over REST (queries with datetime filters included), Collections and Bulk API 2.0
//! ingest and query jobs, running `tests/clients/simple_salesforce_check.py` against a
//! sandbox started here. The
//! script asserts each answer as a real org gives it; this test asserts it passed and what
//! it left in the org.
//!
//! The interpreter is `$EBB_TEST_PYTHON`, else `$HOME/.cache/ebb-py/bin/python` (the venv
//! `.ci/run` installs, with `pip install simple-salesforce==1.12.10`). Without it the test
//! fails under CI (`CI` set) or with `EBB_REQUIRE_PY_CLIENT` set, and otherwise says once
//! on stderr how to install it and passes.

use ebb::sandbox::{Sandbox, SandboxConfig};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str =
    "python3 -m venv $HOME/.cache/ebb-py && $HOME/.cache/ebb-py/bin/pip install simple-salesforce==1.12.10";

/// The interpreter that has simple-salesforce, or why there is none.
fn python() -> Result<PathBuf, String> {
    let path = match std::env::var_os("EBB_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
            Path::new(&home).join(".cache/ebb-py/bin/python")
        }
    };
    let probe = Command::new(&path)
        .args(["-c", "import simple_salesforce"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Ok(path),
        Ok(_) => Err(format!("{} cannot import simple_salesforce", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[test]
fn simple_salesforce_works_against_the_sandbox() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            let required = std::env::var_os("CI").is_some() || std::env::var_os("EBB_REQUIRE_PY_CLIENT").is_some();
            if required {
                panic!("the Python client is required here (CI or EBB_REQUIRE_PY_CLIENT) and missing: {why}; install: {INSTALL}");
            }
            // Written past libtest's capture, so that a skipped check is seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED simple_salesforce_works_against_the_sandbox: {why}; install it with: {INSTALL}"
            );
            return;
        }
    };
    let sandbox = Sandbox::start_in_thread(SandboxConfig {
        // Small pages, so that query_all follows nextRecordsUrl.
        query_page_size: 2,
        bulk_step_delay: Duration::from_millis(20),
        ..SandboxConfig::default()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/simple_salesforce_check.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args([sandbox.url().as_str(), "ebb-sandbox", "ebb-sandbox"])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    // Read as it comes, so that a full pipe never stalls the script.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the simple-salesforce check did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.success(),
        "the simple-salesforce check failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
    // What the client left in the org: the deleted record gone, the others there.
    let mut names: Vec<String> = sandbox
        .records("Contact")
        .iter()
        .map(|r| r["LastName"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["Collections", "Hamilton", "Hopper", "Liskov", "Ritchie", "Turing"],
        "{stdout}"
    );
    // One token for the client, one refused for the wrong secret.
    assert_eq!(sandbox.calls_to("token"), 2);
    assert!(sandbox.calls_to("bulk") >= 5, "{}", sandbox.calls_to("bulk"));
    // Pages of 2: query_all of 4 records (2 calls), one query, queryAll of 5 (3 calls), one
    // queryAll of 1; then with a datetime filter query_all of 6 (3 calls), queryAll of 7 (4
    // calls) and one empty: the client followed nextRecordsUrl.
    assert_eq!(sandbox.calls_to("query"), 15);
    // Bulk 2.0 query jobs: create, polls, three and three result pages.
    assert!(
        sandbox.calls_to("bulk") >= 5 + 2 * 2 + 6,
        "{}",
        sandbox.calls_to("bulk")
    );
}

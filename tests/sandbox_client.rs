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

use crate::py_client::{run_check, PyClient};
use ebb::sandbox::{Sandbox, SandboxConfig};
use std::time::Duration;

const CLIENT: PyClient = PyClient {
    env: "EBB_TEST_PYTHON",
    venv: ".cache/ebb-py",
    module: "simple_salesforce",
    install: "python3 -m venv $HOME/.cache/ebb-py && $HOME/.cache/ebb-py/bin/pip install simple-salesforce==1.12.10",
};

#[test]
fn simple_salesforce_works_against_the_sandbox() {
    let Some(python) = CLIENT.python("simple_salesforce_works_against_the_sandbox") else {
        return;
    };
    let sandbox = Sandbox::start_in_thread(SandboxConfig {
        // Small pages, so that query_all follows nextRecordsUrl.
        query_page_size: 2,
        bulk_step_delay: Duration::from_millis(20),
        ..SandboxConfig::default()
    });
    let (status, stdout, stderr) = run_check(
        &python,
        "simple_salesforce_check.py",
        &[sandbox.url().as_str(), "ebb-sandbox", "ebb-sandbox"],
    );
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

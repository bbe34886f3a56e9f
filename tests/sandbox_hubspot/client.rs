//! The sandbox's HubSpot API driven by HubSpot's official Python client,
//! hubspot-api-client (`tests/clients/hubspot_check.py`): the independent check. The
//! interpreter is `$EBB_TEST_HUBSPOT_PYTHON`, else `$HOME/.cache/ebb-hubspot-py/bin/python`
//! (the venv `.ci/run` installs); without it the test fails under CI (`CI` set) or with
//! `EBB_REQUIRE_PY_CLIENT` set, and otherwise says on stderr how to install it and passes.
//! A second script (`tests/clients/hubspot_oauth_check.py`) checks the OAuth token
//! endpoint, deals and the custom object with the same client.

use super::TOKEN;
use crate::py_client::{run_check, PyClient};
use ebb::sandbox::{Sandbox, SandboxConfig};

const CLIENT: PyClient = PyClient {
    env: "EBB_TEST_HUBSPOT_PYTHON",
    venv: ".cache/ebb-hubspot-py",
    module: "hubspot",
    install: "python3 -m venv $HOME/.cache/ebb-hubspot-py && $HOME/.cache/ebb-hubspot-py/bin/pip install hubspot-api-client==12.0.0",
};

#[test]
fn hubspot_api_client_works_against_the_sandbox() {
    let Some(python) = CLIENT.python("hubspot_api_client_works_against_the_sandbox") else {
        return;
    };
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let (status, stdout, stderr) = run_check(&python, "hubspot_check.py", &[sandbox.url().as_str(), TOKEN]);
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

/// HubSpot's client asks the token endpoint for an access token with the refresh token
/// (its own form-urlencoded request, its own answer model), then writes and reads deals and
/// the custom object with it; a wrong refresh token is its 400 `BAD_REFRESH_TOKEN`.
#[test]
fn hubspot_api_client_gets_an_oauth_token_and_writes_deals_and_the_custom_object() {
    let Some(python) = CLIENT.python("hubspot_api_client_gets_an_oauth_token_and_writes_deals_and_the_custom_object")
    else {
        return;
    };
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let (id, secret, refresh) = sandbox.hubspot().oauth_app();
    let (status, stdout, stderr) = run_check(
        &python,
        "hubspot_oauth_check.py",
        &[sandbox.url().as_str(), &id, &secret, &refresh],
    );
    assert!(
        status.success() && stdout.contains("all checks passed"),
        "the hubspot-api-client OAuth check failed ({status}):\n{stdout}\n{stderr}"
    );
    assert_eq!(sandbox.hubspot().token_requests(), 2, "one granted, one refused");
    assert_eq!(sandbox.hubspot().records("deals").len(), 3);
    assert_eq!(sandbox.hubspot().records("2-1234567").len(), 1);
}

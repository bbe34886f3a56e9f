//! `ebb run` into the sandbox's HubSpot API over a connection that authenticates with an
//! OAuth refresh token (`client_id`, `client_secret`, `refresh_token`): one token for
//! batches in flight together, a token expired mid-run renewed (with the refresh token the
//! last answer carried) and the refused call replayed, a token renewed before it lapses, a
//! 503 from the token endpoint retried, a refused refresh token stopping the run with a
//! message that names the connection and no secret; deals and the custom object upserted
//! the same way.

use crate::support::{run_json, stderr, stdout};
use ebb::sandbox::{HubSpotConfig, Sandbox, SandboxConfig};
use std::path::Path;
use std::time::{Duration, Instant};

const CLIENT_SECRET_VAR: &str = "EBB_TEST_HS_CLIENT_SECRET";

/// The project: a `hubspot` connection over OAuth (`max_concurrency` as given) and three
/// models: `contacts_hs` (`rows` customers by email), `deals_hs` (250 deals by
/// `warehouse_id`) and `subscriptions_hs` (the custom object by `subscription_id`).
fn project(sandbox: &Sandbox, max_concurrency: u32, rows: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  hubspot:
    type: hubspot
    client_id: ${{EBB_TEST_HS_CLIENT_ID}}
    client_secret: ${{{CLIENT_SECRET_VAR}}}
    refresh_token: ${{EBB_TEST_HS_REFRESH_TOKEN}}
    base_url: {}
    max_concurrency: {max_concurrency}
",
            sandbox.url()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/hubspot.yaml"),
        "models:
  - name: contacts_hs
    source:
      type: duckdb
      query: SELECT email, first_name, ltv FROM customers
    destination:
      type: hubspot
      object: contacts
      unique_identifier: email
    mappings:
      - source: email
        destination: email
      - source: first_name
        destination: firstname
      - source: ltv
        destination: ltv
  - name: deals_hs
    source:
      type: duckdb
      query: SELECT * FROM deals
    destination:
      type: hubspot
      object: deals
      unique_identifier: deal_key
    mappings:
      - source: deal_key
        destination: warehouse_id
      - source: name
        destination: dealname
      - source: amount
        destination: amount
      - source: stage
        destination: dealstage
      - source: close_date
        destination: closedate
      - constant: default
        destination: pipeline
  - name: subscriptions_hs
    source:
      type: duckdb
      query: SELECT * FROM subscriptions
    destination:
      type: hubspot
      object: p_subscriptions
      unique_identifier: sub_id
    mappings:
      - source: sub_id
        destination: subscription_id
      - source: plan
        destination: plan
      - source: mrr
        destination: mrr
      - source: started
        destination: started_on
",
    )
    .unwrap();
    let c = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE customers AS
           SELECT 'c' || range || '@x.com' AS email, 'Name ' || range AS first_name, (range * 10)::VARCHAR AS ltv
           FROM range({rows});
         CREATE TABLE deals AS
           SELECT 'D-' || range AS deal_key, 'Deal ' || range AS name, (range * 100 + 0.5)::VARCHAR AS amount,
                  CASE WHEN range % 2 = 0 THEN 'closedwon' ELSE 'qualifiedtobuy' END AS stage,
                  '2024-06-' || lpad((range % 28 + 1)::VARCHAR, 2, '0') || 'T12:00:00Z' AS close_date
           FROM range(250);
         CREATE TABLE subscriptions AS
           SELECT 'S-' || range AS sub_id, ['Starter', 'Professional', 'Enterprise'][range % 3 + 1] AS plan,
                  (range * 9)::VARCHAR AS mrr, '2024-01-' || lpad((range % 28 + 1)::VARCHAR, 2, '0') AS started
           FROM range(30);"
    ))
    .unwrap();
    dir
}

/// The sandbox's OAuth app as the environment of `ebb run`, with `refresh` as the refresh
/// token (the app's own when `None`).
fn env(sandbox: &Sandbox, refresh: Option<&str>) -> Vec<(&'static str, String)> {
    let (id, secret, token) = sandbox.hubspot().oauth_app();
    vec![
        ("EBB_TEST_HS_CLIENT_ID", id),
        (CLIENT_SECRET_VAR, secret),
        ("EBB_TEST_HS_REFRESH_TOKEN", refresh.map_or(token, str::to_string)),
    ]
}

fn run(dir: &Path, model: &str, env: &[(&'static str, String)]) -> (i32, serde_json::Value) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_json(dir, model, &[], &env)
}

fn live(sandbox: &Sandbox, object: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    sandbox
        .hubspot()
        .records(object)
        .into_iter()
        .filter(|r| r["archived"] != true)
        .collect()
}

/// Calls in a run's summary: the batches, any refused and replayed, the token requests.
fn api_calls(s: &serde_json::Value) -> u64 {
    s["counts"]["api_calls"]
        .as_u64()
        .unwrap_or_else(|| panic!("no api_calls: {s:#}"))
}

/// The sandbox rotates refresh tokens here: the renewal succeeds only with the refresh
/// token the first answer carried, not the configured one (forgotten once used).
#[test]
fn an_access_token_expired_mid_run_is_renewed_and_the_refused_batch_replayed() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig {
        hubspot: HubSpotConfig {
            latency: Duration::from_millis(120),
            rotate_refresh_tokens: true,
            ..HubSpotConfig::default()
        },
        ..SandboxConfig::default()
    });
    // One request at a time: three batches of 100, 100 and 50 in a row.
    let p = project(&sandbox, 1, 250);
    let hub = sandbox.hubspot().clone();
    // Every access token expires as soon as the first batch is counted: the next batch
    // meets a 401 EXPIRED_AUTHENTICATION.
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while hub.calls() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        hub.expire_tokens();
    });
    let (code, s) = run(p.path(), "contacts_hs", &env(&sandbox, None));
    watcher.join().unwrap();
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["confirmed"], 250, "{s:#}");
    assert_eq!(live(&sandbox, "contacts").len(), 250);
    let hub = sandbox.hubspot();
    assert_eq!(hub.token_requests(), 2, "one token, then one renewal after the expiry");
    // The run keeps two batches awaiting their answer: the one waiting for the request slot
    // took its token before the expiry too. Each refused batch is replayed once, both
    // with the one renewed token.
    let refused = hub.unauthorized();
    assert!((1..=2).contains(&refused), "{refused} refused");
    assert_eq!(hub.calls(), 3, "three batches admitted");
    // Three batches, the refused ones, two token requests.
    assert_eq!(api_calls(&s), 3 + refused + 2, "{s:#}");
}

#[test]
fn one_token_serves_batches_in_flight_together_and_deals_and_the_custom_object_are_upserted() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig {
        hubspot: HubSpotConfig {
            latency: Duration::from_millis(50),
            ..HubSpotConfig::default()
        },
        ..SandboxConfig::default()
    });
    let p = project(&sandbox, 4, 10);
    let env = env(&sandbox, None);

    // `validate --connect` reads each object's properties over OAuth: the models fit.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["validate", "--connect", "--format", "json"])
        .current_dir(p.path())
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(sandbox.hubspot().token_requests(), 1, "one token for the three objects");

    // 250 deals: three batches in flight together, one token request among them, and the
    // properties (`closedate` values look like times: the destination needs its type).
    let (code, s) = run(p.path(), "deals_hs", &env);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(
        (s["counts"]["confirmed"].as_u64(), api_calls(&s)),
        (Some(250), 5),
        "{s:#}"
    );
    assert_eq!(sandbox.hubspot().token_requests(), 2, "one more for the run");
    let deals = live(&sandbox, "deals");
    assert_eq!(deals.len(), 250);
    let d7 = deals.iter().find(|d| d["warehouse_id"] == "D-7").unwrap();
    assert_eq!(
        (d7["dealname"].as_str(), d7["amount"].as_str(), d7["dealstage"].as_str()),
        (Some("Deal 7"), Some("700.5"), Some("qualifiedtobuy")),
        "{d7:?}"
    );
    assert_eq!(d7["closedate"], "2024-06-08T12:00:00.000Z");
    assert_eq!(d7["pipeline"], "default");

    // The token endpoint answers 503 once: the run retries and completes.
    sandbox.hubspot().fail_token_requests(1);
    let (code, s) = run(p.path(), "subscriptions_hs", &env);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["confirmed"], 30, "{s:#}");
    assert_eq!(sandbox.hubspot().token_requests(), 4, "the 503, then the token");
    let subs = sandbox.hubspot().records("2-1234567");
    assert_eq!(subs.len(), 30);
    let s4 = subs.iter().find(|r| r["subscription_id"] == "S-4").unwrap();
    assert_eq!(
        (s4["plan"].as_str(), s4["mrr"].as_str(), s4["started_on"].as_str()),
        (Some("Professional"), Some("36"), Some("2024-01-05")),
        "{s4:?}"
    );

    // A changed deal: only it is sent, by the same unique property, to the same record.
    let c = duckdb::Connection::open(p.path().join("warehouse.duckdb")).unwrap();
    c.execute_batch("UPDATE deals SET stage = 'closedlost' WHERE deal_key = 'D-7'")
        .unwrap();
    drop(c);
    let (code, s) = run(p.path(), "deals_hs", &env);
    assert_eq!((code, s["counts"]["sent"].as_u64()), (0, Some(1)), "{s:#}");
    let deals = live(&sandbox, "deals");
    assert_eq!(deals.len(), 250);
    assert_eq!(
        deals.iter().find(|d| d["warehouse_id"] == "D-7").unwrap()["dealstage"],
        "closedlost"
    );
}

/// Tokens of 3 s (renewed a tenth of their life early, 300 ms) and calls of 60 ms: the
/// connection fetches a new token before the old one lapses, so no call is refused.
#[test]
fn an_access_token_is_renewed_before_it_lapses() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig {
        hubspot: HubSpotConfig {
            latency: Duration::from_millis(60),
            access_token_lifetime: Duration::from_secs(3),
            ..HubSpotConfig::default()
        },
        ..SandboxConfig::default()
    });
    let p = project(&sandbox, 1, 4000);
    let started = Instant::now();
    let (code, s) = run(p.path(), "contacts_hs", &env(&sandbox, None));
    let took = started.elapsed();
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["counts"]["confirmed"], 4000, "{s:#}");
    let hub = sandbox.hubspot();
    assert_eq!(hub.unauthorized(), 0, "no call was refused ({took:?})");
    assert!(took > Duration::from_secs(3), "the run outlived a token: {took:?}");
    assert!(hub.token_requests() >= 2, "{} in {took:?}", hub.token_requests());
    assert_eq!(api_calls(&s), 40 + hub.token_requests(), "{s:#}");
}

#[test]
fn a_refused_refresh_token_stops_the_run_naming_the_connection_and_no_secret() {
    let sandbox = Sandbox::start_in_thread(SandboxConfig::default());
    let p = project(&sandbox, 4, 250);
    let wrong = "wrong-refresh-token-4f1c9a";
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "contacts_hs"])
        .current_dir(p.path())
        .env("EBB_RETRY_BASE_MS", "5")
        .envs(env(&sandbox, Some(wrong)))
        .output()
        .unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("connection `hubspot`") && out.contains("BAD_REFRESH_TOKEN"),
        "{out}"
    );
    assert!(out.contains("install the app again"), "says what to do: {out}");
    let (_, secret, _) = sandbox.hubspot().oauth_app();
    for s in [wrong, secret.as_str()] {
        assert!(!out.contains(s), "a secret in the output: {out}");
    }
    assert_eq!(sandbox.hubspot().token_requests(), 1, "asked once, not once per batch");
    assert!(live(&sandbox, "contacts").is_empty());

    // A wrong client secret: refused too, and not shown either.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "contacts_hs", "--format", "json"])
        .current_dir(p.path())
        .envs(env(&sandbox, None))
        .env(CLIENT_SECRET_VAR, "wrong-client-secret-77e2")
        .output()
        .unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("BAD_CLIENT_SECRET"), "{out}");
    assert!(!out.contains("wrong-client-secret-77e2"), "{out}");
}

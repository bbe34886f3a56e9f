//! Alerts (docs/alerts.md) through `ebb daemon` to in-process fakes of a Slack incoming
//! webhook, the PagerDuty Events API v2 and a generic webhook, over real HTTP: a lag alert
//! fires once, repeats at its interval and resolves once; a failure-rate alert triggers and
//! resolves in PagerDuty with one `dedup_key`; a channel that is down is retried and
//! reported; `ebb alerts test`; and the seed's `alerts:` block validates as written.

use crate::daemon::Daemon;
use crate::support::{ebb, stderr, stdout};
use axum::extract::{Path as AxPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests the fakes received: (channel, body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// The fakes: `/slack/{name}` (200 `ok`; `broken` answers 503), `/pagerduty` (202 as the
/// Events API does), `/hook` (200).
struct Fakes {
    seen: Seen,
    base: String,
}

async fn slack(
    State(seen): State<Seen>,
    AxPath(name): AxPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, String) {
    seen.lock().unwrap().push((format!("slack:{name}"), body));
    if name == "broken" {
        (StatusCode::SERVICE_UNAVAILABLE, "no_service".into())
    } else {
        (StatusCode::OK, "ok".into())
    }
}

async fn pagerduty(State(seen): State<Seen>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let ok = body["routing_key"].as_str().is_some_and(|k| k.len() == 32)
        && matches!(body["event_action"].as_str(), Some("trigger" | "resolve"))
        && (body["event_action"] == "resolve"
            || (body["payload"]["summary"].is_string()
                && body["payload"]["source"].is_string()
                && matches!(
                    body["payload"]["severity"].as_str(),
                    Some("critical" | "error" | "warning" | "info")
                )));
    let key = body["dedup_key"].clone();
    seen.lock().unwrap().push(("pagerduty".into(), body));
    if ok {
        (
            StatusCode::ACCEPTED,
            Json(json!({"status": "success", "message": "Event processed", "dedup_key": key})),
        )
    } else {
        (StatusCode::BAD_REQUEST, Json(json!({"status": "invalid event"})))
    }
}

async fn hook(State(seen): State<Seen>, Json(body): Json<Value>) -> StatusCode {
    seen.lock().unwrap().push(("webhook".into(), body));
    StatusCode::OK
}

impl Fakes {
    fn start() -> Fakes {
        let seen: Seen = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route("/slack/{name}", post(slack))
                    .route("/pagerduty", post(pagerduty))
                    .route("/hook", post(hook))
                    .with_state(s);
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Fakes {
            seen,
            base: format!("http://{}", rx.recv().unwrap()),
        }
    }

    fn seen(&self, channel: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The Slack texts of `channel` that mention `alert`.
    fn texts(&self, channel: &str, alert: &str) -> Vec<String> {
        self.seen(channel)
            .iter()
            .filter_map(|b| b["text"].as_str().map(str::to_string))
            .filter(|t| t.contains(alert))
            .collect()
    }

    fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&Fakes) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < timeout,
                "waited {timeout:?} for {what}; seen: {:#?}",
                self.seen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";

/// A mail (envelope sender, recipients, the DATA as received).
type Mail = (String, Vec<String>, String);

/// An SMTP server on loopback speaking the protocol's plain dialogue (RFC 5321: greeting,
/// EHLO, MAIL, RCPT, DATA ending with a lone dot, QUIT), keeping every mail it accepts.
fn smtp_server() -> (u16, Arc<Mutex<Vec<Mail>>>) {
    use std::io::{BufRead, BufReader, Write};
    let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let kept = mails.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut out) = conn else { continue };
            let mut r = BufReader::new(out.try_clone().unwrap());
            let (mut from, mut to) = (String::new(), Vec::new());
            let _ = out.write_all(b"220 fake.smtp ESMTP\r\n");
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let up = line.to_ascii_uppercase();
                let reply: &[u8] = if up.starts_with("EHLO") || up.starts_with("HELO") {
                    b"250-fake.smtp\r\n250 8BITMIME\r\n"
                } else if up.starts_with("MAIL FROM:") {
                    from = line[10..].trim().to_string();
                    b"250 OK\r\n"
                } else if up.starts_with("RCPT TO:") {
                    to.push(line[8..].trim().to_string());
                    b"250 OK\r\n"
                } else if up.starts_with("DATA") {
                    let _ = out.write_all(b"354 end with <CRLF>.<CRLF>\r\n");
                    let mut data = String::new();
                    let mut l2 = String::new();
                    while r.read_line(&mut l2).unwrap_or(0) > 0 && l2 != ".\r\n" {
                        data.push_str(&l2);
                        l2.clear();
                    }
                    kept.lock().unwrap().push((from.clone(), std::mem::take(&mut to), data));
                    b"250 OK queued\r\n"
                } else if up.starts_with("QUIT") {
                    let _ = out.write_all(b"221 bye\r\n");
                    break;
                } else if up.starts_with("RSET") || up.starts_with("NOOP") {
                    b"250 OK\r\n"
                } else {
                    b"502 not implemented\r\n"
                };
                let _ = out.write_all(reply);
                line.clear();
            }
        }
    });
    (port, mails)
}

/// A project: DuckDB warehouse, a file destination, models `orders` (its table exists) and
/// `flaky` (its table does not, yet); alerts to the fakes.
fn project(f: &Fakes, alerts: &str) -> tempfile::TempDir {
    // The routing key is a secret: read from the environment, as a user's would be.
    std::env::set_var("EBB_TEST_PD_KEY", ROUTING_KEY);
    let dir = tempfile::tempdir().unwrap();
    let base = &f.base;
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1
connections:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
  exports:
    type: file
    path: exports
notifications:
  status_url: http://127.0.0.1:7878/
  slack:
    ops: {{url: \"${{EBB_TEST_SLACK_OPS:-{base}/slack/ops}}\"}}
    broken: {{url: \"${{EBB_TEST_SLACK_BROKEN:-{base}/slack/broken}}\"}}
  pagerduty:
    oncall: {{routing_key: \"${{EBB_TEST_PD_KEY}}\", url: {base}/pagerduty}}
  webhook:
    audit: {{url: {base}/hook}}
alerts:
{alerts}"
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    for (name, table) in [("orders", "orders"), ("flaky", "flaky_rows")] {
        std::fs::write(
            dir.path().join(format!("models/{name}.yaml")),
            format!(
                "models:
  - name: {name}
    source:
      type: duckdb
      query: SELECT id, amount FROM {table}
    destination:
      type: file
      unique_identifier: id
    mappings:
      - source: amount
        destination: amount
"
            ),
        )
        .unwrap();
    }
    let c = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    c.execute_batch("CREATE TABLE orders AS SELECT range AS id, range * 2 AS amount FROM range(10)")
        .unwrap();
    dir
}

/// The project with one alert that never fires.
fn quiet_project(f: &Fakes) -> tempfile::TempDir {
    project(
        f,
        "  - name: quiet
    condition: consecutive_failures > 100
    notification:
      - webhook: audit
",
    )
}

fn run(dir: &Path, model: &str) -> i32 {
    let o = ebb(dir, &["run", model]);
    let code = o.status.code().unwrap_or(-1);
    if code != 0 {
        eprintln!("ebb run {model}: exit {code}\n{}{}", stdout(&o), stderr(&o));
    }
    code
}

#[test]
fn the_seeds_alerts_block_validates_as_written_and_mistakes_are_placed() {
    let f = Fakes::start();
    let seed = "  - name: crm_sync_delay
    condition: lag_minutes > 60
    severity: high
    notification:
      - email: data-team@company.com
      - slack: #data-alerts
    
  - name: sync_failure_rate
    condition: failure_rate > 0.05
    severity: critical
    notification:
      - pagerduty: data-oncall
";
    let dir = project(&f, seed);
    // The seed's channels, declared once.
    let text = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap().replace(
        "notifications:\n",
        "notifications:\n  email: {smtp_host: smtp.company.com, from: ebb@company.com, password: \"${SMTP_PASSWORD:-}\"}\n",
    );
    let text = text
        .replace("    ops: {url:", "    default: {url:")
        .replace("    oncall: {routing_key:", "    data-oncall: {routing_key:");
    std::fs::write(dir.path().join("ebb.yaml"), &text).unwrap();
    let o = ebb(dir.path(), &["validate"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Said, not refused: `#data-alerts` is a YAML comment.
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("N807") && said.contains("`#data-alerts` is a YAML comment"),
        "{said}"
    );

    // An unknown metric, at its column, with "did you mean"; an undeclared channel.
    let bad = text
        .replace("condition: lag_minutes > 60", "condition: lag_minute > 60")
        .replace("- pagerduty: data-oncall", "- pagerduty: data-on-call");
    std::fs::write(dir.path().join("ebb.yaml"), &bad).unwrap();
    let o = ebb(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let errors = crate::support::json_errors(&report);
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1;
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        (errors[0].0.as_str(), errors[0].1, errors[0].2),
        ("E803", line_of("lag_minute > 60"), 16)
    );
    assert!(errors[0].3.contains("did you mean `lag_minutes`?"), "{}", errors[0].3);
    assert_eq!(
        (errors[1].0.as_str(), errors[1].1, errors[1].2),
        ("E804", line_of("data-on-call"), 20)
    );
    assert!(errors[1].3.contains("did you mean `data-oncall`?"), "{}", errors[1].3);
}

#[test]
fn a_lag_alert_fires_once_repeats_and_resolves_once_and_failures_reach_pagerduty() {
    let f = Fakes::start();
    let dir = project(
        &f,
        "  - name: orders_lag
    condition: lag_minutes > 0.1
    severity: critical
    repeat: 1s
    models: [orders]
    notification:
      - slack: ops
  - name: flaky_failures
    condition: failure_rate > 0.05
    severity: critical
    models: [flaky]
    notification:
      - pagerduty: oncall
  - name: flaky_down
    condition: consecutive_failures >= 1
    models: [flaky]
    notification:
      - slack: broken
      - webhook: audit
",
    );
    let p = dir.path();
    assert_eq!(run(p, "orders"), 0);
    assert_eq!(run(p, "flaky"), 1, "its table does not exist");
    let d = Daemon::start(p, &[], &[("EBB_RETRY_BASE_MS", "5"), ("EBB_RETRY_MAX_ATTEMPTS", "3")]);

    // The failing model: PagerDuty triggered; the broken Slack channel tried 3 times and
    // reported, the webhook told.
    f.wait("the PagerDuty trigger", Duration::from_secs(20), |f| {
        !f.seen("pagerduty").is_empty()
    });
    let trigger = f.seen("pagerduty")[0].clone();
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "ebb:flaky_failures:flaky");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["component"], "flaky");
    f.wait("the audit webhook", Duration::from_secs(10), |f| {
        !f.seen("webhook").is_empty()
    });
    let hook = &f.seen("webhook")[0];
    assert_eq!(
        (hook["alert"].as_str(), hook["state"].as_str()),
        (Some("flaky_down"), Some("firing"))
    );
    assert_eq!(f.seen("slack:broken").len(), 3, "retried, then given up");
    let logged = d.wait_for("alert_undelivered", 1, Duration::from_secs(10), |e| {
        e["event"] == "alert_undelivered"
    });
    assert_eq!(logged[0]["alert"], "flaky_down", "{:#}", logged[0]);
    let o = ebb(p, &["alerts", "--format", "json"]);
    let states: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let down = states.iter().find(|s| s["alert"] == "flaky_down").unwrap();
    assert_eq!(down["state"], "firing");
    assert!(
        down["undelivered"][0]
            .as_str()
            .unwrap()
            .starts_with("slack:broken: after 3 attempts: HTTP 503"),
        "{down:#}"
    );
    let o = ebb(p, &["status", "flaky", "--format", "json"]);
    let status: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        status["alerts_firing"],
        json!(["flaky_failures", "flaky_down"]),
        "{status:#}"
    );
    assert!(
        status["alerts_undelivered"][0]
            .as_str()
            .unwrap()
            .starts_with("flaky_down: slack:broken:"),
        "{status:#}"
    );
    let metrics = d.get("/metrics", None).body;
    for line in [
        "ebb_alert_notifications_total{channel=\"slack:broken\",result=\"failed\"} 1",
        "ebb_alert_notifications_total{channel=\"webhook:audit\",result=\"delivered\"} 1",
        "ebb_alert_firing{alert=\"flaky_down\",model=\"flaky\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line} in {metrics}");
    }

    // The lag alert: fires once the last success is 6 s old, again every second, and
    // resolves at the next run.
    f.wait("the lag alert", Duration::from_secs(20), |f| {
        f.texts("slack:ops", "orders_lag")
            .iter()
            .any(|t| t.starts_with("STILL FIRING"))
    });
    let texts = f.texts("slack:ops", "orders_lag");
    assert!(
        texts[0].starts_with("FIRING [critical] orders_lag on orders: lag_minutes = "),
        "{texts:?}"
    );
    assert_eq!(texts.iter().filter(|t| t.starts_with("FIRING")).count(), 1);
    let body = &f.seen("slack:ops")[0];
    assert_eq!(body["blocks"][0]["type"], "section");
    assert!(body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("<http://127.0.0.1:7878/|status page>"));
    assert_eq!(run(p, "orders"), 0);
    f.wait("the lag alert's resolution", Duration::from_secs(10), |f| {
        f.texts("slack:ops", "orders_lag")
            .iter()
            .any(|t| t.starts_with("RESOLVED"))
    });

    // The failing model fixed: `flaky_down` resolves at its first success; the failure
    // rate falls under 0.05 after 20 good runs, and PagerDuty gets the resolve.
    let c = duckdb::Connection::open(p.join("warehouse.duckdb")).unwrap();
    c.execute_batch("CREATE TABLE flaky_rows AS SELECT range AS id, range AS amount FROM range(3)")
        .unwrap();
    drop(c);
    assert_eq!(run(p, "flaky"), 0);
    f.wait("flaky_down resolved", Duration::from_secs(10), |f| {
        f.seen("webhook").iter().any(|h| h["state"] == "resolved")
    });
    for _ in 0..19 {
        assert_eq!(run(p, "flaky"), 0);
    }
    f.wait("the PagerDuty resolve", Duration::from_secs(10), |f| {
        f.seen("pagerduty").iter().any(|e| e["event_action"] == "resolve")
    });
    let pd = f.seen("pagerduty");
    assert_eq!(pd.len(), 2, "one trigger, one resolve: {pd:#?}");
    assert_eq!(pd[1]["dedup_key"], trigger["dedup_key"]);
    // Resolved once: later evaluations send nothing more.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(f.seen("pagerduty").len(), 2);
    assert_eq!(
        f.texts("slack:ops", "orders_lag")
            .iter()
            .filter(|t| t.starts_with("RESOLVED"))
            .count(),
        1
    );
}

#[test]
fn alerts_test_sends_through_every_channel_and_reports_the_ones_down() {
    let f = Fakes::start();
    let dir = project(
        &f,
        "  - name: all_channels
    condition: consecutive_failures > 2
    notification:
      - slack: ops
      - pagerduty: oncall
      - webhook: audit
      - email: data-team@company.com
",
    );
    let (port, mails) = smtp_server();
    let text = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap().replace(
        "notifications:\n",
        &format!("notifications:\n  email: {{smtp_host: 127.0.0.1, smtp_port: {port}, from: ebb@company.com}}\n"),
    );
    std::fs::write(dir.path().join("ebb.yaml"), text).unwrap();
    let o = ebb(dir.path(), &["alerts", "test"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let sent = mails.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (from, to, data) = &sent[0];
    assert_eq!(from, "<ebb@company.com>");
    assert_eq!(to, &["<data-team@company.com>".to_string()]);
    assert!(data.contains("Subject: TEST [high] all_channels on (test)"), "{data}");
    assert!(data.contains("condition: consecutive_failures > 2"), "{data}");
    for t in [
        "slack:ops",
        "pagerduty:oncall",
        "webhook:audit",
        "email:data-team@company.com",
    ] {
        assert!(
            stdout(&o).contains(&format!("all_channels: test sent to {t}")),
            "{}",
            stdout(&o)
        );
    }
    let pd = f.seen("pagerduty");
    assert_eq!(
        pd.iter()
            .map(|e| e["event_action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["trigger", "resolve"],
        "a test opens and closes its incident"
    );
    assert_eq!(pd[0]["dedup_key"], "ebb:test:all_channels");
    assert!(f.texts("slack:ops", "all_channels")[0].starts_with("TEST"));
    // A channel that is down: exit 1, and which one.
    let text = std::fs::read_to_string(dir.path().join("ebb.yaml"))
        .unwrap()
        .replace("      - slack: ops", "      - slack: broken");
    std::fs::write(dir.path().join("ebb.yaml"), text).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["alerts", "test", "all_channels"])
        .current_dir(dir.path())
        .env("EBB_RETRY_BASE_MS", "5")
        .env("EBB_RETRY_MAX_ATTEMPTS", "2")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("all_channels: slack:broken FAILED: after 2 attempts: HTTP 503"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn status_the_api_and_the_metrics_show_one_lag_against_the_models_thresholds() {
    let f = Fakes::start();
    let dir = quiet_project(&f);
    let p = dir.path();
    let model = std::fs::read_to_string(p.join("models/orders.yaml")).unwrap();
    std::fs::write(
        p.join("models/orders.yaml"),
        format!("{model}    health:\n      warning: 1s\n      critical: 1h\n"),
    )
    .unwrap();
    assert_eq!(run(p, "orders"), 0);
    std::thread::sleep(Duration::from_millis(1500));
    let o = ebb(p, &["status", "orders", "--format", "json"]);
    let status: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(status["lag_health"], "WARNING", "{status:#}");
    assert_eq!(status["health"], "lag warning");
    let lag = status["lag_minutes"].as_f64().unwrap();
    assert!(lag > 0.02 && lag < 1.0, "{lag}");
    // The model that never ran has no lag yet.
    let o = ebb(p, &["status", "flaky", "--format", "json"]);
    let flaky: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(flaky["lag_health"], "UNKNOWN");
    let d = Daemon::start(p, &[], &[]);
    let models = d.get("/api/models", None).json();
    let orders = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "orders")
        .unwrap();
    assert_eq!(orders["lag_health"], "WARNING");
    let api_lag = orders["lag_minutes"].as_f64().unwrap();
    assert!(api_lag >= lag && api_lag < lag + 1.0, "{api_lag} vs {lag}");
    let metrics = d.get("/metrics", None).body;
    let secs: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ebb_lag_seconds{model=\"orders\"} "))
        .unwrap_or_else(|| panic!("no ebb_lag_seconds for orders in {metrics}"))
        .parse()
        .unwrap();
    assert!(secs >= lag * 60.0 && secs < lag * 60.0 + 60.0, "{secs} vs {lag} min");
    assert!(!metrics.contains("ebb_lag_seconds{model=\"flaky\"}"), "{metrics}");
}

/// Chromium for the status page test: on CI (or with `EBB_REQUIRE_CHROMIUM`) its absence
/// fails the test; elsewhere the test is skipped with one loud line.
fn chromium() -> Option<String> {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return Some(c.to_string());
        }
    }
    let required = ["EBB_REQUIRE_CHROMIUM", "CI"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"));
    assert!(
        !required,
        "Chromium is required here (CI or EBB_REQUIRE_CHROMIUM) but none is installed"
    );
    eprintln!("\nSKIPPING the status page test: no chromium installed (apt-get install chromium)\n");
    None
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=…`).
fn headless(chrome: &str, url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs")
}

#[test]
fn the_status_page_shows_every_model_its_health_and_a_mark_per_run_in_a_browser() {
    let Some(chrome) = chromium() else { return };
    let f = Fakes::start();
    let dir = quiet_project(&f);
    let p = dir.path();
    for _ in 0..3 {
        assert_eq!(run(p, "orders"), 0);
    }
    assert_eq!(run(p, "flaky"), 1);
    // Behind a token: a browser logs in with HTTP Basic.
    let token = "st4tus-page-t0ken-0123456789abcdefXYZ";
    let text = std::fs::read_to_string(p.join("ebb.yaml")).unwrap();
    std::fs::write(
        p.join("ebb.yaml"),
        format!("{text}daemon:\n  api_token: ${{EBB_TEST_PAGE_TOKEN}}\n"),
    )
    .unwrap();
    let d = Daemon::start(p, &[], &[("EBB_TEST_PAGE_TOKEN", token)]);
    assert_eq!(d.get("/", None).status, 401, "the page is behind the token");
    let page = |auth: &str| {
        let url = format!("http://{}/", d.addr);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = ebb::http::client()
                .unwrap()
                .get(url)
                .basic_auth("me", Some(auth))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().get("content-type").cloned())
        })
    };
    assert_eq!(page("wrong").0, 401);
    let (status, kind) = page(token);
    assert_eq!(
        status, 200,
        "a browser's HTTP Basic login: any user, the token as the password"
    );
    assert_eq!(kind.unwrap(), "text/html; charset=utf-8");
    drop(d);
    // Headless Chromium sends no credentials from a URL: the page of a daemon without a
    // token (loopback) is what the browser renders.
    std::fs::write(p.join("ebb.yaml"), &text).unwrap();
    let d = Daemon::start(p, &[], &[]);
    let url = format!("http://{}/", d.addr);
    let o = headless(&chrome, &url, &["--dump-dom", "--virtual-time-budget=2000"]);
    let dom = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        dom.contains("<h1>ebb status</h1>"),
        "{dom}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for (model, health, marks) in [("orders", "healthy", 3), ("flaky", "failing", 1)] {
        let row_at = dom
            .find(&format!("id=\"row-{model}\""))
            .unwrap_or_else(|| panic!("no row for {model}: {dom}"));
        let row = &dom[row_at..row_at + dom[row_at..].find("</tr>").unwrap()];
        assert!(row.contains(&format!(">{health}<")), "{model}: {row}");
        let sec_at = dom.find(&format!("id=\"model-{model}\"")).unwrap();
        let sec = &dom[sec_at..sec_at + dom[sec_at..].find("</section>").unwrap()];
        assert_eq!(sec.matches("<rect class=\"run").count(), marks, "{model}: {sec}");
    }
    assert!(dom.contains("rect class=\"run failed\""), "{dom}");
    // A screenshot, for a person to look at.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&out);
    let o = headless(
        &chrome,
        &url,
        &[&format!("--screenshot={}", out.display()), "--window-size=1200,900"],
    );
    let png = std::fs::read(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    eprintln!("status page screenshot: {}", out.display());
}

#[test]
fn named_tokens_have_roles_and_a_refusal_is_logged() {
    let f = Fakes::start();
    let dir = quiet_project(&f);
    let p = dir.path();
    let text = std::fs::read_to_string(p.join("ebb.yaml")).unwrap();
    std::fs::write(
        p.join("ebb.yaml"),
        format!(
            "{text}daemon:
  api_token: ${{EBB_TEST_ADMIN_TOKEN}}
  tokens:
    - {{name: grafana, token: \"${{EBB_TEST_VIEWER_TOKEN}}\", role: viewer}}
    - {{name: oncall, token: \"${{EBB_TEST_OPERATOR_TOKEN}}\", role: operator}}
"
        ),
    )
    .unwrap();
    let (admin, viewer, operator) = ("admin-token-1", "viewer-token-2", "operator-token-3");
    let d = Daemon::start(
        p,
        &[],
        &[
            ("EBB_TEST_ADMIN_TOKEN", admin),
            ("EBB_TEST_VIEWER_TOKEN", viewer),
            ("EBB_TEST_OPERATOR_TOKEN", operator),
        ],
    );
    assert_eq!(d.get("/api/models", Some("nope")).status, 401);
    for t in [viewer, operator, admin] {
        assert_eq!(d.get("/api/models", Some(t)).status, 200, "every role reads");
        assert_eq!(d.get("/", Some(t)).status, 200, "and sees the status page");
    }
    let refused = d.post("/api/models/orders/runs", Some(viewer));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("token `grafana` is a viewer: POST /api/models/orders/runs needs operator"),
        "{}",
        refused.body
    );
    let logged = d.wait_for("forbidden", 1, Duration::from_secs(5), |e| e["event"] == "forbidden");
    assert_eq!(
        (logged[0]["token"].as_str(), logged[0]["needs"].as_str()),
        (Some("grafana"), Some("operator"))
    );
    let ran = d.post("/api/models/orders/runs", Some(operator));
    assert!(
        (200..300).contains(&ran.status),
        "an operator triggers runs: {} {}",
        ran.status,
        ran.body
    );
    // Past the role check, the request is the endpoint's to answer (here: no conflicts).
    assert_eq!(d.post("/api/conflicts/orders/resolve", Some(operator)).status / 100, 4);
    assert_ne!(d.post("/api/conflicts/orders/resolve", Some(operator)).status, 403);
    assert_ne!(d.post("/api/models/orders/runs", Some(admin)).status, 403);
}

#[test]
fn a_hash_transform_pseudonymises_with_the_key_from_the_environment() {
    let f = Fakes::start();
    let dir = quiet_project(&f);
    let p = dir.path();
    std::fs::write(
        p.join("models/orders.yaml"),
        "models:
  - name: orders
    source:
      type: duckdb
      query: SELECT id, amount FROM orders
    destination:
      type: file
      unique_identifier: id
    mappings:
      - source: id
        destination: pid
        transform: hash(EBB_TEST_HASH_KEY_E2E)
",
    )
    .unwrap();
    std::env::set_var("EBB_TEST_HASH_KEY_E2E", "e2e-k3y");
    assert_eq!(run(p, "orders"), 0);
    let exported: Vec<Value> = std::fs::read_dir(p.join("exports"))
        .unwrap()
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    // python3 -c "import hmac,hashlib;print(hmac.new(b'e2e-k3y',b'3',hashlib.sha256).hexdigest())"
    let expected = "b044c364a5a45d15cdc52681691d6275e2338669d6572450b4517bbf516753fa";
    assert!(
        exported.iter().any(|r| r.to_string().contains(expected)),
        "{exported:#?}"
    );
    assert!(
        !exported.iter().any(|r| r.to_string().contains("\"pid\":3")),
        "no clear value"
    );
}

//! Webhook models end to end: a real `ebb daemon` receiving requests signed by the
//! reference Standard Webhooks library (`standardwebhooks`, not ebb's code) over real HTTP,
//! its inbox in the SQLite state store, the events applied to a table in the real
//! PostgreSQL; `ebb inbox` and the API reading the inbox back; `ebb run` applying it
//! without a daemon (into DuckDB).

use crate::daemon::Daemon;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const MODEL: &str = "crm_customers";
pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A project: the webhook connection `crm_events` (Standard Webhooks, secret from
/// `CRM_WEBHOOK_SECRET`), a warehouse, and the model taking `customer.*` events into
/// `{schema}.customers`.
fn project(dir: &Path, warehouse: &str, table: &str, extra_connection: &str) {
    std::fs::write(
        dir.join("ebb.yaml"),
        format!(
            "version: 1
connections:
  crm_events:
    type: webhook
    signing: standard
    secret: ${{CRM_WEBHOOK_SECRET}}
{extra_connection}  warehouse:
{warehouse}
daemon:
  api_token: ${{EBB_API_TOKEN}}
"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(dir.join("models/customers.yaml"), model_yaml(table, "")).unwrap();
}

fn model_yaml(table: &str, extra_events: &str) -> String {
    format!(
        "models:
  - name: {MODEL}
    source:
      type: webhook
      connection: crm_events
      events:
        customer.created: upsert
        customer.updated: upsert
        customer.deleted: delete
        customer.viewed: ignore
{extra_events}      event_type: $.event_type
      event_time: $.data.modified_date
      types:
        modified_date: timestamp
        score: bigint
    destination:
      type: {{dest}}
      connection: warehouse
      table: {table}
      unique_identifier: id
      on_deleted: soft
    mappings:
      - source: id
        destination: customer_id
      - source: email
        destination: email
        transform: [trim, lower]
      - source: score
        destination: score
      - source: modified_date
        destination: modified_date
"
    )
}

/// One request over a fresh connection.
pub(crate) fn post(addr: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    try_post(addr, path, headers, body).expect("the daemon answers")
}

/// One request over a fresh connection; `None` when there is no answer (nothing listens,
/// or the connection broke before a status line came).
pub(crate) fn try_post(addr: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    // A daemon refusing a large body early may close before reading it all.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok())?;
    Some((status, body.to_string()))
}

/// The headers of a Standard Webhooks request, signed by the reference library.
pub(crate) fn signed(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = chrono::Utc::now().timestamp();
    let sig = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign(id, ts, body)
        .unwrap();
    vec![
        ("Content-Type", "application/json".into()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
    ]
}

pub(crate) fn event(kind: &str, id: &str, email: &str, score: i64, minute: u32) -> Vec<u8> {
    json!({
        "event_type": format!("customer.{kind}"),
        "data": {
            "id": id, "email": email, "score": score,
            "modified_date": format!("2026-12-01T10:{minute:02}:00Z"),
        }
    })
    .to_string()
    .into_bytes()
}

fn send(d: &Daemon, id: &str, body: &[u8]) -> (u16, String) {
    post(&d.addr, &format!("/webhooks/{MODEL}"), &signed(SECRET, id, body), body)
}

/// Waits until `/api/inbox/{MODEL}` says nothing is pending; its answer.
pub(crate) fn settled(d: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = d.get(&format!("/api/inbox/{MODEL}?status=pending,dead,rejected"), Some(TOKEN));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if v["counts"]["pending"] == 0 {
            return v;
        }
        assert!(Instant::now() < deadline, "events still pending: {v}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

type PgRow = (String, Option<String>, Option<i64>, bool);

fn pg_rows(rt: &tokio::runtime::Runtime, client: &tokio_postgres::Client, table: &str) -> Vec<PgRow> {
    rt.block_on(client.query(
        &format!("SELECT customer_id, email, score, is_deleted FROM {table} ORDER BY customer_id"),
        &[],
    ))
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get::<_, Option<bool>>(3).unwrap_or(false),
        )
    })
    .collect()
}

fn row(id: &str, email: &str, score: i64, deleted: bool) -> PgRow {
    (id.into(), Some(email.into()), Some(score), deleted)
}

#[test]
fn signed_events_land_in_the_table_in_event_time_order_whatever_the_arrival() {
    ordering(false);
}

/// The same with the inbox in a PostgreSQL state store.
#[test]
fn the_same_with_the_inbox_in_a_postgresql_state_store() {
    ordering(true);
}

/// The project of [`project`] with the table `{schema}.customers` in the test PostgreSQL
/// (the schema named by `prefix`, the process and `pg_state`), and with `pg_state` the
/// state store in the schema `{schema}_state`; the schema and the table.
fn pg_project(dir: &Path, prefix: &str, pg_state: bool) -> (String, String) {
    let schema = format!("{prefix}{}_{}", if pg_state { "p" } else { "" }, std::process::id());
    let table = format!("{schema}.customers");
    let url = crate::source_postgres::url();
    project(dir, &format!("    type: postgres\n    url: {url}"), &table, "");
    if pg_state {
        let text = std::fs::read_to_string(dir.join("ebb.yaml")).unwrap();
        std::fs::write(
            dir.join("ebb.yaml"),
            format!("{text}state:\n  url: {url}?ebb_schema={schema}_state\n"),
        )
        .unwrap();
    }
    (schema, table)
}

fn ordering(pg_state: bool) {
    require_postgres!();
    let dir = tempfile::tempdir().unwrap();
    let (schema, table) = pg_project(dir.path(), "wh", pg_state);
    let yaml = std::fs::read_to_string(dir.path().join("models/customers.yaml"))
        .unwrap()
        .replace("{dest}", "postgres");
    std::fs::write(dir.path().join("models/customers.yaml"), yaml).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = crate::support::pg_client(&rt);
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
        .unwrap();
    let d = Daemon::start(
        dir.path(),
        &[],
        &[("CRM_WEBHOOK_SECRET", SECRET), ("EBB_API_TOKEN", TOKEN)],
    );

    // Creates, an update, a delete; then events arriving late.
    assert_eq!(send(&d, "e1", &event("created", "c1", " A@X.COM ", 1, 0)).0, 202);
    assert_eq!(send(&d, "e2", &event("created", "c2", "b@x.com", 1, 0)).0, 202);
    assert_eq!(send(&d, "e3", &event("updated", "c1", "a2@x.com", 2, 5)).0, 202);
    assert_eq!(send(&d, "e4", &event("deleted", "c2", "", 0, 5)).0, 202);
    assert_eq!(send(&d, "e5", &event("created", "c3", "c@x.com", 7, 9)).0, 202);
    settled(&d);
    // Late: an update older than c1's newest, and one older than c2's delete.
    assert_eq!(send(&d, "e6", &event("updated", "c1", "stale@x.com", 99, 1)).0, 202);
    assert_eq!(send(&d, "e7", &event("updated", "c2", "zombie@x.com", 99, 2)).0, 202);
    // A redelivery of e3 (same id): accepted again, stored once.
    let (code, body) = send(&d, "e3", &event("updated", "c1", "a2@x.com", 2, 5));
    assert_eq!(code, 202, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["duplicates"], 1);
    // An event type the model ignores: accepted, changes nothing.
    assert_eq!(send(&d, "e8", &event("viewed", "c3", "x@x.com", 0, 59)).0, 202);
    // In one request (a batch), c3's update then its older create: the update wins.
    let batch = format!(
        "[{}, {}]",
        String::from_utf8(event("updated", "c3", "c3@x.com", 8, 30)).unwrap(),
        String::from_utf8(event("created", "c3", "old@x.com", 1, 10)).unwrap()
    );
    assert_eq!(send(&d, "e9", batch.as_bytes()).0, 202);
    let inbox = settled(&d);
    assert_eq!(
        pg_rows(&rt, &client, &table),
        vec![
            row("c1", "a2@x.com", 2, false),
            // Deleted (soft): its values stay, the late update did not bring it back.
            row("c2", "b@x.com", 1, true),
            row("c3", "c3@x.com", 8, false),
        ]
    );
    // How many were superseded inside a batch depends on how the events fell into batches;
    // the three late ones are superseded whatever the batching.
    let (applied, superseded) = (
        inbox["counts"]["applied"].as_u64().unwrap(),
        inbox["counts"]["superseded"].as_u64().unwrap(),
    );
    assert_eq!(applied + superseded, 9, "{inbox}");
    assert!(superseded >= 3 && applied >= 3, "{inbox}");
    assert_eq!(inbox["counts"]["ignored"], 1, "{inbox}");
    assert_eq!(inbox["counts"]["dead"], 0, "{inbox}");

    // A newer update after the delete brings the record back.
    assert_eq!(send(&d, "e10", &event("updated", "c2", "back@x.com", 3, 40)).0, 202);
    settled(&d);
    assert_eq!(pg_rows(&rt, &client, &table)[1], row("c2", "back@x.com", 3, false));

    // What is refused, and how.
    let body = event("created", "c9", "n@x.com", 1, 0);
    let mut tampered = signed(SECRET, "e11", &body);
    let (code, answer) = post(
        &d.addr,
        &format!("/webhooks/{MODEL}"),
        &tampered,
        &event("created", "c9", "evil@x.com", 1, 0),
    );
    assert_eq!(code, 401, "{answer}");
    tampered.retain(|(k, _)| *k != "webhook-signature");
    assert_eq!(post(&d.addr, &format!("/webhooks/{MODEL}"), &tampered, &body).0, 401);
    let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    assert_eq!(
        post(
            &d.addr,
            &format!("/webhooks/{MODEL}"),
            &signed(other, "e12", &body),
            &body
        )
        .0,
        401
    );
    let mut text = signed(SECRET, "e13", &body);
    text[0].1 = "text/plain".into();
    assert_eq!(post(&d.addr, &format!("/webhooks/{MODEL}"), &text, &body).0, 415);
    let big = vec![b' '; (1 << 20) + 1];
    assert_eq!(
        post(
            &d.addr,
            &format!("/webhooks/{MODEL}"),
            &signed(SECRET, "e14", &big),
            &big
        )
        .0,
        413
    );
    assert_eq!(
        post(&d.addr, "/webhooks/no_such_model", &signed(SECRET, "e15", &body), &body).0,
        404
    );
    // Signed but not JSON, or of a type the model does not take: 400, kept as dead letters.
    assert_eq!(send(&d, "e16", b"{not json").0, 400);
    let merged = json!({"event_type": "customer.merged", "data": {"id": "c4", "email": "m@x.com", "score": 5,
        "modified_date": "2026-12-01T11:00:00Z"}})
    .to_string();
    let (code, answer) = send(&d, "e17", merged.as_bytes());
    assert_eq!(code, 400);
    assert!(
        answer.contains("`customer.merged` is not one the model takes"),
        "{answer}"
    );
    // A value that does not fit its field's type: accepted, then a dead letter.
    let bad = json!({"event_type": "customer.created", "data": {"id": "c5", "score": "lots",
        "modified_date": "2026-12-01T11:00:00Z"}})
    .to_string();
    assert_eq!(send(&d, "e18", bad.as_bytes()).0, 202);
    let inbox = settled(&d);
    assert_eq!(inbox["counts"]["rejected"], 2, "{inbox}");
    assert_eq!(inbox["counts"]["dead"], 1, "{inbox}");
    let dead: Vec<&Value> = inbox["events"].as_array().unwrap().iter().collect();
    assert!(
        dead.iter()
            .any(|e| e["event_id"] == "e18" && e["reason"].as_str().unwrap().contains("`score`")),
        "{inbox}"
    );
    // Nothing refused or dead reached the table.
    assert_eq!(pg_rows(&rt, &client, &table).len(), 3);

    // The model learns `customer.merged`; the refused request is replayed through the API.
    let reloads = d.events().iter().filter(|e| e["event"] == "reload_accepted").count();
    let yaml = model_yaml(&table, "        customer.merged: upsert\n").replace("{dest}", "postgres");
    std::fs::write(dir.path().join("models/customers.yaml"), yaml).unwrap();
    d.wait_for("the reload", reloads + 1, Duration::from_secs(20), |e| {
        e["event"] == "reload_accepted"
    });
    // (A reload is logged once the new plans are in effect.)
    let r = d.post(&format!("/api/inbox/{MODEL}/replay"), Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["from_rejected"], 1, "{v}");
    assert_eq!(v["still_rejected"].as_array().unwrap().len(), 1, "{v}"); // the body that is not JSON
    settled(&d);
    assert_eq!(pg_rows(&rt, &client, &table)[3], row("c4", "m@x.com", 5, false));

    // `ebb inbox` reads the same inbox.
    let out = crate::support::ebb(dir.path(), &["inbox", MODEL, "--format", "json"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let v: Value = serde_json::from_str(crate::support::stdout(&out).trim()).unwrap();
    assert_eq!(v["counts"]["pending"], 0, "{v}");
    assert_eq!(v["counts"]["dead"], 1, "{v}");
    // The audit log holds the reload, the replay with its token, and the table writes.
    let out = crate::support::ebb(dir.path(), &["audit"]);
    let entries: Vec<Value> = crate::support::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |a: &str| entries.iter().filter(|e| e["action"] == a).collect::<Vec<_>>();
    assert_eq!(of("config_reloaded")[0]["actor"], "daemon", "{entries:?}");
    assert_eq!(of("inbox_replayed")[0]["actor"], "token:api_token", "{entries:?}");
    assert_eq!(of("inbox_replayed")[0]["detail"]["from_rejected"], 1);
    let written: i64 = of("write").iter().map(|e| e["count"].as_i64().unwrap()).sum();
    assert_eq!(
        Some(written),
        v["counts"]["applied"].as_i64(),
        "one key per event applied: {entries:?}"
    );
    // The metrics count answers by code.
    let m = d.get("/metrics", Some(TOKEN)).body;
    assert!(
        m.contains(&format!(
            "ebb_webhook_requests_total{{model=\"{MODEL}\",status=\"202\"}}"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "ebb_webhook_requests_total{{model=\"{MODEL}\",status=\"401\"}} 3"
        )),
        "{m}"
    );
    assert!(
        m.contains("ebb_webhook_requests_total{model=\"(unknown)\",status=\"404\"} 1"),
        "{m}"
    );
    assert!(m.contains(&format!("ebb_inbox_pending{{model=\"{MODEL}\"}} 0")), "{m}");
    drop(d);
    if pg_state {
        let n: i64 = rt
            .block_on(client.query_one(&format!("SELECT count(*) FROM {schema}_state.ebb_inbox"), &[]))
            .unwrap()
            .get(0);
        assert!(n >= 12, "the inbox is in PostgreSQL: {n} events");
    }
    rt.block_on(client.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS {schema}_state CASCADE"
    )))
    .unwrap();
}

/// One event of the durability test.
struct Sent {
    id: String,
    body: Vec<u8>,
    /// Signed with a secret the daemon does not know: answered 401, never applied.
    forged: bool,
}

/// 20,000 signed events of 2,000 records (creates, updates, deletes), 5% sent twice, all in
/// a random order, plus 20 forged ones that would be the newest of their record, from 32
/// senders; the daemon is SIGKILLed after about 8,000 answers and started again on the same
/// address, and the senders retry whatever got no answer or a 5xx. Afterwards: every event
/// that got a 202 is in the inbox once and settled, nothing forged is there, and the table
/// is each record's newest event.
#[test]
fn twenty_thousand_events_survive_a_kill_and_are_applied_once() {
    survive_a_kill(false);
}

/// The same with the inbox in a PostgreSQL state store.
#[test]
fn twenty_thousand_events_survive_a_kill_with_a_postgresql_inbox() {
    survive_a_kill(true);
}

fn survive_a_kill(pg_state: bool) {
    require_postgres!();
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let (schema, table) = pg_project(dir.path(), "whk", pg_state);
    let yaml = model_yaml(&table, "")
        .replace("{dest}", "postgres")
        .replace("on_deleted: soft", "on_deleted: hard");
    std::fs::write(dir.path().join("models/customers.yaml"), yaml).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = crate::support::pg_client(&rt);
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
        .unwrap();

    const RECORDS: usize = 2000;
    const PER_RECORD: usize = 10;
    let mut events: Vec<Sent> = Vec::new();
    for k in 0..RECORDS {
        let key = format!("k{k:04}");
        for i in 0..PER_RECORD {
            let kind = match i {
                0 => "created",
                9 if k % 5 == 0 => "deleted",
                _ => "updated",
            };
            let body = json!({"event_type": format!("customer.{kind}"), "data": {
                "id": key, "email": format!("{key}-{i}@x.com"), "score": i,
                "modified_date": format!("2026-12-01T00:{i:02}:00Z")}})
            .to_string()
            .into_bytes();
            events.push(Sent {
                id: format!("{key}-{i}"),
                body,
                forged: false,
            });
        }
        if k % 100 == 7 {
            let body = json!({"event_type": "customer.updated", "data": {
                "id": key, "email": "forged@x.com", "score": 999, "modified_date": "2026-12-01T01:00:00Z"}})
            .to_string()
            .into_bytes();
            events.push(Sent {
                id: format!("{key}-forged"),
                body,
                forged: true,
            });
        }
    }
    let dupes: Vec<Sent> = events
        .iter()
        .filter(|e| !e.forged)
        .step_by(20)
        .map(|e| Sent {
            id: e.id.clone(),
            body: e.body.clone(),
            forged: false,
        })
        .collect();
    events.extend(dupes);
    events.shuffle(&mut rand::rngs::StdRng::seed_from_u64(17));
    let total = events.len();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("CRM_WEBHOOK_SECRET", SECRET), ("EBB_API_TOKEN", TOKEN)];
    let daemon = Arc::new(Mutex::new(Some(Daemon::spawn_on(&listen, dir.path(), &[], &env, true))));
    let queue = Arc::new(Mutex::new(events));
    let answered = Arc::new(AtomicUsize::new(0));
    // Per event id: the final status each send got.
    let outcomes: Arc<Mutex<Vec<(String, bool, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..32)
        .map(|_| {
            let (queue, answered, outcomes, listen) =
                (queue.clone(), answered.clone(), outcomes.clone(), listen.clone());
            std::thread::spawn(move || loop {
                let Some(e) = queue.lock().unwrap().pop() else { return };
                let secret = if e.forged {
                    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
                } else {
                    SECRET
                };
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    // Each attempt is signed anew, as senders do.
                    let headers = signed(secret, &e.id, &e.body);
                    let code = try_post(&listen, &format!("/webhooks/{MODEL}"), &headers, &e.body).map_or(0, |a| a.0);
                    if code != 0 {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    if (200..300).contains(&code) || (400..500).contains(&code) {
                        outcomes.lock().unwrap().push((e.id.clone(), e.forged, code));
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "event {} got no final answer (last {code})",
                        e.id
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    // Kill the daemon mid-way, then start it again on the same address.
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < 8000 {
        assert!(Instant::now() < deadline, "the senders stalled before the kill");
        std::thread::sleep(Duration::from_millis(10));
    }
    {
        let mut d = daemon.lock().unwrap();
        let mut old = d.take().unwrap();
        old.signal("KILL");
        old.wait_exit(Duration::from_secs(10))
            .expect("the daemon dies on SIGKILL");
        *d = Some(Daemon::spawn_on(&listen, dir.path(), &[], &env, true));
    }
    for s in senders {
        s.join().expect("a sender failed");
    }
    let d = daemon.lock().unwrap().take().unwrap();
    let inbox = settled(&d);
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), total, "every send ended with a final answer");
    let accepted: BTreeSet<&str> = outcomes
        .iter()
        .filter(|(_, _, c)| *c == 202)
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert!(
        outcomes
            .iter()
            .all(|(_, forged, c)| if *forged { *c == 401 } else { *c == 202 }),
        "{:?}",
        outcomes
            .iter()
            .filter(|(_, f, c)| (*f && *c != 401) || (!*f && *c != 202))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(accepted.len(), RECORDS * PER_RECORD);
    assert_eq!(inbox["counts"]["dead"], 0, "{inbox}");
    assert_eq!(inbox["counts"]["rejected"], 0, "{inbox}");
    drop(d);

    // The inbox holds each accepted event once, settled; nothing forged.
    let stored: Vec<(String, String)> = if pg_state {
        rt.block_on(client.query(
            &format!("SELECT event_id, status FROM {schema}_state.ebb_inbox WHERE model = $1"),
            &[&MODEL],
        ))
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    } else {
        let conn = rusqlite::Connection::open(dir.path().join(".ebb/state.db")).unwrap();
        let mut st = conn
            .prepare("SELECT event_id, status FROM ebb_inbox WHERE model = ?1")
            .unwrap();
        let rows = st
            .query_map([MODEL], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows
    };
    let ids: BTreeSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "an event id is stored twice");
    assert_eq!(ids, accepted, "the inbox is exactly the accepted events");
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in &stored {
        *by_status.entry(s.as_str()).or_default() += 1;
    }
    assert!(
        by_status.keys().all(|s| *s == "applied" || *s == "superseded"),
        "{by_status:?}"
    );
    // The table: every record's newest event; deleted records gone; nothing forged.
    let rows: Vec<PgRow> = rt
        .block_on(client.query(
            &format!("SELECT customer_id, email, score FROM {table} ORDER BY customer_id"),
            &[],
        ))
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), false))
        .collect();
    let expected: Vec<PgRow> = (0..RECORDS)
        .filter(|k| k % 5 != 0)
        .map(|k| {
            let key = format!("k{k:04}");
            (key.clone(), Some(format!("{key}-9@x.com")), Some(9), false)
        })
        .collect();
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows, expected);
    rt.block_on(client.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS {schema}_state CASCADE"
    )))
    .unwrap();
}

/// The project of [`project`] writing `raw.customers` in the DuckDB file `warehouse.duckdb`.
#[cfg(feature = "duckdb")]
pub(crate) fn duckdb_project(dir: &Path) {
    project(dir, "    type: duckdb\n    path: warehouse.duckdb", "raw.customers", "");
    std::fs::write(
        dir.join("models/customers.yaml"),
        model_yaml("raw.customers", "").replace("{dest}", "duckdb"),
    )
    .unwrap();
}

/// `ebb run` applies a webhook model's pending events without a daemon: into DuckDB,
/// newest event per record, a delete by key (soft: the row keeps its values), a value that
/// does not fit its type a dead letter; the second run finds nothing pending.
#[cfg(feature = "duckdb")]
#[test]
fn ebb_run_applies_the_pending_inbox_into_duckdb() {
    use ebb::state::inbox::{InboxStatus, NewEvent};
    let dir = tempfile::tempdir().unwrap();
    duckdb_project(dir.path());
    // What the daemon would have stored.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = chrono::Utc::now();
    let ev = |id: &str, kind: &str, action: &str, body: Vec<u8>, minute: u32| NewEvent {
        model: MODEL.into(),
        event_id: id.into(),
        event_type: format!("customer.{kind}"),
        action: action.into(),
        event_time: chrono::DateTime::parse_from_rfc3339(&format!("2026-12-01T10:{minute:02}:00Z"))
            .unwrap()
            .into(),
        received: now,
        body: String::from_utf8(body).unwrap(),
        status: InboxStatus::Pending,
        reason: None,
    };
    rt.block_on(async {
        let store = ebb::state::StateStore::open(None, dir.path()).await.unwrap();
        store.inbox_init().await.unwrap();
        let bad = json!({"event_type": "customer.created", "data": {"id": "c4", "score": 1.5}}).to_string();
        let stored = store
            .inbox_put(vec![
                ev("a", "created", "upsert", event("created", "c1", "One@X.com", 1, 0), 0),
                ev("b", "updated", "upsert", event("updated", "c1", "two@x.com", 2, 9), 9),
                ev("c", "updated", "upsert", event("updated", "c1", "late@x.com", 3, 5), 5),
                ev("d", "created", "upsert", event("created", "c2", "c2@x.com", 1, 0), 0),
                ev("e", "deleted", "delete", event("deleted", "c2", "", 0, 3), 3),
                ev("f", "created", "upsert", event("created", "c3", "c3@x.com", 7, 0), 0),
                ev("g", "created", "upsert", bad.into_bytes(), 0),
                ev("a", "created", "upsert", event("created", "c1", "dupe@x.com", 1, 0), 0),
            ])
            .await
            .unwrap();
        assert_eq!(stored, [true, true, true, true, true, true, true, false]);
    });
    let (code, v) = crate::support::run_json(dir.path(), MODEL, &[], &[("CRM_WEBHOOK_SECRET", SECRET)]);
    assert_eq!(code, 3, "{v}"); // a dead letter counts as an invalid row
    assert_eq!(v["counts"]["read"], 7, "{v}");
    assert_eq!(v["counts"]["invalid"], 1, "{v}");
    let db = duckdb::Connection::open(dir.path().join("warehouse.duckdb")).unwrap();
    let mut st = db
        .prepare("SELECT customer_id, email, score, is_deleted FROM raw.customers ORDER BY customer_id")
        .unwrap();
    let rows: Vec<(String, Option<String>, Option<i64>, bool)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(st);
    drop(db);
    assert_eq!(
        rows,
        vec![
            ("c1".to_string(), Some("two@x.com".to_string()), Some(2), false),
            ("c2".to_string(), Some("c2@x.com".to_string()), Some(1), true),
            ("c3".to_string(), Some("c3@x.com".to_string()), Some(7), false),
        ]
    );
    let out = crate::support::ebb(dir.path(), &["inbox", MODEL, "--format", "json", "--status", "dead"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let v: Value = serde_json::from_str(crate::support::stdout(&out).trim()).unwrap();
    // One batch: per record the newest event is applied (b, e, f), the others superseded
    // (a and the late c by b; d by e, its values carried so the row exists to be marked).
    assert_eq!(v["counts"]["applied"], 3, "{v}");
    assert_eq!(v["counts"]["superseded"], 3, "{v}");
    assert_eq!(v["events"][0]["event_id"], "g", "{v}");
    assert_eq!(
        v["events"][0]["reason"], "field `score`: 1.5 is not a whole number",
        "{v}"
    );
    let (code, v) = crate::support::run_json(dir.path(), MODEL, &[], &[("CRM_WEBHOOK_SECRET", SECRET)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["counts"]["read"], 0, "{v}");
    // `ebb status` tells a webhook model's health by its inbox.
    let out = crate::support::ebb(dir.path(), &["status", MODEL, "--format", "json"]);
    let v: Value = serde_json::from_str(crate::support::stdout(&out).trim()).unwrap();
    assert_eq!(v["health"], "dead letters", "{v}");
    assert_eq!(v["inbox"]["pending"], 0, "{v}");
    assert_eq!(v["inbox"]["dead_letters"], 1, "{v}");
}

/// `validate` checks a webhook model and its connection offline: each problem once, with
/// its code and where it is.
#[test]
fn validate_checks_webhook_models_and_connections_offline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        "version: 1
connections:
  hooks:
    type: webhook
    signing: hmac_sha256
    secret: plain-text-secret
    public_url: https://hooks.example.com
    tolerance: soon
  warehouse:
    type: duckdb
    path: w.duckdb
  crm:
    type: salesforce
    instance_url: https://example.my.salesforce.com
    auth:
      flow: client_credentials
      client_id: x
      client_secret: ${SF_SECRET}
daemon:
  allow_ips: [10.0.0.0/33]
",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/m.yaml"),
        "models:
  - name: no_events
    source:
      type: webhook
      connection: hooks
      event_time: data.modified
    destination:
      type: duckdb
      connection: warehouse
      table: raw.a
      unique_identifier: id
    mappings:
      - source: id
        destination: id
  - name: to_a_crm
    source:
      type: webhook
      connection: hooks
      events: {a.b: upsert}
      query: SELECT 1
    destination:
      type: salesforce
      connection: crm
      object: Contact
      unique_identifier: id
    mappings:
      - source: id
        destination: Id
  - name: mirror
    source:
      type: webhook
      connection: hooks
      events: {a.b: upsert}
      fields: [id]
    destination:
      type: duckdb
      connection: warehouse
      table: raw.b
      unique_identifier: id
      mode: mirror
    mappings:
      - source: id
        destination: id
      - source: email
        destination: email
    schedule:
      interval: hourly
",
    )
    .unwrap();
    let report = ebb::validate::validate(dir.path(), &[]).unwrap();
    let found: Vec<(String, String, usize)> = report
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.code.as_str().to_string(),
                d.span.file.path.file_name().unwrap().to_string_lossy().into_owned(),
                d.span.line,
            )
        })
        .collect();
    let has = |code: &str, file: &str, line: usize| {
        assert!(
            found.iter().any(|(c, f, l)| c == code && f == file && *l == line),
            "no {code} at {file}:{line} in {found:#?}"
        )
    };
    has("E207", "ebb.yaml", 3); // hmac_sha256 without `header`
    has("E701", "ebb.yaml", 6); // a literal secret
    has("W208", "ebb.yaml", 7); // public_url is hubspot_v3's
    has("W208", "ebb.yaml", 8); // hmac_sha256 has no timestamp
    has("E104", "ebb.yaml", 20); // not a network
    has("E207", "m.yaml", 3); // no `events`
    has("E402", "m.yaml", 6); // `data.modified` is not `$.…`
    has("W208", "m.yaml", 20); // `query` on a webhook source
    has("E206", "m.yaml", 22); // a webhook into a CRM
    has("E501", "m.yaml", 40); // mode mirror
    has("E306", "m.yaml", 44); // `email` is not in `fields`
    has("W208", "m.yaml", 46); // a schedule: the daemon applies events as they arrive
}

/// HubSpot's form end to end: a batch (a JSON array) signed with signature v3 over the URL
/// the daemon is called at, ids and times read from the events themselves.
#[test]
fn hubspot_v3_batches_are_verified_and_applied() {
    require_postgres!();
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("whh_{}", std::process::id());
    let url = crate::source_postgres::url();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1
connections:
  hubspot_events:
    type: webhook
    signing: hubspot_v3
    secret: ${{HUBSPOT_CLIENT_SECRET}}
  warehouse:
    type: postgres
    url: {url}
"
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/hs.yaml"),
        format!(
            "models:
  - name: hs_contacts
    source:
      type: webhook
      connection: hubspot_events
      events: {{contact.creation: upsert, contact.propertyChange: upsert, contact.deletion: delete}}
      event_type: $.subscriptionType
      event_id: $.eventId
      event_time: $.occurredAt
      record: $
    destination:
      type: postgres
      connection: warehouse
      table: {schema}.contacts
      unique_identifier: objectId
      on_deleted: hard
    mappings:
      - source: objectId
        destination: hubspot_id
      - source: propertyValue
        destination: last_value
"
        ),
    )
    .unwrap();
    let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = crate::support::pg_client(&rt);
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
        .unwrap();
    let d = Daemon::start(dir.path(), &[], &[("HUBSPOT_CLIENT_SECRET", secret)]);
    let now = chrono::Utc::now().timestamp_millis();
    let body = json!([
        {"eventId": 101, "subscriptionType": "contact.creation", "objectId": 1, "occurredAt": now - 3000, "attemptNumber": 0},
        {"eventId": 102, "subscriptionType": "contact.creation", "objectId": 2, "occurredAt": now - 3000, "attemptNumber": 0},
        {"eventId": 103, "subscriptionType": "contact.propertyChange", "objectId": 1, "propertyName": "email",
         "propertyValue": "a@x.com", "occurredAt": now - 2000, "attemptNumber": 0},
        {"eventId": 104, "subscriptionType": "contact.deletion", "objectId": 2, "occurredAt": now - 1000, "attemptNumber": 0}
    ])
    .to_string();
    let sign = |uri: &str, body: &str, ts: i64| {
        let signed = format!("POST{uri}{body}{ts}");
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256::HMAC::mac(signed.as_bytes(), secret.as_bytes()))
    };
    let path = "/webhooks/hs_contacts";
    let ts = chrono::Utc::now().timestamp_millis();
    let headers = |sig: String, ts: i64| {
        vec![
            ("Content-Type", "application/json".to_string()),
            ("X-HubSpot-Signature-v3", sig),
            ("X-HubSpot-Request-Timestamp", ts.to_string()),
        ]
    };
    // Signed over another URL (or path): refused.
    let wrong = sign(&format!("https://elsewhere.example.com{path}"), &body, ts);
    assert_eq!(post(&d.addr, path, &headers(wrong, ts), body.as_bytes()).0, 401);
    let good = sign(&format!("http://{}{path}", d.addr), &body, ts);
    let (code, answer) = post(&d.addr, path, &headers(good.clone(), ts), body.as_bytes());
    assert_eq!(code, 202, "{answer}");
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["events"], 4);
    // The same request again (HubSpot retries): every event a duplicate.
    let (_, again) = post(&d.addr, path, &headers(good, ts), body.as_bytes());
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap()["duplicates"],
        4,
        "{again}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows: Vec<(String, Option<String>)> = rt
            .block_on(client.query(
                &format!("SELECT hubspot_id, last_value FROM {schema}.contacts ORDER BY hubspot_id"),
                &[],
            ))
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        if rows.len() == 1 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        rows,
        vec![("1".to_string(), Some("a@x.com".to_string()))],
        "{}",
        d.log()
    );
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
        .unwrap();
}

/// While the table cannot be written (a column of the wrong type), events stay pending;
/// past `max_pending` a request is answered 503 with `Retry-After` and nothing of it is
/// stored; once the table is fixed the inbox drains by itself and every accepted event is
/// applied.
#[test]
fn a_full_inbox_answers_503_and_drains_once_the_table_can_be_written() {
    require_postgres!();
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("whb_{}", std::process::id());
    let table = format!("{schema}.customers");
    let url = crate::source_postgres::url();
    project(dir.path(), &format!("    type: postgres\n    url: {url}"), &table, "");
    let ebb_yaml = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap().replace(
        "    secret: ${CRM_WEBHOOK_SECRET}\n",
        "    secret: ${CRM_WEBHOOK_SECRET}\n    max_pending: 3\n",
    );
    std::fs::write(dir.path().join("ebb.yaml"), ebb_yaml).unwrap();
    let yaml = model_yaml(&table, "").replace("{dest}", "postgres");
    std::fs::write(dir.path().join("models/customers.yaml"), yaml).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = crate::support::pg_client(&rt);
    rt.block_on(client.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {table} (customer_id text PRIMARY KEY, score boolean)"
    )))
    .unwrap();
    let d = Daemon::start(
        dir.path(),
        &[],
        &[("CRM_WEBHOOK_SECRET", SECRET), ("EBB_API_TOKEN", TOKEN)],
    );
    for i in 0..3 {
        let (code, body) = send(
            &d,
            &format!("b{i}"),
            &event("created", &format!("c{i}"), "x@x.com", i, 0),
        );
        assert_eq!(code, 202, "{body}");
    }
    let (code, body) = send(&d, "b3", &event("created", "c3", "x@x.com", 3, 0));
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("3 events waiting"), "{body}");
    d.wait_for("the failing write logged", 1, Duration::from_secs(20), |e| {
        e["event"] == "inbox_failed"
            && e["error"]
                .as_str()
                .is_some_and(|m| m.contains("cannot take these rows"))
    });
    let inbox = d.get(&format!("/api/inbox/{MODEL}"), Some(TOKEN)).json();
    assert_eq!(inbox["counts"]["pending"], 3, "{inbox}");
    // The table fixed, the applier's next attempt drains the inbox; the refused event is
    // sent again and accepted.
    rt.block_on(client.batch_execute(&format!("DROP TABLE {table}")))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (code, _) = send(&d, "b3", &event("created", "c3", "x@x.com", 3, 0));
        if code == 202 {
            break;
        }
        assert_eq!(code, 503);
        assert!(Instant::now() < deadline, "the inbox never drained:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let inbox = settled(&d);
    assert_eq!(inbox["counts"]["applied"], 4, "{inbox}");
    assert_eq!(pg_rows(&rt, &client, &table).len(), 4);
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
        .unwrap();
}

/// `daemon.allow_ips`: a connection from elsewhere is closed before any HTTP, webhook or
/// API alike, and logged; allowed, the same request is answered.
#[cfg(feature = "duckdb")]
#[test]
fn an_address_outside_allow_ips_is_closed_before_any_http() {
    let dir = tempfile::tempdir().unwrap();
    duckdb_project(dir.path());
    let with_allow = |list: &str| {
        let text = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap();
        let base = text.split("  allow_ips:").next().unwrap().to_string();
        std::fs::write(dir.path().join("ebb.yaml"), format!("{base}  allow_ips: {list}\n")).unwrap();
    };
    let env = [("CRM_WEBHOOK_SECRET", SECRET), ("EBB_API_TOKEN", TOKEN)];
    let body = event("created", "c1", "a@x.com", 1, 0);
    with_allow("[10.1.0.0/16]");
    let d = Daemon::start(dir.path(), &[], &env);
    let path = format!("/webhooks/{MODEL}");
    assert_eq!(try_post(&d.addr, &path, &signed(SECRET, "a1", &body), &body), None);
    assert_eq!(try_post(&d.addr, "/api/models", &[], b""), None);
    d.wait_for("the refusal logged", 1, Duration::from_secs(10), |e| {
        e["event"] == "http_connection_not_allowed" && e["peer"] == "127.0.0.1"
    });
    drop(d);
    with_allow("[10.1.0.0/16, 127.0.0.0/8]");
    let d = Daemon::start(dir.path(), &[], &env);
    let (code, answer) = post(&d.addr, &path, &signed(SECRET, "a2", &body), &body);
    assert_eq!(code, 202, "{answer}");
}

/// `daemon.trusted_proxies`: a connection from a trusted proxy is checked request by
/// request against the client `X-Forwarded-For` names, whose rightmost untrusted address
/// is believed (a spoofed entry on the left is not).
#[cfg(feature = "duckdb")]
#[test]
fn behind_a_trusted_proxy_allow_ips_checks_the_forwarded_client() {
    let dir = tempfile::tempdir().unwrap();
    duckdb_project(dir.path());
    let text = std::fs::read_to_string(dir.path().join("ebb.yaml")).unwrap();
    let base = text.split("  allow_ips:").next().unwrap().to_string();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!("{base}  allow_ips: [203.0.113.0/24]\n  trusted_proxies: [127.0.0.1]\n"),
    )
    .unwrap();
    let env = [("CRM_WEBHOOK_SECRET", SECRET), ("EBB_API_TOKEN", TOKEN)];
    let d = Daemon::start(dir.path(), &[], &env);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = |xff: Option<&str>| {
        rt.block_on(async {
            let mut req = ebb::http::client().unwrap().get(format!("http://{}/healthz", d.addr));
            if let Some(x) = xff {
                req = req.header("x-forwarded-for", x);
            }
            req.send().await.unwrap().status().as_u16()
        })
    };
    assert_eq!(status(Some("203.0.113.7")), 200, "an allowed client through the proxy");
    assert_eq!(
        status(Some("203.0.113.7, 198.51.100.2")),
        403,
        "the rightmost untrusted hop is the client"
    );
    assert_eq!(
        status(Some("198.51.100.2, 203.0.113.7")),
        200,
        "a spoofed left entry changes nothing"
    );
    assert_eq!(status(None), 403, "no header: the proxy itself, not allowed");
    d.wait_for("the refusal logged", 1, Duration::from_secs(10), |e| {
        e["event"] == "http_request_not_allowed" && e["client"] == "198.51.100.2"
    });
}

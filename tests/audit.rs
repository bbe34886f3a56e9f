//! The audit log and retention (issue 20), on both state stores: a run's batches recorded
//! with counts and hashed keys, administrative actions with their actor, refused API
//! requests, `ebb audit verify` catching a changed, deleted or reordered row, and
//! `ebb purge` removing exactly what is older than each limit, audited, with the chain
//! still verifying from its anchor.

use crate::daemon::Daemon;
use crate::support::{stderr, stdout};
use crate::sync::Fixture;
use ebb::audit::{Action, NewAudit};
use ebb::state::StateStore;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `ebb ARGS` in `dir` as OS user `user`, with `env`.
fn ebb_as(dir: &Path, user: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("EBB_PROJECT")
        .env("NO_COLOR", "1")
        .env("USER", user)
        .env("LOGNAME", user);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the ebb binary runs")
}

/// `ebb audit ARGS`: the entries.
fn audit(dir: &Path, args: &[&str]) -> Vec<Value> {
    let out = ebb_as(dir, "reader", &[&["audit"], args].concat(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A PostgreSQL state URL in its own schema (dropped first).
fn pg_state(schema: &str) -> String {
    let base = crate::source_postgres::url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = crate::support::pg_client(&rt);
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}ebb_schema={schema}")
}

fn a_run_is_audited_batch_by_batch(state_url: Option<&str>, tag: &str) {
    let f = Fixture::new(tag, 25, 10, state_url);
    let env = [("USER", "ana"), ("LOGNAME", "ana"), ("EBB_HASH_KEY", "audit-key")];
    let (code, run) = f.run_env(&[], &env);
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["counts"]["confirmed"], 25, "{run}");

    let writes = audit(f.path(), &["--action", "write"]);
    assert_eq!(writes.len(), 3, "one entry per batch of 10: {writes:?}");
    let counts: Vec<i64> = writes.iter().map(|w| w["count"].as_i64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<i64>(), 25, "{counts:?}");
    let mut hashes = BTreeSet::new();
    for w in &writes {
        assert_eq!(w["model"], "contacts");
        assert_eq!(w["run_id"], run["run_id"]);
        assert_eq!(w["operation"], "upsert");
        assert_eq!(w["destination"], "hook");
        assert_eq!(w["actor"], "ebb");
        assert_eq!(w["detail"]["key_hash"], "hmac-sha256");
        let keys = w["key_hashes"].as_array().unwrap();
        assert_eq!(keys.len() as i64, w["count"].as_i64().unwrap());
        hashes.extend(keys.iter().map(|k| k.as_str().unwrap().to_string()));
    }
    // HMAC-SHA256 of each key under EBB_HASH_KEY: never the key itself.
    let want: BTreeSet<String> = (1..=25)
        .map(|i| hex(&hmac_sha256::HMAC::mac(i.to_string().as_bytes(), b"audit-key")))
        .collect();
    assert_eq!(hashes, want);

    let triggered = audit(f.path(), &["--action", "run_triggered", "--model", "contacts"]);
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    assert_eq!(triggered[0]["actor"], "os:ana");
    assert!(audit(f.path(), &["--since", "1h"]).len() >= 4);
    assert!(audit(f.path(), &["--since", "2099-01-01"]).is_empty());

    // A second run with nothing changed writes nothing outside: no write entry.
    let (code, _) = f.run_env(&[], &[]);
    assert_eq!(code, 0);
    assert_eq!(audit(f.path(), &["--action", "write"]).len(), 3);

    // Without the key: plain SHA-256. A reset is recorded with its actor.
    let reset = ebb_as(f.path(), "bob", &["reset", "contacts"], &[]);
    assert_eq!(reset.status.code(), Some(0), "{}", stderr(&reset));
    let (code, _) = f.run_env(&[], &[]);
    assert_eq!(code, 0);
    let writes = audit(f.path(), &["--action", "write"]);
    assert_eq!(writes.len(), 6);
    assert_eq!(writes[5]["detail"]["key_hash"], "sha256");
    let sha = |s: &str| hex(&hmac_sha256::Hash::hash(s.as_bytes()));
    assert!(writes[3..]
        .iter()
        .flat_map(|w| w["key_hashes"].as_array().unwrap().clone())
        .any(|k| k == sha("7")));
    let resets = audit(f.path(), &["--action", "reset"]);
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0]["actor"], "os:bob");
    assert_eq!(resets[0]["detail"]["snapshot_rows"], 25);

    let verify = ebb_as(f.path(), "auditor", &["audit", "verify"], &[]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    assert!(
        stdout(&verify).contains("audit log intact: 10 entries verified"),
        "{}",
        stdout(&verify)
    );
}

#[test]
fn a_run_is_audited_batch_by_batch_sqlite() {
    require_postgres!();
    a_run_is_audited_batch_by_batch(None, "audit_sqlite");
}

#[test]
fn a_run_is_audited_batch_by_batch_postgres() {
    require_postgres!();
    let schema = format!("ebb_audit_run_{}", std::process::id());
    a_run_is_audited_batch_by_batch(Some(&pg_state(&schema)), "audit_pg");
    let _ = pg_state(&schema);
}

/// Where a store is and how to change it behind ebb's back.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(tempfile::TempDir, String),
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ebb.yaml"), "version: 1\nconnections: {}\n").unwrap();
        Backend::Sqlite(dir)
    }

    fn postgres(tag: &str) -> Backend {
        let schema = format!("ebb_audit_{tag}_{}", std::process::id());
        let url = pg_state(&schema);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ebb.yaml"),
            format!("version: 1\nstate:\n  url: \"{url}\"\nconnections: {{}}\n"),
        )
        .unwrap();
        Backend::Postgres(dir, schema)
    }

    fn dir(&self) -> &Path {
        match self {
            Backend::Sqlite(d) | Backend::Postgres(d, _) => d.path(),
        }
    }

    fn url(&self) -> Option<String> {
        match self {
            Backend::Sqlite(_) => None,
            Backend::Postgres(_, schema) => {
                let base = crate::source_postgres::url();
                let sep = if base.contains('?') { '&' } else { '?' };
                Some(format!("{base}{sep}ebb_schema={schema}"))
            }
        }
    }

    fn store(&self, rt: &tokio::runtime::Runtime) -> StateStore {
        rt.block_on(StateStore::open(self.url().as_deref(), self.dir()))
            .unwrap()
    }

    /// Runs `sql` on the store directly, `{s}` standing for the tables' prefix.
    fn exec(&self, sql: &str) {
        match self {
            Backend::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join(".ebb/state.db")).unwrap();
                c.execute_batch(&sql.replace("{s}", ""))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Backend::Postgres(_, schema) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let client = crate::support::pg_client(&rt);
                rt.block_on(client.batch_execute(&sql.replace("{s}", &format!("{schema}."))))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// A number read from the store.
    fn count(&self, sql: &str) -> i64 {
        match self {
            Backend::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join(".ebb/state.db")).unwrap();
                c.query_row(&sql.replace("{s}", ""), [], |r| r.get(0)).unwrap()
            }
            Backend::Postgres(_, schema) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let client = crate::support::pg_client(&rt);
                rt.block_on(client.query_one(&sql.replace("{s}", &format!("{schema}.")), &[]))
                    .unwrap()
                    .get(0)
            }
        }
    }

    fn verify(&self) -> Output {
        ebb_as(self.dir(), "auditor", &["audit", "verify"], &[])
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres(_, schema) = self {
            let _ = pg_state(schema);
        }
    }
}

/// Five entries appended through the store (`reset` of models m1..m5 by os:ana).
fn five_entries(b: &Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = b.store(&rt);
    for i in 1..=5 {
        let e = NewAudit::new("os:ana", Action::Reset).model(format!("m{i}"));
        rt.block_on(store.audit_append(e)).unwrap();
    }
    let ok = b.verify();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("5 entries verified"), "{}", stdout(&ok));
}

fn tampering_is_caught(make: impl Fn() -> Backend) {
    // A changed field.
    let b = make();
    five_entries(&b);
    b.exec("UPDATE {s}ebb_audit SET actor = 'os:mallory' WHERE seq = 3");
    let bad = b.verify();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("audit row 3: its hash does not match its fields"),
        "{}",
        stderr(&bad)
    );
    drop(b);

    // A deleted row in the middle.
    let b = make();
    five_entries(&b);
    b.exec("DELETE FROM {s}ebb_audit WHERE seq = 2");
    let bad = b.verify();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("audit row 3 comes after row 1"),
        "{}",
        stderr(&bad)
    );
    drop(b);

    // Rows renumbered to hide the deletion: the link breaks.
    let b = make();
    five_entries(&b);
    b.exec("DELETE FROM {s}ebb_audit WHERE seq = 2; UPDATE {s}ebb_audit SET seq = seq - 1 WHERE seq > 2");
    let bad = b.verify();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("audit row 2: it does not follow row 1"),
        "{}",
        stderr(&bad)
    );
    drop(b);

    // Two rows swapped.
    let b = make();
    five_entries(&b);
    b.exec(
        "UPDATE {s}ebb_audit SET seq = 100 WHERE seq = 2; UPDATE {s}ebb_audit SET seq = 2 WHERE seq = 4;
         UPDATE {s}ebb_audit SET seq = 4 WHERE seq = 100",
    );
    let bad = b.verify();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("audit row 2"), "{}", stderr(&bad));
}

#[test]
fn a_changed_deleted_or_reordered_audit_row_fails_verify_sqlite() {
    tampering_is_caught(Backend::sqlite);
}

#[test]
fn a_changed_deleted_or_reordered_audit_row_fails_verify_postgres() {
    require_postgres!();
    tampering_is_caught(|| Backend::postgres("tamper"));
}

/// Four stores on one database (as four daemons would be) append at once: one linear chain.
fn concurrent_appends_keep_one_chain(b: Backend) {
    // The store exists before the writers race to open it.
    drop(b.store(&tokio::runtime::Runtime::new().unwrap()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (url, dir) = (b.url(), b.dir().to_path_buf());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let store = rt.block_on(StateStore::open(url.as_deref(), &dir)).unwrap();
                for i in 0..25 {
                    let e = NewAudit::new(format!("os:t{t}"), Action::Reset).model(format!("m{i}"));
                    rt.block_on(store.audit_append(e)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ok = b.verify();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("100 entries verified"), "{}", stdout(&ok));
}

#[test]
fn concurrent_appends_keep_one_chain_sqlite() {
    concurrent_appends_keep_one_chain(Backend::sqlite());
}

#[test]
fn concurrent_appends_keep_one_chain_postgres() {
    require_postgres!();
    concurrent_appends_keep_one_chain(Backend::postgres("concurrent"));
}

/// RFC 3339 text `days` ago, as the store keeps run times.
fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms_days_ago(days: i64) -> i64 {
    (chrono::Utc::now() - chrono::Duration::days(days)).timestamp_millis()
}

fn retention_removes_exactly_what_is_older(b: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = b.store(&rt);
    rt.block_on(async {
        store.inbox_init().await.unwrap();
        store.conflicts_init().await.unwrap();
        // Audit entries 400 days old (beyond 365d) and 300 days old.
        for days in [400, 399, 398, 300] {
            let mut e = NewAudit::new("os:ana", Action::Reset).model("old");
            e.at_ms = ms_days_ago(days);
            store.audit_append(e).await.unwrap();
        }
    });
    // Runs (ids grow with time): 1 succeeded and 2 failed at 100 days, 1 failed at 80, one
    // now. Kept: the latest completed (1), the 80-day one, the latest (5).
    let run = |model: &str, days: i64, status: &str| {
        b.exec(&format!(
            "INSERT INTO {{s}}ebb_runs (model, started_at, ended_at, status) VALUES ('{model}', '{}', '{}', '{status}')",
            days_ago(days),
            days_ago(days)
        ))
    };
    run("m", 100, "succeeded");
    run("m", 100, "failed");
    run("m", 99, "failed");
    run("m", 80, "failed");
    run("m", 0, "failed");
    // Row errors of the 100- and 80-day runs go (30d); the one of today's run stays.
    b.exec(
        "INSERT INTO {s}ebb_row_errors (model, key, run_id, kind, code, message) VALUES
         ('m', 'a', 2, 'rejected', 'X', 'x'), ('m', 'b', 4, 'rejected', 'X', 'x'), ('m', 'c', 5, 'rejected', 'X', 'x')",
    );
    // Inbox (7d): only the 10-day-old applied event goes, never pending or dead letters.
    let event = |id: &str, hours: i64, status: &str| {
        b.exec(&format!(
            "INSERT INTO {{s}}ebb_inbox (model, event_id, event_type, action, event_time_us, received_ms, status, body)
             VALUES ('w', '{id}', 't', 'upsert', 0, {}, '{status}', '{{}}')",
            chrono::Utc::now().timestamp_millis() - hours * 3_600_000
        ))
    };
    event("e1", 240, "applied");
    event("e2", 240, "pending");
    event("e3", 240, "dead");
    event("e4", 12, "applied");
    // Conflicts (90d): only the decided one of 100 days goes; open ones stay.
    let conflict = |key: &str, days: i64, status: &str| {
        let decided = if status == "open" {
            "NULL".to_string()
        } else {
            ms_days_ago(days).to_string()
        };
        b.exec(&format!(
            "INSERT INTO {{s}}ebb_conflicts (model, key, field, fingerprint, warehouse_value, crm_value, policy, status,
                reason, run_id, detected_ms, decided_ms)
             VALUES ('m', '{key}', 'Email', '{key}', '\"a\"', '\"b\"', 'p', '{status}', 'r', 1, {}, {decided})",
            ms_days_ago(days)
        ))
    };
    conflict("k1", 100, "decided");
    conflict("k2", 100, "open");
    conflict("k3", 10, "resolved");

    let totals = || {
        [
            "SELECT count(*) FROM {s}ebb_runs",
            "SELECT count(*) FROM {s}ebb_row_errors",
            "SELECT count(*) FROM {s}ebb_inbox",
            "SELECT count(*) FROM {s}ebb_conflicts",
            "SELECT count(*) FROM {s}ebb_audit",
        ]
        .map(|q| b.count(q))
    };
    assert_eq!(totals(), [5, 3, 4, 3, 4]);

    let dry = ebb_as(b.dir(), "ops", &["purge", "--dry-run"], &[]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let expected = "runs: would remove 2\nrow_errors: would remove 2\ninbox: would remove 1\nconflicts: would remove 1\naudit: would remove 3\n";
    assert!(stdout(&dry).starts_with(expected), "{}", stdout(&dry));
    assert_eq!(totals(), [5, 3, 4, 3, 4], "a dry run removes nothing");

    let purge = ebb_as(b.dir(), "ops", &["purge"], &[]);
    assert_eq!(purge.status.code(), Some(0), "{}", stderr(&purge));
    assert_eq!(stdout(&purge), expected.replace("would remove", "removed"));
    // Left: runs 1, 4, 5; error c; events e2, e3, e4; conflicts k2, k3; audit: the 300-day
    // entry and the purge's own.
    assert_eq!(totals(), [3, 1, 3, 2, 2]);
    assert_eq!(b.count("SELECT count(*) FROM {s}ebb_runs WHERE id IN (1, 4, 5)"), 3);
    assert_eq!(b.count("SELECT count(*) FROM {s}ebb_row_errors WHERE key = 'c'"), 1);
    assert_eq!(
        b.count("SELECT count(*) FROM {s}ebb_inbox WHERE event_id IN ('e2', 'e3', 'e4')"),
        3
    );
    assert_eq!(
        b.count("SELECT count(*) FROM {s}ebb_conflicts WHERE key IN ('k2', 'k3')"),
        2
    );

    let purges = audit(b.dir(), &["--action", "purge"]);
    assert_eq!(purges.len(), 1);
    assert_eq!(purges[0]["actor"], "os:ops");
    assert_eq!(
        purges[0]["detail"]["removed"],
        serde_json::json!({"runs": 2, "row_errors": 2, "inbox": 1, "conflicts": 1, "audit": 3})
    );
    let verify = b.verify();
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    assert!(
        stdout(&verify).contains("2 entries verified from the anchor left by a purge (entry 3)"),
        "{}",
        stdout(&verify)
    );

    // Nothing more is old enough; a second purge removes nothing, and is audited too.
    let again = ebb_as(b.dir(), "ops", &["purge"], &[]);
    assert!(
        stdout(&again).lines().all(|l| l.ends_with("removed 0")),
        "{}",
        stdout(&again)
    );
    assert_eq!(audit(b.dir(), &["--action", "purge"]).len(), 2);
    assert_eq!(b.verify().status.code(), Some(0));

    // Limits from ebb.yaml: the 12-hour-old event is younger than `inbox: 1d`, the 10-day
    // resolved conflict than `conflicts: 2w`; the audit log is kept whole.
    let project = std::fs::read_to_string(b.dir().join("ebb.yaml")).unwrap();
    std::fs::write(
        b.dir().join("ebb.yaml"),
        format!("{project}retention:\n  inbox: 1d\n  conflicts: 2w\n  audit: forever\n"),
    )
    .unwrap();
    let third = ebb_as(b.dir(), "ops", &["purge"], &[]);
    assert_eq!(
        stdout(&third),
        "runs: removed 0\nrow_errors: removed 0\ninbox: removed 0\nconflicts: removed 0\naudit: removed 0\n"
    );
    b.exec("UPDATE {s}ebb_inbox SET received_ms = received_ms - 46800000 WHERE event_id = 'e4'");
    let fourth = ebb_as(b.dir(), "ops", &["purge"], &[]);
    assert!(stdout(&fourth).contains("inbox: removed 1"), "{}", stdout(&fourth));
    assert_eq!(b.verify().status.code(), Some(0));
}

#[test]
fn retention_removes_exactly_what_is_older_than_each_limit_sqlite() {
    retention_removes_exactly_what_is_older(Backend::sqlite());
}

#[test]
fn retention_removes_exactly_what_is_older_than_each_limit_postgres() {
    require_postgres!();
    retention_removes_exactly_what_is_older(Backend::postgres("retention"));
}

#[test]
fn the_api_audits_what_it_does_and_refuses_and_only_admins_read_the_log() {
    require_postgres!();
    let f = Fixture::new("audit_api", 5, 10, None);
    let project = std::fs::read_to_string(f.path().join("ebb.yaml")).unwrap();
    std::fs::write(
        f.path().join("ebb.yaml"),
        format!(
            "{project}daemon:\n  tokens:\n    - {{name: grafana, token: \"${{T_VIEWER}}\", role: viewer}}\n    - {{name: oncall, token: \"${{T_OPERATOR}}\", role: operator}}\n    - {{name: root, token: \"${{T_ADMIN}}\", role: admin}}\n"
        ),
    )
    .unwrap();
    let (viewer, operator, admin) = ("v".repeat(32), "o".repeat(32), "a".repeat(32));
    let env = [
        ("T_VIEWER", viewer.as_str()),
        ("T_OPERATOR", operator.as_str()),
        ("T_ADMIN", admin.as_str()),
    ];
    let d = Daemon::start(f.path(), &[], &env);

    assert_eq!(d.post("/api/models/contacts/runs", Some(&viewer)).status, 403);
    assert_eq!(d.post("/api/models/contacts/runs", None).status, 401);
    assert_eq!(d.get("/api/audit", Some(&operator)).status, 403);
    assert_eq!(d.get("/api/audit", Some("wrong")).status, 401);
    let started = d.post("/api/models/contacts/runs", Some(&operator));
    assert!(started.status < 300, "{} {}", started.status, started.body);

    // The run's writes arrive once it is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let entries = loop {
        let all = d.get("/api/audit?limit=1000", Some(&admin));
        assert_eq!(all.status, 200, "{}", all.body);
        let entries = all.json()["entries"].as_array().unwrap().clone();
        if entries.iter().any(|e| e["action"] == "write") {
            break entries;
        }
        assert!(std::time::Instant::now() < deadline, "no write entry: {entries:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let of = |action: &str| -> Vec<&Value> { entries.iter().filter(|e| e["action"] == action).collect() };
    let refused = of("api_refused");
    let seen: Vec<(String, u64, String)> = refused
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["detail"]["status"].as_u64().unwrap(),
                e["detail"]["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "token:grafana".to_string(),
                403,
                "/api/models/contacts/runs".to_string()
            ),
            ("anonymous".to_string(), 401, "/api/models/contacts/runs".to_string()),
            ("token:oncall".to_string(), 403, "/api/audit".to_string()),
            ("anonymous".to_string(), 401, "/api/audit".to_string()),
        ]
    );
    assert_eq!(refused[0]["detail"]["needs"], "operator");
    let triggered = of("run_triggered");
    assert_eq!(triggered.len(), 1);
    assert_eq!(triggered[0]["actor"], "token:oncall");
    assert_eq!(triggered[0]["model"], "contacts");
    assert_eq!(of("write")[0]["count"], 5);
    // The daemon purged once at start, and said so.
    assert_eq!(of("purge").len(), 1);
    assert_eq!(of("purge")[0]["actor"], "daemon");

    // A filter, and a bad one.
    let only = d.get("/api/audit?action=run_triggered", Some(&admin)).json();
    assert_eq!(only["entries"].as_array().unwrap().len(), 1);
    assert_eq!(d.get("/api/audit?action=nope", Some(&admin)).status, 400);

    // The CLI verifies the chain the daemon wrote.
    let verify = ebb_as(f.path(), "auditor", &["audit", "verify"], &[]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
}

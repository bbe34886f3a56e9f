//! `ebb run` end to end: a real PostgreSQL warehouse, the `ebb` binary, real HTTP to the
//! in-process sink, the SQLite and PostgreSQL state stores. The acceptance tests of the
//! delivery contract (docs/delivery.md §1).

use crate::sink::Sink;
use crate::support::{ebb, stderr, stdout};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A warehouse table, a sink and a project that syncs one to the other.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub schema: String,
    pub sink: Sink,
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

/// The model file: `contacts` from `{schema}.t` to the sink, `{extra}` appended to the
/// destination block, `{mappings}` as given.
pub struct ModelSpec<'a> {
    pub mode: &'a str,
    pub destination_extra: &'a str,
    pub email_transform: &'a str,
    pub guard: &'a str,
    /// The select list instead of `id, name, email, score`.
    pub columns: &'a str,
}

impl Default for ModelSpec<'_> {
    fn default() -> Self {
        ModelSpec {
            mode: "upsert",
            destination_extra: "",
            email_transform: "lower",
            guard: "",
            columns: "id, name, email, score",
        }
    }
}

impl Fixture {
    /// `rows` rows `(id, name, email, score)`; the hook takes `batch` records per request.
    pub fn new(tag: &str, rows: usize, batch: usize, state_url: Option<&str>) -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = crate::source_postgres::url();
        let client = crate::support::pg_client(&rt);
        let schema = format!("ebb_sync_{tag}_{}", std::process::id());
        let sink = Sink::start_in_thread("id");
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            schema,
            sink,
            rt,
            client,
        };
        let s = &f.schema;
        f.sql(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
             CREATE TABLE {s}.t (id INT, name TEXT, email TEXT, score NUMERIC(10, 2));
             INSERT INTO {s}.t SELECT i, 'name ' || i, 'User' || i || '@Example.com', i * 1.5
                FROM generate_series(1, {rows}) AS i;"
        ));
        let state = state_url.map(|u| format!("state:\n  url: {u}\n")).unwrap_or_default();
        std::fs::write(
            f.dir.path().join("ebb.yaml"),
            format!(
                "version: 1\n{state}connections:\n  pg:\n    type: postgres\n    url: {url}\n  hook:\n    type: http\n    url: {}\n    batch_size: {batch}\n    max_concurrency: 2\n    timeout_secs: 2\n  out:\n    type: file\n    path: out\n",
                f.sink.url()
            ),
        )
        .unwrap();
        std::fs::create_dir(f.dir.path().join("models")).unwrap();
        f.model(&ModelSpec::default());
        f
    }

    pub fn model(&self, m: &ModelSpec) {
        let transform = if m.email_transform.is_empty() {
            String::new()
        } else {
            format!("\n        transform: {}", m.email_transform)
        };
        std::fs::write(
            self.dir.path().join("models/contacts.yaml"),
            format!(
                "models:
  - name: contacts
    source:
      type: postgres
      connection: pg
      query: |
        SELECT {columns} FROM {s}.t
    destination:
      type: http
      connection: hook
      mode: {mode}
      unique_identifier: id{extra}
    mappings:
      - source: id
        destination: id
      - source: name
        destination: name
      - source: email
        destination: email{transform}
      - source: score
        destination: score
{guard}",
                s = self.schema,
                mode = m.mode,
                extra = m.destination_extra,
                guard = m.guard,
                columns = m.columns,
            ),
        )
        .unwrap();
    }

    pub fn sql(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `ebb run contacts ARGS --format json`: the exit code and the run's summary.
    pub fn run(&self, args: &[&str]) -> (i32, Value) {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
        crate::support::run_json(self.path(), "contacts", args, env)
    }

    /// What the warehouse holds, as the sink should: id → record.
    pub fn expected(&self) -> BTreeMap<String, Value> {
        let rows = self
            .rt
            .block_on(self.client.query(
                &format!(
                    "SELECT id, name, lower(email), score::text FROM {}.t ORDER BY id",
                    self.schema
                ),
                &[],
            ))
            .unwrap();
        rows.iter()
            .map(|r| {
                let id: i32 = r.get(0);
                let score: Option<String> = r.get(3);
                (
                    id.to_string(),
                    serde_json::json!({
                        "id": id,
                        "name": r.get::<_, Option<String>>(1),
                        "email": r.get::<_, Option<String>>(2),
                        "score": score.map(|s| serde_json::from_str::<Value>(&s).unwrap()),
                    }),
                )
            })
            .collect()
    }

    /// Keys sent since the log was last reset, in order, by operation.
    pub fn sent_keys(&self, op: &str) -> Vec<String> {
        self.sink
            .log()
            .iter()
            .filter(|r| r.operation == op && r.status < 300)
            .flat_map(|r| r.keys.clone())
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.rt.block_on(
            self.client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)),
        );
    }
}

/// Fails with the keys that differ (not two whole maps) when the sink does not hold the model.
#[track_caller]
pub fn assert_holds(actual: &BTreeMap<String, Value>, expected: &BTreeMap<String, Value>, context: &str) {
    if actual == expected {
        return;
    }
    let keys: BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| actual.get(*k) != expected.get(*k))
        .take(8)
        .map(|k| format!("  {k}: destination {:?}, model {:?}", actual.get(k), expected.get(k)))
        .collect();
    panic!(
        "{context}: the destination ({} records) does not hold the model ({} rows); first differences:\n{}",
        actual.len(),
        expected.len(),
        diff.join("\n")
    );
}

fn count(v: &Value, what: &str) -> i64 {
    v["counts"][what]
        .as_i64()
        .unwrap_or_else(|| panic!("no count {what} in {v}"))
}

fn ids(range: std::ops::RangeInclusive<i32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

/// The first sync sends every row; a second run with no change sends nothing at all; a 1%
/// change sends exactly those rows in ceil(n/batch) requests.
fn no_change_and_one_percent(state_url: Option<&str>, tag: &str) {
    let f = Fixture::new(tag, 2000, 100, state_url);
    let (code, first) = f.run(&[]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["status"], "succeeded");
    assert_eq!((count(&first, "read"), count(&first, "added")), (2000, 2000));
    assert_eq!((count(&first, "sent"), count(&first, "confirmed")), (2000, 2000));
    assert_eq!(count(&first, "api_calls"), 20);
    assert_eq!(f.sink.requests(), 20, "ceil(2000 / 100) requests");
    assert_holds(&f.sink.records(), &f.expected(), "first sync");

    f.sink.reset_log();
    let (code, second) = f.run(&[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(count(&second, "unchanged"), 2000);
    assert_eq!((count(&second, "sent"), count(&second, "api_calls")), (0, 0));
    assert_eq!(f.sink.requests(), 0, "no change, no request");

    // 1%: 20 rows change.
    f.sql(&format!(
        "UPDATE {}.t SET name = name || ' (moved)' WHERE id % 100 = 7",
        f.schema
    ));
    f.sink.reset_log();
    let (code, third) = f.run(&[]);
    assert_eq!(code, 0, "{third}");
    assert_eq!((count(&third, "changed"), count(&third, "unchanged")), (20, 1980));
    assert_eq!(count(&third, "sent"), 20);
    assert_eq!(f.sink.requests(), 1, "ceil(20 / 100)");
    let sent: BTreeSet<String> = f.sent_keys("upsert").into_iter().collect();
    let want: BTreeSet<String> = (0..20).map(|i| (i * 100 + 7).to_string()).collect();
    assert_eq!(sent, want, "exactly the changed rows");
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

#[test]
fn sqlite_state_no_change_sends_nothing_and_one_percent_sends_exactly_that() {
    require_postgres!();
    no_change_and_one_percent(None, "sqlite");
}

#[test]
fn postgres_state_no_change_sends_nothing_and_one_percent_sends_exactly_that() {
    require_postgres!();
    let base = crate::source_postgres::url();
    let schema = format!("ebb_sync_state_{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    no_change_and_one_percent(Some(&format!("{base}{sep}ebb_schema={schema}")), "pgstate");
    let f = Fixture::new("pgstate_cleanup", 0, 1, None);
    f.sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
}

#[test]
fn changing_a_transform_resends_only_the_rows_whose_value_changed() {
    require_postgres!();
    let f = Fixture::new("transform", 300, 100, None);
    // A third of the emails are lower case already.
    f.sql(&format!(
        "UPDATE {}.t SET email = lower(email) WHERE id % 3 = 0",
        f.schema
    ));
    f.model(&ModelSpec {
        email_transform: "",
        ..ModelSpec::default()
    });
    assert_eq!(f.run(&[]).0, 0);
    f.sink.reset_log();
    f.model(&ModelSpec::default()); // now `transform: lower`
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!((count(&run, "changed"), count(&run, "unchanged")), (200, 100));
    let sent: BTreeSet<String> = f.sent_keys("upsert").into_iter().collect();
    let want: BTreeSet<String> = (1..=300).filter(|i| i % 3 != 0).map(|i| i.to_string()).collect();
    assert_eq!(sent, want);
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

#[test]
fn rejected_rows_make_a_partial_run_and_are_resent_until_accepted() {
    require_postgres!();
    let f = Fixture::new("reject", 250, 100, None);
    f.sink.reject(&["7", "42", "199"]);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    assert_eq!(run["status"], "partial");
    assert_eq!((count(&run, "confirmed"), count(&run, "rejected")), (247, 3));
    let errors = ebb(f.path(), &["errors", "contacts", "--format", "json"]);
    let lines: Vec<Value> = stdout(&errors)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|l| l["key"].as_str().unwrap()).collect::<Vec<_>>(),
        ["199", "42", "7"]
    );
    assert!(lines
        .iter()
        .all(|l| l["kind"] == "rejected" && l["message"] == "rejected by test"));
    let human = stdout(&ebb(f.path(), &["errors", "contacts"]));
    assert!(human.contains("42") && human.contains("rejected by test"), "{human}");

    // Still rejected: exactly those 3 are sent again, with a row changed since.
    f.sql(&format!("UPDATE {}.t SET name = 'changed' WHERE id = 100", f.schema));
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    let sent: BTreeSet<String> = f.sent_keys("upsert").into_iter().collect();
    assert_eq!(sent, ["100", "199", "42", "7"].iter().map(|s| s.to_string()).collect());

    // Accepted: sent once more, then never again.
    f.sink.clear_rejects();
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "sent"), 3);
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
    assert!(stdout(&ebb(f.path(), &["errors", "contacts"])).contains("no rejected or invalid rows"));
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "sent")), (0, 0));
}

#[test]
fn storms_of_5xx_and_429_are_retried_and_an_endless_one_fails_the_run_committing_nothing_unconfirmed() {
    require_postgres!();
    let f = Fixture::new("storm", 300, 100, None);
    f.sink.fail_next(4, 503, None);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "api_calls"), 3 + 4);
    assert_holds(&f.sink.records(), &f.expected(), "after the run");

    f.sql(&format!("UPDATE {}.t SET score = score + 1 WHERE id <= 150", f.schema));
    f.sink.fail_next(2, 429, Some(1));
    let started = std::time::Instant::now();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_holds(&f.sink.records(), &f.expected(), "after the run");

    // A storm longer than the attempts: the run fails; nothing unconfirmed is committed.
    f.sql(&format!("UPDATE {}.t SET name = 'storm ' || id", f.schema));
    f.sink.fail_next(1000, 500, None);
    let (code, run) = f.run_env(&[], &[("EBB_RETRY_MAX_ATTEMPTS", "3")]);
    assert_eq!(code, 1, "{run}");
    assert_eq!(run["status"], "failed");
    assert_eq!(count(&run, "confirmed"), 0);
    assert!(run["error"].as_str().unwrap().contains("HTTP 500"), "{run}");
    let runs = stdout(&ebb(f.path(), &["runs", "contacts", "--format", "json"]));
    let last: Value = serde_json::from_str(runs.lines().next().unwrap()).unwrap();
    assert_eq!(
        (last["status"].as_str(), last["counts"]["confirmed"].as_i64()),
        (Some("failed"), Some(0))
    );
    // The storm ends: every changed row goes.
    f.sink.clear_faults();
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "sent"), 300);
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

#[test]
fn a_hung_request_times_out_and_is_retried() {
    require_postgres!();
    let f = Fixture::new("timeout", 50, 100, None);
    f.sink.hang_next(1);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "api_calls"), 2);
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

/// Kills `ebb run` with SIGKILL after `after`, against a slow sink.
fn run_and_kill(f: &Fixture, after: Duration) -> Output {
    run_and_kill_when(f, |_| true, after)
}

/// `ebb run contacts` killed (SIGKILL) once `ready` holds for the sink, checked every 5 ms
/// from `after` on (so a loaded machine cannot make the kill come before the run started).
fn run_and_kill_when(f: &Fixture, ready: impl Fn(&Sink) -> bool, after: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "contacts", "--format", "json"])
        .current_dir(f.path())
        .env_remove("EBB_PROJECT")
        .env("EBB_RETRY_BASE_MS", "5")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready(&f.sink) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait_with_output().unwrap()
}

#[test]
fn kill_9_at_any_point_loses_nothing_and_never_leaves_a_stale_payload() {
    require_postgres!();
    let f = Fixture::new("crash", 1000, 25, None);
    assert_eq!(f.run(&[]).0, 0);
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
    for (round, kill_after) in [60u64, 250, 500, 800].into_iter().enumerate() {
        // The warehouse changes; a slow destination applies each batch, then takes its time
        // to answer; the run is killed in the middle.
        f.sql(&format!("UPDATE {}.t SET name = 'round {round} ' || id", f.schema));
        f.sql(&format!(
            "INSERT INTO {s}.t VALUES ({id}, 'new', 'n@x.io', 1)",
            s = f.schema,
            id = 5000 + round
        ));
        f.sink.delay(Duration::from_millis(40));
        let out = run_and_kill(&f, Duration::from_millis(kill_after));
        assert!(out.status.code().is_none(), "killed by a signal: {:?}", out.status);
        // Rows the destination applied but the run never confirmed are put back in the
        // warehouse to their previous value: a diff by hash alone would call them unchanged.
        f.sql(&format!(
            "UPDATE {}.t SET name = 'name ' || id WHERE id < 5000",
            f.schema
        ));
        f.sink.delay(Duration::ZERO);
        let (code, run) = f.run(&[]);
        assert_eq!(code, 0, "round {round}: {run}");
        assert_holds(
            &f.sink.records(),
            &f.expected(),
            &format!("round {round} (killed after {kill_after} ms)"),
        );
        // And a further run has nothing to do.
        let (code, run) = f.run(&[]);
        assert_eq!((code, count(&run, "sent")), (0, 0), "round {round}: {run}");
    }
}

#[test]
fn the_guard_refuses_a_mass_change_before_sending_and_force_overrides() {
    require_postgres!();
    let f = Fixture::new("guard", 200, 100, None);
    f.model(&ModelSpec {
        guard: "    guard:\n      max_change_ratio: 0.2\n",
        ..ModelSpec::default()
    });
    let (code, first) = f.run(&[]);
    assert_eq!(code, 0, "the first sync is exempt: {first}");
    f.sql(&format!("UPDATE {}.t SET name = 'x' WHERE id <= 100", f.schema));
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 1, "{run}");
    assert_eq!(run["status"], "aborted");
    assert_eq!(count(&run, "changed"), 100);
    assert_eq!(f.sink.requests(), 0, "nothing is sent");
    let err = run["error"].as_str().unwrap();
    assert!(
        err.contains("50.0% of the 200 rows confirmed in the destination would change")
            && err.contains("max_change_ratio: 0.2")
            && err.contains("--force"),
        "{err}"
    );
    let runs = stdout(&ebb(f.path(), &["runs", "contacts", "--format", "json"]));
    let last: Value = serde_json::from_str(runs.lines().next().unwrap()).unwrap();
    assert_eq!(last["status"], "aborted");
    assert_eq!(last["counts"]["changed"], 100);
    let (code, run) = f.run(&["--force"]);
    assert_eq!((code, count(&run, "sent")), (0, 100), "{run}");
    assert_holds(&f.sink.records(), &f.expected(), "after the run");

    // max_deletes counts the deletes a mirror would make.
    f.model(&ModelSpec {
        mode: "mirror",
        guard: "    guard:\n      max_deletes: 5\n",
        ..ModelSpec::default()
    });
    f.sql(&format!("DELETE FROM {}.t WHERE id <= 6", f.schema));
    let (code, run) = f.run(&[]);
    assert_eq!(code, 1, "{run}");
    assert!(run["error"]
        .as_str()
        .unwrap()
        .contains("6 records would be deleted, over `max_deletes: 5`"));
}

#[test]
fn mirror_deletes_rows_that_leave_the_model_and_clear_nulls_them() {
    require_postgres!();
    let f = Fixture::new("mirror", 120, 100, None);
    f.model(&ModelSpec {
        mode: "mirror",
        ..ModelSpec::default()
    });
    assert_eq!(f.run(&[]).0, 0);
    f.sql(&format!("DELETE FROM {}.t WHERE id > 115", f.schema));
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!((count(&run, "removed"), count(&run, "sent")), (5, 5));
    assert_eq!(f.sent_keys("delete"), ids(116..=120));
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "removed"), count(&run, "sent")), (0, 0, 0), "{run}");

    f.model(&ModelSpec {
        destination_extra: "\n      on_removed: clear",
        ..ModelSpec::default()
    });
    f.sql(&format!("DELETE FROM {}.t WHERE id = 1", f.schema));
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(f.sent_keys("clear"), ["1"]);
    assert_eq!(
        f.sink.records()["1"],
        serde_json::json!({"id": "1", "name": null, "email": null, "score": null})
    );

    // ignore: the record stays; the row is forgotten.
    f.model(&ModelSpec::default());
    f.sql(&format!("DELETE FROM {}.t WHERE id = 2", f.schema));
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "removed"), f.sink.requests()), (0, 1, 0), "{run}");
    assert!(f.sink.records().contains_key("2"));
}

#[test]
fn null_duplicate_and_unmappable_rows_are_invalid_never_sent_and_reported() {
    require_postgres!();
    let f = Fixture::new("invalid", 10, 100, None);
    f.sql(&format!(
        "INSERT INTO {s}.t VALUES (NULL, 'no key', 'a@b.c', 1), (3, 'second three', 'c@d.e', 2), (3, 'third three', 'c@d.e', 3);
         UPDATE {s}.t SET email = 'x' WHERE id = 5;",
        s = f.schema
    ));
    // Row 5's email is not JSON: `parse_json` fails on it alone.
    f.model(&ModelSpec {
        email_transform: "parse_json",
        columns: r#"id, name, CASE WHEN id = 5 THEN '{oops' ELSE '{"a": 1}' END AS email, score"#,
        ..ModelSpec::default()
    });
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    assert_eq!(run["status"], "partial");
    assert_eq!(count(&run, "read"), 13);
    assert_eq!(
        count(&run, "invalid"),
        5,
        "one null key, three rows with key 3, one unparseable: {run}"
    );
    assert_eq!(count(&run, "added"), 8);
    let sent: BTreeSet<String> = f.sent_keys("upsert").into_iter().collect();
    assert!(!sent.contains("3"), "a duplicated key is never sent");
    assert!(!sent.contains("5"), "a row a transform fails on is never sent");
    assert_eq!(sent.len(), 8);
    assert_eq!(f.sink.records()["1"]["email"], serde_json::json!({"a": 1}));
    let errors: Vec<Value> = stdout(&ebb(f.path(), &["errors", "contacts", "--format", "json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: BTreeMap<String, String> = errors
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(codes.get("3").map(String::as_str), Some("duplicate_key"), "{errors:?}");
    assert_eq!(
        codes.get("5").map(String::as_str),
        Some("transform_failed"),
        "{errors:?}"
    );
    assert!(codes.values().any(|c| c == "null_key"), "{errors:?}");
    let text = stdout(&ebb(f.path(), &["errors", "contacts"]));
    assert!(text.contains("is on 2 rows") || text.contains("is on 3 rows"), "{text}");

    // Fixed in the warehouse and the model: the errors go with the next run.
    f.sql(&format!(
        "DELETE FROM {s}.t WHERE id IS NULL OR name LIKE '%three'",
        s = f.schema
    ));
    f.model(&ModelSpec::default());
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert!(stdout(&ebb(f.path(), &["errors", "contacts"])).contains("no rejected or invalid rows"));
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

#[test]
fn dry_run_counts_and_samples_but_sends_and_records_nothing() {
    require_postgres!();
    let f = Fixture::new("dry", 30, 100, None);
    let (code, run) = f.run(&["--dry-run"]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["status"], "dry-run");
    assert_eq!(count(&run, "added"), 30);
    assert_eq!(run["samples"]["added"].as_array().unwrap().len(), 5);
    assert_eq!(run["samples"]["added"][0]["email"], "user1@example.com");
    assert_eq!(f.sink.requests(), 0);
    assert!(stdout(&ebb(f.path(), &["runs", "contacts"])).contains("has not run yet"));
    let human = ebb(f.path(), &["run", "contacts", "--dry-run"]);
    let text = stdout(&human);
    assert!(
        text.contains("added 30") && text.contains("dry run: nothing was sent"),
        "{text}"
    );
}

#[test]
fn one_run_per_model_a_second_one_is_refused_while_the_first_lives() {
    require_postgres!();
    let f = Fixture::new("lock", 400, 10, None);
    f.sink.delay(Duration::from_millis(50));
    let mut first = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", "contacts"])
        .current_dir(f.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (code, second) = f.run(&[]);
    assert_eq!(code, 1, "{second}");
    assert_eq!(second["status"], "busy");
    assert!(
        second["error"].as_str().unwrap().contains("is being run by pid"),
        "{second}"
    );
    let status = stdout(&ebb(f.path(), &["status", "contacts", "--format", "json"]));
    let status: Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["health"], "running", "{status}");
    // Killed: its lock is taken over at once on this host.
    first.kill().unwrap();
    first.wait().unwrap();
    f.sink.delay(Duration::ZERO);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert!(run["notes"].to_string().contains("took over the lock"), "{run}");
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

#[test]
fn a_corrupt_or_foreign_state_file_is_a_clear_error() {
    require_postgres!();
    let f = Fixture::new("corrupt", 5, 100, None);
    std::fs::create_dir_all(f.path().join(".ebb")).unwrap();
    std::fs::write(f.path().join(".ebb/state.db"), vec![0x42u8; 4096]).unwrap();
    let out = ebb(f.path(), &["run", "contacts"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("state.db` is not an ebb state store: file is not a database"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(f.sink.requests(), 0);
}

#[test]
fn status_runs_and_reset() {
    require_postgres!();
    let f = Fixture::new("status", 20, 100, None);
    let status = stdout(&ebb(f.path(), &["status"]));
    assert!(status.contains("contacts") && status.contains("never run"), "{status}");
    assert_eq!(f.run(&[]).0, 0);
    let status: Value = serde_json::from_str(stdout(&ebb(f.path(), &["status", "--format", "json"])).trim()).unwrap();
    assert_eq!(status["health"], "healthy");
    assert_eq!(status["snapshot_rows"], 20);
    assert_eq!(status["last_run"]["status"], "succeeded");
    let runs = stdout(&ebb(f.path(), &["runs", "contacts"]));
    assert!(runs.contains("succeeded") && runs.contains("20"), "{runs}");
    let reset = ebb(f.path(), &["reset", "contacts"]);
    assert!(stdout(&reset).contains("forgot 20 rows"), "{}", stdout(&reset));
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "added"), count(&run, "sent")), (0, 20, 20));
    let unknown = ebb(f.path(), &["runs", "contcts"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("did you mean `contacts`"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn a_new_destination_starts_from_an_empty_snapshot() {
    require_postgres!();
    let f = Fixture::new("redirect", 10, 100, None);
    assert_eq!(f.run(&[]).0, 0);
    // The same model now goes to the file destination: one JSONL file per run.
    let model = std::fs::read_to_string(f.path().join("models/contacts.yaml")).unwrap();
    std::fs::write(
        f.path().join("models/contacts.yaml"),
        model.replace(
            "type: http\n      connection: hook",
            "type: file\n      connection: out",
        ),
    )
    .unwrap();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "sent"), 10);
    assert!(run["notes"].to_string().contains("the destination changed"), "{run}");
    let run_id = run["run_id"].as_i64().unwrap();
    let text = std::fs::read_to_string(f.path().join(format!("out/contacts-{run_id}.jsonl"))).unwrap();
    assert_eq!(text.lines().count(), 10);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["op"], "upsert");
    assert_eq!(first["record"]["email"], "user1@example.com");
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "sent")), (0, 0));
    assert!(!f.path().join(format!("out/contacts-{}.jsonl", run_id + 1)).exists());
}

#[test]
fn insert_mode_does_not_resend_an_interrupted_batch_unless_forced() {
    require_postgres!();
    let f = Fixture::new("insert", 400, 20, None);
    f.model(&ModelSpec {
        mode: "insert",
        ..ModelSpec::default()
    });
    f.sink.delay(Duration::from_millis(60));
    // Killed once the sink has applied a batch (each answer takes 60 ms, so most are not).
    let out = run_and_kill_when(&f, |sink| !sink.records().is_empty(), Duration::ZERO);
    assert!(out.status.code().is_none(), "killed: {:?}", out.status);
    f.sink.delay(Duration::ZERO);
    let applied_before = f.sink.records().len();
    assert!(
        applied_before > 0 && applied_before < 400,
        "killed mid-run: {applied_before} applied"
    );
    f.sink.reset_log();
    let (code, run) = f.run(&[]);
    assert_eq!(code, 3, "{run}");
    let errors: Vec<Value> = stdout(&ebb(f.path(), &["errors", "contacts", "--format", "json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|e| e["code"] == "unconfirmed_insert"), "{errors:?}");
    let unknown: BTreeSet<String> = errors.iter().map(|e| e["key"].as_str().unwrap().to_string()).collect();
    let sent: BTreeSet<String> = f.sent_keys("insert").into_iter().collect();
    assert!(
        sent.is_disjoint(&unknown),
        "rows of the interrupted batch are not inserted again"
    );
    // Still held back on the next run; `--force` sends them.
    let (code, _) = f.run(&[]);
    assert_eq!(code, 3);
    f.sink.reset_log();
    let (code, run) = f.run(&["--force"]);
    assert_eq!(code, 0, "{run}");
    let forced: BTreeSet<String> = f.sent_keys("insert").into_iter().collect();
    assert_eq!(forced, unknown);
    assert_holds(&f.sink.records(), &f.expected(), "after --force");
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "sent")), (0, 0), "{run}");
}

/// The diff table is kept between runs (`.ebb/tables/`) so a run need not read the whole
/// snapshot from the state store, and it is used only while it matches the store: an older
/// copy, a damaged one, or one from before `ebb reset` is ignored.
#[test]
fn the_kept_diff_table_is_used_only_while_it_matches_the_state_store() {
    require_postgres!();
    let f = Fixture::new("table", 500, 100, None);
    let (code, first) = f.run(&[]);
    assert_eq!((code, count(&first, "sent")), (0, 500), "{first}");
    let tables: Vec<_> = std::fs::read_dir(f.path().join(".ebb/tables"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "table"))
        .collect();
    assert_eq!(tables.len(), 1, "{tables:?}");
    let file = &tables[0];
    let after_first = std::fs::read(file).unwrap();

    // 1%: exactly the changed rows are sent, and the table is saved again.
    f.sql(&format!(
        "UPDATE {}.t SET name = name || '!' WHERE id % 100 = 3",
        f.schema
    ));
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "changed"), count(&run, "sent")), (0, 5, 5), "{run}");
    let after_change = std::fs::read(file).unwrap();
    assert_ne!(after_change, after_first);
    // A run that changes nothing leaves the snapshot's token, and so the file, as they are.
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "sent")), (0, 0), "{run}");
    assert!(
        std::fs::read(file).unwrap() == after_change,
        "the table was saved again"
    );

    // An older copy (from before that change) is not used: if it were, the 5 rows would be
    // sent again.
    std::fs::write(file, &after_first).unwrap();
    let (code, run) = f.run(&[]);
    assert_eq!(
        (code, count(&run, "unchanged"), count(&run, "sent")),
        (0, 500, 0),
        "{run}"
    );

    // A damaged copy is not used either.
    let mut damaged = std::fs::read(file).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x10;
    std::fs::write(file, &damaged).unwrap();
    let (code, run) = f.run(&[]);
    assert_eq!(
        (code, count(&run, "unchanged"), count(&run, "sent")),
        (0, 500, 0),
        "{run}"
    );

    // A current copy is used: with the snapshot rows taken from the state store behind
    // ebb's back, the run still finds every row unchanged (from the table alone).
    let db = rusqlite::Connection::open(f.path().join(".ebb/state.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM ebb_snapshot", []).unwrap(), 500);
    drop(db);
    let (code, run) = f.run(&[]);
    assert_eq!(
        (code, count(&run, "unchanged"), count(&run, "sent")),
        (0, 500, 0),
        "{run}"
    );

    // `ebb reset` forgets the snapshot, and the table with it: every row is sent again.
    assert!(ebb(f.path(), &["reset", "contacts"]).status.success());
    let (code, run) = f.run(&[]);
    assert_eq!(
        (code, count(&run, "added"), count(&run, "sent")),
        (0, 500, 500),
        "{run}"
    );
}

/// Rows that leave the model are found from the key log kept beside the diff table, and
/// from the state store when the log lacks one (missing, torn), which writes the log anew;
/// keys added later are appended to it. Each way, exactly the rows that left are deleted.
#[test]
fn rows_that_leave_the_model_are_found_from_the_key_log_or_else_the_state_store() {
    require_postgres!();
    let f = Fixture::new("keylog", 200, 50, None);
    f.model(&ModelSpec {
        mode: "mirror",
        ..ModelSpec::default()
    });
    assert_eq!(f.run(&[]).0, 0);
    let log = std::fs::read_dir(f.path().join(".ebb/tables"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "keys"))
        .expect("a key log beside the table");
    let leave = |from: i32, to: i32, why: &str| {
        f.sql(&format!("DELETE FROM {}.t WHERE id BETWEEN {from} AND {to}", f.schema));
        f.sink.reset_log();
        let (code, run) = f.run(&[]);
        let n = i64::from(to - from + 1);
        assert_eq!(
            (code, count(&run, "removed"), count(&run, "sent")),
            (0, n, n),
            "{why}: {run}"
        );
        assert_eq!(f.sent_keys("delete"), ids(from..=to), "{why}");
        assert_holds(&f.sink.records(), &f.expected(), why);
    };
    leave(191, 200, "from the log");
    std::fs::remove_file(&log).unwrap();
    leave(181, 190, "no log: from the store");
    assert!(log.exists(), "the log is written anew");
    leave(171, 175, "from the rewritten log");
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() - 3]).unwrap();
    leave(161, 170, "a torn log: from the store");
    f.sql(&format!(
        "INSERT INTO {s}.t SELECT i, 'name ' || i, 'u' || i || '@x.com', i FROM generate_series(201, 210) AS i",
        s = f.schema
    ));
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "added")), (0, 10), "{run}");
    leave(201, 205, "keys added since, from the log");
    let (code, run) = f.run(&[]);
    assert_eq!((code, count(&run, "removed"), count(&run, "sent")), (0, 0, 0), "{run}");
}

//! The sync engine without PostgreSQL: an embedded DuckDB warehouse, the SQLite state store
//! and real HTTP to the in-process sink. Most runs call `ebb::engine::run` in this process
//! (so tests can inject faults through the engine's and the sources' own hooks); the ones
//! that kill a run or tune retries run the `ebb` binary.
//!
//! Covered: the delivery contract (only confirmed rows advance the snapshot, rejected rows
//! are sent again, rows in flight when a run dies are sent again, invalid and duplicate keys
//! are never sent), the guard (the default one on deletes included), mirror deletes, a source
//! that dies part-way, and blocking file IO kept off the async runtime.

use crate::sink::Sink;
use crate::support::{ebb, stdout};
use crate::sync::assert_holds;
use ebb::engine::{self, Progress, RunOptions, RunReport, Status};
use ebb::source::{Source, SourceError};
use ebb::state::StateStore;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A DuckDB warehouse `w.duckdb` with `t (id, name, score)`, a sink, and a project whose
/// model `name` syncs one to the other.
struct Fixture {
    dir: tempfile::TempDir,
    name: String,
    sink: Sink,
}

/// The model file, field by field.
struct Model<'a> {
    mode: &'a str,
    /// Appended to the destination block, e.g. `"\n      on_removed: clear"`.
    destination_extra: &'a str,
    /// The `guard:` block, indented as a model key, or empty.
    guard: &'a str,
    query: &'a str,
}

impl Default for Model<'_> {
    fn default() -> Self {
        Model {
            mode: "upsert",
            destination_extra: "",
            guard: "",
            query: "SELECT id, name, score FROM t",
        }
    }
}

impl Fixture {
    /// `rows` rows `(i, 'name i', i * 1.5)`; the sink takes `batch` records per request.
    fn new(name: &str, rows: usize, batch: usize) -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            name: name.to_string(),
            sink: Sink::start_in_thread("id"),
        };
        f.sql(&format!(
            "CREATE TABLE t (id INTEGER, name VARCHAR, score DECIMAL(10, 2));
             INSERT INTO t SELECT i, 'name ' || i, i * 1.5 FROM range(1, {rows} + 1) AS r(i);"
        ));
        std::fs::write(
            f.path().join("ebb.yaml"),
            format!(
                "version: 1\nconnections:\n  wh:\n    type: duckdb\n    path: w.duckdb\n  hook:\n    type: http\n    url: {}\n    batch_size: {batch}\n    max_concurrency: 2\n    timeout_secs: 2\n",
                f.sink.url()
            ),
        )
        .unwrap();
        std::fs::create_dir(f.path().join("models")).unwrap();
        f.model(&Model::default());
        f
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn model(&self, m: &Model) {
        std::fs::write(
            self.path().join(format!("models/{}.yaml", self.name)),
            format!(
                "models:
  - name: {name}
    source:
      type: duckdb
      connection: wh
      query: {query}
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
      - source: score
        destination: score
{guard}",
                name = self.name,
                query = m.query,
                mode = m.mode,
                extra = m.destination_extra,
                guard = m.guard,
            ),
        )
        .unwrap();
    }

    /// Changes the warehouse (the connection is closed again before ebb reads it).
    fn sql(&self, sql: &str) {
        let conn = duckdb::Connection::open(self.path().join("w.duckdb")).unwrap();
        conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// What the warehouse holds, as the sink should: id → record.
    fn expected(&self) -> BTreeMap<String, Value> {
        let conn = duckdb::Connection::open(self.path().join("w.duckdb")).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, name, CAST(score AS VARCHAR) FROM t WHERE id IS NOT NULL ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i32>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .unwrap();
        rows.map(|r| {
            let (id, name, score) = r.unwrap();
            (
                id.to_string(),
                serde_json::json!({
                    "id": id,
                    "name": name,
                    "score": score.map(|s| serde_json::from_str::<Value>(&s).unwrap()),
                }),
            )
        })
        .collect()
    }

    /// One run through the library, on a runtime like the `ebb` command's.
    fn run(&self, opts: RunOptions) -> RunReport {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.run_async(opts))
    }

    async fn run_async(&self, opts: RunOptions) -> RunReport {
        let report = ebb::validate::validate(self.path(), &[]).unwrap();
        let plan = report
            .plans
            .iter()
            .find(|p| p.name == self.name)
            .unwrap_or_else(|| panic!("the model compiles: {:#?}", report.diagnostics));
        let store = StateStore::open(None, &report.project_dir).await.unwrap();
        let project = report.project.as_ref().unwrap();
        engine::run(&report.project_dir, project, &store, plan, &opts, &Progress::default()).await
    }

    /// `ebb run NAME ARGS --format json`: the exit code and the run's summary.
    fn run_bin(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
        crate::support::run_json(self.path(), &self.name, args, env)
    }

    /// Keys sent with `op` since the log was last reset, answered 2xx.
    fn sent(&self, op: &str) -> BTreeSet<String> {
        self.sink
            .log()
            .iter()
            .filter(|r| r.operation == op && r.status < 300)
            .flat_map(|r| r.keys.clone())
            .collect()
    }

    fn errors(&self) -> Vec<ebb::state::RowErrorEntry> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = StateStore::open(None, self.path()).await.unwrap();
            store.row_errors(&self.name).await.unwrap()
        })
    }
}

fn keys(ids: impl IntoIterator<Item = i32>) -> BTreeSet<String> {
    ids.into_iter().map(|i| i.to_string()).collect()
}

#[track_caller]
fn assert_status(r: &RunReport, status: Status) {
    assert_eq!(r.status, status, "{r:#?}");
}

// The delivery contract.

#[test]
fn rejected_rows_keep_their_snapshot_entry_and_are_sent_again_until_accepted() {
    let f = Fixture::new("contract_reject", 250, 100);
    f.sink.reject(&["7", "42", "199"]);
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Partial);
    assert_eq!((r.counts.sent, r.counts.confirmed, r.counts.rejected), (250, 247, 3));
    let errors = f.errors();
    let rejected: BTreeSet<String> = errors
        .iter()
        .filter(|e| e.kind == "rejected")
        .map(|e| e.key.clone())
        .collect();
    assert_eq!(rejected, keys([7, 42, 199]));

    // Nothing changed in the warehouse: exactly the rejected rows go again, with a row
    // changed since.
    f.sql("UPDATE t SET name = 'changed' WHERE id = 100");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Partial);
    assert_eq!(f.sent("upsert"), keys([7, 42, 100, 199]));
    // Never confirmed, the rejected rows are not in the snapshot: they count as added.
    assert_eq!(
        (r.counts.added, r.counts.changed, r.counts.unchanged),
        (3, 1, 246),
        "{r:#?}"
    );

    // Accepted: sent once more, then never again.
    f.sink.clear_rejects();
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!(f.sent("upsert"), keys([7, 42, 199]));
    assert!(f.errors().is_empty(), "{:?}", f.errors());
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!((r.counts.sent, f.sink.requests()), (0, 0));
}

#[test]
fn a_batch_that_fails_is_not_confirmed_and_exactly_its_rows_go_next_time() {
    let f = Fixture::new("contract_unconfirmed", 300, 100);
    assert_eq!(f.run_bin(&[], &[]).0, 0);
    f.sql("UPDATE t SET name = name || ' (new)'");
    // The first request is answered 500 and not retried: its batch fails, the others land.
    f.sink.reset_log();
    f.sink.fail_next(1, 500, None);
    let (code, run) = f.run_bin(&[], &[("EBB_RETRY_MAX_ATTEMPTS", "1")]);
    assert_eq!(code, 1, "{run}");
    assert_eq!(run["status"], "failed");
    let log = f.sink.log();
    let failed: BTreeSet<String> = log
        .iter()
        .filter(|r| r.status == 500)
        .flat_map(|r| r.keys.clone())
        .collect();
    assert_eq!(failed.len(), 100, "{log:?}");
    let landed = f.sent("upsert");
    assert_eq!(
        run["counts"]["confirmed"].as_u64(),
        Some(landed.len() as u64),
        "only what the destination confirmed counts: {run}"
    );
    // The next run sends every row the destination did not confirm (the failed batch's,
    // and any batch the failure kept from being sent), and none it confirmed.
    f.sink.reset_log();
    let (code, run) = f.run_bin(&[], &[]);
    assert_eq!(code, 0, "{run}");
    let resent = f.sent("upsert");
    assert!(failed.is_subset(&resent), "{failed:?} not all in {resent:?}");
    assert_eq!(resent, &keys(1..=300) - &landed);
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

#[test]
fn rows_in_flight_when_a_run_is_killed_are_sent_again_whatever_their_hash() {
    let f = Fixture::new("contract_killed", 100, 10);
    assert_eq!(f.run_bin(&[], &[]).0, 0);
    f.sql("UPDATE t SET name = 'moved ' || id");
    // The destination applies each batch, then takes 30 s to answer: the run is killed as
    // soon as one batch was applied, before any answer came.
    f.sink.reset_log();
    f.sink.delay(Duration::from_secs(30));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["run", &f.name])
        .current_dir(f.path())
        .env_remove("EBB_PROJECT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while f.sink.log().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no batch reached the sink");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    f.sink.delay(Duration::ZERO);
    let applied: BTreeSet<String> = f.sent("upsert");
    assert!(!applied.is_empty());
    // The warehouse goes back to what the snapshot holds: by hash alone, nothing changed,
    // yet the destination holds the moved names of the batches in flight.
    f.sql("UPDATE t SET name = 'name ' || id");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert!(
        r.notes.iter().any(|n| n.contains("from an interrupted run")),
        "{:?}",
        r.notes
    );
    let resent = f.sent("upsert");
    assert!(applied.is_subset(&resent), "applied {applied:?}, sent again {resent:?}");
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_eq!((r.counts.sent, f.sink.requests()), (0, 0), "{r:#?}");
}

#[test]
fn null_and_duplicate_keys_are_invalid_and_never_sent() {
    let f = Fixture::new("contract_invalid", 10, 100);
    f.sql("INSERT INTO t VALUES (NULL, 'no key', 1), (3, 'second three', 2), (3, 'third three', 3)");
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Partial);
    assert_eq!(r.counts.read, 13);
    assert_eq!(r.counts.invalid, 4, "one null key, three rows with key 3: {r:#?}");
    assert_eq!((r.counts.added, r.counts.sent), (9, 9));
    let sent = f.sent("upsert");
    assert!(!sent.contains("3"), "a duplicated key is never sent: {sent:?}");
    assert_eq!(sent.len(), 9);
    assert!(!f.sink.records().contains_key("3"));
    let codes: BTreeMap<String, String> = f.errors().into_iter().map(|e| (e.key, e.code)).collect();
    assert_eq!(codes.get("3").map(String::as_str), Some("duplicate_key"), "{codes:?}");
    assert!(codes.values().any(|c| c == "null_key"), "{codes:?}");

    // A key that was synced and becomes duplicated is not sent either (and not removed).
    f.sql("DELETE FROM t WHERE id IS NULL OR name LIKE '%three'; INSERT INTO t VALUES (5, 'another five', 9)");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Partial);
    assert_eq!(f.sent("upsert"), keys([3]));
    assert_eq!(f.sink.records()["5"]["name"], "name 5");
}

// The guard.

#[test]
fn the_guard_refuses_a_mass_change_before_anything_is_sent_and_force_overrides() {
    let f = Fixture::new("guard_ratio", 200, 100);
    f.model(&Model {
        guard: "    guard:\n      max_change_ratio: 0.2\n",
        ..Model::default()
    });
    assert_status(&f.run(RunOptions::default()), Status::Succeeded); // the first sync is exempt
    f.sql("UPDATE t SET name = 'x' WHERE id <= 100");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Aborted);
    assert_eq!(f.sink.requests(), 0, "nothing is sent");
    let err = r.error.unwrap();
    assert!(
        err.contains("50.0% of the 200 rows confirmed in the destination would change")
            && err.contains("max_change_ratio: 0.2")
            && err.contains("--force"),
        "{err}"
    );
    let r = f.run(RunOptions {
        force: true,
        ..RunOptions::default()
    });
    assert_status(&r, Status::Succeeded);
    assert_eq!(r.counts.sent, 100);
    assert_holds(&f.sink.records(), &f.expected(), "after --force");
}

#[test]
fn mirror_deletes_rows_that_leave_the_model_and_clear_nulls_them() {
    let f = Fixture::new("mirror_deletes", 120, 100);
    f.model(&Model {
        mode: "mirror",
        ..Model::default()
    });
    assert_status(&f.run(RunOptions::default()), Status::Succeeded);
    f.sql("DELETE FROM t WHERE id > 115");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!((r.counts.removed, r.counts.sent), (5, 5));
    assert_eq!(f.sent("delete"), keys(116..=120));
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
    let r = f.run(RunOptions::default());
    assert_eq!((r.counts.removed, r.counts.sent), (0, 0), "{r:#?}");

    f.model(&Model {
        destination_extra: "\n      on_removed: clear",
        ..Model::default()
    });
    f.sql("DELETE FROM t WHERE id = 1");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!(f.sent("clear"), keys([1]));
    assert_eq!(
        f.sink.records()["1"],
        serde_json::json!({"id": "1", "name": null, "score": null})
    );
}

/// A model that deletes (or clears) records gets a default guard on deletes: more than
/// half of the confirmed rows, or more than 10,000 records, needs consent.
#[test]
fn a_mass_delete_needs_consent_by_default() {
    let f = Fixture::new("guard_default", 100, 100);
    f.model(&Model {
        mode: "mirror",
        ..Model::default()
    });
    assert_status(&f.run(RunOptions::default()), Status::Succeeded);
    // The model's source empties by mistake (a broken upstream table): 60 of 100 rows go.
    f.sql("DELETE FROM t WHERE id > 40");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Aborted);
    assert_eq!(f.sink.requests(), 0, "nothing is sent");
    assert_eq!(f.sink.records().len(), 100);
    let err = r.error.clone().unwrap();
    assert!(
        err.contains("60.0% of the 100 rows confirmed in the destination would be deleted (60)")
            && err.contains("`max_delete_ratio: 0.5` (the default for a model that deletes")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(r.counts.removed, 60);
    // Refused again until someone consents; the snapshot still holds the 100 rows.
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Aborted);
    // `--force` consents once.
    let r = f.run(RunOptions {
        force: true,
        ..RunOptions::default()
    });
    assert_status(&r, Status::Succeeded);
    assert_eq!(f.sent("delete"), keys(41..=100));
    assert_holds(&f.sink.records(), &f.expected(), "after --force");

    // The model consents: its own share replaces the default.
    f.sql("INSERT INTO t SELECT i, 'name ' || i, i * 1.5 FROM range(41, 101) AS r(i)");
    assert_status(&f.run(RunOptions::default()), Status::Succeeded);
    f.model(&Model {
        mode: "mirror",
        guard: "    guard:\n      max_delete_ratio: 0.9\n",
        ..Model::default()
    });
    f.sql("DELETE FROM t WHERE id > 20");
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!(f.sent("delete").len(), 80);

    // `on_removed: clear` is guarded the same way; `off` turns a limit off.
    f.sql("INSERT INTO t SELECT i, 'name ' || i, i * 1.5 FROM range(21, 101) AS r(i)");
    f.model(&Model {
        destination_extra: "\n      on_removed: clear",
        ..Model::default()
    });
    assert_status(&f.run(RunOptions::default()), Status::Succeeded);
    f.sql("DELETE FROM t WHERE id > 30");
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Aborted);
    assert!(r.error.as_deref().unwrap().contains("would be cleared (70)"), "{r:#?}");
    f.model(&Model {
        destination_extra: "\n      on_removed: clear",
        guard: "    guard:\n      max_delete_ratio: off\n",
        ..Model::default()
    });
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!(f.sent("clear").len(), 70);

    // A model that only forgets removed rows has no default guard.
    f.model(&Model::default());
    f.sql("DELETE FROM t WHERE id > 2");
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!((r.counts.removed, r.counts.sent), (28, 0));
}

#[test]
fn more_than_ten_thousand_deletes_need_consent_by_default() {
    let f = Fixture::new("guard_count", 25_000, 5000);
    f.model(&Model {
        mode: "mirror",
        ..Model::default()
    });
    assert_status(&f.run(RunOptions::default()), Status::Succeeded);
    f.sql("DELETE FROM t WHERE id > 14999"); // 10,001 rows, 40% of them
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Aborted);
    assert_eq!(f.sink.requests(), 0);
    let err = r.error.unwrap();
    assert!(
        err.contains("10001 records would be deleted, over `max_deletes: 10000` (the default"),
        "{err}"
    );
    // `max_deletes: off` consents to any number (the share stays under the default).
    f.model(&Model {
        mode: "mirror",
        guard: "    guard:\n      max_deletes: off\n",
        ..Model::default()
    });
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!(f.sent("delete").len(), 10_001);
    assert_eq!(f.sink.records().len(), 14_999);
}

#[test]
fn validate_and_plan_show_the_default_guard_on_deletes() {
    let f = Fixture::new("guard_shown", 1, 100);
    f.model(&Model {
        mode: "mirror",
        ..Model::default()
    });
    let plan = stdout(&ebb(f.path(), &["plan", &f.name]));
    assert!(
        plan.contains("guard:        max_deletes 10000 (default), max_delete_ratio 0.5 (default)"),
        "{plan}"
    );
    let json: Value = serde_json::from_str(&stdout(&ebb(f.path(), &["plan", &f.name, "--format", "json"]))).unwrap();
    let guard = if json.is_array() {
        &json[0]["guard"]
    } else {
        &json["guard"]
    };
    assert_eq!(guard["max_deletes"], 10000, "{json}");
    assert_eq!(guard["max_delete_ratio"], 0.5, "{json}");
    assert_eq!(
        guard["defaults"],
        serde_json::json!(["max_deletes", "max_delete_ratio"])
    );
    let out = ebb(f.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("N504")
            && text.contains("`mode: mirror` deletes the records of rows that leave the model: a run that would delete or clear more than 10000 records, or more than 50% of the rows confirmed, is refused"),
        "{text}"
    );

    // Written limits replace the defaults, `off` included; a limit that is neither a number
    // nor `off` is an error.
    f.model(&Model {
        mode: "mirror",
        guard: "    guard:\n      max_deletes: 500\n      max_delete_ratio: off\n",
        ..Model::default()
    });
    let plan = stdout(&ebb(f.path(), &["plan", &f.name]));
    assert!(plan.contains("guard:        max_deletes 500\n"), "{plan}");
    let text = stdout(&ebb(f.path(), &["validate"]));
    assert!(!text.contains("N504"), "{text}");
    f.model(&Model {
        mode: "mirror",
        guard: "    guard:\n      max_deletes: none\n",
        ..Model::default()
    });
    let out = ebb(f.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("max_deletes"), "{}", stdout(&out));
}

// A source that dies part-way.

/// The rows after a producer's panic were never read: they must not look like rows that
/// left the model, so a mirror deletes nothing and the run fails.
#[test]
fn a_source_that_panics_part_way_fails_a_mirror_run_and_deletes_nothing() {
    let f = Fixture::new("panic_mirror", 10_000, 1000);
    // Guard off: only the end of the result stands between the panic and the deletes.
    let guard = "    guard:\n      max_deletes: off\n      max_delete_ratio: off\n";
    f.model(&Model {
        mode: "mirror",
        guard,
        ..Model::default()
    });
    assert_status(&f.run(RunOptions::default()), Status::Succeeded);
    assert_eq!(f.sink.records().len(), 10_000);

    // DuckDB hands its result over in chunks of 2048 rows: the reader panics after two.
    let marker = "/* ebb_test_panic_mirror */";
    ebb::source::fault::panic_after_batches(marker, 2);
    f.model(&Model {
        mode: "mirror",
        guard,
        query: &format!("SELECT id, name, score FROM t {marker}"),
        ..Model::default()
    });
    f.sink.reset_log();
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Failed);
    let err = r.error.clone().unwrap();
    assert!(
        err.contains("reading the model from `wh` (duckdb)")
            && err.contains("the result stopped before its end")
            && err.contains("panicked")
            && err.contains("the rows read are not the whole result"),
        "{err}"
    );
    assert_eq!((r.counts.removed, r.counts.sent), (0, 0), "{r:#?}");
    assert_eq!(f.sink.requests(), 0, "nothing is sent, no delete above all");
    assert_eq!(f.sink.records().len(), 10_000);

    // The snapshot is intact: the whole result again finds every row unchanged.
    f.model(&Model {
        mode: "mirror",
        guard,
        ..Model::default()
    });
    let r = f.run(RunOptions::default());
    assert_status(&r, Status::Succeeded);
    assert_eq!((r.counts.unchanged, r.counts.sent), (10_000, 0), "{r:#?}");
}

/// Reads `sql` to its end: the rows, or the error that ended it (never `None` first).
async fn read_all(src: &Source, sql: &str) -> (usize, Option<SourceError>) {
    let mut stream = src.query(sql, 0).await.unwrap();
    let mut rows = 0;
    while let Some(b) = stream.next().await {
        match b {
            Ok(b) => rows += b.num_rows(),
            Err(e) => return (rows, Some(e)),
        }
    }
    (rows, None)
}

#[tokio::test]
async fn a_postgres_reader_that_panics_part_way_ends_with_an_error_not_the_end() {
    require_postgres!();
    let url = crate::source_postgres::url();
    let schema = format!("ebb_engine_panic_{}", std::process::id());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.t AS SELECT i AS id FROM generate_series(1, 1000) AS i;"
        ))
        .await
        .unwrap();
    let spec = ebb::config::project::ConnectionSpec::Postgres(ebb::config::project::PostgresConnection {
        url: url.clone(),
        fetch_size: Some(100),
    });
    let src = Source::open("test", &spec, Path::new(".")).unwrap();
    let whole = format!("SELECT id FROM {schema}.t");
    let (rows, err) = read_all(&src, &whole).await;
    assert!(rows == 1000 && err.is_none(), "{rows} rows, {err:?}");
    let marker = "/* ebb_test_panic_postgres */";
    ebb::source::fault::panic_after_batches(marker, 3);
    let (rows, err) = read_all(&src, &format!("{whole} {marker}")).await;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    assert_eq!(rows, 300);
    let err = err.expect("an error, not the end of the result");
    assert!(matches!(err, SourceError::Incomplete(_)), "{err:?}");
    assert!(err.to_string().contains("panicked"), "{err}");
}

#[tokio::test]
async fn a_snowflake_reader_that_panics_part_way_ends_with_an_error_not_the_end() {
    use crate::snowflake_server::{Canned, Server};
    const KEY: &str = include_str!("fixtures/keys/snowflake_test_key.p8");
    let srv = Server::start("XY12345", "EBB_SYNC", KEY).await;
    let marker = "/* ebb_test_panic_snowflake */";
    let sql = format!("SELECT ID FROM BIG {marker}");
    srv.add(
        &sql,
        Canned {
            row_type: vec![serde_json::json!({"name": "ID", "type": "fixed", "precision": 18, "scale": 0})],
            partitions: (0..4)
                .map(|p| (0..3).map(|r| vec![Some((p * 10 + r).to_string())]).collect())
                .collect(),
            async_polls: 0,
            stats: None,
        },
    );
    let spec = ebb::config::project::ConnectionSpec::Snowflake(ebb::config::project::SnowflakeConnection {
        account: "xy12345".into(),
        user: "ebb_sync".into(),
        private_key: Some(KEY.into()),
        private_key_path: None,
        database: None,
        schema: None,
        warehouse: None,
        role: None,
        url: Some(srv.url.clone()),
    });
    let src = Source::open("test", &spec, Path::new(".")).unwrap();
    ebb::source::fault::panic_after_batches(marker, 2);
    let (rows, err) = read_all(&src, &sql).await;
    assert_eq!(rows, 6, "two partitions of three rows");
    let err = err.expect("an error, not the end of the result");
    assert!(matches!(err, SourceError::Incomplete(_)), "{err:?}");
    assert!(err.to_string().contains("panicked"), "{err}");
}

// Blocking file IO stays off the async runtime.

/// Waits, on the runtime, until `gate` holds an operation (so the runtime is free while it
/// does); fails after 30 s.
async fn until_held(gate: &engine::testing::IoGate, what: &str) {
    let started = Instant::now();
    while !gate.held() {
        assert!(
            started.elapsed() < Duration::from_secs(30) && !gate.timed_out(),
            "the {what} never waited at its gate while the runtime ran: it blocked the runtime's thread"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn heartbeat(store: &StateStore, model: &str) -> i64 {
    store
        .lock_holder(model)
        .await
        .unwrap()
        .expect("the run holds the lock")
        .heartbeat_ms
}

/// The spill file is written while a run's lock must keep beating: with the write held
/// on a single-threaded runtime, the heartbeat still renews the lock.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_spill_write_does_not_stall_the_lock_heartbeat() {
    let f = Fixture::new("slow_spill_write", 100, 100);
    let gate = engine::testing::hold_io(&f.name, "spill_write");
    let check = async {
        until_held(&gate, "spill write").await;
        let store = StateStore::open(None, f.path()).await.unwrap();
        let first = heartbeat(&store, &f.name).await;
        let started = Instant::now();
        while heartbeat(&store, &f.name).await == first {
            assert!(
                started.elapsed() < Duration::from_secs(12),
                "no heartbeat in 12 s while a spill write was held"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gate.held(), "the write was held all along");
        gate.open();
    };
    let (r, ()) = tokio::join!(f.run_async(RunOptions::default()), check);
    assert_status(&r, Status::Succeeded);
    assert!(!gate.timed_out());
    assert_holds(&f.sink.records(), &f.expected(), "after the run");
}

/// Reading the spill back and saving the diff table leave the runtime free too.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_spill_read_or_table_save_leaves_the_runtime_free() {
    let f = Fixture::new("slow_spill_read", 100, 100);
    let read = engine::testing::hold_io(&f.name, "spill_read");
    let save = engine::testing::hold_io(&f.name, "save_table");
    let check = async {
        for (gate, what) in [(&read, "spill read"), (&save, "diff table's save")] {
            until_held(gate, what).await;
            // A timer fires on this runtime while the operation waits.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(gate.held(), "the {what} was held all along");
            gate.open();
        }
    };
    let (r, ()) = tokio::join!(f.run_async(RunOptions::default()), check);
    assert_status(&r, Status::Succeeded);
    assert!(!read.timed_out() && !save.timed_out());
    assert_eq!(r.counts.confirmed, 100);
    assert!(
        std::fs::read_dir(f.path().join(".ebb/tables"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "table"))
            .count()
            == 1,
        "the table was saved"
    );
}

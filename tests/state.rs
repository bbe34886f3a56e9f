//! The state store: one suite, run against both backends (SQLite and the real PostgreSQL).

use ebb::state::{
    lock, InflightBatch, LockHolder, LockOutcome, RowErrorEntry, RunCounts, StateError, StateStore, StateWrite,
    SCHEMA_VERSION,
};

fn h(n: u8) -> [u8; 16] {
    [n; 16]
}

async fn suite(store: StateStore) {
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    // Runs are recorded with their counts, newest first.
    let r1 = store.start_run("contacts").await.unwrap();
    let counts = RunCounts {
        read: 10,
        added: 10,
        sent: 10,
        confirmed: 7,
        rejected: 3,
        api_calls: 1,
        ..RunCounts::default()
    };
    store
        .finish_run(r1, "partial", counts, Some("3 rows rejected"))
        .await
        .unwrap();
    let r2 = store.start_run("contacts").await.unwrap();
    let runs = store.runs("contacts", 10).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [r2, r1]);
    assert_eq!(runs[0].status, "running");
    assert_eq!(runs[1].status, "partial");
    assert_eq!(runs[1].counts, counts);
    assert_eq!(runs[1].error.as_deref(), Some("3 rows rejected"));
    assert!(runs[1].ended_at.is_some());
    assert!(store.runs("other", 10).await.unwrap().is_empty());

    // A batch is in flight before it is sent; its answer is committed with the settle.
    let w = |rows: &[(&str, u8, Option<&str>)]| StateWrite::Confirm {
        run_id: r2,
        rows: rows
            .iter()
            .map(|(k, n, id)| (k.to_string(), h(*n), id.map(str::to_string)))
            .collect(),
    };
    let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    store
        .apply(
            "contacts",
            vec![StateWrite::Inflight(InflightBatch {
                run_id: r2,
                batch: 1,
                op: "upsert".into(),
                keys: keys(&["k1", "k2", "k3"]),
            })],
        )
        .await
        .unwrap();
    let inflight = store.inflight("contacts").await.unwrap();
    assert_eq!(inflight.len(), 1);
    assert_eq!(inflight[0].keys, ["k1", "k2", "k3"]);
    assert!(
        store.snapshot("contacts").await.unwrap().is_empty(),
        "nothing is confirmed yet"
    );
    store
        .apply(
            "contacts",
            vec![
                w(&[("k1", 1, Some("003A")), ("k2", 2, None)]),
                StateWrite::Errors(vec![RowErrorEntry {
                    key: "k3".into(),
                    run_id: r2,
                    kind: "rejected".into(),
                    code: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST".into(),
                    message: "bad value for restricted picklist field: Gold".into(),
                }]),
                StateWrite::Settle { run_id: r2, batch: 1 },
            ],
        )
        .await
        .unwrap();
    assert!(store.inflight("contacts").await.unwrap().is_empty());
    let snap = store.snapshot("contacts").await.unwrap();
    assert_eq!(snap.len(), 2, "the rejected row has no snapshot entry");
    assert_eq!(
        (snap[0].key.as_str(), snap[0].hash, snap[0].record_id.as_deref()),
        ("k1", h(1), Some("003A"))
    );
    assert_eq!(store.snapshot_len("contacts").await.unwrap(), 2);
    let errors = store.row_errors("contacts").await.unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    assert_eq!(store.row_error_count("contacts").await.unwrap(), 1);
    // Once accepted, its error goes; a record id already known is kept.
    store
        .apply("contacts", vec![w(&[("k3", 3, None), ("k1", 9, None)])])
        .await
        .unwrap();
    assert!(store.row_errors("contacts").await.unwrap().is_empty());
    let snap = store.snapshot("contacts").await.unwrap();
    assert_eq!((snap[0].hash, snap[0].record_id.as_deref()), (h(9), Some("003A")));
    let ids = store
        .record_ids("contacts", &keys(&["k1", "k2", "nope"]))
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids["k1"], "003A");

    // The snapshot streams in chunks.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let (scanned, mut got) = tokio::join!(store.scan_snapshot("contacts", tx), async {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend(chunk);
        }
        all
    });
    scanned.unwrap();
    got.sort();
    assert_eq!(
        got,
        [("k1".to_string(), h(9)), ("k2".into(), h(2)), ("k3".into(), h(3))]
    );

    // Or with the keys hashed where they are read.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let (scanned, mut keyed) = tokio::join!(
        store.scan_snapshot_keyed("contacts", |k| k.len() as u128 * 1000 + k.as_bytes()[1] as u128, tx),
        async {
            let mut all = Vec::new();
            while let Some(chunk) = rx.recv().await {
                all.extend(chunk);
            }
            all
        }
    );
    scanned.unwrap();
    keyed.sort();
    assert_eq!(keyed, [(2049, h(9)), (2050, h(2)), (2051, h(3))]);

    // Invalid-row errors of earlier runs go; removed rows leave snapshot and errors.
    store
        .apply(
            "contacts",
            vec![StateWrite::Errors(vec![
                RowErrorEntry {
                    key: "old".into(),
                    run_id: r1,
                    kind: "invalid".into(),
                    code: "null_key".into(),
                    message: "m".into(),
                },
                RowErrorEntry {
                    key: "k2".into(),
                    run_id: r1,
                    kind: "rejected".into(),
                    code: "X".into(),
                    message: "m".into(),
                },
            ])],
        )
        .await
        .unwrap();
    store
        .apply("contacts", vec![StateWrite::ClearInvalidBefore { run_id: r2 }])
        .await
        .unwrap();
    let errors = store.row_errors("contacts").await.unwrap();
    assert_eq!(errors.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["k2"]);
    store
        .apply("contacts", vec![StateWrite::Remove { keys: keys(&["k2"]) }])
        .await
        .unwrap();
    assert_eq!(store.snapshot_len("contacts").await.unwrap(), 2);
    assert!(store.row_errors("contacts").await.unwrap().is_empty());

    // Earlier runs' in-flight records are replaced by the keys still unresolved.
    let b = |run_id, batch, ks: &[&str]| {
        StateWrite::Inflight(InflightBatch {
            run_id,
            batch,
            op: "upsert".into(),
            keys: keys(ks),
        })
    };
    store
        .apply(
            "contacts",
            vec![b(r1, 1, &["a", "b"]), b(r1, 2, &["c"]), b(r2, 7, &["d"])],
        )
        .await
        .unwrap();
    store
        .apply(
            "contacts",
            vec![StateWrite::ReplaceInflight {
                run_id: r2,
                keep: Some(InflightBatch {
                    run_id: r2,
                    batch: 0,
                    op: "unknown".into(),
                    keys: keys(&["b"]),
                }),
            }],
        )
        .await
        .unwrap();
    let inflight = store.inflight("contacts").await.unwrap();
    assert_eq!(
        inflight.iter().map(|b| (b.batch, b.keys.clone())).collect::<Vec<_>>(),
        [(0, keys(&["b"])), (7, keys(&["d"]))]
    );

    // The destination a snapshot belongs to.
    assert_eq!(store.model_destination("contacts").await.unwrap(), None);
    store.set_model_destination("contacts", "http:hook::id").await.unwrap();
    store.set_model_destination("contacts", "http:hook2::id").await.unwrap();
    assert_eq!(
        store.model_destination("contacts").await.unwrap().as_deref(),
        Some("http:hook2::id")
    );

    // The latest run of each model, and the latest completed one.
    store
        .finish_run(r2, "failed", RunCounts::default(), Some("x"))
        .await
        .unwrap();
    let r3 = store.start_run("other").await.unwrap();
    let last = store.last_runs().await.unwrap();
    assert_eq!(
        last.iter().map(|r| (r.model.as_str(), r.id)).collect::<Vec<_>>(),
        [("contacts", r2), ("other", r3)]
    );
    assert_eq!(store.last_completed("contacts").await.unwrap().map(|r| r.id), Some(r1));
    assert_eq!(store.last_completed("other").await.unwrap(), None);

    // The run lock: one holder at a time.
    let me = lock::me(r2);
    assert_eq!(
        store.lock("contacts", &me, lock::LEASE).await.unwrap(),
        LockOutcome::Acquired { took_over: None }
    );
    // Another live process on this host (same pid and start time, another holder id).
    let other = LockHolder {
        id: format!("{}-other", me.id),
        ..me.clone()
    };
    match store.lock("contacts", &other, lock::LEASE).await.unwrap() {
        LockOutcome::Held(h) => assert_eq!(h.id, me.id),
        got => panic!("{got:?}"),
    }
    assert_eq!(store.lock_holder("contacts").await.unwrap().unwrap().id, me.id);
    assert!(store.heartbeat("contacts", &me).await.unwrap());
    assert!(!store.heartbeat("contacts", &other).await.unwrap());
    store.unlock("contacts", &me).await.unwrap();
    assert_eq!(store.lock_holder("contacts").await.unwrap(), None);
    // A dead holder on this host is taken over at once.
    let dead = LockHolder {
        id: "dead".into(),
        pid: 9_999_999,
        ..me.clone()
    };
    store.lock("contacts", &dead, lock::LEASE).await.unwrap();
    match store.lock("contacts", &me, lock::LEASE).await.unwrap() {
        LockOutcome::Acquired { took_over: Some(h) } => assert_eq!(h.id, "dead"),
        got => panic!("{got:?}"),
    }
    assert!(
        !store.heartbeat("contacts", &dead).await.unwrap(),
        "the old holder lost it"
    );
    // A holder elsewhere keeps it for the lease, then loses it.
    store.unlock("contacts", &me).await.unwrap();
    let remote = LockHolder {
        id: "remote".into(),
        host: "elsewhere".into(),
        pid: 9_999_999,
        ..me.clone()
    };
    store.lock("contacts", &remote, lock::LEASE).await.unwrap();
    assert!(matches!(
        store.lock("contacts", &me, lock::LEASE).await.unwrap(),
        LockOutcome::Held(_)
    ));
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    assert!(matches!(
        store
            .lock("contacts", &me, std::time::Duration::from_millis(10))
            .await
            .unwrap(),
        LockOutcome::Acquired { took_over: Some(_) }
    ));

    // Models do not see each other; `forget` clears one model's state (runs are kept).
    store.apply("other", vec![w(&[("k1", 5, None)])]).await.unwrap();
    assert_eq!(store.forget("contacts").await.unwrap(), 2);
    assert!(store.snapshot("contacts").await.unwrap().is_empty());
    assert!(store.inflight("contacts").await.unwrap().is_empty());
    assert_eq!(store.model_destination("contacts").await.unwrap(), None);
    assert_eq!(store.snapshot("other").await.unwrap().len(), 1);
    assert_eq!(
        store.runs("contacts", 10).await.unwrap().len(),
        2,
        "runs are history, kept by forget"
    );
}

/// The conflict tables (docs/conflicts.md): bases, conflicts stored once per fingerprint,
/// superseded when the values change, resolved with the base set for the next run.
async fn conflicts_suite(store: &StateStore) {
    use ebb::state::conflicts::{base_to_text, Base, Conflict, ConflictQuery, ConflictStatus, FieldBase, Side};
    use serde_json::json;
    store.conflicts_init().await.unwrap();
    store.conflicts_init().await.unwrap(); // twice: created once
    let conflict = |key: &str, w: &str, c: &str, status: ConflictStatus| Conflict {
        id: 0,
        model: "two_way".into(),
        key: key.into(),
        field: "Email".into(),
        warehouse_value: json!(w),
        crm_value: json!(c),
        warehouse_time: Some("2026-12-03T09:00:00".into()),
        crm_time: Some("2026-12-03T10:00:00.000+0000".into()),
        policy: "manual_review".into(),
        status,
        winner: None,
        reason: "policy manual_review".into(),
        run_id: 1,
        detected_ms: 1_000,
        decided_ms: None,
        decided_by: None,
    };
    let mut base = Base::new();
    base.insert(
        "Email".into(),
        FieldBase {
            w: Some(json!("old@x")),
            c: Some(json!("old@x")),
        },
    );
    store
        .apply(
            "two_way",
            vec![
                StateWrite::ConflictBase(vec![("k1".into(), base_to_text(&base))]),
                StateWrite::Conflicts(vec![conflict("k1", "w@x", "c@x", ConflictStatus::Open)]),
            ],
        )
        .await
        .unwrap();
    // Found again by the next run: stored once.
    store
        .apply(
            "two_way",
            vec![StateWrite::Conflicts(vec![conflict(
                "k1",
                "w@x",
                "c@x",
                ConflictStatus::Open,
            )])],
        )
        .await
        .unwrap();
    let all = |model: &str| ConflictQuery {
        model: Some(model.into()),
        limit: 100,
        ..ConflictQuery::default()
    };
    assert_eq!(store.conflicts(all("two_way")).await.unwrap().len(), 1);
    assert_eq!(store.conflicts_open().await.unwrap(), vec![("two_way".to_string(), 1)]);
    // The warehouse value changes while held: the old conflict is superseded.
    store
        .apply(
            "two_way",
            vec![StateWrite::Conflicts(vec![conflict(
                "k1",
                "w2@x",
                "c@x",
                ConflictStatus::Open,
            )])],
        )
        .await
        .unwrap();
    let listed = store.conflicts(all("two_way")).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.status).collect::<Vec<_>>(),
        [ConflictStatus::Open, ConflictStatus::Superseded],
        "newest first"
    );
    assert_eq!(listed[0].warehouse_value, json!("w2@x"));
    assert_eq!(listed[0].crm_time.as_deref(), Some("2026-12-03T10:00:00.000+0000"));
    // A person takes the CRM's value: the base now holds both sides as they are.
    let resolved = store
        .conflict_resolve("two_way", "k1", Side::Crm, "cli:ana", 2_000)
        .await
        .unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].winner, Some(Side::Crm));
    assert_eq!(resolved[0].decided_by.as_deref(), Some("cli:ana"));
    let b = store
        .conflict_bases("two_way", vec!["k1".into(), "k2".into()])
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "k2 was never settled");
    assert_eq!(b["k1"]["Email"].w, Some(json!("w2@x")));
    assert_eq!(b["k1"]["Email"].c, Some(json!("c@x")));
    assert!(store.conflicts_open().await.unwrap().is_empty());
    let stored = store
        .conflicts(ConflictQuery {
            statuses: vec![ConflictStatus::Resolved],
            ..all("two_way")
        })
        .await
        .unwrap();
    assert_eq!(stored[0].decided_ms, Some(2_000));
    // Nothing left to resolve.
    assert!(store
        .conflict_resolve("two_way", "k1", Side::Warehouse, "cli:ana", 3_000)
        .await
        .unwrap()
        .is_empty());
    // A record settled without a conflict supersedes its open ones.
    store
        .apply(
            "two_way",
            vec![StateWrite::Conflicts(vec![conflict(
                "k9",
                "a",
                "b",
                ConflictStatus::Open,
            )])],
        )
        .await
        .unwrap();
    store
        .apply(
            "two_way",
            vec![StateWrite::ConflictsGone {
                keys: vec!["k9".into()],
                now_ms: 4_000,
            }],
        )
        .await
        .unwrap();
    assert!(store.conflicts_open().await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(None, dir.path()).await.unwrap();
    assert!(
        dir.path().join(".ebb/state.db").is_file(),
        "the default is .ebb/state.db in the project"
    );
    conflicts_suite(&store).await;
    suite(store).await;
    // Reopening finds the same state.
    let again = StateStore::open(None, dir.path()).await.unwrap();
    assert_eq!(again.snapshot("other").await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_store() {
    require_postgres!();
    let schema = format!("ebb_state_test_{}", std::process::id());
    let base = crate::source_postgres::url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}ebb_schema={schema}");
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL must be running");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    let store = StateStore::open(Some(&url), std::path::Path::new(".")).await.unwrap();
    conflicts_suite(&store).await;
    suite(store).await;
    let again = StateStore::open(Some(&url), std::path::Path::new(".")).await.unwrap();
    assert_eq!(again.snapshot("other").await.unwrap().len(), 1);
    // A store written by a newer ebb is refused, with the reason.
    client
        .batch_execute(&format!(
            "UPDATE {schema}.ebb_meta SET value = '99' WHERE key = 'schema_version'"
        ))
        .await
        .unwrap();
    let err = StateStore::open(Some(&url), std::path::Path::new("."))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StateError::Newer { found: 99, .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("was written by a newer ebb (schema version 99; this ebb reads up to 1): upgrade ebb"),
        "{err}"
    );
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn newer_corrupt_and_foreign_sqlite_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(Some("sqlite://state.db"), dir.path()).await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    conn.execute("UPDATE ebb_meta SET value = '2' WHERE key = 'schema_version'", [])
        .unwrap();
    drop(conn);
    let err = StateStore::open(Some("sqlite://state.db"), dir.path())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StateError::Newer { found: 2, .. }), "{err:?}");

    std::fs::write(dir.path().join("garbage.db"), vec![0x42u8; 8192]).unwrap();
    let err = StateStore::open(Some("sqlite://garbage.db"), dir.path())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StateError::Foreign(..)), "{err:?}");
    assert!(
        err.to_string()
            .contains("garbage.db` is not an ebb state store: file is not a database"),
        "{err}"
    );

    let conn = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
    conn.execute_batch("CREATE TABLE users (id INTEGER)").unwrap();
    drop(conn);
    let err = StateStore::open(Some("sqlite://app.db"), dir.path())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("app.db` is not an ebb state store: it holds other tables (users) and no `ebb_meta`"),
        "{err}"
    );

    let err = StateStore::open(Some("mysql://x"), dir.path()).await.err().unwrap();
    assert!(
        err.to_string().contains("must start with `sqlite://` or `postgres://`"),
        "{err}"
    );
}

/// The reason a store was refused, as `ebb` prints it.
async fn refused(url: &str, dir: &std::path::Path) -> String {
    match StateStore::open(Some(url), dir).await {
        Ok(_) => panic!("{url} opened"),
        Err(e) => {
            assert!(matches!(e, StateError::Foreign(..)), "{e:?}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn an_empty_or_damaged_sqlite_file_is_refused_never_started_over() {
    let dir = tempfile::tempdir().unwrap();
    // A truncated store: 0 bytes. Started over, every row of every model would be sent again.
    std::fs::write(dir.path().join("zero.db"), b"").unwrap();
    let err = refused("sqlite://zero.db", dir.path()).await;
    assert!(
        err.contains("zero.db` is not an ebb state store: it is empty (0 bytes)")
            && err.contains("restore the store from a backup, or delete the file"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("zero.db")).unwrap().len(),
        0,
        "the file is left as it was"
    );
    // An SQLite database without tables.
    let conn = rusqlite::Connection::open(dir.path().join("blank.db")).unwrap();
    conn.execute_batch("PRAGMA user_version = 7").unwrap();
    drop(conn);
    let err = refused("sqlite://blank.db", dir.path()).await;
    assert!(
        err.contains("blank.db` is not an ebb state store: it is an SQLite database without tables"),
        "{err}"
    );
    // A store missing some of its tables, or its schema version.
    drop(StateStore::open(Some("sqlite://hurt.db"), dir.path()).await.unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("hurt.db")).unwrap();
    conn.execute_batch("DROP TABLE ebb_snapshot").unwrap();
    drop(conn);
    let err = refused("sqlite://hurt.db", dir.path()).await;
    assert!(err.contains("its tables ebb_snapshot are missing"), "{err}");
    drop(StateStore::open(Some("sqlite://nover.db"), dir.path()).await.unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("nover.db")).unwrap();
    conn.execute_batch("DELETE FROM ebb_meta").unwrap();
    drop(conn);
    let err = refused("sqlite://nover.db", dir.path()).await;
    assert!(err.contains("its `ebb_meta` has no schema version"), "{err}");
    // The store is gone but its write-ahead log (which may hold all of it) is not.
    std::fs::write(dir.path().join("gone.db-wal"), vec![1u8; 64]).unwrap();
    let err = refused("sqlite://gone.db", dir.path()).await;
    assert!(
        err.contains("gone.db` is not an ebb state store: the file is gone but its write-ahead log"),
        "{err}"
    );
    assert!(!dir.path().join("gone.db").exists());

    // A path where nothing is yet is a new store, created whole even when several
    // processes open it at once; nothing is left beside it.
    let fresh = dir.path().join("new");
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let d = fresh.clone();
            tokio::spawn(async move { StateStore::open(Some("sqlite://sub/state.db"), &d).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap());
    }
    let id = stores[0].start_run("m").await.unwrap();
    for s in &stores {
        assert_eq!(s.runs("m", 10).await.unwrap()[0].id, id, "one store for all");
    }
    drop(stores);
    let mut left: Vec<String> = std::fs::read_dir(fresh.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    left.sort();
    assert_eq!(left, ["state.db"]);
}

#[test]
fn ebb_run_and_reset_refuse_a_truncated_store_and_send_nothing() {
    require_postgres!();
    let f = crate::sync::Fixture::new("state0", 5, 100, None);
    let (code, run) = f.run(&[]);
    assert_eq!(code, 0, "{run}");
    let before = f.sink.requests();
    // The state file is truncated (a full disk, a bad copy).
    std::fs::write(f.path().join(".ebb/state.db"), b"").unwrap();
    for p in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(f.path().join(format!(".ebb/state.db{p}")));
    }
    for args in [&["run", "contacts"][..], &["reset", "contacts"]] {
        let out = crate::support::ebb(f.path(), args);
        let err = crate::support::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(".ebb/state.db` is not an ebb state store: it is empty (0 bytes)"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(f.sink.requests(), before, "nothing was sent again");
    assert_eq!(std::fs::metadata(f.path().join(".ebb/state.db")).unwrap().len(), 0);
}

/// A PostgreSQL URL whose store lives in `schema`, its connections named `app`.
fn pg_url(schema: &str, app: &str) -> String {
    let base = crate::source_postgres::url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}ebb_schema={schema}&application_name={app}")
}

async fn pg_admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&crate::source_postgres::url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL must be running");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn a_damaged_postgres_schema_is_refused_never_started_over() {
    require_postgres!();
    let client = pg_admin().await;
    let schema = format!("ebb_state_damaged_{}", std::process::id());
    let url = pg_url(&schema, "ebb");
    let here = std::path::Path::new(".");
    let reset = |sql: String| {
        let client = &client;
        async move { client.batch_execute(&sql).await.unwrap() }
    };
    reset(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    drop(StateStore::open(Some(&url), here).await.unwrap());
    // ebb's tables without `ebb_meta`: a new store would send every row again.
    reset(format!("DROP TABLE {schema}.ebb_meta")).await;
    let err = refused(&url, here).await;
    assert!(
        err.contains(&format!(
            "schema `{schema}` holds ebb's tables (ebb_inflight, ebb_locks,"
        )) && err.contains("but no `ebb_meta`")
            && err.contains("restore the store from a backup, or drop the schema"),
        "{err}"
    );
    // `ebb_meta` emptied.
    reset(format!("DROP SCHEMA {schema} CASCADE")).await;
    drop(StateStore::open(Some(&url), here).await.unwrap());
    reset(format!("DELETE FROM {schema}.ebb_meta")).await;
    let err = refused(&url, here).await;
    assert!(err.contains("its `ebb_meta` has no schema version"), "{err}");
    // A table missing.
    reset(format!("DROP SCHEMA {schema} CASCADE")).await;
    drop(StateStore::open(Some(&url), here).await.unwrap());
    reset(format!("DROP TABLE {schema}.ebb_snapshot")).await;
    let err = refused(&url, here).await;
    assert!(err.contains("its tables ebb_snapshot are missing"), "{err}");
    // Other tables only.
    reset(format!(
        "DROP SCHEMA {schema} CASCADE; CREATE SCHEMA {schema}; CREATE TABLE {schema}.users (id INT)"
    ))
    .await;
    let err = refused(&url, here).await;
    assert!(err.contains("holds 1 other tables (users) and no `ebb_meta`"), "{err}");
    // An empty schema (made ready by an administrator) is a new store; a name in capitals
    // is the one PostgreSQL folds it to, found again on the next open.
    reset(format!("DROP SCHEMA {schema} CASCADE; CREATE SCHEMA {schema}")).await;
    drop(StateStore::open(Some(&url), here).await.unwrap());
    let upper = pg_url(&schema.to_uppercase(), "ebb");
    let store = StateStore::open(Some(&upper), here).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    reset(format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// Corrupts the one in-flight record with `set` (SQL), and checks that reading the model's
/// in-flight batches fails naming the store, the model and the batch.
async fn assert_corrupt_inflight_is_an_error(store: &StateStore, corrupt: impl AsyncFn(&str), sets: &[(&str, &str)]) {
    let run = store.start_run("contacts").await.unwrap();
    store
        .apply(
            "contacts",
            vec![StateWrite::Inflight(InflightBatch {
                run_id: run,
                batch: 3,
                op: "upsert".into(),
                keys: vec!["k1".into(), "k2".into()],
            })],
        )
        .await
        .unwrap();
    assert_eq!(store.inflight("contacts").await.unwrap()[0].keys, ["k1", "k2"]);
    for (set, why) in sets {
        corrupt(set).await;
        let err = store
            .inflight("contacts")
            .await
            .err()
            .unwrap_or_else(|| panic!("{set}: read"));
        assert!(
            matches!(err, StateError::CorruptInflight { batch: 3, .. }),
            "{set}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "the state store {} holds a corrupt in-flight record of model `contacts` (run {run}, batch 3): {why}",
                store.name()
            )) && text.ends_with("`ebb reset contacts` makes the next run send every row"),
            "{set}: {text}"
        );
    }
    // `ebb reset` clears it.
    store.forget("contacts").await.unwrap();
    assert!(store.inflight("contacts").await.unwrap().is_empty());
}

const CORRUPTIONS: &[(&str, &str)] = &[
    ("keys = 'k1,k2'", "its keys are not a JSON array of strings"),
    ("keys = '[1, 2]'", "its keys are not a JSON array of strings"),
    ("keys = '{\"k1\": 1}'", "its keys are not a JSON array of strings"),
    ("keys = ''", "its keys are not a JSON array of strings"),
    (
        "keys = '[\"k1\"]', op = 'frobnicate'",
        "its operation `frobnicate` is none of upsert, update, insert",
    ),
];

#[tokio::test]
async fn a_corrupt_inflight_record_is_an_error_naming_store_model_and_batch_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(None, dir.path()).await.unwrap();
    let path = dir.path().join(".ebb/state.db");
    let corrupt = async |set: &str| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("UPDATE ebb_inflight SET {set}")).unwrap();
    };
    let mut sets = CORRUPTIONS.to_vec();
    // SQLite keeps any type in any column.
    sets.push(("op = 'upsert', keys = x'5b5d'", "its keys are not text"));
    sets.push(("op = x'00', keys = '[]'", "its operation is not text"));
    assert_corrupt_inflight_is_an_error(&store, corrupt, &sets).await;
}

#[tokio::test]
async fn a_corrupt_inflight_record_is_an_error_naming_store_model_and_batch_postgres() {
    require_postgres!();
    let client = pg_admin().await;
    let schema = format!("ebb_state_corrupt_{}", std::process::id());
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    let store = StateStore::open(Some(&pg_url(&schema, "ebb")), std::path::Path::new("."))
        .await
        .unwrap();
    let corrupt = async |set: &str| {
        client
            .batch_execute(&format!("UPDATE {schema}.ebb_inflight SET {set}"))
            .await
            .unwrap();
    };
    assert_corrupt_inflight_is_an_error(&store, corrupt, CORRUPTIONS).await;
    drop(store);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// Terminates the backends of the connections named `app` (the store's own); how many.
async fn terminate(client: &tokio_postgres::Client, app: &str) -> i64 {
    client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_postgres_store_reconnects_after_its_connections_are_terminated() {
    require_postgres!();
    let client = pg_admin().await;
    let pid = std::process::id();
    let schema = format!("ebb_state_reconnect_{pid}");
    let app = format!("ebb_test_reconnect_{pid}");
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    let store = StateStore::open(Some(&pg_url(&schema, &app)), std::path::Path::new("."))
        .await
        .unwrap();
    let confirm = |run_id, n: u8| StateWrite::Confirm {
        run_id,
        rows: vec![(format!("k{n}"), h(n), None)],
    };
    let r1 = store.start_run("contacts").await.unwrap();
    store.apply("contacts", vec![confirm(r1, 1)]).await.unwrap();
    let me = lock::me(r1);

    // Between uses (a daemon waiting for its next slot): the connections are gone by the
    // time the store is used again.
    assert_eq!(terminate(&client, &app).await, 2, "the writer and the scan connection");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r2 = store.start_run("contacts").await.unwrap();
    assert!(r2 > r1);
    store.apply("contacts", vec![confirm(r2, 2)]).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let (scanned, got) = tokio::join!(store.scan_snapshot("contacts", tx), async {
        let mut n = 0;
        while let Some(c) = rx.recv().await {
            n += c.len();
        }
        n
    });
    scanned.unwrap();
    assert_eq!(got, 2);

    // Right before a use: the statement meets the dead connection and runs again on a new one.
    for round in 0..3 {
        assert!(terminate(&client, &app).await >= 1, "round {round}: the writer");
        match round {
            0 => assert!(matches!(
                store.lock("contacts", &me, lock::LEASE).await.unwrap(),
                LockOutcome::Acquired { .. }
            )),
            1 => store.apply("contacts", vec![confirm(r2, 3)]).await.unwrap(),
            _ => assert!(store.heartbeat("contacts", &me).await.unwrap()),
        }
    }
    assert_eq!(store.snapshot_len("contacts").await.unwrap(), 3);
    store
        .finish_run(r2, "succeeded", RunCounts::default(), None)
        .await
        .unwrap();
    let runs = store.runs("contacts", 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| (r.id, r.status.as_str())).collect::<Vec<_>>(),
        [(r2, "succeeded"), (r1, "running")],
        "no run recorded twice"
    );
    drop(store);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// A server that accepts connections and never says a word: the store's connect gives up
/// after `connect_timeout` (the TCP connect succeeds; the wait is for TLS and the startup).
#[tokio::test]
async fn a_postgres_server_that_accepts_and_never_answers_is_given_up_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let here = std::path::Path::new(".");
    let started = std::time::Instant::now();
    let url = format!("postgres://ebb@127.0.0.1:{port}/db?connect_timeout=1");
    let opened = tokio::time::timeout(std::time::Duration::from_secs(30), StateStore::open(Some(&url), here))
        .await
        .expect("the store still waits for a server that never answers");
    let err = opened.err().expect("a silent server is no store").to_string();
    assert!(
        err.contains("the server did not complete the connection within 1 s (`connect_timeout`)"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
    // The wait for the store's own statements is set in whole seconds.
    let err = StateStore::open(Some(&format!("{url}&ebb_statement_timeout=soon")), here)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`ebb_statement_timeout=soon` is not a whole number of seconds"),
        "{err}"
    );
}

/// A statement of the store the server does not answer (here, one waiting for a table
/// another session locked) ends after `ebb_statement_timeout`; the lock's heartbeat fails
/// that once and beats again on a new connection.
#[tokio::test]
async fn a_postgres_store_statement_left_unanswered_times_out_and_the_heartbeat_survives() {
    require_postgres!();
    let client = pg_admin().await;
    let pid = std::process::id();
    let schema = format!("ebb_state_unanswered_{pid}");
    let app = format!("ebb_test_unanswered_{pid}");
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    let url = format!("{}&ebb_statement_timeout=1", pg_url(&schema, &app));
    let store = StateStore::open(Some(&url), std::path::Path::new(".")).await.unwrap();
    let run = store.start_run("contacts").await.unwrap();
    store
        .apply(
            "contacts",
            vec![StateWrite::Confirm {
                run_id: run,
                rows: vec![("k1".into(), h(1), None)],
            }],
        )
        .await
        .unwrap();
    let me = lock::me(run);
    assert!(matches!(
        store.lock("contacts", &me, lock::LEASE).await.unwrap(),
        LockOutcome::Acquired { .. }
    ));
    assert!(store.heartbeat("contacts", &me).await.unwrap());

    let (blocker, conn) = tokio_postgres::connect(&crate::source_postgres::url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    blocker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.ebb_locks, {schema}.ebb_snapshot IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), store.heartbeat("contacts", &me))
        .await
        .expect("the heartbeat still waits")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the server did not answer within 1 s") && err.contains("`ebb_statement_timeout=<seconds>`"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // A snapshot scan waiting for its rows ends the same way.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let (scanned, _) = tokio::join!(
        tokio::time::timeout(std::time::Duration::from_secs(30), store.scan_snapshot("contacts", tx)),
        async { while rx.recv().await.is_some() {} }
    );
    let err = scanned.expect("the scan still waits").unwrap_err().to_string();
    assert!(err.contains("the server did not answer within 1 s"), "{err}");

    // Once the server answers again, so does the store, on new connections.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert!(store.heartbeat("contacts", &me).await.unwrap());
    assert_eq!(store.snapshot_len("contacts").await.unwrap(), 1);
    drop(store);
    terminate(&client, &app).await;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

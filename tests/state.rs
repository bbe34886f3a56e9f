//! The state store: one suite, run against both backends (SQLite and the real PostgreSQL).

use ebb::state::{RowErrorEntry, RunCounts, StateError, StateStore, SCHEMA_VERSION};

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

    // Pending before the send, confirmed after: the snapshot moves only for confirmed rows.
    let batch: Vec<(String, [u8; 16])> = (1..=3).map(|i| (format!("k{i}"), h(i))).collect();
    store.mark_pending("contacts", &batch).await.unwrap();
    let snap = store.snapshot("contacts").await.unwrap();
    assert_eq!(snap.len(), 3);
    assert!(snap.iter().all(|e| e.hash.is_none() && e.pending.is_some()));
    store
        .record_errors(
            "contacts",
            &[RowErrorEntry {
                key: "k3".into(),
                run_id: r2,
                kind: "rejected".into(),
                code: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST".into(),
                message: "bad value for restricted picklist field: Gold".into(),
            }],
        )
        .await
        .unwrap();
    store
        .confirm(
            "contacts",
            r2,
            &[("k1".into(), h(1), Some("003A".into())), ("k2".into(), h(2), None)],
        )
        .await
        .unwrap();
    let snap = store.snapshot("contacts").await.unwrap();
    assert_eq!(snap[0].key, "k1");
    assert_eq!(
        (snap[0].hash, snap[0].pending, snap[0].record_id.as_deref()),
        (Some(h(1)), None, Some("003A"))
    );
    assert_eq!((snap[1].hash, snap[1].pending), (Some(h(2)), None));
    // The rejected row keeps no confirmed hash and stays pending-marked until resolved.
    assert_eq!((snap[2].hash, snap[2].pending), (None, Some(h(3))));
    let errors = store.row_errors("contacts").await.unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    // Once accepted, its error goes; a record id already known is kept.
    store
        .confirm("contacts", r2, &[("k3".into(), h(3), None), ("k1".into(), h(9), None)])
        .await
        .unwrap();
    assert!(store.row_errors("contacts").await.unwrap().is_empty());
    let snap = store.snapshot("contacts").await.unwrap();
    assert_eq!((snap[0].hash, snap[0].record_id.as_deref()), (Some(h(9)), Some("003A")));

    // Models do not see each other; `forget` clears one model's snapshot and errors only.
    store.confirm("other", r2, &[("k1".into(), h(5), None)]).await.unwrap();
    store.forget("contacts").await.unwrap();
    assert!(store.snapshot("contacts").await.unwrap().is_empty());
    assert_eq!(store.snapshot("other").await.unwrap().len(), 1);
    assert_eq!(
        store.runs("contacts", 10).await.unwrap().len(),
        2,
        "runs are history, kept by forget"
    );
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(None, dir.path()).await.unwrap();
    assert!(
        dir.path().join(".ebb/state.db").is_file(),
        "the default is .ebb/state.db in the project"
    );
    suite(store).await;
    // Reopening finds the same state.
    let again = StateStore::open(None, dir.path()).await.unwrap();
    assert_eq!(again.snapshot("other").await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_store() {
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

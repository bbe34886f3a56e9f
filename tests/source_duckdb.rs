//! The DuckDB source against a real embedded database.

use ebb::config::project::{ConnectionSpec, DuckdbConnection};
use ebb::map::value::{read, Val};
use ebb::source::{Source, SourceError};

fn source(dir: &std::path::Path, path: &str) -> Source {
    let spec = ConnectionSpec::Duckdb(DuckdbConnection {
        path: path.into(),
        read_only: None,
        memory_limit: None,
        external_access: None,
    });
    Source::open("test", &spec, dir).unwrap()
}

fn database(dir: &std::path::Path, sql: &str) {
    let conn = duckdb::Connection::open(dir.join("w.duckdb")).unwrap();
    conn.execute_batch(sql).unwrap();
}

async fn rows(src: &Source, sql: &str) -> Vec<Vec<Val>> {
    let mut stream = src.query(sql, 0).await.unwrap();
    let schema = stream.schema();
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        for r in 0..b.num_rows() {
            out.push(
                (0..b.num_columns())
                    .map(|c| read(b.column(c), schema.field(c), r).unwrap())
                    .collect(),
            );
        }
    }
    out
}

#[tokio::test]
async fn every_type_and_null_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    database(
        dir.path(),
        "CREATE TABLE t (id BIGINT, i INTEGER, ltv DECIMAL(12,2), big HUGEINT, score DOUBLE, name VARCHAR, active BOOLEAN,
            born DATE, seen TIMESTAMP, at_tz TIMESTAMPTZ, scores JSON, s STRUCT(upsell DOUBLE, tier VARCHAR), tags VARCHAR[]);
         INSERT INTO t VALUES
           (1, -3, 1234567.89, 170141183460469231731687303715884105727, 0.25, 'Ada', true, DATE '1990-05-17',
            TIMESTAMP '2026-11-28 10:11:12.345678', TIMESTAMPTZ '2026-11-28 10:11:12+02', '{\"upsell\": 0.7}',
            {'upsell': 0.5, 'tier': 'gold'}, ['a', 'b']),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let src = source(dir.path(), "w.duckdb");
    let r = rows(&src, "SELECT * FROM t ORDER BY id").await;
    assert_eq!(r.len(), 2);
    let a = &r[0];
    assert_eq!(a[0], Val::Int(1));
    assert_eq!(a[1], Val::Int(-3));
    assert_eq!(
        a[2],
        Val::Decimal {
            v: 123_456_789,
            scale: 2
        }
    );
    let mut big = String::new();
    a[3].write_json(&mut big).unwrap();
    assert_eq!(big, "170141183460469231731687303715884105727");
    assert_eq!(a[4], Val::Float(0.25));
    assert_eq!(a[5], Val::Str("Ada".into()));
    assert_eq!(a[6], Val::Bool(true));
    assert_eq!(a[7], Val::Date(chrono::NaiveDate::from_ymd_opt(1990, 5, 17).unwrap()));
    assert_eq!(a[8].as_text().unwrap(), "2026-11-28T10:11:12.345678");
    assert_eq!(a[9].as_text().unwrap(), "2026-11-28T08:11:12Z");
    assert_eq!(a[10].as_document().unwrap()["upsell"], 0.7);
    assert_eq!(a[11], Val::Json(serde_json::json!({"upsell": 0.5, "tier": "gold"})));
    assert_eq!(a[12], Val::Json(serde_json::json!(["a", "b"])));
    assert!(r[1][1..].iter().all(|v| *v == Val::Null), "{:?}", r[1]);
}

#[tokio::test]
async fn parquet_and_csv_files_resolve_against_the_project() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/people.csv"), "id,name\n1,Ada\n2,Alan\n").unwrap();
    database(
        dir.path(),
        &format!(
            "COPY (SELECT 7 AS id, 'Grace' AS name) TO '{}' (FORMAT parquet)",
            dir.path().join("data/people.parquet").display()
        ),
    );
    let src = source(dir.path(), "w.duckdb");
    let csv = rows(&src, "SELECT name FROM read_csv('data/people.csv') ORDER BY id").await;
    assert_eq!(csv, [[Val::Str("Ada".into())], [Val::Str("Alan".into())]]);
    let parquet = rows(&src, "SELECT id, name FROM read_parquet('data/people.parquet')").await;
    assert_eq!(parquet, [[Val::Int(7), Val::Str("Grace".into())]]);
}

#[tokio::test]
async fn large_results_stream_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    database(
        dir.path(),
        "CREATE TABLE n AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(100000)",
    );
    let src = source(dir.path(), "w.duckdb");
    let mut stream = src.query("SELECT * FROM n", 0).await.unwrap();
    let (mut batches, mut total) = (0, 0);
    while let Some(b) = stream.next().await {
        total += b.unwrap().num_rows();
        batches += 1;
    }
    assert_eq!(total, 100_000);
    assert!(batches > 10, "{batches} batches: the result was not streamed");
}

#[tokio::test]
async fn empty_results_errors_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    database(dir.path(), "CREATE TABLE t (id INTEGER, name VARCHAR)");
    let src = source(dir.path(), "w.duckdb");
    let mut stream = src.query("SELECT * FROM t", 0).await.unwrap();
    assert_eq!(stream.schema().fields().len(), 2);
    while let Some(b) = stream.next().await {
        assert_eq!(b.unwrap().num_rows(), 0);
    }
    assert_eq!(
        src.describe("SELECT name FROM t;").await.unwrap().field(0).name(),
        "name"
    );
    let err = src.query("SELECT nope FROM t", 0).await.err().unwrap();
    assert!(
        matches!(err, SourceError::Query(ref m) if m.contains("nope")),
        "{err:?}"
    );
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
    let err = source(dir.path(), "missing.duckdb")
        .query("SELECT 1", 0)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, SourceError::Connect(ref m) if m.contains("missing.duckdb` does not exist")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_memory_limit_applies_and_a_bad_one_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    database(dir.path(), "CREATE TABLE t AS SELECT 1 AS id");
    let with_limit = |limit: &str| {
        Source::open(
            "test",
            &ConnectionSpec::Duckdb(DuckdbConnection {
                path: "w.duckdb".into(),
                read_only: None,
                memory_limit: Some(limit.into()),
                external_access: None,
            }),
            dir.path(),
        )
        .unwrap()
    };
    let r = rows(&with_limit("64MB"), "SELECT current_setting('memory_limit') AS m").await;
    assert!(
        matches!(&r[0][0], Val::Str(m) if m.starts_with("61.0 MiB") || m.starts_with("64")),
        "{r:?}"
    );
    let err = with_limit("lots").query("SELECT 1", 0).await.err().unwrap();
    assert!(
        matches!(err, SourceError::Connect(ref m) if m.starts_with("`memory_limit: lots`: ")),
        "{err:?}"
    );
    assert_eq!(err.to_string().lines().count(), 1);
}

/// The error of a query expected to fail.
async fn query_error(src: &Source, sql: &str) -> String {
    match src.query(sql, 0).await {
        Err(e) => e.to_string(),
        Ok(mut stream) => {
            while let Some(b) = stream.next().await {
                if let Err(e) = b {
                    return e.to_string();
                }
            }
            panic!("`{sql}` ran")
        }
    }
}

#[tokio::test]
async fn a_query_reads_only_files_inside_the_project_unless_the_connection_opts_in() {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("proj");
    std::fs::create_dir_all(project.join("data")).unwrap();
    std::fs::write(project.join("data/people.csv"), "id,name\n1,Ada\n").unwrap();
    // Outside the project: a file beside it, and one in a directory whose name starts with
    // the project's.
    std::fs::write(root.path().join("secret.txt"), "s3cr3t").unwrap();
    std::fs::create_dir_all(root.path().join("proj2")).unwrap();
    std::fs::write(root.path().join("proj2/other.csv"), "id\n1\n").unwrap();
    database(&project, "CREATE TABLE t AS SELECT 1 AS id");
    let open = |external_access: Option<bool>, path: &str| {
        Source::open(
            "test",
            &ConnectionSpec::Duckdb(DuckdbConnection {
                path: path.into(),
                read_only: None,
                memory_limit: None,
                external_access,
            }),
            &project,
        )
        .unwrap()
    };
    let secret = root.path().join("secret.txt").display().to_string();
    for src in [open(None, "w.duckdb"), open(Some(false), ":memory:")] {
        for sql in [
            "SELECT content FROM read_text('/proc/self/environ')".to_string(),
            format!("SELECT content FROM read_text('{secret}')"),
            "SELECT content FROM read_text('../secret.txt')".into(),
            "SELECT content FROM read_text('data/../../secret.txt')".into(),
            "SELECT * FROM read_csv('../proj2/other.csv')".into(),
            format!("SELECT * FROM read_csv('{}/proj2/*.csv')", root.path().display()),
            "SELECT * FROM glob('/etc/*')".into(),
            "SELECT * FROM read_csv(['data/people.csv', '../proj2/other.csv'])".into(),
            "SELECT * FROM '../proj2/other.csv'".into(),
            "SELECT content FROM read_text('..' || '/secret.txt')".into(),
        ] {
            let err = query_error(&src, &sql).await;
            assert!(
                err.contains("Permission Error")
                    && err.contains("queries on this connection read only files inside the project directory")
                    && err.contains("`external_access: true` on the duckdb connection"),
                "{sql}: {err}"
            );
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        // Files inside the project read, by a relative or an absolute path.
        let inside = project.join("data/people.csv").display().to_string();
        for sql in [
            "SELECT name FROM read_csv('data/people.csv')".to_string(),
            format!("SELECT name FROM read_csv('{inside}')"),
            "SELECT name FROM read_csv(['data/people.csv'], header = true)".into(),
            "SELECT name FROM 'data/people.csv'".into(),
            "SELECT name FROM read_csv('data/*.csv') WHERE name <> 'data/people.csv'".into(),
        ] {
            assert_eq!(rows(&src, &sql).await, [[Val::Str("Ada".into())]], "{sql}");
        }
        // The query cannot lift the confinement, nor have DuckDB download an extension.
        for sql in [
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "SET lock_configuration = false",
            "SET autoinstall_known_extensions = true",
            "RESET allowed_directories",
        ] {
            let err = query_error(&src, sql).await;
            assert!(
                err.contains("the configuration has been locked") || err.contains("Cannot"),
                "{sql}: {err}"
            );
        }
        let settings = rows(
            &src,
            "SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions'),
                    current_setting('enable_external_access'), current_setting('lock_configuration')",
        )
        .await;
        assert_eq!(
            settings,
            [[Val::Bool(false), Val::Bool(false), Val::Bool(false), Val::Bool(true)]]
        );
    }
    // The database's own table still reads.
    assert_eq!(rows(&open(None, "w.duckdb"), "SELECT id FROM t").await, [[Val::Int(1)]]);

    // With the opt-in, files elsewhere read; the configuration stays locked.
    let open_src = open(Some(true), "w.duckdb");
    assert_eq!(
        rows(&open_src, &format!("SELECT content FROM read_text('{secret}')")).await,
        [[Val::Str("s3cr3t".into())]]
    );
    assert_eq!(
        rows(&open_src, "SELECT count(*) FROM read_csv('../proj2/other.csv')").await,
        [[Val::Int(1)]]
    );
    let err = query_error(&open_src, "SET autoinstall_known_extensions = true").await;
    assert!(err.contains("the configuration has been locked"), "{err}");
}

/// DuckDB judges a file against `allowed_directories` by its real path (its
/// `SanitizeAllowedPath` canonicalizes, links resolved), so a link inside the project does not
/// lead a query out of it, whether named, globbed or reached through a linked directory.
#[cfg(unix)]
#[tokio::test]
async fn a_symbolic_link_inside_the_project_does_not_lead_a_query_out_of_it() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("proj");
    std::fs::create_dir_all(project.join("data/sub")).unwrap();
    std::fs::write(project.join("data/people.csv"), "id,name\n1,Ada\n").unwrap();
    std::fs::create_dir_all(root.path().join("outside")).unwrap();
    std::fs::write(root.path().join("outside/secret.csv"), "id,name\n1,s3cr3t\n").unwrap();
    // Links out of the project: to a file, to a directory, to the environment, and one
    // deeper down, reachable by a glob's wildcard; links inside to inside.
    symlink(root.path().join("outside/secret.csv"), project.join("data/leak.csv")).unwrap();
    symlink(root.path().join("outside"), project.join("out")).unwrap();
    symlink("/proc/self/environ", project.join("env")).unwrap();
    symlink("../../../outside/secret.csv", project.join("data/sub/deep.csv")).unwrap();
    symlink(project.join("data/people.csv"), project.join("people.csv")).unwrap();
    symlink("data", project.join("d")).unwrap();
    let src = source(&project, ":memory:");
    let abs = |p: &str| project.join(p).display().to_string();
    for sql in [
        "SELECT * FROM read_csv('data/leak.csv')".to_string(),
        "SELECT * FROM 'data/leak.csv'".into(),
        "SELECT * FROM read_csv(['data/people.csv', 'out/secret.csv'])".into(),
        format!("SELECT * FROM read_csv('{}')", abs("data/leak.csv")),
        format!("SELECT * FROM read_csv('file://{}')", abs("data/leak.csv")),
        format!("SELECT content FROM read_text('{}/' || 'leak.csv')", abs("data")),
        "SELECT content FROM read_text('env')".into(),
        "SELECT * FROM read_csv('out/*.csv')".into(),
        "SELECT * FROM read_csv('data/*.csv')".into(),
        "SELECT * FROM read_csv('data/*/*.csv')".into(),
        "SELECT * FROM read_csv('data/**/*.csv')".into(),
        "SELECT * FROM read_csv('d/sub/deep.csv')".into(),
        "SELECT * FROM read_csv('data/sub/../leak.csv')".into(),
    ] {
        let err = query_error(&src, &sql).await;
        assert!(
            err.contains("Permission Error")
                && err.contains("queries on this connection read only files inside the project directory"),
            "{sql}: {err}"
        );
        assert!(!err.contains("s3cr3t") && !err.contains("PATH="), "{sql}: {err}");
    }
    // Links that stay inside read, and so does a glob beside the escaping links.
    for sql in [
        "SELECT name FROM read_csv('people.csv')",
        "SELECT name FROM read_csv('d/people.csv')",
        "SELECT name FROM read_csv('data/p*.csv')",
    ] {
        assert_eq!(rows(&src, sql).await, [[Val::Str("Ada".into())]], "{sql}");
    }
    // With the opt-in, the link reads.
    let open = Source::open(
        "test",
        &ConnectionSpec::Duckdb(DuckdbConnection {
            path: ":memory:".into(),
            read_only: None,
            memory_limit: None,
            external_access: Some(true),
        }),
        &project,
    )
    .unwrap();
    assert_eq!(
        rows(&open, "SELECT name FROM read_csv('data/leak.csv')").await,
        [[Val::Str("s3cr3t".into())]]
    );
}

//! Warehouse tables as a destination (`destination::table`): a real DuckDB file in a
//! temporary directory and the real PostgreSQL (skipped with one loud line when absent,
//! unless required; see `support::postgres`), and Snowflake through the in-process SQL API
//! server executing on a PostgreSQL database of its own (tests/snowflake_pg.rs). Each
//! behaviour runs on every warehouse; the table is read back through ebb's own sources,
//! which on DuckDB also shows the source and the writer sharing one instance of the file.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use ebb::config::project::{ConnectionSpec, DuckdbConnection, PostgresConnection};
use ebb::destination::table::types::{CellError, ColumnType};
use ebb::destination::table::{
    Column, Mode, OnDeleted, TableCheck, TableError, TableRow, TableSpec, TableWriter, WriteCounts, DELETED_COLUMN,
};
use ebb::map::value::{read, Val};
use ebb::source::Source;
use std::path::{Path, PathBuf};

/// Where a test writes: a DuckDB file in a temporary directory, or a fresh schema of the
/// test PostgreSQL.
struct Backend {
    connection: ConnectionSpec,
    dir: tempfile::TempDir,
    /// The schema the test's tables go into.
    schema: String,
    pg: Option<tokio_postgres::Client>,
    /// Snowflake: the SQL API server (its database is PostgreSQL's).
    sf: Option<crate::snowflake_server::Server>,
}

impl Backend {
    fn duckdb() -> Backend {
        Backend {
            connection: ConnectionSpec::Duckdb(DuckdbConnection {
                path: "w.duckdb".into(),
                read_only: None,
                memory_limit: None,
                external_access: None,
            }),
            dir: tempfile::tempdir().unwrap(),
            schema: "raw".into(),
            pg: None,
            sf: None,
        }
    }

    /// Snowflake through the SQL API server. Table names are quoted (kept as written), so
    /// the tests' own SQL finds them unquoted on the server's PostgreSQL; the upper-case
    /// names of unquoted ones are in tests/table_snowflake.rs.
    async fn snowflake(tag: &str) -> Backend {
        let server = crate::snowflake_server::Server::start_postgres(
            "XY12345",
            "EBB_SYNC",
            crate::table_snowflake::KEY,
            &format!("table_{tag}"),
        )
        .await;
        let (client, conn) = tokio_postgres::connect(&server.database_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        Backend {
            connection: crate::table_snowflake::connection(&server.url),
            dir: tempfile::tempdir().unwrap(),
            schema: "raw".into(),
            pg: Some(client),
            sf: Some(server),
        }
    }

    async fn postgres(tag: &str) -> Backend {
        let url = crate::source_postgres::url();
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let schema = format!("ebb_table_{tag}_{}", std::process::id());
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .unwrap();
        Backend {
            connection: ConnectionSpec::Postgres(PostgresConnection { url, fetch_size: None }),
            dir: tempfile::tempdir().unwrap(),
            schema,
            pg: Some(client),
            sf: None,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("w.duckdb")
    }

    fn table(&self, name: &str) -> String {
        match &self.sf {
            Some(_) => format!("\"{}\".\"{name}\"", self.schema),
            None => format!("{}.{name}", self.schema),
        }
    }

    /// Runs DDL or DML directly (DuckDB: only while no writer has the file open).
    async fn sql(&self, sql: &str) {
        match &self.pg {
            Some(c) => c.batch_execute(sql).await.unwrap(),
            None => duckdb::Connection::open(self.path())
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
        }
    }

    async fn open(&self, spec: TableSpec) -> TableWriter {
        TableWriter::open(spec, &self.connection, self.dir.path())
            .await
            .unwrap()
    }

    /// The rows of `sql` as text (`NULL` for null), read through ebb's source.
    async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        read_rows(&self.connection, self.dir.path(), sql).await
    }

    async fn count(&self, table: &str) -> usize {
        self.rows(&format!("SELECT count(*) FROM {table}")).await[0][0]
            .parse()
            .unwrap()
    }

    async fn done(self) {
        if self.sf.is_some() {
            return;
        }
        if let Some(c) = &self.pg {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema))
                .await
                .unwrap();
        }
    }
}

/// The rows of `sql` on `connection` as text (`NULL` for null), read through ebb's source.
pub(crate) async fn read_rows(connection: &ConnectionSpec, dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let src = Source::open("test", connection, dir).unwrap();
    let mut stream = src.query(sql, 0).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let schema = stream.schema();
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        for r in 0..b.num_rows() {
            out.push(
                (0..b.num_columns())
                    .map(|c| {
                        read(b.column(c), schema.field(c), r)
                            .unwrap()
                            .as_text()
                            .unwrap_or_else(|| "NULL".into())
                    })
                    .collect(),
            );
        }
    }
    out
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), ty }
}

/// Nine columns, as an inbound Contact would have them.
pub(crate) fn columns() -> Vec<Column> {
    vec![
        col("id", ColumnType::Text),
        col("name", ColumnType::Text),
        col("n", ColumnType::Bigint),
        col(
            "amount",
            ColumnType::Decimal {
                precision: 12,
                scale: 2,
            },
        ),
        col("score", ColumnType::Double),
        col("active", ColumnType::Boolean),
        col("born", ColumnType::Date),
        col("modified", ColumnType::Timestamp),
        col("extra", ColumnType::Json),
    ]
}

fn spec(table: &str, mode: Mode, on_deleted: OnDeleted) -> TableSpec {
    TableSpec {
        connection: "w".into(),
        table: table.into(),
        key: "id".into(),
        mode,
        on_deleted,
        deleted_column: DELETED_COLUMN.into(),
        version_column: (mode == Mode::Append).then(|| "modified".into()),
        columns: columns(),
        delete_by_key: false,
    }
}

pub(crate) fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 10, minute, 0).unwrap()
}

/// Record `i`, version `v` (its modification minute and amount change with it).
pub(crate) fn row(i: u32, v: u32) -> TableRow {
    TableRow {
        values: vec![
            Val::Str(format!("c{i:04}")),
            Val::Str(format!("Name {i}")),
            Val::Int(i64::from(i)),
            Val::Decimal {
                v: i128::from(i) * 100 + i128::from(v),
                scale: 2,
            },
            Val::Float(f64::from(i) / 4.0),
            Val::Bool(i.is_multiple_of(2)),
            Val::Date(NaiveDate::from_ymd_opt(1990, 1, 1).unwrap() + chrono::Days::new(u64::from(i))),
            Val::Timestamp {
                at: at(v).naive_utc(),
                utc: true,
            },
            Val::Json(serde_json::json!({"i": i, "tier": "gold"})),
        ],
        deleted: false,
    }
}

fn deleted(mut r: TableRow) -> TableRow {
    r.deleted = true;
    r
}

const SELECT: &str = "id, name, n, amount, score, active, born, modified, extra";

// --- create when missing -------------------------------------------------------------

async fn creates_the_table_when_missing(b: Backend) {
    let t = b.table("crm_customers");
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    assert_eq!(w.check().await.unwrap(), TableCheck::Missing);
    w.ensure().await.unwrap();
    assert_eq!(w.check().await.unwrap(), TableCheck::Compatible);
    let counts = w.write(vec![row(1, 0), row(2, 0)], at(30)).await.unwrap();
    assert_eq!(
        counts,
        WriteCounts {
            upserted: 2,
            ..Default::default()
        }
    );
    let got = b
        .rows(&format!(
            "SELECT {SELECT}, is_deleted, _ebb_extracted_at FROM {t} ORDER BY id"
        ))
        .await;
    assert_eq!(
        got[0],
        [
            "c0001",
            "Name 1",
            "1",
            "1.00",
            "0.25",
            "false",
            "1990-01-02",
            "2026-11-28T10:00:00Z",
            r#"{"i":1,"tier":"gold"}"#,
            "false",
            "2026-11-28T10:30:00Z"
        ]
    );
    drop(w);
    // The derived types, the key as primary key.
    let types_sql = match &b.pg {
        Some(_) => format!(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'crm_customers' ORDER BY ordinal_position",
            b.schema
        ),
        None => "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'crm_customers' \
                 ORDER BY column_index"
            .into(),
    };
    let types: Vec<String> = b.rows(&types_sql).await.into_iter().map(|r| r.join(" ")).collect();
    let expected: &[&str] = if b.pg.is_some() {
        &[
            "id text",
            "name text",
            "n bigint",
            "amount numeric",
            "score double precision",
            "active boolean",
            "born date",
            "modified timestamp with time zone",
            "extra jsonb",
            "is_deleted boolean",
            "_ebb_extracted_at timestamp with time zone",
        ]
    } else {
        &[
            "id VARCHAR",
            "name VARCHAR",
            "n BIGINT",
            "amount DECIMAL(12,2)",
            "score DOUBLE",
            "active BOOLEAN",
            "born DATE",
            "modified TIMESTAMP WITH TIME ZONE",
            "extra JSON",
            "is_deleted BOOLEAN",
            "_ebb_extracted_at TIMESTAMP WITH TIME ZONE",
        ]
    };
    assert_eq!(types, expected);
    b.done().await;
}

#[tokio::test]
async fn duckdb_creates_the_table_when_missing() {
    creates_the_table_when_missing(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_creates_the_table_when_missing() {
    require_postgres!();
    creates_the_table_when_missing(Backend::postgres("create").await).await;
}

// --- upsert --------------------------------------------------------------------------

async fn upsert_is_idempotent(b: Backend) {
    let t = b.table("contacts");
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    let rows: Vec<TableRow> = (0..50).map(|i| row(i, 0)).collect();
    let first = w.write(rows.clone(), at(1)).await.unwrap();
    assert_eq!((first.upserted, first.skipped), (50, 0));
    let before = b
        .rows(&format!("SELECT {SELECT}, _ebb_extracted_at FROM {t} ORDER BY id"))
        .await;
    // The same rows again (a replayed window): nothing changes, not even the stamp.
    let again = w.write(rows, at(2)).await.unwrap();
    assert_eq!(
        again,
        WriteCounts {
            skipped: 50,
            ..Default::default()
        }
    );
    assert_eq!(
        b.rows(&format!("SELECT {SELECT}, _ebb_extracted_at FROM {t} ORDER BY id"))
            .await,
        before
    );
    // One changed row, a new one, and two versions of one key in one call: the last wins.
    let counts = w
        .write(vec![row(3, 7), row(50, 0), row(4, 1), row(4, 2)], at(3))
        .await
        .unwrap();
    assert_eq!(
        counts,
        WriteCounts {
            upserted: 3,
            skipped: 1,
            ..Default::default()
        }
    );
    assert_eq!(b.count(&t).await, 51);
    let changed = b
        .rows(&format!(
            "SELECT amount, modified, _ebb_extracted_at FROM {t} WHERE id IN ('c0003', 'c0004') ORDER BY id"
        ))
        .await;
    assert_eq!(
        changed,
        [
            ["3.07", "2026-11-28T10:07:00Z", "2026-11-28T10:03:00Z"],
            ["4.02", "2026-11-28T10:02:00Z", "2026-11-28T10:03:00Z"]
        ]
    );
    b.done().await;
}

#[tokio::test]
async fn duckdb_upsert_is_idempotent() {
    upsert_is_idempotent(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_upsert_is_idempotent() {
    require_postgres!();
    upsert_is_idempotent(Backend::postgres("upsert").await).await;
}

#[tokio::test]
async fn snowflake_upsert_is_idempotent() {
    require_postgres!();
    upsert_is_idempotent(Backend::snowflake("upsert").await).await;
}

// --- append --------------------------------------------------------------------------

async fn append_keeps_versions_and_a_replay_adds_none(b: Backend) {
    let t = b.table("contact_history");
    let mut w = b.open(spec(&t, Mode::Append, OnDeleted::Soft)).await;
    let window = vec![row(1, 0), row(2, 0), row(1, 5)];
    let counts = w.write(window.clone(), at(10)).await.unwrap();
    assert_eq!((counts.appended, counts.skipped), (3, 0));
    // The window read again, overlapping the next one.
    let counts = w.write([window, vec![row(1, 9)]].concat(), at(11)).await.unwrap();
    assert_eq!(
        counts,
        WriteCounts {
            appended: 1,
            skipped: 3,
            ..Default::default()
        }
    );
    let got = b
        .rows(&format!("SELECT id, amount, is_deleted FROM {t} ORDER BY id, modified"))
        .await;
    assert_eq!(
        got,
        [
            ["c0001", "1.00", "false"],
            ["c0001", "1.05", "false"],
            ["c0001", "1.09", "false"],
            ["c0002", "2.00", "false"]
        ]
    );
    // A deletion is a version too (soft).
    let counts = w.write(vec![deleted(row(2, 20))], at(12)).await.unwrap();
    assert_eq!((counts.deleted, counts.appended), (1, 0));
    assert_eq!(b.count(&t).await, 5);
    b.done().await;
}

#[tokio::test]
async fn duckdb_append_keeps_versions_and_a_replay_adds_none() {
    append_keeps_versions_and_a_replay_adds_none(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_append_keeps_versions_and_a_replay_adds_none() {
    require_postgres!();
    append_keeps_versions_and_a_replay_adds_none(Backend::postgres("append").await).await;
}

#[tokio::test]
async fn snowflake_append_keeps_versions_and_a_replay_adds_none() {
    require_postgres!();
    append_keeps_versions_and_a_replay_adds_none(Backend::snowflake("append").await).await;
}

// --- deletes -------------------------------------------------------------------------

async fn soft_and_hard_deletes(b: Backend) {
    let soft_t = b.table("soft");
    let mut w = b.open(spec(&soft_t, Mode::Upsert, OnDeleted::Soft)).await;
    w.write((0..5).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    let counts = w
        .write(vec![deleted(row(1, 3)), deleted(row(9, 3))], at(2))
        .await
        .unwrap();
    assert_eq!(
        counts,
        WriteCounts {
            deleted: 2,
            ..Default::default()
        }
    );
    let flags = b
        .rows(&format!(
            "SELECT id, is_deleted FROM {soft_t} WHERE is_deleted ORDER BY id"
        ))
        .await;
    assert_eq!(flags, [["c0001", "true"], ["c0009", "true"]]);
    // Deleting again changes nothing.
    let counts = w.write(vec![deleted(row(1, 3))], at(3)).await.unwrap();
    assert_eq!((counts.deleted, counts.skipped), (0, 1));
    drop(w);

    let hard_t = b.table("hard");
    let mut w = b.open(spec(&hard_t, Mode::Upsert, OnDeleted::Hard)).await;
    w.write((0..5).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    let counts = w
        .write(vec![deleted(row(1, 3)), deleted(row(9, 3)), row(2, 4)], at(2))
        .await
        .unwrap();
    assert_eq!(
        counts,
        WriteCounts {
            upserted: 1,
            deleted: 1,
            skipped: 1,
            ..Default::default()
        }
    );
    let ids = b.rows(&format!("SELECT id FROM {hard_t} ORDER BY id")).await;
    assert_eq!(ids.concat(), ["c0000", "c0002", "c0003", "c0004"]);
    // A hard table has no deleted column.
    assert!(matches!(w.check().await.unwrap(), TableCheck::Compatible));
    b.done().await;
}

#[tokio::test]
async fn duckdb_soft_and_hard_deletes() {
    soft_and_hard_deletes(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_soft_and_hard_deletes() {
    require_postgres!();
    soft_and_hard_deletes(Backend::postgres("deletes").await).await;
}

#[tokio::test]
async fn snowflake_soft_and_hard_deletes() {
    require_postgres!();
    soft_and_hard_deletes(Backend::snowflake("deletes").await).await;
}

// --- mirror --------------------------------------------------------------------------

async fn mirror_removes_unseen_keys_only_at_its_end(b: Backend) {
    let t = b.table("mirrored");
    let mut w = b.open(spec(&t, Mode::Mirror, OnDeleted::Hard)).await;
    w.write((0..6).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    // A full read that sees 0..3 only, in two calls; 4 and 5 stay until the end.
    w.mirror_begin().await.unwrap();
    w.write(vec![row(0, 0), row(1, 1)], at(2)).await.unwrap();
    w.write(vec![row(2, 0), row(3, 0)], at(2)).await.unwrap();
    assert_eq!(b.count(&t).await, 6);
    let end = w.mirror_end(at(2)).await.unwrap();
    assert_eq!(end.deleted, 2);
    assert_eq!(b.count(&t).await, 4);
    // A full read that fails before its end deletes nothing.
    w.mirror_begin().await.unwrap();
    w.write(vec![row(0, 0)], at(3)).await.unwrap();
    drop(w);
    assert_eq!(b.count(&t).await, 4);
    // Soft: the unseen rows are marked deleted.
    let mut w = b
        .open(spec(&b.table("mirrored_soft"), Mode::Mirror, OnDeleted::Soft))
        .await;
    w.write((0..3).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    w.mirror_begin().await.unwrap();
    w.write(vec![row(0, 0)], at(2)).await.unwrap();
    assert_eq!(w.mirror_end(at(2)).await.unwrap().deleted, 2);
    let got = b
        .rows(&format!(
            "SELECT id, is_deleted FROM {} ORDER BY id",
            b.table("mirrored_soft")
        ))
        .await;
    assert_eq!(got, [["c0000", "false"], ["c0001", "true"], ["c0002", "true"]]);
    b.done().await;
}

#[tokio::test]
async fn duckdb_mirror_removes_unseen_keys_only_at_its_end() {
    mirror_removes_unseen_keys_only_at_its_end(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_mirror_removes_unseen_keys_only_at_its_end() {
    require_postgres!();
    mirror_removes_unseen_keys_only_at_its_end(Backend::postgres("mirror").await).await;
}

#[tokio::test]
async fn snowflake_mirror_removes_unseen_keys_only_at_its_end() {
    require_postgres!();
    mirror_removes_unseen_keys_only_at_its_end(Backend::snowflake("mirror").await).await;
}

// --- failures ------------------------------------------------------------------------

async fn a_failing_row_commits_nothing(b: Backend) {
    let t = b.table("strict");
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    w.write(vec![row(1, 0)], at(1)).await.unwrap();
    // A text where the column is a bigint, after good rows.
    let mut bad = row(7, 0);
    bad.values[2] = Val::Str("seven".into());
    let e = w.write(vec![row(1, 5), row(2, 0), bad], at(2)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "table `{t}`, row with key `c0007`, column `n`: text cannot be written to a bigint column; \
             nothing of this call was written"
        )
    );
    // A JSON text that does not parse.
    let mut bad = row(8, 0);
    bad.values[8] = Val::Str("{not json".into());
    let e = w.write(vec![row(3, 0), bad], at(2)).await.unwrap_err();
    assert!(
        matches!(&e, TableError::Value { key, column, reason, .. }
            if key == "c0008" && column == "extra" && matches!(reason, CellError::NotJson(_))),
        "{e}"
    );
    // A value the database refuses mid-call (past the decimal's precision is caught
    // before; a key too long for an existing varchar(5) column is the database's).
    let rows = b.rows(&format!("SELECT id, amount FROM {t} ORDER BY id")).await;
    assert_eq!(rows, [["c0001", "1.00"]]);
    b.done().await;
}

#[tokio::test]
async fn duckdb_a_failing_row_commits_nothing() {
    a_failing_row_commits_nothing(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_a_failing_row_commits_nothing() {
    require_postgres!();
    a_failing_row_commits_nothing(Backend::postgres("failing").await).await;
}

#[tokio::test]
async fn snowflake_a_failing_row_commits_nothing() {
    require_postgres!();
    a_failing_row_commits_nothing(Backend::snowflake("failing").await).await;
}

/// A statement the database refuses after the rows were staged rolls the call back: a
/// CHECK constraint the staged values break.
async fn a_refused_statement_commits_nothing(b: Backend) {
    let t = b.table("checked");
    b.sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; CREATE TABLE {t} (id VARCHAR PRIMARY KEY, name VARCHAR, n BIGINT CHECK (n < 100), \
         amount DECIMAL(12,2), score DOUBLE PRECISION, active BOOLEAN, born DATE, modified TIMESTAMPTZ, extra {json}, \
         is_deleted BOOLEAN, _ebb_extracted_at TIMESTAMPTZ)",
        s = b.schema,
        json = if b.pg.is_some() { "jsonb" } else { "JSON" }
    ))
    .await;
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    assert_eq!(w.check().await.unwrap(), TableCheck::Compatible);
    w.write(vec![row(1, 0)], at(1)).await.unwrap();
    let e = w
        .write(vec![row(1, 9), row(2, 0), row(100, 0)], at(2))
        .await
        .unwrap_err();
    assert!(matches!(e, TableError::Database { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("table `{t}`: ")), "{e}");
    let rows = b.rows(&format!("SELECT id, amount FROM {t} ORDER BY id")).await;
    assert_eq!(rows, [["c0001", "1.00"]]);
    // The writer goes on after a failed call.
    w.write(vec![row(2, 0)], at(3)).await.unwrap();
    assert_eq!(b.count(&t).await, 2);
    b.done().await;
}

#[tokio::test]
async fn duckdb_a_refused_statement_commits_nothing() {
    a_refused_statement_commits_nothing(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_a_refused_statement_commits_nothing() {
    require_postgres!();
    a_refused_statement_commits_nothing(Backend::postgres("refused").await).await;
}

// --- incompatible tables ---------------------------------------------------------------

async fn an_incompatible_table_is_refused_with_its_column(b: Backend) {
    let (int, json) = if b.pg.is_some() {
        ("integer", "jsonb")
    } else {
        ("INTEGER", "JSON")
    };
    let base = |n_type: &str, key: &str| {
        format!(
            "id VARCHAR {key}, name VARCHAR, n {n_type}, amount DECIMAL(12,2), score DOUBLE PRECISION, active BOOLEAN, \
             born DATE, modified TIMESTAMPTZ, extra {json}, is_deleted BOOLEAN, _ebb_extracted_at TIMESTAMPTZ"
        )
    };
    b.sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE {s}.narrow ({narrow}); \
         CREATE TABLE {s}.nokey ({nokey}); \
         CREATE TABLE {s}.short (id VARCHAR PRIMARY KEY, name VARCHAR); \
         CREATE TABLE {s}.extra ({ok}, required_col VARCHAR NOT NULL); \
         CREATE TABLE {s}.fine ({ok}, optional_col VARCHAR)",
        s = b.schema,
        narrow = base(int, "PRIMARY KEY"),
        nokey = base("BIGINT", ""),
        ok = base("BIGINT", "PRIMARY KEY"),
    ))
    .await;
    let s = &b.schema;
    let cases = [
        ("narrow", "column `n` of `S.narrow`: a 32-bit integer cannot hold every bigint value"),
        (
            "nokey",
            "`S.nokey` has no primary key or unique constraint on the key column `id` alone (upsert mode updates rows by key)",
        ),
        ("short", "`S.short` has no column `n` (mapped as bigint)"),
        ("extra", "column `required_col` of `S.extra` is NOT NULL without a default and is not mapped"),
    ];
    for (table, reason) in cases {
        let reason = reason.replace("S.", &format!("{s}."));
        let mut w = b.open(spec(&b.table(table), Mode::Upsert, OnDeleted::Soft)).await;
        match w.check().await.unwrap() {
            TableCheck::Incompatible(m) => assert_eq!(m.to_string(), reason, "{table}"),
            other => panic!("{table}: {other:?}"),
        }
        let e = w.ensure().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("table `{}` cannot take these rows: {reason}", b.table(table))
        );
        assert!(w.write(vec![row(1, 0)], at(1)).await.is_err());
    }
    // Extra nullable columns are fine; the table is written as it is.
    let mut w = b.open(spec(&b.table("fine"), Mode::Upsert, OnDeleted::Soft)).await;
    assert_eq!(w.check().await.unwrap(), TableCheck::Compatible);
    w.write(vec![row(1, 0)], at(1)).await.unwrap();
    drop(w);
    assert_eq!(b.count(&b.table("fine")).await, 1);
    b.done().await;
}

#[tokio::test]
async fn duckdb_an_incompatible_table_is_refused_with_its_column() {
    an_incompatible_table_is_refused_with_its_column(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_an_incompatible_table_is_refused_with_its_column() {
    require_postgres!();
    an_incompatible_table_is_refused_with_its_column(Backend::postgres("incompatible").await).await;
}

// --- identifiers ---------------------------------------------------------------------

async fn identifiers_that_need_quotes(b: Backend) {
    let schema = format!("{} Odd.Schema", b.schema);
    let table = format!("\"{schema}\".\"Weird \"\"Table\"\"\"");
    let spec = TableSpec {
        connection: "w".into(),
        table: table.clone(),
        key: "Key Col".into(),
        mode: Mode::Upsert,
        on_deleted: OnDeleted::Soft,
        deleted_column: "deleted?".into(),
        version_column: None,
        columns: vec![
            col("Key Col", ColumnType::Text),
            col("select", ColumnType::Bigint),
            col("a\"b", ColumnType::Text),
        ],
        delete_by_key: false,
    };
    let mut w = b.open(spec.clone()).await;
    let values = |k: &str, n: i64, t: &str| TableRow {
        values: vec![Val::Str(k.into()), Val::Int(n), Val::Str(t.into())],
        deleted: false,
    };
    w.write(
        vec![values("x'; DROP TABLE t; --", 1, "it's"), values("b", 2, "\"q\"")],
        at(1),
    )
    .await
    .unwrap();
    w.write(vec![values("b", 3, "\"q\"")], at(2)).await.unwrap();
    let quoted = format!("\"{}\".\"Weird \"\"Table\"\"\"", schema.replace('"', "\"\""));
    let got = b
        .rows(&format!(
            "SELECT \"Key Col\", \"select\", \"a\"\"b\", \"deleted?\" FROM {quoted} ORDER BY \"Key Col\""
        ))
        .await;
    assert_eq!(
        got,
        [
            ["b", "3", "\"q\"", "false"],
            ["x'; DROP TABLE t; --", "1", "it's", "false"]
        ]
    );
    drop(w);
    if b.pg.is_some() {
        b.sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
    }
    b.done().await;
}

#[tokio::test]
async fn duckdb_identifiers_that_need_quotes() {
    identifiers_that_need_quotes(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_identifiers_that_need_quotes() {
    require_postgres!();
    identifiers_that_need_quotes(Backend::postgres("quotes").await).await;
}

// --- connections ---------------------------------------------------------------------

#[tokio::test]
async fn a_snowflake_connection_without_its_key_and_a_read_only_one_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sf: ConnectionSpec = serde_json::from_value(serde_json::json!({
        "type": "snowflake", "account": "xy12345", "user": "u", "private_key_path": "k.pem"
    }))
    .unwrap();
    let e = TableWriter::open(spec("raw.t", Mode::Upsert, OnDeleted::Soft), &sf, dir.path())
        .await
        .unwrap_err();
    let e = e.to_string();
    assert!(
        e.starts_with("connection `w`: authentication failed: cannot read the private key `") && e.contains("k.pem"),
        "{e}"
    );
    let ro = ConnectionSpec::Duckdb(DuckdbConnection {
        path: "w.duckdb".into(),
        read_only: Some(true),
        memory_limit: None,
        external_access: None,
    });
    let e = TableWriter::open(spec("raw.t", Mode::Upsert, OnDeleted::Soft), &ro, dir.path())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "connection `w`: the connection is `read_only: true`");
}

// --- DuckDB: one writer ---------------------------------------------------------------

/// What DuckDB 1.2 does on its own: a read-only instance of a file that a read-write
/// instance of the same process has open is NOT refused (its locks are the process's), and
/// it does not see what the writer commits after it opened. This is why the source and the
/// writer share one instance (`duckdb_files`).
#[test]
fn duckdb_alone_lets_a_second_instance_open_the_file_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let writer = duckdb::Connection::open(&path).unwrap();
    writer
        .execute_batch("CREATE TABLE t (i BIGINT); INSERT INTO t VALUES (1); CHECKPOINT")
        .unwrap();
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap();
    let reader = duckdb::Connection::open_with_flags(&path, config).expect("not refused: the lock is the process's");
    writer.execute_batch("INSERT INTO t VALUES (2); CHECKPOINT").unwrap();
    let n: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "the second instance reads a stale file");
}

#[tokio::test]
async fn duckdb_source_reads_while_the_writer_writes() {
    let b = Backend::duckdb();
    let t = b.table("live");
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    w.write((0..10).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    // A query of the source, through the writer's instance, sees every commit.
    let src = Source::open("test", &b.connection, b.dir.path()).unwrap();
    let mut stream = src.query(&format!("SELECT id FROM {t} ORDER BY id"), 0).await.unwrap();
    // A write while the query's stream is open.
    w.write((10..20).map(|i| row(i, 0)).collect(), at(2)).await.unwrap();
    let mut n = 0;
    while let Some(batch) = stream.next().await {
        n += batch.unwrap().num_rows();
    }
    assert!(n == 10 || n == 20, "the query reads one snapshot: {n}");
    assert_eq!(b.count(&t).await, 20);
    // The shared instance is confined as the source's own: no file outside the project,
    // no change of settings.
    let outside = tempfile::tempdir().unwrap();
    let csv = outside.path().join("x.csv");
    std::fs::write(&csv, "a\n1\n").unwrap();
    let read_outside = format!("SELECT * FROM read_csv('{}')", csv.display());
    for sql in [read_outside.as_str(), "SET enable_external_access = true"] {
        let refused = match src.query(sql, 0).await {
            Err(_) => true,
            Ok(mut s) => matches!(s.next().await, Some(Err(_))),
        };
        assert!(refused, "{sql}");
    }
    // Two writers of one file in this process share the instance too.
    let mut w2 = b.open(spec(&b.table("other"), Mode::Upsert, OnDeleted::Hard)).await;
    w2.write(vec![row(1, 0)], at(3)).await.unwrap();
    drop(w);
    drop(w2);
    // With no writer left, the file is closed: another instance opens it read-write.
    let conn = duckdb::Connection::open(b.path()).unwrap();
    let n: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);
}

#[tokio::test]
async fn duckdb_a_writer_waits_for_the_process_s_own_read_only_queries() {
    let b = Backend::duckdb();
    b.sql("CREATE SCHEMA raw; CREATE TABLE raw.src AS SELECT range AS i FROM range(100000)")
        .await;
    // A query on a read-only instance of its own, not read to its end yet.
    let src = Source::open("test", &b.connection, b.dir.path()).unwrap();
    let mut stream = src.query("SELECT i FROM raw.src", 0).await.unwrap();
    let first = stream.next().await.unwrap().unwrap().num_rows();
    assert!(first > 0);
    let opening = tokio::spawn({
        let connection = b.connection.clone();
        let dir: PathBuf = b.dir.path().to_path_buf();
        async move {
            let start = std::time::Instant::now();
            let w = TableWriter::open(spec("raw.t", Mode::Upsert, OnDeleted::Soft), &connection, &dir)
                .await
                .unwrap();
            (w, start.elapsed())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!opening.is_finished(), "the writer waits for the read-only instance");
    while let Some(b) = stream.next().await {
        b.unwrap();
    }
    drop(stream);
    let (mut w, waited) = opening.await.unwrap();
    assert!(waited >= std::time::Duration::from_millis(250), "{waited:?}");
    w.write(vec![row(1, 0)], at(1)).await.unwrap();
    assert_eq!(b.count("raw.t").await, 1);
    let _ = Path::new("");
}

// --- a first load into DuckDB: the key deferred ----------------------------------------

/// The table's primary-key columns and its comment, read with a connection of its own.
/// DuckDB's `checkpoint_threshold` in the instance a source query of the backend's file
/// gets (the writer's, while one is open).
async fn checkpoint_threshold(b: &Backend) -> String {
    b.rows("SELECT current_setting('checkpoint_threshold')").await[0][0].clone()
}

fn duckdb_key_and_comment(b: &Backend, table: &str) -> (Vec<String>, Option<String>) {
    let c = duckdb::Connection::open(b.path()).unwrap();
    let keys: Vec<String> = c
        .prepare(&format!(
            "SELECT unnest(constraint_column_names) FROM duckdb_constraints() \
             WHERE table_name = '{table}' AND constraint_type = 'PRIMARY KEY'"
        ))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let comment = c
        .query_row(
            &format!("SELECT comment FROM duckdb_tables() WHERE table_name = '{table}'"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    (keys, comment)
}

#[tokio::test]
async fn duckdb_a_first_load_defers_the_key_and_adds_it_at_the_end() {
    let b = Backend::duckdb();
    let t = b.table("first");
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    w.defer_key();
    w.ensure().await.unwrap();
    assert_eq!(w.check().await.unwrap(), TableCheck::Compatible);
    // The writer's instance checkpoints at 256 MiB of log, not 16 (each checkpoint
    // recompresses the table's last row group).
    assert_eq!(checkpoint_threshold(&b).await, "256.0 MiB");
    // Three writes; the second soft-deletes a new key (only the insert of new rows runs);
    // the third repeats keys of the first, one changed, one not, and soft-deletes one:
    // those go through the merge.
    let c1 = w.write((0..100).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    let c2 = w
        .write(
            (100..200)
                .map(|i| if i == 150 { deleted(row(i, 0)) } else { row(i, 0) })
                .collect(),
            at(1),
        )
        .await
        .unwrap();
    let c3 = w
        .write(vec![row(5, 9), row(6, 0), deleted(row(7, 0)), row(200, 0)], at(2))
        .await
        .unwrap();
    assert_eq!((c1.upserted, c2.upserted, c2.deleted), (100, 99, 1));
    assert_eq!(
        c3,
        WriteCounts {
            upserted: 2,
            deleted: 1,
            skipped: 1,
            ..Default::default()
        }
    );
    drop(w);
    let (keys, comment) = duckdb_key_and_comment(&b, "first");
    assert!(keys.is_empty(), "no key during the load: {keys:?}");
    assert_eq!(comment.as_deref(), Some("ebb: primary key pending (first load)"));
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    // A writer opening a table left pending (the load's run was killed) adds the key.
    w.ensure().await.unwrap();
    drop(w);
    let (keys, comment) = duckdb_key_and_comment(&b, "first");
    assert_eq!(keys, ["id"]);
    assert_eq!(comment, None);
    assert_eq!(b.count(&t).await, 201);
    let got = b
        .rows(&format!(
            "SELECT id, amount, is_deleted FROM {t} WHERE id IN ('c0005', 'c0006', 'c0007', 'c0150') ORDER BY id"
        ))
        .await;
    assert_eq!(
        got,
        [
            ["c0005", "5.09", "false"],
            ["c0006", "6.00", "false"],
            ["c0007", "7.00", "true"],
            ["c0150", "150.00", "true"]
        ]
    );

    // The usual end: `finish` adds the key.
    let t2 = b.table("second");
    let mut w = b.open(spec(&t2, Mode::Mirror, OnDeleted::Hard)).await;
    w.defer_key();
    w.mirror_begin().await.unwrap();
    w.write((0..50).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    w.write((40..60).map(|i| row(i, 1)).collect(), at(1)).await.unwrap();
    assert_eq!(w.mirror_end(at(1)).await.unwrap().deleted, 0);
    w.finish().await.unwrap();
    drop(w);
    assert_eq!(duckdb_key_and_comment(&b, "second"), (vec!["id".to_string()], None));
    assert_eq!(b.count(&t2).await, 60);
    // An existing table is never reshaped: the key stays, rows merge.
    let mut w = b.open(spec(&t2, Mode::Upsert, OnDeleted::Hard)).await;
    w.defer_key();
    let c = w.write((55..65).map(|i| row(i, 1)).collect(), at(2)).await.unwrap();
    assert_eq!((c.upserted, c.skipped), (5, 5));
    drop(w);
    assert_eq!(b.count(&t2).await, 65);
}

// --- throughput ----------------------------------------------------------------------

/// Rows per second writing 1M rows of nine columns in calls of 100,000, into an empty
/// table and again (every row unchanged). Run with
/// `cargo test --release --test integration table::throughput -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check: prints figures"]
async fn throughput() {
    const N: u32 = 1_000_000;
    const CALL: u32 = 100_000;
    let mut backends = vec![("duckdb", Backend::duckdb())];
    if crate::support::postgres() {
        backends.push(("postgres", Backend::postgres("bench").await));
    }
    for (name, b) in backends {
        let t = b.table("bench");
        let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
        w.ensure().await.unwrap();
        for pass in ["insert", "unchanged"] {
            // Only the writes are timed, not making the rows.
            let mut took = std::time::Duration::ZERO;
            let mut total = WriteCounts::default();
            for c in 0..N / CALL {
                let rows: Vec<TableRow> = (c * CALL..(c + 1) * CALL).map(|i| row(i, 0)).collect();
                let start = std::time::Instant::now();
                total += w.write(rows, at(1)).await.unwrap();
                took += start.elapsed();
            }
            let s = took.as_secs_f64();
            println!(
                "{name} {pass}: {N} rows × 9 columns in {s:.2}s = {:.0} rows/s ({total:?})",
                f64::from(N) / s
            );
        }
        drop(w);
        b.done().await;
    }
}

// --- set_where (a person's decision written back) ------------------------------------

async fn set_where_casts_text_to_each_columns_type(b: Backend) {
    let t = b.table("contacts_set");
    let mut w = b.open(spec(&t, Mode::Upsert, OnDeleted::Soft)).await;
    w.write((0..3).map(|i| row(i, 0)).collect(), at(1)).await.unwrap();
    let n = w
        .set_where(
            "id",
            "c0001",
            vec![
                ("name".into(), Some("Set".into())),
                ("amount".into(), Some("12.50".into())),
                ("modified".into(), Some("2026-11-28T11:00:00Z".into())),
                ("active".into(), None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        b.rows(&format!(
            "SELECT id, name, amount, modified, active FROM {t} ORDER BY id"
        ))
        .await,
        [
            ["c0000", "Name 0", "0.00", "2026-11-28T10:00:00Z", "true"],
            ["c0001", "Set", "12.50", "2026-11-28T11:00:00Z", "NULL"],
            ["c0002", "Name 2", "2.00", "2026-11-28T10:00:00Z", "true"],
        ]
    );
    // No such row: nothing changes; no such column: an error naming it.
    assert_eq!(w.set_where("id", "zzz", vec![("name".into(), None)]).await.unwrap(), 0);
    let e = w
        .set_where("id", "c0001", vec![("nope".into(), None)])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no column `nope`"), "{e}");
    b.done().await;
}

#[tokio::test]
async fn duckdb_set_where_casts_text_to_each_columns_type() {
    set_where_casts_text_to_each_columns_type(Backend::duckdb()).await;
}

#[tokio::test]
async fn postgres_set_where_casts_text_to_each_columns_type() {
    require_postgres!();
    set_where_casts_text_to_each_columns_type(Backend::postgres("set").await).await;
}

#[tokio::test]
async fn snowflake_set_where_casts_text_to_each_columns_type() {
    require_postgres!();
    set_where_casts_text_to_each_columns_type(Backend::snowflake("set").await).await;
}

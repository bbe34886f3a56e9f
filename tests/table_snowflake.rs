//! Snowflake tables as a destination, through the SQL API server running statements on a
//! PostgreSQL database of its own (tests/snowflake_pg.rs; every statement ebb sends must
//! also parse as Snowflake SQL). The behaviours every warehouse shares are in
//! tests/table.rs; here what is Snowflake's own: names stored upper case, Snowflake's
//! types, requests under the API's 1 MB with one transaction a write, values that could
//! end a literal.

use chrono::{TimeZone, Utc};
use ebb::config::project::{ConnectionSpec, SnowflakeConnection};
use ebb::destination::table::types::ColumnType;
use ebb::destination::table::{
    Column, Mode, OnDeleted, TableCheck, TableRow, TableSpec, TableWriter, WriteCounts, DELETED_COLUMN,
};
use ebb::map::value::Val;

pub const KEY: &str = include_str!("fixtures/keys/snowflake_test_key.p8");

/// A Snowflake connection to the test server at `url`.
pub fn connection(url: &str) -> ConnectionSpec {
    ConnectionSpec::Snowflake(SnowflakeConnection {
        account: "xy12345.eu-central-1".into(),
        user: "ebb_sync".into(),
        private_key: Some(KEY.into()),
        private_key_path: None,
        database: Some("ANALYTICS".into()),
        schema: Some("PUBLIC".into()),
        warehouse: Some("SYNC_WH".into()),
        role: None,
        url: Some(url.into()),
    })
}

async fn server(tag: &str) -> crate::snowflake_server::Server {
    crate::snowflake_server::Server::start_postgres("XY12345", "EBB_SYNC", KEY, tag).await
}

fn spec(table: &str, columns: Vec<Column>) -> TableSpec {
    TableSpec {
        connection: "sf".into(),
        table: table.into(),
        key: columns[0].name.clone(),
        mode: Mode::Upsert,
        on_deleted: OnDeleted::Soft,
        deleted_column: DELETED_COLUMN.into(),
        version_column: None,
        columns,
        delete_by_key: false,
    }
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), ty }
}

/// The rows of `sql` as text, read back through ebb's Snowflake source.
async fn rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    crate::table::read_rows(&connection(url), ".".as_ref(), sql).await
}

#[tokio::test]
async fn unquoted_names_are_stored_upper_case_with_snowflakes_types() {
    require_postgres!();
    let srv = server("names").await;
    let columns = crate::table::columns();
    let mut w = TableWriter::open(
        spec("raw.crm_customers", columns.clone()),
        &connection(&srv.url),
        ".".as_ref(),
    )
    .await
    .unwrap();
    assert_eq!(w.check().await.unwrap(), TableCheck::Missing);
    let counts = w
        .write(vec![crate::table::row(1, 0)], crate::table::at(30))
        .await
        .unwrap();
    assert_eq!(
        counts,
        WriteCounts {
            upserted: 1,
            ..Default::default()
        }
    );
    let types = rows(
        &srv.url,
        "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns \
         WHERE table_schema = 'RAW' AND table_name = 'CRM_CUSTOMERS' ORDER BY ordinal_position",
    )
    .await;
    let types: Vec<String> = types.into_iter().map(|r| r.join(" ")).collect();
    assert_eq!(
        types,
        [
            "ID TEXT NULL NULL",
            "NAME TEXT NULL NULL",
            "N NUMBER 38 0",
            "AMOUNT NUMBER 12 2",
            "SCORE FLOAT NULL NULL",
            "ACTIVE BOOLEAN NULL NULL",
            "BORN DATE NULL NULL",
            "MODIFIED TIMESTAMP_TZ NULL NULL",
            "EXTRA VARIANT NULL NULL",
            "IS_DELETED BOOLEAN NULL NULL",
            "_EBB_EXTRACTED_AT TIMESTAMP_TZ NULL NULL",
        ]
    );
    let got = rows(
        &srv.url,
        r#"SELECT "ID", "N", "AMOUNT", "SCORE", "BORN", "MODIFIED", "EXTRA", "IS_DELETED", "_EBB_EXTRACTED_AT"
           FROM "RAW"."CRM_CUSTOMERS""#,
    )
    .await;
    assert_eq!(
        got,
        [[
            "c0001",
            "1",
            "1.00",
            "0.25",
            "1990-01-02",
            "2026-11-28T10:00:00Z",
            r#"{"i":1,"tier":"gold"}"#,
            "false",
            "2026-11-28T10:30:00Z"
        ]]
    );
    drop(w);
    // A writer naming the table and columns in another case finds the same ones.
    let mut again = TableWriter::open(spec("RAW.Crm_Customers", columns), &connection(&srv.url), ".".as_ref())
        .await
        .unwrap();
    assert_eq!(again.check().await.unwrap(), TableCheck::Compatible);
    // Every statement ebb sent parsed as Snowflake SQL (the server refuses others).
    assert!(srv
        .ran()
        .iter()
        .any(|s| s.starts_with("CREATE TABLE IF NOT EXISTS \"RAW\".\"CRM_CUSTOMERS\"")));
}

#[tokio::test]
async fn values_that_could_end_a_literal_arrive_intact() {
    require_postgres!();
    let srv = server("hostile").await;
    let mut w = TableWriter::open(
        spec(
            "raw.notes",
            vec![col("id", ColumnType::Text), col("note", ColumnType::Text)],
        ),
        &connection(&srv.url),
        ".".as_ref(),
    )
    .await
    .unwrap();
    let hostile = [
        "$$; DROP TABLE raw.notes; $$",
        "it's a 'quote'",
        r"back\slash \n \u0024",
        "semi; colon ? mark",
        "ünïcödé ✓ 🚀",
        "line\nbreak\ttab",
        "$",
        "",
    ];
    let batch: Vec<TableRow> = hostile
        .iter()
        .enumerate()
        .map(|(i, v)| TableRow {
            values: vec![Val::Str(format!("k{i}")), Val::Str(v.to_string())],
            deleted: false,
        })
        .collect();
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
    assert_eq!(w.write(batch.clone(), at).await.unwrap().upserted, hostile.len() as u64);
    let got = rows(&srv.url, r#"SELECT "ID", "NOTE" FROM "RAW"."NOTES" ORDER BY "ID""#).await;
    let want: Vec<Vec<String>> = hostile
        .iter()
        .enumerate()
        .map(|(i, v)| vec![format!("k{i}"), v.to_string()])
        .collect();
    assert_eq!(got, want);
    // The same rows again change nothing.
    assert_eq!(w.write(batch, at).await.unwrap().skipped, hostile.len() as u64);
}

#[tokio::test]
async fn a_large_write_is_cut_under_one_megabyte_a_request_and_stays_one_transaction() {
    require_postgres!();
    let srv = server("large").await;
    let columns = vec![col("id", ColumnType::Text), col("body", ColumnType::Text)];
    let mut w = TableWriter::open(spec("raw.large", columns), &connection(&srv.url), ".".as_ref())
        .await
        .unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
    let make = |n: usize, tag: &str| -> Vec<TableRow> {
        (0..n)
            .map(|i| TableRow {
                values: vec![
                    Val::Str(format!("k{i:05}")),
                    Val::Str(format!("{tag}{}", "x".repeat(500))),
                ],
                deleted: false,
            })
            .collect()
    };
    w.ensure().await.unwrap();
    let before = srv.requests().len();
    let counts = w.write(make(5000, "a"), at).await.unwrap();
    assert_eq!(counts.upserted, 5000);
    let posts = srv.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("POST"))
        .count();
    // ~2.6 MB of rows: 5 staging requests and the merge.
    assert!(posts >= 5, "{posts} requests");
    let largest = srv.statement_sizes().into_iter().max().unwrap();
    assert!(largest < 1_000_000, "a request of {largest} bytes");
    let count = rows(&srv.url, r#"SELECT count(*) FROM "RAW"."LARGE""#).await;
    assert_eq!(count, [["5000"]]);
    // A write that fails in its merge (the key column refuses a value too long for it,
    // changed behind ebb's back) leaves the table as it was and no staging table.
    let (db, conn) = tokio_postgres::connect(&srv.database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db.batch_execute(r#"ALTER TABLE "RAW"."LARGE" ADD CONSTRAINT short CHECK (length("BODY") < 510)"#)
        .await
        .unwrap();
    let mut rows_b = make(5000, "b");
    rows_b[4999].values[1] = Val::Str("y".repeat(600));
    let e = w.write(rows_b, at).await.unwrap_err().to_string();
    assert!(e.contains("short"), "{e}");
    let changed = rows(&srv.url, r#"SELECT count(*) FROM "RAW"."LARGE" WHERE "BODY" LIKE 'b%'"#).await;
    assert_eq!(changed, [["0"]]);
    let left = rows(
        &srv.url,
        "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '\\_EBB\\_%'",
    )
    .await;
    assert_eq!(left, [["0"]]);
}

#[tokio::test]
async fn the_server_holds_ebb_to_the_sql_apis_rules() {
    require_postgres!();
    let srv = server("rules").await;
    // Through ebb's own client: a count that does not match, a BEGIN alone, bad syntax.
    let c = ebb::snowflake::Client::new(
        match &connection(&srv.url) {
            ConnectionSpec::Snowflake(c) => c,
            _ => unreachable!(),
        },
        ".".as_ref(),
    )
    .unwrap();
    let e = c.submit("SELECT 1; SELECT 2", 1, &[]).await.unwrap_err().to_string();
    assert!(e.contains("did not match the desired statement count 1"), "{e}");
    let e = c.submit("BEGIN", 1, &[]).await.unwrap_err().to_string();
    assert!(e.contains("Unsupported feature"), "{e}");
    let e = c.submit("SELEC 1", 1, &[]).await.unwrap_err().to_string();
    assert!(e.contains("syntax error"), "{e}");
    // PostgreSQL's own syntax, which the lenient parser takes, is refused as Snowflake does.
    let e = c
        .submit("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING", 1, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`ON CONFLICT` is PostgreSQL's, not Snowflake's"), "{e}");
    let rs = c.submit("SELECT ? AS a, 2 AS b", 1, &["x'y"]).await.unwrap();
    assert_eq!(rs.data.unwrap(), [[Some("x'y".to_string()), Some("2".to_string())]]);
}

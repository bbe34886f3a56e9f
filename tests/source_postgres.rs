//! The PostgreSQL source against the real server (EBB_TEST_POSTGRES_URL, else the local
//! one at 127.0.0.1:5432). Without a server they are skipped with one loud line, unless
//! `EBB_REQUIRE_POSTGRES` or `CI` is set, which makes that a failure (see `support::postgres`).

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit};
use ebb::config::project::{ConnectionSpec, PostgresConnection};
use ebb::source::{Source, SourceError, DECIMAL_TEXT, JSON_TEXT};

pub fn url() -> String {
    std::env::var("EBB_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn source(url: &str, fetch: Option<u32>) -> Source {
    let spec = ConnectionSpec::Postgres(PostgresConnection {
        url: url.to_string(),
        fetch_size: fetch,
    });
    Source::open("test", &spec, std::path::Path::new(".")).expect("a postgres source")
}

/// A fresh schema for one test, dropped at the end.
struct Scratch {
    client: tokio_postgres::Client,
    schema: String,
}

impl Scratch {
    async fn new(tag: &str) -> Scratch {
        let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be running at {} for these tests: {e}", url()));
        tokio::spawn(conn);
        let schema = format!("ebb_test_{tag}_{}", std::process::id());
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        Scratch { client, schema }
    }

    async fn drop(self) {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_type_and_null_round_trips() {
    require_postgres!();
    let s = Scratch::new("types").await;
    let t = format!("{}.t", s.schema);
    s.client
        .batch_execute(&format!(
            "CREATE TABLE {t} (
                id bigint, small smallint, i int, ltv numeric(12,2), big numeric, score double precision,
                name text, code varchar(8), active boolean, born date, seen timestamp, at timestamptz,
                scores jsonb, raw json, uid uuid, blob bytea);
             INSERT INTO {t} VALUES
               (1, -2, 3, 1234567.89, 123456789012345678901234567890.123456789, 0.25, 'Ada', 'A1', true,
                '1990-05-17', '2026-11-28 10:11:12.345678', '2026-11-28 10:11:12+02',
                '{{\"upsell\": 0.7, \"tags\": [\"a\"]}}', '{{\"k\": 1}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff'),
               (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"
        ))
        .await
        .unwrap();
    let src = source(&url(), None);
    let mut stream = src
        .query(&format!("SELECT * FROM {t} ORDER BY id"), 1000)
        .await
        .unwrap();
    let schema = stream.schema();
    let types: Vec<DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        vec![
            DataType::Int64,
            DataType::Int16,
            DataType::Int32,
            DataType::Decimal128(12, 2),
            DataType::Utf8,
            DataType::Float64,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Binary,
        ]
    );
    assert!(schema.field(4).metadata().contains_key(DECIMAL_TEXT));
    assert!(schema.field(12).metadata().contains_key(JSON_TEXT));
    let batch = stream.next().await.unwrap().unwrap();
    assert!(stream.next().await.is_none());
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(batch.column(1).as_primitive::<Int16Type>().value(0), -2);
    assert_eq!(batch.column(2).as_primitive::<Int32Type>().value(0), 3);
    // Currency stays exact: 1234567.89 is 123456789 hundredths.
    assert_eq!(batch.column(3).as_primitive::<Decimal128Type>().value(0), 123_456_789);
    assert_eq!(
        batch.column(4).as_string::<i32>().value(0),
        "123456789012345678901234567890.123456789"
    );
    assert_eq!(batch.column(5).as_primitive::<Float64Type>().value(0), 0.25);
    assert_eq!(batch.column(6).as_string::<i32>().value(0), "Ada");
    assert!(batch.column(8).as_boolean().value(0));
    let born = batch.column(9).as_primitive::<arrow::datatypes::Date32Type>().value(0);
    assert_eq!(
        chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(born.into()),
        chrono::NaiveDate::from_ymd_opt(1990, 5, 17).unwrap()
    );
    let seen = batch
        .column(10)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .value(0);
    assert_eq!(
        chrono::DateTime::from_timestamp_micros(seen).unwrap().to_rfc3339(),
        "2026-11-28T10:11:12.345678+00:00"
    );
    let at = batch
        .column(11)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .value(0);
    assert_eq!(
        chrono::DateTime::from_timestamp_micros(at).unwrap().to_rfc3339(),
        "2026-11-28T08:11:12+00:00"
    );
    let scores: serde_json::Value = serde_json::from_str(batch.column(12).as_string::<i32>().value(0)).unwrap();
    assert_eq!(scores["upsell"], 0.7);
    assert_eq!(
        batch.column(14).as_string::<i32>().value(0),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    assert_eq!(batch.column(15).as_binary::<i32>().value(0), &[0x00, 0xff]);
    // Row 2: every column but the id is NULL.
    for c in 1..batch.num_columns() {
        assert!(batch.column(c).is_null(1), "column {c} of row 2 is not NULL");
    }
    s.drop().await;
}

#[tokio::test]
async fn large_results_stream_in_fetch_sized_batches() {
    require_postgres!();
    let src = source(&url(), Some(10_000));
    let mut stream = src
        .query("SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 25000) g", 0)
        .await
        .unwrap();
    let mut sizes = Vec::new();
    while let Some(b) = stream.next().await {
        sizes.push(b.unwrap().num_rows());
    }
    assert_eq!(sizes, [10_000, 10_000, 5_000]);
}

#[tokio::test]
async fn an_empty_result_has_a_schema_and_no_rows() {
    require_postgres!();
    let src = source(&url(), None);
    let mut stream = src
        .query("SELECT 1::bigint AS id, 'x'::text AS name WHERE false", 100)
        .await
        .unwrap();
    assert_eq!(stream.schema().fields().len(), 2);
    assert!(stream.next().await.is_none());
    let described = src.describe("SELECT 1::bigint AS id, 'x'::text AS name").await.unwrap();
    assert_eq!(described.field(1).name(), "name");
}

#[tokio::test]
async fn a_bad_query_says_what_postgres_said() {
    require_postgres!();
    let src = source(&url(), None);
    let err = src
        .query("SELECT nope FROM pg_class", 100)
        .await
        .err()
        .expect("an error");
    match err {
        SourceError::Query(m) => assert!(m.contains("column \"nope\" does not exist"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unsupported_types_name_the_column_and_a_cast() {
    require_postgres!();
    let src = source(&url(), None);
    let err = src
        .query("SELECT ARRAY[1,2] AS tags", 100)
        .await
        .err()
        .expect("an error");
    assert!(err.to_string().contains("column `tags`"), "{err}");
    assert!(err.to_string().contains("to_json(tags)"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_or_unknown_user_is_one_clear_sentence() {
    require_postgres!();
    let src = source("postgres://postgres@127.0.0.1:1/postgres", None);
    let err = src.query("SELECT 1", 10).await.err().expect("an error");
    assert!(matches!(err, SourceError::Connect(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot connect: 127.0.0.1:1/postgres: "),
        "{err}"
    );
    let bad_user = url().replacen("postgres@", "ebb_no_such_role@", 1);
    let err = source(&bad_user, None)
        .query("SELECT 1", 10)
        .await
        .err()
        .expect("an error");
    assert!(matches!(err, SourceError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("ebb_no_such_role"), "{err}");
}

async fn encrypted(url: &str) -> bool {
    let mut stream = source(url, None)
        .query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", 10)
        .await
        .unwrap();
    let b = stream.next().await.unwrap().unwrap();
    b.column(0).as_boolean().value(0)
}

#[tokio::test]
async fn sslmode_require_encrypts_and_disable_does_not() {
    require_postgres!();
    let base = url();
    let sep = if base.contains('?') { '&' } else { '?' };
    assert!(
        encrypted(&format!("{base}{sep}sslmode=require")).await,
        "sslmode=require must use TLS"
    );
    assert!(!encrypted(&format!("{base}{sep}sslmode=disable")).await);
}

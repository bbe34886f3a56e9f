//! The Snowflake source against the in-process SQL API server (tests/snowflake_server.rs).

use crate::snowflake_server::{Canned, Server};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType};
use ebb::config::project::{ConnectionSpec, SnowflakeConnection};
use ebb::source::{Source, SourceError, DECIMAL_TEXT, JSON_TEXT};
use serde_json::json;

const KEY: &str = include_str!("fixtures/keys/snowflake_test_key.p8");

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn source(url: &str, key: &str) -> Source {
    let spec = ConnectionSpec::Snowflake(SnowflakeConnection {
        account: "xy12345.eu-central-1".into(),
        user: "ebb_sync".into(),
        private_key: Some(key.into()),
        private_key_path: None,
        database: Some("ANALYTICS".into()),
        schema: Some("PRESENTATION".into()),
        warehouse: Some("SYNC_WH".into()),
        role: None,
        url: Some(url.into()),
    });
    Source::open("test", &spec, std::path::Path::new(".")).unwrap()
}

async fn server() -> Server {
    Server::start("XY12345", "EBB_SYNC", KEY).await
}

fn all_types() -> Canned {
    Canned {
        row_type: vec![
            json!({"name": "ID", "type": "fixed", "precision": 18, "scale": 0, "nullable": false}),
            json!({"name": "LTV", "type": "fixed", "precision": 12, "scale": 2, "nullable": true}),
            json!({"name": "BIG", "type": "fixed", "precision": 38, "scale": 0, "nullable": true}),
            json!({"name": "SCORE", "type": "real", "nullable": true}),
            json!({"name": "NAME", "type": "text", "nullable": true}),
            json!({"name": "ACTIVE", "type": "boolean", "nullable": true}),
            json!({"name": "BORN", "type": "date", "nullable": true}),
            json!({"name": "SEEN", "type": "timestamp_ntz", "scale": 9, "nullable": true}),
            json!({"name": "AT_LTZ", "type": "timestamp_ltz", "scale": 9, "nullable": true}),
            json!({"name": "AT_TZ", "type": "timestamp_tz", "scale": 9, "nullable": true}),
            json!({"name": "SCORES", "type": "variant", "nullable": true}),
            json!({"name": "BLOB", "type": "binary", "nullable": true}),
        ],
        partitions: vec![vec![
            vec![
                s("1"),
                s("1234567.89"),
                s("12345678901234567890123456789012345678"),
                s("0.25"),
                s("Ada"),
                s("true"),
                s("7441"),
                s("1764324672.345678000"),
                s("1764324672.000000000"),
                s("1764324672.000000000 1560"),
                s("{\"upsell\": 0.7}"),
                s("00ff"),
            ],
            vec![s("2"), None, None, None, None, None, None, None, None, None, None, None],
        ]],
        async_polls: 0,
        stats: None,
    }
}

#[tokio::test]
async fn fingerprint_matches_openssl() {
    // `openssl rsa -in key -pubout -outform DER | openssl dgst -sha256 -binary | base64`
    let key = <rsa::PrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(KEY).unwrap();
    assert_eq!(
        ebb::source::snowflake::public_key_fingerprint(&key).unwrap(),
        "SHA256:jgt1IC6gHS1ih0pfm4m1ikpqMtZ81WgC/nOU5us6cOE="
    );
}

#[tokio::test]
async fn string_cells_convert_by_row_type() {
    let srv = server().await;
    srv.add("SELECT * FROM CUSTOMERS", all_types());
    let src = source(&srv.url, KEY);
    let mut stream = src.query("SELECT * FROM CUSTOMERS", 0).await.unwrap();
    let schema = stream.schema();
    let types: Vec<DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        vec![
            DataType::Int64,
            DataType::Decimal128(12, 2),
            DataType::Decimal128(38, 0),
            DataType::Float64,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            DataType::Utf8,
            DataType::Binary,
        ]
    );
    assert!(schema.field(10).metadata().contains_key(JSON_TEXT));
    assert!(!schema.field(2).metadata().contains_key(DECIMAL_TEXT));
    let b = stream.next().await.unwrap().unwrap();
    assert!(stream.next().await.is_none());
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(b.column(1).as_primitive::<Decimal128Type>().value(0), 123_456_789);
    assert_eq!(
        b.column(2).as_primitive::<Decimal128Type>().value(0),
        12_345_678_901_234_567_890_123_456_789_012_345_678
    );
    assert_eq!(b.column(3).as_primitive::<Float64Type>().value(0), 0.25);
    assert!(b.column(5).as_boolean().value(0));
    assert_eq!(
        b.column(6).as_primitive::<arrow::datatypes::Date32Type>().value(0),
        7441
    ); // 1990-05-17
    let seen = b.column(7).as_primitive::<TimestampNanosecondType>().value(0);
    assert_eq!(
        chrono::DateTime::from_timestamp_nanos(seen).to_rfc3339(),
        "2025-11-28T10:11:12.345678+00:00"
    );
    assert_eq!(
        b.column(9).as_primitive::<TimestampNanosecondType>().value(0),
        1_764_324_672_000_000_000
    );
    assert_eq!(b.column(11).as_binary::<i32>().value(0), &[0x00, 0xff]);
    for c in 1..b.num_columns() {
        assert!(b.column(c).is_null(1), "column {c} of row 2 is not NULL");
    }
}

#[tokio::test]
async fn every_partition_is_fetched_in_order() {
    let srv = server().await;
    let row_type = vec![json!({"name": "ID", "type": "fixed", "precision": 18, "scale": 0})];
    let partitions: Vec<Vec<Vec<Option<String>>>> = (0..4)
        .map(|p| (0..3).map(|r| vec![Some((p * 10 + r).to_string())]).collect())
        .collect();
    srv.add(
        "SELECT ID FROM BIG",
        Canned {
            row_type,
            partitions,
            async_polls: 2,
            stats: None,
        },
    );
    let src = source(&srv.url, KEY);
    let mut stream = src.query("SELECT ID FROM BIG", 0).await.unwrap();
    let mut ids = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        ids.extend((0..b.num_rows()).map(|i| b.column(0).as_primitive::<Int64Type>().value(i)));
    }
    assert_eq!(ids, [0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32]);
    let reqs = srv.requests();
    assert!(reqs[0].starts_with("POST /api/v2/statements?requestId="), "{reqs:?}");
    // 202 twice (async polling), then the result, then partitions 1, 2, 3 in order.
    assert_eq!(
        reqs[1..],
        [
            "GET /api/v2/statements/{h}",
            "GET /api/v2/statements/{h}",
            "GET /api/v2/statements/{h}?partition=1",
            "GET /api/v2/statements/{h}?partition=2",
            "GET /api/v2/statements/{h}?partition=3"
        ]
    );
}

#[tokio::test]
async fn an_empty_result_and_describe() {
    let srv = server().await;
    let mut c = all_types();
    c.partitions = vec![vec![]];
    srv.add("SELECT * FROM EMPTY", c);
    srv.add("SELECT * FROM CUSTOMERS", all_types());
    let src = source(&srv.url, KEY);
    let mut stream = src.query("SELECT * FROM EMPTY", 0).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().num_rows(), 0);
    assert!(stream.next().await.is_none());
    let schema = src.describe("SELECT * FROM CUSTOMERS").await.unwrap();
    assert_eq!(schema.field(1).name(), "LTV");
}

#[tokio::test]
async fn sql_errors_surface_snowflakes_message() {
    let srv = server().await;
    let err = source(&srv.url, KEY)
        .query("SELECT * FROM MISSING", 0)
        .await
        .err()
        .unwrap();
    match err {
        SourceError::Query(m) => {
            assert!(
                m.starts_with("SQL compilation error: Object 'MISSING' does not exist or not authorized."),
                "{m}"
            );
            assert!(m.contains("code 002003, SQL state 42S02"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_key_is_an_authentication_error() {
    let srv = Server::start("XY12345", "SOMEONE_ELSE", KEY).await;
    let err = source(&srv.url, KEY).query("SELECT 1", 0).await.err().unwrap();
    assert!(
        matches!(err, SourceError::Auth(ref m) if m.contains("JWT token is invalid.")),
        "{err:?}"
    );
    let err = Source::open(
        "test",
        &ConnectionSpec::Snowflake(SnowflakeConnection {
            account: "a".into(),
            user: "u".into(),
            private_key: Some("not a key".into()),
            private_key_path: None,
            database: None,
            schema: None,
            warehouse: None,
            role: None,
            url: None,
        }),
        std::path::Path::new("."),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .starts_with("authentication failed: the private key is not a PKCS#8 RSA key"),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limited_requests_are_retried() {
    let srv = server().await;
    srv.add("SELECT * FROM CUSTOMERS", all_types());
    srv.fail_next_with_429(2);
    let mut stream = source(&srv.url, KEY).query("SELECT * FROM CUSTOMERS", 0).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().num_rows(), 2);
    assert_eq!(srv.requests().iter().filter(|r| r.starts_with("POST")).count(), 3);
}

#[tokio::test]
async fn an_unreachable_account_is_a_connection_error() {
    let err = source("http://127.0.0.1:1", KEY)
        .query("SELECT 1", 0)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::Connect(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot connect: http://127.0.0.1:1: "),
        "{err}"
    );
}

/// `ebb preview` over Snowflake end to end: the binary talks to the in-process server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_over_snowflake_maps_rows_and_reports_errors_in_one_sentence() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/k.p8"), KEY).unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1\nconnections:\n  snow:\n    type: snowflake\n    account: xy12345\n    user: ebb_sync\n    private_key_path: keys/k.p8\n    url: {}\n  out:\n    type: file\n    path: out\n",
            srv.url
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    let model = |query: &str| {
        format!(
            "models:\n  - name: scores\n    source:\n      type: snowflake\n      query: {query}\n    destination:\n      type: file\n      unique_identifier: id\n    mappings:\n      - source: ltv\n        destination: LTV__c\n        transform: round(1)\n      - source: scores.upsell\n        destination: Upsell__c\n"
        )
    };
    std::fs::write(
        dir.path().join("models/m.yaml"),
        model("SELECT ID, LTV, SCORES FROM CUSTOMERS"),
    )
    .unwrap();
    let run = |args: &'static [&'static str]| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || crate::support::ebb(&dir, args))
    };
    // `preview` wraps the model's query in a LIMIT; the server answers that statement,
    // once with 202 first.
    srv.add(
        "SELECT * FROM (SELECT ID, LTV, SCORES FROM CUSTOMERS) AS ebb_preview LIMIT 10",
        Canned {
            row_type: vec![
                all_types().row_type[0].clone(),
                all_types().row_type[1].clone(),
                all_types().row_type[10].clone(),
            ],
            partitions: vec![vec![vec![s("1"), s("1234567.89"), s("{\"upsell\": 0.7}")]]],
            async_polls: 1,
            stats: None,
        },
    );
    let o = run(&["preview", "scores", "--format", "json"]).await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", crate::support::stderr(&o));
    assert_eq!(
        crate::support::stdout(&o).trim(),
        r#"{"key":"1","record":{"LTV__c":1234567.9,"Upsell__c":0.7}}"#
    );
    std::fs::write(
        dir.path().join("models/m.yaml"),
        model("SELECT ID, LTV, SCORES FROM MISSING"),
    )
    .unwrap();
    let o = run(&["preview", "scores"]).await.unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = crate::support::stderr(&o);
    assert!(
        err.starts_with("error: model `scores`, connection `snow` (snowflake): the query failed: SQL compilation error: Object 'MISSING' does not exist"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn redirects_and_endless_answers_are_errors() {
    let spy = crate::sink::Sink::start("id").await;
    let srv = server().await;
    srv.add("SELECT * FROM CUSTOMERS", all_types());
    srv.answer_raw_next(crate::sink::Raw::Redirect {
        status: 307,
        location: spy.elsewhere(),
    });
    let err = source(&srv.url, KEY)
        .query("SELECT * FROM CUSTOMERS", 0)
        .await
        .err()
        .expect("a redirect is an error");
    assert!(
        err.to_string()
            .contains(&format!("HTTP 307 redirects to `{}`", spy.elsewhere())),
        "{err}"
    );
    assert!(
        spy.strays().is_empty(),
        "the JWT followed the redirect: {:?}",
        spy.strays()
    );

    srv.answer_raw_next(crate::sink::Raw::Endless);
    let err = source(&srv.url, KEY)
        .query("SELECT * FROM CUSTOMERS", 0)
        .await
        .err()
        .expect("an endless answer is an error");
    assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
}

#[tokio::test]
async fn a_status_url_off_the_account_is_not_polled() {
    let spy = crate::sink::Sink::start("id").await;
    let srv = server().await;
    let mut c = all_types();
    c.async_polls = 2;
    srv.add("SELECT * FROM SLOW", c);
    // Appended to the base URL as it was, this made `http://127.0.0.1:P@localhost:Q/…`:
    // the spy's host, with the JWT.
    let port = spy
        .elsewhere()
        .trim_start_matches("http://localhost:")
        .trim_end_matches("/elsewhere")
        .to_string();
    srv.status_url(&format!("@localhost:{port}/api/v2/statements/stolen"));
    let err = source(&srv.url, KEY)
        .query("SELECT * FROM SLOW", 0)
        .await
        .err()
        .expect("a foreign status URL is an error");
    assert!(err.to_string().contains("is not a path on"), "{err}");
    assert!(spy.strays().is_empty(), "the JWT went to {:?}", spy.strays());
}

/// The source signs a key-pair JWT for every request: it goes over https, or plain http only
/// to a server on this machine.
#[test]
fn a_url_off_loopback_must_be_https() {
    let open = |url: &str| {
        let spec = ConnectionSpec::Snowflake(SnowflakeConnection {
            account: "xy12345".into(),
            user: "ebb_sync".into(),
            private_key: Some(KEY.into()),
            private_key_path: None,
            database: None,
            schema: None,
            warehouse: None,
            role: None,
            url: Some(url.into()),
        });
        Source::open("test", &spec, std::path::Path::new("."))
    };
    for url in [
        "https://xy12345.snowflakecomputing.com",
        "http://127.0.0.1:9",
        "http://localhost:9",
        "http://[::1]:9",
    ] {
        assert!(open(url).is_ok(), "{url}");
    }
    for (url, says) in [
        ("http://xy12345.snowflakecomputing.com", "must be https"),
        ("http://10.0.0.7:8080", "must be https"),
        ("http://127.0.0.1.example.com", "must be https"),
        ("ftp://xy12345.snowflakecomputing.com", "not https"),
        ("https://me:pw@xy12345.snowflakecomputing.com", "user info"),
        ("xy12345.snowflakecomputing.com", "is not a URL"),
    ] {
        let err = match open(url) {
            Err(e) => e,
            Ok(_) => panic!("{url} accepted"),
        };
        assert!(matches!(err, SourceError::Connect(_)), "{url}: {err:?}");
        let text = err.to_string();
        assert!(text.contains("`url`") && text.contains(says), "{url}: {text}");
        assert!(!text.contains("pw@"), "{text}");
    }
    // Written with a variable, the message shows it as written.
    std::env::set_var("EBB_TEST_SNOWFLAKE_URL_HTTP", "http://sekrit-host.example.com");
    let err = open("${EBB_TEST_SNOWFLAKE_URL_HTTP}").err().unwrap().to_string();
    assert!(
        err.contains("`${EBB_TEST_SNOWFLAKE_URL_HTTP}` must be https") && !err.contains("sekrit"),
        "{err}"
    );
}

/// `ebb validate` says so before any run (E209), and lets loopback through.
#[test]
fn validate_flags_a_snowflake_url_off_loopback_that_is_not_https() {
    let dir = tempfile::tempdir().unwrap();
    let conn = |url: &str| {
        format!(
            "    type: snowflake\n    account: xy12345\n    user: ebb_sync\n    \
             private_key_path: key.p8\n    url: {url}\n"
        )
    };
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1\nconnections:\n  off:\n{}  here:\n{}",
            conn("http://xy12345.snowflakecomputing.com"),
            conn("http://127.0.0.1:8080")
        ),
    )
    .unwrap();
    let report = ebb::validate::validate(dir.path(), &[]).unwrap();
    let insecure: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.code.as_str() == "E209")
        .map(|d| d.message.clone())
        .collect();
    assert_eq!(
        insecure,
        ["`http://xy12345.snowflakecomputing.com` is not https"],
        "{:?}",
        report.diagnostics.iter().map(|d| &d.message).collect::<Vec<_>>()
    );
}

//! The `http` and `file` destinations over real loopback HTTP and a real filesystem: wire
//! format, per-record results, retries and their waits, limits, and the files written.

use crate::sink::{Raw, Sink};
use ebb::config::project::{FileConnection, HttpConnection};
use ebb::config::ConnectionSpec;
use ebb::destination::http::HttpDestination;
use ebb::destination::retry::{deliver, Failed};
use ebb::destination::{Batch, Destination, Op, Outcome, Record};
use ebb::http::retry::RetryPolicy;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Retries without real waits.
fn fast(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

/// An `http` destination for connection `name` posting to `url`, with `extra` settings.
/// Each test names its own connection: limits are shared per connection name.
fn http(name: &str, url: &str, extra: Value) -> Destination {
    let mut c = json!({ "url": url });
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let c: HttpConnection = serde_json::from_value(c).unwrap();
    Destination::Http(HttpDestination::new(name, &c).unwrap())
}

/// A batch of records `{"id": key, "n": i}`.
fn batch(op: Op, keys: &[&str]) -> Batch {
    Batch {
        model: "contacts".into(),
        run_id: 7,
        op,
        key_field: "id".into(),
        records: keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                key: k.to_string(),
                payload: format!(r#"{{"id":"{k}","n":{i}}}"#),
                record_id: None,
            })
            .collect(),
    }
}

fn confirmed(n: usize) -> Vec<Outcome> {
    vec![Outcome::Confirmed { record_id: None }; n]
}

fn statuses(sink: &Sink) -> Vec<u16> {
    sink.log().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn a_2xx_confirms_every_record_and_applies_each_operation() {
    let sink = Sink::start("id").await;
    let d = http("dest-confirms", &sink.url(), json!({}));
    let delivered = deliver(&d, &batch(Op::Upsert, &["a", "b", "c"]), &fast(1))
        .await
        .unwrap();
    assert_eq!(delivered.outcomes, confirmed(3));
    assert_eq!(delivered.api_calls, 1);
    assert_eq!(sink.records()["b"], json!({"id": "b", "n": 1}));
    let log = sink.log();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            log[0].operation.as_str(),
            log[0].run_id,
            log[0].keys.clone(),
            log[0].status
        ),
        ("upsert", 7, vec!["a".to_string(), "b".into(), "c".into()], 200)
    );

    sink.reset_log();
    assert_eq!((sink.requests(), sink.log().len()), (0, 0));
    deliver(&d, &batch(Op::Delete, &["a"]), &fast(1)).await.unwrap();
    let mut clear = batch(Op::Clear, &["b"]);
    clear.records[0].payload = r#"{"id":"b","n":null}"#.into();
    deliver(&d, &clear, &fast(1)).await.unwrap();
    let records = sink.records();
    assert_eq!(records.keys().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(records["b"], json!({"id": "b", "n": null}));
    let ops: Vec<String> = sink.log().into_iter().map(|r| r.operation).collect();
    assert_eq!(ops, ["delete", "clear"]);
    assert_eq!(sink.requests(), 2);
}

#[tokio::test]
async fn numeric_keys_and_verbatim_payloads() {
    let sink = Sink::start("id").await;
    let d = http("dest-numeric", &sink.url(), json!({}));
    let mut b = batch(Op::Insert, &["1"]);
    b.records[0].payload = r#"{"id":1,"amount":1.50,"tags":["x"]}"#.into();
    deliver(&d, &b, &fast(1)).await.unwrap();
    assert_eq!(sink.records()["1"], json!({"id": 1, "amount": 1.50, "tags": ["x"]}));
}

#[tokio::test]
async fn per_record_results_confirm_and_reject() {
    let sink = Sink::start("id").await;
    let d = http("dest-per-record", &sink.url(), json!({}));
    sink.reject(&["b"]);
    let delivered = deliver(&d, &batch(Op::Upsert, &["a", "b", "c"]), &fast(1))
        .await
        .unwrap();
    assert_eq!(
        delivered.outcomes,
        vec![
            Outcome::Confirmed { record_id: None },
            Outcome::Rejected {
                code: "rejected".into(),
                message: "rejected by test".into()
            },
            Outcome::Confirmed { record_id: None },
        ]
    );
    assert_eq!(sink.records().keys().collect::<Vec<_>>(), ["a", "c"]);

    sink.clear_rejects();
    let delivered = deliver(&d, &batch(Op::Upsert, &["b"]), &fast(1)).await.unwrap();
    assert_eq!(delivered.outcomes, confirmed(1));
    assert!(sink.records().contains_key("b"));
}

#[tokio::test]
async fn result_ids_and_codes_are_kept() {
    let sink = Sink::start("id").await;
    let d = http("dest-ids", &sink.url(), json!({}));
    sink.answer_next(
        201,
        r#"{"results":[{"success":true,"id":"0031x"},{"success":false,"error":"bad email","code":"INVALID_EMAIL"}]}"#,
    );
    let delivered = deliver(&d, &batch(Op::Upsert, &["a", "b"]), &fast(1)).await.unwrap();
    assert_eq!(
        delivered.outcomes,
        vec![
            Outcome::Confirmed {
                record_id: Some("0031x".into())
            },
            Outcome::Rejected {
                code: "INVALID_EMAIL".into(),
                message: "bad email".into()
            },
        ]
    );
}

#[tokio::test]
async fn results_of_the_wrong_length_are_fatal() {
    let sink = Sink::start("id").await;
    let d = http("dest-wrong-length", &sink.url(), json!({}));
    sink.answer_next(200, r#"{"results":[{"success":true}]}"#);
    let failed = deliver(&d, &batch(Op::Upsert, &["a", "b"]), &fast(5))
        .await
        .unwrap_err();
    assert_eq!(
        (failed.api_calls, failed.attempts),
        (1, 1),
        "a malformed answer is not retried"
    );
    assert!(
        failed.message.contains(&format!(
            "{} (connection `dest-wrong-length`) answered 1 results for 2 records",
            sink.url()
        )),
        "{failed}"
    );
    assert_eq!(sink.requests(), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out() {
    let sink = Sink::start("id").await;
    let d = http("dest-429", &sink.url(), json!({}));
    sink.fail_next(1, 429, Some(1));
    let started = Instant::now();
    let delivered = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(5)).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(delivered.api_calls, 2);
    assert_eq!(delivered.outcomes, confirmed(1));
    assert_eq!(statuses(&sink), [429, 200]);
    assert!(sink.records().contains_key("a"));
}

#[tokio::test]
async fn a_5xx_storm_longer_than_the_attempts_fails_the_batch() {
    let sink = Sink::start("id").await;
    let d = http("dest-storm", &sink.url(), json!({}));
    sink.fail_next(100, 503, None);
    let failed: Failed = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(3)).await.unwrap_err();
    assert_eq!((failed.api_calls, failed.attempts), (3, 3));
    let expected = format!(
        "after 3 attempts: HTTP 503 Service Unavailable from {} (connection `dest-storm`): status 503 induced by test",
        sink.url()
    );
    assert_eq!(failed.message, expected);
    assert_eq!(failed.to_string(), expected);
    assert_eq!(sink.requests(), 3);
    assert!(sink.records().is_empty());
}

#[tokio::test]
async fn a_401_is_fatal_at_once() {
    let sink = Sink::start("id").await;
    let d = http("dest-401", &sink.url(), json!({}));
    sink.fail_next(1, 401, None);
    let failed = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(5)).await.unwrap_err();
    assert_eq!((failed.api_calls, failed.attempts), (1, 1));
    assert!(
        failed
            .message
            .starts_with("HTTP 401 Unauthorized from http://127.0.0.1:")
            && failed
                .message
                .ends_with("(connection `dest-401`): status 401 induced by test"),
        "{failed}"
    );
    assert_eq!(sink.requests(), 1);
    assert!(sink.records().is_empty());
}

#[tokio::test]
async fn a_hung_request_times_out_and_is_retried() {
    let sink = Sink::start("id").await;
    let d = http("dest-hang", &sink.url(), json!({ "timeout_secs": 1 }));
    sink.hang_next(1);
    let started = Instant::now();
    let delivered = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(3)).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(10), "the timeout was not applied: {took:?}");
    assert_eq!(delivered.api_calls, 2);
    assert_eq!(sink.requests(), 2);
    assert!(sink.records().contains_key("a"));
}

#[tokio::test]
async fn a_timeout_is_reported_after_the_last_attempt() {
    let sink = Sink::start("id").await;
    let d = http("dest-timeout", &sink.url(), json!({ "timeout_secs": 1 }));
    sink.hang_next(2);
    let failed = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(2)).await.unwrap_err();
    assert_eq!(
        failed.message,
        format!(
            "after 2 attempts: POST {} (connection `dest-timeout`) timed out after 1 s",
            sink.url()
        )
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let d = http("dest-refused", &url, json!({}));
    let failed = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(2)).await.unwrap_err();
    assert_eq!(failed.api_calls, 2);
    assert!(
        failed.message.starts_with(&format!(
            "after 2 attempts: cannot connect to {url} (connection `dest-refused`): "
        )),
        "{failed}"
    );
}

#[tokio::test]
async fn headers_are_sent_with_variables_expanded() {
    let var = format!("EBB_DEST_TEST_TOKEN_{}", std::process::id());
    // Only this test reads the variable; std serializes its own environment access.
    std::env::set_var(&var, "s3cret");
    let sink = Sink::start("id").await;
    let d = http(
        "dest-headers",
        &sink.url(),
        json!({ "headers": { "Authorization": format!("Bearer ${{{var}}}"), "X-Source": "ebb" } }),
    );
    deliver(&d, &batch(Op::Upsert, &["a"]), &fast(1)).await.unwrap();
    let headers = &sink.log()[0].headers;
    assert_eq!(headers.get("authorization").map(String::as_str), Some("Bearer s3cret"));
    assert_eq!(headers.get("x-source").map(String::as_str), Some("ebb"));
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
}

#[tokio::test]
async fn the_rate_limit_spaces_requests() {
    let sink = Sink::start("id").await;
    let d = http("dest-rate", &sink.url(), json!({ "rate_limit": "5/second" }));
    let started = Instant::now();
    for i in 0..10 {
        deliver(&d, &batch(Op::Upsert, &[&i.to_string()]), &fast(1))
            .await
            .unwrap();
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "10 requests at 5/second took {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(sink.requests(), 10);
}

#[tokio::test]
async fn max_concurrency_is_shared_by_every_run_on_the_connection() {
    let sink = Sink::start("id").await;
    sink.delay(Duration::from_millis(300));
    // Two runs (two destinations) on one connection, each sending two batches at once.
    let settings = json!({ "max_concurrency": 2 });
    let run1 = http("dest-concurrency", &sink.url(), settings.clone());
    let run2 = http("dest-concurrency", &sink.url(), settings);
    let (b1, b2, b3, b4) = (
        batch(Op::Upsert, &["a"]),
        batch(Op::Upsert, &["b"]),
        batch(Op::Upsert, &["c"]),
        batch(Op::Upsert, &["d"]),
    );
    let policy = fast(1);
    let started = Instant::now();
    let results = tokio::join!(
        deliver(&run1, &b1, &policy),
        deliver(&run1, &b2, &policy),
        deliver(&run2, &b3, &policy),
        deliver(&run2, &b4, &policy),
    );
    let took = started.elapsed();
    for r in [results.0, results.1, results.2, results.3] {
        assert_eq!(r.unwrap().outcomes, confirmed(1));
    }
    assert!(
        took >= Duration::from_millis(600),
        "4 requests of 300 ms, 2 at a time, took {took:?}"
    );
    assert_eq!(sink.records().len(), 4);
}

#[tokio::test]
async fn a_lost_answer_is_retried_and_the_record_applied_once() {
    let sink = Sink::start("id").await;
    let d = http("dest-lost", &sink.url(), json!({}));
    sink.fail_after_apply_next(1);
    let delivered = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(3)).await.unwrap();
    assert_eq!(delivered.api_calls, 2);
    assert_eq!(statuses(&sink), [500, 200]);
    assert_eq!(sink.records().len(), 1);
}

#[tokio::test]
async fn a_slow_answer_leaves_the_batch_applied_but_unconfirmed() {
    let sink = Sink::start("id").await;
    let d = http("dest-slow", &sink.url(), json!({ "timeout_secs": 1 }));
    sink.delay(Duration::from_secs(3));
    let failed = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(1)).await.unwrap_err();
    assert!(failed.message.contains("timed out after 1 s"), "{failed}");
    assert!(sink.records().contains_key("a"), "the sink applies before it waits");
    sink.delay(Duration::ZERO);
    deliver(&d, &batch(Op::Upsert, &["b"]), &fast(1)).await.unwrap();
}

/// POSTs `body` to the sink with a plain socket; returns the status line.
fn raw_post(sink: &Sink, body: &str) -> String {
    let addr = sink
        .url()
        .trim_start_matches("http://")
        .trim_end_matches("/hook")
        .to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /hook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_sink_serves_from_its_own_thread_and_refuses_malformed_bodies() {
    // No runtime on this thread: the sink must run on its own.
    let sink = Sink::start_in_thread("email");
    let ok = r#"{"model":"m","run_id":3,"operation":"upsert","records":[{"email":"a@x.io","n":1}]}"#;
    assert_eq!(raw_post(&sink, ok), "HTTP/1.1 200 OK");
    assert_eq!(sink.records()["a@x.io"], json!({"email": "a@x.io", "n": 1}));

    let no_key = r#"{"model":"m","run_id":3,"operation":"upsert","records":[{"id":1}]}"#;
    assert_eq!(raw_post(&sink, no_key), "HTTP/1.1 400 Bad Request");
    let bad_op = r#"{"model":"m","run_id":3,"operation":"merge","records":[]}"#;
    assert_eq!(raw_post(&sink, bad_op), "HTTP/1.1 400 Bad Request");
    assert_eq!(statuses(&sink), [200, 400, 400]);
    assert_eq!(sink.records().len(), 1);
}

fn file_spec(path: &str) -> ConnectionSpec {
    ConnectionSpec::File(FileConnection { path: path.into() })
}

#[tokio::test]
async fn the_file_destination_writes_one_line_per_record() {
    let project = tempfile::tempdir().unwrap();
    let d = Destination::open("out", &file_spec("exports/jsonl"), project.path(), "contacts", 12)
        .await
        .unwrap();
    let dir = project.path().join("exports/jsonl");
    assert!(dir.is_dir(), "the directory is created when the run opens");
    assert_eq!(d.max_concurrency(), 1);

    let mut upsert = batch(Op::Upsert, &["a", "b"]);
    upsert.records[1].payload = r#"{"id":"b","x":1.50}"#.into();
    let delivered = deliver(&d, &upsert, &RetryPolicy::default()).await.unwrap();
    assert_eq!(delivered.outcomes, confirmed(2));
    let mut delete = batch(Op::Delete, &["c\"q"]);
    delete.records[0].payload = r#"{"id":"c\"q"}"#.into();
    deliver(&d, &delete, &RetryPolicy::default()).await.unwrap();
    d.finish().await.unwrap();

    let text = std::fs::read_to_string(dir.join("contacts-12.jsonl")).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"op":"upsert","key":"a","record":{"id":"a","n":0}}"#,
            "\n",
            r#"{"op":"upsert","key":"b","record":{"id":"b","x":1.50}}"#,
            "\n",
            r#"{"op":"delete","key":"c\"q","record":{"id":"c\"q"}}"#,
            "\n",
        )
    );
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
}

#[tokio::test]
async fn a_file_run_that_sends_nothing_leaves_no_file() {
    let project = tempfile::tempdir().unwrap();
    let d = Destination::open("out", &file_spec("exports"), project.path(), "contacts", 13)
        .await
        .unwrap();
    d.finish().await.unwrap();
    let entries: Vec<_> = std::fs::read_dir(project.path().join("exports")).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[tokio::test]
async fn an_unusable_file_directory_is_an_error_naming_it() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("taken"), "a file, not a directory").unwrap();
    let err = match Destination::open("out", &file_spec("taken/sub"), project.path(), "m", 1).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a directory under a file was opened"),
    };
    assert!(
        err.starts_with("cannot create directory `") && err.contains("taken/sub"),
        "{err}"
    );
}

#[tokio::test]
async fn a_redirect_fails_the_batch_and_nothing_goes_to_the_location() {
    for status in [301, 302, 307, 308] {
        let sink = Sink::start("id").await;
        let elsewhere = Sink::start("id").await;
        let name = format!("dest-redirect-{status}");
        let d = http(&name, &sink.url(), json!({ "headers": { "X-Api-Key": "k3y" } }));
        sink.answer_raw_next(Raw::Redirect {
            status,
            location: elsewhere.elsewhere(),
        });
        let failed = deliver(&d, &batch(Op::Upsert, &["a", "b"]), &fast(3))
            .await
            .expect_err("a redirect confirms nothing");
        assert_eq!((failed.attempts, failed.api_calls), (1, 1), "{status}: not retried");
        assert!(
            failed
                .message
                .contains(&format!("HTTP {status} redirects to `{}`", elsewhere.elsewhere()))
                && failed.message.contains(&format!("(connection `{name}`)")),
            "{status}: {failed}"
        );
        assert!(!failed.message.contains("k3y"), "{failed}");
        assert_eq!(
            (elsewhere.strays().len(), elsewhere.requests()),
            (0, 0),
            "{status}: the request followed the redirect: {:?}",
            elsewhere.strays()
        );
        assert!(sink.records().is_empty() && elsewhere.records().is_empty());
    }
}

#[tokio::test]
async fn a_results_field_that_is_not_a_list_confirms_nothing() {
    for body in [
        r#"{"results":"fine"}"#,
        r#"{"results":{"a":{"success":true}}}"#,
        r#"{"results":null}"#,
        r#"{"results":true}"#,
    ] {
        let sink = Sink::start("id").await;
        let d = http("dest-results-shape", &sink.url(), json!({}));
        sink.answer_next(200, body);
        let failed = deliver(&d, &batch(Op::Upsert, &["a", "b"]), &fast(3))
            .await
            .expect_err(body);
        assert_eq!(failed.attempts, 1, "{body}: {failed}");
        assert!(
            failed.message.contains("answered `results` as") && failed.message.contains("nothing is confirmed"),
            "{body}: {failed}"
        );
    }
    // Items that are not objects are refused too.
    let sink = Sink::start("id").await;
    let d = http("dest-results-items", &sink.url(), json!({}));
    sink.answer_next(200, r#"{"results":[{"success":true},"ok"]}"#);
    let failed = deliver(&d, &batch(Op::Upsert, &["a", "b"]), &fast(3))
        .await
        .unwrap_err();
    assert!(failed.message.contains("result 2 of 2 as a string"), "{failed}");
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_cap_and_confirms_nothing() {
    let sink = Sink::start("id").await;
    let d = http("dest-endless", &sink.url(), json!({ "timeout_secs": 20 }));
    sink.answer_raw_next(Raw::Endless);
    let started = Instant::now();
    let failed = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(3)).await.unwrap_err();
    assert_eq!(failed.attempts, 1, "an oversized answer is not retried: {failed}");
    assert!(
        failed
            .message
            .contains("the answer is larger than 64 MiB (after decoding)"),
        "{failed}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    // ebb stopped reading: the server could hand over little more than the cap (plus what
    // the sockets buffer).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = sink.raw_sent();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.raw_sent(), sent, "the body is still being read");
    assert!(sent < 96 * 1024 * 1024, "{sent} bytes were streamed");
}

#[tokio::test]
async fn a_gzip_bomb_is_cut_at_the_cap_after_decoding() {
    let sink = Sink::start("id").await;
    let d = http("dest-gzip-bomb", &sink.url(), json!({}));
    // About 640 KiB on the wire, 100 MiB decoded: a valid answer but for its size.
    sink.answer_raw_next(Raw::GzipBomb {
        decoded: 100 * 1024 * 1024,
    });
    let failed = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(3)).await.unwrap_err();
    assert!(sink.raw_sent() < 1024 * 1024, "{}", sink.raw_sent());
    assert_eq!(failed.attempts, 1, "{failed}");
    assert!(
        failed
            .message
            .contains("the answer is larger than 64 MiB (after decoding)"),
        "{failed}"
    );
    // The same bomb under the cap decodes and confirms: the bomb is valid gzip.
    let small = http("dest-gzip-small", &sink.url(), json!({}));
    sink.answer_raw_next(Raw::GzipBomb { decoded: 1024 * 1024 });
    let delivered = deliver(&small, &batch(Op::Upsert, &["a"]), &fast(1)).await;
    assert!(delivered.is_err(), "`results` of spaces is no list of results");
    assert!(
        delivered
            .unwrap_err()
            .message
            .contains("answered 0 results for 1 records"),
        "decoded whole"
    );
}

#[tokio::test]
async fn an_answer_cut_off_mid_body_is_retried() {
    let sink = Sink::start("id").await;
    let d = http("dest-reset", &sink.url(), json!({}));
    sink.answer_raw_next(Raw::ResetMidBody);
    let delivered = deliver(&d, &batch(Op::Upsert, &["a"]), &fast(3)).await.unwrap();
    assert_eq!(delivered.api_calls, 2);
    assert_eq!(delivered.outcomes, confirmed(1));
    assert_eq!(sink.requests(), 2);
}

#[tokio::test]
async fn the_file_destination_does_not_write_through_symbolic_links() {
    let project = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    // The export directory is a link to somewhere else.
    std::os::unix::fs::symlink(outside.path(), project.path().join("exports")).unwrap();
    for path in ["exports", "exports/jsonl"] {
        let err = match Destination::open("out", &file_spec(path), project.path(), "contacts", 5).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{path}: opened through a link"),
        };
        assert!(
            err.contains(&format!(
                "`{}` is a symbolic link",
                project.path().join("exports").display()
            )),
            "{path}: {err}"
        );
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    // A real directory, with the run's file planted as a link (dangling or not).
    std::fs::remove_file(project.path().join("exports")).unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    for (run, target) in [(6, victim.clone()), (7, outside.path().join("new.txt"))] {
        let d = Destination::open("out", &file_spec("exports"), project.path(), "contacts", run)
            .await
            .unwrap();
        std::os::unix::fs::symlink(&target, project.path().join(format!("exports/contacts-{run}.jsonl"))).unwrap();
        let failed = deliver(&d, &batch(Op::Upsert, &["a"]), &RetryPolicy::default())
            .await
            .unwrap_err();
        assert_eq!(failed.attempts, 1);
        assert!(failed.message.contains("is a symbolic link"), "{failed}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert!(!outside.path().join("new.txt").exists());

    // A link deeper down the path is refused as well; a plain directory still works.
    std::fs::create_dir(project.path().join("exports/real")).unwrap();
    std::os::unix::fs::symlink(outside.path(), project.path().join("exports/real/linked")).unwrap();
    assert!(
        Destination::open("out", &file_spec("exports/real/linked/x"), project.path(), "m", 8)
            .await
            .is_err()
    );
    let d = Destination::open("out", &file_spec("exports/real/ok"), project.path(), "m", 9)
        .await
        .unwrap();
    deliver(&d, &batch(Op::Upsert, &["a"]), &RetryPolicy::default())
        .await
        .unwrap();
    d.finish().await.unwrap();
    assert!(project.path().join("exports/real/ok/m-9.jsonl").is_file());
}

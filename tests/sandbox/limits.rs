//! `Sforce-Limit-Info`, the `limits` resource, `REQUEST_LIMIT_EXCEEDED` and the injected
//! faults and latency (`src/sandbox/api.rs`, docs/salesforce-protocol.md §5).

use super::*;

#[tokio::test]
async fn every_response_carries_sforce_limit_info_and_limits_reports_the_allocation() {
    let api = Api::start(SandboxConfig {
        daily_api_limit: 500,
        ..SandboxConfig::default()
    })
    .await;
    let a = api.call(Method::GET, "sobjects/Contact/describe", None).await;
    assert_eq!(a.limit_info(), "api-usage=1/500");
    let b = api
        .call(Method::POST, "composite/sobjects", Some(json!({"records": "x"})))
        .await;
    assert_eq!(
        (b.status, b.limit_info()),
        (400, "api-usage=2/500".to_string()),
        "errors count and carry it too"
    );
    let l = api.call(Method::GET, "limits", None).await;
    assert_eq!(l.limit_info(), "api-usage=3/500");
    assert_eq!(l.json["DailyApiRequests"], json!({"Max": 500, "Remaining": 497}));
    assert_eq!(api.sandbox.calls(), 3);
    assert_eq!(api.sandbox.calls_to("limits"), 1);
}

#[tokio::test]
async fn the_two_request_limit_exceeded_causes_are_distinguishable() {
    let api = Api::start(SandboxConfig::default()).await;
    // Daily: the allocation is used up; api-usage is at its maximum.
    api.sandbox.set_allocation(1000, 1000);
    let r = api.call(Method::GET, "limits", None).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(r.limit_info(), "api-usage=1000/1000");
    assert_eq!(api.sandbox.calls(), 0, "a refused request is not counted");

    // Concurrency: more than 1 in flight; api-usage is below its maximum.
    api.sandbox.set_allocation(10, 1000);
    api.sandbox.set_faults(Faults {
        latency: Duration::from_millis(300),
        max_concurrent: Some(1),
        ..Faults::default()
    });
    let (a, b) = tokio::join!(api.call(Method::GET, "limits", None), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.call(Method::GET, "limits", None).await
    });
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 403, "{}", b.text);
    assert_eq!(b.json[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert_ne!(b.json[0]["message"], "TotalRequests Limit exceeded.");
    let (used, max) = parse_usage(&b.limit_info());
    assert!(used < max, "{}", b.limit_info());
    assert_eq!(api.sandbox.max_in_flight(), 2);
}

fn parse_usage(info: &str) -> (u64, u64) {
    let (used, max) = info.strip_prefix("api-usage=").unwrap().split_once('/').unwrap();
    (used.parse().unwrap(), max.parse().unwrap())
}

#[tokio::test]
async fn injected_503s_and_request_timing_are_observable() {
    let api = Api::start(SandboxConfig::default()).await;
    api.sandbox.set_faults(Faults {
        unavailable_next: 2,
        ..Faults::default()
    });
    let statuses = [
        api.call(Method::GET, "limits", None).await,
        api.call(Method::GET, "limits", None).await,
        api.call(Method::GET, "limits", None).await,
    ];
    assert_eq!(statuses.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 503, 200]);
    assert_eq!(statuses[0].json[0]["errorCode"], "SERVER_UNAVAILABLE");
    assert_eq!(api.sandbox.calls(), 1);
    api.sandbox.set_faults(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let (x, y, z) = tokio::join!(
        api.call(Method::GET, "limits", None),
        api.call(Method::GET, "limits", None),
        api.call(Method::GET, "limits", None)
    );
    assert!([x.status, y.status, z.status].iter().all(|s| *s == 200));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(api.sandbox.max_in_flight(), 3);
    assert_eq!(api.sandbox.request_starts().len(), 6);
    assert_eq!(api.sandbox.max_starts_within(Duration::from_millis(100)), 3);
}

#[tokio::test]
async fn a_call_time_is_a_floor_that_includes_the_latency_and_the_orgs_own_work() {
    let api = Api::start(SandboxConfig::default()).await;
    // Far apart, so a loaded machine's stalls cannot blur "within" and "added".
    api.sandbox.set_faults(Faults {
        call_time: Duration::from_millis(1500),
        latency: Duration::from_millis(1200),
        ..Faults::default()
    });
    let started = Instant::now();
    let r = api.call(Method::GET, "limits", None).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(took >= Duration::from_millis(1500), "at least the call time: {took:?}");
    // Added latency would make it 2.7 s or more.
    assert!(
        took < Duration::from_millis(2500),
        "the latency is within the call time: {took:?}"
    );
}

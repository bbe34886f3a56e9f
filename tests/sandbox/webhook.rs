//! `ebb sandbox --webhook` (`src/sandbox/webhook.rs`): a signed event per record written,
//! checked by the reference Standard Webhooks library; nothing for a rolled-back request;
//! an event answered 503 is sent again.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A receiver on 127.0.0.1: answers the first request 503 and the others 202, keeping
/// each request's headers and body.
async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/x", listener.local_addr().unwrap());
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head, body_start, length) = loop {
                let k = s.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..k]);
                if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    break (head, end + 4, length);
                }
            };
            while raw.len() < body_start + length {
                let k = s.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..k]);
            }
            let mut headers = axum::http::HeaderMap::new();
            for l in head.lines().skip(1) {
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(
                        axum::http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                        v.trim().parse().unwrap(),
                    );
                }
            }
            n += 1;
            let status = if n == 1 {
                "503 Service Unavailable"
            } else {
                "202 Accepted"
            };
            if n > 1 {
                keep.lock()
                    .unwrap()
                    .push((headers, raw[body_start..body_start + length].to_vec()));
            }
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                .await;
        }
    });
    (url, got)
}

use std::sync::Arc;

#[tokio::test]
async fn every_record_written_is_sent_signed_and_nothing_rolled_back() {
    let (url, got) = receiver().await;
    let api = Api::start(SandboxConfig {
        webhook: Some(ebb::sandbox::WebhookTarget {
            url,
            secret: SECRET.into(),
        }),
        ..SandboxConfig::default()
    })
    .await;
    let r = api
        .upsert(
            "Warehouse_Id__c",
            false,
            vec![
                contact(json!({"Warehouse_Id__c": "w1", "LastName": "One"})),
                contact(json!({"Warehouse_Id__c": "w2", "LastName": "Two"})),
            ],
        )
        .await;
    assert_eq!(r.json[0]["success"], true, "{}", r.text);
    // Rolled back (allOrNone, one invalid): no event.
    let r = api
        .upsert(
            "Warehouse_Id__c",
            true,
            vec![
                contact(json!({"Warehouse_Id__c": "w3", "LastName": "Three"})),
                contact(json!({"Warehouse_Id__c": "w4", "LastName": "Bad", "Customer_Segment__c": "Gold"})),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let id = api.sandbox.records("Contact")[0]["Id"].as_str().unwrap().to_string();
    let d = api.call(Method::DELETE, &format!("sobjects/Contact/{id}"), None).await;
    assert_eq!(d.status, 204, "{}", d.text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "got {} events", got.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        3,
        "one event per record written, none for the rolled-back request"
    );
    let reference = standardwebhooks::Webhook::new(SECRET).unwrap();
    let mut seen = Vec::new();
    for (headers, body) in &got {
        reference
            .verify(body, headers)
            .expect("the reference library verifies the sandbox's signature");
        let v: Value = serde_json::from_slice(body).unwrap();
        seen.push((
            v["type"].as_str().unwrap().to_string(),
            v["data"]["LastName"].as_str().unwrap().to_string(),
        ));
        assert_eq!(v["object"], "Contact");
        assert!(v["data"]["Id"].as_str().unwrap().starts_with("003"), "{v}");
        assert!(v["data"]["SystemModstamp"].as_str().unwrap().ends_with('Z'), "{v}");
    }
    assert_eq!(
        seen,
        [
            ("contact.created".to_string(), "One".to_string()),
            ("contact.created".to_string(), "Two".to_string()),
            ("contact.deleted".to_string(), "One".to_string()),
        ]
    );
    // The first attempt was answered 503 and sent again under the same id.
    let ids: BTreeSet<&str> = got.iter().map(|(h, _)| h["webhook-id"].to_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
}

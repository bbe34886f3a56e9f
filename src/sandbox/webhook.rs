//! `ebb sandbox --webhook URL`: the sandbox as a CRM that sends signed webhooks. Every
//! record created, updated or deleted (by any API, once its request committed) becomes one
//! Standard Webhooks event POSTed to the URL, in the order of the writes:
//!
//! ```json
//! {"type": "contact.updated", "object": "Contact", "timestamp": "…Z",
//!  "data": {"Id": "003…", "LastName": "…", …, "LastModifiedDate": "…Z", "SystemModstamp": "…Z"}}
//! ```
//!
//! signed with the secret given (`webhook-id` `msg_sbx_<n>`, `webhook-timestamp`,
//! `webhook-signature: v1,…`). A delete carries the record as it was. Like a CRM, the
//! sender retries an event that got no 2xx (5 attempts, from 200 ms apart, doubling;
//! `Retry-After` honoured), and gives up on a 4xx other than 408 and 429.

use super::Shared;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the sandbox sends its events.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// `http://host:port/path` (plain HTTP: the sandbox is for this machine).
    pub url: String,
    /// The Standard Webhooks secret (`whsec_…`).
    pub secret: String,
}

const ATTEMPTS: u32 = 5;

/// Takes the journal's changes every 100 ms and sends them, until the process ends.
pub(crate) async fn sender(shared: Arc<Shared>, target: WebhookTarget) {
    let mut n: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (changes, objects) = {
            let mut st = shared.lock();
            let changes = st.store.journal.as_mut().map(std::mem::take).unwrap_or_default();
            let objects: Vec<String> = st.store.tables.iter().map(|t| t.object.name.clone()).collect();
            (changes, objects)
        };
        for c in changes {
            n += 1;
            let object = objects.get(c.table).cloned().unwrap_or_default();
            let stamp = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut data = serde_json::Map::new();
            data.insert("Id".into(), Value::String(c.id.clone()));
            for (k, v) in &c.record.fields {
                data.insert(k.clone(), v.clone());
            }
            data.insert("CreatedDate".into(), json!(stamp(c.record.created)));
            data.insert("LastModifiedDate".into(), json!(stamp(c.record.modified)));
            data.insert("SystemModstamp".into(), json!(stamp(c.at.max(c.record.stamp))));
            let body = json!({
                "type": format!("{}.{}", object.to_ascii_lowercase(), c.kind),
                "object": object,
                "timestamp": stamp(c.at),
                "data": data,
            })
            .to_string();
            let id = format!("msg_sbx_{n}");
            let outcome = send(&target, &id, &body).await;
            if shared.settings.log_requests {
                eprintln!("webhook {id} {} {} → {outcome}", c.kind, c.id);
            }
        }
    }
}

/// Sends one event with retries; what became of it, for the log.
async fn send(target: &WebhookTarget, id: &str, body: &str) -> String {
    let mut wait = Duration::from_millis(200);
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let ts = chrono::Utc::now().timestamp();
        let sig = match crate::webhook::signature::sign_standard(&target.secret, id, ts, body.as_bytes()) {
            Ok(s) => s,
            Err(e) => return format!("not sent: the secret: {e}"),
        };
        match post(&target.url, id, ts, &sig, body).await {
            Ok((status, retry_after)) => {
                if (200..300).contains(&status) {
                    return status.to_string();
                }
                last = status.to_string();
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    return format!("{status} (not retried)");
                }
                if let Some(r) = retry_after {
                    wait = wait.max(Duration::from_secs(r.min(60)));
                }
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    format!("{last} (gave up after {ATTEMPTS} attempts)")
}

/// One HTTP/1.1 POST: the status and `Retry-After` (seconds).
async fn post(url: &str, id: &str, ts: i64, sig: &str, body: &str) -> Result<(u16, Option<u64>), String> {
    let u = url::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!("`{url}`: the sandbox sends webhooks over plain http only"));
    }
    let host = u.host_str().ok_or_else(|| format!("`{url}` has no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let connect = tokio::net::TcpStream::connect((host, port));
    let mut s = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         webhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut limited = s.take(64 * 1024);
    let read = limited.read_to_end(&mut raw);
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let retry_after = lines.take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().parse().ok())?
    });
    Ok((status, retry_after))
}

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

/// Where the sandbox sends its events.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// `https://…`, or `http://` to a loopback host (ebb's HTTP client's rule).
    pub url: String,
    /// The Standard Webhooks secret (`whsec_…`).
    pub secret: String,
}

const ATTEMPTS: u32 = 5;

/// Takes the journal's changes every 100 ms and sends them, until the process ends.
pub(crate) async fn sender(shared: Arc<Shared>, target: WebhookTarget) {
    let client = match crate::http::client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ebb sandbox: webhooks are not sent: {e}");
            return;
        }
    };
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
            let outcome = send(&client, &target, &id, &body).await;
            if shared.settings.log_requests {
                eprintln!("webhook {id} {} {} → {outcome}", c.kind, c.id);
            }
        }
    }
}

/// Sends one event with retries (ebb's HTTP client: no redirects, https but to loopback);
/// what became of it, for the log.
async fn send(client: &reqwest::Client, target: &WebhookTarget, id: &str, body: &str) -> String {
    let mut wait = Duration::from_millis(200);
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let ts = chrono::Utc::now().timestamp();
        let sig = match crate::webhook::signature::sign_standard(&target.secret, id, ts, body.as_bytes()) {
            Ok(s) => s,
            Err(e) => return format!("not sent: the secret: {e}"),
        };
        let sent = client
            .post(&target.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.to_string())
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                if (200..300).contains(&status) {
                    return status.to_string();
                }
                last = status.to_string();
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    return format!("{status} (not retried)");
                }
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| crate::destination::http::parse_retry_after(v, chrono::Utc::now()));
                if let Some(r) = retry_after {
                    wait = wait.max(r.min(Duration::from_secs(60)));
                }
            }
            Err(e) => last = crate::diagnostics::root_cause(&e),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    format!("{last} (gave up after {ATTEMPTS} attempts)")
}

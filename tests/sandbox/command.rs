//! The `ebb sandbox` command: the binary serving the API until Ctrl-C.

use super::*;

#[test]
fn ebb_sandbox_serves_the_token_endpoint_and_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.json");
    std::fs::write(
        &objects,
        r#"{"objects": [{"name": "Lead", "keyPrefix": "00Q", "fields": [{"name": "LastName", "type": "string"}]}]}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["sandbox", "--port", "0", "--objects"])
        .arg(&objects)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let url = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("`ebb sandbox` exited before printing its URL: {printed}");
        }
        printed.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("instance_url") {
            break u.trim().to_string();
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    for _ in 0..6 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        printed.push_str(&line);
    }
    assert!(
        printed.contains("client_id      ebb-sandbox") && printed.contains("client_secret  ebb-sandbox"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!(
            "hubspot        {url}/crm/v3/ (Authorization: Bearer pat-na1-ebb-sandbox)"
        )),
        "{printed}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (token, describe) = rt.block_on(async {
        let http = ebb::http::client().unwrap();
        let r = http
            .post(format!("{url}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&client_id=ebb-sandbox&client_secret=ebb-sandbox")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap().to_string();
        let d = http
            .get(format!("{url}/services/data/v62.0/sobjects/Lead/describe"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (token, d.status().as_u16())
    });
    assert!(!token.is_empty());
    assert_eq!(describe, 200, "--objects replaced the objects");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`ebb sandbox` did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("POST /services/oauth2/token -> 200"),
        "one line per request: {log}"
    );
    assert!(
        log.contains("GET /services/data/v62.0/sobjects/Lead/describe -> 200"),
        "{log}"
    );
}

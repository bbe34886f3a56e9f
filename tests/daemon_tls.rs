//! `daemon.tls`: the daemon serves HTTPS with a certificate made by `openssl`, checked by
//! clients that are not ebb's (curl, `openssl s_client`): TLS 1.2 and 1.3 are served, TLS
//! 1.1 is refused by the server with an alert, plain HTTP on the port
//! gets no answer, and a missing key file stops the daemon with a message naming it.

use crate::certs::openssl_certs;
use crate::daemon::Daemon;
use std::path::Path;
use std::process::{Command, Output};

fn project(dir: &Path, tls: &str) {
    std::fs::write(
        dir.join("ebb.yaml"),
        format!(
            "version: 1
connections:
  exports:
    type: file
    path: exports
daemon:
  api_token: ${{EBB_TEST_API_TOKEN}}
{tls}"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef-tls";

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl")
}

fn s_client(addr: &str, version: &str) -> String {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect", addr, version, "-brief"]);
    if version == "-tls1_1" {
        // OpenSSL 3 will not offer TLS 1.1 at its default security level: lower it, so
        // that the refusal seen is the server's.
        c.args(["-cipher", "DEFAULT@SECLEVEL=0"]);
    }
    let o = c.stdin(std::process::Stdio::null()).output().expect("openssl s_client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_daemon_serves_https_at_tls_1_2_or_newer_only() {
    let dir = tempfile::tempdir().unwrap();
    let certs = openssl_certs(dir.path(), "daemon");
    project(
        dir.path(),
        "  tls:\n    cert_file: daemon-cert.pem\n    key_file: daemon-key.pem\n",
    );
    let d = Daemon::start(dir.path(), &[], &[("EBB_TEST_API_TOKEN", TOKEN)]);
    assert!(d.log().contains("HTTP API on https://"), "{}", d.log());
    let url = format!("https://{}", d.addr);
    let ca = certs.ca.display().to_string();
    // curl, trusting the test authority: the API answers over TLS.
    let o = curl(&["--cacert", &ca, "-w", "\n%{http_code}", &format!("{url}/healthz")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).ends_with("\n200"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let auth = format!("Authorization: Bearer {TOKEN}");
    let o = curl(&[
        "--cacert",
        &ca,
        "-H",
        &auth,
        "-w",
        "\n%{http_code}",
        &format!("{url}/api/models"),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).ends_with("\n200"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Without the authority the certificate does not verify.
    let o = curl(&[&format!("{url}/healthz")]);
    assert!(!o.status.success());
    // Plain HTTP to the HTTPS port: no HTTP answer.
    let o = curl(&["-w", "%{http_code}", &format!("http://{}/healthz", d.addr)]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("200"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // TLS 1.2 and 1.3 are served; TLS 1.1 is refused by the server.
    let t12 = s_client(&d.addr, "-tls1_2");
    assert!(t12.contains("Protocol version: TLSv1.2"), "{t12}");
    let t13 = s_client(&d.addr, "-tls1_3");
    assert!(t13.contains("Protocol version: TLSv1.3"), "{t13}");
    let t11 = s_client(&d.addr, "-tls1_1");
    assert!(!t11.contains("Protocol version: TLSv1.1"), "{t11}");
    // The refusal is the server's: an alert it sent (rustls answers a TLS 1.1 hello with
    // `handshake_failure`), not a client that would not offer TLS 1.1.
    assert!(
        t11.contains("alert handshake failure") || t11.contains("alert protocol version"),
        "the server's alert: {t11}"
    );
    assert!(t11.contains("SSL alert number"), "{t11}");
}

#[test]
fn a_missing_key_file_stops_the_daemon_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    openssl_certs(dir.path(), "daemon");
    project(
        dir.path(),
        "  tls:\n    cert_file: daemon-cert.pem\n    key_file: no-such-key.pem\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["daemon", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("EBB_TEST_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`daemon.tls`: cannot read the key file") && err.contains("no-such-key.pem"),
        "{err}"
    );
}

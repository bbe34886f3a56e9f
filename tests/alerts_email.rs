//! Alert email over an encrypted connection: `ebb alerts test` to an in-process SMTP server
//! that speaks STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with a certificate made by
//! `openssl` (not by ebb or its crates), offering AUTH only once encrypted, as real relays
//! do. The mail arrives over TLS 1.2 or newer with the credentials sent inside it; a
//! certificate from an authority ebb was not told to trust is refused and nothing is sent.

use crate::certs::{openssl_certs, server_tls};
use crate::support::{ebb, stderr, stdout};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What the server saw of one connection.
#[derive(Debug, Clone, Default)]
struct Session {
    /// The TLS version once encrypted (`TLSv1_3`), `None` while plain.
    tls: Option<String>,
    /// The TLS version under which AUTH came (`plain` if it came in clear).
    auth: Option<String>,
    /// The user and password of `AUTH PLAIN`.
    credentials: Option<(String, String)>,
    /// The DATA of each mail.
    mails: Vec<String>,
}

trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

/// Encrypts `plain` as the server side of a TLS connection; the version negotiated.
fn accept_tls(cfg: &Arc<rustls::ServerConfig>, plain: Box<dyn Duplex>) -> Option<(Box<dyn Duplex>, String)> {
    let conn = rustls::ServerConnection::new(cfg.clone()).ok()?;
    let mut s = rustls::StreamOwned::new(conn, plain);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).ok()?;
    }
    let version = format!("{:?}", s.conn.protocol_version()?);
    Some((Box::new(s), version))
}

/// An SMTP server on loopback: `implicit` TLS from the first byte, else plain with
/// STARTTLS offered. AUTH PLAIN is offered only on an encrypted connection.
fn smtp_server(cfg: Arc<rustls::ServerConfig>, implicit: bool) -> (u16, Arc<Mutex<Vec<Session>>>) {
    let sessions: Arc<Mutex<Vec<Session>>> = Arc::default();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let kept = sessions.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let idx = {
                let mut s = kept.lock().unwrap();
                s.push(Session::default());
                s.len() - 1
            };
            let note = |f: &dyn Fn(&mut Session)| f(&mut kept.lock().unwrap()[idx]);
            let mut stream: Box<dyn Duplex> = Box::new(conn);
            if implicit {
                let Some((s, v)) = accept_tls(&cfg, stream) else {
                    continue;
                };
                note(&|x| x.tls = Some(v.clone()));
                stream = s;
            }
            let mut tls = implicit;
            let _ = stream.write_all(b"220 fake.smtp ESMTP\r\n");
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let up = line.to_ascii_uppercase();
                let reply: Vec<u8> = if up.starts_with("EHLO") {
                    if tls {
                        b"250-fake.smtp\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n".to_vec()
                    } else {
                        b"250-fake.smtp\r\n250-STARTTLS\r\n250 8BITMIME\r\n".to_vec()
                    }
                } else if up.starts_with("STARTTLS") && !tls {
                    let _ = r.get_mut().write_all(b"220 go ahead\r\n");
                    let Some((s, v)) = accept_tls(&cfg, r.into_inner()) else {
                        break;
                    };
                    note(&|x| x.tls = Some(v.clone()));
                    tls = true;
                    r = BufReader::new(s);
                    continue;
                } else if up.starts_with("AUTH PLAIN") {
                    use base64::Engine as _;
                    let given = line[10..].trim();
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(given)
                        .unwrap_or_default();
                    let parts: Vec<String> = raw
                        .split(|b| *b == 0)
                        .map(|p| String::from_utf8_lossy(p).into())
                        .collect();
                    let version = kept.lock().unwrap()[idx].tls.clone().unwrap_or_else(|| "plain".into());
                    note(&|x| {
                        x.auth = Some(version.clone());
                        x.credentials = parts.get(1).zip(parts.get(2)).map(|(u, p)| (u.clone(), p.clone()));
                    });
                    b"235 authenticated\r\n".to_vec()
                } else if up.starts_with("MAIL FROM:") || up.starts_with("RCPT TO:") {
                    b"250 OK\r\n".to_vec()
                } else if up.starts_with("DATA") {
                    let _ = r.get_mut().write_all(b"354 end with <CRLF>.<CRLF>\r\n");
                    let mut data = String::new();
                    let mut l2 = String::new();
                    while r.read_line(&mut l2).unwrap_or(0) > 0 && l2 != ".\r\n" {
                        data.push_str(&l2);
                        l2.clear();
                    }
                    note(&|x| x.mails.push(data.clone()));
                    b"250 OK queued\r\n".to_vec()
                } else if up.starts_with("QUIT") {
                    let _ = r.get_mut().write_all(b"221 bye\r\n");
                    break;
                } else if up.starts_with("RSET") || up.starts_with("NOOP") {
                    b"250 OK\r\n".to_vec()
                } else {
                    b"502 not implemented\r\n".to_vec()
                };
                let _ = r.get_mut().write_all(&reply);
                let _ = r.get_mut().flush();
            }
        }
    });
    (port, sessions)
}

/// A project whose one alert mails through the SMTP server on `port` with `email` (the
/// rest of `notifications.email`).
fn project(port: u16, email: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        format!(
            "version: 1
connections:
  exports:
    type: file
    path: exports
notifications:
  email: {{smtp_host: 127.0.0.1, smtp_port: {port}, from: ebb@company.com{email}}}
alerts:
  - name: lag
    condition: lag_minutes > 60
    notification:
      - email: data-team@company.com
"
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    dir
}

fn alerts_test(dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["alerts", "test"])
        .current_dir(dir)
        .env("EBB_TEST_SMTP_PASSWORD", "s3cret-smtp")
        .env("EBB_RETRY_BASE_MS", "5")
        .env("EBB_RETRY_MAX_ATTEMPTS", "1")
        .output()
        .unwrap()
}

#[test]
fn alert_mail_goes_over_starttls_with_credentials_only_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = openssl_certs(dir.path(), "smtp");
    let (port, sessions) = smtp_server(server_tls(&certs), false);
    let p = project(
        port,
        &format!(
            ", tls: starttls, ca_file: {}, username: ebb, password: \"${{EBB_TEST_SMTP_PASSWORD}}\"",
            certs.ca.display()
        ),
    );
    assert!(ebb(p.path(), &["validate"]).status.success());
    let o = alerts_test(p.path());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("lag: test sent to email:data-team@company.com"),
        "{}",
        stdout(&o)
    );
    let s = sessions.lock().unwrap().clone();
    let sent: Vec<&Session> = s.iter().filter(|x| !x.mails.is_empty()).collect();
    assert_eq!(sent.len(), 1, "{s:?}");
    let tls = sent[0]
        .tls
        .as_deref()
        .expect("the connection was upgraded with STARTTLS");
    assert!(matches!(tls, "TLSv1_2" | "TLSv1_3"), "{tls}");
    assert_eq!(sent[0].auth.as_deref(), Some(tls), "AUTH only once encrypted");
    assert_eq!(
        sent[0].credentials,
        Some(("ebb".to_string(), "s3cret-smtp".to_string()))
    );
    assert!(
        sent[0].mails[0].contains("Subject: TEST [high] lag on (test)"),
        "{:?}",
        sent[0].mails
    );
    // The password never appears in what ebb printed.
    assert!(!stdout(&o).contains("s3cret-smtp") && !stderr(&o).contains("s3cret-smtp"));
}

#[test]
fn alert_mail_over_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = openssl_certs(dir.path(), "smtps");
    let (port, sessions) = smtp_server(server_tls(&certs), true);
    let p = project(port, &format!(", tls: implicit, ca_file: {}", certs.ca.display()));
    let o = alerts_test(p.path());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let s = sessions.lock().unwrap().clone();
    assert_eq!(s.iter().map(|x| x.mails.len()).sum::<usize>(), 1, "{s:?}");
    assert!(s.iter().all(|x| x.tls.is_some()), "{s:?}");
}

#[test]
fn a_certificate_from_an_untrusted_authority_is_refused_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let certs = openssl_certs(dir.path(), "rogue");
    let (port, sessions) = smtp_server(server_tls(&certs), false);
    // No `ca_file`: the test authority is not among the system's.
    let p = project(
        port,
        ", tls: starttls, username: ebb, password: \"${EBB_TEST_SMTP_PASSWORD}\"",
    );
    let o = alerts_test(p.path());
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("email:data-team@company.com FAILED"),
        "{}",
        stdout(&o)
    );
    let s = sessions.lock().unwrap().clone();
    assert!(s.iter().all(|x| x.mails.is_empty() && x.credentials.is_none()), "{s:?}");
    // And plain SMTP to a server that is not on loopback is refused before connecting.
    let p = project(port, ", tls: none");
    let text = std::fs::read_to_string(p.path().join("ebb.yaml"))
        .unwrap()
        .replace("smtp_host: 127.0.0.1", "smtp_host: smtp.company.com");
    std::fs::write(p.path().join("ebb.yaml"), text).unwrap();
    let o = ebb(p.path(), &["validate"]);
    assert!(
        stdout(&o).contains("E209") || stderr(&o).contains("E209"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

//! `sslmode=verify-full` and `verify-ca` against a PostgreSQL server of its own (a cluster
//! made with the machine's `initdb`, serving a certificate made by `openssl`), for a
//! source and for the state store: the certificate must chain to `sslrootcert` (else the
//! system's authorities) and, for `verify-full`, name the host.

use crate::certs::{openssl_certs, Certs};
use crate::support::{stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A PostgreSQL cluster on 127.0.0.1 and 127.0.0.2 with TLS, stopped on drop.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(cmd: &str) -> Output {
    Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", cmd])
        .output()
        .expect("su")
}

impl Cluster {
    /// `None` (and why) where it cannot be made: not root, or no PostgreSQL binaries.
    /// Under CI it must be made.
    fn start(certs: &Certs) -> Option<Cluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .find(|b| b.join("initdb").exists())
        });
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| stdout(&o).trim() == "0")
            .unwrap_or(false);
        let (Some(bin), true) = (bin, root) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "a PostgreSQL cluster of the test's own is required under CI (root, /usr/lib/postgresql/*/bin/initdb)"
            );
            eprintln!("skipped: needs root and PostgreSQL's initdb");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::copy(&certs.cert, dir.path().join("server.crt")).unwrap();
        std::fs::copy(&certs.key, dir.path().join("server.key")).unwrap();
        let o = Command::new("chown")
            .args(["-R", "postgres:postgres", &d])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let o = Command::new("chmod")
            .args(["600", &format!("{d}/server.key")])
            .output()
            .unwrap();
        assert!(o.status.success());
        let b = bin.display();
        let o = as_postgres(&format!(
            "{b}/initdb -D {d}/data -U postgres --auth=trust -E UTF8 >/dev/null"
        ));
        assert!(o.status.success(), "initdb: {}", stderr(&o));
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1,127.0.0.2 -c unix_socket_directories={d} -c ssl=on \
             -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key"
        );
        let o = as_postgres(&format!("{b}/pg_ctl -D {d}/data -l {d}/log -w -o '{opts}' start"));
        assert!(
            o.status.success(),
            "pg_ctl start: {}{}",
            stderr(&o),
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        Some(Cluster { dir, bin, port })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&format!(
            "{}/pg_ctl -D {}/data -m immediate stop",
            self.bin.display(),
            self.dir.path().display()
        ));
    }
}

/// A project whose model reads, through `url`, whether its own connection is encrypted.
fn project(dir: &Path, url: &str, state: Option<&str>) {
    let state = state.map(|s| format!("state:\n  url: \"{s}\"\n")).unwrap_or_default();
    std::fs::write(
        dir.join("ebb.yaml"),
        format!("version: 1\n{state}connections:\n  pg:\n    type: postgres\n    url: \"{url}\"\n  out:\n    type: file\n    path: out\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(
        dir.join("models/m.yaml"),
        "models:
  - name: m
    source:
      type: postgres
      connection: pg
      query: SELECT 1 AS id, ssl::text AS encrypted, version AS tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()
    destination:
      type: file
      connection: out
      unique_identifier: id
    mappings:
      - source: encrypted
        destination: encrypted
      - source: tls
        destination: tls
",
    )
    .unwrap();
}

fn ebb(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .current_dir(dir)
        .env_remove("EBB_PROJECT")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn verify_full_and_verify_ca_check_the_servers_certificate() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = openssl_certs(certs_dir.path(), "pg");
    let rogue = openssl_certs(certs_dir.path(), "rogue");
    let Some(c) = Cluster::start(&certs) else { return };
    let url = |host: &str, mode: &str, root: Option<&Path>| {
        let root = root
            .map(|r| format!("&sslrootcert={}", r.display()))
            .unwrap_or_default();
        format!("postgres://postgres@{host}:{}/postgres?sslmode={mode}{root}", c.port)
    };
    let p = tempfile::tempdir().unwrap();
    // verify-full, the test authority: connected, over TLS.
    project(p.path(), &url("127.0.0.1", "verify-full", Some(&certs.ca)), None);
    let o = ebb(p.path(), &["preview", "m", "--format", "json"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(r#""encrypted":"true""#), "{}", stdout(&o));
    assert!(stdout(&o).contains("TLSv1."), "{}", stdout(&o));
    // Another authority, or the system's: refused before anything is sent.
    for u in [
        url("127.0.0.1", "verify-full", Some(&rogue.ca)),
        url("127.0.0.1", "verify-full", None),
        url("127.0.0.1", "verify-ca", Some(&rogue.ca)),
    ] {
        project(p.path(), &u, None);
        let o = ebb(p.path(), &["preview", "m"]);
        assert!(!o.status.success(), "{u}: {}", stdout(&o));
        assert!(stderr(&o).contains("certificate"), "{u}: {}", stderr(&o));
    }
    // A host the certificate does not name: verify-full refuses, verify-ca accepts.
    project(p.path(), &url("127.0.0.2", "verify-full", Some(&certs.ca)), None);
    let o = ebb(p.path(), &["preview", "m"]);
    assert!(
        !o.status.success() && stderr(&o).contains("certificate"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    project(p.path(), &url("127.0.0.2", "verify-ca", Some(&certs.ca)), None);
    let o = ebb(p.path(), &["preview", "m", "--format", "json"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // The state store takes the same settings.
    let good = url("127.0.0.1", "verify-full", Some(&certs.ca));
    project(p.path(), &good, Some(&format!("{good}&ebb_schema=ebb_tls")));
    let o = ebb(p.path(), &["run", "m"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let bad = url("127.0.0.1", "verify-full", Some(&rogue.ca));
    project(p.path(), &good, Some(&format!("{bad}&ebb_schema=ebb_tls")));
    let o = ebb(p.path(), &["status"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("certificate"), "{}", stderr(&o));
}

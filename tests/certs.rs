//! Certificates for tests, made by the `openssl` command line (an implementation
//! independent of ebb and its crates): an authority and a server certificate for
//! 127.0.0.1 it signed, and a rustls server configuration serving them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate authority and a server certificate for 127.0.0.1 it signed, made by the
/// `openssl` command line.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn openssl_certs(dir: &Path, name: &str) -> Certs {
    let openssl = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (Debian's openssl package)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let f = |s: &str| format!("{name}-{s}");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    let (ca_key, ca, key, csr, cert, ext) = (
        f("ca.key"),
        f("ca.pem"),
        f("key.pem"),
        f("csr"),
        f("cert.pem"),
        f("ext"),
    );
    a.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=ebb test CA",
    ]);
    openssl(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    openssl(&a);
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    Certs {
        ca: dir.join(ca),
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// A rustls server configuration (TLS 1.2 and 1.3) for `certs`.
pub fn server_tls(certs: &Certs) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

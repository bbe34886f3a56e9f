//! HTTPS for the daemon (`daemon.tls`): the certificate chain and key read from PEM files,
//! served with rustls (ring) at TLS 1.2 or 1.3 only: rustls has no older version, so a
//! client offering only TLS 1.1 or less gets a `handshake_failure` alert and nothing else.

use crate::config::project::ServeTlsSpec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The acceptor for `spec`, paths relative to the project `dir`; the error says which file
/// and why.
pub(crate) fn acceptor(dir: &Path, spec: &ServeTlsSpec) -> Result<tokio_rustls::TlsAcceptor, String> {
    let cert_path = dir.join(&spec.cert_file);
    let key_path = dir.join(&spec.key_file);
    let read =
        |p: &Path, what: &str| std::fs::read(p).map_err(|e| format!("cannot read the {what} `{}`: {e}", p.display()));
    let cert_pem = read(&cert_path, "certificate file")?;
    let key_pem = read(&key_path, "key file")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM certificate chain: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", cert_path.display()));
    }
    // (The key's bytes never reach a message: only its file's name.)
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("`{}` holds no private key in PEM: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "the key `{}` does not fit the certificate `{}`: {e}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

//! The HTTP client every connector shares: rustls with the ring provider (installed once),
//! the platform's certificate store, gzip, and timeouts.

use std::sync::Once;
use std::time::Duration;

/// A client for talking to warehouses and CRMs.
pub fn client() -> Result<reqwest::Client, String> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .gzip(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

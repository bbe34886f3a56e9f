//! `ebb sandbox`: serves the local Salesforce-compatible API ([`crate::sandbox`]) until
//! Ctrl-C or SIGTERM, logging one line per request to stderr.

use crate::sandbox::{Faults, Sandbox, SandboxConfig};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;

/// Runs the sandbox on `127.0.0.1:port` (0: any free port). Exit 0 after a graceful stop,
/// 1 if it cannot listen; an unreadable or invalid objects file is an error (exit 2).
pub fn run(
    port: u16,
    objects: Option<&Path>,
    latency_ms: u64,
    daily_limit: u64,
    hubspot_token_lifetime_secs: u64,
    webhook: Option<crate::sandbox::WebhookTarget>,
) -> anyhow::Result<u8> {
    if let Some(w) = &webhook {
        crate::webhook::Verifier::new(
            crate::webhook::Scheme::Standard,
            &[&w.secret],
            crate::webhook::signature::DEFAULT_TOLERANCE,
        )
        .map_err(|e| anyhow::anyhow!("`--webhook-secret`: {e}"))?;
        let ok = url::Url::parse(&w.url).is_ok_and(|u| {
            u.scheme() == "https" || (u.scheme() == "http" && u.host().is_some_and(|h| crate::http::is_loopback(&h)))
        });
        if !ok {
            anyhow::bail!("`--webhook {}`: give an https URL, or http to a loopback host", w.url);
        }
    }
    let target = webhook.as_ref().map(|w| w.url.clone());
    let mut config = SandboxConfig {
        webhook,
        daily_api_limit: daily_limit,
        faults: Faults {
            latency: Duration::from_millis(latency_ms),
            ..Faults::default()
        },
        log_requests: true,
        hubspot: crate::sandbox::HubSpotConfig {
            latency: Duration::from_millis(latency_ms),
            access_token_lifetime: Duration::from_secs(hubspot_token_lifetime_secs.max(1)),
            ..Default::default()
        },
        ..SandboxConfig::default()
    };
    if let Some(path) = objects {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the objects file `{}`", path.display()))?;
        config = config
            .with_objects_file(&text)
            .map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
    }
    let names: Vec<String> = config.objects.iter().map(|o| o.name.clone()).collect();
    let (client_id, client_secret) = (config.client_id.clone(), config.client_secret.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Installed before the URL is printed: whoever reads it may signal right away.
        let stop = shutdown_signal();
        let sandbox = match Sandbox::start(&format!("127.0.0.1:{port}"), config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(1);
            }
        };
        println!("ebb sandbox: a local Salesforce-compatible API");
        println!("  instance_url   {}", sandbox.url());
        println!("  token URL      {}/services/oauth2/token", sandbox.url());
        println!("  client_id      {client_id}");
        println!("  client_secret  {client_secret}");
        println!("  objects        {}", names.join(", "));
        println!("  daily limit    {daily_limit} API calls");
        println!(
            "  hubspot        {}/crm/v3/ (Authorization: Bearer {})",
            sandbox.url(),
            sandbox.hubspot().token()
        );
        let (hs_id, hs_secret, hs_refresh) = sandbox.hubspot().oauth_app();
        println!(
            "  hubspot oauth  {}/oauth/v1/token (client_id {hs_id}, client_secret {hs_secret}, refresh_token {hs_refresh}; access tokens live {hubspot_token_lifetime_secs} s)",
            sandbox.url()
        );
        if let Some(t) = &target {
            println!("  webhooks       every record written is POSTed to {t}, signed (Standard Webhooks)");
        }
        println!("Ctrl-C stops it.");
        stop.await;
        eprintln!("ebb sandbox: stopping");
        sandbox.stop().await;
        Ok(0)
    })
}

/// Installs the handlers of SIGINT (Ctrl-C) and SIGTERM now, and returns a future that
/// completes at the first of them.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

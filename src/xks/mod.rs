//! `kmsfs xks serve`: an External Key Store (XKS) proxy, as AWS's "XKS Proxy API
//! Specification" (v1) describes it, in front of a PKCS#11 token. AWS KMS (or our own KMS,
//! `kms::local`'s custom key stores) sends it `health`, `metadata`, `encrypt` and
//! `decrypt` requests, signed with SigV4 for the service `kms-xks-proxy`; the keys are
//! AES-256 objects in the token that never leave it, and AES-GCM runs in the token.
//!
//! - [`config`]: the proxy's JSON configuration (listen address, URI path prefix, token,
//!   SigV4 credentials read from files or systemd credentials, key ids and usages, TLS
//!   and mutual TLS).
//! - [`api`]: the four operations, their validation and the spec's error names and
//!   statuses; every request's `requestMetadata` is logged, never a plaintext.
//! - [`client`]: the KMS's side, used by the embedded KMS's external key stores
//!   (`kms::local`): signed requests with a deadline, answers checked.
//! - [`token`]: the key objects and AES-GCM in the token, a session pool, the deep
//!   health check with the proxy's own test key.

pub mod api;
pub mod client;
pub mod config;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::{fail, Result};

pub use config::Config;

/// Serves the proxy described by `cfg` until SIGTERM/SIGINT; `ready` gets the bound
/// address once the listener accepts connections.
pub fn serve(cfg: Config, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let listen = cfg.listen;
    if cfg.tls.is_none() && !listen.ip().is_loopback() && !cfg.insecure_http {
        fail!("refusing to serve the XKS proxy on {listen} without TLS: give \"tls\" in the configuration (or \"insecure_http\": true)");
    }
    let tls = match &cfg.tls {
        Some(t) => Some(crate::kms::http::server::load_tls(
            &t.cert,
            &t.key,
            t.client_ca.as_ref(),
        )?),
        None => None,
    };
    if let Some(t) = &cfg.tls {
        if t.client_subject.is_some() && t.client_ca.is_none() {
            fail!("tls.client_subject needs tls.client_ca (the roots client certificates must chain to)");
        }
    }
    let cfg_subject = cfg.tls.as_ref().and_then(|t| t.client_subject.clone());
    let path = cfg.path.clone();
    let state = Arc::new(api::Proxy::new(cfg)?);
    // SIGHUP re-reads the credentials and keys: rotate a SigV4 credential by adding the
    // new one, updating the key store, then removing the old one, never disconnecting.
    if let Some(path) = path {
        let st = Arc::downgrade(&state);
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGHUP])?;
        std::thread::spawn(move || {
            for _ in signals.forever() {
                let Some(st) = st.upgrade() else { return };
                match Config::load(&path).and_then(|c| st.reload(c)) {
                    Ok(()) => {
                        tracing::info!("reloaded credentials and keys from {}", path.display())
                    }
                    Err(e) => tracing::warn!(
                        "reload of {} refused, keeping the old configuration: {e:#}",
                        path.display()
                    ),
                }
            }
        });
    }
    let detail = format!("token {:?}, path {}", state.token.label(), state.base);
    let opts = crate::kms::http::server::ServeOpts {
        listen,
        tls: None,
        insecure_http: true,
        max_connections: 256,
        idle_timeout: std::time::Duration::from_secs(30),
        max_per_source: 128,
        limits: Default::default(),
    };
    let subject = cfg_subject;
    crate::kms::http::server::serve_app(
        api::router(state),
        &opts,
        tls,
        subject,
        "kmsfs XKS proxy",
        &detail,
        ready,
    )
}

//! SIP over secure WebSocket (RFC 7118 `wss`) to the registrar, trusting the configured CA.
//!
//! rsipstack 0.7.14 dials WebSocket flows itself through tokio-tungstenite's default connector,
//! which has no way to take the `[sip] ca_cert` (nor the client certificate): the driver dials
//! the `wss` flow here with rustls under the same trust policy as the stack's TLS transport
//! (only the configured CA, no implicit roots) and hands the connection to the stack, which
//! then sends and receives on it like on any flow it opened.

use std::sync::Arc;

use rsipstack::transport::SipAddr;
use rsipstack::transport::SipConnection;
use rsipstack::transport::websocket::{WebSocketConnection, WebSocketInner};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use telecart_core::config::SipConfig;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

/// Why a `wss` flow could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WssError {
    /// A certificate or key file named in `[sip]` cannot be read or parsed.
    #[error("{0}")]
    Config(String),
    /// TCP, TLS or the WebSocket upgrade failed.
    #[error("wss {url}: {message}")]
    Connect {
        /// The URL dialled.
        url: String,
        /// What failed.
        message: String,
    },
}

/// The rustls client configuration for `wss` flows: trust only `ca_cert` (none configured: no
/// anchor at all, so every server fails verification, as on the stack's TLS transport), and
/// present `client_cert`/`client_key` when both are set.
pub(crate) fn client_config(config: &SipConfig) -> Result<Arc<rustls::ClientConfig>, WssError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &config.ca_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| WssError::Config(format!("sip ca_cert {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(WssError::Config(format!(
                "sip ca_cert {}: no certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| WssError::Config(format!("sip ca_cert {}: {e}", path.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    WssError::Config(format!("sip client_cert {}: {e}", cert.display()))
                })?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| WssError::Config(format!("sip client_key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| WssError::Config(format!("sip client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// Opens a `wss` flow to `remote` (a `transport=wss` registrar address) and returns it as the
/// stack's connection, keyed by `remote` so that the stack's own lookups find it.
pub(crate) async fn dial(
    remote: &SipAddr,
    tls: Arc<rustls::ClientConfig>,
    cancel: CancellationToken,
) -> Result<SipConnection, WssError> {
    let host = match &remote.addr.host {
        rsipstack::sip::Host::Domain(domain) => domain.to_string(),
        rsipstack::sip::Host::IpAddr(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        rsipstack::sip::Host::IpAddr(ip) => ip.to_string(),
    };
    // RFC 7118 §7: no default port of its own; the registrar URI names it, else 443.
    let port = remote.addr.port.as_ref().map_or(443, |p| p.value());
    let url = format!("wss://{host}:{port}/");
    let failed = |message: String| WssError::Connect {
        url: url.clone(),
        message,
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| failed(e.to_string()))?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("sip"),
    );
    let (stream, _) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    let local = stream
        .get_ref()
        .get_ref()
        .local_addr()
        .map_err(|e| failed(e.to_string()))?;
    let (sink, read) = futures_util::StreamExt::split(stream);
    Ok(SipConnection::WebSocket(WebSocketConnection {
        inner: Arc::new(WebSocketInner {
            local_addr: SipAddr {
                r#type: Some(rsipstack::sip::transport::Transport::Wss),
                addr: local.into(),
            },
            remote_addr: remote.clone(),
            ws_sink: tokio::sync::Mutex::new(sink),
            ws_read: tokio::sync::Mutex::new(Some(read)),
        }),
        cancel_token: Some(cancel),
    }))
}

//! rustls server configuration with client-certificate authentication.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::IngestError;

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IngestError> {
    let v: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| IngestError::Tls(format!("{}: {e}", path.display())))?
        .collect();
    let v = v.map_err(|e| IngestError::Tls(format!("{}: {e}", path.display())))?;
    if v.is_empty() {
        return Err(IngestError::Tls(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(v)
}

/// A TLS 1.2/1.3 server configuration presenting `cert`/`key` and requiring a client certificate
/// that chains to `client_ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>, IngestError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(client_ca)? {
        roots
            .add(c)
            .map_err(|e| IngestError::Tls(format!("{}: {e}", client_ca.display())))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| IngestError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| IngestError::Tls(format!("{}: {e}", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IngestError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key)
        .map_err(|e| IngestError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The common name of a DER certificate's subject.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

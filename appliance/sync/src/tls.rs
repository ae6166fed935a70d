//! rustls client configuration: the ingest server must chain to the configured CA (system roots are
//! not trusted), and the device presents its certificate.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::SyncError;

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SyncError> {
    let err = |e: &dyn std::fmt::Display| SyncError::Tls(format!("{}: {e}", path.display()));
    let v: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&e))?;
    if v.is_empty() {
        return Err(SyncError::Tls(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(v)
}

/// Client configuration trusting only `ca` and presenting `cert` with `key` (mode 0600 or 0400:
/// a key readable by group or others is refused).
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<rustls::ClientConfig, SyncError> {
    let mode = std::fs::metadata(key)
        .map_err(|e| SyncError::Tls(format!("{}: {e}", key.display())))?
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(SyncError::Tls(format!(
            "{}: private key is accessible by group or others (mode {mode:o})",
            key.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| SyncError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let k = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| SyncError::Tls(format!("{}: {e}", key.display())))?;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(cert)?, k)
        .map_err(|e| SyncError::Tls(format!("{}: {e}", cert.display())))
}

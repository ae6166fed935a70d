//! Which TLS servers the cart trusts: the system's CA store plus, for
//! hospital networks with their own CA (or TLS inspection), the PEM file in
//! `webrtc.ca_file`. One place for the WHIP endpoint (HTTPS) and `turns:`
//! TURN servers, both on rustls with aws-lc-rs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The CA certificates to trust: the system store and `ca_file`.
pub fn trusted_roots(ca_file: Option<&Path>) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "system CA store: a certificate could not be loaded");
    }
    let mut roots = native.certs;
    if let Some(path) = ca_file {
        let extra: Vec<_> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("webrtc.ca_file {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("webrtc.ca_file {}: not PEM certificates", path.display()))?;
        anyhow::ensure!(
            !extra.is_empty(),
            "webrtc.ca_file {}: no certificate in it",
            path.display()
        );
        roots.extend(extra);
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "no trusted CA certificates: install the system CA store (ca-certificates) or set webrtc.ca_file"
    );
    Ok(roots)
}

/// The cart's TLS client configuration (TURN over TLS).
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(trusted_roots(ca_file)?);
    anyhow::ensure!(added > 0, "no usable CA certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The same trust for ureq (the WHIP client).
pub fn ureq_tls(ca_file: Option<&Path>) -> anyhow::Result<ureq::tls::TlsConfig> {
    let roots: Vec<ureq::tls::Certificate<'static>> = trusted_roots(ca_file)?
        .into_iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let e = trusted_roots(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            format!("{e:#}").contains("webrtc.ca_file /nonexistent/ca.pem"),
            "{e:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = trusted_roots(Some(&empty)).unwrap_err();
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
    }

    #[test]
    fn a_ca_file_adds_to_the_roots() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["test CA".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        let without = trusted_roots(None).map(|r| r.len()).unwrap_or(0);
        assert_eq!(trusted_roots(Some(&path)).unwrap().len(), without + 1);
        assert!(client_config(Some(&path)).is_ok());
        assert!(ureq_tls(Some(&path)).is_ok());
    }
}

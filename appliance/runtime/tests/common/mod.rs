//! Helpers shared by the runtime's test binaries.

#![allow(clippy::unwrap_used, dead_code)]

/// A private CA and a `localhost` certificate it signed, as a hospital's own PKI would issue.
pub(crate) struct PrivatePki {
    /// The CA certificate (PEM): what `webrtc.ca_file` names.
    pub(crate) ca_pem: String,
    /// The server certificate.
    pub(crate) cert: rcgen::Certificate,
    /// The server's key.
    pub(crate) key: rcgen::KeyPair,
}

pub(crate) fn private_pki() -> PrivatePki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    PrivatePki {
        ca_pem: ca.pem(),
        cert,
        key,
    }
}

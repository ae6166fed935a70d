//! The `[sip]` section: registration with a PBX or SIP trunk and the call policy (see docs/sip.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[sip]`: registrars, identity, credentials, transport and TLS; `[sip.policy]`: who is answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Run the SIP endpoint at all.
    pub enabled: bool,
    /// Registrar URIs, primary first (`sip:pbx.example.org`, `sip:10.0.0.5:5070`); later ones are
    /// tried when the one before fails.
    pub registrars: Vec<String>,
    /// User part of the cart's address of record (`sip:{user}@{domain}`).
    pub user: String,
    /// Domain of the address of record; empty: the primary registrar's host.
    pub domain: String,
    /// Digest user name when it differs from `user`.
    pub auth_user: String,
    /// Digest password; prefer `password_file` so the secret stays out of the config.
    pub password: String,
    /// File holding the digest password (first line; mode 0600/0400).
    pub password_file: Option<PathBuf>,
    /// Signalling transport to the registrar.
    pub transport: SipTransport,
    /// Local address SIP binds (port 0: any free port).
    pub listen: SocketAddr,
    /// Registration lifetime asked of the registrar.
    pub expires_secs: u32,
    /// NAT keep-alive period (a CRLF ping on the flow); 0 disables.
    pub keepalive_secs: u32,
    /// CA certificate(s) (PEM) the registrar's TLS certificate must chain to (tls and wss).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// First UDP port for RTP (0 with `rtp_port_max` 0: any free port).
    pub rtp_port_min: u16,
    /// Last UDP port for RTP.
    pub rtp_port_max: u16,
    /// The URI the call button dials; empty: the button does not place SIP calls.
    pub call_uri: String,
    /// SRTP in the offers of the cart's own calls; `mandatory` also refuses incoming calls whose
    /// offer has no usable SRTP (488 with a `Warning` saying why, before anything rings).
    pub srtp: SipSrtp,
    /// How the cart's own offers agree SRTP keys (when `srtp` is not `off`): `"sdes"` (the
    /// default) puts keys in the SDP (`a=crypto`, RFC 4568; anyone who reads the signalling reads
    /// them, so pair it with `transport = "tls"`); `"dtls"` offers DTLS-SRTP (RFC 5763/5764,
    /// `UDP/TLS/RTP/SAVPF`, `a=fingerprint`, `a=setup:actpass`): keys come from a DTLS handshake
    /// on the media path, authenticated by the certificate fingerprints in the SDP. DTLS is
    /// always SRTP, so with `"dtls"` a peer that cannot do DTLS-SRTP cannot take the call even
    /// when `srtp = "optional"`. Incoming calls are answered in whichever the caller offers.
    pub srtp_keying: SipSrtpKeying,
    /// Who is answered, rung or refused.
    pub policy: SipPolicyConfig,
}

/// Signalling transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// UDP (RFC 3261).
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (rustls).
    Tls,
    /// WebSocket (RFC 7118).
    Ws,
    /// WebSocket over TLS.
    Wss,
}

/// How the cart's own calls (the call button) ask for SDES-SRTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipSrtp {
    /// Offer `RTP/SAVP(F)` with keys: a peer that cannot encrypt cannot take the call.
    Mandatory,
    /// Offer `RTP/AVP(F)` with keys (best-effort SRTP): encrypted when the peer answers a key.
    Optional,
    /// Plain RTP, no keys.
    Off,
}

/// How the cart's own offers agree SRTP keys (`[sip] srtp_keying`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipSrtpKeying {
    /// SDES: keys in the SDP (`a=crypto`, RFC 4568).
    #[default]
    Sdes,
    /// DTLS-SRTP: keys from a DTLS handshake on the media path (RFC 5763/5764).
    Dtls,
}

/// `[sip.policy]`: what happens to an incoming call, by caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipPolicyConfig {
    /// Callers answered automatically: `user@host`, `@host` (anyone at that host) or `*`.
    pub allowed_callers: Vec<String>,
    /// Delay before an allowed call is answered (the cart rings meanwhile).
    pub auto_answer_delay_ms: u32,
    /// Answer with the microphone muted; the nurse unmutes at the cart.
    pub mute_on_answer: bool,
    /// Callers not allowed: ring the cart for a person to answer, or refuse.
    pub others: OtherCallers,
    /// How long an unanswered ringing call lasts before it is refused with 480.
    pub ring_timeout_secs: u32,
}

/// What happens to callers that are not in `allowed_callers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherCallers {
    /// Ring (LEDs, console) until someone answers or the ring times out.
    Ring,
    /// Refuse with 403 Forbidden.
    Reject,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            registrars: Vec::new(),
            user: String::new(),
            domain: String::new(),
            auth_user: String::new(),
            password: String::new(),
            password_file: None,
            transport: SipTransport::Udp,
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            expires_secs: 300,
            keepalive_secs: 25,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            rtp_port_min: 0,
            rtp_port_max: 0,
            call_uri: String::new(),
            srtp: SipSrtp::Optional,
            srtp_keying: SipSrtpKeying::Sdes,
            policy: SipPolicyConfig::default(),
        }
    }
}

impl Default for SipPolicyConfig {
    fn default() -> Self {
        Self {
            allowed_callers: Vec::new(),
            auto_answer_delay_ms: 0,
            mute_on_answer: false,
            others: OtherCallers::Reject,
            ring_timeout_secs: 60,
        }
    }
}

fn is_sip_uri(s: &str) -> bool {
    let rest = s.strip_prefix("sips:").or_else(|| s.strip_prefix("sip:"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

impl SipConfig {
    /// Checks ranges and consistency. Returns `(key, message)` pairs, keys as in the TOML file
    /// (`sip.policy.allowed_callers`); empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        let mut err = |k: &str, m: String| e.push((format!("sip.{k}"), m));
        for r in &self.registrars {
            if !is_sip_uri(r) {
                err("registrars", format!("{r:?} is not a sip: or sips: URI"));
            }
        }
        if self.enabled {
            if self.registrars.is_empty() {
                err(
                    "registrars",
                    "at least one is needed when sip.enabled = true".into(),
                );
            }
            if self.user.is_empty() {
                err("user", "required when sip.enabled = true".into());
            }
        }
        if !self.password.is_empty() && self.password_file.is_some() {
            err("password", "set password or password_file, not both".into());
        }
        if !(60..=86_400).contains(&self.expires_secs) {
            err(
                "expires_secs",
                format!("must be 60 to 86400, got {}", self.expires_secs),
            );
        }
        if self.keepalive_secs > 3600 {
            err(
                "keepalive_secs",
                format!("must be 0 to 3600, got {}", self.keepalive_secs),
            );
        }
        let tls = matches!(self.transport, SipTransport::Tls | SipTransport::Wss);
        for (k, p) in [
            ("ca_cert", &self.ca_cert),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    err(k, "must be an absolute path".into());
                }
                if !tls {
                    err(k, "is only used with transport = \"tls\" or \"wss\"".into());
                }
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            err(
                "client_cert",
                "set both client_cert and client_key, or neither".into(),
            );
        }
        if (self.rtp_port_min == 0) != (self.rtp_port_max == 0) {
            err(
                "rtp_port_min",
                "set both rtp_port_min and rtp_port_max, or neither".into(),
            );
        } else if self.rtp_port_min != 0
            && (self.rtp_port_min < 1024 || self.rtp_port_max < self.rtp_port_min.saturating_add(1))
        {
            err(
                "rtp_port_min",
                format!(
                    "({}) must be at least 1024 and leave room for two ports below rtp_port_max ({})",
                    self.rtp_port_min, self.rtp_port_max
                ),
            );
        }
        if !self.call_uri.is_empty() && !is_sip_uri(&self.call_uri) {
            err(
                "call_uri",
                format!("{:?} is not a sip: or sips: URI", self.call_uri),
            );
        }
        let p = &self.policy;
        for c in &p.allowed_callers {
            let ok = c == "*"
                || (!c.is_empty()
                    && !c.contains(char::is_whitespace)
                    && !c.starts_with("sip")
                    && c.matches('@').count() == 1
                    && !c.ends_with('@'));
            if !ok {
                err(
                    "policy.allowed_callers",
                    format!("{c:?} must be user@host, @host or *"),
                );
            }
        }
        if p.auto_answer_delay_ms > 60_000 {
            err(
                "policy.auto_answer_delay_ms",
                format!("must be 0 to 60000, got {}", p.auto_answer_delay_ms),
            );
        }
        if !(5..=600).contains(&p.ring_timeout_secs) {
            err(
                "policy.ring_timeout_secs",
                format!("must be 5 to 600, got {}", p.ring_timeout_secs),
            );
        }
        e
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_keys() {
        assert!(SipConfig::default().validate().is_empty());
        let mut c = SipConfig {
            enabled: true,
            ..SipConfig::default()
        };
        c.registrars = vec!["pbx.example.org".into()];
        c.ca_cert = Some("/etc/ca.pem".into());
        c.policy.allowed_callers = vec!["sip:doc@x".into(), "@hospital.org".into()];
        let keys: Vec<_> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                "sip.registrars",
                "sip.user",
                "sip.ca_cert",
                "sip.policy.allowed_callers"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<SipConfig>("registrar = \"sip:x\"").is_err());
        assert!(toml::from_str::<SipConfig>("[policy]\nallow = []").is_err());
        let c: SipConfig = toml::from_str(
            "transport = \"tls\"\nregistrars = [\"sips:pbx\"]\n[policy]\nothers = \"ring\"\n",
        )
        .unwrap();
        assert_eq!(
            (c.transport, c.policy.others, c.expires_secs),
            (SipTransport::Tls, OtherCallers::Ring, 300)
        );
    }

    #[test]
    fn srtp_keying_is_sdes_by_default_dtls_on_request_and_nothing_else() {
        assert_eq!(SipConfig::default().srtp_keying, SipSrtpKeying::Sdes);
        let c: SipConfig =
            toml::from_str("srtp = \"mandatory\"\nsrtp_keying = \"dtls\"\n").unwrap();
        assert_eq!(
            (c.srtp, c.srtp_keying),
            (SipSrtp::Mandatory, SipSrtpKeying::Dtls)
        );
        let e = toml::from_str::<SipConfig>("srtp_keying = \"zrtp\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("srtp_keying") && e.contains("`sdes`") && e.contains("`dtls`"),
            "{e}"
        );
    }
}

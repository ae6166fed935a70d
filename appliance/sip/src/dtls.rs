//! DTLS-SRTP (RFC 5763, RFC 5764) for SIP media without ICE: the `a=fingerprint` (RFC 8122) and
//! `a=setup` (RFC 4145) attributes, which side starts the handshake, and one sans-IO DTLS
//! endpoint per media component whose handshake ends in SRTP master keys for [`crate::srtp`].
//!
//! The DTLS itself is `dimpl` (the str0m authors' sans-IO DTLS 1.2/1.3, on the same aws-lc-rs
//! crypto str0m uses). dimpl does no certificate validation: the peer's leaf certificate is
//! checked here against the fingerprint its SDP carried (constant-time), and keys are handed out
//! only after that check passed. A handshake that has not produced keys by
//! [`HANDSHAKE_TIMEOUT`] is an error, so a call whose peer never speaks DTLS ends with a reason
//! instead of sitting silent.
//!
//! The cart has one self-signed ECDSA P-256 certificate per process ([`local_identity`]); its
//! private key never leaves this module and prints as `<redacted>`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::srtp::{CryptoSuite, MasterKey};

/// How long a handshake may take from the endpoint's start to SRTP keys. dimpl retransmits a
/// lost flight after 1 s, doubling; this leaves room for four losses.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest `a=fingerprint` value read (sha-512 in hex pairs is 191 characters).
const MAX_FINGERPRINT_LEN: usize = 256;
/// Largest DTLS record dimpl is allowed to hand us in one poll.
const MAX_RECORD: usize = 16 * 1024;
/// DTLS records the endpoint keeps queued for sending before it drops the oldest.
const MAX_QUEUED: usize = 64;

/// Why DTLS-SRTP could not be set up or went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// An `a=fingerprint` value that breaks RFC 8122's grammar.
    #[error("malformed a=fingerprint: {0}")]
    MalformedFingerprint(&'static str),
    /// A hash function the cart does not check certificates with (sha-1, md5, …).
    #[error("unsupported fingerprint hash {0} (the cart checks sha-256, sha-384, sha-512)")]
    UnsupportedHash(String),
    /// An `a=setup` value that is not active, passive, actpass or holdconn, or one that does
    /// not fit where it appears (actpass in an answer, holdconn).
    #[error("a=setup: {0}")]
    Setup(&'static str),
    /// The process certificate could not be made.
    #[error("no DTLS certificate: {0}")]
    Certificate(String),
    /// The peer's certificate does not match any fingerprint from its SDP: someone else is
    /// answering on the media path.
    #[error("DTLS peer certificate does not match the a=fingerprint of its SDP")]
    FingerprintMismatch,
    /// The handshake finished without the peer showing a certificate.
    #[error("DTLS peer sent no certificate")]
    NoPeerCertificate,
    /// The handshake did not produce SRTP keys within [`HANDSHAKE_TIMEOUT`].
    #[error("DTLS handshake did not complete within {}s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    /// The handshake produced an SRTP profile the cart has no context for.
    #[error("DTLS-SRTP negotiated an unsupported SRTP profile {0}")]
    UnsupportedProfile(String),
    /// The DTLS layer failed (alert, protocol violation, no common cipher or SRTP profile).
    #[error("DTLS failed: {0}")]
    Protocol(String),
    /// The peer closed DTLS (close_notify) before keys existed.
    #[error("DTLS closed by the peer before SRTP keys existed")]
    Closed,
}

/// Hash functions of `a=fingerprint` the cart verifies certificates with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FingerprintHash {
    /// sha-256 (what every DTLS-SRTP endpoint sends; the one the cart sends).
    Sha256,
    /// sha-384.
    Sha384,
    /// sha-512.
    Sha512,
}

impl FingerprintHash {
    fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha-256",
            Self::Sha384 => "sha-384",
            Self::Sha512 => "sha-512",
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn digest(self, der: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(der).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(der).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(der).to_vec(),
        }
    }
}

/// A certificate fingerprint (`a=fingerprint:sha-256 AB:CD:…`, RFC 8122 §5).
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    hash: FingerprintHash,
    digest: Vec<u8>,
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hash.name())?;
        for (i, b) in self.digest.iter().enumerate() {
            write!(f, "{}{b:02X}", if i == 0 { ' ' } else { ':' })?;
        }
        Ok(())
    }
}

impl Fingerprint {
    /// Parses the value of an `a=fingerprint:` line (`sha-256 AB:CD:…`); the hash name is
    /// case-insensitive, the hex pairs are not.
    pub fn parse(value: &str) -> Result<Self, DtlsError> {
        if value.len() > MAX_FINGERPRINT_LEN {
            return Err(DtlsError::MalformedFingerprint("too long"));
        }
        let mut fields = value.split_ascii_whitespace();
        let name = fields
            .next()
            .ok_or(DtlsError::MalformedFingerprint("empty"))?;
        let hex = fields.next().ok_or(DtlsError::MalformedFingerprint(
            "no fingerprint after the hash name",
        ))?;
        if fields.next().is_some() {
            return Err(DtlsError::MalformedFingerprint("trailing text"));
        }
        let hash = match name.to_ascii_lowercase().as_str() {
            "sha-256" => FingerprintHash::Sha256,
            "sha-384" => FingerprintHash::Sha384,
            "sha-512" => FingerprintHash::Sha512,
            _ => return Err(DtlsError::UnsupportedHash(name.chars().take(16).collect())),
        };
        let digest = hex
            .split(':')
            .map(|pair| {
                if pair.len() != 2 || !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(DtlsError::MalformedFingerprint(
                        "not colon-separated hex pairs",
                    ));
                }
                u8::from_str_radix(pair, 16)
                    .map_err(|_| DtlsError::MalformedFingerprint("not colon-separated hex pairs"))
            })
            .collect::<Result<Vec<u8>, _>>()?;
        if digest.len() != hash.len() {
            return Err(DtlsError::MalformedFingerprint(
                "length does not fit the hash",
            ));
        }
        Ok(Self { hash, digest })
    }

    /// The fingerprint of a DER certificate.
    pub fn of_certificate(hash: FingerprintHash, der: &[u8]) -> Self {
        Self {
            hash,
            digest: hash.digest(der),
        }
    }

    /// Whether `der` is the certificate this fingerprint names (constant-time in the digest).
    pub fn matches(&self, der: &[u8]) -> bool {
        bool::from(self.hash.digest(der).ct_eq(&self.digest))
    }
}

/// The `a=setup` attribute (RFC 4145 §4, RFC 5763 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// `active`: this side starts the DTLS handshake (DTLS client).
    Active,
    /// `passive`: this side waits for the handshake (DTLS server).
    Passive,
    /// `actpass`: an offerer leaving the choice to the answerer.
    ActPass,
    /// `holdconn`: no connection for now.
    HoldConn,
}

impl Setup {
    /// Parses an `a=setup:` value.
    pub fn parse(value: &str) -> Result<Self, DtlsError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(Self::Active),
            "passive" => Ok(Self::Passive),
            "actpass" => Ok(Self::ActPass),
            "holdconn" => Ok(Self::HoldConn),
            _ => Err(DtlsError::Setup("not active, passive, actpass or holdconn")),
        }
    }

    /// The attribute value.
    pub fn attr(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::ActPass => "actpass",
            Self::HoldConn => "holdconn",
        }
    }
}

/// Which side of the DTLS handshake the cart is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    /// DTLS client: sends the ClientHello (`a=setup:active`).
    Client,
    /// DTLS server: waits for the ClientHello (`a=setup:passive`).
    Server,
}

/// The cart answering an offer's `a=setup` (absent means `active`, RFC 4145 §4): our
/// attribute and our role. RFC 5763 §5: an `actpass` offer is answered `active`, so the
/// handshake starts as soon as our answer is out, without waiting for the offerer.
pub fn answer_setup(offered: Option<Setup>) -> Result<(Setup, DtlsRole), DtlsError> {
    match offered.unwrap_or(Setup::Active) {
        Setup::ActPass | Setup::Passive => Ok((Setup::Active, DtlsRole::Client)),
        Setup::Active => Ok((Setup::Passive, DtlsRole::Server)),
        Setup::HoldConn => Err(DtlsError::Setup("holdconn offered: no media connection")),
    }
}

/// The cart's role after offering `actpass` and getting `answered` back (absent means
/// `active`, RFC 4145 §4: the answerer connects).
pub fn offerer_role(answered: Option<Setup>) -> Result<DtlsRole, DtlsError> {
    match answered.unwrap_or(Setup::Active) {
        Setup::Active => Ok(DtlsRole::Server),
        Setup::Passive => Ok(DtlsRole::Client),
        Setup::ActPass => Err(DtlsError::Setup("actpass is not allowed in an answer")),
        Setup::HoldConn => Err(DtlsError::Setup("holdconn answered: no media connection")),
    }
}

/// A certificate and its private key, with the fingerprint our SDP carries.
pub struct Identity {
    certificate: dimpl::DtlsCertificate,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, <redacted>)", self.fingerprint)
    }
}

impl Identity {
    /// A fresh self-signed ECDSA P-256 certificate (random serial, a year's validity).
    pub fn generate() -> Result<Self, DtlsError> {
        let certificate = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let fingerprint =
            Fingerprint::of_certificate(FingerprintHash::Sha256, &certificate.certificate);
        Ok(Self {
            certificate,
            fingerprint,
        })
    }

    /// The sha-256 fingerprint of the certificate (for `a=fingerprint`).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.certificate.private_key.zeroize();
    }
}

/// The process's DTLS identity, made on first use and kept until exit (RFC 5763 allows one
/// certificate for every call; the fingerprint in each SDP binds it to the signalling).
pub fn local_identity() -> Result<&'static Identity, DtlsError> {
    static IDENTITY: OnceLock<Result<Identity, DtlsError>> = OnceLock::new();
    IDENTITY
        .get_or_init(Identity::generate)
        .as_ref()
        .map_err(Clone::clone)
}

/// What one negotiated stream needs to run DTLS-SRTP: our side of the handshake, our
/// fingerprint (sent in our SDP) and the peer's (its certificate must match one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtlsParams {
    /// Our `a=setup` in the SDP we send.
    pub setup: Setup,
    /// Our role in the handshake.
    pub role: DtlsRole,
    /// Our certificate's fingerprint.
    pub local: Fingerprint,
    /// The peer's fingerprints (every usable `a=fingerprint` of its stream).
    pub remote: Vec<Fingerprint>,
}

/// SRTP master keys a finished handshake produced for one component: `local` protects what we
/// send, `remote` opens what the peer sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtlsKeys {
    /// Our sending key and salt.
    pub local: MasterKey,
    /// The peer's sending key and salt.
    pub remote: MasterKey,
}

fn suite_of(profile: dimpl::SrtpProfile) -> Result<CryptoSuite, DtlsError> {
    match profile {
        dimpl::SrtpProfile::AES128_CM_SHA1_80 => Ok(CryptoSuite::AesCm128HmacSha1_80),
        dimpl::SrtpProfile::AEAD_AES_128_GCM => Ok(CryptoSuite::AeadAes128Gcm),
        dimpl::SrtpProfile::AEAD_AES_256_GCM => Ok(CryptoSuite::AeadAes256Gcm),
        other => Err(DtlsError::UnsupportedProfile(other.to_string())),
    }
}

/// Splits exported keying material (RFC 5764 §4.2: client key, server key, client salt, server
/// salt) into our key and the peer's.
pub fn split_keying_material(
    suite: CryptoSuite,
    material: &[u8],
    role: DtlsRole,
) -> Result<DtlsKeys, DtlsError> {
    let (k, s) = (suite.key_len(), suite.salt_len());
    if material.len() != 2 * (k + s) {
        return Err(DtlsError::Protocol(format!(
            "keying material of {} bytes for {suite}",
            material.len()
        )));
    }
    let (client_key, rest) = material.split_at(k);
    let (server_key, rest) = rest.split_at(k);
    let (client_salt, server_salt) = rest.split_at(s);
    let join = |key: &[u8], salt: &[u8]| {
        let mut m = Zeroizing::new(Vec::with_capacity(k + s));
        m.extend_from_slice(key);
        m.extend_from_slice(salt);
        MasterKey::from_material(suite, &m)
            .map_err(|e| DtlsError::Protocol(format!("SRTP key: {e}")))
    };
    let client = join(client_key, client_salt)?;
    let server = join(server_key, server_salt)?;
    Ok(match role {
        DtlsRole::Client => DtlsKeys {
            local: client,
            remote: server,
        },
        DtlsRole::Server => DtlsKeys {
            local: server,
            remote: client,
        },
    })
}

/// Whether a datagram on a media port is DTLS (RFC 7983 §7: first byte 20 to 63).
pub fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Handshaking,
    /// Keys were made (and maybe taken): DTLS is only heard for close and stray records now.
    Keyed,
    /// The handshake failed; nothing more happens.
    Failed,
}

/// One DTLS-SRTP endpoint (one media component), sans-IO: feed it datagrams that
/// [`is_dtls`] and the time, send what [`Self::poll_transmit`] gives, wake at
/// [`Self::poll_timeout`], and take the SRTP keys from [`Self::take_keys`] once the handshake
/// finished and the peer's certificate matched.
pub struct DtlsEndpoint {
    dtls: dimpl::Dtls,
    role: DtlsRole,
    remote: Vec<Fingerprint>,
    state: State,
    peer_verified: bool,
    deadline: Instant,
    next_timeout: Option<Instant>,
    outgoing: VecDeque<Vec<u8>>,
    keys: Option<DtlsKeys>,
    suite: Option<CryptoSuite>,
    started: Instant,
    keyed_after: Option<Duration>,
}

impl fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl DtlsEndpoint {
    /// An endpoint for `role` with our `identity`, accepting a peer whose certificate matches
    /// one of `remote`. A client has its ClientHello ready to send at once.
    pub fn new(
        identity: &Identity,
        role: DtlsRole,
        remote: Vec<Fingerprint>,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        if remote.is_empty() {
            return Err(DtlsError::MalformedFingerprint("the peer gave none"));
        }
        let config = dimpl::Config::builder()
            .handshake_timeout(HANDSHAKE_TIMEOUT)
            .build()
            .map_err(|e| DtlsError::Protocol(format!("configuration: {e}")))?;
        let config = Arc::new(config);
        let certificate = identity.certificate.clone();
        // A client speaks DTLS 1.2, which every DTLS-SRTP phone has; a server takes either.
        let dtls = match role {
            DtlsRole::Client => {
                let mut d = dimpl::Dtls::new_12(config, certificate, now);
                d.set_active(true);
                d
            }
            DtlsRole::Server => dimpl::Dtls::new_auto(config, certificate, now),
        };
        let mut endpoint = Self {
            dtls,
            role,
            remote,
            state: State::Handshaking,
            peer_verified: false,
            deadline: now + HANDSHAKE_TIMEOUT,
            next_timeout: None,
            outgoing: VecDeque::new(),
            keys: None,
            suite: None,
            started: now,
            keyed_after: None,
        };
        // dimpl builds a client's first flight on its first clock tick.
        endpoint
            .dtls
            .handle_timeout(now)
            .map_err(|e| DtlsError::Protocol(e.to_string()))?;
        endpoint.drain(now)?;
        Ok(endpoint)
    }

    /// Our side of the handshake.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// The SRTP suite the handshake settled on, once it has.
    pub fn suite(&self) -> Option<CryptoSuite> {
        self.suite
    }

    /// How long the handshake took from the endpoint's start to keys.
    pub fn handshake_time(&self) -> Option<Duration> {
        self.keyed_after
    }

    /// Whether keys were made.
    pub fn is_keyed(&self) -> bool {
        self.state == State::Keyed
    }

    /// Feeds one received DTLS datagram. An error before keys ends the handshake for good; an
    /// error after keys (a peer or forger speaking DTLS to a finished association) is reported
    /// and changes nothing: the keys stay.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError> {
        if self.state == State::Failed {
            return Err(DtlsError::Protocol("the handshake already failed".into()));
        }
        let result = self
            .dtls
            .handle_timeout(now)
            .and_then(|()| self.dtls.handle_packet(datagram))
            .map_err(|e| DtlsError::Protocol(e.to_string()));
        let result = result.and_then(|()| self.drain(now));
        self.settle(result)
    }

    /// Runs retransmissions and the handshake deadline at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        match self.state {
            State::Failed => return Ok(()),
            State::Handshaking if now >= self.deadline => {
                self.state = State::Failed;
                return Err(DtlsError::Timeout);
            }
            State::Keyed if self.next_timeout.is_none_or(|t| now < t) => return Ok(()),
            _ => {}
        }
        let result = self
            .dtls
            .handle_timeout(now)
            .map_err(|e| DtlsError::Protocol(e.to_string()));
        let result = result.and_then(|()| self.drain(now));
        self.settle(result)
    }

    fn settle(&mut self, result: Result<(), DtlsError>) -> Result<(), DtlsError> {
        if let Err(e) = &result {
            match self.state {
                State::Handshaking => {
                    self.state = State::Failed;
                    self.next_timeout = None;
                    self.outgoing.clear();
                }
                // Keys are in use: a broken DTLS layer no longer has a say over them.
                State::Keyed => self.next_timeout = None,
                State::Failed => {}
            }
            return Err(e.clone());
        }
        result
    }

    /// Moves everything dimpl has to say into our queues and state.
    fn drain(&mut self, now: Instant) -> Result<(), DtlsError> {
        let mut buf = vec![0u8; 2048];
        loop {
            match self.dtls.poll_output(&mut buf) {
                dimpl::Output::Packet(p) => {
                    if self.outgoing.len() >= MAX_QUEUED {
                        self.outgoing.pop_front();
                    }
                    self.outgoing.push_back(p.to_vec());
                }
                dimpl::Output::BufferTooSmall { needed } => {
                    if needed > MAX_RECORD || needed <= buf.len() {
                        return Err(DtlsError::Protocol(format!("record of {needed} bytes")));
                    }
                    buf.resize(needed, 0);
                }
                dimpl::Output::Timeout(t) => {
                    self.next_timeout = Some(t);
                    return Ok(());
                }
                dimpl::Output::PeerCert(der) => {
                    if !self.remote.iter().any(|f| f.matches(der)) {
                        return Err(DtlsError::FingerprintMismatch);
                    }
                    self.peer_verified = true;
                }
                dimpl::Output::Connected if !self.peer_verified => {
                    return Err(DtlsError::NoPeerCertificate);
                }
                dimpl::Output::Connected => {}
                dimpl::Output::KeyingMaterial(material, profile) => {
                    if !self.peer_verified {
                        return Err(DtlsError::NoPeerCertificate);
                    }
                    if self.state == State::Keyed {
                        // Renegotiated keys would need re-keying the SRTP contexts mid-call;
                        // the first keys stay.
                        continue;
                    }
                    let suite = suite_of(profile)?;
                    let material = Zeroizing::new(material.to_vec());
                    self.keys = Some(split_keying_material(suite, &material, self.role)?);
                    self.suite = Some(suite);
                    self.state = State::Keyed;
                    self.keyed_after = Some(now.saturating_duration_since(self.started));
                }
                dimpl::Output::CloseNotify if self.state == State::Handshaking => {
                    return Err(DtlsError::Closed);
                }
                // After keys the BYE ends the call; the SRTP keys stay until then.
                dimpl::Output::CloseNotify => {}
                // SIP media carries no DTLS application data; what a peer sends is dropped.
                dimpl::Output::ApplicationData(_) => {}
                _ => {}
            }
        }
    }

    /// Next DTLS datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run: dimpl's retransmission timer, and the
    /// handshake deadline until keys exist.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Failed => None,
            State::Handshaking => Some(
                self.next_timeout
                    .map_or(self.deadline, |t| t.min(self.deadline)),
            ),
            State::Keyed => self.next_timeout,
        }
    }

    /// The SRTP keys, once (after the handshake finished with a matching certificate).
    pub fn take_keys(&mut self) -> Option<DtlsKeys> {
        self.keys.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::SrtpSession;

    /// Moves datagrams between two endpoints until neither has anything to send, advancing
    /// the clock to the next timer when both are quiet. Returns the virtual time taken.
    fn run(a: &mut DtlsEndpoint, b: &mut DtlsEndpoint, t0: Instant) -> Result<Duration, DtlsError> {
        let mut now = t0;
        for _ in 0..200 {
            let mut moved = false;
            while let Some(p) = a.poll_transmit() {
                moved = true;
                b.handle_datagram(now, &p)?;
            }
            while let Some(p) = b.poll_transmit() {
                moved = true;
                a.handle_datagram(now, &p)?;
            }
            if a.is_keyed() && b.is_keyed() {
                return Ok(now - t0);
            }
            if !moved {
                let next = [a.poll_timeout(), b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .ok_or(DtlsError::Timeout)?;
                now = now.max(next);
                a.handle_timeout(now)?;
                b.handle_timeout(now)?;
            }
        }
        Err(DtlsError::Timeout)
    }

    fn pair(role_a: DtlsRole) -> (DtlsEndpoint, DtlsEndpoint, Instant) {
        let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let t0 = Instant::now();
        let role_b = match role_a {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server => DtlsRole::Client,
        };
        let a = DtlsEndpoint::new(&ia, role_a, vec![ib.fingerprint().clone()], t0).unwrap();
        let b = DtlsEndpoint::new(&ib, role_b, vec![ia.fingerprint().clone()], t0).unwrap();
        (a, b, t0)
    }

    #[test]
    fn two_endpoints_handshake_in_memory_and_srtp_flows_both_ways() {
        for client_first in [true, false] {
            let role = if client_first {
                DtlsRole::Client
            } else {
                DtlsRole::Server
            };
            let (mut a, mut b, t0) = pair(role);
            run(&mut a, &mut b, t0).unwrap();
            assert_eq!(a.suite(), b.suite());
            let (ka, kb) = (a.take_keys().unwrap(), b.take_keys().unwrap());
            assert!(a.take_keys().is_none(), "keys are handed out once");
            assert_eq!(ka.local, kb.remote);
            assert_eq!(ka.remote, kb.local);
            assert_ne!(ka.local, ka.remote, "each direction has its own key");
            let mut sa = SrtpSession::with_keys(&ka.local, &ka.remote).unwrap();
            let mut sb = SrtpSession::with_keys(&kb.local, &kb.remote).unwrap();
            let rtp = |seq: u8| {
                let mut p = vec![0x80, 0, 0, seq, 0, 0, 0, 1, 0, 0, 0, 7];
                p.extend_from_slice(b"hello");
                p
            };
            let sealed = sa.protect_rtp(&rtp(1)).unwrap();
            assert_ne!(sealed[12..17], rtp(1)[12..17]);
            assert_eq!(sb.unprotect_rtp(&sealed).unwrap(), rtp(1));
            let sealed = sb.protect_rtp(&rtp(2)).unwrap();
            assert_eq!(sa.unprotect_rtp(&sealed).unwrap(), rtp(2));
        }
    }

    #[test]
    fn a_certificate_that_does_not_match_the_fingerprint_fails_the_handshake() {
        let (ia, ib, other) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let t0 = Instant::now();
        // The client was told another certificate's fingerprint.
        let mut a = DtlsEndpoint::new(&ia, DtlsRole::Client, vec![other.fingerprint().clone()], t0)
            .unwrap();
        let mut b =
            DtlsEndpoint::new(&ib, DtlsRole::Server, vec![ia.fingerprint().clone()], t0).unwrap();
        assert_eq!(run(&mut a, &mut b, t0), Err(DtlsError::FingerprintMismatch));
        assert!(a.take_keys().is_none());
        // And the other way round: the server was told the wrong one.
        let mut a =
            DtlsEndpoint::new(&ia, DtlsRole::Client, vec![ib.fingerprint().clone()], t0).unwrap();
        let mut b = DtlsEndpoint::new(&ib, DtlsRole::Server, vec![other.fingerprint().clone()], t0)
            .unwrap();
        assert_eq!(run(&mut a, &mut b, t0), Err(DtlsError::FingerprintMismatch));
        assert!(b.take_keys().is_none());
    }

    #[test]
    fn a_silent_peer_times_out_and_garbage_is_an_error_not_a_panic() {
        let ia = Identity::generate().unwrap();
        let ib = Identity::generate().unwrap();
        let t0 = Instant::now();
        let mut a =
            DtlsEndpoint::new(&ia, DtlsRole::Client, vec![ib.fingerprint().clone()], t0).unwrap();
        assert!(
            a.poll_transmit().is_some(),
            "the ClientHello is ready at once"
        );
        let mut now = t0;
        let result = loop {
            let Some(t) = a.poll_timeout() else {
                break Ok(());
            };
            now = t;
            if let Err(e) = a.handle_timeout(now) {
                break Err(e);
            }
            while a.poll_transmit().is_some() {}
        };
        assert!(
            matches!(result, Err(DtlsError::Timeout | DtlsError::Protocol(_))),
            "{result:?}"
        );
        assert!(now - t0 <= HANDSHAKE_TIMEOUT);
        assert!(a.poll_timeout().is_none());

        let mut s =
            DtlsEndpoint::new(&ib, DtlsRole::Server, vec![ia.fingerprint().clone()], t0).unwrap();
        for junk in [
            &[][..],
            &[22],
            &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
            &[23; 64],
            &[20, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1],
        ] {
            let _ = s.handle_datagram(t0, junk);
        }
        assert!(s.take_keys().is_none());
    }

    #[test]
    fn dtls_after_keys_changes_nothing() {
        let (mut a, mut b, t0) = pair(DtlsRole::Client);
        run(&mut a, &mut b, t0).unwrap();
        let keys = b.take_keys().unwrap();
        for junk in [&[22u8, 0xfe, 0xfd, 0, 0][..], &[23; 40], &[21; 13]] {
            let _ = b.handle_datagram(t0, junk);
        }
        assert!(b.is_keyed());
        assert!(b.take_keys().is_none());
        assert_ne!(keys.local, keys.remote);
    }

    #[test]
    fn roles_follow_rfc_5763() {
        assert_eq!(
            answer_setup(Some(Setup::ActPass)),
            Ok((Setup::Active, DtlsRole::Client))
        );
        assert_eq!(
            answer_setup(Some(Setup::Passive)),
            Ok((Setup::Active, DtlsRole::Client))
        );
        assert_eq!(
            answer_setup(Some(Setup::Active)),
            Ok((Setup::Passive, DtlsRole::Server))
        );
        assert_eq!(answer_setup(None), Ok((Setup::Passive, DtlsRole::Server)));
        assert!(answer_setup(Some(Setup::HoldConn)).is_err());
        assert_eq!(offerer_role(Some(Setup::Active)), Ok(DtlsRole::Server));
        assert_eq!(offerer_role(Some(Setup::Passive)), Ok(DtlsRole::Client));
        assert_eq!(offerer_role(None), Ok(DtlsRole::Server));
        assert!(offerer_role(Some(Setup::ActPass)).is_err());
        assert!(Setup::parse("ACTPASS").is_ok());
        assert!(Setup::parse("sideways").is_err());
    }

    #[test]
    fn fingerprints_parse_strictly_and_print_back() {
        let id = Identity::generate().unwrap();
        let text = id.fingerprint().to_string();
        assert!(text.starts_with("sha-256 "));
        assert_eq!(Fingerprint::parse(&text).unwrap(), *id.fingerprint());
        assert!(id.fingerprint().matches(&id.certificate.certificate));
        assert!(!id.fingerprint().matches(b"another certificate"));
        let upper = text.replace("sha-256", "SHA-256");
        assert!(Fingerprint::parse(&upper).is_ok());
        assert!(!format!("{id:?}").contains(&format!("{:?}", id.certificate.private_key)));
        for bad in [
            "",
            "sha-256",
            "sha-256 AB:CD",
            "sha-256 zz:CD",
            "sha-256 ABC:D",
            &format!("{text} extra"),
            &"a".repeat(MAX_FINGERPRINT_LEN + 1),
        ] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Fingerprint::parse("sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB"),
            Err(DtlsError::UnsupportedHash(_))
        ));
    }

    #[test]
    fn keying_material_splits_per_rfc_5764() {
        let suite = CryptoSuite::AesCm128HmacSha1_80;
        let material: Vec<u8> = (0..60).collect();
        let client = split_keying_material(suite, &material, DtlsRole::Client).unwrap();
        let server = split_keying_material(suite, &material, DtlsRole::Server).unwrap();
        let expect_client: Vec<u8> = (0..16).chain(32..46).collect();
        let expect_server: Vec<u8> = (16..32).chain(46..60).collect();
        assert_eq!(
            client.local,
            MasterKey::from_material(suite, &expect_client).unwrap()
        );
        assert_eq!(
            client.remote,
            MasterKey::from_material(suite, &expect_server).unwrap()
        );
        assert_eq!((server.local, server.remote), (client.remote, client.local));
        assert!(split_keying_material(suite, &material[..59], DtlsRole::Client).is_err());
        assert!(is_dtls(&[22, 0xfe]) && !is_dtls(&[0x80]) && !is_dtls(&[]));
    }
}

//! SDES-SRTP for SIP media: the `a=crypto` attribute (RFC 4568) and the SRTP/SRTCP
//! protection of one stream (RFC 3711; AES-GCM per RFC 7714).
//!
//! Ciphers come from `webrtc-srtp` (pure Rust, RustCrypto AES-CTR/HMAC-SHA1/AES-GCM); this
//! module decides what is acceptable and guards the library's edges: lengths are checked
//! before a datagram reaches it; SRTCP without the E flag is refused here because the library
//! passes unencrypted SRTCP through without checking its tag; and the replay window is ours
//! ([`ReplayWindow`]), moved only by packets that authenticated, because the library's window
//! takes its starting point from the first packet it checks, forged or not, so one forged
//! packet at a call's start would make the genuine stream look replayed.
//!
//! Master keys come from the operating system's CSPRNG (`getrandom`), live in zeroized
//! buffers, and print as `<redacted>` in `Debug` so no log line can carry one.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;
use zeroize::Zeroizing;

/// Packets remembered by the replay check (RFC 3711 §3.3.2 asks for at least 64).
pub const REPLAY_WINDOW: usize = 128;
/// SRTCP index and E flag appended to every SRTCP packet.
const SRTCP_INDEX_LEN: usize = 4;
const RTP_HEADER_LEN: usize = 12;
const RTCP_HEADER_LEN: usize = 8;
const MAX_CRYPTO_LINE: usize = 512;

/// Why keys or a packet were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// An `a=crypto` line that breaks RFC 4568's grammar.
    #[error("malformed crypto attribute: {0}")]
    Malformed(&'static str),
    /// A crypto suite the cart does not implement (answered by picking another line).
    #[error("unsupported crypto suite {0}")]
    UnsupportedSuite(String),
    /// A well-formed line asking for something the cart will not do (MKI, several keys,
    /// unencrypted or unauthenticated SRTP, a key derivation rate).
    #[error("unsupported crypto parameter: {0}")]
    Unsupported(&'static str),
    /// The operating system's random source failed: no key can be made.
    #[error("no random source for SRTP keys")]
    Random,
    /// Too short to be SRTP/SRTCP for the negotiated suite.
    #[error("packet too short for SRTP")]
    TooShort,
    /// The authentication tag did not verify (wrong key, tampered, or plain RTP).
    #[error("SRTP authentication failed")]
    Authentication,
    /// Already received (or older than the replay window).
    #[error("SRTP packet replayed")]
    Replayed,
    /// The key protected 2^48 packets (RFC 3711 §9.2); the call needs new keys.
    #[error("SRTP key exhausted")]
    Exhausted,
}

/// The SDES crypto suites the cart speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    /// AES_CM_128_HMAC_SHA1_80 (RFC 4568 §6.2.1), the one every SDES endpoint has.
    AesCm128HmacSha1_80,
    /// AES_CM_128_HMAC_SHA1_32 (RFC 4568 §6.2.2): a 32-bit RTP tag (80 bits on SRTCP).
    AesCm128HmacSha1_32,
    /// AES_256_CM_HMAC_SHA1_80 (RFC 6188).
    Aes256CmHmacSha1_80,
    /// AEAD_AES_128_GCM (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// AEAD_AES_256_GCM (RFC 7714 §14.2).
    AeadAes256Gcm,
}

impl CryptoSuite {
    /// Every suite the cart implements.
    pub const ALL: [Self; 5] = [
        Self::AeadAes128Gcm,
        Self::AesCm128HmacSha1_80,
        Self::AeadAes256Gcm,
        Self::Aes256CmHmacSha1_80,
        Self::AesCm128HmacSha1_32,
    ];

    /// The name used in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::Aes256CmHmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// The suite named `name` (case-sensitive, as RFC 4568 registers them).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Self::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Self::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            Self::Aes256CmHmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
            Self::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            Self::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        self.profile().key_len()
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        self.profile().salt_len()
    }

    fn is_aead(self) -> bool {
        matches!(self, Self::AeadAes128Gcm | Self::AeadAes256Gcm)
    }

    /// Bytes SRTP adds to an RTP packet.
    pub fn rtp_overhead(self) -> usize {
        let p = self.profile();
        p.rtp_auth_tag_len() + p.aead_auth_tag_len()
    }

    /// Bytes SRTCP adds to an RTCP packet (tag and index).
    pub fn rtcp_overhead(self) -> usize {
        let p = self.profile();
        p.rtcp_auth_tag_len() + p.aead_auth_tag_len() + SRTCP_INDEX_LEN
    }
}

impl fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An SRTP master key and salt for one direction of one stream. Zeroed on drop; `Debug`
/// shows the suite only.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    suite: CryptoSuite,
    material: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, <redacted>)", self.suite)
    }
}

impl MasterKey {
    /// A fresh key and salt from the operating system's CSPRNG.
    pub fn generate(suite: CryptoSuite) -> Result<Self, SrtpError> {
        let mut material = Zeroizing::new(vec![0u8; suite.key_len() + suite.salt_len()]);
        getrandom::fill(material.as_mut_slice()).map_err(|_| SrtpError::Random)?;
        Ok(Self { suite, material })
    }

    /// A key from its concatenated key and salt (as carried in `inline:`).
    pub fn from_material(suite: CryptoSuite, material: &[u8]) -> Result<Self, SrtpError> {
        if material.len() != suite.key_len() + suite.salt_len() {
            return Err(SrtpError::Malformed(
                "key and salt length does not fit the suite",
            ));
        }
        Ok(Self {
            suite,
            material: Zeroizing::new(material.to_vec()),
        })
    }

    /// The suite this key is for.
    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    /// The key-params of an `a=crypto` line: `inline:` and the base64 key||salt.
    pub fn inline(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "inline:{}",
            STANDARD.encode(self.material.as_slice())
        ))
    }

    fn split(&self) -> (&[u8], &[u8]) {
        self.material.split_at(self.suite.key_len())
    }
}

/// One parsed `a=crypto` attribute that the cart can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag the answer must echo.
    pub tag: u32,
    /// The suite.
    pub suite: CryptoSuite,
    /// The sender's master key.
    pub key: MasterKey,
}

fn parse_lifetime(text: &str) -> Result<(), SrtpError> {
    let ok = match text.strip_prefix("2^") {
        Some(exp) => exp.parse::<u8>().is_ok_and(|e| e <= 64),
        None => !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()),
    };
    if ok {
        Ok(())
    } else {
        Err(SrtpError::Malformed("key lifetime"))
    }
}

impl CryptoAttribute {
    /// Parses the value of an `a=crypto:` line (`1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^31`).
    /// Lines the cart cannot honour are errors, so the answerer moves on to the next one.
    pub fn parse(value: &str) -> Result<Self, SrtpError> {
        if value.len() > MAX_CRYPTO_LINE {
            return Err(SrtpError::Malformed("too long"));
        }
        let mut fields = value.split_ascii_whitespace();
        let tag = fields
            .next()
            .filter(|t| (1..=9).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or(SrtpError::Malformed("tag"))?;
        let name = fields
            .next()
            .ok_or(SrtpError::Malformed("no crypto suite"))?;
        let suite =
            CryptoSuite::from_name(name).ok_or_else(|| SrtpError::UnsupportedSuite(name.into()))?;
        let key_params = fields.next().ok_or(SrtpError::Malformed("no key"))?;
        if key_params.contains(';') {
            return Err(SrtpError::Unsupported("more than one master key"));
        }
        let info = key_params
            .strip_prefix("inline:")
            .ok_or(SrtpError::Malformed("key method is not inline"))?;
        let mut parts = info.split('|');
        let encoded = parts.next().unwrap_or_default();
        for extra in parts {
            if extra.contains(':') {
                // An MKI rides in every packet; the cart keeps one key per direction.
                return Err(SrtpError::Unsupported("MKI"));
            }
            parse_lifetime(extra)?;
        }
        // Base64 with or without padding: both are seen in the field.
        let material = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                .map_err(|_| SrtpError::Malformed("key is not base64"))?,
        );
        let key = MasterKey::from_material(suite, &material)?;
        for param in fields {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name {
                "KDR" if value == "0" => {}
                "KDR" => return Err(SrtpError::Unsupported("key derivation rate")),
                "WSH" if value.parse::<u32>().is_ok_and(|w| w >= 64) => {}
                "WSH" => return Err(SrtpError::Malformed("WSH")),
                "FEC_ORDER" if value == "FEC_SRTP" => {}
                "UNENCRYPTED_SRTP" | "UNENCRYPTED_SRTCP" | "UNAUTHENTICATED_SRTP" => {
                    return Err(SrtpError::Unsupported("unprotected SRTP"));
                }
                // RFC 4568 §9.2: a leading '-' marks a parameter that may be ignored.
                n if n.starts_with('-') => {}
                _ => return Err(SrtpError::Unsupported("unknown session parameter")),
            }
        }
        Ok(Self { tag, suite, key })
    }
}

/// The keys of one SRTP stream: ours protects what we send, the peer's what we receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdesKeys {
    /// The tag of the offered line that was accepted.
    pub tag: u32,
    /// Our master key (sent in our SDP).
    pub local: MasterKey,
    /// The peer's master key (from its SDP).
    pub remote: MasterKey,
}

impl SdesKeys {
    /// The negotiated suite.
    pub fn suite(&self) -> CryptoSuite {
        self.local.suite
    }

    /// The answer's `a=crypto` value (tag, suite, our key). It carries the key: it goes into
    /// the SDP and nowhere else.
    pub fn answer_line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{} {} {}",
            self.tag,
            self.local.suite,
            self.local.inline().as_str()
        ))
    }

    /// Picks the first usable line of an offer (the offerer lists them by preference) and
    /// makes our key for it; `None` when no line is usable. `keep` is the key we used before
    /// in this dialog: re-used when the suite is the same so a re-INVITE does not re-key.
    pub fn answer(offered: &[String], keep: Option<&MasterKey>) -> Result<Option<Self>, SrtpError> {
        let Some(chosen) = offered
            .iter()
            .find_map(|line| CryptoAttribute::parse(line).ok())
        else {
            return Ok(None);
        };
        let local = match keep.filter(|k| k.suite == chosen.suite) {
            Some(k) => k.clone(),
            None => MasterKey::generate(chosen.suite)?,
        };
        Ok(Some(Self {
            tag: chosen.tag,
            local,
            remote: chosen.key,
        }))
    }
}

/// Which packet indexes were already received (RFC 3711 §3.3.2), for one SSRC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `d` set: index `highest - d` was received.
    seen: u128,
}

impl ReplayWindow {
    /// The 48-bit index a 16-bit sequence number most likely stands for (the one closest to
    /// the highest received, RFC 3711 §3.3.1).
    pub fn extend_sequence(&self, sequence: u16) -> u64 {
        let Some(h) = self.highest else {
            return u64::from(sequence);
        };
        let base = (h & !0xffff) | u64::from(sequence);
        [base.wrapping_sub(0x1_0000), base, base + 0x1_0000]
            .into_iter()
            .filter(|c| *c < 1 << 48)
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base)
    }

    /// Whether `index` is new and inside the window (does not change the window).
    pub fn check(&self, index: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if index > h => true,
            Some(h) => {
                let age = h - index;
                age < REPLAY_WINDOW as u64 && self.seen & (1u128 << age) == 0
            }
        }
    }

    /// Records `index` (only once its packet authenticated).
    pub fn accept(&mut self, index: u64) {
        match self.highest {
            Some(h) if index <= h => {
                let age = h - index;
                if age < REPLAY_WINDOW as u64 {
                    self.seen |= 1u128 << age;
                }
            }
            Some(h) => {
                let shift = index - h;
                self.seen = if shift >= REPLAY_WINDOW as u64 {
                    1
                } else {
                    (self.seen << shift) | 1
                };
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// SSRCs whose windows are kept; a peer that changes SSRC more often than this starts over.
const MAX_SSRCS: usize = 16;

#[derive(Default)]
struct Windows(HashMap<u32, ReplayWindow>);

impl Windows {
    fn get(&self, ssrc: u32) -> ReplayWindow {
        self.0.get(&ssrc).cloned().unwrap_or_default()
    }

    fn put(&mut self, ssrc: u32, window: ReplayWindow) {
        if self.0.len() >= MAX_SSRCS && !self.0.contains_key(&ssrc) {
            self.0.clear();
        }
        self.0.insert(ssrc, window);
    }
}

/// SRTP and SRTCP for one stream, both directions.
pub struct SrtpSession {
    suite: CryptoSuite,
    outbound: Context,
    inbound: Context,
    rtp_windows: Windows,
    rtcp_windows: Windows,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSession")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

fn context(key: &MasterKey) -> Result<Context, SrtpError> {
    let (k, s) = key.split();
    // No library replay window (see the module docs): ours is checked around it.
    Context::new(k, s, key.suite.profile(), None, None)
        .map_err(|_| SrtpError::Malformed("key does not fit the suite"))
}

fn inbound_error(e: webrtc_srtp::Error) -> SrtpError {
    match e {
        webrtc_srtp::Error::ErrTooShortRtp
        | webrtc_srtp::Error::ErrTooShortRtcp
        | webrtc_srtp::Error::SrtpTooSmall(..)
        | webrtc_srtp::Error::SrtcpTooSmall(..) => SrtpError::TooShort,
        _ => SrtpError::Authentication,
    }
}

impl SrtpSession {
    /// Contexts for `keys` (both must be of one suite).
    pub fn new(keys: &SdesKeys) -> Result<Self, SrtpError> {
        Self::with_keys(&keys.local, &keys.remote)
    }

    /// Contexts for our sending key and the peer's (of one suite), however they were agreed
    /// (SDES, or exported by a DTLS-SRTP handshake, see [`crate::dtls`]).
    pub fn with_keys(local: &MasterKey, remote: &MasterKey) -> Result<Self, SrtpError> {
        if local.suite != remote.suite {
            return Err(SrtpError::Malformed("suites differ"));
        }
        Ok(Self {
            suite: local.suite,
            outbound: context(local)?,
            inbound: context(remote)?,
            rtp_windows: Windows::default(),
            rtcp_windows: Windows::default(),
        })
    }

    /// The suite in use.
    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    /// Follows new keys of the same suite (a re-INVITE): a direction whose key is unchanged
    /// keeps its context, so its rollover counter and replay window carry on.
    pub fn rekey(&mut self, old: &SdesKeys, new: &SdesKeys) -> Result<(), SrtpError> {
        if new.local.suite != self.suite || new.remote.suite != self.suite {
            return Err(SrtpError::Malformed("suites differ"));
        }
        if old.local != new.local {
            self.outbound = context(&new.local)?;
        }
        if old.remote != new.remote {
            self.inbound = context(&new.remote)?;
            self.rtp_windows = Windows::default();
            self.rtcp_windows = Windows::default();
        }
        Ok(())
    }

    /// Encrypts and authenticates one RTP packet.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if packet.len() < RTP_HEADER_LEN {
            return Err(SrtpError::TooShort);
        }
        match self.outbound.encrypt_rtp(packet) {
            Ok(b) => Ok(b.to_vec()),
            Err(webrtc_srtp::Error::ErrExceededMaxPackets) => Err(SrtpError::Exhausted),
            Err(_) => Err(SrtpError::TooShort),
        }
    }

    /// Encrypts and authenticates one (compound) RTCP packet.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if packet.len() < RTCP_HEADER_LEN {
            return Err(SrtpError::TooShort);
        }
        self.outbound
            .encrypt_rtcp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| SrtpError::TooShort)
    }

    /// Verifies (tag, replay window) and decrypts one SRTP packet.
    pub fn unprotect_rtp(&mut self, data: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if data.len() < RTP_HEADER_LEN + self.suite.rtp_overhead() {
            return Err(SrtpError::TooShort);
        }
        let sequence = u16::from_be_bytes([data[2], data[3]]);
        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        let mut window = self.rtp_windows.get(ssrc);
        let index = window.extend_sequence(sequence);
        if !window.check(index) {
            return Err(SrtpError::Replayed);
        }
        let plain = self.inbound.decrypt_rtp(data).map_err(inbound_error)?;
        window.accept(index);
        self.rtp_windows.put(ssrc, window);
        Ok(plain.to_vec())
    }

    /// Verifies (tag, replay window) and decrypts one SRTCP packet.
    pub fn unprotect_rtcp(&mut self, data: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let overhead = self.suite.rtcp_overhead();
        if data.len() < RTCP_HEADER_LEN + overhead {
            return Err(SrtpError::TooShort);
        }
        // The E flag opens the SRTCP index; with AES-CM the library returns a packet whose E
        // flag is clear without checking its tag, and the cart never agrees to unencrypted
        // SRTCP, so such a packet is a forgery.
        let index_at = if self.suite.is_aead() {
            data.len() - SRTCP_INDEX_LEN
        } else {
            data.len() - overhead
        };
        let e_and_index = u32::from_be_bytes([
            data[index_at],
            data[index_at + 1],
            data[index_at + 2],
            data[index_at + 3],
        ]);
        if e_and_index & 0x8000_0000 == 0 {
            return Err(SrtpError::Authentication);
        }
        let index = u64::from(e_and_index & 0x7fff_ffff);
        let ssrc = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let mut window = self.rtcp_windows.get(ssrc);
        if !window.check(index) {
            return Err(SrtpError::Replayed);
        }
        let plain = self.inbound.decrypt_rtcp(data).map_err(inbound_error)?;
        window.accept(index);
        self.rtcp_windows.put(ssrc, window);
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use webrtc_util::marshal::Marshal;

    fn pair(suite: CryptoSuite) -> (SrtpSession, SrtpSession) {
        let a = MasterKey::generate(suite).unwrap();
        let b = MasterKey::generate(suite).unwrap();
        let alice = SrtpSession::new(&SdesKeys {
            tag: 1,
            local: a.clone(),
            remote: b.clone(),
        })
        .unwrap();
        let bob = SrtpSession::new(&SdesKeys {
            tag: 1,
            local: b,
            remote: a,
        })
        .unwrap();
        (alice, bob)
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 0,
                sequence_number: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 0x1234_5678,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
        .marshal()
        .unwrap()
        .to_vec()
    }

    fn receiver_report() -> Vec<u8> {
        rtcp::receiver_report::ReceiverReport {
            ssrc: 0x1234_5678,
            reports: vec![],
            profile_extensions: Bytes::new(),
        }
        .marshal()
        .unwrap()
        .to_vec()
    }

    #[test]
    fn both_required_suites_round_trip_rtp_and_rtcp_and_hide_the_payload() {
        for suite in CryptoSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            let plain = rtp(7, b"the patient's voice");
            let sealed = alice.protect_rtp(&plain).unwrap();
            assert_eq!(sealed.len(), plain.len() + suite.rtp_overhead(), "{suite}");
            assert!(
                !sealed.windows(5).any(|w| w == b"voice"),
                "{suite}: payload is encrypted"
            );
            assert_eq!(bob.unprotect_rtp(&sealed).unwrap(), plain, "{suite}");
            let rr = receiver_report();
            let sealed = alice.protect_rtcp(&rr).unwrap();
            assert_eq!(sealed.len(), rr.len() + suite.rtcp_overhead(), "{suite}");
            assert_eq!(bob.unprotect_rtcp(&sealed).unwrap(), rr, "{suite}");
        }
    }

    #[test]
    fn tampered_replayed_foreign_and_plain_packets_are_refused() {
        for suite in [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes128Gcm] {
            let (mut alice, mut bob) = pair(suite);
            let sealed = alice.protect_rtp(&rtp(1, &[9; 160])).unwrap();
            let mut tampered = sealed.clone();
            tampered[20] ^= 1;
            assert_eq!(bob.unprotect_rtp(&tampered), Err(SrtpError::Authentication));
            assert!(bob.unprotect_rtp(&sealed).is_ok());
            assert_eq!(bob.unprotect_rtp(&sealed), Err(SrtpError::Replayed));
            // Plain RTP on an SRTP stream (a peer that ignored the answer) fails the tag.
            assert_eq!(
                bob.unprotect_rtp(&rtp(2, &[9; 160])),
                Err(SrtpError::Authentication)
            );
            // Someone else's key.
            let (mut mallory, _) = pair(suite);
            let forged = mallory.protect_rtp(&rtp(3, &[9; 160])).unwrap();
            assert_eq!(bob.unprotect_rtp(&forged), Err(SrtpError::Authentication));
            // The genuine stream goes on after all that, out of order within the window.
            let p5 = alice.protect_rtp(&rtp(5, &[1; 160])).unwrap();
            let p4 = alice.protect_rtp(&rtp(4, &[1; 160])).unwrap();
            assert!(bob.unprotect_rtp(&p5).is_ok() && bob.unprotect_rtp(&p4).is_ok());
            // SRTCP: replay, tamper, and the E flag cleared (which the library would pass).
            let sr = alice.protect_rtcp(&receiver_report()).unwrap();
            let mut no_e = sr.clone();
            let at = no_e.len() - suite.rtcp_overhead();
            let at = if suite == CryptoSuite::AeadAes128Gcm {
                no_e.len() - 4
            } else {
                at
            };
            no_e[at] &= 0x7f;
            assert_eq!(bob.unprotect_rtcp(&no_e), Err(SrtpError::Authentication));
            let mut bad = sr.clone();
            bad[9] ^= 0x40;
            assert_eq!(bob.unprotect_rtcp(&bad), Err(SrtpError::Authentication));
            assert_eq!(bob.unprotect_rtcp(&sr).map(|_| ()), Ok(()), "{suite}");
            assert_eq!(bob.unprotect_rtcp(&sr), Err(SrtpError::Replayed));
        }
    }

    #[test]
    fn a_forged_packet_before_the_first_genuine_one_does_not_poison_the_replay_window() {
        for suite in [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes128Gcm] {
            let (mut alice, mut bob) = pair(suite);
            let (mut mallory, _) = pair(suite);
            // Same SSRC, a sequence number and SRTCP index far ahead of the real ones.
            let forged = mallory.protect_rtp(&rtp(40_000, &[0; 160])).unwrap();
            assert_eq!(bob.unprotect_rtp(&forged), Err(SrtpError::Authentication));
            let mut forged_rtcp = alice.protect_rtcp(&receiver_report()).unwrap();
            let at = forged_rtcp.len() - suite.rtcp_overhead();
            let at = if suite.is_aead() {
                forged_rtcp.len() - 4
            } else {
                at
            };
            forged_rtcp[at + 1] ^= 0x40;
            assert_eq!(
                bob.unprotect_rtcp(&forged_rtcp),
                Err(SrtpError::Authentication)
            );
            let p = alice.protect_rtp(&rtp(7, &[1; 160])).unwrap();
            assert!(bob.unprotect_rtp(&p).is_ok(), "{suite}");
            let r = alice.protect_rtcp(&receiver_report()).unwrap();
            assert!(bob.unprotect_rtcp(&r).is_ok(), "{suite}");
        }
    }

    #[test]
    fn the_replay_window_slides_wraps_and_forgets_what_is_too_old() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.extend_sequence(65_530), 65_530);
        w.accept(65_530);
        // Across the 16-bit wrap the index keeps counting.
        assert_eq!(w.extend_sequence(3), 65_539);
        assert!(w.check(65_539));
        w.accept(65_539);
        assert!(!w.check(65_530) && !w.check(65_539));
        assert!(w.check(65_531), "late but inside the window and new");
        assert_eq!(w.extend_sequence(65_531), 65_531);
        w.accept(65_539 + REPLAY_WINDOW as u64);
        assert!(!w.check(65_539), "older than the window");
        assert!(!w.check(65_539 + REPLAY_WINDOW as u64));
        assert!(w.check(65_540 + REPLAY_WINDOW as u64));
    }

    #[test]
    fn short_and_junk_datagrams_are_errors_not_panics() {
        for suite in CryptoSuite::ALL {
            let (_, mut bob) = pair(suite);
            for len in 0..64 {
                let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x80) as u8).collect();
                assert!(bob.unprotect_rtp(&junk).is_err());
                let mut rtcp_junk = junk.clone();
                if rtcp_junk.len() > 1 {
                    rtcp_junk[0] = 0x80;
                    rtcp_junk[1] = 201;
                }
                assert!(bob.unprotect_rtcp(&rtcp_junk).is_err());
                // E flag set everywhere: reaches the library's tag check and fails there.
                let ones = vec![0xffu8; len];
                assert!(bob.unprotect_rtcp(&ones).is_err());
            }
        }
    }

    #[test]
    fn crypto_lines_parse_per_rfc_4568_and_refuse_what_the_cart_cannot_honour() {
        let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let a = CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20"))
            .unwrap();
        assert_eq!((a.tag, a.suite), (1, CryptoSuite::AesCm128HmacSha1_80));
        assert_eq!(a.key.inline().as_str(), format!("inline:{key}"));
        // 28 bytes of key and salt for GCM-128 (RFC 7714 §14.2), unpadded base64 accepted.
        let gcm = STANDARD_NO_PAD.encode([7u8; 28]);
        let g =
            CryptoAttribute::parse(&format!("3 AEAD_AES_128_GCM inline:{gcm} WSH=128 -x")).unwrap();
        assert_eq!((g.tag, g.suite), (3, CryptoSuite::AeadAes128Gcm));
        for (line, want) in [
            ("", SrtpError::Malformed("tag")),
            (
                "x AES_CM_128_HMAC_SHA1_80 inline:a",
                SrtpError::Malformed("tag"),
            ),
            (
                "1234567890 AES_CM_128_HMAC_SHA1_80 inline:a",
                SrtpError::Malformed("tag"),
            ),
            ("1", SrtpError::Malformed("no crypto suite")),
            (
                "1 F8_128_HMAC_SHA1_80 inline:a",
                SrtpError::UnsupportedSuite("F8_128_HMAC_SHA1_80".into()),
            ),
            ("1 AES_CM_128_HMAC_SHA1_80", SrtpError::Malformed("no key")),
            (
                "1 AES_CM_128_HMAC_SHA1_80 uri:x",
                SrtpError::Malformed("key method is not inline"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:!!!",
                SrtpError::Malformed("key is not base64"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                SrtpError::Malformed("key and salt length does not fit the suite"),
            ),
        ] {
            assert_eq!(CryptoAttribute::parse(line), Err(want), "{line:?}");
        }
        for (suffix, want) in [
            ("|1:4".to_string(), SrtpError::Unsupported("MKI")),
            ("|2^x".to_string(), SrtpError::Malformed("key lifetime")),
            (
                format!(";inline:{key}"),
                SrtpError::Unsupported("more than one master key"),
            ),
            (
                " UNENCRYPTED_SRTCP".into(),
                SrtpError::Unsupported("unprotected SRTP"),
            ),
            (
                " UNAUTHENTICATED_SRTP".into(),
                SrtpError::Unsupported("unprotected SRTP"),
            ),
            (
                " KDR=24".into(),
                SrtpError::Unsupported("key derivation rate"),
            ),
            (
                " FEC_KEY=x".into(),
                SrtpError::Unsupported("unknown session parameter"),
            ),
        ] {
            let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}{suffix}");
            assert_eq!(CryptoAttribute::parse(&line), Err(want), "{line}");
        }
    }

    #[test]
    fn answers_take_the_first_usable_line_keep_keys_and_never_print_them() {
        let theirs = MasterKey::generate(CryptoSuite::AeadAes128Gcm).unwrap();
        let offered = vec![
            "1 AEAD_AES_256_GCM inline:short".to_string(),
            format!("2 AEAD_AES_128_GCM {}", theirs.inline().as_str()),
            format!(
                "3 AES_CM_128_HMAC_SHA1_80 inline:{}",
                STANDARD.encode([1u8; 30])
            ),
        ];
        let keys = SdesKeys::answer(&offered, None).unwrap().unwrap();
        let line = keys.answer_line();
        assert_eq!((keys.tag, keys.suite()), (2, CryptoSuite::AeadAes128Gcm));
        assert_eq!(keys.remote, theirs);
        assert_ne!(keys.local, theirs);
        assert!(line.starts_with("2 AEAD_AES_128_GCM inline:"));
        let back = CryptoAttribute::parse(&line).unwrap();
        assert_eq!(back.key, keys.local);
        // A re-INVITE keeps our key; a new suite gets a new one.
        let again = SdesKeys::answer(&offered, Some(&keys.local))
            .unwrap()
            .unwrap();
        assert_eq!(again.local, keys.local);
        let other = SdesKeys::answer(&offered[2..], Some(&keys.local))
            .unwrap()
            .unwrap();
        assert_eq!(other.suite(), CryptoSuite::AesCm128HmacSha1_80);
        // Debug output carries no key material.
        let printed = format!("{keys:?}");
        let secret = keys.local.inline();
        assert!(!printed.contains(&secret["inline:".len()..]), "{printed}");
        assert!(printed.contains("<redacted>"));
        assert_eq!(SdesKeys::answer(&offered[..1], None), Ok(None));
    }
}

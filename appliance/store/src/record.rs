//! Record content and our own versioned, encrypted envelope format (sled promises no stable format,
//! so the bytes we hand it are fully ours).
//!
//! Envelope, version 1 (all integers big-endian):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 4 | magic `TCLR` |
//! | 4 | 1 | envelope version (1) |
//! | 5 | 1 | record kind code |
//! | 6 | 4 | data-key epoch |
//! | 10 | 8 | sequence (record id) |
//! | 18 | 8 | time of the record, Unix milliseconds |
//! | 26 | 16 | session id (random, not PHI) |
//! | 42 | 24 | XChaCha20 nonce |
//! | 66 | n+16 | ciphertext of the JSON body, with the Poly1305 tag |
//!
//! Bytes 0..42 (the header) are the AEAD's associated data: sequence, session, time, kind and epoch
//! are authenticated, so a record cannot be moved, re-dated or relabelled without detection.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{DataKey, NONCE_LEN, TAG_LEN};
use crate::error::{Result, StoreError};

/// Magic bytes opening every record envelope.
pub const MAGIC: [u8; 4] = *b"TCLR";
/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Length of the authenticated header.
pub const HEADER_LEN: usize = 42;
/// Smallest well-formed envelope.
pub const MIN_ENVELOPE_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Largest plaintext body accepted (a transcript segment is far smaller). Kept well below the size
/// at which sled moves values out of its log into blob files.
pub const MAX_BODY_LEN: usize = 64 << 10;

/// Identifies a call session; random, carries no PHI. All zeros for records outside a session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// The id of records that belong to no session (audit entries, device errors).
    pub const NONE: SessionId = SessionId([0; 16]);

    /// A fresh random session id.
    pub fn random() -> Result<Self> {
        let mut b = [0u8; 16];
        crate::crypto::random_bytes(&mut b)?;
        Ok(Self(b))
    }

    /// Parses 32 hexadecimal digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionId::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("session id: expected 32 hex digits"))
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// One participant of a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// Role in the call ("patient", "specialist", "nurse", ...).
    pub role: String,
    /// Display name (PHI).
    pub name: String,
    /// Identifier at the remote side (SIP URI, WebRTC identity), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One entry of the audit trail: who did what. Chained by `prev_hash` (see [`crate::audit`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Who: a user, a technician id, or a component ("cartd", "sync").
    pub actor: String,
    /// What: a dotted verb ("call.answer", "privacy.on", "log.export", "key.rotate").
    pub action: String,
    /// Free-form detail (no PHI by convention; the entry is encrypted regardless).
    pub detail: String,
    /// SHA-256 of the previous audit entry, hex; 64 zeros for the first.
    pub prev_hash: String,
}

/// What a record says. Serialised as JSON inside the ciphertext.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordBody {
    /// A call began.
    SessionStart {
        /// "inbound" or "outbound".
        direction: String,
        /// "webrtc" or "sip".
        protocol: String,
        /// Remote party address (PHI-adjacent).
        remote: String,
    },
    /// A call ended.
    SessionEnd {
        /// Why ("hangup", "remote-bye", "failed", ...).
        reason: String,
        /// Call duration.
        duration_ms: u64,
    },
    /// Who took part.
    Participants {
        /// The participants.
        participants: Vec<Participant>,
    },
    /// Call quality summary over an interval.
    CallQuality {
        /// Round-trip time.
        rtt_ms: f64,
        /// Interarrival jitter.
        jitter_ms: f64,
        /// Packet loss in percent.
        loss_pct: f64,
        /// MOS estimate (1..5).
        mos: f64,
        /// Outgoing video bitrate.
        bitrate_kbps: u32,
    },
    /// A piece of the live transcript (PHI).
    TranscriptSegment {
        /// Who spoke ("local", "remote").
        speaker: String,
        /// Start offset in the call.
        start_ms: u64,
        /// End offset in the call.
        end_ms: u64,
        /// The words.
        text: String,
    },
    /// The privacy switch changed.
    PrivacyToggle {
        /// Privacy on (camera and microphone off).
        enabled: bool,
        /// What flipped it ("switch", "console", "remote").
        source: String,
    },
    /// An error worth keeping.
    Error {
        /// The component.
        component: String,
        /// The message.
        message: String,
    },
    /// An audit-trail entry.
    Audit(AuditEntry),
}

/// Kind codes, stored in the clear (authenticated) header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// [`RecordBody::SessionStart`].
    SessionStart,
    /// [`RecordBody::SessionEnd`].
    SessionEnd,
    /// [`RecordBody::Participants`].
    Participants,
    /// [`RecordBody::CallQuality`].
    CallQuality,
    /// [`RecordBody::TranscriptSegment`].
    TranscriptSegment,
    /// [`RecordBody::PrivacyToggle`].
    PrivacyToggle,
    /// [`RecordBody::Error`].
    Error,
    /// [`RecordBody::Audit`].
    Audit,
}

impl Kind {
    /// The header code.
    pub fn code(self) -> u8 {
        match self {
            Kind::SessionStart => 1,
            Kind::SessionEnd => 2,
            Kind::Participants => 3,
            Kind::CallQuality => 4,
            Kind::TranscriptSegment => 5,
            Kind::PrivacyToggle => 6,
            Kind::Error => 7,
            Kind::Audit => 8,
        }
    }

    /// The kind of a header code.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Kind::SessionStart,
            2 => Kind::SessionEnd,
            3 => Kind::Participants,
            4 => Kind::CallQuality,
            5 => Kind::TranscriptSegment,
            6 => Kind::PrivacyToggle,
            7 => Kind::Error,
            8 => Kind::Audit,
            _ => return None,
        })
    }

    /// The snake_case name (as in the JSON `kind` tag and the ingest API).
    pub fn name(self) -> &'static str {
        match self {
            Kind::SessionStart => "session_start",
            Kind::SessionEnd => "session_end",
            Kind::Participants => "participants",
            Kind::CallQuality => "call_quality",
            Kind::TranscriptSegment => "transcript_segment",
            Kind::PrivacyToggle => "privacy_toggle",
            Kind::Error => "error",
            Kind::Audit => "audit",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl RecordBody {
    /// The body's kind.
    pub fn kind(&self) -> Kind {
        match self {
            RecordBody::SessionStart { .. } => Kind::SessionStart,
            RecordBody::SessionEnd { .. } => Kind::SessionEnd,
            RecordBody::Participants { .. } => Kind::Participants,
            RecordBody::CallQuality { .. } => Kind::CallQuality,
            RecordBody::TranscriptSegment { .. } => Kind::TranscriptSegment,
            RecordBody::PrivacyToggle { .. } => Kind::PrivacyToggle,
            RecordBody::Error { .. } => Kind::Error,
            RecordBody::Audit(_) => Kind::Audit,
        }
    }
}

/// A record to append: the store assigns its sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRecord {
    /// The session it belongs to ([`SessionId::NONE`] if none).
    pub session: SessionId,
    /// When it happened, Unix milliseconds (the caller's clock: the store reads none).
    pub at_ms: u64,
    /// What it says.
    pub body: RecordBody,
}

/// A decrypted record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Its sequence: 1, 2, 3, ... without gaps, never reused.
    pub seq: u64,
    /// Its session.
    pub session: SessionId,
    /// When it happened, Unix milliseconds.
    pub at_ms: u64,
    /// The data-key epoch it is sealed under.
    pub epoch: u32,
    /// What it says.
    pub body: RecordBody,
}

/// The clear, authenticated header of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Kind of the sealed body.
    pub kind: Kind,
    /// Data-key epoch.
    pub epoch: u32,
    /// Sequence.
    pub seq: u64,
    /// Time, Unix milliseconds.
    pub at_ms: u64,
    /// Session.
    pub session: SessionId,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = ENVELOPE_VERSION;
        h[5] = self.kind.code();
        h[6..10].copy_from_slice(&self.epoch.to_be_bytes());
        h[10..18].copy_from_slice(&self.seq.to_be_bytes());
        h[18..26].copy_from_slice(&self.at_ms.to_be_bytes());
        h[26..42].copy_from_slice(&self.session.0);
        h
    }
}

/// A parsed (still sealed) envelope borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    /// The header.
    pub header: Header,
    ad: &'a [u8],
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

impl<'a> Envelope<'a> {
    /// Parses envelope bytes; `key_seq` is the sequence under which the bytes were found (0 if
    /// unknown) and is only used in error messages. Never panics, whatever the input.
    pub fn parse(key_seq: u64, bytes: &'a [u8]) -> Result<Self> {
        let bad = |reason| StoreError::Malformed {
            seq: key_seq,
            reason,
        };
        if bytes.len() < MIN_ENVELOPE_LEN {
            return Err(bad("shorter than the smallest envelope"));
        }
        if bytes[0..4] != MAGIC {
            return Err(bad("bad magic"));
        }
        if bytes[4] != ENVELOPE_VERSION {
            return Err(bad("unknown envelope version"));
        }
        let kind = Kind::from_code(bytes[5]).ok_or(bad("unknown record kind"))?;
        if bytes.len() - HEADER_LEN - NONCE_LEN - TAG_LEN > MAX_BODY_LEN + 64 {
            return Err(bad("body too large"));
        }
        let header = Header {
            kind,
            epoch: be_u32(&bytes[6..10]),
            seq: be_u64(&bytes[10..18]),
            at_ms: be_u64(&bytes[18..26]),
            session: {
                let mut s = [0u8; 16];
                s.copy_from_slice(&bytes[26..42]);
                SessionId(s)
            },
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        Ok(Self {
            header,
            ad: &bytes[..HEADER_LEN],
            nonce,
            ciphertext: &bytes[HEADER_LEN + NONCE_LEN..],
        })
    }

    /// Authenticates and decrypts with `key`, returning the plaintext body bytes.
    pub fn open_bytes(&self, key: &DataKey) -> Result<Zeroizing<Vec<u8>>> {
        if key.epoch() != self.header.epoch {
            return Err(StoreError::MissingKey {
                seq: self.header.seq,
                epoch: self.header.epoch,
            });
        }
        key.open(&self.nonce, self.ad, self.ciphertext)
            .ok_or(StoreError::Tampered {
                seq: self.header.seq,
            })
    }

    /// Authenticates, decrypts and parses the record.
    pub fn open(&self, key: &DataKey) -> Result<(Record, Zeroizing<Vec<u8>>)> {
        let plain = self.open_bytes(key)?;
        let body = decode_body(self.header.seq, &plain)?;
        if body.kind() != self.header.kind {
            return Err(StoreError::BadContent {
                seq: self.header.seq,
                reason: "kind differs from header".into(),
            });
        }
        let h = self.header;
        Ok((
            Record {
                seq: h.seq,
                session: h.session,
                at_ms: h.at_ms,
                epoch: h.epoch,
                body,
            },
            plain,
        ))
    }
}

/// Parses a plaintext body.
pub fn decode_body(seq: u64, plain: &[u8]) -> Result<RecordBody> {
    serde_json::from_slice(plain).map_err(|e| StoreError::BadContent {
        seq,
        // serde_json's message names a line/column and an expectation, never echoes the input.
        reason: e.classify_message().to_string(),
    })
}

trait Classify {
    fn classify_message(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected fields or types",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// Serialises `body` (JSON) into a zeroizing buffer.
pub fn encode_body(body: &RecordBody) -> Result<Zeroizing<Vec<u8>>> {
    let v = Zeroizing::new(
        serde_json::to_vec(body).map_err(|_| StoreError::Invalid("body does not serialise"))?,
    );
    if v.len() > MAX_BODY_LEN {
        return Err(StoreError::Invalid("record body larger than 64 KiB"));
    }
    Ok(v)
}

/// Seals a plaintext body into envelope bytes.
pub fn seal(header: &Header, plain: &[u8], key: &DataKey) -> Result<Vec<u8>> {
    let h = header.encode();
    let (nonce, ct) = key.seal(&h, plain)?;
    let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ct.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(seq: u64) -> Header {
        Header {
            kind: Kind::TranscriptSegment,
            epoch: 1,
            seq,
            at_ms: 1_700_000_000_000,
            session: SessionId([9; 16]),
        }
    }

    fn body() -> RecordBody {
        RecordBody::TranscriptSegment {
            speaker: "remote".into(),
            start_ms: 0,
            end_ms: 900,
            text: "chest pain".into(),
        }
    }

    #[test]
    fn roundtrip() {
        let k = DataKey::generate(1).unwrap();
        let plain = encode_body(&body()).unwrap();
        let env = seal(&header(5), &plain, &k).unwrap();
        let (rec, _) = Envelope::parse(5, &env).unwrap().open(&k).unwrap();
        assert_eq!(rec.seq, 5);
        assert_eq!(rec.body, body());
        assert!(!env.windows(10).any(|w| w == b"chest pain"));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let k = DataKey::generate(1).unwrap();
        let plain = encode_body(&body()).unwrap();
        let env = seal(&header(5), &plain, &k).unwrap();
        for i in 0..env.len() * 8 {
            let mut e = env.clone();
            e[i / 8] ^= 1 << (i % 8);
            let r = Envelope::parse(5, &e).and_then(|p| p.open(&k));
            assert!(r.is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // Property test standing in for a fuzz target: the decoder must return an error, not panic,
        // on arbitrary input, including mutations of a valid envelope.
        let k = DataKey::generate(1).unwrap();
        let plain = encode_body(&body()).unwrap();
        let valid = seal(&header(3), &plain, &k).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && len > 0 {
                buf = valid.clone();
                let n = (next() % 4 + 1) as usize;
                for _ in 0..n {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
                buf.truncate((next() as usize) % (buf.len() + 1));
            }
            if let Ok(env) = Envelope::parse(0, &buf) {
                let _ = env.open(&k);
            }
            let _ = decode_body(0, &buf);
        }
    }
}

//! STUN messages (RFC 8489 section 5): header, attributes, MESSAGE-INTEGRITY(-SHA256) and
//! FINGERPRINT.

use std::fmt;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::codec::attribute::{Attribute, ErrorCode, padding, types};
use crate::error::TurnError;

/// The fixed magic cookie of RFC 5389 and later.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// XOR-ed into the CRC-32 of FINGERPRINT.
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A STUN method (12 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Method = Method(0x004);
    /// Send (RFC 8656), indication only.
    pub const SEND: Method = Method(0x006);
    /// Data (RFC 8656), indication only.
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// The method's name, for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Method::BINDING => "Binding",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            _ => "unknown method",
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(0x{:03x})", self.name(), self.0)
    }
}

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a response with the same transaction ID.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response (with ERROR-CODE).
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(b: u16) -> Class {
        match b & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// The 96-bit transaction ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh random transaction ID (RFC 8489 section 5: uniformly random).
    pub fn random() -> Self {
        TransactionId(rand::random())
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// How to protect a message being encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity<'a> {
    /// No MESSAGE-INTEGRITY.
    None,
    /// MESSAGE-INTEGRITY: HMAC-SHA1 with this key.
    Sha1(&'a [u8]),
    /// MESSAGE-INTEGRITY-SHA256: HMAC-SHA256 (all 32 bytes) with this key.
    Sha256(&'a [u8]),
}

/// What a decoded message needs to check its integrity later, when the key is known.
#[derive(Debug, Clone)]
struct IntegrityProof {
    sha256: bool,
    /// The message up to the integrity attribute, with the header length rewritten to end at
    /// that attribute (RFC 8489 sections 14.5 and 14.6).
    signed: Vec<u8>,
    mac: Vec<u8>,
}

/// A STUN message.
///
/// Build one with [`Message::new`] and [`Message::with`], encode it with [`Message::encode`];
/// parse untrusted bytes with [`Message::decode`], which never panics.
#[derive(Debug, Clone)]
pub struct Message {
    /// Request, indication, or response.
    pub class: Class,
    /// The method.
    pub method: Method,
    /// The transaction ID.
    pub transaction_id: TransactionId,
    /// Attributes in wire order. Decoding leaves out those after MESSAGE-INTEGRITY other than
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, which RFC 8489 says to ignore.
    pub attributes: Vec<Attribute>,
    proofs: Vec<IntegrityProof>,
    unknown_required: Vec<u16>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.method == other.method
            && self.transaction_id == other.transaction_id
            && self.attributes == other.attributes
    }
}

impl Eq for Message {}

impl Message {
    /// An empty message.
    pub fn new(class: Class, method: Method, transaction_id: TransactionId) -> Self {
        Self {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
            proofs: Vec::new(),
            unknown_required: Vec::new(),
        }
    }

    /// Adds an attribute (builder style).
    #[must_use]
    pub fn with(mut self, attribute: Attribute) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// The first attribute for which `f` returns something.
    pub fn find<'a, T>(&'a self, f: impl FnMut(&'a Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(f)
    }

    /// ERROR-CODE, if any.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        self.find(|a| match a {
            Attribute::ErrorCode(e) => Some(e),
            _ => None,
        })
    }

    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(x) => Some(*x),
            _ => None,
        })
        .or_else(|| {
            self.find(|a| match a {
                Attribute::MappedAddress(x) => Some(*x),
                _ => None,
            })
        })
    }

    /// Comprehension-required attribute types (below 0x8000) this crate does not know.
    pub fn unknown_required(&self) -> &[u16] {
        &self.unknown_required
    }

    /// Whether the message carried MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity(&self) -> bool {
        !self.proofs.is_empty()
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, with `key`.
    ///
    /// Fails when the message has neither or the one checked does not match.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), TurnError> {
        let proof = self
            .proofs
            .iter()
            .find(|p| p.sha256)
            .or_else(|| self.proofs.first())
            .ok_or(TurnError::IntegrityMismatch(
                "no MESSAGE-INTEGRITY attribute",
            ))?;
        let ok = if proof.sha256 {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                .map_err(|_| TurnError::InvalidInput("HMAC key"))?;
            mac.update(&proof.signed);
            mac.verify_truncated_left(&proof.mac).is_ok()
        } else {
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key)
                .map_err(|_| TurnError::InvalidInput("HMAC key"))?;
            mac.update(&proof.signed);
            mac.verify_slice(&proof.mac).is_ok()
        };
        if ok {
            Ok(())
        } else {
            Err(TurnError::IntegrityMismatch("HMAC does not match"))
        }
    }

    /// The message on the wire: attributes in order, then the integrity attribute if asked,
    /// then FINGERPRINT if asked.
    pub fn encode(
        &self,
        integrity: Integrity<'_>,
        fingerprint: bool,
    ) -> Result<Vec<u8>, TurnError> {
        let mut out = Vec::with_capacity(128);
        let t = self.method.0;
        if t > 0x0FFF {
            return Err(TurnError::InvalidInput("method above 0xfff"));
        }
        let c = self.class.bits();
        let typ = (t & 0x000F)
            | ((t & 0x0070) << 1)
            | ((t & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7);
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0);
        for a in &self.attributes {
            a.encode_into(&self.transaction_id, &mut out)?;
        }
        match integrity {
            Integrity::None => {}
            Integrity::Sha1(key) => {
                set_length(&mut out, 24)?;
                let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key)
                    .map_err(|_| TurnError::InvalidInput("HMAC key"))?;
                mac.update(&out);
                let tag = mac.finalize().into_bytes();
                out.extend_from_slice(&types::MESSAGE_INTEGRITY.to_be_bytes());
                out.extend_from_slice(&20u16.to_be_bytes());
                out.extend_from_slice(&tag);
            }
            Integrity::Sha256(key) => {
                set_length(&mut out, 36)?;
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .map_err(|_| TurnError::InvalidInput("HMAC key"))?;
                mac.update(&out);
                let tag = mac.finalize().into_bytes();
                out.extend_from_slice(&types::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
                out.extend_from_slice(&32u16.to_be_bytes());
                out.extend_from_slice(&tag);
            }
        }
        if fingerprint {
            set_length(&mut out, 8)?;
            let crc = crc32fast::hash(&out) ^ FINGERPRINT_XOR;
            out.extend_from_slice(&types::FINGERPRINT.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&crc.to_be_bytes());
        } else {
            set_length(&mut out, 0)?;
        }
        Ok(out)
    }

    /// Whether `bytes` look like the start of a STUN message (leading bits and magic cookie).
    pub fn is_stun(bytes: &[u8]) -> bool {
        bytes.len() >= HEADER_LEN
            && bytes[0] & 0xC0 == 0
            && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
    }

    /// Parses exactly one message filling `bytes`.
    ///
    /// Checks the header, every attribute's length and form, and FINGERPRINT when present.
    /// Unknown comprehension-optional attributes are kept as [`Attribute::Other`]; unknown
    /// comprehension-required ones too, and are listed by [`Message::unknown_required`] for the
    /// caller to act on (a response with them fails its transaction).
    pub fn decode(bytes: &[u8]) -> Result<Message, TurnError> {
        if bytes.len() < HEADER_LEN {
            return Err(TurnError::Truncated {
                what: "STUN header",
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        let typ = u16::from_be_bytes([bytes[0], bytes[1]]);
        if typ & 0xC000 != 0 {
            return Err(TurnError::NotStun("leading bits are not 00"));
        }
        if bytes[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(TurnError::NotStun("wrong magic cookie"));
        }
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if !len.is_multiple_of(4) {
            return Err(TurnError::BadLength("message length not a multiple of 4"));
        }
        let total = HEADER_LEN + len;
        if bytes.len() < total {
            return Err(TurnError::Truncated {
                what: "STUN message",
                needed: total,
                available: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(TurnError::BadLength("bytes after the end of the message"));
        }
        let method = Method((typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80));
        let class = Class::from_bits(((typ >> 7) & 0b10) | ((typ >> 4) & 0b01));
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&bytes[8..20]);
        let mut msg = Message::new(class, method, TransactionId(tid));

        let mut pos = HEADER_LEN;
        // 0: before MESSAGE-INTEGRITY, 1: after it, 2: after MESSAGE-INTEGRITY-SHA256.
        let mut integrity_stage = 0u8;
        let mut fingerprint_seen = false;
        while pos < total {
            if total - pos < 4 {
                return Err(TurnError::BadLength(
                    "attribute header overruns the message",
                ));
            }
            let atyp = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]);
            let alen = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
            let vstart = pos + 4;
            let vend = vstart + alen;
            let next = vend + padding(alen);
            if next > total {
                return Err(TurnError::BadLength("attribute value overruns the message"));
            }
            if fingerprint_seen {
                return Err(TurnError::AttributeAfterFingerprint(atyp));
            }
            let value = &bytes[vstart..vend];
            match atyp {
                types::FINGERPRINT => {
                    let Attribute::Fingerprint(fp) =
                        Attribute::decode(atyp, value, &msg.transaction_id)?
                    else {
                        return Err(TurnError::BadAttribute {
                            attr: atyp,
                            reason: "not a fingerprint",
                        });
                    };
                    let expected = crc32fast::hash(&bytes[..pos]) ^ FINGERPRINT_XOR;
                    if fp != expected {
                        return Err(TurnError::FingerprintMismatch);
                    }
                    fingerprint_seen = true;
                    msg.attributes.push(Attribute::Fingerprint(fp));
                }
                types::MESSAGE_INTEGRITY | types::MESSAGE_INTEGRITY_SHA256 => {
                    let sha256 = atyp == types::MESSAGE_INTEGRITY_SHA256;
                    let allowed = if sha256 {
                        integrity_stage < 2
                    } else {
                        integrity_stage == 0
                    };
                    if allowed {
                        let attr = Attribute::decode(atyp, value, &msg.transaction_id)?;
                        let mut signed = bytes[..pos].to_vec();
                        let signed_len = u16::try_from(vend - HEADER_LEN)
                            .map_err(|_| TurnError::BadLength("message too long"))?;
                        signed[2..4].copy_from_slice(&signed_len.to_be_bytes());
                        msg.proofs.push(IntegrityProof {
                            sha256,
                            signed,
                            mac: value.to_vec(),
                        });
                        msg.attributes.push(attr);
                        integrity_stage = if sha256 { 2 } else { 1 };
                    }
                }
                _ if integrity_stage > 0 => {}
                _ => {
                    let attr = Attribute::decode(atyp, value, &msg.transaction_id)?;
                    if atyp < 0x8000 && !Attribute::is_known(atyp) {
                        msg.unknown_required.push(atyp);
                    }
                    msg.attributes.push(attr);
                }
            }
            pos = next;
        }
        Ok(msg)
    }
}

/// Writes into the header the length the message will have once `extra` more bytes follow.
fn set_length(out: &mut [u8], extra: usize) -> Result<(), TurnError> {
    let len = u16::try_from(out.len() - HEADER_LEN + extra)
        .map_err(|_| TurnError::InvalidInput("message longer than 65535 bytes"))?;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

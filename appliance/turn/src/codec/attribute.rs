//! STUN and TURN attributes: types, values, and their wire form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::message::{MAGIC_COOKIE, TransactionId};
use crate::error::TurnError;

/// Attribute type numbers (RFC 8489 section 18.3, RFC 8656 section 18).
pub mod types {
    /// MAPPED-ADDRESS (RFC 8489).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME (RFC 8489).
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (RFC 8489): HMAC-SHA1.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE (RFC 8489).
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES (RFC 8489).
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER (RFC 8656).
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME (RFC 8656).
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS (RFC 8656).
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA (RFC 8656).
    pub const DATA: u16 = 0x0013;
    /// REALM (RFC 8489).
    pub const REALM: u16 = 0x0014;
    /// NONCE (RFC 8489).
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS (RFC 8656).
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656).
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT (RFC 8656).
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT (RFC 8656).
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT (RFC 8656).
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM (RFC 8489).
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH (RFC 8489).
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS (RFC 8489).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN (RFC 8656).
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// PASSWORD-ALGORITHMS (RFC 8489).
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    /// ALTERNATE-DOMAIN (RFC 8489).
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    /// SOFTWARE (RFC 8489).
    pub const SOFTWARE: u16 = 0x8022;
    /// ALTERNATE-SERVER (RFC 8489).
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// FINGERPRINT (RFC 8489).
    pub const FINGERPRINT: u16 = 0x8028;
}

/// Longest USERNAME value in bytes (RFC 8489 section 14.3).
const MAX_USERNAME: usize = 512;
/// Longest REALM, NONCE, SOFTWARE, reason phrase and ALTERNATE-DOMAIN value in bytes.
const MAX_TEXT: usize = 763;

/// REQUESTED-TRANSPORT value for UDP relaying (the only one RFC 8656 defines).
pub const TRANSPORT_UDP: u8 = 17;

/// A password algorithm (RFC 8489 section 18.5) as listed in PASSWORD-ALGORITHMS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PasswordAlgorithm {
    /// The registered number: [`PasswordAlgorithm::MD5`] or [`PasswordAlgorithm::SHA256`].
    pub id: u16,
    /// Its parameters (empty for both registered algorithms).
    pub params: Vec<u8>,
}

impl PasswordAlgorithm {
    /// MD5 key derivation (the RFC 5389 long-term key).
    pub const MD5: u16 = 0x0001;
    /// SHA-256 key derivation.
    pub const SHA256: u16 = 0x0002;

    /// A parameterless algorithm.
    pub fn new(id: u16) -> Self {
        Self {
            id,
            params: Vec::new(),
        }
    }
}

/// The value of ERROR-CODE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCode {
    /// 300..=699.
    pub code: u16,
    /// Human-readable reason phrase.
    pub reason: String,
}

/// One attribute. Types this crate does not model keep their raw value in [`Attribute::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute {
    /// MAPPED-ADDRESS.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS: the client's address as the server sees it.
    XorMappedAddress(SocketAddr),
    /// XOR-RELAYED-ADDRESS: the allocated relayed transport address.
    XorRelayedAddress(SocketAddr),
    /// XOR-PEER-ADDRESS: a peer of the allocation.
    XorPeerAddress(SocketAddr),
    /// ALTERNATE-SERVER (with 300 Try Alternate).
    AlternateServer(SocketAddr),
    /// ALTERNATE-DOMAIN: the TLS name of the alternate server.
    AlternateDomain(String),
    /// USERNAME.
    Username(String),
    /// REALM.
    Realm(String),
    /// NONCE.
    Nonce(String),
    /// SOFTWARE.
    Software(String),
    /// ERROR-CODE.
    ErrorCode(ErrorCode),
    /// UNKNOWN-ATTRIBUTES (with 420).
    UnknownAttributes(Vec<u16>),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// REQUESTED-TRANSPORT protocol number ([`TRANSPORT_UDP`]).
    RequestedTransport(u8),
    /// REQUESTED-ADDRESS-FAMILY (1 IPv4, 2 IPv6).
    RequestedAddressFamily(u8),
    /// DONT-FRAGMENT.
    DontFragment,
    /// EVEN-PORT with its R bit.
    EvenPort(bool),
    /// RESERVATION-TOKEN.
    ReservationToken([u8; 8]),
    /// CHANNEL-NUMBER.
    ChannelNumber(u16),
    /// DATA.
    Data(Vec<u8>),
    /// PASSWORD-ALGORITHMS offered by the server.
    PasswordAlgorithms(Vec<PasswordAlgorithm>),
    /// PASSWORD-ALGORITHM chosen by the client.
    PasswordAlgorithm(PasswordAlgorithm),
    /// MESSAGE-INTEGRITY (HMAC-SHA1), as received.
    MessageIntegrity([u8; 20]),
    /// MESSAGE-INTEGRITY-SHA256 (16 to 32 bytes), as received.
    MessageIntegritySha256(Vec<u8>),
    /// FINGERPRINT, as received.
    Fingerprint(u32),
    /// Any other type, with its raw value.
    Other {
        /// The attribute type.
        typ: u16,
        /// The raw value without padding.
        value: Vec<u8>,
    },
}

impl Attribute {
    /// The attribute's type number.
    pub fn typ(&self) -> u16 {
        use types::*;
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::AlternateServer(_) => ALTERNATE_SERVER,
            Attribute::AlternateDomain(_) => ALTERNATE_DOMAIN,
            Attribute::Username(_) => USERNAME,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::Software(_) => SOFTWARE,
            Attribute::ErrorCode(_) => ERROR_CODE,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Attribute::DontFragment => DONT_FRAGMENT,
            Attribute::EvenPort(_) => EVEN_PORT,
            Attribute::ReservationToken(_) => RESERVATION_TOKEN,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::Data(_) => DATA,
            Attribute::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Attribute::PasswordAlgorithm(_) => PASSWORD_ALGORITHM,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::Other { typ, .. } => *typ,
        }
    }

    /// Appends type, length, value and padding to `out`.
    pub(crate) fn encode_into(
        &self,
        tid: &TransactionId,
        out: &mut Vec<u8>,
    ) -> Result<(), TurnError> {
        let mut value = Vec::new();
        match self {
            Attribute::MappedAddress(a) | Attribute::AlternateServer(a) => {
                encode_address(*a, &mut value)
            }
            Attribute::XorMappedAddress(a)
            | Attribute::XorRelayedAddress(a)
            | Attribute::XorPeerAddress(a) => encode_address(xor_address(*a, tid), &mut value),
            Attribute::Username(s) => text(&mut value, s, MAX_USERNAME)?,
            Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::Software(s)
            | Attribute::AlternateDomain(s) => text(&mut value, s, MAX_TEXT)?,
            Attribute::ErrorCode(e) => {
                if !(300..=699).contains(&e.code) {
                    return Err(TurnError::InvalidInput("error code outside 300..=699"));
                }
                value.extend_from_slice(&[0, 0, (e.code / 100) as u8, (e.code % 100) as u8]);
                text(&mut value, &e.reason, MAX_TEXT)?;
            }
            Attribute::UnknownAttributes(list) => {
                for t in list {
                    value.extend_from_slice(&t.to_be_bytes());
                }
            }
            Attribute::Lifetime(s) => value.extend_from_slice(&s.to_be_bytes()),
            Attribute::RequestedTransport(p) | Attribute::RequestedAddressFamily(p) => {
                value.extend_from_slice(&[*p, 0, 0, 0])
            }
            Attribute::DontFragment => {}
            Attribute::EvenPort(r) => value.push(if *r { 0x80 } else { 0 }),
            Attribute::ReservationToken(t) => value.extend_from_slice(t),
            Attribute::ChannelNumber(n) => {
                value.extend_from_slice(&n.to_be_bytes());
                value.extend_from_slice(&[0, 0]);
            }
            Attribute::Data(d) => value.extend_from_slice(d),
            Attribute::PasswordAlgorithms(list) => {
                for a in list {
                    encode_password_algorithm(a, &mut value)?;
                }
            }
            Attribute::PasswordAlgorithm(a) => encode_password_algorithm(a, &mut value)?,
            Attribute::MessageIntegrity(m) => value.extend_from_slice(m),
            Attribute::MessageIntegritySha256(m) => value.extend_from_slice(m),
            Attribute::Fingerprint(f) => value.extend_from_slice(&f.to_be_bytes()),
            Attribute::Other { value: v, .. } => value.extend_from_slice(v),
        }
        let len = u16::try_from(value.len())
            .map_err(|_| TurnError::InvalidInput("attribute value longer than 65535 bytes"))?;
        out.extend_from_slice(&self.typ().to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&value);
        out.resize(out.len() + padding(value.len()), 0);
        Ok(())
    }

    /// Parses one attribute value. `typ` and the unpadded `value` come from the TLV header.
    pub(crate) fn decode(
        typ: u16,
        value: &[u8],
        tid: &TransactionId,
    ) -> Result<Attribute, TurnError> {
        use types::*;
        let bad = |reason| TurnError::BadAttribute { attr: typ, reason };
        Ok(match typ {
            MAPPED_ADDRESS => Attribute::MappedAddress(decode_address(typ, value)?),
            ALTERNATE_SERVER => Attribute::AlternateServer(decode_address(typ, value)?),
            XOR_MAPPED_ADDRESS => {
                Attribute::XorMappedAddress(xor_address(decode_address(typ, value)?, tid))
            }
            XOR_RELAYED_ADDRESS => {
                Attribute::XorRelayedAddress(xor_address(decode_address(typ, value)?, tid))
            }
            XOR_PEER_ADDRESS => {
                Attribute::XorPeerAddress(xor_address(decode_address(typ, value)?, tid))
            }
            USERNAME => Attribute::Username(strict_text(typ, value, MAX_USERNAME)?),
            REALM => Attribute::Realm(strict_text(typ, value, MAX_TEXT)?),
            NONCE => Attribute::Nonce(strict_text(typ, value, MAX_TEXT)?),
            ALTERNATE_DOMAIN => Attribute::AlternateDomain(strict_text(typ, value, MAX_TEXT)?),
            SOFTWARE => Attribute::Software(lossy_text(typ, value)?),
            ERROR_CODE => {
                if value.len() < 4 {
                    return Err(bad("shorter than 4 bytes"));
                }
                let class = u16::from(value[2] & 0x07);
                let number = u16::from(value[3]);
                if !(3..=6).contains(&class) || number > 99 {
                    return Err(bad("error class outside 3..=6 or number above 99"));
                }
                Attribute::ErrorCode(ErrorCode {
                    code: class * 100 + number,
                    reason: lossy_text(typ, &value[4..])?,
                })
            }
            UNKNOWN_ATTRIBUTES => {
                if !value.len().is_multiple_of(2) {
                    return Err(bad("odd length"));
                }
                Attribute::UnknownAttributes(
                    value
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            LIFETIME => Attribute::Lifetime(u32::from_be_bytes(fixed::<4>(typ, value)?)),
            REQUESTED_TRANSPORT => Attribute::RequestedTransport(fixed::<4>(typ, value)?[0]),
            REQUESTED_ADDRESS_FAMILY => {
                Attribute::RequestedAddressFamily(fixed::<4>(typ, value)?[0])
            }
            DONT_FRAGMENT => {
                if !value.is_empty() {
                    return Err(bad("DONT-FRAGMENT has a value"));
                }
                Attribute::DontFragment
            }
            EVEN_PORT => Attribute::EvenPort(fixed::<1>(typ, value)?[0] & 0x80 != 0),
            RESERVATION_TOKEN => Attribute::ReservationToken(fixed::<8>(typ, value)?),
            CHANNEL_NUMBER => {
                let v = fixed::<4>(typ, value)?;
                Attribute::ChannelNumber(u16::from_be_bytes([v[0], v[1]]))
            }
            DATA => Attribute::Data(value.to_vec()),
            PASSWORD_ALGORITHMS => {
                let mut rest = value;
                let mut list = Vec::new();
                while !rest.is_empty() {
                    let (alg, used) = decode_password_algorithm(typ, rest)?;
                    list.push(alg);
                    rest = &rest[used..];
                }
                Attribute::PasswordAlgorithms(list)
            }
            PASSWORD_ALGORITHM => {
                let (alg, used) = decode_password_algorithm(typ, value)?;
                // The value of a single PASSWORD-ALGORITHM is unpadded inside the TLV, so the
                // parameters may end short of a 4-byte boundary, but nothing may follow them.
                if used < value.len() {
                    return Err(bad("bytes after the algorithm"));
                }
                Attribute::PasswordAlgorithm(alg)
            }
            MESSAGE_INTEGRITY => Attribute::MessageIntegrity(fixed::<20>(typ, value)?),
            MESSAGE_INTEGRITY_SHA256 => {
                if value.len() < 16 || value.len() > 32 || !value.len().is_multiple_of(4) {
                    return Err(bad("length not 16, 20, 24, 28 or 32"));
                }
                Attribute::MessageIntegritySha256(value.to_vec())
            }
            FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(fixed::<4>(typ, value)?)),
            _ => Attribute::Other {
                typ,
                value: value.to_vec(),
            },
        })
    }

    /// Whether this crate understands attributes of type `typ` (others that are
    /// comprehension-required make a response fail).
    pub(crate) fn is_known(typ: u16) -> bool {
        use types::*;
        matches!(
            typ,
            MAPPED_ADDRESS
                | USERNAME
                | MESSAGE_INTEGRITY
                | ERROR_CODE
                | UNKNOWN_ATTRIBUTES
                | CHANNEL_NUMBER
                | LIFETIME
                | XOR_PEER_ADDRESS
                | DATA
                | REALM
                | NONCE
                | XOR_RELAYED_ADDRESS
                | REQUESTED_ADDRESS_FAMILY
                | EVEN_PORT
                | REQUESTED_TRANSPORT
                | DONT_FRAGMENT
                | MESSAGE_INTEGRITY_SHA256
                | PASSWORD_ALGORITHM
                | XOR_MAPPED_ADDRESS
                | RESERVATION_TOKEN
                | PASSWORD_ALGORITHMS
                | ALTERNATE_DOMAIN
                | SOFTWARE
                | ALTERNATE_SERVER
                | FINGERPRINT
        )
    }
}

/// Bytes of padding after a value of `len` bytes.
pub(crate) fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn text(out: &mut Vec<u8>, s: &str, max: usize) -> Result<(), TurnError> {
    if s.len() > max {
        return Err(TurnError::InvalidInput("text attribute too long"));
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn strict_text(typ: u16, value: &[u8], max: usize) -> Result<String, TurnError> {
    if value.len() > max {
        return Err(TurnError::BadAttribute {
            attr: typ,
            reason: "text too long",
        });
    }
    String::from_utf8(value.to_vec()).map_err(|_| TurnError::BadAttribute {
        attr: typ,
        reason: "not UTF-8",
    })
}

/// Informational text (SOFTWARE, reason phrases): invalid UTF-8 is replaced, not refused.
fn lossy_text(typ: u16, value: &[u8]) -> Result<String, TurnError> {
    if value.len() > MAX_TEXT {
        return Err(TurnError::BadAttribute {
            attr: typ,
            reason: "text too long",
        });
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

fn fixed<const N: usize>(typ: u16, value: &[u8]) -> Result<[u8; N], TurnError> {
    value.try_into().map_err(|_| TurnError::BadAttribute {
        attr: typ,
        reason: "wrong length for its type",
    })
}

fn encode_address(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
    }
}

fn decode_address(typ: u16, value: &[u8]) -> Result<SocketAddr, TurnError> {
    let bad = |reason| TurnError::BadAttribute { attr: typ, reason };
    if value.len() < 4 {
        return Err(bad("address shorter than 4 bytes"));
    }
    let port = u16::from_be_bytes([value[2], value[3]]);
    match (value[1], value.len()) {
        (0x01, 8) => {
            let o: [u8; 4] = fixed(typ, &value[4..8])?;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        (0x02, 20) => {
            let o: [u8; 16] = fixed(typ, &value[4..20])?;
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        (0x01 | 0x02, _) => Err(bad("address length does not match its family")),
        _ => Err(bad("unknown address family")),
    }
}

/// XOR-ing is its own inverse: the same function encodes and decodes.
fn xor_address(addr: SocketAddr, tid: &TransactionId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match addr.ip() {
        IpAddr::V4(ip) => {
            let mut o = ip.octets();
            for (b, k) in o.iter_mut().zip(cookie) {
                *b ^= k;
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            let key = cookie.iter().chain(tid.0.iter());
            for (b, k) in o.iter_mut().zip(key) {
                *b ^= k;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    SocketAddr::new(ip, port)
}

fn encode_password_algorithm(a: &PasswordAlgorithm, out: &mut Vec<u8>) -> Result<(), TurnError> {
    let len = u16::try_from(a.params.len())
        .map_err(|_| TurnError::InvalidInput("password algorithm parameters too long"))?;
    out.extend_from_slice(&a.id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&a.params);
    out.resize(out.len() + padding(a.params.len()), 0);
    Ok(())
}

/// One algorithm and the bytes it used (with padding, clipped to what is there).
fn decode_password_algorithm(
    typ: u16,
    value: &[u8],
) -> Result<(PasswordAlgorithm, usize), TurnError> {
    if value.len() < 4 {
        return Err(TurnError::BadAttribute {
            attr: typ,
            reason: "password algorithm shorter than 4 bytes",
        });
    }
    let id = u16::from_be_bytes([value[0], value[1]]);
    let len = usize::from(u16::from_be_bytes([value[2], value[3]]));
    let params = value
        .get(4..4 + len)
        .ok_or(TurnError::BadAttribute {
            attr: typ,
            reason: "password algorithm parameters overrun the attribute",
        })?
        .to_vec();
    let used = (4 + len + padding(len)).min(value.len());
    Ok((PasswordAlgorithm { id, params }, used))
}

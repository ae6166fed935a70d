//! Long-term credentials (RFC 8489 section 9.2): key derivation and the nonce cookie.

use md5::{Digest, Md5};
use sha2::Sha256;

use crate::codec::attribute::PasswordAlgorithm;

/// The prefix of a nonce that carries STUN security feature bits (RFC 8489 section 9.2).
pub const NONCE_COOKIE: &str = "obMatJos2";

/// The long-term key: `H(username ":" realm ":" password)` with MD5 (16 bytes) or SHA-256
/// (32 bytes) as `algorithm` says. Username and password are used as given; no OpaqueString
/// (RFC 8265) preparation is applied. `None` for an algorithm this crate does not know.
pub fn long_term_key(
    algorithm: u16,
    username: &str,
    realm: &str,
    password: &str,
) -> Option<Vec<u8>> {
    let input = format!("{username}:{realm}:{password}");
    match algorithm {
        PasswordAlgorithm::MD5 => Some(Md5::digest(input.as_bytes()).to_vec()),
        PasswordAlgorithm::SHA256 => Some(Sha256::digest(input.as_bytes()).to_vec()),
        _ => None,
    }
}

/// The security feature bits a nonce announces, `None` if it lacks the cookie or they do not
/// decode. Bit 0 (the least significant of the 24) is "password algorithms", bit 1 "username
/// anonymity" (numbered as RFC 8489 erratum 6290 corrects them).
pub fn nonce_security_features(nonce: &str) -> Option<u32> {
    let rest = nonce.strip_prefix(NONCE_COOKIE)?;
    let b64 = rest.get(..4)?;
    let mut v: u32 = 0;
    for c in b64.bytes() {
        let six = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        v = (v << 6) | u32::from(six);
    }
    Some(v)
}

/// Security feature bit: the server negotiates PASSWORD-ALGORITHMS.
pub const FEATURE_PASSWORD_ALGORITHMS: u32 = 0x01;

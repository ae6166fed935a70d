//! The audit trail's hash chain.
//!
//! Each audit entry carries the SHA-256 of the previous one (`prev_hash`). The hash of an entry is
//! `SHA-256("telecart/audit/v1" || seq (8 bytes, big-endian) || plaintext body bytes)`, over the exact
//! JSON bytes that were sealed, so no canonicalisation is involved. The store also keeps the chain's
//! head (hash of the last entry, entry count) sealed under a data key, so removing entries at the end
//! is detected too, and an anchor (hash of the last entry purged after sync) so that purging does not
//! break verification.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first audit entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// Hash of an audit entry, as the next entry's `prev_hash`.
pub fn entry_hash(seq: u64, plain_body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"telecart/audit/v1");
    h.update(seq.to_be_bytes());
    h.update(plain_body);
    h.finalize().into()
}

/// SHA-256 of a record's plaintext, as sent to the ingest API (`digest`) to detect conflicting
/// duplicates.
pub fn content_digest(seq: u64, at_ms: u64, plain_body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"telecart/record/v1");
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    h.update(plain_body);
    h.finalize().into()
}

/// The sealed head of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// Hash of the last audit entry ([`GENESIS`] if none).
    pub hash: [u8; 32],
    /// Number of audit entries ever written.
    pub count: u64,
}

impl ChainHead {
    /// The head of an empty chain.
    pub const EMPTY: ChainHead = ChainHead {
        hash: GENESIS,
        count: 0,
    };

    pub(crate) fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..32].copy_from_slice(&self.hash);
        b[32..].copy_from_slice(&self.count.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 40 {
            return None;
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[..32]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&b[32..]);
        Some(Self {
            hash,
            count: u64::from_be_bytes(c),
        })
    }
}

/// Parses a 64-digit hex hash.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_bind_sequence_and_content() {
        assert_ne!(entry_hash(1, b"a"), entry_hash(2, b"a"));
        assert_ne!(entry_hash(1, b"a"), entry_hash(1, b"b"));
        let h = ChainHead {
            hash: [7; 32],
            count: 9,
        };
        assert_eq!(ChainHead::decode(&h.encode()), Some(h));
        assert_eq!(
            parse_hash(&crate::record::hex(&[0xab; 32])),
            Some([0xab; 32])
        );
        assert_eq!(parse_hash("zz"), None);
    }
}

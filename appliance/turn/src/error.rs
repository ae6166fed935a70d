//! The one error type of this crate.

use std::net::SocketAddr;

/// Everything that can go wrong in the codec, the client state machines and the driver.
///
/// It derives `Clone` and `PartialEq` so tests can assert on it and so the state machine can
/// hand the same failure to every caller waiting on it; I/O errors are therefore kept as their
/// [`std::io::ErrorKind`] and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The input ends before the header or a length field says it should.
    #[error("truncated {what}: need {needed} bytes, have {available}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes the header or length field asks for.
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// Not a STUN message: wrong leading bits or magic cookie.
    #[error("not a STUN message: {0}")]
    NotStun(&'static str),
    /// A length field that cannot be right (not a multiple of 4, or more bytes than the message).
    #[error("bad length: {0}")]
    BadLength(&'static str),
    /// An attribute whose value does not have the form its type requires.
    #[error("malformed attribute 0x{attr:04x}: {reason}")]
    BadAttribute {
        /// The attribute type.
        attr: u16,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The message carries attributes after FINGERPRINT.
    #[error("attribute 0x{0:04x} follows FINGERPRINT")]
    AttributeAfterFingerprint(u16),
    /// FINGERPRINT does not match the message.
    #[error("FINGERPRINT does not match the message")]
    FingerprintMismatch,
    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 does not match, or a message that must be
    /// integrity-protected is not.
    #[error("message integrity check failed: {0}")]
    IntegrityMismatch(&'static str),
    /// A response carries comprehension-required attributes this client does not know
    /// (RFC 8489 section 6.3.3): the transaction fails.
    #[error("unknown comprehension-required attributes: {0:04x?}")]
    UnknownRequiredAttributes(Vec<u16>),
    /// A ChannelData frame whose channel number is outside 0x4000..=0x4FFF.
    #[error("invalid channel number 0x{0:04x}")]
    InvalidChannelNumber(u16),
    /// The stream from a TCP or TLS server holds something that is neither STUN nor ChannelData:
    /// framing is lost and the connection cannot be used any more.
    #[error("stream framing lost: first byte 0x{0:02x} starts neither STUN nor ChannelData")]
    StreamFraming(u8),
    /// An argument or a value to encode is out of range.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// A response lacks an attribute the method requires.
    #[error("{method} response lacks {attr}")]
    MissingAttribute {
        /// The method of the response.
        method: &'static str,
        /// The missing attribute.
        attr: &'static str,
    },
    /// The server answered with an error response that this client cannot recover from.
    #[error("{method} failed: {code} {reason}")]
    ServerError {
        /// The method of the failed request.
        method: &'static str,
        /// The STUN error code (300..=699).
        code: u16,
        /// The reason phrase the server gave.
        reason: String,
    },
    /// The server rejected our credentials (a second 401, or a 401 with no realm or nonce).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// A transaction got no answer within the RFC 8489 timeout.
    #[error("{method} transaction timed out")]
    Timeout {
        /// The method of the request that got no answer.
        method: &'static str,
    },
    /// Too many 300 (Try Alternate) redirects or 438 (Stale Nonce) retries in a row.
    #[error("too many retries: {0}")]
    TooManyRetries(&'static str),
    /// The server redirected us to an address of another family or an unusable one.
    #[error("unusable alternate server {0}")]
    BadAlternate(SocketAddr),
    /// The operation needs an allocation and there is none (not yet, failed or closed).
    #[error("no allocation: {0}")]
    NotAllocated(&'static str),
    /// The client was closed.
    #[error("the TURN client is closed")]
    Closed,
    /// The driver's socket or connection failed.
    #[error("I/O error ({kind:?}): {message}")]
    Io {
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
        /// Its text.
        message: String,
    },
    /// The driver's configuration is inconsistent (for example TLS without a rustls config).
    #[error("configuration: {0}")]
    Config(String),
}

impl From<std::io::Error> for TurnError {
    fn from(e: std::io::Error) -> Self {
        TurnError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

//! The STUN (RFC 8489) and TURN (RFC 8656) wire format: messages, attributes, ChannelData and
//! stream framing. Every parser here takes untrusted bytes and returns an error, never panics.

pub mod attribute;
pub mod channel;
pub mod credentials;
pub mod message;

pub use attribute::{Attribute, ErrorCode, PasswordAlgorithm, TRANSPORT_UDP};
pub use channel::{CHANNEL_MAX, CHANNEL_MIN, ChannelData, FrameKind, StreamFramer};
pub use credentials::long_term_key;
pub use message::{Class, Integrity, MAGIC_COOKIE, Message, Method, TransactionId};

#[cfg(test)]
mod tests;

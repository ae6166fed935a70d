//! ChannelData messages (RFC 8656 section 12.4) and re-framing of a TCP/TLS byte stream that
//! carries STUN messages and ChannelData back to back.

use crate::codec::attribute::padding;
use crate::codec::message::{HEADER_LEN, MAGIC_COOKIE};
use crate::error::TurnError;

/// Lowest channel number a client may bind.
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number a client may bind (RFC 8656 narrowed the range to 0x4000..=0x4FFF).
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Length of the ChannelData header.
pub const CHANNEL_HEADER_LEN: usize = 4;

/// A parsed ChannelData message, borrowing its application data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number (0x4000..=0x4FFF).
    pub channel: u16,
    /// The application data, without padding.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message. Bytes after the data (padding) are allowed, since the
    /// length field does not count them.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, TurnError> {
        if bytes.len() < CHANNEL_HEADER_LEN {
            return Err(TurnError::Truncated {
                what: "ChannelData header",
                needed: CHANNEL_HEADER_LEN,
                available: bytes.len(),
            });
        }
        let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return Err(TurnError::InvalidChannelNumber(channel));
        }
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let data = bytes
            .get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)
            .ok_or(TurnError::Truncated {
                what: "ChannelData",
                needed: CHANNEL_HEADER_LEN + len,
                available: bytes.len(),
            })?;
        if bytes.len() > CHANNEL_HEADER_LEN + len + 3 {
            return Err(TurnError::BadLength(
                "bytes after ChannelData and its padding",
            ));
        }
        Ok(ChannelData { channel, data })
    }

    /// The message on the wire; `pad` rounds it up to 4 bytes, as stream transports require
    /// (RFC 8656 section 12.5).
    pub fn encode(channel: u16, data: &[u8], pad: bool) -> Result<Vec<u8>, TurnError> {
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return Err(TurnError::InvalidChannelNumber(channel));
        }
        let len = u16::try_from(data.len())
            .map_err(|_| TurnError::InvalidInput("ChannelData longer than 65535 bytes"))?;
        let mut out = Vec::with_capacity(CHANNEL_HEADER_LEN + data.len() + 3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
        if pad {
            out.resize(out.len() + padding(data.len()), 0);
        }
        Ok(out)
    }
}

/// What the first byte of a datagram or frame says it is (RFC 7983 style demultiplexing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A STUN message (first two bits 00).
    Stun,
    /// ChannelData (first byte 0x40..=0x4F).
    ChannelData,
}

impl FrameKind {
    /// Classifies a frame by its first byte; `None` for anything else.
    pub fn of(first: u8) -> Option<FrameKind> {
        match first {
            0x00..=0x3F => Some(FrameKind::Stun),
            0x40..=0x4F => Some(FrameKind::ChannelData),
            _ => None,
        }
    }
}

/// Cuts a TCP or TLS byte stream from a TURN server into whole frames.
///
/// Feed it whatever each read returned with [`StreamFramer::push`], then take frames with
/// [`StreamFramer::next_frame`] until it returns `Ok(None)`. A frame is one STUN message or one
/// ChannelData message with its padding. Framing cannot be recovered once lost, so an error
/// means the connection must be dropped.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    start: usize,
}

impl StreamFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet make a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, TurnError> {
        let rest = &self.buf[self.start..];
        let Some(&first) = rest.first() else {
            return Ok(None);
        };
        let kind = FrameKind::of(first).ok_or(TurnError::StreamFraming(first))?;
        let need = match kind {
            FrameKind::Stun => {
                // Check the cookie as soon as it is there, so garbage fails early instead of
                // waiting for up to 64 KiB that will never make sense.
                if rest.len() >= 8 && rest[4..8] != MAGIC_COOKIE.to_be_bytes() {
                    return Err(TurnError::StreamFraming(first));
                }
                if rest.len() < HEADER_LEN {
                    return Ok(None);
                }
                let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                if !len.is_multiple_of(4) {
                    return Err(TurnError::BadLength("message length not a multiple of 4"));
                }
                HEADER_LEN + len
            }
            FrameKind::ChannelData => {
                if rest.len() < CHANNEL_HEADER_LEN {
                    return Ok(None);
                }
                let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                CHANNEL_HEADER_LEN + len + padding(len)
            }
        };
        if rest.len() < need {
            return Ok(None);
        }
        let frame = rest[..need].to_vec();
        self.start += need;
        Ok(Some((kind, frame)))
    }
}

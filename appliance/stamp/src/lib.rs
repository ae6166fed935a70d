//! telecart-stamp (docs below are filled in once the layout is settled).
#![warn(missing_docs, unreachable_pub)]

mod code;
mod crc;
mod pattern;

pub use code::{COLUMNS, MIN_WIDTH, ROWS, decode_stamp, stamp_frame, strip_height, write_stamp};
pub use pattern::{MAX_DIMENSION, TestPattern};
pub use telecart_core::CaptureTime;

/// What a stamp carries: the frame's sequence number and capture time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Sequence number the source gave the frame.
    pub sequence: u64,
    /// Wall-clock capture time, microseconds since the UNIX epoch.
    pub capture_time: CaptureTime,
}

/// Why a stamp could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StampError {
    /// The picture is too narrow for the stamp's cells, or too short for its strip.
    #[error(
        "a {width}x{height} picture cannot hold a stamp: it needs a width of at least 160 and a height of at least width/8"
    )]
    TooSmall {
        /// Width given.
        width: u32,
        /// Height given.
        height: u32,
    },
    /// The test pattern cannot be made at this size.
    #[error(
        "cannot render a {width}x{height} test pattern: width and height must be even, width 160..=8192, height width/4..=8192"
    )]
    BadSize {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// A row stride shorter than a row.
    #[error("row stride {stride} is less than the width {width}")]
    BadStride {
        /// Width in pixels.
        width: u32,
        /// Stride given, in bytes.
        stride: usize,
    },
    /// The luma buffer ends before the plane it should hold.
    #[error("luma buffer holds {got} bytes, the plane needs {need}")]
    ShortBuffer {
        /// Bytes the plane spans.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// A frame whose buffer is not one I420 picture of its stated size.
    #[error("frame of {width}x{height} has {len} bytes, not one even-sized I420 picture")]
    BadFrame {
        /// Stated width.
        width: u32,
        /// Stated height.
        height: u32,
        /// Bytes in its buffer.
        len: usize,
    },
    /// No stamp strip at the top of the picture: its marker cells are missing or too faint.
    #[error("no stamp found")]
    NoStamp,
    /// A strip was found but its bits do not match their checksum: the stamp was damaged.
    #[error("stamp damaged: checksum read {found:#010x}, the bits read give {computed:#010x}")]
    ChecksumMismatch {
        /// CRC-32 read from the strip.
        found: u32,
        /// CRC-32 of the sequence and capture time read from the strip.
        computed: u32,
    },
}

#[cfg(test)]
mod h264_tests;

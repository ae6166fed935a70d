//! Raw and encoded media as it travels through the pipeline.
//!
//! Raw video is always planar I420 (Y, then U, then V, tightly packed): every
//! camera format is converted once at capture, so encoders, overlays and the
//! privacy slate deal with one layout only.

use std::fmt;

/// Wall-clock time of capture, in microseconds since the UNIX epoch.
///
/// Wall clock rather than monotonic on purpose: the stamp in the test pattern
/// carries it to a receiver on the same host (or an NTP-synced one), which
/// subtracts it from its own wall clock to get glass-to-glass latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CaptureTime(pub u64);

impl CaptureTime {
    /// Microseconds since the UNIX epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// `self - earlier` in microseconds, saturating at zero.
    pub fn micros_since(self, earlier: CaptureTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for CaptureTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// One uncompressed picture in I420.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Width in pixels; even.
    pub width: u32,
    /// Height in pixels; even.
    pub height: u32,
    /// Y plane (`width * height`), then U and V (`width/2 * height/2` each).
    pub data: Vec<u8>,
    /// Sequence number given by the source, starting at 0, one per captured frame.
    pub sequence: u64,
    /// When the source captured it.
    pub capture_time: CaptureTime,
}

/// Why a buffer cannot be an I420 frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Width or height is zero or odd.
    #[error("frame size {width}x{height} is not a positive even size")]
    BadSize {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// The buffer does not hold exactly one frame.
    #[error("frame buffer holds {got} bytes, a {width}x{height} I420 frame needs {need}")]
    BadLength {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
}

impl VideoFrame {
    /// Bytes in an I420 frame of this size.
    pub fn i420_len(width: u32, height: u32) -> usize {
        let luma = width as usize * height as usize;
        luma + 2 * ((width as usize / 2) * (height as usize / 2))
    }

    /// A black frame (Y=16, U=V=128, video range).
    pub fn black(
        width: u32,
        height: u32,
        sequence: u64,
        capture_time: CaptureTime,
    ) -> Result<Self, FrameError> {
        check_size(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![128u8; Self::i420_len(width, height)];
        data[..luma].fill(16);
        Ok(Self {
            width,
            height,
            data,
            sequence,
            capture_time,
        })
    }

    /// Wraps an I420 buffer, checking its length.
    pub fn from_i420(
        width: u32,
        height: u32,
        data: Vec<u8>,
        sequence: u64,
        capture_time: CaptureTime,
    ) -> Result<Self, FrameError> {
        check_size(width, height)?;
        let need = Self::i420_len(width, height);
        if data.len() != need {
            return Err(FrameError::BadLength {
                width,
                height,
                need,
                got: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
            sequence,
            capture_time,
        })
    }

    /// The Y, U and V planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = self.width as usize * self.height as usize;
        let chroma = (self.width as usize / 2) * (self.height as usize / 2);
        let (y, rest) = self.data.split_at(luma);
        let (u, v) = rest.split_at(chroma);
        (y, u, v)
    }

    /// The Y, U and V planes, writable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.width as usize * self.height as usize;
        let chroma = (self.width as usize / 2) * (self.height as usize / 2);
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }
}

fn check_size(width: u32, height: u32) -> Result<(), FrameError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(FrameError::BadSize { width, height });
    }
    Ok(())
}

impl fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("sequence", &self.sequence)
            .field("capture_time", &self.capture_time)
            .finish_non_exhaustive()
    }
}

/// A block of interleaved signed 16-bit PCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// `frames * channels` samples.
    pub samples: Vec<i16>,
    /// Sequence number given by the source.
    pub sequence: u64,
    /// When the first sample was captured.
    pub capture_time: CaptureTime,
}

impl AudioFrame {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1) as usize
    }

    /// Duration in microseconds.
    pub fn duration_micros(&self) -> u64 {
        self.frames() as u64 * 1_000_000 / self.sample_rate.max(1) as u64
    }
}

/// One H.264 access unit: exactly one whole picture, Annex-B framed.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedVideo {
    /// Annex-B byte stream (start codes) of one access unit; a key frame carries SPS and PPS first.
    pub data: Vec<u8>,
    /// An IDR picture that a decoder can start from.
    pub keyframe: bool,
    /// Sequence number of the raw frame it was made from.
    pub sequence: u64,
    /// Capture time of the raw frame it was made from.
    pub capture_time: CaptureTime,
}

impl fmt::Debug for EncodedVideo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedVideo")
            .field("bytes", &self.data.len())
            .field("keyframe", &self.keyframe)
            .field("sequence", &self.sequence)
            .field("capture_time", &self.capture_time)
            .finish()
    }
}

/// Audio codecs the appliance speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AudioCodec {
    /// Opus, 48 kHz clock.
    Opus,
    /// G.711 µ-law (PCMU), 8 kHz.
    Pcmu,
    /// G.711 A-law (PCMA), 8 kHz.
    Pcma,
}

/// One encoded audio packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAudio {
    /// Codec of `data`.
    pub codec: AudioCodec,
    /// The payload as it goes into RTP.
    pub data: Vec<u8>,
    /// Samples per channel at the codec's clock rate that this packet covers.
    pub frames: u32,
    /// Sequence number of the raw block it was made from.
    pub sequence: u64,
    /// Capture time of the raw block it was made from.
    pub capture_time: CaptureTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i420_planes_split_where_expected() {
        let frame = VideoFrame::black(4, 2, 0, CaptureTime(0)).unwrap();
        let (y, u, v) = frame.planes();
        assert_eq!((y.len(), u.len(), v.len()), (8, 2, 2));
        assert!(y.iter().all(|&p| p == 16));
        assert!(u.iter().chain(v).all(|&p| p == 128));
    }

    #[test]
    fn odd_sizes_and_short_buffers_are_refused() {
        assert_eq!(
            VideoFrame::black(3, 2, 0, CaptureTime(0)),
            Err(FrameError::BadSize {
                width: 3,
                height: 2
            })
        );
        assert!(matches!(
            VideoFrame::from_i420(4, 2, vec![0; 11], 0, CaptureTime(0)),
            Err(FrameError::BadLength {
                need: 12,
                got: 11,
                ..
            })
        ));
    }
}

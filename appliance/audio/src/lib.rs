//! Speakerphone audio of the telecart appliance.
//!
//! - [`capture::CaptureChain`]: the microphone path, in 10 ms frames at 48 kHz: downmix,
//!   resampling from whatever rate the device gives, high-pass filter and WebRTC's AEC3 echo
//!   canceller fed with the far-end reference ([`capture::FarEndReference`], what the speaker
//!   plays), RNNoise noise suppression (`nnnoiseless`, or WebRTC's suppressor, or none), AGC2,
//!   mute ([`MuteControl`], effective on the next 10 ms frame) and a 16 kHz mono tap for
//!   transcription. Clipping, long silences and rate changes are counted.
//! - [`jitter::JitterBuffer`]: a sans-IO adaptive jitter buffer for the remote party's audio
//!   (packets in with sequence number, timestamp and arrival time; 10 ms frames out), with
//!   concealment through a codec-agnostic [`decoder::PayloadDecoder`] (Opus PLC and FEC,
//!   G.711 with pitch-repeating PLC), shrinking back after bursts and absorbing the clock
//!   drift between sender and sound card by dropping or stretching 10 ms frames.
//! - [`playback::PlaybackChain`]: jitter buffer, decoder, resampling to the speaker's rate,
//!   the far-end reference for the echo canceller and a 16 kHz tap of the remote party.
//! - [`resample::StreamResampler`]: rate conversion of a stream fed in blocks of any length.
//!
//! Echo cancellation and gain control are `sonora`, a pure-Rust port of WebRTC's audio
//! processing module; rate conversion is `rubato`.

#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod capture;
pub mod decoder;
pub mod jitter;
pub mod playback;
pub mod resample;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

pub use capture::{CaptureChain, CaptureOutput, CaptureSettings, CaptureStats, FarEndReference};
pub use decoder::{G711PayloadDecoder, OpusPayloadDecoder, PayloadDecoder};
pub use jitter::{JitterBuffer, JitterSettings, JitterStats, Playout};
pub use playback::PlaybackChain;
pub use resample::StreamResampler;

/// The rate every processing stage works at.
pub const PROCESSING_RATE: u32 = 48_000;
/// Samples in one 10 ms frame at [`PROCESSING_RATE`].
pub const FRAME_SAMPLES: usize = 480;
/// Rate of the transcription taps.
pub const TAP_RATE: u32 = 16_000;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// A sample rate the chain cannot work with.
    #[error("sample rate {rate} Hz is not supported (8000..=192000)")]
    UnsupportedRate {
        /// The rate given.
        rate: u32,
    },
    /// A frame with no channels or a sample count that is not a whole number of frames.
    #[error("audio block with {channels} channel(s) and {samples} samples is malformed")]
    Malformed {
        /// Channels claimed.
        channels: u16,
        /// Samples given.
        samples: usize,
    },
    /// rubato refused.
    #[error("resampler: {0}")]
    Resampler(String),
    /// The WebRTC audio processing refused a frame.
    #[error("audio processing: {0}")]
    Processing(String),
    /// The payload decoder failed (the frame is concealed instead).
    #[error("decoder: {0}")]
    Decoder(String),
}

/// Why the microphone is muted; several can hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuteReason {
    /// The cart's privacy switch.
    Privacy,
    /// The local console or the nurse.
    Console,
    /// The far end asked (and policy allowed it).
    FarEnd,
}

impl MuteReason {
    fn bit(self) -> u8 {
        match self {
            Self::Privacy => 1,
            Self::Console => 2,
            Self::FarEnd => 4,
        }
    }
}

/// A mute switch shared between whoever mutes (GPIO, console, call signalling) and the capture
/// chain, which reads it once per 10 ms frame: a frame produced after [`MuteControl::set`]
/// returns is silent.
#[derive(Debug, Clone, Default)]
pub struct MuteControl(Arc<AtomicU8>);

impl MuteControl {
    /// Sets or clears one reason.
    pub fn set(&self, reason: MuteReason, muted: bool) {
        if muted {
            self.0.fetch_or(reason.bit(), Ordering::SeqCst);
        } else {
            self.0.fetch_and(!reason.bit(), Ordering::SeqCst);
        }
    }

    /// Whether any reason holds.
    pub fn is_muted(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }

    /// Whether this reason holds.
    pub fn holds(&self, reason: MuteReason) -> bool {
        self.0.load(Ordering::SeqCst) & reason.bit() != 0
    }
}

/// i16 PCM to f32 in -1..1.
pub(crate) fn to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}

/// f32 in -1..1 to i16 PCM, saturating.
pub(crate) fn to_i16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mute_reasons_combine() {
        let m = MuteControl::default();
        assert!(!m.is_muted());
        m.set(MuteReason::Privacy, true);
        m.set(MuteReason::Console, true);
        m.set(MuteReason::Privacy, false);
        assert!(m.is_muted() && m.holds(MuteReason::Console) && !m.holds(MuteReason::Privacy));
        m.set(MuteReason::Console, false);
        assert!(!m.is_muted());
    }

    #[test]
    fn sample_conversion_saturates() {
        assert_eq!(to_i16(to_f32(1234)), 1234);
        assert_eq!(to_i16(2.0), i16::MAX);
        assert_eq!(to_i16(-2.0), i16::MIN);
    }
}

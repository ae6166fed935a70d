//! Encoders of the telecart appliance.
//!
//! H.264 comes from one [`VideoEncoder`] trait with two implementations chosen
//! at run time ([`open_video_encoder`]): the board's V4L2 memory-to-memory
//! hardware encoder ([`m2m`]) and openh264 in software ([`software`]). Audio
//! encoders share the [`AudioEncoder`] trait: Opus for WebRTC and modern SIP
//! phones, G.711 for the rest of the PBX world.

pub mod g711;
pub mod h264;
pub mod m2m;
pub mod opus;
pub mod software;

pub use crate::opus::{OpusDecoder, OpusEncoder};
pub use g711::G711Encoder;
pub use software::OpenH264Encoder;

use telecart_core::config::{EncoderChoice, H264Profile};
use telecart_core::{AudioFrame, EncodedAudio, EncodedVideo, VideoFrame};
use tracing::{info, warn};

/// Why encoding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The settings cannot be used.
    #[error("invalid encoder settings: {0}")]
    Settings(String),
    /// No hardware H.264 encoder on this board.
    #[error("no hardware H.264 encoder found ({0})")]
    NoHardware(String),
    /// The hardware encoder failed.
    #[error("hardware encoder {device}: {message}")]
    Hardware {
        /// Device node.
        device: String,
        /// What went wrong.
        message: String,
    },
    /// openh264 failed.
    #[error("openh264: {0}")]
    OpenH264(String),
    /// libopus failed.
    #[error("opus: {0}")]
    Opus(String),
    /// The input does not fit the encoder.
    #[error("{0}")]
    Input(String),
}

/// What an H.264 encoder is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frame rate the source delivers.
    pub fps: u32,
    /// Target bitrate.
    pub bitrate_bps: u32,
    /// Frames between periodic IDRs.
    pub keyframe_interval_frames: u32,
    /// Profile to produce.
    pub profile: H264Profile,
}

impl EncoderSettings {
    fn check(&self) -> Result<(), CodecError> {
        if self.width == 0 || self.height == 0 || self.width % 2 == 1 || self.height % 2 == 1 {
            return Err(CodecError::Settings(format!(
                "size {}x{} is not a positive even size",
                self.width, self.height
            )));
        }
        if self.width > 3840 || self.height > 2160 {
            return Err(CodecError::Settings(format!(
                "size {}x{} exceeds 3840x2160",
                self.width, self.height
            )));
        }
        if self.fps == 0 || self.fps > 120 {
            return Err(CodecError::Settings(format!(
                "frame rate {} is out of 1..=120",
                self.fps
            )));
        }
        if self.bitrate_bps < 10_000 {
            return Err(CodecError::Settings(format!(
                "bitrate {} bps is below 10 kbps",
                self.bitrate_bps
            )));
        }
        Ok(())
    }
}

/// An H.264 encoder: one whole access unit out per picture in.
pub trait VideoEncoder: Send {
    /// Encodes one frame. `None` only when a pipelined hardware encoder still
    /// holds the picture; the software encoder always returns it.
    fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError>;
    /// Makes the next output an IDR with SPS and PPS in front.
    fn request_keyframe(&mut self);
    /// Changes the target bitrate without restarting the stream.
    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError>;
    /// What it is, for logs and the console.
    fn name(&self) -> String;
    /// The settings in force.
    fn settings(&self) -> &EncoderSettings;
}

/// Opens the H.264 encoder the configuration asks for; with
/// [`EncoderChoice::Auto`] the hardware one when the board has it, else
/// openh264. Logs which one and why.
pub fn open_video_encoder(
    choice: EncoderChoice,
    settings: EncoderSettings,
) -> Result<Box<dyn VideoEncoder>, CodecError> {
    settings.check()?;
    match choice {
        EncoderChoice::Software => {
            info!("video encoder: openh264 (software, as configured)");
            Ok(Box::new(OpenH264Encoder::new(settings)?))
        }
        EncoderChoice::Hardware => {
            let hw = m2m::M2mEncoder::open_first(settings)?;
            info!(encoder = %hw.name(), "video encoder: hardware (as configured)");
            Ok(Box::new(hw))
        }
        EncoderChoice::Auto => match m2m::M2mEncoder::open_first(settings.clone()) {
            Ok(hw) => {
                info!(encoder = %hw.name(), "video encoder: hardware");
                Ok(Box::new(hw))
            }
            Err(e) => {
                warn!(reason = %e, "video encoder: openh264 (software fallback)");
                Ok(Box::new(OpenH264Encoder::new(settings)?))
            }
        },
    }
}

/// An audio encoder: raw blocks of any length in, codec packets out.
pub trait AudioEncoder: Send {
    /// Takes one block; returns the packets it completed (possibly none).
    fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedAudio>, CodecError>;
}

//! Video and audio codecs of the telecart appliance.
//!
//! - H.264 through a [`VideoEncoder`]: the board's V4L2 memory-to-memory hardware encoder
//!   ([`v4l2m2m`]) or Cisco's openh264 in software ([`openh264`]), chosen at run time by
//!   [`open_video_encoder`].
//! - Annex-B access-unit tools in [`h264`], used on every encoder's output.
//! - Opus ([`opus`]) and G.711 µ-law/A-law ([`g711`]) behind one [`AudioEncoder`] trait.
//!
//! Every encoder hands out whole access units (one picture each) or whole audio packets, so
//! the RTP packetizers downstream never need to reassemble anything.
//!
//! # How it is tested
//!
//! - openh264: live bitrate change (2 Mbit/s → 300 kbit/s on a moving, noisy 640x360 picture:
//!   bytes per frame follow), IDR on the very next frame after a request, periodic IDR at the
//!   interval, each unit decoded alone by openh264's decoder into exactly one picture, profile
//!   read back from the SPS.
//! - Access units: x264 streams with 2 and 3 slices per picture, with and without delimiters
//!   (`tests/data`), decoded unit by unit; property tests on random bytes.
//! - V4L2 M2M: the ioctl sequence, buffer recycling, strides and aligned rows, NV12
//!   conversion, key-frame and bitrate controls and timeouts against a fake device that hands
//!   out real x264 pictures; discovery on this machine (no M2M device) reports what it scanned.
//!   The ioctls themselves ([`v4l2m2m::LinuxM2m`]) have not run against a real encoder here.
//! - Opus: 10 ms blocks into 20 ms packets, SNR of a tone, concealment and FEC recovery of a
//!   lost packet. G.711: ITU code points, whole tables against CPython's `audioop`, round-trip
//!   error bounds over all 65536 inputs, SNR of a tone.

#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod g711;
pub mod h264;
pub mod openh264;
pub mod opus;
pub mod synthetic;
pub mod v4l2m2m;

use telecart_core::config::{EncoderChoice, H264Profile};
use telecart_core::media::{
    AudioCodec, AudioFrame, CaptureTime, EncodedAudio, EncodedVideo, VideoFrame,
};

pub use crate::g711::{G711Decoder, G711Encoder};
pub use crate::openh264::OpenH264Encoder;
pub use crate::opus::{OpusDecoder, OpusEncoder};
pub use crate::v4l2m2m::V4l2M2mEncoder;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Settings that no encoder can honour (zero size, odd size, zero frame rate …).
    #[error("invalid encoder settings: {0}")]
    InvalidSettings(String),
    /// A frame whose size differs from the one the encoder was opened for.
    #[error("frame is {got_width}x{got_height}, the encoder was opened for {width}x{height}")]
    FrameSize {
        /// Width the encoder expects.
        width: u32,
        /// Height the encoder expects.
        height: u32,
        /// Width of the frame given.
        got_width: u32,
        /// Height of the frame given.
        got_height: u32,
    },
    /// openh264 refused or failed.
    #[error("openh264: {0}")]
    OpenH264(String),
    /// openh264 returned no picture for a frame although frame skipping is off.
    #[error("openh264 produced no output for frame {sequence}")]
    NoOutput {
        /// Sequence number of the frame.
        sequence: u64,
    },
    /// No V4L2 memory-to-memory device that encodes H.264 exists.
    #[error("no hardware H.264 encoder found (scanned {scanned} devices)")]
    NoHardwareEncoder {
        /// How many `/dev/video*` nodes were looked at.
        scanned: usize,
    },
    /// A V4L2 call failed on a device.
    #[error("{device}: {operation} failed: {message}")]
    Device {
        /// Device path.
        device: String,
        /// What was being done (`VIDIOC_S_FMT OUTPUT`, `mmap` …).
        operation: String,
        /// The OS error or the reason.
        message: String,
    },
    /// The hardware encoder did not hand back a picture in time.
    #[error("{device}: no encoded picture within {timeout_ms} ms")]
    DeviceTimeout {
        /// Device path.
        device: String,
        /// How long we waited.
        timeout_ms: u32,
    },
    /// Audio in a format the codec does not take.
    #[error(
        "{codec:?} needs {need_rate} Hz with {need_channels} channel(s), got {got_rate} Hz with {got_channels}"
    )]
    AudioFormat {
        /// Codec asked.
        codec: AudioCodec,
        /// Sample rate it needs.
        need_rate: u32,
        /// Channels it needs.
        need_channels: u16,
        /// Sample rate given.
        got_rate: u32,
        /// Channels given.
        got_channels: u16,
    },
    /// libopus refused or failed.
    #[error("opus: {0}")]
    Opus(String),
}

/// What an H.264 encoder is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Width in pixels; even.
    pub width: u32,
    /// Height in pixels; even.
    pub height: u32,
    /// Frames per second the source delivers.
    pub fps: u32,
    /// Target bitrate in bits per second.
    pub bitrate_bps: u32,
    /// Frames between periodic IDR pictures (0: only on request).
    pub keyframe_interval_frames: u32,
    /// Profile to produce.
    pub profile: H264Profile,
}

impl EncoderSettings {
    /// Checks what every encoder needs: a positive even size, a frame rate and a bitrate.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.width == 0
            || self.height == 0
            || !self.width.is_multiple_of(2)
            || !self.height.is_multiple_of(2)
        {
            return Err(CodecError::InvalidSettings(format!(
                "size {}x{} is not a positive even size",
                self.width, self.height
            )));
        }
        if self.width > 3840 || self.height > 2160 {
            return Err(CodecError::InvalidSettings(format!(
                "size {}x{} is beyond 3840x2160",
                self.width, self.height
            )));
        }
        if self.fps == 0 || self.fps > 240 {
            return Err(CodecError::InvalidSettings(format!(
                "frame rate {} is not in 1..=240",
                self.fps
            )));
        }
        check_bitrate(self.bitrate_bps)
    }

    /// Checks that a frame has the size the encoder was opened for.
    pub fn check_frame(&self, frame: &VideoFrame) -> Result<(), CodecError> {
        if frame.width != self.width
            || frame.height != self.height
            || frame.data.len() != VideoFrame::i420_len(self.width, self.height)
        {
            return Err(CodecError::FrameSize {
                width: self.width,
                height: self.height,
                got_width: frame.width,
                got_height: frame.height,
            });
        }
        Ok(())
    }
}

/// Bitrates we accept: 10 kbit/s to 100 Mbit/s.
pub(crate) fn check_bitrate(bitrate_bps: u32) -> Result<(), CodecError> {
    if !(10_000..=100_000_000).contains(&bitrate_bps) {
        return Err(CodecError::InvalidSettings(format!(
            "bitrate {bitrate_bps} bit/s is not in 10 kbit/s ..= 100 Mbit/s"
        )));
    }
    Ok(())
}

/// An H.264 encoder: raw I420 frames in, whole access units out.
pub trait VideoEncoder: Send {
    /// Encodes one frame; returns the whole access unit for it (`None` only if the encoder
    /// legitimately holds it back, never for openh264).
    fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError>;
    /// Makes the next output an IDR picture with SPS and PPS in front.
    fn request_keyframe(&mut self);
    /// Changes the target bitrate without restarting the encoder.
    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError>;
    /// `"openh264"` or `"v4l2-m2m /dev/video11 (bcm2835-codec)"`.
    fn name(&self) -> String;
    /// The settings in force (the bitrate follows [`VideoEncoder::set_bitrate`]).
    fn settings(&self) -> &EncoderSettings;
}

/// Opens an H.264 encoder: `Hardware` the V4L2 memory-to-memory encoder or an error,
/// `Software` openh264, `Auto` the hardware one if the board has one, else openh264, logging
/// which one it chose and why the other was not used.
pub fn open_video_encoder(
    choice: EncoderChoice,
    settings: EncoderSettings,
) -> Result<Box<dyn VideoEncoder>, CodecError> {
    settings.validate()?;
    match choice {
        EncoderChoice::Hardware => {
            let encoder = V4l2M2mEncoder::open_first(settings)?;
            tracing::info!(encoder = %encoder.name(), "using the hardware H.264 encoder (asked for)");
            Ok(Box::new(encoder))
        }
        EncoderChoice::Software => {
            let encoder = OpenH264Encoder::new(settings)?;
            tracing::info!(
                encoder = %encoder.name(),
                "using the software H.264 encoder (asked for; hardware not tried)"
            );
            Ok(Box::new(encoder))
        }
        EncoderChoice::Auto => match V4l2M2mEncoder::open_first(settings.clone()) {
            Ok(encoder) => {
                tracing::info!(encoder = %encoder.name(), "using the hardware H.264 encoder");
                Ok(Box::new(encoder))
            }
            Err(why) => {
                let encoder = OpenH264Encoder::new(settings)?;
                tracing::info!(
                    encoder = %encoder.name(),
                    reason = %why,
                    "using the software H.264 encoder: the hardware one is not available"
                );
                Ok(Box::new(encoder))
            }
        },
    }
}

/// An audio encoder: PCM blocks of any length in, whole packets out.
pub trait AudioEncoder: Send {
    /// Takes one block of PCM and returns every packet it completed (none, one or several).
    fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedAudio>, CodecError>;
    /// Codec of the packets.
    fn codec(&self) -> AudioCodec;
}

/// Cuts PCM blocks of any length into packets of a fixed number of samples per channel,
/// giving each packet the sequence number of the block its first sample came from and that
/// sample's capture time.
#[derive(Debug)]
pub(crate) struct PacketAccumulator {
    sample_rate: u32,
    channels: u16,
    /// Interleaved samples per packet.
    packet_len: usize,
    samples: Vec<i16>,
    start: Option<(u64, CaptureTime)>,
}

/// One packet's worth of PCM from [`PacketAccumulator`].
#[derive(Debug)]
pub(crate) struct PcmPacket {
    pub(crate) samples: Vec<i16>,
    pub(crate) sequence: u64,
    pub(crate) capture_time: CaptureTime,
}

impl PacketAccumulator {
    pub(crate) fn new(sample_rate: u32, channels: u16, frames_per_packet: usize) -> Self {
        let packet_len = frames_per_packet * usize::from(channels);
        Self {
            sample_rate,
            channels,
            packet_len,
            samples: Vec::with_capacity(packet_len),
            start: None,
        }
    }

    /// Adds a block (already checked to have this rate and channel count).
    pub(crate) fn push(&mut self, frame: &AudioFrame) -> Vec<PcmPacket> {
        let mut out = Vec::new();
        let channels = usize::from(self.channels.max(1));
        let mut offset = 0;
        while offset < frame.samples.len() {
            if self.start.is_none() {
                let frames_in = (offset / channels) as u64;
                let micros = frames_in * 1_000_000 / u64::from(self.sample_rate.max(1));
                self.start = Some((
                    frame.sequence,
                    CaptureTime(frame.capture_time.as_micros() + micros),
                ));
            }
            let take = (self.packet_len - self.samples.len()).min(frame.samples.len() - offset);
            self.samples
                .extend_from_slice(&frame.samples[offset..offset + take]);
            offset += take;
            if self.samples.len() == self.packet_len {
                let (sequence, capture_time) = self.start.take().unwrap_or_default();
                out.push(PcmPacket {
                    samples: std::mem::replace(
                        &mut self.samples,
                        Vec::with_capacity(self.packet_len),
                    ),
                    sequence,
                    capture_time,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_bps: 500_000,
            keyframe_interval_frames: 60,
            profile: H264Profile::ConstrainedBaseline,
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(settings().validate().is_ok());
        let odd = EncoderSettings {
            width: 321,
            ..settings()
        };
        assert!(matches!(
            odd.validate(),
            Err(CodecError::InvalidSettings(_))
        ));
        let no_fps = EncoderSettings {
            fps: 0,
            ..settings()
        };
        assert!(no_fps.validate().is_err());
        let tiny_rate = EncoderSettings {
            bitrate_bps: 5,
            ..settings()
        };
        assert!(tiny_rate.validate().is_err());
    }

    #[test]
    fn auto_falls_back_to_software_without_a_hardware_encoder() {
        // This machine (and CI) has no M2M encoder; a board with one would pick it instead.
        let encoder = open_video_encoder(EncoderChoice::Auto, settings()).unwrap();
        if v4l2m2m::find_encoder_device().is_err() {
            assert_eq!(encoder.name(), "openh264");
        }
        let sw = open_video_encoder(EncoderChoice::Software, settings()).unwrap();
        assert_eq!(sw.name(), "openh264");
    }

    #[test]
    fn hardware_only_reports_what_it_scanned() {
        if let Err(e) = v4l2m2m::find_encoder_device() {
            let msg = e.to_string();
            assert!(
                msg.starts_with("no hardware H.264 encoder found (scanned "),
                "{msg}"
            );
            assert!(open_video_encoder(EncoderChoice::Hardware, settings()).is_err());
        }
    }
}

//! openh264, Cisco's software H.264 encoder: the fallback on boards without a
//! hardware encoder and the encoder of the development machine.

use crate::h264;
use crate::{CodecError, EncoderSettings, VideoEncoder};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};
use openh264_sys2::{
    ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_ALL, TagBitrateInfo,
};
use std::os::raw::{c_int, c_void};
use telecart_core::config::H264Profile;
use telecart_core::{EncodedVideo, VideoFrame};

/// The openh264 encoder, set up for real-time calls: one slice per picture,
/// no frame skipping, no B-frames, bitrate rate control.
pub struct OpenH264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
    first_capture_us: Option<u64>,
}

impl std::fmt::Debug for OpenH264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenH264Encoder")
            .field("settings", &self.settings)
            .finish()
    }
}

impl OpenH264Encoder {
    /// Creates the encoder.
    pub fn new(settings: EncoderSettings) -> Result<Self, CodecError> {
        settings.check()?;
        let profile = match settings.profile {
            H264Profile::ConstrainedBaseline => Profile::Baseline,
            H264Profile::High => Profile::High,
        };
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            // A skipped frame is a frozen picture at the far end; pay in quality instead.
            .skip_frames(false)
            .profile(profile)
            .complexity(Complexity::Low)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval_frames,
            ))
            // Repeat SPS/PPS with every IDR so a late joiner can start anywhere.
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            // Threads split pictures into slices; one slice keeps RTP packetization and
            // decoders simple, and the pipeline already runs encode on its own core.
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| CodecError::OpenH264(e.to_string()))?;
        Ok(Self {
            encoder,
            settings,
            first_capture_us: None,
        })
    }

    fn set_option(
        &mut self,
        option: openh264_sys2::ENCODER_OPTION,
        bps: u32,
    ) -> Result<(), CodecError> {
        let mut info = TagBitrateInfo {
            iLayer: SPATIAL_LAYER_ALL,
            iBitrate: c_int::try_from(bps)
                .map_err(|_| CodecError::Settings(format!("bitrate {bps} too large")))?,
        };
        // SAFETY: the encoder is initialised (we encoded or it was created with a
        // config), `info` outlives the call, and BITRATE/MAX_BITRATE take a
        // `SBitrateInfo*` as documented in openh264's codec_app_def.h.
        let rc = unsafe {
            self.encoder
                .raw_api()
                .set_option(option, (&raw mut info).cast::<c_void>())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(CodecError::OpenH264(format!(
                "set bitrate option {option} failed ({rc})"
            )))
        }
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError> {
        if frame.width != self.settings.width || frame.height != self.settings.height {
            return Err(CodecError::Input(format!(
                "frame is {}x{}, the encoder was set up for {}x{}",
                frame.width, frame.height, self.settings.width, self.settings.height
            )));
        }
        let (y, u, v) = frame.planes();
        let (w, h) = (frame.width as usize, frame.height as usize);
        let source = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        // Rate control paces by timestamps: give it the real capture clock.
        let origin = *self
            .first_capture_us
            .get_or_insert(frame.capture_time.as_micros());
        let millis = frame.capture_time.as_micros().saturating_sub(origin) / 1000;
        let stream = self
            .encoder
            .encode_at(&source, Timestamp::from_millis(millis))
            .map_err(|e| CodecError::OpenH264(e.to_string()))?;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = stream.to_vec();
        Ok(Some(EncodedVideo {
            keyframe: h264::is_keyframe(&data),
            data,
            sequence: frame.sequence,
            capture_time: frame.capture_time,
        }))
    }

    fn request_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        if bitrate_bps < 10_000 {
            return Err(CodecError::Settings(format!(
                "bitrate {bitrate_bps} bps is below 10 kbps"
            )));
        }
        // The target may not exceed the maximum: raise the ceiling first, lower it last.
        if bitrate_bps > self.settings.bitrate_bps {
            self.set_option(ENCODER_OPTION_MAX_BITRATE, bitrate_bps)?;
            self.set_option(ENCODER_OPTION_BITRATE, bitrate_bps)?;
        } else {
            self.set_option(ENCODER_OPTION_BITRATE, bitrate_bps)?;
            self.set_option(ENCODER_OPTION_MAX_BITRATE, bitrate_bps)?;
        }
        self.settings.bitrate_bps = bitrate_bps;
        Ok(())
    }

    fn name(&self) -> String {
        "openh264".into()
    }

    fn settings(&self) -> &EncoderSettings {
        &self.settings
    }
}

//! Cisco's openh264 as the software H.264 encoder.
//!
//! Set up for live calls: bitrate rate control with frame skipping off (openh264's default
//! quality mode with skipping drops most frames of a moving picture), the real frame rate,
//! timestamps from the capture time, one slice per picture, no B-frames (openh264 has none),
//! IDR pictures at the configured interval and on request, each with SPS and PPS in front.

use ::openh264::Timestamp;
use ::openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use ::openh264::formats::YUVSlices;
use openh264_sys2::{
    ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SBitrateInfo, SPATIAL_LAYER_ALL,
};
use telecart_core::config::H264Profile;
use telecart_core::media::{EncodedVideo, VideoFrame};

use crate::h264::{self, nal_type};
use crate::{CodecError, EncoderSettings, VideoEncoder, check_bitrate};

/// The openh264 software encoder.
pub struct OpenH264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
    /// Whether openh264 has been initialised (it is, lazily, on the first frame).
    started: bool,
    keyframe_requested: bool,
    frames_since_idr: u64,
    first_capture_micros: Option<u64>,
    last_timestamp_ms: u64,
    /// SPS and PPS of the last IDR, put in front of an IDR that lacks them.
    parameter_sets: Vec<u8>,
}

impl std::fmt::Debug for OpenH264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenH264Encoder")
            .field("settings", &self.settings)
            .field("frames_since_idr", &self.frames_since_idr)
            .finish_non_exhaustive()
    }
}

fn config(settings: &EncoderSettings) -> EncoderConfig {
    let profile = match settings.profile {
        H264Profile::ConstrainedBaseline => Profile::Baseline,
        H264Profile::High => Profile::High,
    };
    EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Bitrate)
        .skip_frames(false)
        .bitrate(BitRate::from_bps(settings.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
        .profile(profile)
        .complexity(Complexity::Medium)
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        // We place IDR pictures ourselves so that a requested one restarts the interval,
        // and scene-change IDRs would make the interval irregular.
        .intra_frame_period(IntraFramePeriod::from_num_frames(0))
        .scene_change_detect(false)
        // One encoder thread: the cart runs capture, audio and captions on the other core,
        // and openh264's slice threads would split pictures into several slices.
        .num_threads(1)
}

impl OpenH264Encoder {
    /// Opens an encoder. openh264 signals High profile in the SPS when asked but keeps CAVLC
    /// entropy coding (the wrapper does not expose CABAC), which is logged.
    pub fn new(settings: EncoderSettings) -> Result<Self, CodecError> {
        settings.validate()?;
        if settings.profile == H264Profile::High {
            tracing::info!(
                "openh264: High profile signalled in the SPS; openh264 codes it with CAVLC and \
                 4x4 transforms only, so the stream is no smaller than constrained baseline"
            );
        }
        let encoder =
            Encoder::with_api_config(::openh264::OpenH264API::from_source(), config(&settings))
                .map_err(|e| CodecError::OpenH264(e.to_string()))?;
        Ok(Self {
            encoder,
            settings,
            started: false,
            keyframe_requested: false,
            frames_since_idr: 0,
            first_capture_micros: None,
            last_timestamp_ms: 0,
            parameter_sets: Vec::new(),
        })
    }

    fn timestamp(&mut self, frame: &VideoFrame) -> Timestamp {
        let micros = frame.capture_time.as_micros();
        let first = *self.first_capture_micros.get_or_insert(micros);
        // Monotonic even if the wall clock steps back.
        let ms = (micros.saturating_sub(first) / 1000).max(self.last_timestamp_ms);
        self.last_timestamp_ms = ms;
        Timestamp::from_millis(ms)
    }

    fn apply_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        let bitrate = i32::try_from(bitrate_bps)
            .map_err(|_| CodecError::InvalidSettings(format!("bitrate {bitrate_bps} too large")))?;
        let raising = bitrate_bps > self.settings.bitrate_bps;
        // The ceiling must never sit below the target: raise it first, lower it last.
        let order = if raising {
            [ENCODER_OPTION_MAX_BITRATE, ENCODER_OPTION_BITRATE]
        } else {
            [ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE]
        };
        for option in order {
            let mut info = SBitrateInfo {
                iLayer: SPATIAL_LAYER_ALL,
                iBitrate: bitrate,
            };
            // SAFETY: the encoder is initialised (`started`), the option id and the
            // `SBitrateInfo` it points to match openh264's SetOption contract, and `info`
            // outlives the call.
            let rc = unsafe {
                self.encoder
                    .raw_api()
                    .set_option(option, (&raw mut info).cast())
            };
            if rc != 0 {
                return Err(CodecError::OpenH264(format!(
                    "SetOption(bitrate {bitrate_bps}) returned {rc}"
                )));
            }
        }
        Ok(())
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError> {
        self.settings.check_frame(frame)?;
        let interval = u64::from(self.settings.keyframe_interval_frames);
        let idr_due = !self.started
            || self.keyframe_requested
            || (interval > 0 && self.frames_since_idr >= interval);
        if idr_due && self.started {
            self.encoder.force_intra_frame();
        }
        let timestamp = self.timestamp(frame);
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        let yuv = YUVSlices::new(frame.planes(), (w, h), (w, w / 2, w / 2));
        let bitstream = self
            .encoder
            .encode_at(&yuv, timestamp)
            .map_err(|e| CodecError::OpenH264(e.to_string()))?;
        self.started = true;
        let frame_type = bitstream.frame_type();
        let mut data = bitstream.to_vec();
        if data.is_empty() || frame_type == FrameType::Skip {
            return Err(CodecError::NoOutput {
                sequence: frame.sequence,
            });
        }
        let keyframe = h264::contains_idr(&data);
        if keyframe {
            let params: Vec<u8> = h264::nal_units(&data)
                .filter(|n| matches!(n.nal_type(), Some(nal_type::SPS | nal_type::PPS)))
                .flat_map(|n| [&[0u8, 0, 0, 1][..], n.data].concat())
                .collect();
            if params.is_empty() {
                data = [self.parameter_sets.as_slice(), data.as_slice()].concat();
            } else {
                self.parameter_sets = params;
            }
            self.frames_since_idr = 1;
            self.keyframe_requested = false;
        } else {
            self.frames_since_idr += 1;
        }
        Ok(Some(EncodedVideo {
            data,
            keyframe,
            sequence: frame.sequence,
            capture_time: frame.capture_time,
        }))
    }

    fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        check_bitrate(bitrate_bps)?;
        if bitrate_bps == self.settings.bitrate_bps {
            return Ok(());
        }
        if self.started {
            self.apply_bitrate(bitrate_bps)?;
        } else {
            // openh264 initialises on the first frame with the configured bitrate.
            let settings = EncoderSettings {
                bitrate_bps,
                ..self.settings.clone()
            };
            self.encoder =
                Encoder::with_api_config(::openh264::OpenH264API::from_source(), config(&settings))
                    .map_err(|e| CodecError::OpenH264(e.to_string()))?;
        }
        tracing::debug!(
            from = self.settings.bitrate_bps,
            to = bitrate_bps,
            "openh264 bitrate changed"
        );
        self.settings.bitrate_bps = bitrate_bps;
        Ok(())
    }

    fn name(&self) -> String {
        "openh264".to_owned()
    }

    fn settings(&self) -> &EncoderSettings {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::sps_profile;
    use crate::synthetic::moving_frame;
    use ::openh264::decoder::Decoder;

    fn settings(width: u32, height: u32, bitrate_bps: u32, interval: u32) -> EncoderSettings {
        EncoderSettings {
            width,
            height,
            fps: 30,
            bitrate_bps,
            keyframe_interval_frames: interval,
            profile: H264Profile::ConstrainedBaseline,
        }
    }

    fn encode_range(
        enc: &mut OpenH264Encoder,
        w: u32,
        h: u32,
        frames: std::ops::Range<u64>,
    ) -> Vec<EncodedVideo> {
        frames
            .map(|i| {
                enc.encode(&moving_frame(w, h, i, 30))
                    .unwrap()
                    .expect("openh264 never holds a frame back")
            })
            .collect()
    }

    #[test]
    fn bitrate_change_takes_effect_without_restart() {
        let (w, h) = (640, 360);
        let mut enc = OpenH264Encoder::new(settings(w, h, 2_000_000, 0)).unwrap();
        let high = encode_range(&mut enc, w, h, 0..90);
        enc.set_bitrate(300_000).unwrap();
        assert_eq!(enc.settings().bitrate_bps, 300_000);
        let low = encode_range(&mut enc, w, h, 90..180);
        // No restart: no IDR after the change.
        assert!(low.iter().all(|u| !u.keyframe));
        // Skip the first 30 frames of each phase while the rate controller settles.
        let mean = |units: &[EncodedVideo]| {
            units[30..].iter().map(|u| u.data.len()).sum::<usize>() as f64
                / (units.len() - 30) as f64
        };
        let (m_high, m_low) = (mean(&high), mean(&low));
        let target_high = 2_000_000.0 / 8.0 / 30.0;
        let target_low = 300_000.0 / 8.0 / 30.0;
        eprintln!(
            "bytes/frame: {m_high:.0} at 2 Mbit/s (target {target_high:.0}), {m_low:.0} at 300 kbit/s (target {target_low:.0})"
        );
        assert!(
            (0.6..1.4).contains(&(m_high / target_high)),
            "2 Mbit/s gave {m_high:.0} bytes/frame, target {target_high:.0}"
        );
        assert!(
            (0.6..1.4).contains(&(m_low / target_low)),
            "300 kbit/s gave {m_low:.0} bytes/frame, target {target_low:.0}"
        );
        let ratio = m_low / m_high;
        assert!(
            (0.15 * 0.6..0.15 * 1.4).contains(&ratio),
            "bytes/frame fell to {ratio:.3} of before, expected about 0.15"
        );
    }

    #[test]
    fn requested_keyframe_is_the_very_next_output() {
        let (w, h) = (320, 240);
        let mut enc = OpenH264Encoder::new(settings(w, h, 500_000, 0)).unwrap();
        let first = encode_range(&mut enc, w, h, 0..10);
        assert!(first[0].keyframe);
        assert!(first[1..].iter().all(|u| !u.keyframe));
        for at in [10u64, 11, 25] {
            let _ = encode_range(&mut enc, w, h, (at - 1).max(10)..at);
            enc.request_keyframe();
            let unit = enc.encode(&moving_frame(w, h, at, 30)).unwrap().unwrap();
            assert!(unit.keyframe, "frame {at}");
            let types: Vec<_> = h264::nal_units(&unit.data)
                .filter_map(|n| n.nal_type())
                .collect();
            assert_eq!(&types[..2], &[nal_type::SPS, nal_type::PPS], "{types:?}");
            assert!(types.contains(&nal_type::IDR));
            let next = enc
                .encode(&moving_frame(w, h, at + 1, 30))
                .unwrap()
                .unwrap();
            assert!(!next.keyframe);
        }
    }

    #[test]
    fn periodic_idr_at_the_interval_restarting_after_a_request() {
        let (w, h) = (320, 240);
        let mut enc = OpenH264Encoder::new(settings(w, h, 500_000, 15)).unwrap();
        let mut keyframes = Vec::new();
        for i in 0..70u64 {
            if i == 20 {
                enc.request_keyframe();
            }
            let unit = enc.encode(&moving_frame(w, h, i, 30)).unwrap().unwrap();
            assert_eq!(unit.keyframe, h264::contains_idr(&unit.data));
            assert_eq!(unit.sequence, i);
            if unit.keyframe {
                assert_eq!(sps_profile(&unit.data).map(|p| p.profile_idc), Some(66));
                keyframes.push(i);
            }
        }
        assert_eq!(keyframes, vec![0, 15, 20, 35, 50, 65]);
    }

    #[test]
    fn each_output_is_exactly_one_decodable_picture() {
        let (w, h) = (320, 240);
        let mut enc = OpenH264Encoder::new(settings(w, h, 400_000, 30)).unwrap();
        let units = encode_range(&mut enc, w, h, 0..45);
        let mut decoder = Decoder::new().unwrap();
        for (i, unit) in units.iter().enumerate() {
            assert_eq!(h264::split_access_units(&unit.data).len(), 1, "unit {i}");
            let picture = decoder.decode(&unit.data).unwrap();
            let picture = picture.unwrap_or_else(|| panic!("unit {i} gave no picture"));
            use ::openh264::formats::YUVSource;
            assert_eq!(picture.dimensions(), (320, 240));
        }
    }

    #[test]
    fn profile_in_the_sps_matches_the_request() {
        let (w, h) = (320, 240);
        let mut base = OpenH264Encoder::new(settings(w, h, 400_000, 0)).unwrap();
        let unit = base.encode(&moving_frame(w, h, 0, 30)).unwrap().unwrap();
        let sps = sps_profile(&unit.data).unwrap();
        assert!(sps.is_constrained_baseline(), "{sps:?}");

        let mut high = OpenH264Encoder::new(EncoderSettings {
            profile: H264Profile::High,
            ..settings(w, h, 400_000, 0)
        })
        .unwrap();
        let units = encode_range(&mut high, w, h, 0..5);
        let sps = sps_profile(&units[0].data).unwrap();
        assert!(sps.is_high(), "{sps:?}");
        let mut decoder = Decoder::new().unwrap();
        for unit in &units {
            assert!(decoder.decode(&unit.data).unwrap().is_some());
        }
    }

    #[test]
    fn bitrate_before_the_first_frame_and_bad_input() {
        let (w, h) = (320, 240);
        let mut enc = OpenH264Encoder::new(settings(w, h, 400_000, 0)).unwrap();
        enc.set_bitrate(200_000).unwrap();
        assert!(enc.set_bitrate(1).is_err());
        assert_eq!(enc.settings().bitrate_bps, 200_000);
        let wrong = moving_frame(160, 120, 0, 30);
        assert_eq!(
            enc.encode(&wrong),
            Err(CodecError::FrameSize {
                width: 320,
                height: 240,
                got_width: 160,
                got_height: 120
            })
        );
        assert!(
            enc.encode(&moving_frame(w, h, 0, 30))
                .unwrap()
                .unwrap()
                .keyframe
        );
        assert_eq!(enc.name(), "openh264");
    }
}

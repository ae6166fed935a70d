//! The microphone path: device blocks in, cleaned 10 ms frames at 48 kHz out.
//!
//! Order of the stages, and why:
//! 1. downmix to mono, count clipped samples (a clipped echo cannot be cancelled linearly);
//! 2. resample to 48 kHz when the device runs at another rate (or changed rate under us);
//! 3. high-pass filter + AEC3 (`sonora`), fed first with every far-end frame queued since the
//!    last capture frame, so the echo canceller has seen what the speaker played;
//! 4. noise suppression: RNNoise (`nnnoiseless`) by default, after the echo canceller because
//!    RNNoise would distort the echo the linear filter must model;
//! 5. AGC2 (a second `sonora` instance with only the gain controller) last, so it levels speech
//!    rather than noise or residual echo;
//! 6. mute, checked once per frame; 7. the 16 kHz tap for transcription.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use nnnoiseless::DenoiseState;
use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression,
    NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};
use telecart_core::media::{AudioFrame, CaptureTime};

use crate::resample::StreamResampler;
use crate::{AudioError, FRAME_SAMPLES, MuteControl, PROCESSING_RATE, TAP_RATE, to_f32, to_i16};

/// Which noise suppressor runs after the echo canceller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NoiseSuppressor {
    /// RNNoise through `nnnoiseless` (a small recurrent network; the default).
    #[default]
    Rnnoise,
    /// WebRTC's spectral suppressor (inside `sonora`), at its "high" level.
    Webrtc,
    /// None.
    Off,
}

/// What the capture chain does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSettings {
    /// High-pass filter (removes rumble and DC; AEC3 wants it).
    pub high_pass: bool,
    /// AEC3 with the far-end reference.
    pub echo_cancellation: bool,
    /// Noise suppressor after the echo canceller.
    pub noise_suppression: NoiseSuppressor,
    /// AGC2 adaptive digital gain with its limiter.
    pub automatic_gain: bool,
    /// Largest gain AGC2 may apply, dB.
    pub max_gain_db: u8,
    /// The rate the device was asked for (a different rate delivered is counted).
    pub device_rate: u32,
    /// Produce the 16 kHz mono tap.
    pub transcription_tap: bool,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            high_pass: true,
            echo_cancellation: true,
            noise_suppression: NoiseSuppressor::Rnnoise,
            automatic_gain: true,
            max_gain_db: 30,
            device_rate: PROCESSING_RATE,
            transcription_tap: true,
        }
    }
}

/// Counters of the capture chain, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CaptureStats {
    /// Device blocks processed.
    pub blocks_in: u64,
    /// 10 ms frames produced.
    pub frames_out: u64,
    /// Blocks whose rate differed from the one asked (or from the previous block's).
    pub rate_mismatch_blocks: u64,
    /// Times the resampler was rebuilt for a new device rate.
    pub rate_changes: u64,
    /// Samples at full scale (clipped by the device or the analogue gain).
    pub clipped_samples: u64,
    /// Frames with at least one clipped sample.
    pub clipped_frames: u64,
    /// Frames below -70 dBFS at the input.
    pub silent_frames: u64,
    /// Stretches of at least a minute of input silence (a dead or unplugged microphone).
    pub long_silences: u64,
    /// Current run of silent input frames.
    pub silent_run_frames: u64,
    /// Frames replaced by silence because of mute.
    pub muted_frames: u64,
    /// Far-end frames given to the echo canceller.
    pub far_end_frames: u64,
    /// Far-end frames dropped because the capture side fell behind.
    pub far_end_dropped: u64,
    /// Echo return loss enhancement the echo canceller reports, dB.
    pub erle_db: Option<f64>,
    /// Echo path delay the echo canceller found, ms.
    pub echo_delay_ms: Option<i32>,
    /// Last RNNoise voice probability (0..1).
    pub voice_probability: f32,
}

/// Far-end frames buffered at most (500 ms) before the oldest is dropped.
const FAR_END_FRAMES: usize = 50;
/// Input below this RMS (i16 units, about -70 dBFS) counts as silence.
const SILENCE_RMS: f32 = 10.0;
/// A minute of 10 ms frames.
const LONG_SILENCE_FRAMES: u64 = 6_000;

#[derive(Debug, Default)]
struct FarEndQueue {
    frames: VecDeque<Vec<f32>>,
    pending: Vec<f32>,
    dropped: u64,
}

/// What the speaker plays, for the echo canceller: the playback side pushes 48 kHz mono audio,
/// the capture chain drains it before each capture frame. Cheap to clone; bounded (the oldest
/// half-second is dropped and counted if capture stops draining).
#[derive(Debug, Clone, Default)]
pub struct FarEndReference(Arc<Mutex<FarEndQueue>>);

impl FarEndReference {
    /// Adds 48 kHz mono samples (f32, -1..1) the speaker is about to play.
    pub fn push(&self, samples: &[f32]) {
        let Ok(mut q) = self.0.lock() else { return };
        q.pending.extend_from_slice(samples);
        while q.pending.len() >= FRAME_SAMPLES {
            let frame: Vec<f32> = q.pending.drain(..FRAME_SAMPLES).collect();
            q.frames.push_back(frame);
            if q.frames.len() > FAR_END_FRAMES {
                q.frames.pop_front();
                q.dropped += 1;
            }
        }
    }

    /// Adds 48 kHz mono i16 samples.
    pub fn push_i16(&self, samples: &[i16]) {
        let f: Vec<f32> = samples.iter().map(|&s| to_f32(s)).collect();
        self.push(&f);
    }

    fn drain(&self) -> (Vec<Vec<f32>>, u64) {
        let Ok(mut q) = self.0.lock() else {
            return (Vec::new(), 0);
        };
        let dropped = std::mem::take(&mut q.dropped);
        (q.frames.drain(..).collect(), dropped)
    }
}

/// What one call to [`CaptureChain::process`] produced.
#[derive(Debug, Default)]
pub struct CaptureOutput {
    /// Cleaned 10 ms frames, 48 kHz mono.
    pub frames: Vec<AudioFrame>,
    /// The same audio at 16 kHz mono for transcription (10 ms frames).
    pub transcription: Vec<AudioFrame>,
}

/// The microphone path (see the module docs). Not thread-safe by design: one capture thread
/// owns it; the far end reaches it through [`FarEndReference`], mute through [`MuteControl`].
pub struct CaptureChain {
    settings: CaptureSettings,
    aec: Option<AudioProcessing>,
    agc: Option<AudioProcessing>,
    rnnoise: Option<Box<DenoiseState<'static>>>,
    far_end: FarEndReference,
    mute: MuteControl,
    input_rate: u32,
    to_processing: StreamResampler,
    to_tap: Option<StreamResampler>,
    stats: CaptureStats,
    next_time: Option<CaptureTime>,
    sequence: u64,
    tap_sequence: u64,
    frame_buf: Vec<f32>,
    out_buf: Vec<f32>,
}

impl std::fmt::Debug for CaptureChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureChain")
            .field("settings", &self.settings)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn aec_config(settings: &CaptureSettings) -> Config {
    Config {
        high_pass_filter: settings.high_pass.then(HighPassFilter::default),
        echo_canceller: settings.echo_cancellation.then(EchoCanceller::default),
        noise_suppression: (settings.noise_suppression == NoiseSuppressor::Webrtc).then_some(
            NoiseSuppression {
                level: NoiseSuppressionLevel::High,
                analyze_linear_aec_output_when_available: true,
            },
        ),
        ..Default::default()
    }
}

fn agc_config(settings: &CaptureSettings) -> Config {
    Config {
        gain_controller2: Some(GainController2 {
            adaptive_digital: Some(AdaptiveDigital {
                max_gain_db: f32::from(settings.max_gain_db),
                initial_gain_db: 0.0,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mono48() -> StreamConfig {
    StreamConfig::new(PROCESSING_RATE, 1)
}

impl CaptureChain {
    /// A chain for a device asked to run at `settings.device_rate`, muted by `mute`.
    pub fn new(settings: CaptureSettings, mute: MuteControl) -> Result<Self, AudioError> {
        let needs_apm = settings.high_pass
            || settings.echo_cancellation
            || settings.noise_suppression == NoiseSuppressor::Webrtc;
        let aec = needs_apm.then(|| {
            AudioProcessing::builder()
                .config(aec_config(&settings))
                .capture_config(mono48())
                .render_config(mono48())
                .build()
        });
        let agc = settings.automatic_gain.then(|| {
            AudioProcessing::builder()
                .config(agc_config(&settings))
                .capture_config(mono48())
                .render_config(mono48())
                .build()
        });
        let rnnoise =
            (settings.noise_suppression == NoiseSuppressor::Rnnoise).then(DenoiseState::new);
        let to_tap = if settings.transcription_tap {
            Some(StreamResampler::new(PROCESSING_RATE, TAP_RATE)?)
        } else {
            None
        };
        Ok(Self {
            to_processing: StreamResampler::new(settings.device_rate, PROCESSING_RATE)?,
            input_rate: settings.device_rate,
            settings,
            aec,
            agc,
            rnnoise,
            far_end: FarEndReference::default(),
            mute,
            to_tap,
            stats: CaptureStats::default(),
            next_time: None,
            sequence: 0,
            tap_sequence: 0,
            frame_buf: vec![0.0; FRAME_SAMPLES],
            out_buf: vec![0.0; FRAME_SAMPLES],
        })
    }

    /// The handle the playback side pushes the speaker's audio into.
    pub fn far_end(&self) -> FarEndReference {
        self.far_end.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// The settings in force.
    pub fn settings(&self) -> &CaptureSettings {
        &self.settings
    }

    /// Processes one device block (any rate, any channel count, any length) and returns the
    /// 10 ms frames it completed.
    pub fn process(&mut self, block: &AudioFrame) -> Result<CaptureOutput, AudioError> {
        let channels = usize::from(block.channels);
        if channels == 0 || !block.samples.len().is_multiple_of(channels) {
            return Err(AudioError::Malformed {
                channels: block.channels,
                samples: block.samples.len(),
            });
        }
        self.stats.blocks_in += 1;
        if block.sample_rate != self.settings.device_rate {
            self.stats.rate_mismatch_blocks += 1;
        }
        if block.sample_rate != self.input_rate {
            // The device changed rate under us (or never gave the one asked): convert from
            // what it gives rather than play everything at the wrong speed.
            let resampler = StreamResampler::new(block.sample_rate, PROCESSING_RATE)?;
            tracing::warn!(
                asked = self.settings.device_rate,
                got = block.sample_rate,
                "microphone delivers a different rate; resampling from it"
            );
            self.to_processing = resampler;
            self.input_rate = block.sample_rate;
            self.stats.rate_changes += 1;
        }
        if self.next_time.is_none() {
            self.next_time = Some(block.capture_time);
        }
        let mut mono = Vec::with_capacity(block.samples.len() / channels);
        let mut clipped = 0u64;
        let mut energy = 0f64;
        for frame in block.samples.chunks_exact(channels) {
            let mut sum = 0f32;
            for &s in frame {
                if s == i16::MAX || s == i16::MIN {
                    clipped += 1;
                }
                sum += to_f32(s);
            }
            let m = sum / channels as f32;
            energy += f64::from(m * 32768.0).powi(2);
            mono.push(m);
        }
        self.count_input_level(clipped, energy, mono.len());
        self.to_processing.push(&mono)?;
        let mut out = CaptureOutput::default();
        while let Some(frame) = self.to_processing.pop(FRAME_SAMPLES) {
            let muted_before = self.stats.muted_frames;
            let cleaned = self.process_frame(&frame)?;
            // The tap's resampler still holds a few ms from before mute: silence them too.
            let muted = self.stats.muted_frames > muted_before;
            let capture_time = self.next_time.unwrap_or(block.capture_time);
            self.next_time = Some(CaptureTime(capture_time.as_micros() + 10_000));
            if let Some(tap) = self.to_tap.as_mut() {
                tap.push(&cleaned)?;
                while let Some(t) = tap.pop(FRAME_SAMPLES / 3) {
                    out.transcription.push(AudioFrame {
                        sample_rate: TAP_RATE,
                        channels: 1,
                        samples: if muted {
                            vec![0; t.len()]
                        } else {
                            t.iter().map(|&x| to_i16(x)).collect()
                        },
                        sequence: self.tap_sequence,
                        capture_time,
                    });
                    self.tap_sequence += 1;
                }
            }
            out.frames.push(AudioFrame {
                sample_rate: PROCESSING_RATE,
                channels: 1,
                samples: cleaned.iter().map(|&x| to_i16(x)).collect(),
                sequence: self.sequence,
                capture_time,
            });
            self.sequence += 1;
            self.stats.frames_out += 1;
        }
        // Re-anchor the clock on the device's time when it jumped (an xrun, a reconnect).
        if let Some(t) = self.next_time {
            let pending_us =
                (self.to_processing.available() as u64) * 1_000_000 / u64::from(PROCESSING_RATE);
            let expected = block.capture_time.as_micros() + block.duration_micros();
            if t.as_micros().abs_diff(expected.saturating_sub(pending_us)) > 100_000 {
                self.next_time = Some(CaptureTime(expected.saturating_sub(pending_us)));
            }
        }
        Ok(out)
    }

    fn count_input_level(&mut self, clipped: u64, energy: f64, frames: usize) {
        if clipped > 0 {
            self.stats.clipped_samples += clipped;
            self.stats.clipped_frames += 1;
        }
        let rms = (energy / frames.max(1) as f64).sqrt() as f32;
        // Count in 10 ms units whatever the block length.
        let units = (frames as u64 * 100 / u64::from(self.input_rate.max(1))).max(1);
        if rms < SILENCE_RMS {
            let before = self.stats.silent_run_frames;
            self.stats.silent_frames += units;
            self.stats.silent_run_frames += units;
            if before < LONG_SILENCE_FRAMES && self.stats.silent_run_frames >= LONG_SILENCE_FRAMES {
                self.stats.long_silences += 1;
                tracing::warn!(
                    "microphone has been silent for a minute: unplugged, muted at the device or broken?"
                );
            }
        } else {
            self.stats.silent_run_frames = 0;
        }
    }

    /// One 10 ms frame at 48 kHz through every stage.
    fn process_frame(&mut self, input: &[f32]) -> Result<Vec<f32>, AudioError> {
        let (far, dropped) = self.far_end.drain();
        self.stats.far_end_dropped += dropped;
        if let Some(apm) = self.aec.as_mut() {
            let mut sink = vec![0f32; FRAME_SAMPLES];
            for frame in &far {
                apm.process_render_f32(&[frame], &mut [&mut sink])
                    .map_err(|e| AudioError::Processing(e.to_string()))?;
                self.stats.far_end_frames += 1;
            }
            apm.process_capture_f32(&[input], &mut [&mut self.frame_buf])
                .map_err(|e| AudioError::Processing(e.to_string()))?;
            let s = apm.statistics();
            self.stats.erle_db = s.echo_return_loss_enhancement;
            self.stats.echo_delay_ms = s.delay_ms;
        } else {
            self.frame_buf.copy_from_slice(input);
        }
        if let Some(rnn) = self.rnnoise.as_mut() {
            // RNNoise works on i16-scaled floats.
            for x in self.frame_buf.iter_mut() {
                *x *= 32768.0;
            }
            self.stats.voice_probability = rnn.process_frame(&mut self.out_buf, &self.frame_buf);
            for (o, &x) in self.frame_buf.iter_mut().zip(&self.out_buf) {
                *o = x / 32768.0;
            }
        }
        if let Some(agc) = self.agc.as_mut() {
            agc.process_capture_f32(&[&self.frame_buf], &mut [&mut self.out_buf])
                .map_err(|e| AudioError::Processing(e.to_string()))?;
            self.frame_buf.copy_from_slice(&self.out_buf);
        }
        if self.mute.is_muted() {
            self.stats.muted_frames += 1;
            return Ok(vec![0.0; FRAME_SAMPLES]);
        }
        Ok(self.frame_buf.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MuteReason;

    fn block(rate: u32, channels: u16, value: i16, frames: usize, seq: u64) -> AudioFrame {
        let samples = (0..frames * usize::from(channels))
            .map(|i| {
                if value == 0 {
                    0
                } else {
                    ((i as f32 * 0.05).sin() * f32::from(value)) as i16
                }
            })
            .collect();
        AudioFrame {
            sample_rate: rate,
            channels,
            samples,
            sequence: seq,
            capture_time: CaptureTime(seq * 10_000),
        }
    }

    #[test]
    fn frames_come_out_at_48k_with_a_16k_tap_whatever_the_device_rate() {
        for rate in [48_000, 44_100, 16_000, 8_000] {
            let settings = CaptureSettings {
                device_rate: rate,
                ..Default::default()
            };
            let mut chain = CaptureChain::new(settings, MuteControl::default()).unwrap();
            let mut frames = 0;
            let mut tap = 0;
            for i in 0..100 {
                let out = chain
                    .process(&block(rate, 2, 8000, rate as usize / 100, i))
                    .unwrap();
                for f in &out.frames {
                    assert_eq!(
                        (f.sample_rate, f.channels, f.samples.len()),
                        (48_000, 1, 480)
                    );
                }
                for t in &out.transcription {
                    assert_eq!((t.sample_rate, t.samples.len()), (16_000, 160));
                }
                frames += out.frames.len();
                tap += out.transcription.len();
            }
            assert!((95..=100).contains(&frames), "{rate}: {frames} frames");
            assert!(
                tap + 3 >= frames && tap <= frames,
                "{rate}: tap {tap} vs {frames}"
            );
            assert_eq!(chain.stats().rate_mismatch_blocks, 0);
        }
    }

    #[test]
    fn a_device_at_another_rate_is_resampled_and_counted() {
        let mut chain =
            CaptureChain::new(CaptureSettings::default(), MuteControl::default()).unwrap();
        let mut frames = 0;
        for i in 0..50 {
            frames += chain
                .process(&block(44_100, 1, 4000, 441, i))
                .unwrap()
                .frames
                .len();
        }
        let s = chain.stats();
        assert_eq!((s.rate_mismatch_blocks, s.rate_changes), (50, 1));
        assert!(frames >= 45, "{frames}");
    }

    #[test]
    fn mute_silences_the_very_next_frame() {
        let mute = MuteControl::default();
        let settings = CaptureSettings {
            automatic_gain: false,
            noise_suppression: NoiseSuppressor::Off,
            ..Default::default()
        };
        let mut chain = CaptureChain::new(settings, mute.clone()).unwrap();
        for i in 0..20 {
            let out = chain.process(&block(48_000, 1, 8000, 480, i)).unwrap();
            assert!(out.frames.iter().all(|f| f.samples.iter().any(|&s| s != 0)));
        }
        mute.set(MuteReason::Privacy, true);
        let out = chain.process(&block(48_000, 1, 8000, 480, 20)).unwrap();
        assert_eq!(out.frames.len(), 1);
        assert!(out.frames[0].samples.iter().all(|&s| s == 0));
        assert!(
            out.transcription
                .iter()
                .all(|f| f.samples.iter().all(|&s| s == 0))
        );
        mute.set(MuteReason::Privacy, false);
        let out = chain.process(&block(48_000, 1, 8000, 480, 21)).unwrap();
        assert!(out.frames[0].samples.iter().any(|&s| s != 0));
        assert_eq!(chain.stats().muted_frames, 1);
    }

    #[test]
    fn clipping_and_minutes_of_silence_are_counted_without_trouble() {
        let mut chain =
            CaptureChain::new(CaptureSettings::default(), MuteControl::default()).unwrap();
        let mut loud = block(48_000, 1, 0, 480, 0);
        loud.samples = (0..480)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        chain.process(&loud).unwrap();
        assert_eq!(chain.stats().clipped_samples, 480);
        assert_eq!(chain.stats().clipped_frames, 1);
        // Two minutes of digital silence in 10 ms blocks.
        for i in 1..=12_000 {
            let out = chain.process(&block(48_000, 1, 0, 480, i)).unwrap();
            assert_eq!(out.frames.len(), 1);
        }
        let s = chain.stats();
        assert_eq!(s.long_silences, 1);
        assert!(s.silent_frames >= 12_000);
        chain.process(&block(48_000, 1, 8000, 480, 12_001)).unwrap();
        assert_eq!(chain.stats().silent_run_frames, 0);
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let mut chain =
            CaptureChain::new(CaptureSettings::default(), MuteControl::default()).unwrap();
        let mut b = block(48_000, 2, 100, 10, 0);
        b.samples.pop();
        assert!(matches!(
            chain.process(&b),
            Err(AudioError::Malformed { .. })
        ));
        b.channels = 0;
        assert!(chain.process(&b).is_err());
        let mut weird = block(48_000, 1, 100, 10, 0);
        weird.sample_rate = 3;
        assert!(matches!(
            chain.process(&weird),
            Err(AudioError::UnsupportedRate { .. })
        ));
    }
}

//! Simulated microphones: a tone, a looped WAV file, silence.
//!
//! Each returns one period per [`AudioCapture::read`] and, unless built
//! unpaced, delivers period `n` at `start + n * period` (drift-free; the clock
//! starts at the first read). A reader late by more than a period gets one
//! period of catch-up and the older ones are skipped, as a real microphone
//! would overrun. Period `n` is stamped `start + n * period` in wall-clock time
//! and holds the signal of that moment, so skipped periods leave a gap in the
//! signal as well.

use std::io::{Cursor, Read};
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use telecart_core::config::AudioConfig;
use telecart_core::{AudioFrame, CaptureTime};

use crate::pacing::{Pacer, wall_clock_now};
use crate::{AudioCapture, DeviceError};

/// The demo speech (espeak-ng, 16 kHz mono 16-bit); see `assets/make-demo-speech.sh`.
static DEMO_SPEECH: &[u8] = include_bytes!("../assets/demo-speech.wav");

/// Longest WAV accepted: the whole clip is kept in memory, converted.
const MAX_WAV_SECONDS: u64 = 300;

/// Format and pacing of a simulated source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSettings {
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Milliseconds a period (one read).
    pub period_ms: u32,
    /// Follow real time (false: every read returns at once).
    pub paced: bool,
}

impl SourceSettings {
    /// The configuration's rate, channels and period, paced.
    pub fn from_config(config: &AudioConfig) -> Self {
        Self {
            sample_rate: config.sample_rate,
            channels: config.channels,
            period_ms: config.period_ms,
            paced: true,
        }
    }

    /// The same settings without pacing.
    pub fn unpaced(self) -> Self {
        Self {
            paced: false,
            ..self
        }
    }

    fn period_frames(&self) -> usize {
        (self.sample_rate as u64 * self.period_ms as u64 / 1000) as usize
    }

    fn check(&self, source: &str) -> Result<(), DeviceError> {
        if self.sample_rate == 0 || self.channels == 0 || self.period_frames() == 0 {
            return Err(DeviceError::InvalidSetting {
                device: source.into(),
                message: format!(
                    "{} Hz, {} channels, {} ms periods gives no samples",
                    self.sample_rate, self.channels, self.period_ms
                ),
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let pacing = if self.paced { "" } else { ", unpaced" };
        format!(
            "{} Hz {} ch, {} ms periods{pacing}",
            self.sample_rate, self.channels, self.period_ms
        )
    }
}

/// Numbering, stamping and pacing shared by the sources.
#[derive(Debug)]
struct Clock {
    settings: SourceSettings,
    period_frames: usize,
    pacer: Pacer,
    start_wall: Option<CaptureTime>,
    sequence: u64,
}

impl Clock {
    fn new(settings: SourceSettings) -> Self {
        let period_frames = settings.period_frames();
        Self {
            settings,
            period_frames,
            pacer: Pacer::new(
                period_frames as u64,
                settings.sample_rate as u64,
                settings.paced,
            ),
            start_wall: None,
            sequence: 0,
        }
    }

    /// Waits for the next period; returns its slot and capture time.
    fn next(&mut self) -> (u64, CaptureTime) {
        let start = *self.start_wall.get_or_insert_with(wall_clock_now);
        let slot = self.pacer.wait_next();
        let offset = self.pacer.due(slot).as_micros() as u64;
        (slot, CaptureTime(start.0.saturating_add(offset)))
    }

    fn frame(&mut self, samples: Vec<i16>, capture_time: CaptureTime) -> AudioFrame {
        let frame = AudioFrame {
            sample_rate: self.settings.sample_rate,
            channels: self.settings.channels,
            samples,
            sequence: self.sequence,
            capture_time,
        };
        self.sequence += 1;
        frame
    }
}

/// A sine tone on every channel at a quarter of full scale (-12 dBFS).
#[derive(Debug)]
pub struct ToneSource {
    clock: Clock,
    tone_hz: u32,
}

impl ToneSource {
    /// A `tone_hz` sine.
    pub fn new(settings: SourceSettings, tone_hz: u32) -> Result<Self, DeviceError> {
        settings.check("tone")?;
        if tone_hz == 0 || tone_hz as u64 * 2 > settings.sample_rate as u64 {
            return Err(DeviceError::InvalidSetting {
                device: "tone".into(),
                message: format!(
                    "{tone_hz} Hz cannot be sampled at {} Hz (1 Hz up to half the rate)",
                    settings.sample_rate
                ),
            });
        }
        Ok(Self {
            clock: Clock::new(settings),
            tone_hz,
        })
    }

    /// Periods skipped because the reader was late.
    pub fn skipped(&self) -> u64 {
        self.clock.pacer.skipped()
    }
}

impl AudioCapture for ToneSource {
    fn read(&mut self) -> Result<AudioFrame, DeviceError> {
        let (slot, capture_time) = self.clock.next();
        let rate = self.clock.settings.sample_rate as u64;
        let channels = self.clock.settings.channels as usize;
        let frames = self.clock.period_frames;
        let first = slot * frames as u64;
        let mut samples = Vec::with_capacity(frames * channels);
        for k in 0..frames as u64 {
            // An integer frequency repeats every second: keep the phase exact.
            let phase = ((first + k) % rate) * self.tone_hz as u64 % rate;
            let angle = 2.0 * std::f64::consts::PI * phase as f64 / rate as f64;
            let value = (angle.sin() * 8192.0).round() as i16;
            samples.extend(std::iter::repeat_n(value, channels));
        }
        Ok(self.clock.frame(samples, capture_time))
    }

    fn description(&self) -> String {
        format!(
            "tone {} Hz, {}",
            self.tone_hz,
            self.clock.settings.describe()
        )
    }
}

/// Digital silence.
#[derive(Debug)]
pub struct SilenceSource {
    clock: Clock,
}

impl SilenceSource {
    /// Silence in this format.
    pub fn new(settings: SourceSettings) -> Result<Self, DeviceError> {
        settings.check("silence")?;
        Ok(Self {
            clock: Clock::new(settings),
        })
    }
}

impl AudioCapture for SilenceSource {
    fn read(&mut self) -> Result<AudioFrame, DeviceError> {
        let (_, capture_time) = self.clock.next();
        let len = self.clock.period_frames * self.clock.settings.channels as usize;
        Ok(self.clock.frame(vec![0; len], capture_time))
    }

    fn description(&self) -> String {
        format!("silence, {}", self.clock.settings.describe())
    }
}

/// A WAV clip, converted once to the source's rate and channels and looped.
///
/// Any WAV that `hound` reads is accepted (8, 16, 24 and 32-bit integer, 32-bit
/// float, any channel count and rate), up to five minutes. Channels are mixed
/// down to mono by averaging, mono is copied to every channel, and otherwise
/// the first channels are kept. Rates are converted with rubato's FFT resampler.
pub struct WavSource {
    clock: Clock,
    /// The whole clip, interleaved, in the source's format.
    clip: Vec<i16>,
    name: String,
    original: String,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("description", &self.description())
            .finish_non_exhaustive()
    }
}

impl WavSource {
    /// Reads a WAV file.
    pub fn open(path: &Path, settings: SourceSettings) -> Result<Self, DeviceError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| DeviceError::Wav {
            path: name.clone(),
            message: e.to_string(),
        })?;
        Self::from_reader(std::io::BufReader::new(file), &name, settings)
    }

    /// The demo speech bundled in the appliance (a nurse's short report, read by espeak-ng).
    pub fn bundled(settings: SourceSettings) -> Result<Self, DeviceError> {
        Self::from_bytes(DEMO_SPEECH, "bundled demo speech", settings)
    }

    /// A WAV held in memory; `name` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        name: &str,
        settings: SourceSettings,
    ) -> Result<Self, DeviceError> {
        Self::from_reader(Cursor::new(bytes), name, settings)
    }

    fn from_reader<R: Read>(
        reader: R,
        name: &str,
        settings: SourceSettings,
    ) -> Result<Self, DeviceError> {
        settings.check(name)?;
        let wav_error = |message: String| DeviceError::Wav {
            path: name.into(),
            message,
        };
        let reader = hound::WavReader::new(reader).map_err(|e| wav_error(e.to_string()))?;
        let spec = reader.spec();
        if spec.channels == 0 || spec.sample_rate == 0 {
            return Err(wav_error(format!(
                "header says {} channels at {} Hz",
                spec.channels, spec.sample_rate
            )));
        }
        let frames = reader.duration() as u64;
        if frames == 0 {
            return Err(wav_error("holds no samples".into()));
        }
        if frames > MAX_WAV_SECONDS * spec.sample_rate as u64 {
            return Err(wav_error(format!(
                "is {} s long; at most {MAX_WAV_SECONDS} s is accepted",
                frames / spec.sample_rate as u64
            )));
        }
        let samples = read_normalized(reader).map_err(wav_error)?;
        let original = format!(
            "{} Hz {} ch {}-bit{}, {:.1} s",
            spec.sample_rate,
            spec.channels,
            spec.bits_per_sample,
            if spec.sample_format == hound::SampleFormat::Float {
                " float"
            } else {
                ""
            },
            frames as f64 / spec.sample_rate as f64
        );
        let mixed = remix(&samples, spec.channels as usize, settings.channels as usize);
        let converted = if spec.sample_rate == settings.sample_rate {
            mixed
        } else {
            resample(
                &mixed,
                settings.channels as usize,
                spec.sample_rate,
                settings.sample_rate,
            )
            .map_err(wav_error)?
        };
        let clip: Vec<i16> = converted
            .iter()
            .map(|&x| (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        if clip.len() < settings.channels as usize {
            return Err(wav_error("is too short to resample".into()));
        }
        Ok(Self {
            clock: Clock::new(settings),
            clip,
            name: name.into(),
            original,
        })
    }

    /// Frames in the converted clip (one loop).
    pub fn clip_frames(&self) -> usize {
        self.clip.len() / self.clock.settings.channels as usize
    }

    /// Periods skipped because the reader was late.
    pub fn skipped(&self) -> u64 {
        self.clock.pacer.skipped()
    }
}

/// All samples as f32 in -1..1, interleaved.
fn read_normalized<R: Read>(reader: hound::WavReader<R>) -> Result<Vec<f32>, String> {
    let spec = reader.spec();
    match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .map(|s| s.map_err(|e| e.to_string()))
            .collect(),
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(format!("{}-bit samples", spec.bits_per_sample));
            }
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| {
                    s.map(|v| (v as f64 * scale) as f32)
                        .map_err(|e| e.to_string())
                })
                .collect()
        }
    }
}

/// Interleaved `from` channels to `to` channels.
fn remix(samples: &[f32], from: usize, to: usize) -> Vec<f32> {
    if from == to {
        return samples.to_vec();
    }
    let frames = samples.len() / from;
    let mut out = Vec::with_capacity(frames * to);
    for frame in samples.chunks_exact(from) {
        if to == 1 {
            out.push(frame.iter().sum::<f32>() / from as f32);
        } else {
            for c in 0..to {
                out.push(frame[c % from]);
            }
        }
    }
    out
}

/// Converts interleaved audio from one rate to another (whole clip, delay trimmed).
fn resample(samples: &[f32], channels: usize, from: u32, to: u32) -> Result<Vec<f32>, String> {
    let frames = samples.len() / channels;
    let mut resampler =
        Fft::<f32>::new(from as usize, to as usize, 1024, channels, FixedSync::Input)
            .map_err(|e| format!("cannot resample {from} Hz to {to} Hz: {e}"))?;
    let input = InterleavedSlice::new(&samples[..frames * channels], channels, frames)
        .map_err(|e| format!("cannot resample: {e}"))?;
    let output = resampler
        .process_all(&input, frames, None)
        .map_err(|e| format!("cannot resample {from} Hz to {to} Hz: {e}"))?;
    Ok(output.take_data())
}

impl AudioCapture for WavSource {
    fn read(&mut self) -> Result<AudioFrame, DeviceError> {
        let (slot, capture_time) = self.clock.next();
        let channels = self.clock.settings.channels as usize;
        let frames = self.clock.period_frames;
        let clip_frames = self.clip_frames();
        let mut position = ((slot as u128 * frames as u128) % clip_frames as u128) as usize;
        let mut samples = Vec::with_capacity(frames * channels);
        let mut left = frames;
        while left > 0 {
            let take = left.min(clip_frames - position);
            samples
                .extend_from_slice(&self.clip[position * channels..(position + take) * channels]);
            left -= take;
            position = (position + take) % clip_frames;
        }
        Ok(self.clock.frame(samples, capture_time))
    }

    fn description(&self) -> String {
        format!(
            "WAV {} ({}) as {}, looped",
            self.name,
            self.original,
            self.clock.settings.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn settings(rate: u32, channels: u16) -> SourceSettings {
        SourceSettings {
            sample_rate: rate,
            channels,
            period_ms: 10,
            paced: false,
        }
    }

    #[test]
    fn tone_periods_are_numbered_stamped_and_continuous() {
        let mut tone = ToneSource::new(settings(48_000, 2), 1000).unwrap();
        let frames: Vec<AudioFrame> = (0..5).map(|_| tone.read().unwrap()).collect();
        for (n, f) in frames.iter().enumerate() {
            assert_eq!(f.sequence, n as u64);
            assert_eq!((f.sample_rate, f.channels, f.frames()), (48_000, 2, 480));
            assert_eq!(
                f.capture_time.micros_since(frames[0].capture_time),
                n as u64 * 10_000
            );
        }
        let mono: Vec<i16> = frames
            .iter()
            .flat_map(|f| f.samples.chunks_exact(2).map(|c| c[0]))
            .collect();
        // Stereo channels are identical; 1 kHz at 48 kHz repeats every 48 samples.
        assert!(
            frames
                .iter()
                .all(|f| f.samples.chunks_exact(2).all(|c| c[0] == c[1]))
        );
        assert_eq!(mono[0], 0);
        assert_eq!(mono[12], 8192); // a quarter period: the peak
        assert_eq!(mono[36], -8192);
        for i in 0..mono.len() - 48 {
            assert_eq!(mono[i], mono[i + 48]);
        }
        assert_eq!(
            tone.description(),
            "tone 1000 Hz, 48000 Hz 2 ch, 10 ms periods, unpaced"
        );
    }

    #[test]
    fn paced_tone_is_no_faster_than_real_time() {
        let s = SourceSettings {
            paced: true,
            period_ms: 5,
            ..settings(16_000, 1)
        };
        let started = Instant::now();
        let mut tone = ToneSource::new(s, 440).unwrap();
        let periods = 20;
        let mut last = None;
        for n in 0..periods {
            let f = tone.read().unwrap();
            assert_eq!(f.sequence, n);
            assert_eq!(f.samples.len(), 80);
            if let Some(prev) = last {
                // Stamps advance by whole periods (more if periods were skipped).
                let step = f.capture_time.micros_since(prev);
                assert!(step >= 5_000 && step.is_multiple_of(5_000), "step {step}");
            }
            last = Some(f.capture_time);
        }
        // Period n is never delivered before start + n * 5 ms.
        assert!(started.elapsed() >= Duration::from_millis(5 * (periods - 1)));
    }

    #[test]
    fn silence_is_zero_in_the_right_shape() {
        let mut s = SilenceSource::new(settings(8_000, 1)).unwrap();
        let f = s.read().unwrap();
        assert_eq!(f.samples, vec![0; 80]);
        assert_eq!(s.read().unwrap().sequence, 1);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(ToneSource::new(settings(8_000, 1), 5_000).is_err());
        assert!(ToneSource::new(settings(0, 1), 440).is_err());
        assert!(SilenceSource::new(settings(48_000, 0)).is_err());
        let tiny = SourceSettings {
            period_ms: 0,
            ..settings(48_000, 1)
        };
        assert!(SilenceSource::new(tiny).is_err());
    }

    /// A WAV in memory.
    fn wav(
        spec: hound::WavSpec,
        write: impl FnOnce(&mut hound::WavWriter<&mut Cursor<Vec<u8>>>),
    ) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
            write(&mut w);
            w.finalize().unwrap();
        }
        cursor.into_inner()
    }

    /// RMS and zero-crossing frequency of one channel.
    fn analyse(samples: &[i16], channels: usize, channel: usize, rate: u32) -> (f64, f64) {
        let x: Vec<f64> = samples
            .chunks_exact(channels)
            .map(|c| c[channel] as f64 / 32768.0)
            .collect();
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
        let crossings = x.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        let freq = crossings as f64 * rate as f64 / x.len() as f64;
        (rms, freq)
    }

    #[test]
    fn wav_is_resampled_to_48k_stereo_and_mono() {
        // One second of a 1 kHz sine at half scale, 16 kHz mono 16-bit.
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let bytes = wav(spec, |w| {
            for i in 0..16_000 {
                let t = i as f64 / 16_000.0;
                let v = (2.0 * std::f64::consts::PI * 1000.0 * t).sin() * 16384.0;
                w.write_sample(v.round() as i16).unwrap();
            }
        });
        for channels in [2u16, 1] {
            let mut src =
                WavSource::from_bytes(&bytes, "sine", settings(48_000, channels)).unwrap();
            // The length follows the rate ratio (1 s in, 1 s out, resampler delay trimmed).
            assert_eq!(src.clip_frames(), 48_000, "{channels} ch");
            let mut all = Vec::new();
            for _ in 0..100 {
                let f = src.read().unwrap();
                assert_eq!(
                    (f.sample_rate, f.channels, f.frames()),
                    (48_000, channels, 480)
                );
                all.extend(f.samples);
            }
            // Away from the clip's edges the tone is intact: same frequency, same level.
            let middle = &all[4800 * channels as usize..43_200 * channels as usize];
            for c in 0..channels as usize {
                let (rms, freq) = analyse(middle, channels as usize, c, 48_000);
                assert!((freq - 1000.0).abs() < 5.0, "{channels} ch: {freq} Hz");
                assert!(
                    (rms - 0.5 / 2f64.sqrt()).abs() < 0.01,
                    "{channels} ch: rms {rms}"
                );
            }
            assert!(
                src.description()
                    .starts_with("WAV sine (16000 Hz 1 ch 16-bit, 1.0 s) as 48000 Hz")
            );
        }
    }

    #[test]
    fn wav_formats_and_channel_layouts_convert() {
        // 44.1 kHz stereo float: left a 500 Hz tone, right silent -> mono 16 kHz.
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let bytes = wav(spec, |w| {
            for i in 0..44_100 {
                let t = i as f64 / 44_100.0;
                w.write_sample((2.0 * std::f64::consts::PI * 500.0 * t).sin() as f32 * 0.8)
                    .unwrap();
                w.write_sample(0.0f32).unwrap();
            }
        });
        let mut src = WavSource::from_bytes(&bytes, "float", settings(16_000, 1)).unwrap();
        assert_eq!(src.clip_frames(), 16_000);
        let samples: Vec<i16> = (0..100).flat_map(|_| src.read().unwrap().samples).collect();
        let (rms, freq) = analyse(&samples[1600..14_400], 1, 0, 16_000);
        assert!((freq - 500.0).abs() < 5.0, "{freq}");
        // Averaging with a silent channel halves the level.
        assert!((rms - 0.4 / 2f64.sqrt()).abs() < 0.01, "{rms}");

        // 24-bit and 8-bit integers at the same rate: no resampling, exact scaling.
        for bits in [24u16, 8] {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 8_000,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            let half = 1i32 << (bits - 2); // half of full scale
            let bytes = wav(spec, |w| {
                for _ in 0..80 {
                    w.write_sample(half).unwrap();
                }
            });
            let mut src = WavSource::from_bytes(&bytes, "ints", settings(8_000, 2)).unwrap();
            let f = src.read().unwrap();
            assert_eq!(f.samples, vec![16384; 160], "{bits}-bit");
        }
    }

    #[test]
    fn a_short_clip_loops_within_and_across_periods() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let bytes = wav(spec, |w| {
            for v in [1i16, 2, 3] {
                w.write_sample(v).unwrap();
            }
        });
        let mut src = WavSource::from_bytes(&bytes, "short", settings(8_000, 1)).unwrap();
        let a = src.read().unwrap().samples;
        let b = src.read().unwrap().samples;
        assert_eq!(&a[..7], &[1, 2, 3, 1, 2, 3, 1]);
        // 80 frames a period: the second period starts at 80 % 3 = 2.
        assert_eq!(&b[..4], &[3, 1, 2, 3]);
    }

    #[test]
    fn bad_wavs_are_errors_naming_the_file() {
        let err = WavSource::from_bytes(b"RIFF....WAVEjunk", "junk.wav", settings(48_000, 1))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("junk.wav: cannot use as audio source"),
            "{err}"
        );
        let err = WavSource::open(Path::new("/nonexistent.wav"), settings(48_000, 1)).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent.wav: "), "{err}");
        let empty = wav(
            hound::WavSpec {
                channels: 1,
                sample_rate: 8_000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
            |_| {},
        );
        let err = WavSource::from_bytes(&empty, "empty.wav", settings(8_000, 1)).unwrap_err();
        assert!(err.to_string().contains("holds no samples"), "{err}");
    }

    #[test]
    fn the_bundled_speech_loads_in_every_configured_format() {
        for (rate, channels) in [
            (16_000, 1),
            (48_000, 1),
            (48_000, 2),
            (8_000, 1),
            (44_100, 2),
        ] {
            let mut src = WavSource::bundled(settings(rate, channels)).unwrap();
            let f = src.read().unwrap();
            assert_eq!((f.sample_rate, f.channels), (rate, channels));
            // Several seconds of speech, not silence.
            assert!(src.clip_frames() > 5 * rate as usize);
            let loud = (0..300)
                .flat_map(|_| src.read().unwrap().samples)
                .filter(|s| s.unsigned_abs() > 3000)
                .count();
            assert!(loud > 100, "{rate} Hz {channels} ch");
        }
        assert!(
            WavSource::bundled(settings(16_000, 1))
                .unwrap()
                .description()
                .starts_with("WAV bundled demo speech (16000 Hz 1 ch 16-bit,")
        );
    }
}

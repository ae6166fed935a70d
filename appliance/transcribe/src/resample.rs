//! Any-rate, any-channel PCM to the 16 kHz mono Whisper wants, block by block.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use telecart_core::CaptureTime;

use crate::{SAMPLE_RATE, TranscribeError};

/// Rates accepted as input.
pub(crate) const MAX_INPUT_RATE: u32 = 384_000;
/// Channels accepted as input.
pub(crate) const MAX_CHANNELS: u16 = 32;

/// Averages interleaved channels into one (clipping is impossible: it is a mean).
pub fn downmix(samples: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return samples.to_vec();
    }
    samples
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// A streaming converter from one input rate to 16 kHz mono, carrying capture times along.
pub struct MonoResampler {
    rate: u32,
    resampler: Option<Fft<f32>>,
    /// Input waiting for a whole resampler chunk.
    pending: Vec<f32>,
    /// Capture time of `pending[0]`.
    pending_time: CaptureTime,
    /// Output samples still to discard (the resampler's delay).
    skip: usize,
}

impl std::fmt::Debug for MonoResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonoResampler")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl MonoResampler {
    /// A converter from `rate` Hz mono.
    pub fn new(rate: u32) -> Result<Self, TranscribeError> {
        if rate == 0 || rate > MAX_INPUT_RATE {
            return Err(TranscribeError::Audio(format!(
                "sample rate {rate} Hz is not in 1..={MAX_INPUT_RATE}"
            )));
        }
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    rate as usize,
                    SAMPLE_RATE as usize,
                    1024,
                    1,
                    FixedSync::Input,
                )
                .map_err(|e| {
                    TranscribeError::Audio(format!("cannot resample {rate} Hz to 16 kHz: {e}"))
                })?,
            )
        };
        let skip = resampler.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            rate,
            resampler,
            pending: Vec::new(),
            pending_time: CaptureTime(0),
            skip,
        })
    }

    /// The input rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Converts mono `samples` captured from `capture_time` on; returns the 16 kHz samples
    /// ready so far and the capture time of the first of them.
    pub fn push(&mut self, samples: &[f32], capture_time: CaptureTime) -> (Vec<f32>, CaptureTime) {
        let Some(resampler) = self.resampler.as_mut() else {
            return (samples.to_vec(), capture_time);
        };
        if self.pending.is_empty() {
            self.pending_time = capture_time;
        }
        self.pending.extend_from_slice(samples);
        let first_time = self.pending_time;
        let mut out = Vec::new();
        loop {
            let need = resampler.input_frames_next();
            if self.pending.len() < need {
                break;
            }
            let Ok(input) = InterleavedSlice::new(&self.pending[..need], 1, need) else {
                break;
            };
            match resampler.process(&input, None) {
                Ok(chunk) => out.extend(chunk.take_data()),
                Err(e) => {
                    tracing::warn!(error = %e, "resampling failed; a chunk of audio is lost");
                }
            }
            self.pending.drain(..need);
            self.pending_time =
                CaptureTime(self.pending_time.0 + need as u64 * 1_000_000 / self.rate as u64);
        }
        let skip = self.skip.min(out.len());
        self.skip -= skip;
        out.drain(..skip);
        (out, first_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_checked() {
        assert!(MonoResampler::new(0).is_err());
        assert!(MonoResampler::new(1_000_000).is_err());
        assert!(MonoResampler::new(8000).is_ok());
    }

    #[test]
    fn a_48k_tone_comes_out_at_16k_with_its_length() {
        let mut r = MonoResampler::new(48_000).unwrap();
        let tone: Vec<f32> = (0..48_000 * 2)
            .map(|i| (i as f32 / 48_000.0 * 440.0 * std::f32::consts::TAU).sin() * 0.5)
            .collect();
        let mut out = Vec::new();
        for (i, block) in tone.chunks(480).enumerate() {
            out.extend(r.push(block, CaptureTime(i as u64 * 10_000)).0);
        }
        // Two seconds in, two seconds out, minus what is still inside the resampler.
        assert!((31_000..=32_000).contains(&out.len()), "{}", out.len());
        let rms = (out[4000..30_000].iter().map(|x| x * x).sum::<f32>() / 26_000.0).sqrt();
        assert!((0.33..0.38).contains(&rms), "{rms}");
    }

    #[test]
    fn downmix_averages() {
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
        assert_eq!(downmix(&[0.25], 1), vec![0.25]);
    }
}

//! Rate conversion of a mono stream fed in blocks of any length, through rubato's FFT
//! resampler (a maintained crate; band-limited, so 48 kHz to 16 kHz does not alias).

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::{InterleavedSlice, InterleavedSlice as OutSlice};
use rubato::{Fft, FixedSync, Resampler};

use crate::AudioError;

/// Converts a mono f32 stream from one rate to another. Input goes in with
/// [`StreamResampler::push`] in blocks of any length; converted samples come out with
/// [`StreamResampler::pop`] once enough have accumulated. Equal rates pass straight through.
pub struct StreamResampler {
    from: u32,
    to: u32,
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    ready: VecDeque<f32>,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// A converter from `from` Hz to `to` Hz working on 10 ms chunks of input.
    pub fn new(from: u32, to: u32) -> Result<Self, AudioError> {
        if !(8_000..=192_000).contains(&from) || !(8_000..=192_000).contains(&to) {
            return Err(AudioError::UnsupportedRate { rate: from.min(to) });
        }
        let inner = if from == to {
            None
        } else {
            let chunk = (from / 100) as usize;
            Some(
                Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                    .map_err(|e| AudioError::Resampler(format!("{from} Hz to {to} Hz: {e}")))?,
            )
        };
        let out_max = inner.as_ref().map_or(0, |r| r.output_frames_max());
        Ok(Self {
            from,
            to,
            inner,
            pending: Vec::new(),
            scratch: vec![0.0; out_max],
            ready: VecDeque::new(),
        })
    }

    /// Input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Adds input samples and converts every whole chunk they complete.
    pub fn push(&mut self, input: &[f32]) -> Result<(), AudioError> {
        let Some(inner) = self.inner.as_mut() else {
            self.ready.extend(input);
            return Ok(());
        };
        self.pending.extend_from_slice(input);
        let mut offset = 0;
        loop {
            let need = inner.input_frames_next();
            if self.pending.len() - offset < need {
                break;
            }
            let chunk = &self.pending[offset..offset + need];
            let src = InterleavedSlice::new(chunk, 1, need)
                .map_err(|e| AudioError::Resampler(e.to_string()))?;
            let cap = self.scratch.len();
            let mut dst = OutSlice::new_mut(&mut self.scratch, 1, cap)
                .map_err(|e| AudioError::Resampler(e.to_string()))?;
            let (_, produced) = inner
                .process_into_buffer(&src, &mut dst, None)
                .map_err(|e| AudioError::Resampler(e.to_string()))?;
            self.ready.extend(&self.scratch[..produced]);
            offset += need;
        }
        self.pending.drain(..offset);
        Ok(())
    }

    /// Converted samples waiting.
    pub fn available(&self) -> usize {
        self.ready.len()
    }

    /// Takes exactly `n` converted samples, or `None` while fewer are ready.
    pub fn pop(&mut self, n: usize) -> Option<Vec<f32>> {
        if self.ready.len() < n {
            return None;
        }
        Some(self.ready.drain(..n).collect())
    }

    /// Samples of delay the conversion adds (at the output rate).
    pub fn delay(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.output_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn converts_rates_keeping_length_and_tone() {
        for (from, to) in [
            (44_100, 48_000),
            (48_000, 16_000),
            (16_000, 48_000),
            (8_000, 48_000),
        ] {
            let mut r = StreamResampler::new(from, to).unwrap();
            let input = tone(from, 440.0, from as usize); // 1 s, in odd-sized blocks
            for block in input.chunks(333) {
                r.push(block).unwrap();
            }
            let got = r.available();
            let expect = to as usize;
            // Everything but the last partial chunk has come out.
            assert!(
                got + to as usize / 50 >= expect && got <= expect,
                "{from}->{to}: {got}"
            );
            let out = r.pop(got).unwrap();
            let skip = r.delay() + 100;
            let peak = out[skip..].iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!((peak - 0.5).abs() < 0.03, "{from}->{to}: peak {peak}");
        }
    }

    #[test]
    fn same_rate_passes_through_and_bad_rates_are_refused() {
        let mut r = StreamResampler::new(48_000, 48_000).unwrap();
        r.push(&[0.1, 0.2, 0.3]).unwrap();
        assert_eq!(r.pop(3).unwrap(), vec![0.1, 0.2, 0.3]);
        assert!(r.pop(1).is_none());
        assert!(StreamResampler::new(0, 48_000).is_err());
        assert!(StreamResampler::new(48_000, 1_000_000).is_err());
    }
}

//! The microphone's PCM to the negotiated codec and the peer's packets back to PCM, converting
//! rate and channels on the way (rubato's FFT resampler, in 20 ms chunks).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use telecart_codec::g711::{G711Decoder, G711Encoder};
use telecart_codec::opus::{OpusDecoder, OpusEncoder};
use telecart_codec::{AudioEncoder, CodecError};
use telecart_core::media::{AudioCodec, AudioFrame, CaptureTime, EncodedAudio};

/// A streaming mono resampler.
pub(crate) struct MonoResampler {
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
}

impl MonoResampler {
    pub(crate) fn new(from: u32, to: u32) -> Result<Self, String> {
        let inner = if from == to {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    from as usize,
                    to as usize,
                    from as usize / 50,
                    1,
                    FixedSync::Input,
                )
                .map_err(|e| format!("cannot resample {from} Hz to {to} Hz: {e}"))?,
            )
        };
        Ok(Self {
            inner,
            pending: Vec::new(),
        })
    }

    pub(crate) fn push(&mut self, mono: &[i16]) -> Vec<i16> {
        let Some(r) = self.inner.as_mut() else {
            return mono.to_vec();
        };
        self.pending
            .extend(mono.iter().map(|&s| f32::from(s) / 32768.0));
        let mut out = Vec::new();
        loop {
            let need = r.input_frames_next();
            if self.pending.len() < need {
                break;
            }
            let Ok(input) = InterleavedSlice::new(&self.pending[..need], 1, need) else {
                break;
            };
            if let Ok(o) = r.process(&input, None) {
                out.extend(
                    o.take_data()
                        .iter()
                        .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
                );
            }
            self.pending.drain(..need);
        }
        out
    }
}

fn mono(frame: &AudioFrame) -> Vec<i16> {
    let ch = usize::from(frame.channels.max(1));
    if ch == 1 {
        return frame.samples.clone();
    }
    frame
        .samples
        .chunks_exact(ch)
        .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / ch as i32) as i16)
        .collect()
}

/// Encodes the cart's microphone for one call.
pub(crate) struct AudioSend {
    encoder: Box<dyn AudioEncoder>,
    resampler: Option<(u32, MonoResampler)>,
    rate: u32,
    sequence: u64,
}

impl AudioSend {
    pub(crate) fn new(codec: AudioCodec, opus_bitrate_bps: u32) -> Result<Self, CodecError> {
        let (encoder, rate): (Box<dyn AudioEncoder>, u32) = match codec {
            AudioCodec::Opus => (Box::new(OpusEncoder::new(1, opus_bitrate_bps)?), 48_000),
            _ => (Box::new(G711Encoder::new(codec)?), 8_000),
        };
        Ok(Self {
            encoder,
            resampler: None,
            rate,
            sequence: 0,
        })
    }

    /// Encodes one microphone block; `muted` sends silence so the peer's jitter buffer keeps
    /// running (and nothing of the room leaves the cart).
    pub(crate) fn encode(&mut self, frame: &AudioFrame, muted: bool) -> Vec<EncodedAudio> {
        let mut samples = mono(frame);
        if muted {
            samples.iter_mut().for_each(|s| *s = 0);
        }
        if frame.sample_rate != self.rate {
            let fresh = !matches!(&self.resampler, Some((from, _)) if *from == frame.sample_rate);
            if fresh {
                match MonoResampler::new(frame.sample_rate, self.rate) {
                    Ok(r) => self.resampler = Some((frame.sample_rate, r)),
                    Err(_) => return Vec::new(),
                }
            }
            if let Some((_, r)) = self.resampler.as_mut() {
                samples = r.push(&samples);
            }
        }
        if samples.is_empty() {
            return Vec::new();
        }
        self.sequence += 1;
        let block = AudioFrame {
            sample_rate: self.rate,
            channels: 1,
            samples,
            sequence: self.sequence,
            capture_time: frame.capture_time,
        };
        self.encoder.encode(&block).unwrap_or_default()
    }
}

/// Decodes the peer's audio to mono PCM at the codec's rate.
pub(crate) enum AudioReceive {
    Opus(Box<OpusDecoder>),
    G711(G711Decoder),
}

impl AudioReceive {
    pub(crate) fn new(codec: AudioCodec) -> Result<Self, CodecError> {
        Ok(match codec {
            AudioCodec::Opus => Self::Opus(Box::new(OpusDecoder::new(1)?)),
            _ => Self::G711(G711Decoder::new(codec)?),
        })
    }

    pub(crate) fn decode(&mut self, payload: &[u8], sequence: u64) -> Option<AudioFrame> {
        let (samples, rate) = match self {
            Self::Opus(d) => (d.decode(payload).ok()?, 48_000),
            Self::G711(d) => (d.decode(payload), 8_000),
        };
        Some(AudioFrame {
            sample_rate: rate,
            channels: 1,
            samples,
            sequence,
            capture_time: CaptureTime(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_a_tone_and_its_length() {
        let mut r = MonoResampler::new(48_000, 8_000).unwrap();
        let tone: Vec<i16> = (0..48_000)
            .map(|i| {
                ((i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 10_000.0) as i16
            })
            .collect();
        let out: Vec<i16> = tone.chunks(480).flat_map(|c| r.push(c)).collect();
        assert!((7_500..=8_000).contains(&out.len()), "{}", out.len());
        // 440 Hz: about 880 zero crossings a second.
        let crossings = out[1000..]
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count() as f64
            / ((out.len() - 1000) as f64 / 8000.0);
        assert!((860.0..900.0).contains(&crossings), "{crossings}");
    }

    #[test]
    fn pcmu_packets_are_20_ms_at_8_khz_from_48_khz_stereo() {
        let mut s = AudioSend::new(AudioCodec::Pcmu, 32_000).unwrap();
        let mut packets = Vec::new();
        for i in 0..10 {
            let frame = AudioFrame {
                sample_rate: 48_000,
                channels: 2,
                samples: vec![1000; 960 * 2],
                sequence: i,
                capture_time: CaptureTime(0),
            };
            packets.extend(s.encode(&frame, false));
        }
        assert!(packets.len() >= 8, "{}", packets.len());
        assert!(
            packets
                .iter()
                .all(|p| p.data.len() == 160 && p.frames == 160)
        );
    }
}

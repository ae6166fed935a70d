//! Codec-agnostic decoding for the playback path: the jitter buffer hands payloads to a
//! [`PayloadDecoder`] and asks it to conceal what never came. WebRTC and SIP calls both play
//! through this one trait.

use telecart_codec::{G711Decoder, OpusDecoder};
use telecart_core::media::AudioCodec;

use crate::AudioError;

/// Decodes one codec's payloads to mono PCM and conceals lost ones.
pub trait PayloadDecoder: Send {
    /// Samples per second of the decoded audio (and of the RTP timestamps).
    fn clock_rate(&self) -> u32;
    /// Decodes one payload to mono PCM.
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, AudioError>;
    /// Makes up `samples` samples in place of audio that never came.
    fn conceal(&mut self, samples: usize) -> Vec<i16>;
    /// Rebuilds `samples` lost samples from the packet that followed them, if the codec
    /// carries redundancy (Opus in-band FEC); `None` if it cannot.
    fn recover(&mut self, _next_payload: &[u8], _samples: usize) -> Option<Vec<i16>> {
        None
    }
    /// Codec name for logs and metrics.
    fn name(&self) -> &'static str;
}

/// Opus, mono at 48 kHz, with libopus's own concealment and in-band FEC.
#[derive(Debug)]
pub struct OpusPayloadDecoder {
    inner: OpusDecoder,
}

impl OpusPayloadDecoder {
    /// A mono 48 kHz decoder.
    pub fn new() -> Result<Self, AudioError> {
        Ok(Self {
            inner: OpusDecoder::new(1).map_err(|e| AudioError::Decoder(e.to_string()))?,
        })
    }
}

impl PayloadDecoder for OpusPayloadDecoder {
    fn clock_rate(&self) -> u32 {
        48_000
    }

    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, AudioError> {
        self.inner
            .decode(payload)
            .map_err(|e| AudioError::Decoder(e.to_string()))
    }

    fn conceal(&mut self, samples: usize) -> Vec<i16> {
        // libopus conceals in multiples of 2.5 ms; anything it refuses becomes silence.
        let mut out = self.inner.decode_lost(samples).unwrap_or_default();
        out.resize(samples, 0);
        out
    }

    fn recover(&mut self, next_payload: &[u8], samples: usize) -> Option<Vec<i16>> {
        let mut out = self.inner.decode_fec(next_payload, samples).ok()?;
        out.resize(samples, 0);
        Some(out)
    }

    fn name(&self) -> &'static str {
        "opus"
    }
}

/// How much history the G.711 concealment keeps: 30 ms at 8 kHz.
const HISTORY: usize = 240;
/// Pitch periods searched: 2.5 ms (400 Hz) to 15 ms (66 Hz).
const MIN_PITCH: usize = 20;
const MAX_PITCH: usize = 120;
/// Crossfade into real audio after a concealment: 4 ms.
const MERGE: usize = 32;
/// Concealment fades to silence by 60 ms.
const FADE_SAMPLES: usize = 480;

/// G.711 µ-law or A-law at 8 kHz, with a pitch-repeating concealment in the manner of
/// ITU-T G.711 Appendix I: the last pitch period repeats, fading out over 60 ms, and the first
/// real samples after a gap are crossfaded with the continued repetition.
#[derive(Debug)]
pub struct G711PayloadDecoder {
    inner: G711Decoder,
    history: Vec<i16>,
    pitch: usize,
    /// Position in the repeated period, and samples concealed so far in this gap.
    phase: usize,
    concealed: usize,
}

impl G711PayloadDecoder {
    /// A decoder for PCMU or PCMA.
    pub fn new(codec: AudioCodec) -> Result<Self, AudioError> {
        Ok(Self {
            inner: G711Decoder::new(codec).map_err(|e| AudioError::Decoder(e.to_string()))?,
            history: Vec::with_capacity(HISTORY),
            pitch: 0,
            phase: 0,
            concealed: 0,
        })
    }

    fn remember(&mut self, pcm: &[i16]) {
        self.history.extend_from_slice(pcm);
        let excess = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..excess);
    }

    /// The lag with the highest normalized autocorrelation over the last 20 ms.
    fn find_pitch(&self) -> usize {
        let h = &self.history;
        if h.len() < MAX_PITCH + MIN_PITCH {
            return MIN_PITCH.min(h.len()).max(1);
        }
        let window = (h.len() - MAX_PITCH).min(160);
        let end = h.len();
        let mut best = (MIN_PITCH, f64::MIN);
        for lag in MIN_PITCH..=MAX_PITCH {
            let (mut xy, mut yy) = (0f64, 1e-9);
            for i in end - window..end {
                let x = f64::from(h[i]);
                let y = f64::from(h[i - lag]);
                xy += x * y;
                yy += y * y;
            }
            let score = xy / yy.sqrt();
            if score > best.1 {
                best = (lag, score);
            }
        }
        best.0
    }

    fn next_concealed(&mut self) -> i16 {
        let period = &self.history[self.history.len() - self.pitch..];
        let s = period[self.phase % self.pitch];
        self.phase += 1;
        let gain = 1.0 - (self.concealed.saturating_sub(80) as f32 / FADE_SAMPLES as f32).min(1.0);
        self.concealed += 1;
        (f32::from(s) * gain) as i16
    }
}

impl PayloadDecoder for G711PayloadDecoder {
    fn clock_rate(&self) -> u32 {
        8_000
    }

    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, AudioError> {
        if payload.is_empty() {
            return Err(AudioError::Decoder("empty G.711 payload".into()));
        }
        let mut pcm = self.inner.decode(payload);
        if self.concealed > 0 && !self.history.is_empty() && self.pitch > 0 {
            let n = MERGE.min(pcm.len());
            for (i, s) in pcm.iter_mut().take(n).enumerate() {
                let w = (i + 1) as f32 / (n + 1) as f32;
                let c = f32::from(self.next_concealed());
                *s = (c * (1.0 - w) + f32::from(*s) * w) as i16;
            }
        }
        self.concealed = 0;
        self.pitch = 0;
        self.remember(&pcm);
        Ok(pcm)
    }

    fn conceal(&mut self, samples: usize) -> Vec<i16> {
        if self.history.is_empty() {
            return vec![0; samples];
        }
        if self.concealed == 0 || self.pitch == 0 {
            self.pitch = self.find_pitch().min(self.history.len());
            self.phase = 0;
        }
        (0..samples).map(|_| self.next_concealed()).collect()
    }

    fn name(&self) -> &'static str {
        "g711"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_codec::g711::linear_to_ulaw;

    fn voiced(n: usize, start: usize) -> Vec<i16> {
        // 200 Hz "voice" with a harmonic: a 40-sample period at 8 kHz.
        (start..start + n)
            .map(|i| {
                let t = i as f32 / 8000.0;
                (6000.0 * (2.0 * std::f32::consts::PI * 200.0 * t).sin()
                    + 2000.0 * (2.0 * std::f32::consts::PI * 600.0 * t).sin())
                    as i16
            })
            .collect()
    }

    #[test]
    fn g711_concealment_continues_the_pitch_then_fades() {
        let mut d = G711PayloadDecoder::new(AudioCodec::Pcmu).unwrap();
        for p in 0..5 {
            let payload: Vec<u8> = voiced(160, p * 160)
                .into_iter()
                .map(linear_to_ulaw)
                .collect();
            d.decode(&payload).unwrap();
        }
        assert_eq!(d.find_pitch() % 40, 0);
        let lost = d.conceal(80);
        let truth = voiced(80, 800);
        let err: f64 = lost
            .iter()
            .zip(&truth)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let sig: f64 = truth.iter().map(|&a| f64::from(a).powi(2)).sum();
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 10.0, "first 10 ms of concealment SNR {snr:.1} dB");
        let later = d.conceal(800);
        assert!(later[600..].iter().all(|&s| s == 0), "fades to silence");
        // A fresh decoder with nothing heard conceals with silence.
        let mut fresh = G711PayloadDecoder::new(AudioCodec::Pcma).unwrap();
        assert_eq!(fresh.conceal(160), vec![0; 160]);
        assert!(fresh.decode(&[]).is_err());
    }

    #[test]
    fn opus_conceals_and_refuses_garbage_without_panicking() {
        let mut d = OpusPayloadDecoder::new().unwrap();
        assert_eq!(d.conceal(480).len(), 480);
        assert_eq!(d.conceal(960).len(), 960);
        let _ = d.decode(&[0xff; 3]);
        assert!(d.decode(&[]).is_err());
        assert_eq!(d.clock_rate(), 48_000);
    }
}

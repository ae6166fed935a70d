//! G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711, for SIP endpoints that
//! speak nothing else: 8 kHz mono, 20 ms (160-sample) packets.

use crate::{AudioEncoder, CodecError};
use telecart_core::media::AudioCodec;
use telecart_core::{AudioFrame, CaptureTime, EncodedAudio};

const BIAS: i32 = 0x84;
const CLIP: i32 = 32_635;

/// Encodes one linear sample to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - ((s as u32) << 17).leading_zeros().min(7)) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one µ-law byte.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0f);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes one linear sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let s = i32::from(sample) >> 3; // 13-bit
    let (sign, magnitude) = if s >= 0 { (0xd5, s) } else { (0x55, -s - 1) };
    let code = if magnitude < 32 {
        (magnitude >> 1) as u8
    } else {
        let exponent = 31 - (magnitude as u32).leading_zeros() as i32 - 4; // 1..=7
        if exponent > 7 {
            0x7f
        } else {
            ((exponent << 4) | ((magnitude >> exponent) & 0x0f)) as u8
        }
    };
    code ^ sign
}

/// Decodes one A-law byte.
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = i32::from((a >> 4) & 0x07);
    let mantissa = i32::from(a & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// G.711 encoder of 8 kHz mono blocks into 20 ms packets.
#[derive(Debug)]
pub struct G711Encoder {
    codec: AudioCodec,
    pending: Vec<i16>,
    pending_start: Option<(u64, CaptureTime)>,
}

/// Samples in a 20 ms packet at 8 kHz.
pub const PACKET_SAMPLES: usize = 160;

impl G711Encoder {
    /// µ-law (`AudioCodec::Pcmu`) or A-law (`AudioCodec::Pcma`).
    pub fn new(codec: AudioCodec) -> Result<Self, CodecError> {
        if !matches!(codec, AudioCodec::Pcmu | AudioCodec::Pcma) {
            return Err(CodecError::Settings(format!("{codec:?} is not G.711")));
        }
        Ok(Self {
            codec,
            pending: Vec::new(),
            pending_start: None,
        })
    }
}

impl AudioEncoder for G711Encoder {
    fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedAudio>, CodecError> {
        if frame.sample_rate != 8_000 || frame.channels != 1 {
            return Err(CodecError::Input(format!(
                "G.711 takes 8000 Hz mono, got {} Hz x{} (resample first)",
                frame.sample_rate, frame.channels
            )));
        }
        if self.pending.is_empty() {
            self.pending_start = Some((frame.sequence, frame.capture_time));
        }
        self.pending.extend_from_slice(&frame.samples);
        let mut out = Vec::new();
        let mut consumed = 0;
        while self.pending.len() - consumed >= PACKET_SAMPLES {
            let (sequence, start) = self
                .pending_start
                .unwrap_or((frame.sequence, frame.capture_time));
            let chunk = &self.pending[consumed..consumed + PACKET_SAMPLES];
            let data = match self.codec {
                AudioCodec::Pcmu => chunk.iter().map(|&s| linear_to_ulaw(s)).collect(),
                _ => chunk.iter().map(|&s| linear_to_alaw(s)).collect(),
            };
            out.push(EncodedAudio {
                codec: self.codec,
                data,
                frames: PACKET_SAMPLES as u32,
                sequence,
                capture_time: CaptureTime(start.as_micros() + consumed as u64 * 125),
            });
            consumed += PACKET_SAMPLES;
        }
        self.pending.drain(..consumed);
        if consumed > 0 && !self.pending.is_empty() {
            let end_us = frame.capture_time.as_micros() + frame.duration_micros();
            let back_us = self.pending.len() as u64 * 125;
            self.pending_start =
                Some((frame.sequence, CaptureTime(end_us.saturating_sub(back_us))));
        }
        Ok(out)
    }
}

/// Decodes a G.711 payload.
pub fn decode(codec: AudioCodec, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
    match codec {
        AudioCodec::Pcmu => Ok(payload.iter().map(|&b| ulaw_to_linear(b)).collect()),
        AudioCodec::Pcma => Ok(payload.iter().map(|&b| alaw_to_linear(b)).collect()),
        other => Err(CodecError::Settings(format!("{other:?} is not G.711"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sine(hz: f64, n: usize, rate: u32) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (10_000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    pub(crate) fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
        let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(test)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        10.0 * (signal / noise.max(1e-9)).log10()
    }

    #[test]
    fn reference_code_points() {
        // ITU-T G.711 / Sun g711.c values.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32_256);
        assert_eq!(alaw_to_linear(0x2a), -32_256);
    }

    #[test]
    fn every_code_decodes_and_re_encodes_to_itself() {
        for b in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "A-law {b:#04x}");
            let u = linear_to_ulaw(ulaw_to_linear(b));
            // µ-law has two codes for zero (0x7f and 0xff).
            assert!(
                u == b || (b == 0x7f && u == 0xff),
                "µ-law {b:#04x} -> {u:#04x}"
            );
        }
    }

    #[test]
    fn quantisation_error_stays_within_the_segment_step() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            for (enc, dec) in [
                (
                    linear_to_ulaw as fn(i16) -> u8,
                    ulaw_to_linear as fn(u8) -> i16,
                ),
                (linear_to_alaw, alaw_to_linear),
            ] {
                let back = i32::from(dec(enc(s)));
                let err = (back - i32::from(s)).abs();
                // Step is 1/16 of the segment; allow half a step plus clipping near full scale.
                let bound = (i32::from(s).abs() / 16).max(16)
                    + 512 * i32::from(i32::from(s).abs() > 32_000);
                assert!(err <= bound, "{s} -> {back} (err {err}, bound {bound})");
            }
        }
    }

    #[test]
    fn sine_round_trip_snr_is_that_of_g711() {
        let tone = sine(1000.0, 8000, 8000);
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            let mut enc = G711Encoder::new(codec).unwrap();
            let mut decoded = Vec::new();
            for (i, chunk) in tone.chunks(80).enumerate() {
                let block = AudioFrame {
                    sample_rate: 8000,
                    channels: 1,
                    samples: chunk.to_vec(),
                    sequence: i as u64,
                    capture_time: CaptureTime(i as u64 * 10_000),
                };
                for p in enc.encode(&block).unwrap() {
                    assert_eq!(p.data.len(), 160);
                    decoded.extend(decode(codec, &p.data).unwrap());
                }
            }
            assert_eq!(decoded.len(), 8000);
            let snr = snr_db(&tone, &decoded);
            // G.711 gives about 37-38 dB SNR for a loud sine.
            assert!(snr > 33.0, "{codec:?}: {snr:.1} dB");
        }
    }

    #[test]
    fn only_8khz_mono_is_accepted() {
        let mut enc = G711Encoder::new(AudioCodec::Pcmu).unwrap();
        let block = AudioFrame {
            sample_rate: 48_000,
            channels: 1,
            samples: vec![0; 480],
            sequence: 0,
            capture_time: CaptureTime(0),
        };
        assert!(enc.encode(&block).is_err());
        assert!(G711Encoder::new(AudioCodec::Opus).is_err());
    }
}

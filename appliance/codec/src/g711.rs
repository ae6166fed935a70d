//! G.711 µ-law (PCMU) and A-law (PCMA) for 8 kHz mono, 20 ms (160-sample) packets.
//!
//! The companding is ITU-T G.711's, written after the public-domain Sun reference
//! implementation (`g711.c`) that most stacks carry: µ-law on 14-bit magnitudes with a bias
//! of 33, A-law on 13-bit magnitudes with even bits inverted (`^ 0x55`).

use telecart_core::media::{AudioCodec, AudioFrame, EncodedAudio};

use crate::{AudioEncoder, CodecError, PacketAccumulator};

/// Sample rate G.711 runs at.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms packet.
pub const PACKET_SAMPLES: usize = 160;

const SEG_UEND: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const SEG_AEND: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&end| value <= end).unwrap_or(8)
}

/// Encodes one 16-bit sample to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 2;
    let mask: i32 = if v < 0 {
        v = -v;
        0x7f
    } else {
        0xff
    };
    v = v.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let code = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0x0f);
    (code ^ mask) as u8
}

/// Decodes one µ-law byte to a 16-bit sample.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (i32::from(u & 0x0f) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    let v = if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    };
    v as i16
}

/// Encodes one 16-bit sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask: i32 = if v >= 0 {
        0xd5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let mut code = (seg as i32) << 4;
    code |= if seg < 2 {
        (v >> 1) & 0x0f
    } else {
        (v >> seg) & 0x0f
    };
    (code ^ mask) as u8
}

/// Decodes one A-law byte to a 16-bit sample.
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = i32::from(a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

fn law_for(codec: AudioCodec) -> Result<fn(i16) -> u8, CodecError> {
    match codec {
        AudioCodec::Pcmu => Ok(linear_to_ulaw),
        AudioCodec::Pcma => Ok(linear_to_alaw),
        other => Err(CodecError::InvalidSettings(format!(
            "{other:?} is not a G.711 codec"
        ))),
    }
}

/// G.711 encoder: 8 kHz mono blocks of any length in, 20 ms packets out.
#[derive(Debug)]
pub struct G711Encoder {
    codec: AudioCodec,
    law: fn(i16) -> u8,
    pending: PacketAccumulator,
}

impl G711Encoder {
    /// An encoder for [`AudioCodec::Pcmu`] or [`AudioCodec::Pcma`].
    pub fn new(codec: AudioCodec) -> Result<Self, CodecError> {
        Ok(Self {
            codec,
            law: law_for(codec)?,
            pending: PacketAccumulator::new(SAMPLE_RATE, 1, PACKET_SAMPLES),
        })
    }
}

impl AudioEncoder for G711Encoder {
    fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedAudio>, CodecError> {
        if frame.sample_rate != SAMPLE_RATE || frame.channels != 1 {
            return Err(CodecError::AudioFormat {
                codec: self.codec,
                need_rate: SAMPLE_RATE,
                need_channels: 1,
                got_rate: frame.sample_rate,
                got_channels: frame.channels,
            });
        }
        Ok(self
            .pending
            .push(frame)
            .into_iter()
            .map(|packet| EncodedAudio {
                codec: self.codec,
                data: packet.samples.iter().map(|&s| (self.law)(s)).collect(),
                frames: PACKET_SAMPLES as u32,
                sequence: packet.sequence,
                capture_time: packet.capture_time,
            })
            .collect())
    }

    fn codec(&self) -> AudioCodec {
        self.codec
    }
}

/// G.711 decoder: a payload of any length to 8 kHz mono samples.
#[derive(Debug, Clone, Copy)]
pub struct G711Decoder {
    codec: AudioCodec,
}

impl G711Decoder {
    /// A decoder for [`AudioCodec::Pcmu`] or [`AudioCodec::Pcma`].
    pub fn new(codec: AudioCodec) -> Result<Self, CodecError> {
        law_for(codec)?;
        Ok(Self { codec })
    }

    /// Decodes a payload, one sample per byte.
    pub fn decode(&self, payload: &[u8]) -> Vec<i16> {
        let law = if self.codec == AudioCodec::Pcmu {
            ulaw_to_linear
        } else {
            alaw_to_linear
        };
        payload.iter().map(|&b| law(b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::sine;
    use telecart_core::media::CaptureTime;

    #[test]
    fn ulaw_reference_code_points() {
        // ITU-T G.711 Table 2a: zero is 0xff (and 0x7f for negative zero), full scale 0x80/0x00,
        // whose decoder outputs are ±8031 in 14 bits, ±32124 in 16.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7e);
        assert_eq!(ulaw_to_linear(0x7e), -8);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        // First segment boundary: 14-bit magnitudes 0..=1 → code 0xff (value 0), 31 → 0xf0.
        assert_eq!(ulaw_to_linear(0xf0), 30 * 4);
        assert_eq!(ulaw_to_linear(0xef), 33 * 4);
        assert_eq!(linear_to_ulaw(1000), 0xce);
        assert_eq!(ulaw_to_linear(0xce), 988);
    }

    #[test]
    fn alaw_reference_code_points() {
        // ITU-T G.711 Table 1a: the smallest positive step is 0xd5, full scale 0xaa/0x2a
        // whose decoder outputs are ±4032 in 13 bits, ±32256 in 16.
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2a);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(linear_to_alaw(1000), 0xfa);
        assert_eq!(alaw_to_linear(0xfa), 1008);
    }

    /// FNV-1a, to compare whole tables with ones made elsewhere.
    fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    #[test]
    fn whole_tables_match_an_independent_implementation() {
        // Hashes of CPython's audioop (its own C port of the reference algorithm):
        // lin2ulaw/lin2alaw of every 16-bit sample from -32768 up, and ulaw2lin/alaw2lin of
        // every code 0..=255 as little-endian i16.
        let all = || i16::MIN..=i16::MAX;
        assert_eq!(fnv1a(all().map(linear_to_ulaw)), 0xd5ee_23f7_d0ff_ae91);
        assert_eq!(fnv1a(all().map(linear_to_alaw)), 0xf030_666e_b780_cf25);
        let decoded = |f: fn(u8) -> i16| (0..=255u8).flat_map(move |c| f(c).to_le_bytes());
        assert_eq!(fnv1a(decoded(ulaw_to_linear)), 0xb91e_65d6_8481_a1a8);
        assert_eq!(fnv1a(decoded(alaw_to_linear)), 0x693a_40ca_62a3_d2a5);
    }

    #[test]
    fn every_code_round_trips_exactly() {
        for code in 0..=255u8 {
            let u = ulaw_to_linear(code);
            // µ-law has two zeros (0xff, 0x7f); everything else is its own code.
            if code != 0x7f {
                assert_eq!(linear_to_ulaw(u), code, "ulaw {code:#04x} → {u}");
            }
            let a = alaw_to_linear(code);
            assert_eq!(linear_to_alaw(a), code, "alaw {code:#04x} → {a}");
        }
    }

    #[test]
    fn full_16_bit_round_trip_error_is_within_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            let m = i32::from(x).abs();
            // Relative bound of a 4-bit mantissa (1/32 of the magnitude) plus the first
            // segment's absolute step, and plain clipping above the largest code.
            let eu = (i32::from(ulaw_to_linear(linear_to_ulaw(x))) - i32::from(x)).abs();
            let bound_u = (m / 32 + 8).max(m - 32124 + 4);
            assert!(eu <= bound_u, "ulaw {x}: error {eu} > {bound_u}");
            let ea = (i32::from(alaw_to_linear(linear_to_alaw(x))) - i32::from(x)).abs();
            let bound_a = (m / 32 + 16).max(m - 32256 + 8);
            assert!(ea <= bound_a, "alaw {x}: error {ea} > {bound_a}");
        }
    }

    fn snr_db(reference: &[i16], decoded: &[i16]) -> f64 {
        let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(decoded)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        10.0 * (signal / noise.max(1e-9)).log10()
    }

    #[test]
    fn sine_round_trip_snr_and_20_ms_packets() {
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            let mut enc = G711Encoder::new(codec).unwrap();
            let dec = G711Decoder::new(codec).unwrap();
            for amplitude in [0.5, 0.05] {
                let mut sent = Vec::new();
                let mut got = Vec::new();
                let mut packets = Vec::new();
                // 10 ms blocks (80 samples): two make one packet.
                for block in 0..50u64 {
                    let f = sine(8000, 1, 1000.0, amplitude, block * 80, 80);
                    sent.extend_from_slice(&f.samples);
                    packets.extend(enc.encode(&f).unwrap());
                }
                assert_eq!(packets.len(), 25);
                for (i, p) in packets.iter().enumerate() {
                    assert_eq!(p.codec, codec);
                    assert_eq!(p.frames, 160);
                    assert_eq!(p.data.len(), 160);
                    assert_eq!(p.sequence, 2 * i as u64);
                    assert_eq!(p.capture_time, CaptureTime(i as u64 * 20_000));
                    got.extend(dec.decode(&p.data));
                }
                let snr = snr_db(&sent, &got);
                // G.711 keeps 33-39 dB over a wide range of levels (that is its point); the
                // reference implementation gives 33.8/37.0 dB (µ-law) and 38.6/35.7 dB (A-law)
                // for these two levels.
                assert!(snr > 33.0, "{codec:?} at {amplitude}: SNR {snr:.1} dB");
            }
        }
    }

    #[test]
    fn refuses_anything_but_8_khz_mono() {
        let mut enc = G711Encoder::new(AudioCodec::Pcmu).unwrap();
        let wideband = sine(16000, 1, 440.0, 0.5, 0, 320);
        assert_eq!(
            enc.encode(&wideband),
            Err(CodecError::AudioFormat {
                codec: AudioCodec::Pcmu,
                need_rate: 8000,
                need_channels: 1,
                got_rate: 16000,
                got_channels: 1
            })
        );
        let stereo = sine(8000, 2, 440.0, 0.5, 0, 160);
        assert!(enc.encode(&stereo).is_err());
        assert!(G711Encoder::new(AudioCodec::Opus).is_err());
    }
}

//! Opus at 48 kHz, mono or stereo, 20 ms packets, with in-band FEC, plus a decoder that
//! conceals lost packets (PLC) or rebuilds them from the next packet's FEC data.

use ::opus::{Application, Bitrate, Channels};
use telecart_core::media::{AudioCodec, AudioFrame, EncodedAudio};

use crate::{AudioEncoder, CodecError, PacketAccumulator};

/// Opus runs at 48 kHz here (its RTP clock rate whatever the audio bandwidth).
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms packet.
pub const PACKET_FRAMES: usize = 960;
/// Largest packet we let libopus write (RFC 6716 §3.4: 1275 bytes per frame).
const MAX_PACKET: usize = 1275;

fn channels_of(channels: u16) -> Result<Channels, CodecError> {
    match channels {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        n => Err(CodecError::InvalidSettings(format!(
            "Opus takes 1 or 2 channels, not {n}"
        ))),
    }
}

fn opus_err(e: ::opus::Error) -> CodecError {
    CodecError::Opus(e.to_string())
}

/// Opus encoder tuned for speech over lossy networks.
pub struct OpusEncoder {
    encoder: ::opus::Encoder,
    channels: u16,
    pending: PacketAccumulator,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// A 48 kHz encoder for 1 or 2 channels at `bitrate_bps`, VoIP mode, in-band FEC on, and
    /// an expected packet loss of 10% until [`OpusEncoder::set_packet_loss_percent`] says
    /// otherwise (FEC only spends bits when loss is expected).
    pub fn new(channels: u16, bitrate_bps: u32) -> Result<Self, CodecError> {
        let mut encoder =
            ::opus::Encoder::new(SAMPLE_RATE, channels_of(channels)?, Application::Voip)
                .map_err(opus_err)?;
        encoder.set_inband_fec(true).map_err(opus_err)?;
        encoder.set_packet_loss_perc(10).map_err(opus_err)?;
        let mut this = Self {
            encoder,
            channels,
            pending: PacketAccumulator::new(SAMPLE_RATE, channels, PACKET_FRAMES),
            out: vec![0; MAX_PACKET],
        };
        this.set_bitrate(bitrate_bps)?;
        Ok(this)
    }

    /// Changes the bitrate (6 kbit/s to 510 kbit/s) for the next packet.
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        if !(6_000..=510_000).contains(&bitrate_bps) {
            return Err(CodecError::InvalidSettings(format!(
                "Opus bitrate {bitrate_bps} is not in 6000..=510000"
            )));
        }
        self.encoder
            .set_bitrate(Bitrate::Bits(bitrate_bps as i32))
            .map_err(opus_err)
    }

    /// Tells the encoder how much loss to expect (0–100 %), which sets how much FEC it adds.
    pub fn set_packet_loss_percent(&mut self, percent: u8) -> Result<(), CodecError> {
        if percent > 100 {
            return Err(CodecError::InvalidSettings(format!(
                "packet loss {percent}% is over 100%"
            )));
        }
        self.encoder
            .set_packet_loss_perc(i32::from(percent))
            .map_err(opus_err)
    }

    /// Whether in-band FEC is on (it is, unless libopus refused).
    pub fn fec_enabled(&mut self) -> Result<bool, CodecError> {
        self.encoder.get_inband_fec().map_err(opus_err)
    }
}

impl AudioEncoder for OpusEncoder {
    fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedAudio>, CodecError> {
        if frame.sample_rate != SAMPLE_RATE
            || frame.channels != self.channels
            || !frame
                .samples
                .len()
                .is_multiple_of(usize::from(self.channels))
        {
            return Err(CodecError::AudioFormat {
                codec: AudioCodec::Opus,
                need_rate: SAMPLE_RATE,
                need_channels: self.channels,
                got_rate: frame.sample_rate,
                got_channels: frame.channels,
            });
        }
        let mut packets = Vec::new();
        for pcm in self.pending.push(frame) {
            let len = self
                .encoder
                .encode(&pcm.samples, &mut self.out)
                .map_err(opus_err)?;
            packets.push(EncodedAudio {
                codec: AudioCodec::Opus,
                data: self.out.get(..len).unwrap_or_default().to_vec(),
                frames: PACKET_FRAMES as u32,
                sequence: pcm.sequence,
                capture_time: pcm.capture_time,
            });
        }
        Ok(packets)
    }

    fn codec(&self) -> AudioCodec {
        AudioCodec::Opus
    }
}

/// Opus decoder at 48 kHz with loss concealment.
pub struct OpusDecoder {
    decoder: ::opus::Decoder,
    channels: u16,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// Longest packet duration Opus allows: 120 ms at 48 kHz.
const MAX_FRAMES: usize = 5760;

impl OpusDecoder {
    /// A 48 kHz decoder producing 1 or 2 interleaved channels.
    pub fn new(channels: u16) -> Result<Self, CodecError> {
        Ok(Self {
            decoder: ::opus::Decoder::new(SAMPLE_RATE, channels_of(channels)?).map_err(opus_err)?,
            channels,
        })
    }

    fn run(&mut self, input: &[u8], frames: usize, fec: bool) -> Result<Vec<i16>, CodecError> {
        let mut out = vec![0i16; frames.min(MAX_FRAMES) * usize::from(self.channels)];
        let n = self
            .decoder
            .decode(input, &mut out, fec)
            .map_err(opus_err)?;
        out.truncate(n * usize::from(self.channels));
        Ok(out)
    }

    /// Decodes one packet to interleaved PCM.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, CodecError> {
        if packet.is_empty() {
            return Err(CodecError::Opus("empty packet".to_owned()));
        }
        self.run(packet, MAX_FRAMES, false)
    }

    /// Conceals a lost packet of `frames` samples per channel (packet loss concealment).
    pub fn decode_lost(&mut self, frames: usize) -> Result<Vec<i16>, CodecError> {
        self.run(&[], frames, false)
    }

    /// Rebuilds a lost packet of `frames` samples per channel from the FEC data carried in
    /// `next`, the packet that followed it; falls back to concealment when `next` carries
    /// none. Decode `next` itself afterwards as usual.
    pub fn decode_fec(&mut self, next: &[u8], frames: usize) -> Result<Vec<i16>, CodecError> {
        self.run(next, frames, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::sine;

    /// SNR after finding the codec delay by searching the lag with the least error.
    fn aligned_snr_db(reference: &[i16], decoded: &[i16], channels: usize) -> f64 {
        let mut best = f64::MIN;
        for lag in 0..600 {
            let lag = lag * channels;
            let n = reference.len().min(decoded.len().saturating_sub(lag));
            // Skip the first 100 ms while the encoder starts up.
            let skip = 4800 * channels;
            if n <= skip {
                continue;
            }
            let (mut s, mut e) = (0f64, 0f64);
            for i in skip..n {
                let a = f64::from(reference[i]);
                let b = f64::from(decoded[i + lag]);
                s += a * a;
                e += (a - b) * (a - b);
            }
            best = best.max(10.0 * (s / e.max(1e-9)).log10());
        }
        best
    }

    fn encode_tone(
        channels: u16,
        blocks: u64,
        block_frames: usize,
    ) -> (Vec<i16>, Vec<EncodedAudio>) {
        let mut enc = OpusEncoder::new(channels, 64_000).unwrap();
        assert!(enc.fec_enabled().unwrap());
        let mut sent = Vec::new();
        let mut packets = Vec::new();
        for b in 0..blocks {
            let f = sine(
                48_000,
                channels,
                440.0,
                0.5,
                b * block_frames as u64,
                block_frames,
            );
            sent.extend_from_slice(&f.samples);
            packets.extend(enc.encode(&f).unwrap());
        }
        (sent, packets)
    }

    #[test]
    fn ten_ms_blocks_make_20_ms_packets_and_round_trip() {
        for channels in [1u16, 2] {
            let (sent, packets) = encode_tone(channels, 100, 480); // 1 s in 10 ms blocks
            assert_eq!(packets.len(), 50);
            for (i, p) in packets.iter().enumerate() {
                assert_eq!(p.frames, 960);
                assert_eq!(p.sequence, 2 * i as u64);
                assert!(!p.data.is_empty() && p.data.len() <= MAX_PACKET);
            }
            let mut dec = OpusDecoder::new(channels).unwrap();
            let mut got = Vec::new();
            for p in &packets {
                let pcm = dec.decode(&p.data).unwrap();
                assert_eq!(pcm.len(), 960 * usize::from(channels));
                got.extend(pcm);
            }
            let snr = aligned_snr_db(&sent, &got, usize::from(channels));
            // A 440 Hz tone at 64 kbit/s comes back well above 20 dB.
            assert!(snr > 20.0, "{channels} channel(s): SNR {snr:.1} dB");
        }
    }

    #[test]
    fn odd_block_sizes_accumulate() {
        let mut enc = OpusEncoder::new(1, 32_000).unwrap();
        let mut n = 0;
        for b in 0..30u64 {
            n += enc
                .encode(&sine(48_000, 1, 300.0, 0.3, b * 331, 331))
                .unwrap()
                .len();
        }
        assert_eq!(n, 30 * 331 / 960);
    }

    fn energy(pcm: &[i16]) -> f64 {
        pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64
    }

    #[test]
    fn lost_packets_are_concealed_or_rebuilt_from_fec() {
        let (_, packets) = encode_tone(1, 50, 960);
        let tone_energy = {
            let mut d = OpusDecoder::new(1).unwrap();
            let all: Vec<i16> = packets[..20]
                .iter()
                .flat_map(|p| d.decode(&p.data).unwrap())
                .collect();
            energy(&all[9600..])
        };
        // PLC: packet 20 lost, nothing after it yet.
        let mut plc = OpusDecoder::new(1).unwrap();
        for p in &packets[..20] {
            plc.decode(&p.data).unwrap();
        }
        let concealed = plc.decode_lost(960).unwrap();
        assert_eq!(concealed.len(), 960);
        let ratio = energy(&concealed) / tone_energy;
        assert!(
            ratio > 0.3,
            "concealment energy only {ratio:.2} of the tone's"
        );
        assert!(!plc.decode(&packets[21].data).unwrap().is_empty());

        // FEC: packet 20 lost, packet 21 arrived and carries it.
        let mut fec = OpusDecoder::new(1).unwrap();
        let mut reference = OpusDecoder::new(1).unwrap();
        for p in &packets[..20] {
            fec.decode(&p.data).unwrap();
            reference.decode(&p.data).unwrap();
        }
        let rebuilt = fec.decode_fec(&packets[21].data, 960).unwrap();
        assert_eq!(rebuilt.len(), 960);
        let truth = reference.decode(&packets[20].data).unwrap();
        let err: f64 = truth
            .iter()
            .zip(&rebuilt)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            / 960.0;
        let snr = 10.0 * (energy(&truth) / err.max(1e-9)).log10();
        assert!(snr > 3.0, "FEC rebuilt packet SNR {snr:.1} dB");
        assert!(energy(&rebuilt) / tone_energy > 0.3);
        assert!(!fec.decode(&packets[21].data).unwrap().is_empty());
    }

    #[test]
    fn wrong_format_and_settings_are_refused() {
        let mut enc = OpusEncoder::new(1, 32_000).unwrap();
        assert!(matches!(
            enc.encode(&sine(16_000, 1, 440.0, 0.5, 0, 160)),
            Err(CodecError::AudioFormat {
                need_rate: 48_000,
                got_rate: 16_000,
                ..
            })
        ));
        assert!(enc.encode(&sine(48_000, 2, 440.0, 0.5, 0, 480)).is_err());
        assert!(enc.set_bitrate(1_000).is_err());
        assert!(enc.set_packet_loss_percent(101).is_err());
        enc.set_packet_loss_percent(20).unwrap();
        assert!(OpusEncoder::new(3, 32_000).is_err());
        let mut dec = OpusDecoder::new(1).unwrap();
        assert!(dec.decode(&[]).is_err());
        // Garbage must give an error or noise, never a crash.
        let _ = dec.decode(&[0xff; 7]);
    }
}

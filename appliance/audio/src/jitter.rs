//! A sans-IO adaptive jitter buffer: RTP-like packets in (sequence number, timestamp, arrival
//! time, payload), 10 ms frames of decoded audio out, pulled at the sound card's pace.
//!
//! - **Target delay** follows the network: the 95th percentile of each packet's delay relative
//!   to the fastest packet of the last five seconds, plus one packet's duration, kept within
//!   [`JitterSettings::min_delay_ms`]..=[`JitterSettings::max_delay_ms`]. A burst ages out of
//!   the window, so the target falls back after it.
//! - **Buffer level** (audio decoded or queued ahead of the speaker) is steered to the target:
//!   when its lowest point over the last half second is a frame above target, one 10 ms frame
//!   is dropped (crossfaded; "accelerate"); when its highest point stays a frame below target,
//!   one concealment frame is inserted ("stretch"); a level far above the target (a burst
//!   after a stall) flushes whole packets at once. The same loop absorbs the clock drift
//!   between the sender and the sound card, which shows up as a slowly rising or falling level.
//! - **Loss**: a packet missing when its turn comes is rebuilt from the next packet's FEC if
//!   the codec can, else concealed; packets arriving after their turn are late and dropped;
//!   repeats are duplicates and dropped. Every case is counted in [`JitterStats`].
//!
//! Nothing here reads a clock: arrival times come in with the packets, and the caller pulls
//! one frame per 10 ms of its output device.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::decoder::PayloadDecoder;

/// Limits of the adaptive delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterSettings {
    /// Smallest target delay, ms.
    pub min_delay_ms: u32,
    /// Largest target delay, ms (the buffer never aims higher, however bad the network).
    pub max_delay_ms: u32,
}

impl Default for JitterSettings {
    fn default() -> Self {
        Self {
            min_delay_ms: 20,
            max_delay_ms: 300,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets offered.
    pub packets: u64,
    /// Packets that came after their turn to play had passed.
    pub late: u64,
    /// Packets already held or played.
    pub duplicate: u64,
    /// Empty or undecodable payloads.
    pub invalid: u64,
    /// Packets never received by their turn.
    pub lost: u64,
    /// Lost packets rebuilt from the next packet's forward error correction.
    pub fec_recovered: u64,
    /// Samples of concealment played (lost packets, underruns, stretches).
    pub concealed_samples: u64,
    /// Times the buffer ran empty while playing.
    pub underruns: u64,
    /// 10 ms frames dropped to shrink the buffer.
    pub accelerated: u64,
    /// 10 ms frames inserted to grow the buffer.
    pub stretched: u64,
    /// Packets flushed at once after a burst pushed the level far above target.
    pub flushed: u64,
    /// Times the stream restarted (a sequence jump a sender restart explains).
    pub resets: u64,
    /// Frames pulled.
    pub frames: u64,
    /// Frames of silence before the first packet filled the buffer.
    pub waiting_frames: u64,
    /// Playout delay after the last pull, ms: audio buffered ahead of the speaker plus the
    /// frame just pulled.
    pub playout_delay_ms: f64,
    /// Highest level at a pull, ms.
    pub max_playout_delay_ms: f64,
    /// Sum of levels at every playing pull, ms (divide by `frames - waiting_frames` for the mean).
    pub playout_delay_sum_ms: f64,
    /// Target delay in force, ms.
    pub target_delay_ms: f64,
}

impl JitterStats {
    /// Mean playout delay over every pull since playing started, ms.
    pub fn mean_playout_delay_ms(&self) -> f64 {
        let n = self.frames.saturating_sub(self.waiting_frames);
        if n == 0 {
            0.0
        } else {
            self.playout_delay_sum_ms / n as f64
        }
    }
}

/// What a pulled frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Decoded audio (possibly with a crossfaded drop inside).
    Decoded,
    /// At least partly made up by concealment.
    Concealed,
    /// Silence: nothing to play yet.
    Waiting,
}

/// One 10 ms frame out of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playout {
    /// Mono PCM at the decoder's clock rate.
    pub samples: Vec<i16>,
    /// Where it came from.
    pub kind: FrameKind,
}

/// What [`JitterBuffer::insert`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Queued.
    Queued,
    /// Its turn has passed.
    Late,
    /// Already held or played.
    Duplicate,
    /// Empty payload.
    Invalid,
}

#[derive(Debug)]
struct Packet {
    timestamp: u64,
    payload: Vec<u8>,
}

/// How far back the delay statistics look.
const DELAY_WINDOW: Duration = Duration::from_secs(5);
/// Pulls over which the level's low point is taken (one second).
const LEVEL_WINDOW: usize = 100;
/// Pulls to wait after an adjustment before the next.
const COOLDOWN_PULLS: u32 = 3;
/// Level above target beyond which whole packets are flushed, ms.
const FLUSH_ABOVE_MS: u32 = 200;
/// Packets held at most.
const MAX_PACKETS: usize = 500;
/// A sequence jump beyond this restarts the stream.
const MAX_SEQ_JUMP: u64 = 1_000;
/// Longest stretch of audio one lost packet may stand for (120 ms, Opus's longest packet).
const MAX_PACKET_MS: u64 = 120;

/// Unwraps a wrapping counter of `bits` bits to 64 bits, nearest to `reference`.
fn unwrap_counter(value: u64, reference: Option<u64>, bits: u32) -> u64 {
    let span = 1u64 << bits;
    let Some(r) = reference else {
        // Start one span up, so that a wrap backwards stays positive.
        return span + value;
    };
    let base = r & !(span - 1);
    [
        base.saturating_sub(span) | value,
        base | value,
        (base + span) | value,
    ]
    .into_iter()
    .min_by_key(|&c| c.abs_diff(r))
    .unwrap_or(base | value)
}

/// The jitter buffer with its decoder (see the module docs).
pub struct JitterBuffer {
    settings: JitterSettings,
    decoder: Box<dyn PayloadDecoder>,
    rate: u32,
    frame: usize,
    packets: BTreeMap<u64, Packet>,
    highest_seq: Option<u64>,
    highest_ts: Option<u64>,
    next_seq: Option<u64>,
    next_ts: u64,
    packet_samples: usize,
    pcm: VecDeque<i16>,
    playing: bool,
    epoch: Option<Instant>,
    delays: VecDeque<(Instant, f64)>,
    target_samples: usize,
    levels: VecDeque<usize>,
    cooldown: u32,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("codec", &self.decoder.name())
            .field("packets", &self.packets.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl JitterBuffer {
    /// An empty buffer decoding with `decoder`.
    pub fn new(decoder: Box<dyn PayloadDecoder>, settings: JitterSettings) -> Self {
        let rate = decoder.clock_rate().max(100);
        let frame = rate as usize / 100;
        let settings = JitterSettings {
            min_delay_ms: settings.min_delay_ms.clamp(10, 1_000),
            max_delay_ms: settings
                .max_delay_ms
                .clamp(settings.min_delay_ms.clamp(10, 1_000), 2_000),
        };
        let mut this = Self {
            settings,
            decoder,
            rate,
            frame,
            packets: BTreeMap::new(),
            highest_seq: None,
            highest_ts: None,
            next_seq: None,
            next_ts: 0,
            packet_samples: 2 * frame,
            pcm: VecDeque::new(),
            playing: false,
            epoch: None,
            delays: VecDeque::new(),
            target_samples: 0,
            levels: VecDeque::new(),
            cooldown: 0,
            stats: JitterStats::default(),
        };
        this.target_samples = this.ms_to_samples(f64::from(settings.min_delay_ms));
        this.stats.target_delay_ms = f64::from(settings.min_delay_ms);
        this
    }

    /// Samples per second of the frames pulled.
    pub fn clock_rate(&self) -> u32 {
        self.rate
    }

    /// Samples in one pulled frame (10 ms).
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The decoder's name.
    pub fn codec(&self) -> &'static str {
        self.decoder.name()
    }

    fn ms_to_samples(&self, ms: f64) -> usize {
        (ms * f64::from(self.rate) / 1000.0).round().max(0.0) as usize
    }

    fn samples_to_ms(&self, samples: usize) -> f64 {
        samples as f64 * 1000.0 / f64::from(self.rate)
    }

    /// Offers one packet: `sequence` and `timestamp` as in its RTP header (timestamp in
    /// samples at the decoder's clock rate), `arrival` when it came off the network.
    pub fn insert(
        &mut self,
        sequence: u16,
        timestamp: u32,
        arrival: Instant,
        payload: &[u8],
    ) -> Inserted {
        self.stats.packets += 1;
        if payload.is_empty() {
            self.stats.invalid += 1;
            return Inserted::Invalid;
        }
        let seq = unwrap_counter(u64::from(sequence), self.highest_seq, 16);
        let ts = unwrap_counter(u64::from(timestamp), self.highest_ts, 32);
        if let Some(next) = self.next_seq
            && seq.abs_diff(next) > MAX_SEQ_JUMP
        {
            self.reset();
            self.stats.resets += 1;
        }
        let seq = if self.highest_seq.is_none() {
            unwrap_counter(u64::from(sequence), None, 16)
        } else {
            seq
        };
        let ts = if self.highest_ts.is_none() {
            unwrap_counter(u64::from(timestamp), None, 32)
        } else {
            ts
        };
        if let Some(next) = self.next_seq {
            if seq < next {
                if self.playing {
                    self.stats.late += 1;
                    return Inserted::Late;
                }
                // Reordered before playing began: start from the earlier one.
                self.next_seq = Some(seq);
                self.next_ts = ts;
            }
        } else {
            self.next_seq = Some(seq);
            self.next_ts = ts;
        }
        if self.packets.contains_key(&seq) {
            self.stats.duplicate += 1;
            return Inserted::Duplicate;
        }
        if self.highest_seq.is_none_or(|h| seq > h) {
            if let (Some(h), Some(hts)) = (self.highest_seq, self.highest_ts)
                && seq == h + 1
                && ts > hts
                && ts - hts <= MAX_PACKET_MS * u64::from(self.rate) / 1000
            {
                self.packet_samples = (ts - hts) as usize;
            }
            self.highest_seq = Some(seq);
            self.highest_ts = Some(ts);
        }
        self.record_delay(ts, arrival);
        self.packets.insert(
            seq,
            Packet {
                timestamp: ts,
                payload: payload.to_vec(),
            },
        );
        while self.packets.len() > MAX_PACKETS {
            if let Some((&first, _)) = self.packets.first_key_value() {
                self.drop_packet(first);
                self.stats.flushed += 1;
            }
        }
        Inserted::Queued
    }

    fn reset(&mut self) {
        self.packets.clear();
        self.highest_seq = None;
        self.highest_ts = None;
        self.next_seq = None;
        self.delays.clear();
        self.epoch = None;
        self.levels.clear();
    }

    fn drop_packet(&mut self, seq: u64) {
        if let Some(p) = self.packets.remove(&seq)
            && self.next_seq == Some(seq)
        {
            self.next_seq = Some(seq + 1);
            self.next_ts = p.timestamp + self.packet_samples as u64;
        }
    }

    fn record_delay(&mut self, ts: u64, arrival: Instant) {
        let epoch = *self.epoch.get_or_insert(arrival);
        let arrived_ms = if arrival >= epoch {
            arrival.duration_since(epoch).as_secs_f64() * 1000.0
        } else {
            -(epoch.duration_since(arrival).as_secs_f64() * 1000.0)
        };
        let transit = arrived_ms - ts as f64 * 1000.0 / f64::from(self.rate);
        self.delays.push_back((arrival, transit));
        while let Some(&(t, _)) = self.delays.front() {
            if arrival.saturating_duration_since(t) > DELAY_WINDOW {
                self.delays.pop_front();
            } else {
                break;
            }
        }
        let fastest = self
            .delays
            .iter()
            .map(|d| d.1)
            .fold(f64::INFINITY, f64::min);
        let mut relative: Vec<f64> = self.delays.iter().map(|d| d.1 - fastest).collect();
        relative.sort_by(f64::total_cmp);
        let p95 = relative
            .get((relative.len().saturating_sub(1)) * 95 / 100)
            .copied()
            .unwrap_or(0.0);
        let target_ms = (p95 + self.samples_to_ms(self.packet_samples)).clamp(
            f64::from(self.settings.min_delay_ms),
            f64::from(self.settings.max_delay_ms),
        );
        self.target_samples = self.ms_to_samples(target_ms);
        self.stats.target_delay_ms = target_ms;
    }

    /// Audio ahead of the speaker: decoded and not yet played, plus what the queued packets
    /// cover up to the end of the newest.
    fn level(&self) -> usize {
        let queued = match self.packets.last_key_value() {
            Some((_, p)) => {
                (p.timestamp + self.packet_samples as u64).saturating_sub(self.next_ts) as usize
            }
            None => 0,
        };
        self.pcm.len() + queued
    }

    /// Decodes (or conceals) the next packet into `pcm`; false if nothing is queued.
    fn decode_next(&mut self, concealed: &mut bool) -> bool {
        let Some(next) = self.next_seq else {
            return false;
        };
        let Some((&first, _)) = self.packets.first_key_value() else {
            return false;
        };
        if first == next {
            let Some(packet) = self.packets.remove(&first) else {
                return false;
            };
            match self.decoder.decode(&packet.payload) {
                Ok(pcm) if !pcm.is_empty() => {
                    self.next_ts = packet.timestamp + pcm.len() as u64;
                    self.pcm.extend(pcm);
                }
                _ => {
                    self.stats.invalid += 1;
                    *concealed = true;
                    let n = self.packet_samples;
                    self.stats.concealed_samples += n as u64;
                    self.pcm.extend(self.decoder.conceal(n));
                    self.next_ts = packet.timestamp + n as u64;
                }
            }
            self.next_seq = Some(first + 1);
            return true;
        }
        // `next` is missing and later packets are here: it is lost.
        let Some(later) = self.packets.get(&first) else {
            return false;
        };
        let missing = (first - next).max(1);
        let gap = later.timestamp.saturating_sub(self.next_ts) / missing;
        let max = MAX_PACKET_MS as usize * self.rate as usize / 1000;
        let n = if gap == 0 || gap as usize > max {
            self.packet_samples
        } else {
            gap as usize
        };
        let recovered = if first == next + 1 {
            let payload = later.payload.clone();
            self.decoder.recover(&payload, n)
        } else {
            None
        };
        self.stats.lost += 1;
        match recovered {
            Some(pcm) => {
                self.stats.fec_recovered += 1;
                self.pcm.extend(pcm);
            }
            None => {
                *concealed = true;
                self.stats.concealed_samples += n as u64;
                self.pcm.extend(self.decoder.conceal(n));
            }
        }
        self.next_seq = Some(next + 1);
        self.next_ts += n as u64;
        true
    }

    /// Drops one frame from the front of `pcm`, crossfading over its last 2.5 ms into what
    /// follows so the cut does not click.
    fn drop_frame(&mut self) {
        let fade = self.frame / 4;
        let n = self.frame;
        if self.pcm.len() < n + fade {
            return;
        }
        for i in 0..fade {
            let w = (i + 1) as f32 / (fade + 1) as f32;
            let head = f32::from(self.pcm[i]);
            let tail = f32::from(self.pcm[n + i]);
            self.pcm[n + i] = (head * (1.0 - w) + tail * w) as i16;
        }
        self.pcm.drain(..n);
        self.stats.accelerated += 1;
    }

    /// The next 10 ms frame. Call once per 10 ms of the output device's clock.
    pub fn pull(&mut self) -> Playout {
        self.stats.frames += 1;
        let frame = self.frame;
        let level = self.level();
        if !self.playing {
            if self.next_seq.is_some() && level >= self.target_samples {
                self.playing = true;
            } else {
                self.stats.waiting_frames += 1;
                return Playout {
                    samples: vec![0; frame],
                    kind: FrameKind::Waiting,
                };
            }
        }
        self.levels.push_back(level);
        if self.levels.len() > LEVEL_WINDOW {
            self.levels.pop_front();
        }
        let mut concealed = false;
        let low = self.levels.iter().copied().min().unwrap_or(level);
        let target = self.target_samples;
        // Where the low point of the level should sit: the jitter margin, since a packet's
        // worth above it comes and goes with every arrival.
        let desired = target.saturating_sub(self.packet_samples);
        self.cooldown = self.cooldown.saturating_sub(1);

        if level > target + self.ms_to_samples(f64::from(FLUSH_ABOVE_MS)) {
            // A stall released a burst: play from near the newest audio rather than
            // seconds behind it.
            let mut flushed = 0usize;
            while self.level() > target + frame {
                let Some((&first, _)) = self.packets.first_key_value() else {
                    break;
                };
                self.drop_packet(first);
                if self.next_seq != Some(first + 1) {
                    self.next_seq = Some(first + 1);
                }
                self.stats.flushed += 1;
                flushed += 1;
            }
            if flushed > 0 {
                tracing::debug!(flushed, "jitter buffer: flushed a burst");
            }
            self.levels.clear();
        } else if self.cooldown == 0
            && self.levels.len() >= LEVEL_WINDOW / 5
            && low > desired + 3 * frame
        {
            while self.pcm.len() < 2 * frame && self.decode_next(&mut concealed) {}
            if self.pcm.len() >= frame + frame / 4 {
                self.drop_frame();
                for l in self.levels.iter_mut() {
                    *l = l.saturating_sub(frame);
                }
                self.cooldown = COOLDOWN_PULLS;
            }
        } else if self.cooldown == 0 && self.levels.len() >= LEVEL_WINDOW && low + frame <= desired
        {
            // Steadily below target (the sound card runs faster than the sender, or the
            // target rose): one frame of concealment after what is decoded, where the
            // decoder's concealment continues the audio naturally.
            let extra = self.decoder.conceal(frame);
            self.pcm.extend(extra);
            self.stats.stretched += 1;
            self.stats.concealed_samples += frame as u64;
            concealed = true;
            for l in self.levels.iter_mut() {
                *l += frame;
            }
            self.cooldown = COOLDOWN_PULLS;
        }

        while self.pcm.len() < frame {
            if !self.decode_next(&mut concealed) {
                // Nothing queued: conceal and wait, the late audio plays when it comes.
                self.stats.underruns += 1;
                let n = frame - self.pcm.len();
                self.stats.concealed_samples += n as u64;
                self.pcm.extend(self.decoder.conceal(n));
                concealed = true;
            }
        }
        let samples: Vec<i16> = self.pcm.drain(..frame).collect();
        // The delay the next audio will wait, after any adjustment: what is left plus the
        // frame just handed to the device.
        self.stats.playout_delay_ms = self.samples_to_ms(self.level() + frame);
        self.stats.max_playout_delay_ms = self
            .stats
            .max_playout_delay_ms
            .max(self.stats.playout_delay_ms);
        self.stats.playout_delay_sum_ms += self.stats.playout_delay_ms;
        Playout {
            samples,
            kind: if concealed {
                FrameKind::Concealed
            } else {
                FrameKind::Decoded
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_unwrap_across_the_wrap() {
        let a = unwrap_counter(65_535, None, 16);
        let b = unwrap_counter(0, Some(a), 16);
        assert_eq!(b, a + 1);
        let c = unwrap_counter(65_534, Some(b), 16);
        assert_eq!(c + 2, b);
        let t = unwrap_counter(u64::from(u32::MAX) - 959, None, 32);
        assert_eq!(unwrap_counter(0, Some(t), 32), t + 960);
    }

    /// The fuzz target's loop (`fuzz/fuzz_targets/jitter_buffer.rs`) on pseudo-random input:
    /// hostile sequence numbers, timestamps, gaps and payloads never break the frame size.
    #[test]
    fn hostile_packet_streams_never_panic() {
        use crate::decoder::{G711PayloadDecoder, OpusPayloadDecoder};
        use telecart_core::media::AudioCodec;
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40 {
            let decoder: Box<dyn PayloadDecoder> = if round % 2 == 0 {
                Box::new(G711PayloadDecoder::new(AudioCodec::Pcmu).unwrap())
            } else {
                Box::new(OpusPayloadDecoder::new().unwrap())
            };
            let mut jb = JitterBuffer::new(decoder, JitterSettings::default());
            let start = Instant::now();
            let mut now = Duration::ZERO;
            let (mut seq, mut ts) = (next() as u16, next() as u32);
            for _ in 0..300 {
                let r = next();
                // Mostly plausible steps, sometimes wild jumps.
                seq = if r % 7 == 0 {
                    next() as u16
                } else {
                    seq.wrapping_add((r % 3) as u16)
                };
                ts = if r % 11 == 0 {
                    next() as u32
                } else {
                    ts.wrapping_add((r % 2000) as u32)
                };
                now += Duration::from_millis((r >> 8) % 60);
                let len = ((r >> 16) % 200) as usize;
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                jb.insert(seq, ts, start + now, &payload);
                for _ in 0..(r >> 24) % 5 {
                    assert_eq!(jb.pull().samples.len(), jb.frame_samples());
                }
            }
            assert!(jb.packets.len() <= MAX_PACKETS);
        }
    }
}

//! The jitter buffer on virtual time: a sender emits 20 ms packets on its own clock, a network
//! delays (with jitter), loses, reorders and duplicates them, and a sound card pulls 10 ms
//! frames on a clock that drifts from the sender's. Real decoders (Opus, G.711) decode.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use telecart_audio::jitter::{FrameKind, JitterBuffer, JitterSettings, JitterStats};
use telecart_audio::{G711PayloadDecoder, OpusPayloadDecoder};
use telecart_codec::{AudioEncoder, G711Encoder, OpusEncoder};
use telecart_core::media::{AudioCodec, AudioFrame, CaptureTime};

/// A small deterministic generator (xorshift64*), so traces repeat exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
struct Network {
    base_ms: f64,
    /// Jitter: an exponential delay with this mean, on top of the base.
    jitter_mean_ms: f64,
    loss: f64,
    duplicate: f64,
    /// A stall from `at` for `len`: packets sent meanwhile all arrive when it ends.
    stall: Option<(Duration, Duration)>,
}

struct Arrival {
    at: Duration,
    seq: u16,
    ts: u32,
    payload: Vec<u8>,
}

/// Packets of `seconds` of a 300 Hz tone with a slow level change, as `codec` encodes them.
fn packets(codec: AudioCodec, seconds: u32) -> (Vec<Vec<u8>>, u32) {
    let (rate, mut encoder): (u32, Box<dyn AudioEncoder>) = match codec {
        AudioCodec::Opus => (48_000, Box::new(OpusEncoder::new(1, 32_000).unwrap())),
        other => (8_000, Box::new(G711Encoder::new(other).unwrap())),
    };
    let block = rate as usize / 100;
    let mut out = Vec::new();
    for b in 0..u64::from(seconds) * 100 {
        let samples = (0..block)
            .map(|i| {
                let t = (b as usize * block + i) as f64 / f64::from(rate);
                (8000.0
                    * (1.0 + 0.5 * (t * 0.7).sin())
                    * (2.0 * std::f64::consts::PI * 300.0 * t).sin()) as i16
            })
            .collect();
        let frame = AudioFrame {
            sample_rate: rate,
            channels: 1,
            samples,
            sequence: b,
            capture_time: CaptureTime(b * 10_000),
        };
        out.extend(encoder.encode(&frame).unwrap().into_iter().map(|p| p.data));
    }
    (out, rate)
}

fn trace(
    payloads: &[Vec<u8>],
    rate: u32,
    net: Network,
    rng: &mut Rng,
) -> (Vec<Arrival>, usize, usize) {
    let mut arrivals = Vec::new();
    let (mut lost, mut duplicated) = (0, 0);
    let samples = rate / 50;
    for (i, payload) in payloads.iter().enumerate() {
        let sent = Duration::from_millis(20 * i as u64);
        if rng.unit() < net.loss {
            lost += 1;
            continue;
        }
        let jitter = -net.jitter_mean_ms * (1.0 - rng.unit()).ln();
        let mut at = sent + Duration::from_secs_f64((net.base_ms + jitter) / 1000.0);
        if let Some((start, len)) = net.stall
            && at >= start
            && at < start + len
        {
            at = start + len;
        }
        let seq = (40_000 + i) as u16; // wraps past 65535 during long traces
        let ts = (u32::MAX - 100 * samples).wrapping_add(i as u32 * samples);
        if rng.unit() < net.duplicate {
            duplicated += 1;
            arrivals.push(Arrival {
                at: at + Duration::from_millis(7),
                seq,
                ts,
                payload: payload.clone(),
            });
        }
        arrivals.push(Arrival {
            at,
            seq,
            ts,
            payload: payload.clone(),
        });
    }
    arrivals.sort_by_key(|a| a.at);
    (arrivals, lost, duplicated)
}

/// Runs the trace with the sound card's clock `drift_ppm` parts per million faster than the
/// sender's (negative: slower); returns the stats and the playout delay at every pull.
fn play(
    jb: &mut JitterBuffer,
    arrivals: &[Arrival],
    seconds: f64,
    drift_ppm: f64,
) -> (JitterStats, Vec<f64>, Vec<FrameKind>) {
    let start = Instant::now();
    let pull_every = 0.010 / (1.0 + drift_ppm * 1e-6);
    let pulls = (seconds / pull_every) as u64;
    let mut next = 0;
    let mut delays = Vec::new();
    let mut kinds = Vec::new();
    for k in 0..pulls {
        let now = Duration::from_secs_f64(k as f64 * pull_every);
        while next < arrivals.len() && arrivals[next].at <= now {
            let a = &arrivals[next];
            jb.insert(a.seq, a.ts, start + a.at, &a.payload);
            next += 1;
        }
        let out = jb.pull();
        assert_eq!(out.samples.len(), jb.frame_samples());
        kinds.push(out.kind);
        delays.push(jb.stats().playout_delay_ms);
    }
    (jb.stats(), delays, kinds)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[test]
fn opus_with_jitter_loss_reordering_and_duplicates_is_counted() {
    let (payloads, rate) = packets(AudioCodec::Opus, 60);
    let net = Network {
        base_ms: 40.0,
        jitter_mean_ms: 15.0,
        loss: 0.05,
        duplicate: 0.02,
        stall: None,
    };
    let mut rng = Rng(0x5eed);
    let (arrivals, lost, duplicated) = trace(&payloads, rate, net, &mut rng);
    let reordered = arrivals
        .windows(2)
        .filter(|w| w[1].seq.wrapping_sub(w[0].seq) > 32_768)
        .count();
    assert!(reordered > 50, "the trace must reorder: {reordered}");
    let mut jb = JitterBuffer::new(
        Box::new(OpusPayloadDecoder::new().unwrap()),
        JitterSettings::default(),
    );
    let (s, delays, kinds) = play(&mut jb, &arrivals, 60.0, 0.0);
    println!(
        "opus 60 s, 5% loss, 2% duplicates, jitter exp(15 ms): sent {} lost-in-network {lost} duplicated {duplicated} reordered {reordered}\n{s:#?}\nmean playout delay {:.1} ms",
        payloads.len(),
        s.mean_playout_delay_ms()
    );
    // Every packet the network lost is accounted for as lost (or was late and counted so).
    assert!(
        s.lost + s.late >= lost as u64,
        "lost {} late {} < {lost}",
        s.lost,
        s.late
    );
    assert!(s.lost <= (lost as u64) + s.late + 5);
    // FEC rebuilt some of them (the next packet came in time and carried it).
    assert!(
        s.fec_recovered > lost as u64 / 4,
        "FEC recovered only {}",
        s.fec_recovered
    );
    assert_eq!(
        s.duplicate + s.late.min(duplicated as u64),
        s.duplicate + s.late.min(duplicated as u64)
    );
    assert!(
        s.duplicate >= duplicated as u64 / 2,
        "duplicates {} of {duplicated}",
        s.duplicate
    );
    assert!(s.concealed_samples > 0);
    // The target covers the jitter (p95 of exp(15 ms) is ~45 ms), the delay follows it.
    assert!(
        s.target_delay_ms > 40.0 && s.target_delay_ms < 120.0,
        "target {}",
        s.target_delay_ms
    );
    let m = mean(&delays[1000..]);
    assert!(m > 30.0 && m < 130.0, "mean playout delay {m:.1} ms");
    // Mostly real audio: late packets are rare with the target at the 95th percentile.
    let concealed = kinds.iter().filter(|k| **k == FrameKind::Concealed).count();
    assert!(
        concealed < kinds.len() / 8,
        "{concealed} of {} frames concealed",
        kinds.len()
    );
    assert!(s.late < payloads.len() as u64 / 20, "late {}", s.late);
}

#[test]
fn clock_drift_over_ten_virtual_minutes_does_not_accumulate() {
    let (payloads, rate) = packets(AudioCodec::Pcmu, 600);
    for drift_ppm in [300.0, -300.0] {
        let net = Network {
            base_ms: 30.0,
            jitter_mean_ms: 5.0,
            loss: 0.01,
            duplicate: 0.0,
            stall: None,
        };
        let mut rng = Rng(42);
        let (arrivals, _, _) = trace(&payloads, rate, net, &mut rng);
        let mut jb = JitterBuffer::new(
            Box::new(G711PayloadDecoder::new(AudioCodec::Pcmu).unwrap()),
            JitterSettings::default(),
        );
        let (s, delays, _) = play(&mut jb, &arrivals, 599.0, drift_ppm);
        let first = mean(&delays[1000..7000]);
        let last = mean(&delays[delays.len() - 6000..]);
        println!(
            "drift {drift_ppm:+} ppm over 10 min: mean delay first minute {first:.1} ms, last minute {last:.1} ms, accelerated {} stretched {} underruns {} target {:.1} max {:.1}",
            s.accelerated, s.stretched, s.underruns, s.target_delay_ms, s.max_playout_delay_ms
        );
        // 300 ppm over 600 s is 180 ms of clock difference: without compensation the delay
        // would grow or starve by that much. It stays within a frame or two of where it was.
        assert!(
            (last - first).abs() < 25.0,
            "delay moved from {first:.1} to {last:.1} ms"
        );
        if drift_ppm > 0.0 {
            // The card runs fast: frames were stretched in.
            assert!(s.stretched + s.underruns >= 10, "{s:?}");
        } else {
            assert!(s.accelerated >= 10, "{s:?}");
        }
        assert!(s.max_playout_delay_ms < 200.0);
    }
}

#[test]
fn the_buffer_shrinks_back_after_a_stall_releases_a_burst() {
    let (payloads, rate) = packets(AudioCodec::Pcma, 40);
    let stall = (Duration::from_secs(10), Duration::from_millis(800));
    let net = Network {
        base_ms: 30.0,
        jitter_mean_ms: 3.0,
        loss: 0.0,
        duplicate: 0.0,
        stall: Some(stall),
    };
    let mut rng = Rng(7);
    let (arrivals, _, _) = trace(&payloads, rate, net, &mut rng);
    let mut jb = JitterBuffer::new(
        Box::new(G711PayloadDecoder::new(AudioCodec::Pcma).unwrap()),
        JitterSettings::default(),
    );
    let (s, delays, _) = play(&mut jb, &arrivals, 39.0, 0.0);
    let before = mean(&delays[500..1000]);
    let peak = delays[1000..1200].iter().copied().fold(0.0, f64::max);
    let after = mean(&delays[2500..3000]); // 14 s after the stall ended
    println!(
        "stall 800 ms: delay before {before:.1} ms, peak {peak:.1} ms, 14 s later {after:.1} ms; {s:?}"
    );
    assert!(s.underruns > 0, "the stall must have starved the buffer");
    assert!(
        peak > before + 50.0,
        "the burst must have filled the buffer"
    );
    assert!(peak < 300.0 + 60.0, "no runaway latency: peak {peak:.1} ms");
    assert!(
        after < before + 20.0,
        "did not shrink back: {before:.1} -> {after:.1} ms"
    );
}

//! Echo cancellation through the real capture chain: far-end speech (the bundled espeak-ng
//! clip) is "played", comes back to the microphone through a synthetic room (delayed 50 to
//! 200 ms, attenuated, with reflections) on top of noise, then near-end speech (espeak-ng,
//! another voice) joins (double talk) and goes on alone. The echo return loss enhancement is
//! measured after convergence, and the near-end speech must come through.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use telecart_audio::capture::NoiseSuppressor;
use telecart_audio::{CaptureChain, CaptureSettings, FRAME_SAMPLES, MuteControl};
use telecart_core::media::{AudioFrame, CaptureTime};

const RATE: usize = 48_000;

/// The room: the direct path and three reflections, `delay_ms` after the speaker.
fn echo_path(far: &[f32], delay_ms: usize, gain: f32) -> Vec<f32> {
    let d = delay_ms * RATE / 1000;
    let taps = [(0usize, 1.0f32), (150, 0.45), (340, -0.25), (700, 0.12)];
    let mut out = vec![0f32; far.len()];
    for (i, o) in out.iter_mut().enumerate() {
        for &(t, g) in &taps {
            if let Some(j) = i.checked_sub(d + t) {
                *o += far[j] * g * gain;
            }
        }
    }
    out
}

fn to_frame(x: &[f32], seq: u64) -> AudioFrame {
    AudioFrame {
        sample_rate: 48_000,
        channels: 1,
        samples: x
            .iter()
            .map(|&v| (v * 32768.0).clamp(-32768.0, 32767.0) as i16)
            .collect(),
        sequence: seq,
        capture_time: CaptureTime(seq * 10_000),
    }
}

struct Run {
    erle_db: f64,
    near_only_level_db: f64,
    near_only_corr: f64,
    double_talk_corr: f64,
    reported_erle: Option<f64>,
    reported_delay: Option<i32>,
}

fn run(delay_ms: usize, settings: CaptureSettings, far: &[f32], near: &[f32]) -> Run {
    let far_only = 18 * RATE;
    let total = far_only + 2 * near.len() + RATE / 2;
    // Far end: the demo speech looped until the near end speaks alone.
    let far_signal: Vec<f32> = (0..total)
        .map(|i| {
            if i < far_only + near.len() {
                far[i % far.len()] * 0.7
            } else {
                0.0
            }
        })
        .collect();
    let echo = echo_path(&far_signal, delay_ms, 0.5);
    let mut near_signal = vec![0f32; total];
    near_signal[far_only..far_only + near.len()].copy_from_slice(near);
    near_signal[far_only + near.len()..far_only + 2 * near.len()].copy_from_slice(near);
    let noise = pink_noise(total, 0.002, &mut Rng(99));
    let mic: Vec<f32> = (0..total)
        .map(|i| echo[i] + near_signal[i] * 0.5 + noise[i])
        .collect();

    let mut chain = CaptureChain::new(settings, MuteControl::default()).unwrap();
    let far_end = chain.far_end();
    let mut out = Vec::with_capacity(total);
    for (k, (f, m)) in far_signal
        .chunks_exact(FRAME_SAMPLES)
        .zip(mic.chunks_exact(FRAME_SAMPLES))
        .enumerate()
    {
        far_end.push(f);
        for frame in chain.process(&to_frame(m, k as u64)).unwrap().frames {
            out.extend(frame.samples.iter().map(|&s| f32::from(s) / 32768.0));
        }
    }
    let stats = chain.stats();
    // Any processing delay of the chain, found on the near-end-only stretch.
    let near_only = far_only + near.len() + RATE / 2..far_only + 2 * near.len();
    let (lag, near_only_corr) = best_lag(
        &near_signal[near_only.clone()],
        &out[near_only.start..],
        2_000,
    );
    // ERLE over far-end-only 10 ms frames with echo, after 6 s of convergence.
    let (mut e_in, mut e_out) = (0f64, 0f64);
    for k in (6 * RATE / FRAME_SAMPLES)..(far_only / FRAME_SAMPLES) {
        let r = k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES;
        let ein = energy(&echo[r.clone()]);
        if ein > 1e-4 * FRAME_SAMPLES as f64 * 1e-2 {
            e_in += energy(&mic[r.clone()]);
            e_out += energy(&out[r.start + lag..r.end + lag]);
        }
    }
    let near_level = db(energy(&out[near_only.start + lag..near_only.end])
        / energy(
            &(near_signal[near_only.clone()]
                .iter()
                .map(|x| x * 0.5)
                .collect::<Vec<_>>()),
        ));
    let dt = far_only + RATE..far_only + near.len();
    let (_, double_talk_corr) = best_lag(&near_signal[dt.clone()], &out[dt.start..], lag + 8);
    Run {
        erle_db: db(e_in / e_out.max(1e-12)),
        near_only_level_db: near_level,
        near_only_corr,
        double_talk_corr,
        reported_erle: stats.erle_db,
        reported_delay: stats.echo_delay_ms,
    }
}

#[test]
fn echo_is_cancelled_and_the_near_end_comes_through() {
    let dir = tempfile::tempdir().unwrap();
    let Some(near) = espeak_48k(
        "The patient is resting comfortably. Oxygen saturation is ninety eight percent.",
        dir.path(),
    ) else {
        return;
    };
    let far = demo_speech_48k();
    let aec_only = CaptureSettings {
        noise_suppression: NoiseSuppressor::Off,
        automatic_gain: false,
        ..CaptureSettings::default()
    };
    for delay_ms in [50, 120, 200] {
        // The echo canceller alone (high-pass + AEC3), then the whole default chain.
        let a = run(delay_ms, aec_only, &far, &near);
        println!(
            "echo delay {delay_ms} ms, AEC3 alone: ERLE {:.1} dB (AEC3 reports {:?} dB, delay {:?} ms); near end alone: level {:+.1} dB, correlation {:.2}; double talk correlation {:.2}",
            a.erle_db,
            a.reported_erle,
            a.reported_delay,
            a.near_only_level_db,
            a.near_only_corr,
            a.double_talk_corr
        );
        assert!(
            a.erle_db >= 20.0,
            "delay {delay_ms} ms, AEC3 alone: ERLE {:.1} dB",
            a.erle_db
        );
        assert!(
            a.near_only_corr > 0.7,
            "delay {delay_ms} ms, AEC3 alone: near end correlation {:.2}",
            a.near_only_corr
        );
        assert!(
            a.near_only_level_db.abs() < 3.0,
            "near end level {:+.1} dB",
            a.near_only_level_db
        );
        let r = run(delay_ms, CaptureSettings::default(), &far, &near);
        println!(
            "echo delay {delay_ms} ms, whole chain (+ RNNoise + AGC2): ERLE {:.1} dB (AEC3 reports {:?} dB, delay {:?} ms); near end alone: level {:+.1} dB, correlation {:.2}; double talk correlation {:.2}",
            r.erle_db,
            r.reported_erle,
            r.reported_delay,
            r.near_only_level_db,
            r.near_only_corr,
            r.double_talk_corr
        );
        assert!(
            r.erle_db >= 20.0,
            "delay {delay_ms} ms: ERLE {:.1} dB",
            r.erle_db
        );
        assert!(
            r.near_only_corr > 0.7,
            "delay {delay_ms} ms: near end correlation {:.2}",
            r.near_only_corr
        );
        assert!(
            r.near_only_level_db > -10.0,
            "delay {delay_ms} ms: near end level {:+.1} dB",
            r.near_only_level_db
        );
        assert!(
            r.double_talk_corr > 0.3,
            "delay {delay_ms} ms: double-talk correlation {:.2}",
            r.double_talk_corr
        );
    }
}

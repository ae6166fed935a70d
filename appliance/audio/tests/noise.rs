//! Noise suppression through the real capture chain: espeak-ng speech (the bundled clip) in a
//! patient room's noise (pink ventilation noise, 50 Hz mains hum with harmonics, a monitor's
//! 1 kHz beeps) comes out with a better signal-to-noise ratio.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use telecart_audio::capture::NoiseSuppressor;
use telecart_audio::{CaptureChain, CaptureSettings, FRAME_SAMPLES, MuteControl};
use telecart_core::media::{AudioFrame, CaptureTime};

const RATE: usize = 48_000;

fn room_noise(n: usize) -> Vec<f32> {
    let pink = pink_noise(n, 0.03, &mut Rng(1234));
    (0..n)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            let hum: f32 = [(50.0, 0.01), (100.0, 0.006), (150.0, 0.004)]
                .iter()
                .map(|(f, a)| a * (2.0 * std::f32::consts::PI * f * t).sin())
                .sum();
            // A monitor beeps for 100 ms every 1.3 s.
            let beep = if (t % 1.3) < 0.1 {
                0.02 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin()
            } else {
                0.0
            };
            pink[i] + hum + beep
        })
        .collect()
}

/// SNR from speech-active and speech-absent 10 ms frames (chosen on the clean speech):
/// power of the active frames less the noise power, over the noise power.
fn snr_db(clean: &[f32], signal: &[f32]) -> f64 {
    let frames = clean.len().min(signal.len()) / FRAME_SAMPLES;
    let peak = (0..frames)
        .map(|k| energy(&clean[k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES]))
        .fold(0.0, f64::max);
    let (mut active, mut na, mut quiet, mut nq) = (0f64, 0usize, 0f64, 0usize);
    for k in 0..frames {
        let r = k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES;
        let e = energy(&clean[r.clone()]);
        if e > peak * 1e-2 {
            active += energy(&signal[r]);
            na += 1;
        } else if e < peak * 1e-6 {
            quiet += energy(&signal[r]);
            nq += 1;
        }
    }
    let noise = quiet / nq.max(1) as f64;
    let speech = (active / na.max(1) as f64 - noise).max(1e-20);
    db(speech / noise.max(1e-20))
}

fn process(settings: CaptureSettings, mic: &[f32]) -> Vec<f32> {
    let mut chain = CaptureChain::new(settings, MuteControl::default()).unwrap();
    let mut out = Vec::with_capacity(mic.len());
    for (k, m) in mic.chunks_exact(FRAME_SAMPLES).enumerate() {
        let frame = AudioFrame {
            sample_rate: 48_000,
            channels: 1,
            samples: m
                .iter()
                .map(|&v| (v * 32768.0).clamp(-32768.0, 32767.0) as i16)
                .collect(),
            sequence: k as u64,
            capture_time: CaptureTime(k as u64 * 10_000),
        };
        for f in chain.process(&frame).unwrap().frames {
            out.extend(f.samples.iter().map(|&s| f32::from(s) / 32768.0));
        }
    }
    out
}

#[test]
fn suppression_improves_the_snr_of_speech_in_room_noise() {
    let speech = demo_speech_48k();
    // Twice, so the suppressor's adaptation is judged on the second pass too.
    let clean: Vec<f32> = speech
        .iter()
        .chain(speech.iter())
        .map(|x| x * 0.5)
        .collect();
    let noise = room_noise(clean.len());
    let mic: Vec<f32> = clean.iter().zip(&noise).map(|(s, n)| s + n).collect();
    let before = snr_db(&clean, &mic);
    let mut results = Vec::new();
    for (name, ns) in [
        ("RNNoise", NoiseSuppressor::Rnnoise),
        ("WebRTC NS", NoiseSuppressor::Webrtc),
        ("none", NoiseSuppressor::Off),
    ] {
        let settings = CaptureSettings {
            noise_suppression: ns,
            automatic_gain: false,
            ..CaptureSettings::default()
        };
        let out = process(settings, &mic);
        let (lag, corr) = best_lag(&clean[RATE..RATE * 8], &out[RATE..], 2_000);
        let after = snr_db(&clean[..out.len() - lag], &out[lag..]);
        println!(
            "{name}: SNR {before:.1} dB -> {after:.1} dB ({:+.1} dB), speech correlation {corr:.2}, lag {lag}",
            after - before
        );
        results.push((ns, after - before, corr));
    }
    let (_, rnnoise_gain, rnnoise_corr) = results[0];
    assert!(
        rnnoise_gain >= 10.0,
        "RNNoise improved the SNR by only {rnnoise_gain:.1} dB"
    );
    assert!(
        rnnoise_corr > 0.6,
        "speech damaged: correlation {rnnoise_corr:.2}"
    );
    // The high-pass filter alone takes the hum: some gain, far less than a suppressor's.
    assert!(results[2].1 < rnnoise_gain - 5.0);
    assert!(
        results[1].1 >= 5.0,
        "WebRTC NS improved only {:.1} dB",
        results[1].1
    );
}

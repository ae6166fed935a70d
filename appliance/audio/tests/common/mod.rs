//! Speech, noise and measurements shared by the signal tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use telecart_audio::StreamResampler;

/// The bundled espeak-ng speech of the devices crate (16 kHz mono), at 48 kHz in -1..1.
pub(crate) fn demo_speech_48k() -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../devices/assets/demo-speech.wav");
    wav_48k(&path)
}

/// Speech espeak-ng says now (a different voice and text than the demo's), at 48 kHz; `None`
/// (after a loud message) when espeak-ng is not installed.
pub(crate) fn espeak_48k(text: &str, dir: &Path) -> Option<Vec<f32>> {
    let out: PathBuf = dir.join("espeak.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-gb+f3", "-s", "150", "-w"])
        .arg(&out)
        .arg(text)
        .status();
    match status {
        Ok(s) if s.success() => Some(wav_48k(&out)),
        other => {
            eprintln!(
                "\n*** SKIPPED: espeak-ng is not available ({other:?}); install it (.ci/debian-packages.d/audio) ***\n"
            );
            None
        }
    }
}

/// A mono or multi-channel 16-bit WAV, first channel, converted to 48 kHz.
pub(crate) fn wav_48k(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let ch = usize::from(spec.channels);
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .step_by(ch)
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    resample(&samples, spec.sample_rate, 48_000)
}

pub(crate) fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut r = StreamResampler::new(from, to).unwrap();
    r.push(x).unwrap();
    // Flush the last partial chunk and the resampler's delay.
    r.push(&vec![0.0; from as usize / 10]).unwrap();
    let delay = r.delay();
    let n = r.available();
    let out = r.pop(n).unwrap();
    let want = x.len() * to as usize / from as usize;
    out[delay..(delay + want).min(out.len())].to_vec()
}

/// xorshift64*, for repeatable noise.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in -1..1.
    pub(crate) fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Pink-ish noise (Paul Kellet's economy filter on white noise), RMS about `rms`.
pub(crate) fn pink_noise(n: usize, rms: f32, rng: &mut Rng) -> Vec<f32> {
    let (mut b0, mut b1, mut b2) = (0f32, 0f32, 0f32);
    let raw: Vec<f32> = (0..n)
        .map(|_| {
            let w = rng.uniform();
            b0 = 0.99765 * b0 + w * 0.099_046;
            b1 = 0.963 * b1 + w * 0.296_516_4;
            b2 = 0.57 * b2 + w * 1.052_691_3;
            b0 + b1 + b2 + w * 0.1848
        })
        .collect();
    let r = (raw.iter().map(|x| x * x).sum::<f32>() / n as f32).sqrt();
    raw.into_iter().map(|x| x * rms / r).collect()
}

pub(crate) fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

pub(crate) fn db(ratio: f64) -> f64 {
    10.0 * ratio.max(1e-20).log10()
}

/// The lag (0..max_lag) at which `y` best matches `x`, and the normalized correlation there.
pub(crate) fn best_lag(x: &[f32], y: &[f32], max_lag: usize) -> (usize, f64) {
    let mut best = (0, f64::MIN);
    for lag in (0..max_lag).step_by(4) {
        let n = x.len().min(y.len().saturating_sub(lag));
        let (mut xy, mut xx, mut yy) = (0f64, 1e-12, 1e-12);
        for i in (0..n).step_by(2) {
            let a = f64::from(x[i]);
            let b = f64::from(y[i + lag]);
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
        let c = xy / (xx * yy).sqrt();
        if c > best.1 {
            best = (lag, c);
        }
    }
    // Refine around the coarse lag.
    let coarse = best.0;
    for lag in coarse.saturating_sub(4)..(coarse + 4).min(max_lag) {
        let n = x.len().min(y.len().saturating_sub(lag));
        let (mut xy, mut xx, mut yy) = (0f64, 1e-12, 1e-12);
        for i in 0..n {
            let a = f64::from(x[i]);
            let b = f64::from(y[i + lag]);
            xy += a * b;
            xx += a * a;
            yy += b * b;
        }
        let c = xy / (xx * yy).sqrt();
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

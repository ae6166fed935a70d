//! Synthetic input for tests and benchmarks: pictures with real motion and detail, and tones.
//!
//! Encoders behave very differently on flat or static pictures (a still frame costs nearly
//! nothing), so the picture here scrolls a diagonal gradient, moves a block across it and
//! sprinkles fixed-seed noise on top, which keeps the rate controller busy.

use telecart_core::media::{AudioFrame, CaptureTime, VideoFrame};

/// A small deterministic generator (xorshift64*), so every run sees the same pictures.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// A generator from a seed (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Frame `index` of a moving picture at `fps`: a gradient scrolling right and down by 3 and
/// 2 pixels a frame, a bright block moving across it, chroma bands, and ±12 of noise on luma.
/// Width and height must be even (I420).
pub fn moving_frame(width: u32, height: u32, index: u64, fps: u32) -> VideoFrame {
    let (w, h) = (width as usize, height as usize);
    let mut data = vec![0u8; VideoFrame::i420_len(width, height)];
    let mut noise = Noise::new(index.wrapping_add(1).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let dx = (index as usize).wrapping_mul(3);
    let dy = (index as usize).wrapping_mul(2);
    let block = (w / 8).max(2);
    let bx = (index as usize * 7) % w.max(1);
    let by = h / 3;
    let (luma, chroma) = data.split_at_mut(w * h);
    for y in 0..h {
        let row = &mut luma[y * w..(y + 1) * w];
        for (x, px) in row.iter_mut().enumerate() {
            let g = ((x + dx) + (y + dy) * 2) % 220;
            let in_block = x >= bx && x < bx + block && y >= by && y < by + block;
            let base = if in_block { 235 } else { 16 + g };
            let n = (noise.next_u64() % 25) as i32 - 12;
            *px = (base as i32 + n).clamp(0, 255) as u8;
        }
    }
    let (cw, ch) = (w / 2, h / 2);
    let (u, v) = chroma.split_at_mut(cw * ch);
    for y in 0..ch {
        for x in 0..cw {
            u[y * cw + x] = (64 + ((x + dx / 2) % 128)) as u8;
            v[y * cw + x] = (64 + ((y + dy / 2) % 128)) as u8;
        }
    }
    let micros = index * 1_000_000 / u64::from(fps.max(1));
    VideoFrame {
        width,
        height,
        data,
        sequence: index,
        capture_time: CaptureTime(1_700_000_000_000_000 + micros),
    }
}

/// `frames` samples per channel of a sine at `freq_hz` and `amplitude` (of full scale),
/// starting at sample `start`, the same on every channel.
pub fn sine(
    sample_rate: u32,
    channels: u16,
    freq_hz: f64,
    amplitude: f64,
    start: u64,
    frames: usize,
) -> AudioFrame {
    let mut samples = Vec::with_capacity(frames * channels as usize);
    for i in 0..frames {
        let t = (start + i as u64) as f64 / f64::from(sample_rate);
        let s = (amplitude * 32767.0 * (2.0 * std::f64::consts::PI * freq_hz * t).sin()) as i16;
        for _ in 0..channels {
            samples.push(s);
        }
    }
    AudioFrame {
        sample_rate,
        channels,
        samples,
        sequence: start / frames.max(1) as u64,
        capture_time: CaptureTime(start * 1_000_000 / u64::from(sample_rate.max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_are_valid_i420() {
        let a = moving_frame(64, 48, 0, 30);
        let b = moving_frame(64, 48, 1, 30);
        assert_eq!(a.data.len(), VideoFrame::i420_len(64, 48));
        assert_ne!(a.data, b.data);
        assert_eq!(b.capture_time.micros_since(a.capture_time), 33_333);
        assert_eq!(moving_frame(64, 48, 5, 30), moving_frame(64, 48, 5, 30));
    }
}

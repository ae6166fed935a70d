//! A cheap moving test picture: scrolling colour bars, a scrolling luma ramp and a
//! bouncing chequered box, under the stamp strip.

use telecart_core::{CaptureTime, VideoFrame};

use crate::code::{MIN_WIDTH, paint_stamp, strip_height};
use crate::{Stamp, StampError};

/// Largest width or height the generator accepts (8K UHD is 7680x4320).
pub const MAX_DIMENSION: u32 = 8192;

/// 75% colour bars in BT.601 video range: white, yellow, cyan, green, magenta, red, blue.
const BARS: [(u8, u8, u8); 7] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
];

/// Pixels the bars move left, and the ramp right, per frame.
const SCROLL_PER_FRAME: u64 = 4;
/// Pixels the box moves per frame across and down.
const BOX_STEP_X: u64 = 6;
const BOX_STEP_Y: u64 = 4;

/// Generator of a moving, stamped I420 test picture.
///
/// From top to bottom: the stamp strip ([`strip_height`] rows), 75% colour bars
/// scrolling left, and a luma ramp scrolling right; a chequered orange box bounces
/// over both. Every position depends only on the sequence number, so a frame can be
/// rendered again identically. Rendering is a handful of row copies and fills:
/// see the crate's benchmark for its cost.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: u32,
    height: u32,
    /// Rows of the stamp strip.
    strip: usize,
    /// First row of the picture below it: `strip` rounded up to even, so that chroma
    /// rows line up with luma row pairs.
    top: usize,
    ramp_top: usize,
    bars: [Vec<u8>; 3],
    ramp: Vec<u8>,
    box_size: usize,
    square: usize,
}

impl TestPattern {
    /// A generator of `width` x `height` pictures.
    ///
    /// Both must be even and at most [`MAX_DIMENSION`]; the width at least
    /// [`MIN_WIDTH`] (160) and the height at least twice the stamp strip
    /// (`width / 4`), e.g. 160x120, 640x480, 1280x720, 3840x2160.
    pub fn new(width: u32, height: u32) -> Result<Self, StampError> {
        let fits = width.is_multiple_of(2)
            && height.is_multiple_of(2)
            && (MIN_WIDTH..=MAX_DIMENSION).contains(&width)
            && height <= MAX_DIMENSION
            && height >= 2 * strip_height(width);
        if !fits {
            return Err(StampError::BadSize { width, height });
        }
        let (w, h) = (width as usize, height as usize);
        let strip = strip_height(width) as usize;
        let top = strip.next_multiple_of(2);
        let ramp_top = (top + (h - top) * 2 / 3) & !1;

        let bar_of = |x: usize| BARS[x * BARS.len() / w];
        let bars_y = (0..w).map(|x| bar_of(x).0).collect();
        let bars_u = (0..w / 2).map(|x| bar_of(2 * x).1).collect();
        let bars_v = (0..w / 2).map(|x| bar_of(2 * x).2).collect();
        // A triangle from 16 up to 235 and back, so it wraps around seamlessly when scrolled.
        let ramp = (0..w)
            .map(|x| {
                let t = if 2 * x < w { 2 * x } else { 2 * (w - x) };
                (16 + t * 219 / w) as u8
            })
            .collect();

        let box_size = (w.min(h - top) / 4) & !1;
        let square = (box_size / 6).max(2) & !1;
        Ok(Self {
            width,
            height,
            strip,
            top,
            ramp_top,
            bars: [bars_y, bars_u, bars_v],
            ramp,
            box_size,
            square,
        })
    }

    /// Width of the pictures in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height of the pictures in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Renders frame `sequence`, stamped with `sequence` and `capture_time`.
    pub fn render(&self, sequence: u64, capture_time: CaptureTime) -> VideoFrame {
        let mut frame = VideoFrame {
            width: self.width,
            height: self.height,
            data: Vec::new(),
            sequence,
            capture_time,
        };
        self.render_into(&mut frame, sequence, capture_time);
        frame
    }

    /// Renders frame `sequence` into `frame`, reusing its buffer: no allocation once the
    /// buffer has the right size. Sets the frame's size, sequence and capture time.
    pub fn render_into(&self, frame: &mut VideoFrame, sequence: u64, capture_time: CaptureTime) {
        frame.width = self.width;
        frame.height = self.height;
        frame.sequence = sequence;
        frame.capture_time = capture_time;
        frame
            .data
            .resize(VideoFrame::i420_len(self.width, self.height), 0);

        let (w, h) = (self.width as usize, self.height as usize);
        let scroll = ((sequence % (w as u64 / 2)) * SCROLL_PER_FRAME % w as u64) as usize;
        let (y_plane, u_plane, v_plane) = frame.planes_mut();

        // Bars scroll left, the ramp scrolls right: rows are rotated copies of one template
        // row. They start right under the strip, so that every byte of the frame is written.
        for y in self.strip..h {
            let line = &mut y_plane[y * w..(y + 1) * w];
            if y < self.ramp_top {
                rotated_copy(line, &self.bars[0], scroll);
            } else {
                rotated_copy(line, &self.ramp, w - scroll);
            }
        }
        for cy in self.top / 2..h / 2 {
            let range = cy * (w / 2)..(cy + 1) * (w / 2);
            if 2 * cy < self.ramp_top {
                rotated_copy(&mut u_plane[range.clone()], &self.bars[1], scroll / 2);
                rotated_copy(&mut v_plane[range], &self.bars[2], scroll / 2);
            } else {
                u_plane[range.clone()].fill(128);
                v_plane[range].fill(128);
            }
        }

        // The box bounces between the edges of the picture below the strip.
        let bx = bounce(sequence, BOX_STEP_X, w - self.box_size) & !1;
        let by = self.top + (bounce(sequence, BOX_STEP_Y, h - self.top - self.box_size) & !1);
        for y in by..by + self.box_size {
            let line = &mut y_plane[y * w + bx..y * w + bx + self.box_size];
            let odd_row = ((y - by) / self.square) % 2 == 1;
            for (i, chunk) in line.chunks_mut(self.square).enumerate() {
                let light = (i % 2 == 1) != odd_row;
                chunk.fill(if light { 210 } else { 60 });
            }
        }
        for cy in by / 2..(by + self.box_size) / 2 {
            let range = cy * (w / 2) + bx / 2..cy * (w / 2) + (bx + self.box_size) / 2;
            u_plane[range.clone()].fill(84);
            v_plane[range].fill(190);
        }

        // Stamp strip: black and white cells on grey chroma. `new` checked that the strip fits.
        let stamp = Stamp {
            sequence,
            capture_time,
        };
        paint_stamp(y_plane, self.width, w, stamp);
        u_plane[..self.top / 2 * (w / 2)].fill(128);
        v_plane[..self.top / 2 * (w / 2)].fill(128);
    }
}

/// `dst[i] = src[(i + shift) % len]`: `src` rotated left by `shift`, as two copies.
fn rotated_copy(dst: &mut [u8], src: &[u8], shift: usize) {
    let shift = shift % src.len().max(1);
    let (head, tail) = src.split_at(shift);
    dst[..tail.len()].copy_from_slice(tail);
    dst[tail.len()..].copy_from_slice(head);
}

/// A triangle wave: `sequence * step` folded back and forth over `0..=range`, without overflow.
fn bounce(sequence: u64, step: u64, range: usize) -> usize {
    if range == 0 {
        return 0;
    }
    let period = 2 * range as u64;
    let p = ((sequence % period) * step % period) as usize;
    if p <= range { p } else { 2 * range - p }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_stamp;

    const NOW: CaptureTime = CaptureTime(1_773_000_000_123_456);

    #[test]
    fn accepts_even_sizes_from_160x120_to_4k_and_refuses_the_rest() {
        for (w, h) in [
            (160, 120),
            (160, 40),
            (320, 240),
            (1280, 720),
            (3840, 2160),
            (8192, 8192),
        ] {
            assert!(TestPattern::new(w, h).is_ok(), "{w}x{h}");
        }
        for (w, h) in [
            (161, 120),
            (160, 121),
            (158, 120),
            (160, 38),
            (8194, 4320),
            (640, 8194),
            (0, 0),
        ] {
            assert_eq!(
                TestPattern::new(w, h).map(|_| ()),
                Err(StampError::BadSize {
                    width: w,
                    height: h
                }),
                "{w}x{h}"
            );
        }
    }

    #[test]
    fn every_size_carries_its_stamp() {
        for (w, h) in [
            (160, 120),
            (160, 40),
            (322, 240),
            (640, 480),
            (1280, 720),
            (3840, 2160),
        ] {
            let pattern = TestPattern::new(w, h).unwrap();
            for sequence in [0, 1, u64::from(u32::MAX) + 5, u64::MAX] {
                let time = CaptureTime(NOW.0 + sequence % 1000);
                let frame = pattern.render(sequence, time);
                assert_eq!((frame.width, frame.height), (w, h));
                assert_eq!((frame.sequence, frame.capture_time), (sequence, time));
                assert_eq!(frame.data.len(), VideoFrame::i420_len(w, h));
                let stamp = decode_stamp(frame.planes().0, w, h, w as usize).unwrap();
                assert_eq!((stamp.sequence, stamp.capture_time), (sequence, time));
            }
        }
    }

    #[test]
    fn the_picture_moves_and_renders_again_identically() {
        let pattern = TestPattern::new(640, 480).unwrap();
        let strip = strip_height(640) as usize * 640;
        let a = pattern.render(10, NOW);
        let b = pattern.render(11, NOW);
        let changed = a.data[strip..]
            .iter()
            .zip(&b.data[strip..])
            .filter(|(x, y)| x != y)
            .count();
        // Bars, ramp and box all moved: a good part of the picture changed.
        assert!(changed > a.data.len() / 10, "only {changed} bytes changed");
        assert_eq!(pattern.render(10, NOW).data, a.data);
    }

    #[test]
    fn render_into_reuses_the_buffer() {
        let pattern = TestPattern::new(1280, 720).unwrap();
        let mut frame = pattern.render(0, NOW);
        let before = frame.data.as_ptr();
        pattern.render_into(&mut frame, 1, NOW);
        assert_eq!(frame.data.as_ptr(), before);
        assert_eq!(frame, pattern.render(1, NOW));

        // A frame of another size is resized to this one.
        let mut other = VideoFrame::black(320, 240, 0, NOW).unwrap();
        pattern.render_into(&mut other, 1, NOW);
        assert_eq!(other, pattern.render(1, NOW));

        // Every byte is written, whatever the buffer held: 168 wide has an odd strip (21 rows).
        for (w, h) in [(168, 120), (640, 480)] {
            let pattern = TestPattern::new(w, h).unwrap();
            let mut dirty = pattern.render(0, NOW);
            dirty.data.fill(0xA5);
            pattern.render_into(&mut dirty, 5, NOW);
            assert_eq!(dirty, pattern.render(5, NOW), "{w}x{h}");
        }
    }

    #[test]
    fn the_strip_has_grey_chroma_and_the_picture_colour() {
        let frame = TestPattern::new(640, 480).unwrap().render(0, NOW);
        let (_, u, v) = frame.planes();
        let strip_chroma = strip_height(640) as usize / 2 * 320;
        assert!(
            u[..strip_chroma]
                .iter()
                .chain(&v[..strip_chroma])
                .all(|&c| c == 128)
        );
        assert!(u[strip_chroma..].iter().any(|&c| c != 128));
    }
}

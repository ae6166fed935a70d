//! The stamp itself: where its cells lie, how they are written and how they are read back.

use telecart_core::{CaptureTime, VideoFrame};

use crate::{Stamp, StampError};
use crc32fast::hash as crc32;

/// Cells across the width of the picture.
pub const COLUMNS: u32 = 40;
/// Rows of cells in the strip.
pub const ROWS: u32 = 5;
/// Narrowest picture that can carry a stamp: every cell is at least 4x4 pixels.
pub const MIN_WIDTH: u32 = 4 * COLUMNS;

const CELLS: usize = (COLUMNS * ROWS) as usize;
const HEAD_BITS: usize = 16;
const HEAD: u64 = 0xD271;
const DATA_BITS: usize = 128;
const CRC_BITS: usize = 32;
const TAIL_BITS: usize = CELLS - HEAD_BITS - DATA_BITS - CRC_BITS;
const TAIL: u64 = 0x4D_B1C6;
const _: () = assert!(TAIL_BITS == 24 && TAIL < 1 << TAIL_BITS && HEAD < 1 << HEAD_BITS);

/// Luma of a white cell (top of BT.601 video range).
pub(crate) const WHITE: u8 = 235;
/// Luma of a black cell (bottom of BT.601 video range).
pub(crate) const BLACK: u8 = 16;
/// Least difference between the mean white and mean black marker cells for a strip to count as found.
const MIN_CONTRAST: u32 = 64;

/// Height in pixels of the stamp strip along the top of a picture `width` pixels wide.
///
/// Cells are square, `width / 40` pixels a side (positions are rounded so that the
/// 40 columns span the whole width), and there are 5 rows of them: the strip is
/// `5 * width / 40` pixels tall, `width / 8`.
pub fn strip_height(width: u32) -> u32 {
    edge(width, ROWS)
}

/// Position of the `i`th cell boundary in a picture `width` wide (same rule across and down).
fn edge(width: u32, i: u32) -> u32 {
    // i <= ROWS.max(COLUMNS), so this never overflows u64 and the result fits in u32
    // (it is at most width when i <= COLUMNS, and at most width/8 for rows).
    (u64::from(width) * u64::from(i) / u64::from(COLUMNS)) as u32
}

/// The bits of the strip, in cell order (row by row, left to right).
fn layout(stamp: Stamp) -> [bool; CELLS] {
    let mut bits = [false; CELLS];
    let mut at = 0;
    let mut push = |value: u64, count: usize| {
        for i in (0..count).rev() {
            bits[at] = (value >> i) & 1 == 1;
            at += 1;
        }
    };
    let payload = payload_bytes(stamp.sequence, stamp.capture_time.as_micros());
    push(HEAD, HEAD_BITS);
    push(stamp.sequence, 64);
    push(stamp.capture_time.as_micros(), 64);
    push(u64::from(crc32(&payload)), CRC_BITS);
    push(TAIL, TAIL_BITS);
    bits
}

fn payload_bytes(sequence: u64, capture_micros: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&sequence.to_be_bytes());
    bytes[8..].copy_from_slice(&capture_micros.to_be_bytes());
    bytes
}

/// Whether cell `index` is one of the fixed marker cells, and which value it must have.
fn fixed_bit(index: usize) -> Option<bool> {
    if index < HEAD_BITS {
        Some((HEAD >> (HEAD_BITS - 1 - index)) & 1 == 1)
    } else if index >= CELLS - TAIL_BITS {
        let i = index - (CELLS - TAIL_BITS);
        Some((TAIL >> (TAIL_BITS - 1 - i)) & 1 == 1)
    } else {
        None
    }
}

/// Checks that a luma plane of this geometry is whole and can hold the strip.
fn check_plane(len: usize, width: u32, height: u32, stride: usize) -> Result<(), StampError> {
    if width < MIN_WIDTH || height < strip_height(width) {
        return Err(StampError::TooSmall { width, height });
    }
    let width_px = width as usize;
    if stride < width_px {
        return Err(StampError::BadStride { width, stride });
    }
    // The whole plane must be there: (height - 1) rows of stride, then one row of width.
    let need = (height as usize - 1)
        .checked_mul(stride)
        .and_then(|n| n.checked_add(width_px))
        .ok_or(StampError::ShortBuffer {
            need: usize::MAX,
            got: len,
        })?;
    if len < need {
        return Err(StampError::ShortBuffer { need, got: len });
    }
    Ok(())
}

/// Writes `stamp` as a strip of black and white cells along the top of a luma plane.
///
/// `stride` is the distance in bytes between the starts of two rows. Only the top
/// [`strip_height`]`(width)` rows are touched, but the plane must be whole (`height`
/// rows), at least [`MIN_WIDTH`] wide and at least as tall as the strip.
pub fn write_stamp(
    y_plane: &mut [u8],
    width: u32,
    height: u32,
    stride: usize,
    stamp: Stamp,
) -> Result<(), StampError> {
    check_plane(y_plane.len(), width, height, stride)?;
    paint_stamp(y_plane, width, stride, stamp);
    Ok(())
}

/// [`write_stamp`] without the checks: the caller guarantees the plane holds the strip.
pub(crate) fn paint_stamp(y_plane: &mut [u8], width: u32, stride: usize, stamp: Stamp) {
    let bits = layout(stamp);
    for row in 0..ROWS {
        let (y0, y1) = (edge(width, row) as usize, edge(width, row + 1) as usize);
        for y in y0..y1 {
            let line = &mut y_plane[y * stride..y * stride + width as usize];
            for col in 0..COLUMNS {
                let (x0, x1) = (edge(width, col) as usize, edge(width, col + 1) as usize);
                let bit = bits[(row * COLUMNS + col) as usize];
                line[x0..x1].fill(if bit { WHITE } else { BLACK });
            }
        }
    }
}

/// Stamps `frame` with its own `sequence` and `capture_time`.
///
/// Writes the strip into the luma plane and greys the chroma under it (U = V = 128), so
/// the strip is pure black and white and costs an encoder no colour bits.
pub fn stamp_frame(frame: &mut VideoFrame) -> Result<(), StampError> {
    let (width, height) = (frame.width, frame.height);
    if frame.data.len() != VideoFrame::i420_len(width, height)
        || !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
    {
        return Err(StampError::BadFrame {
            width,
            height,
            len: frame.data.len(),
        });
    }
    let stamp = Stamp {
        sequence: frame.sequence,
        capture_time: frame.capture_time,
    };
    let (y, u, v) = frame.planes_mut();
    write_stamp(y, width, height, width as usize, stamp)?;
    let chroma = (width as usize / 2) * (strip_height(width) as usize).div_ceil(2);
    u[..chroma].fill(128);
    v[..chroma].fill(128);
    Ok(())
}

/// Mean luma of the middle of one cell: a quarter of the cell is left out on every side, so
/// the ringing and deblocking that codecs leave along edges do not count. Large cells are
/// sampled on a grid of at most 16x16 points.
fn cell_mean(y_plane: &[u8], stride: usize, x0: usize, x1: usize, y0: usize, y1: usize) -> u32 {
    let (mx, my) = ((x1 - x0) / 4, (y1 - y0) / 4);
    let (x0, x1, y0, y1) = (x0 + mx, x1 - mx, y0 + my, y1 - my);
    let step_x = ((x1 - x0) / 16).max(1);
    let step_y = ((y1 - y0) / 16).max(1);
    let mut sum = 0u64;
    let mut count = 0u64;
    for y in (y0..y1).step_by(step_y) {
        let line = &y_plane[y * stride..];
        for x in (x0..x1).step_by(step_x) {
            sum += u64::from(line[x]);
            count += 1;
        }
    }
    // count > 0: cells are at least 4x4, leaving at least 2x2 inside.
    (sum / count.max(1)) as u32
}

/// Reads the stamp from the top of a luma plane.
///
/// `width` and `height` are the picture's size in pixels and `stride` the distance in
/// bytes between the starts of two rows (`width` for a tightly packed plane);
/// `y_plane` may run on past the plane (a whole I420 frame will do). The
/// geometry is derived from the width alone, in proportion to it, so a picture scaled
/// on its way (an SFU's lower layer, a receiver's resize) still reads.
///
/// Never panics. A frame without a stamp (black, noise, a real scene) is
/// [`StampError::NoStamp`]; a stamp that is found but damaged is
/// [`StampError::ChecksumMismatch`], never a wrong value.
pub fn decode_stamp(
    y_plane: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<Stamp, StampError> {
    check_plane(y_plane.len(), width, height, stride)?;
    let (means, threshold) = read_cells(y_plane, width, stride)?;
    let bits = means.map(|mean| mean > threshold);
    let misplaced = (0..CELLS)
        .filter(|&i| fixed_bit(i).is_some_and(|want| bits[i] != want))
        .count();
    if misplaced > 0 {
        return Err(StampError::NoStamp);
    }

    let read = |from: usize, count: usize| {
        bits[from..from + count]
            .iter()
            .fold(0u64, |acc, &bit| (acc << 1) | u64::from(bit))
    };
    let sequence = read(HEAD_BITS, 64);
    let capture_micros = read(HEAD_BITS + 64, 64);
    let found = read(HEAD_BITS + DATA_BITS, CRC_BITS) as u32;
    let computed = crc32(&payload_bytes(sequence, capture_micros));
    if found != computed {
        return Err(StampError::ChecksumMismatch { found, computed });
    }
    Ok(Stamp {
        sequence,
        capture_time: CaptureTime(capture_micros),
    })
}

/// Mean luma of every cell, and the black/white threshold calibrated on the marker cells.
fn read_cells(
    y_plane: &[u8],
    width: u32,
    stride: usize,
) -> Result<([u32; CELLS], u32), StampError> {
    let mut means = [0u32; CELLS];
    for row in 0..ROWS {
        let (y0, y1) = (edge(width, row) as usize, edge(width, row + 1) as usize);
        for col in 0..COLUMNS {
            let (x0, x1) = (edge(width, col) as usize, edge(width, col + 1) as usize);
            means[(row * COLUMNS + col) as usize] = cell_mean(y_plane, stride, x0, x1, y0, y1);
        }
    }
    let (mut white_sum, mut black_sum) = (0u32, 0u32);
    let (mut white_n, mut black_n) = (0u32, 0u32);
    for (index, &mean) in means.iter().enumerate() {
        match fixed_bit(index) {
            Some(true) => {
                white_sum += mean;
                white_n += 1;
            }
            Some(false) => {
                black_sum += mean;
                black_n += 1;
            }
            None => {}
        }
    }
    let white = white_sum / white_n.max(1);
    let black = black_sum / black_n.max(1);
    if white < black + MIN_CONTRAST {
        return Err(StampError::NoStamp);
    }
    Ok((means, (white + black) / 2))
}

/// The smallest distance of any cell's mean from the threshold, in luma steps: how close
/// a read came to flipping a bit.
#[cfg(test)]
pub(crate) fn read_margin(y_plane: &[u8], width: u32, stride: usize) -> Option<u32> {
    let (means, threshold) = read_cells(y_plane, width, stride).ok()?;
    means.iter().map(|&m| m.abs_diff(threshold)).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestPattern;

    /// A capture time near now (2026-03).
    const NOW: u64 = 1_773_000_000_123_456;

    /// splitmix64: a small deterministic generator for the property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn stamp(sequence: u64, micros: u64) -> Stamp {
        Stamp {
            sequence,
            capture_time: CaptureTime(micros),
        }
    }

    /// A mid-grey plane with `stamp` written on it.
    fn stamped_plane(width: u32, height: u32, stride: usize, stamp: Stamp) -> Vec<u8> {
        let mut plane = vec![128u8; stride * height as usize];
        write_stamp(&mut plane, width, height, stride, stamp).unwrap();
        plane
    }

    /// Paints cell `index` of a packed plane all `value`.
    fn paint_cell(plane: &mut [u8], width: u32, index: usize, value: u8) {
        let (row, col) = (index as u32 / COLUMNS, index as u32 % COLUMNS);
        for y in edge(width, row)..edge(width, row + 1) {
            let start = (y * width) as usize;
            plane[start + edge(width, col) as usize..start + edge(width, col + 1) as usize]
                .fill(value);
        }
    }

    #[test]
    fn round_trips_exactly_at_many_sizes() {
        let sizes = [
            (160, 120),
            (320, 240),
            (642, 480),
            (640, 480),
            (1000, 562),
            (1280, 720),
            (1920, 1080),
            (3840, 2160),
        ];
        let values = [
            stamp(0, NOW),
            stamp(u64::from(u32::MAX) + 5, NOW + 33_333),
            stamp(u64::MAX, u64::MAX),
            stamp(1, 0),
        ];
        for (width, height) in sizes {
            for value in values {
                let plane = stamped_plane(width, height, width as usize, value);
                assert_eq!(
                    decode_stamp(&plane, width, height, width as usize),
                    Ok(value),
                    "{width}x{height}"
                );
            }
        }
    }

    #[test]
    fn honours_a_stride_wider_than_the_picture() {
        let value = stamp(42, NOW);
        let plane = stamped_plane(640, 480, 704, value);
        assert_eq!(decode_stamp(&plane, 640, 480, 704), Ok(value));
        // Read with the wrong stride, the strip is sheared and not found.
        assert!(decode_stamp(&plane, 640, 480, 640).is_err());
    }

    #[test]
    fn the_strip_is_one_eighth_of_the_width_tall_and_fits_its_cells() {
        assert_eq!(strip_height(1280), 160);
        assert_eq!(strip_height(640), 80);
        assert_eq!(strip_height(160), 20);
        assert_eq!(edge(1280, 1), 32);
        assert_eq!(edge(1001, COLUMNS), 1001);
        // A 16x16 macroblock never straddles two cells at 640 and 1280 wide.
        assert_eq!(edge(640, 1) % 16, 0);
        assert_eq!(edge(1280, 1) % 16, 0);
    }

    #[test]
    fn reads_a_picture_scaled_on_its_way() {
        let value = stamp(7, NOW);
        let plane = stamped_plane(1280, 720, 1280, value);
        for (w, h) in [
            (640, 360),
            (960, 540),
            (1000, 562),
            (320, 180),
            (1920, 1080),
        ] {
            let scaled = crate::h264_tests::scale(&plane, (1280, 720), 1280, (w, h));
            assert_eq!(
                decode_stamp(&scaled, w, h, w as usize),
                Ok(value),
                "{w}x{h}"
            );
        }
    }

    #[test]
    fn a_flipped_cell_is_a_checksum_mismatch_not_a_wrong_value() {
        let value = stamp(1234, NOW);
        // Every single data or checksum cell, flipped.
        for index in HEAD_BITS..CELLS - TAIL_BITS {
            let mut plane = stamped_plane(640, 480, 640, value);
            let bit = layout(value)[index];
            paint_cell(&mut plane, 640, index, if bit { BLACK } else { WHITE });
            assert!(
                matches!(
                    decode_stamp(&plane, 640, 480, 640),
                    Err(StampError::ChecksumMismatch { .. })
                ),
                "cell {index}"
            );
        }
    }

    #[test]
    fn up_to_five_flipped_cells_are_always_caught() {
        // CRC-32 has a Hamming distance of 6 at this message length.
        let mut rng = Rng(1);
        for _ in 0..2000 {
            let value = stamp(rng.next(), rng.next());
            let mut plane = stamped_plane(320, 240, 320, value);
            let mut bits = layout(value);
            for _ in 0..=rng.below(5) {
                let index = HEAD_BITS + rng.below((DATA_BITS + CRC_BITS) as u64) as usize;
                bits[index] = !bits[index];
                paint_cell(
                    &mut plane,
                    320,
                    index,
                    if bits[index] { WHITE } else { BLACK },
                );
            }
            match decode_stamp(&plane, 320, 240, 320) {
                Err(StampError::ChecksumMismatch { .. }) => {}
                // Two flips of the same cell cancel out.
                Ok(read) => assert_eq!(read, value),
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }

    #[test]
    fn a_damaged_marker_means_no_stamp() {
        let mut plane = stamped_plane(640, 480, 640, stamp(5, NOW));
        // The first head cell is white (0xD271 starts with a 1).
        paint_cell(&mut plane, 640, 0, BLACK);
        assert_eq!(
            decode_stamp(&plane, 640, 480, 640),
            Err(StampError::NoStamp)
        );
    }

    #[test]
    fn pictures_without_a_stamp_are_refused() {
        let (w, h) = (640u32, 480u32);
        let n = (w * h) as usize;
        let black = vec![BLACK; n];
        let white = vec![WHITE; n];
        let mut rng = Rng(7);
        let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        // Coarse noise: random black or white 8x8 blocks, which has full contrast.
        let blocks: Vec<u8> = {
            let cells: Vec<u8> = (0..(w / 8 * h / 8))
                .map(|_| if rng.next() & 1 == 1 { WHITE } else { BLACK })
                .collect();
            (0..n)
                .map(|i| cells[(i / w as usize / 8) * (w as usize / 8) + (i % w as usize) / 8])
                .collect()
        };
        let pattern = TestPattern::new(w, h).unwrap();
        let mut scene = pattern.render(3, CaptureTime(NOW)).data;
        scene.truncate(n);
        scene[..(strip_height(w) * w) as usize].fill(90);
        for (name, plane) in [
            ("black", &black),
            ("white", &white),
            ("noise", &noise),
            ("blocks", &blocks),
            ("pattern without strip", &scene),
        ] {
            let got = decode_stamp(plane, w, h, w as usize);
            assert_eq!(got, Err(StampError::NoStamp), "{name}");
        }
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let plane = vec![0u8; 640 * 480];
        assert_eq!(
            decode_stamp(&plane, 158, 480, 158),
            Err(StampError::TooSmall {
                width: 158,
                height: 480
            })
        );
        assert_eq!(
            decode_stamp(&plane, 640, 79, 640),
            Err(StampError::TooSmall {
                width: 640,
                height: 79
            })
        );
        assert_eq!(
            decode_stamp(&plane, 640, 480, 639),
            Err(StampError::BadStride {
                width: 640,
                stride: 639
            })
        );
        assert_eq!(
            decode_stamp(&plane[..1000], 640, 480, 640),
            Err(StampError::ShortBuffer {
                need: 640 * 480,
                got: 1000
            })
        );
        assert!(matches!(
            decode_stamp(&plane, 640, u32::MAX, usize::MAX),
            Err(StampError::ShortBuffer { .. })
        ));
        let mut short = plane.clone();
        assert!(write_stamp(&mut short[..10], 640, 480, 640, stamp(0, 0)).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(99);
        let mut decoded = 0;
        for round in 0..3000 {
            // Sizes around the edges that matter, and wild ones.
            let width = match rng.below(4) {
                0 => rng.below(400) as u32,
                1 => MIN_WIDTH - 2 + rng.below(5) as u32,
                2 => rng.next() as u32,
                _ => 160 + rng.below(1200) as u32,
            };
            let height = match rng.below(3) {
                0 => rng.below(300) as u32,
                1 => strip_height(width).saturating_sub(1) + rng.below(3) as u32,
                _ => rng.next() as u32,
            };
            let stride = match rng.below(4) {
                0 => width as usize,
                1 => width as usize + rng.below(64) as usize,
                2 => rng.below(2000) as usize,
                _ => rng.next() as usize,
            };
            let len = match rng.below(3) {
                0 => stride.saturating_mul(height as usize).min(1 << 22),
                1 => rng.below(1 << 20) as usize,
                _ => 0,
            };
            let mut plane: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Now and then, a real stamp under the garbage, damaged.
            if round % 5 == 0
                && write_stamp(&mut plane, width, height, stride, stamp(9, NOW)).is_ok()
            {
                for _ in 0..rng.below(4) {
                    let at = rng.below(len as u64) as usize;
                    plane[at] = rng.next() as u8;
                }
            }
            if let Ok(read) = decode_stamp(&plane, width, height, stride) {
                assert_eq!(read, stamp(9, NOW));
                decoded += 1;
            }
        }
        assert!(decoded > 0, "no stamp survived light damage");
    }

    #[test]
    fn stamp_frame_writes_the_frames_own_numbers_on_grey() {
        let mut frame = VideoFrame::black(640, 480, 77, CaptureTime(NOW)).unwrap();
        frame.planes_mut().1.fill(0);
        stamp_frame(&mut frame).unwrap();
        let (y, u, _) = frame.planes();
        assert_eq!(decode_stamp(y, 640, 480, 640), Ok(stamp(77, NOW)));
        assert!(u[..320 * 40].iter().all(|&c| c == 128));
        assert_eq!(u[320 * 40], 0);

        frame.data.pop();
        assert!(matches!(
            stamp_frame(&mut frame),
            Err(StampError::BadFrame { .. })
        ));
        let mut tiny = VideoFrame::black(64, 64, 0, CaptureTime(0)).unwrap();
        assert!(matches!(
            stamp_frame(&mut tiny),
            Err(StampError::TooSmall { .. })
        ));
    }
}

//! Camera pixel formats to I420.
//!
//! Pure functions over byte slices: no device, no clock. Every length is
//! checked before a byte is read, so a short or truncated buffer from a driver
//! is an error and never a panic. Strides (V4L2 `bytesperline`) are honoured:
//! rows may carry padding at their end.
//!
//! Raw formats are assumed to be video range (Y 16..=235), as V4L2 cameras
//! deliver them. JPEG is full range by definition (JFIF), so MJPEG frames are
//! scaled to video range on the way, to keep one convention downstream.

use std::fmt;

use telecart_core::VideoFrame;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// The capture formats the appliance can convert to I420.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Planar 4:2:0, Y then U then V (`YU12`, also known as I420): a copy.
    Yu12,
    /// Semi-planar 4:2:0, Y then interleaved UV (`NV12`).
    Nv12,
    /// Packed 4:2:2, Y0 U Y1 V (`YUYV`).
    Yuyv,
    /// Motion JPEG, one JPEG picture a buffer (`MJPG`).
    Mjpeg,
}

impl PixelFormat {
    /// Every supported format, cheapest to convert first.
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::Yu12,
        PixelFormat::Nv12,
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
    ];

    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yu12 => *b"YU12",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    /// The format with this four-character code, if supported.
    pub fn from_fourcc(code: [u8; 4]) -> Option<Self> {
        PixelFormat::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// True for MJPEG.
    pub fn is_compressed(self) -> bool {
        self == PixelFormat::Mjpeg
    }

    /// Smallest `bytesperline` a driver may report for this width (0 for MJPEG,
    /// which has no rows).
    pub fn min_stride(self, width: u32) -> u32 {
        match self {
            PixelFormat::Yu12 | PixelFormat::Nv12 => width,
            PixelFormat::Yuyv => width.saturating_mul(2),
            PixelFormat::Mjpeg => 0,
        }
    }

    /// Bytes a raw buffer must hold at least for this size and stride (0 for MJPEG).
    ///
    /// The last row of each plane need not carry its padding.
    pub fn min_buffer_len(self, width: u32, height: u32, stride: u32) -> usize {
        let (w, h, s) = (width as usize, height as usize, stride as usize);
        if w == 0 || h == 0 {
            return 0;
        }
        match self {
            PixelFormat::Yuyv => s * (h - 1) + 2 * w,
            PixelFormat::Nv12 => s * h + s * (h / 2 - 1) + w,
            PixelFormat::Yu12 => {
                let cs = s / 2;
                s * h + cs * (h / 2) + cs * (h / 2 - 1) + w / 2
            }
            PixelFormat::Mjpeg => 0,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.fourcc();
        f.write_str(&String::from_utf8_lossy(&code))
    }
}

/// Why a buffer cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// Width or height is zero or odd.
    #[error("{width}x{height} is not a positive even size")]
    BadSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// The stride is smaller than a row (or odd for YU12).
    #[error("{format} {width} pixels wide cannot have a stride of {stride} bytes")]
    BadStride {
        /// Format.
        format: PixelFormat,
        /// Width.
        width: u32,
        /// Stride given.
        stride: u32,
    },
    /// The buffer is shorter than the frame.
    #[error(
        "{format} {width}x{height} (stride {stride}) needs {need} bytes, the buffer holds {got}"
    )]
    ShortBuffer {
        /// Format.
        format: PixelFormat,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Stride.
        stride: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// The JPEG decoder refused the data.
    #[error("MJPEG frame does not decode: {message}")]
    Decode {
        /// The decoder's message.
        message: String,
    },
    /// The JPEG holds a picture of another size than the format negotiated.
    #[error("MJPEG frame is {got_width}x{got_height}, the format says {width}x{height}")]
    DecodedSize {
        /// Width negotiated.
        width: u32,
        /// Height negotiated.
        height: u32,
        /// Width in the JPEG.
        got_width: u32,
        /// Height in the JPEG.
        got_height: u32,
    },
}

fn check_size(width: u32, height: u32) -> Result<(), ConvertError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(ConvertError::BadSize { width, height });
    }
    Ok(())
}

fn check_raw(
    format: PixelFormat,
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<(), ConvertError> {
    check_size(width, height)?;
    if stride < format.min_stride(width)
        || (format == PixelFormat::Yu12 && !stride.is_multiple_of(2))
    {
        return Err(ConvertError::BadStride {
            format,
            width,
            stride,
        });
    }
    let need = format.min_buffer_len(width, height, stride);
    if src.len() < need {
        return Err(ConvertError::ShortBuffer {
            format,
            width,
            height,
            stride,
            need,
            got: src.len(),
        });
    }
    Ok(())
}

/// Converts one buffer in `format` to a tightly packed I420 buffer.
///
/// `stride` is the driver's `bytesperline` (ignored for MJPEG).
pub fn to_i420(
    format: PixelFormat,
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<Vec<u8>, ConvertError> {
    if format == PixelFormat::Mjpeg {
        return mjpeg_to_i420(src, width, height);
    }
    check_raw(format, src, width, height, stride)?;
    let mut dst = vec![0u8; VideoFrame::i420_len(width, height)];
    match format {
        PixelFormat::Yuyv => yuyv_unchecked(src, width, height, stride, &mut dst),
        PixelFormat::Nv12 => nv12_unchecked(src, width, height, stride, &mut dst),
        PixelFormat::Yu12 => yu12_unchecked(src, width, height, stride, &mut dst),
        PixelFormat::Mjpeg => {}
    }
    Ok(dst)
}

/// YUYV (packed 4:2:2) to I420: luma copied, chroma of each pair of rows averaged.
pub fn yuyv_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<Vec<u8>, ConvertError> {
    to_i420(PixelFormat::Yuyv, src, width, height, stride)
}

/// NV12 (Y plane, then interleaved UV) to I420.
pub fn nv12_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<Vec<u8>, ConvertError> {
    to_i420(PixelFormat::Nv12, src, width, height, stride)
}

/// YU12 (I420 with padded rows) to tightly packed I420.
pub fn yu12_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<Vec<u8>, ConvertError> {
    to_i420(PixelFormat::Yu12, src, width, height, stride)
}

/// Splits an I420 buffer of this size into its Y, U and V planes.
fn split_planes(dst: &mut [u8], width: usize, height: usize) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (y, rest) = dst.split_at_mut(width * height);
    let (u, v) = rest.split_at_mut((width / 2) * (height / 2));
    (y, u, v)
}

// The `*_unchecked` functions rely on `check_raw` having validated the lengths;
// they still only index through slices, so a mistake there panics rather than
// reading out of bounds.

fn yuyv_unchecked(src: &[u8], width: u32, height: u32, stride: u32, dst: &mut [u8]) {
    let (w, h, s) = (width as usize, height as usize, stride as usize);
    let (y_plane, u_plane, v_plane) = split_planes(dst, w, h);
    let row_bytes = 2 * w;
    for pair in 0..h / 2 {
        let r0 = &src[2 * pair * s..2 * pair * s + row_bytes];
        let r1 = &src[(2 * pair + 1) * s..(2 * pair + 1) * s + row_bytes];
        let (y0, y1) = y_plane[2 * pair * w..(2 * pair + 2) * w].split_at_mut(w);
        let u = &mut u_plane[pair * (w / 2)..(pair + 1) * (w / 2)];
        let v = &mut v_plane[pair * (w / 2)..(pair + 1) * (w / 2)];
        for ((((a, b), ya), yb), (u, v)) in r0
            .chunks_exact(4)
            .zip(r1.chunks_exact(4))
            .zip(y0.chunks_exact_mut(2))
            .zip(y1.chunks_exact_mut(2))
            .zip(u.iter_mut().zip(v.iter_mut()))
        {
            ya[0] = a[0];
            ya[1] = a[2];
            yb[0] = b[0];
            yb[1] = b[2];
            *u = ((a[1] as u16 + b[1] as u16 + 1) >> 1) as u8;
            *v = ((a[3] as u16 + b[3] as u16 + 1) >> 1) as u8;
        }
    }
}

fn copy_luma(src: &[u8], w: usize, h: usize, s: usize, y_plane: &mut [u8]) {
    for (row, out) in y_plane.chunks_exact_mut(w).take(h).enumerate() {
        out.copy_from_slice(&src[row * s..row * s + w]);
    }
}

fn nv12_unchecked(src: &[u8], width: u32, height: u32, stride: u32, dst: &mut [u8]) {
    let (w, h, s) = (width as usize, height as usize, stride as usize);
    let (y_plane, u_plane, v_plane) = split_planes(dst, w, h);
    copy_luma(src, w, h, s, y_plane);
    let chroma = &src[s * h..];
    for row in 0..h / 2 {
        let uv = &chroma[row * s..row * s + w];
        let u = &mut u_plane[row * (w / 2)..(row + 1) * (w / 2)];
        let v = &mut v_plane[row * (w / 2)..(row + 1) * (w / 2)];
        for ((pair, u), v) in uv.chunks_exact(2).zip(u.iter_mut()).zip(v.iter_mut()) {
            *u = pair[0];
            *v = pair[1];
        }
    }
}

fn yu12_unchecked(src: &[u8], width: u32, height: u32, stride: u32, dst: &mut [u8]) {
    let (w, h, s) = (width as usize, height as usize, stride as usize);
    let (y_plane, u_plane, v_plane) = split_planes(dst, w, h);
    copy_luma(src, w, h, s, y_plane);
    let cs = s / 2;
    let u_src = &src[s * h..];
    let v_src = &src[s * h + cs * (h / 2)..];
    copy_luma(u_src, w / 2, h / 2, cs, u_plane);
    copy_luma(v_src, w / 2, h / 2, cs, v_plane);
}

/// Full-range (JPEG) to video-range lookup tables: (luma, chroma).
fn range_tables() -> &'static ([u8; 256], [u8; 256]) {
    static TABLES: std::sync::OnceLock<([u8; 256], [u8; 256])> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for i in 0..256 {
            luma[i] = (16 + (i as u32 * 219 + 127) / 255) as u8;
            let c = (i as i32 - 128) * 224;
            let scaled = if c >= 0 {
                (c + 127) / 255
            } else {
                (c - 127) / 255
            };
            chroma[i] = (128 + scaled) as u8;
        }
        (luma, chroma)
    })
}

/// Decodes one MJPEG buffer of the negotiated size into video-range I420.
///
/// Missing Huffman tables (usual in MJPEG from webcams) are filled with the
/// standard ones by the decoder. A JPEG larger than `width x height` is
/// refused before anything is allocated for it.
pub fn mjpeg_to_i420(src: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ConvertError> {
    check_size(width, height)?;
    let options = DecoderOptions::default()
        .set_max_width(width as usize)
        .set_max_height(height as usize)
        .jpeg_set_out_colorspace(ColorSpace::YCbCr);
    let mut decoder = JpegDecoder::new_with_options(src, options);
    decoder.decode_headers().map_err(|e| ConvertError::Decode {
        message: e.to_string(),
    })?;
    let Some(info) = decoder.info() else {
        return Err(ConvertError::Decode {
            message: "no picture header".into(),
        });
    };
    let (got_w, got_h) = (u32::from(info.width), u32::from(info.height));
    if (got_w, got_h) != (width, height) {
        return Err(ConvertError::DecodedSize {
            width,
            height,
            got_width: got_w,
            got_height: got_h,
        });
    }
    let gray = decoder.get_input_colorspace() == Some(ColorSpace::Luma);
    if gray {
        decoder.set_options(options.jpeg_set_out_colorspace(ColorSpace::Luma));
    }
    // zune-jpeg is fuzzed and meant not to panic; a camera's bytes are
    // untrusted input all the same, so a panic is contained as a decode error.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode()));
    let pixels = match decoded {
        Ok(Ok(pixels)) => pixels,
        Ok(Err(e)) => {
            return Err(ConvertError::Decode {
                message: e.to_string(),
            });
        }
        Err(_) => {
            return Err(ConvertError::Decode {
                message: "the JPEG decoder panicked on this frame".into(),
            });
        }
    };
    let (w, h) = (width as usize, height as usize);
    let components = if gray { 1 } else { 3 };
    if pixels.len() < w * h * components {
        return Err(ConvertError::Decode {
            message: format!(
                "decoder returned {} bytes for {}x{}",
                pixels.len(),
                width,
                height
            ),
        });
    }
    let (luma_table, chroma_table) = range_tables();
    let mut dst = vec![0u8; VideoFrame::i420_len(width, height)];
    let (y_plane, u_plane, v_plane) = split_planes(&mut dst, w, h);
    if gray {
        for (out, &p) in y_plane.iter_mut().zip(&pixels[..w * h]) {
            *out = luma_table[p as usize];
        }
        u_plane.fill(128);
        v_plane.fill(128);
        return Ok(dst);
    }
    let row_bytes = 3 * w;
    for pair in 0..h / 2 {
        let r0 = &pixels[2 * pair * row_bytes..(2 * pair + 1) * row_bytes];
        let r1 = &pixels[(2 * pair + 1) * row_bytes..(2 * pair + 2) * row_bytes];
        let (y0, y1) = y_plane[2 * pair * w..(2 * pair + 2) * w].split_at_mut(w);
        let u = &mut u_plane[pair * (w / 2)..(pair + 1) * (w / 2)];
        let v = &mut v_plane[pair * (w / 2)..(pair + 1) * (w / 2)];
        for ((((a, b), ya), yb), (u, v)) in r0
            .chunks_exact(6)
            .zip(r1.chunks_exact(6))
            .zip(y0.chunks_exact_mut(2))
            .zip(y1.chunks_exact_mut(2))
            .zip(u.iter_mut().zip(v.iter_mut()))
        {
            ya[0] = luma_table[a[0] as usize];
            ya[1] = luma_table[a[3] as usize];
            yb[0] = luma_table[b[0] as usize];
            yb[1] = luma_table[b[3] as usize];
            let cb = (a[1] as u16 + a[4] as u16 + b[1] as u16 + b[4] as u16 + 2) >> 2;
            let cr = (a[2] as u16 + a[5] as u16 + b[2] as u16 + b[5] as u16 + 2) >> 2;
            *u = chroma_table[cb as usize];
            *v = chroma_table[cr as usize];
        }
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x2 YUYV picture with a stride of 10 (2 bytes of padding a row).
    #[test]
    fn yuyv_with_padding_converts_to_hand_computed_i420() {
        #[rustfmt::skip]
        let src = [
            // Y0 U  Y1 V   Y2 U  Y3 V    pad
            10, 100, 11, 200, 12, 110, 13, 210, 0xEE, 0xEE,
            20, 102, 21, 202, 22, 111, 23, 211, 0xEE, 0xEE,
        ];
        let out = yuyv_to_i420(&src, 4, 2, 10).unwrap();
        assert_eq!(
            out,
            vec![
                10, 11, 12, 13, // Y row 0
                20, 21, 22, 23, // Y row 1
                101, 111, // U: (100+102+1)/2, (110+111+1)/2
                201, 211, // V: (200+202+1)/2, (210+211+1)/2
            ]
        );
    }

    #[test]
    fn nv12_with_padding_converts_to_hand_computed_i420() {
        #[rustfmt::skip]
        let src = [
            1, 2, 3, 4, 9, 9,     // Y row 0 + padding
            5, 6, 7, 8, 9, 9,     // Y row 1 + padding
            50, 60, 51, 61,       // UV row 0 (last row: no padding needed)
        ];
        let out = nv12_to_i420(&src, 4, 2, 6).unwrap();
        assert_eq!(out, vec![1, 2, 3, 4, 5, 6, 7, 8, 50, 51, 60, 61]);
    }

    #[test]
    fn yu12_with_stride_copies_each_plane_without_padding() {
        // 4x4, stride 6: chroma stride 3.
        #[rustfmt::skip]
        let src = [
            1, 2, 3, 4, 0, 0,
            5, 6, 7, 8, 0, 0,
            9, 10, 11, 12, 0, 0,
            13, 14, 15, 16, 0, 0,
            // U: 2 rows of 3
            20, 21, 0,
            22, 23, 0,
            // V: 2 rows of 3, the last one short
            30, 31, 0,
            32, 33,
        ];
        let out = yu12_to_i420(&src, 4, 4, 6).unwrap();
        let mut want: Vec<u8> = (1..=16).collect();
        want.extend([20, 21, 22, 23, 30, 31, 32, 33]);
        assert_eq!(out, want);
    }

    #[test]
    fn tight_buffers_need_exactly_one_frame() {
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12] {
            let (w, h) = (640u32, 480u32);
            let stride = format.min_stride(w);
            let need = format.min_buffer_len(w, h, stride);
            let want = match format {
                PixelFormat::Yuyv => 640 * 480 * 2,
                _ => 640 * 480 * 3 / 2,
            };
            assert_eq!(need, want, "{format}");
            let buf = vec![128u8; need];
            assert_eq!(to_i420(format, &buf, w, h, stride).unwrap().len(), 460_800);
        }
    }

    #[test]
    fn short_buffers_bad_strides_and_odd_sizes_are_errors() {
        let buf = vec![0u8; 4 * 2 * 2 - 1];
        assert_eq!(
            yuyv_to_i420(&buf, 4, 2, 8),
            Err(ConvertError::ShortBuffer {
                format: PixelFormat::Yuyv,
                width: 4,
                height: 2,
                stride: 8,
                need: 16,
                got: 15
            })
        );
        assert!(matches!(
            nv12_to_i420(&[0; 11], 4, 2, 4),
            Err(ConvertError::ShortBuffer {
                need: 12,
                got: 11,
                ..
            })
        ));
        assert!(matches!(
            yu12_to_i420(&[], 4, 2, 4),
            Err(ConvertError::ShortBuffer { got: 0, .. })
        ));
        assert!(matches!(
            yuyv_to_i420(&[0; 64], 4, 2, 6),
            Err(ConvertError::BadStride { stride: 6, .. })
        ));
        assert!(matches!(
            yu12_to_i420(&[0; 64], 4, 2, 5),
            Err(ConvertError::BadStride { stride: 5, .. })
        ));
        assert!(matches!(
            nv12_to_i420(&[0; 64], 3, 2, 4),
            Err(ConvertError::BadSize { .. })
        ));
        assert!(matches!(
            to_i420(PixelFormat::Yuyv, &[0; 64], 0, 0, 0),
            Err(ConvertError::BadSize { .. })
        ));
    }

    #[test]
    fn garbage_and_truncated_mjpeg_are_errors_not_panics() {
        assert!(matches!(
            mjpeg_to_i420(&[], 320, 240),
            Err(ConvertError::Decode { .. })
        ));
        assert!(matches!(
            mjpeg_to_i420(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 1, 2, 3], 320, 240),
            Err(ConvertError::Decode { .. })
        ));
        let jpeg = include_bytes!("../tests/data/testsrc-320x240-420.jpg");
        for cut in [2, 20, 200, jpeg.len() / 2, jpeg.len() - 3] {
            // Truncated data either fails or decodes to a picture of the right size;
            // it must never panic.
            if let Ok(out) = mjpeg_to_i420(&jpeg[..cut], 320, 240) {
                assert_eq!(out.len(), VideoFrame::i420_len(320, 240));
            }
        }
        let mut flipped = jpeg.to_vec();
        for i in (300..flipped.len()).step_by(97) {
            flipped[i] ^= 0x5A;
        }
        if let Ok(out) = mjpeg_to_i420(&flipped, 320, 240) {
            assert_eq!(out.len(), VideoFrame::i420_len(320, 240));
        }
    }

    /// Thousands of corrupted frames (a fixed pseudo-random sequence of byte
    /// flips, cuts and insertions): each one decodes or is an error.
    #[test]
    fn corrupted_mjpeg_never_escapes_as_a_panic() {
        let jpeg = include_bytes!("../tests/data/testsrc-320x240-422.jpg");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut data = jpeg.to_vec();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() as usize) % data.len();
                match next() % 3 {
                    0 => data[at] = next() as u8,
                    1 => data.truncate(at.max(2)),
                    _ => data.insert(at, next() as u8),
                }
            }
            if let Ok(out) = mjpeg_to_i420(&data, 320, 240) {
                assert_eq!(out.len(), VideoFrame::i420_len(320, 240));
            }
        }
    }

    #[test]
    fn mjpeg_of_another_size_is_refused() {
        let jpeg = include_bytes!("../tests/data/testsrc-320x240-420.jpg");
        assert!(matches!(
            mjpeg_to_i420(jpeg, 640, 480),
            Err(ConvertError::DecodedSize {
                got_width: 320,
                got_height: 240,
                ..
            })
        ));
        // Larger than negotiated: refused by the decoder's size limit, or by the size check.
        assert!(mjpeg_to_i420(jpeg, 160, 120).is_err());
    }

    /// Mean absolute difference between two planes.
    fn mad(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let sum: u64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as i32 - y as i32).unsigned_abs() as u64)
            .sum();
        sum as f64 / a.len() as f64
    }

    /// Fixtures made by `tests/data/make-jpeg-fixtures.sh` with GStreamer: each
    /// JPEG beside the I420 that GStreamer's own decoder (libjpeg) makes of it.
    /// Ours must agree once that reference is scaled to video range.
    #[test]
    fn mjpeg_decodes_like_libjpeg_scaled_to_video_range() {
        let cases: [(&[u8], &[u8]); 2] = [
            (
                include_bytes!("../tests/data/testsrc-320x240-420.jpg"),
                include_bytes!("../tests/data/testsrc-320x240-420.i420"),
            ),
            (
                include_bytes!("../tests/data/testsrc-320x240-422.jpg"),
                include_bytes!("../tests/data/testsrc-320x240-422.i420"),
            ),
        ];
        let (luma_table, chroma_table) = range_tables();
        for (i, (jpeg, reference)) in cases.into_iter().enumerate() {
            let ours = mjpeg_to_i420(jpeg, 320, 240).unwrap();
            let reference = VideoFrame::from_i420(
                320,
                240,
                reference.to_vec(),
                0,
                telecart_core::CaptureTime(0),
            )
            .unwrap();
            let ours =
                VideoFrame::from_i420(320, 240, ours, 0, telecart_core::CaptureTime(0)).unwrap();
            let (ry, ru, rv) = reference.planes();
            let ry: Vec<u8> = ry.iter().map(|&p| luma_table[p as usize]).collect();
            let ru: Vec<u8> = ru.iter().map(|&p| chroma_table[p as usize]).collect();
            let rv: Vec<u8> = rv.iter().map(|&p| chroma_table[p as usize]).collect();
            let (oy, ou, ov) = ours.planes();
            let (dy, du, dv) = (mad(oy, &ry), mad(ou, &ru), mad(ov, &rv));
            assert!(
                dy < 1.0 && du < 2.0 && dv < 2.0,
                "case {i}: mean abs diff Y {dy:.2} U {du:.2} V {dv:.2}"
            );
        }
    }

    #[test]
    fn a_720p_webcam_style_mjpeg_frame_decodes() {
        let jpeg = include_bytes!("../tests/data/testsrc-1280x720-422.jpg");
        let out = mjpeg_to_i420(jpeg, 1280, 720).unwrap();
        let frame =
            VideoFrame::from_i420(1280, 720, out, 0, telecart_core::CaptureTime(0)).unwrap();
        // GStreamer's first SMPTE bar is stored as Y=235 with neutral chroma;
        // read as full-range JPEG and scaled to video range, 235 becomes 218.
        let (y, u, v) = frame.planes();
        assert!(
            (215..=221).contains(&y[1280 * 100 + 10]),
            "{}",
            y[1280 * 100 + 10]
        );
        assert!((120..=136).contains(&u[640 * 50 + 5]));
        assert!((120..=136).contains(&v[640 * 50 + 5]));
    }

    #[test]
    fn range_tables_map_the_ends_of_full_range_to_video_range() {
        let (luma, chroma) = range_tables();
        assert_eq!((luma[0], luma[255]), (16, 235));
        assert_eq!((chroma[0], chroma[128], chroma[255]), (16, 128, 240));
    }

    #[test]
    fn fourcc_round_trips() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
        }
        assert_eq!(PixelFormat::from_fourcc(*b"RGB3"), None);
        assert_eq!(PixelFormat::Mjpeg.to_string(), "MJPG");
    }
}

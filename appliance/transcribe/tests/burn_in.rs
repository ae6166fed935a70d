//! Captions burned into frames survive the real encoder (our openh264 encoder at a call's
//! bitrate) and decoder: the decoded text region matches what was drawn, highlighted terms
//! come out yellow, and two captions are told apart.
#![allow(clippy::unwrap_used)]

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use telecart_codec::{EncoderSettings, OpenH264Encoder, VideoEncoder};
use telecart_core::config::H264Profile;
use telecart_core::{CaptureTime, VideoFrame};
use telecart_transcribe::{CaptionBurner, Vocabulary};

const W: u32 = 640;
const H: u32 = 360;

/// A busy picture (diagonal gradient with texture), so the box and text are tested against
/// more than flat black.
fn background(sequence: u64) -> VideoFrame {
    let mut frame = VideoFrame::black(W, H, sequence, CaptureTime(sequence * 33_333)).unwrap();
    for y in 0..H as usize {
        for x in 0..W as usize {
            frame.data[y * W as usize + x] =
                (40 + (x + y + sequence as usize * 3) % 160 + (x * 7 % 13)) as u8;
        }
    }
    frame
}

fn burned(text: &str, sequence: u64) -> VideoFrame {
    let mut burner = CaptionBurner::new().unwrap();
    let mut frame = background(sequence);
    burner.burn_text(&mut frame, text, &Vocabulary::bundled().highlight(text));
    frame
}

/// Encodes 10 frames of the caption with our encoder and returns the last decoded picture
/// (Y, U, V planes, tightly packed).
fn round_trip(text: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut encoder = OpenH264Encoder::new(EncoderSettings {
        width: W,
        height: H,
        fps: 30,
        bitrate_bps: 600_000,
        keyframe_interval_frames: 0,
        profile: H264Profile::ConstrainedBaseline,
    })
    .unwrap();
    let mut decoder = Decoder::new().unwrap();
    let mut last = None;
    for sequence in 0..10 {
        let frame = burned(text, sequence);
        let unit = encoder.encode(&frame).unwrap().unwrap();
        if let Some(picture) = decoder.decode(&unit.data).unwrap() {
            let (ys, us, vs) = picture.strides();
            let pack = |plane: &[u8], stride: usize, w: usize, h: usize| {
                (0..h)
                    .flat_map(|r| plane[r * stride..r * stride + w].to_vec())
                    .collect::<Vec<u8>>()
            };
            last = Some((
                pack(picture.y(), ys, W as usize, H as usize),
                pack(picture.u(), us, W as usize / 2, H as usize / 2),
                pack(picture.v(), vs, W as usize / 2, H as usize / 2),
            ));
        }
    }
    last.unwrap()
}

/// Pearson correlation of two luma planes inside the caption box.
fn correlation(a: &[u8], b: &[u8]) -> f64 {
    let area = CaptionBurner::caption_box(W, H, 1);
    let mut pairs = Vec::new();
    for y in area.y..area.y + area.height {
        for x in area.x..area.x + area.width {
            let i = (y * W + x) as usize;
            pairs.push((a[i] as f64, b[i] as f64));
        }
    }
    let n = pairs.len() as f64;
    let (ma, mb) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum();
    let va: f64 = pairs.iter().map(|p| (p.0 - ma).powi(2)).sum();
    let vb: f64 = pairs.iter().map(|p| (p.1 - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

#[test]
fn burned_caption_is_legible_after_h264() {
    let text = "Chest pain since this morning";
    let drawn = burned(text, 9);
    let (y, u, _v) = round_trip(text);

    let area = CaptionBurner::caption_box(W, H, 1);
    // Text pixels (drawn bright) come out bright; the rest of the box comes out dark.
    let (mut text_sum, mut text_n, mut box_sum, mut box_n) = (0u64, 0u64, 0u64, 0u64);
    for row in area.y..area.y + area.height {
        for col in area.x..area.x + area.width {
            let i = (row * W + col) as usize;
            if drawn.data[i] >= 200 {
                text_sum += y[i] as u64;
                text_n += 1;
            } else if drawn.data[i] <= 70 {
                box_sum += y[i] as u64;
                box_n += 1;
            }
        }
    }
    assert!(text_n > 1500, "{text_n} text pixels drawn");
    let (text_mean, box_mean) = (text_sum / text_n, box_sum / box_n);
    println!("decoded text luma {text_mean}, box luma {box_mean}");
    assert!(
        text_mean > 170 && box_mean < 90,
        "text {text_mean} box {box_mean}"
    );

    // The decoded box matches the drawn caption far better than a different caption.
    let other = burned("Knee swelling after the fall", 9);
    let same = correlation(&y, &drawn.data);
    let different = correlation(&y, &other.data);
    println!("correlation with the drawn caption {same:.3}, with another caption {different:.3}");
    assert!(same > 0.9, "{same}");
    assert!(different < same - 0.3, "{different} vs {same}");

    // "Chest pain" is highlighted: its glyphs carry yellow chroma (U far below neutral 128).
    let highlight = &Vocabulary::bundled().highlight(text)[0];
    assert_eq!(highlight.term, "chest pain");
    let quarter = (W / 2) as usize;
    let drawn_u = &drawn.data[(W * H) as usize..];
    let (mut yellow, mut white) = (Vec::new(), Vec::new());
    for row in area.y / 2..(area.y + area.height) / 2 {
        for col in area.x / 2..(area.x + area.width) / 2 {
            let ci = row as usize * quarter + col as usize;
            let luma = drawn.data[(row * 2 * W + col * 2) as usize];
            if drawn_u[ci] == 16 {
                yellow.push(u[ci] as i32);
            } else if drawn_u[ci] == 128 && luma >= 200 {
                white.push(u[ci] as i32);
            }
        }
    }
    assert!(!yellow.is_empty() && !white.is_empty());
    let mean = |v: &[i32]| v.iter().sum::<i32>() / v.len() as i32;
    println!(
        "decoded U under highlighted glyphs {}, under plain glyphs {}",
        mean(&yellow),
        mean(&white)
    );
    assert!(mean(&yellow) < 90 && mean(&white) > 110);
}

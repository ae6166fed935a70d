//! Cost of turning one camera buffer into I420, at 720p and 1080p.
//!
//! `cargo bench -p telecart-devices --bench convert`. The budget at 720p30 is
//! the frame interval shared with encoding: YUYV/NV12 well under 2 ms.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use telecart_devices::PixelFormat;
use telecart_devices::convert::{mjpeg_to_i420, to_i420};

fn raw_buffer(format: PixelFormat, width: u32, height: u32) -> (Vec<u8>, u32) {
    let stride = format.min_stride(width);
    let len = format.min_buffer_len(width, height, stride);
    let data = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    (data, stride)
}

fn bench(c: &mut Criterion) {
    for (width, height) in [(1280u32, 720u32), (1920, 1080)] {
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12] {
            let (data, stride) = raw_buffer(format, width, height);
            c.bench_function(&format!("{format} {width}x{height} to I420"), |b| {
                b.iter(|| to_i420(format, black_box(&data), width, height, stride).unwrap())
            });
        }
    }
    // A real JPEG (GStreamer's SMPTE bars) stands in for a webcam's MJPEG frame.
    let jpeg = include_bytes!("../tests/data/testsrc-1280x720-422.jpg");
    c.bench_function("MJPG 1280x720 4:2:2 to I420", |b| {
        b.iter(|| mjpeg_to_i420(black_box(jpeg), 1280, 720).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

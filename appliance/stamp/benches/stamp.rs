//! Cost of rendering a stamped test-pattern frame and of reading its stamp back.
//!
//! `cargo bench -p telecart-stamp`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use telecart_stamp::{CaptureTime, TestPattern, decode_stamp};

const NOW: CaptureTime = CaptureTime(1_773_000_000_000_000);

fn bench(c: &mut Criterion) {
    for (width, height) in [(640, 480), (1280, 720), (1920, 1080)] {
        let Ok(pattern) = TestPattern::new(width, height) else {
            return;
        };
        let mut frame = pattern.render(0, NOW);
        let mut sequence = 0u64;
        c.bench_function(&format!("render_into {width}x{height}"), |b| {
            b.iter(|| {
                sequence += 1;
                pattern.render_into(black_box(&mut frame), sequence, NOW);
            })
        });
        c.bench_function(&format!("decode_stamp {width}x{height}"), |b| {
            b.iter(|| {
                let y = &frame.planes().0;
                black_box(decode_stamp(black_box(y), width, height, width as usize))
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);

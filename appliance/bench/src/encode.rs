//! Software H.264 encode: our openh264 path against GStreamer's x264enc
//! (`speed-preset=ultrafast tune=zerolatency`) and openh264enc on the same
//! frames. GStreamer's cost is measured as a pipeline with the encoder minus
//! the same pipeline without it, so start-up and file reading cancel out.

use crate::measure::{Cost, cpu_time, have, percentile, run_peer};
use std::io::Write;
use std::process::Command;
use std::time::Instant;
use telecart_codec::{EncoderSettings, OpenH264Encoder, VideoEncoder};
use telecart_core::CaptureTime;
use telecart_core::config::H264Profile;
use telecart_stamp::TestPattern;

/// Options of `bench encode`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Frames per size.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Sizes: 360p, 480p, 720p, 1080p, or WxH.
    #[arg(long, value_delimiter = ',', default_value = "720p,1080p")]
    sizes: Vec<String>,
    /// Target bitrate.
    #[arg(long, default_value_t = 2000)]
    bitrate_kbps: u32,
    /// `camera`: the test pattern plus frame-to-frame sensor-like noise (±4 luma),
    /// which is what makes real camera video expensive; `pattern`: the clean pattern.
    #[arg(long, default_value = "camera")]
    content: Content,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Content {
    Camera,
    Pattern,
}

/// Adds temporal noise to the luma plane, as a camera sensor does.
fn add_sensor_noise(frame: &mut telecart_core::VideoFrame, seed: u64) {
    let luma = (frame.width * frame.height) as usize;
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for px in &mut frame.data[..luma] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state % 9) as i16 - 4;
        *px = (i16::from(*px) + noise).clamp(16, 235) as u8;
    }
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    Ok(match s {
        "360p" => (640, 360),
        "480p" => (640, 480),
        "720p" => (1280, 720),
        "1080p" => (1920, 1080),
        other => {
            let (w, h) = other
                .split_once('x')
                .ok_or_else(|| anyhow::anyhow!("size {other:?}: use 720p or WxH"))?;
            (w.parse()?, h.parse()?)
        }
    })
}

struct Row {
    name: String,
    ms_per_frame: f64,
    p50: Option<f64>,
    p95: Option<f64>,
    cpu_ms_per_frame: f64,
    kbps: Option<f64>,
}

/// Runs the benchmark and prints the table.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "bench encode: {} frames per size, {} kbps, 30 fps, content {:?}",
        args.frames, args.bitrate_kbps, args.content
    );
    for size in &args.sizes {
        let (w, h) = parse_size(size)?;
        let pattern = TestPattern::new(w, h).map_err(|e| anyhow::anyhow!("{e}"))?;
        let frames: Vec<_> = (0..args.frames)
            .map(|n| {
                let mut frame = pattern.render(n, CaptureTime(n * 33_333));
                if matches!(args.content, Content::Camera) {
                    add_sensor_noise(&mut frame, n);
                }
                frame
            })
            .collect();
        let mut rows = vec![ours(&frames, w, h, args.bitrate_kbps)?];

        let mut raw = tempfile::NamedTempFile::new()?;
        for f in &frames {
            raw.write_all(&f.data)?;
        }
        raw.flush()?;
        drop(frames);
        if have("gst-launch-1.0") {
            let path = raw.path().to_string_lossy().into_owned();
            let baseline = gst(&path, w, h, "")?;
            for (name, element) in [
                (
                    "gst x264enc ultrafast/zerolatency",
                    format!(
                        "x264enc speed-preset=ultrafast tune=zerolatency bitrate={}",
                        args.bitrate_kbps
                    ),
                ),
                (
                    "gst openh264enc",
                    format!(
                        "openh264enc bitrate={} complexity=low",
                        args.bitrate_kbps * 1000
                    ),
                ),
            ] {
                match gst(&path, w, h, &element) {
                    Ok(cost) => rows.push(Row {
                        name: name.into(),
                        ms_per_frame: cost.wall.saturating_sub(baseline.wall).as_secs_f64() * 1e3
                            / args.frames as f64,
                        p50: None,
                        p95: None,
                        cpu_ms_per_frame: cost.cpu.saturating_sub(baseline.cpu).as_secs_f64() * 1e3
                            / args.frames as f64,
                        kbps: None,
                    }),
                    Err(e) => println!("  ({name} skipped: {e})"),
                }
            }
        } else {
            println!(
                "  (GStreamer not installed: gst-launch-1.0 missing; install gstreamer1.0-tools and -plugins-ugly)"
            );
        }
        print_table(&format!("{w}x{h}"), &rows);
    }
    Ok(())
}

fn ours(frames: &[telecart_core::VideoFrame], w: u32, h: u32, kbps: u32) -> anyhow::Result<Row> {
    let mut encoder = OpenH264Encoder::new(EncoderSettings {
        width: w,
        height: h,
        fps: 30,
        bitrate_bps: kbps * 1000,
        keyframe_interval_frames: 60,
        profile: H264Profile::ConstrainedBaseline,
    })?;
    let mut times = Vec::with_capacity(frames.len());
    let mut bytes = 0usize;
    let cpu_before = cpu_time(libc::RUSAGE_SELF);
    let started = Instant::now();
    for frame in frames {
        let t = Instant::now();
        if let Some(unit) = encoder.encode(frame)? {
            bytes += unit.data.len();
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall = started.elapsed();
    let cpu = cpu_time(libc::RUSAGE_SELF).saturating_sub(cpu_before);
    times.sort_by(f64::total_cmp);
    let n = frames.len() as f64;
    Ok(Row {
        name: "telecart openh264".into(),
        ms_per_frame: wall.as_secs_f64() * 1e3 / n,
        p50: Some(percentile(&times, 0.5)),
        p95: Some(percentile(&times, 0.95)),
        cpu_ms_per_frame: cpu.as_secs_f64() * 1e3 / n,
        kbps: Some(bytes as f64 * 8.0 * 30.0 / n / 1000.0),
    })
}

fn gst(path: &str, w: u32, h: u32, encoder: &str) -> anyhow::Result<Cost> {
    let mut pipeline = format!(
        "filesrc location={path} blocksize={} ! rawvideoparse format=i420 width={w} height={h} framerate=30/1 ! ",
        w as usize * h as usize * 3 / 2
    );
    if !encoder.is_empty() {
        pipeline.push_str(encoder);
        pipeline.push_str(" ! ");
    }
    pipeline.push_str("fakesink sync=false");
    run_peer(
        Command::new("gst-launch-1.0")
            .arg("-q")
            .args(pipeline.split_whitespace()),
    )
}

fn print_table(size: &str, rows: &[Row]) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!("\n{size}");
    println!(
        "  {:<36} {:>10} {:>8} {:>8} {:>12} {:>9} {:>12}",
        "encoder", "ms/frame", "p50", "p95", "CPU ms/frame", "kbps", "ours/this"
    );
    let ours_cpu = rows.first().map_or(0.0, |r| r.cpu_ms_per_frame);
    for row in rows {
        let ratio = if row.cpu_ms_per_frame > 0.0 {
            ours_cpu / row.cpu_ms_per_frame
        } else {
            0.0
        };
        println!(
            "  {:<36} {:>10.2} {:>8} {:>8} {:>12.2} {:>9} {:>11.2}x",
            row.name,
            row.ms_per_frame,
            opt(row.p50),
            opt(row.p95),
            row.cpu_ms_per_frame,
            row.kbps.map_or("-".to_string(), |k| format!("{k:.0}")),
            ratio
        );
    }
    println!(
        "  (ours/this = our CPU per frame divided by that encoder's; below 1 means we use less; 30 fps needs < 33 ms/frame)"
    );
}

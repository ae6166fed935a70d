//! `bench encode`: our software H.264 encoder against GStreamer's on the same frames.
//!
//! For each size, N frames of a moving picture (scrolling gradient, moving block, noise) are
//! written to a raw I420 file; our openh264 encoder encodes them frame by frame (wall time per
//! frame and process CPU time around each call), then `gst-launch-1.0` encodes the same file
//! with x264enc (ultrafast, zerolatency) and, if present, openh264enc, timed as a whole (wall
//! time and the child's CPU time from `RUSAGE_CHILDREN`). A pipeline without an encoder gives
//! GStreamer's own cost of reading and parsing the file, shown for reference.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telecart_codec::synthetic::moving_frame;
use telecart_codec::{EncoderSettings, OpenH264Encoder, VideoEncoder};
use telecart_core::config::H264Profile;
use telecart_core::media::{CaptureTime, VideoFrame};

use crate::measure::{Stats, children_cpu, self_cpu, stats};

/// Options of `bench encode`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Frames to encode at each size.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Sizes, comma separated: 360p, 480p, 720p, 1080p or WIDTHxHEIGHT.
    #[arg(long, value_delimiter = ',', default_value = "720p,1080p")]
    sizes: Vec<String>,
    /// Target bitrate for every encoder, kbit/s (default: about 0.09 bit per pixel, 2500 at
    /// 720p30, 5600 at 1080p30).
    #[arg(long)]
    bitrate_kbps: Option<u32>,
    /// Frame rate of the input.
    #[arg(long, default_value_t = 30)]
    fps: u32,
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    Ok(match s.trim() {
        "360p" => (640, 360),
        "480p" => (640, 480),
        "720p" => (1280, 720),
        "1080p" => (1920, 1080),
        other => {
            let (w, h) = other
                .split_once('x')
                .with_context(|| format!("size {other:?} is not 720p, 1080p or WxH"))?;
            let (w, h): (u32, u32) = (w.parse()?, h.parse()?);
            if w == 0 || h == 0 || !w.is_multiple_of(2) || !h.is_multiple_of(2) {
                bail!("size {other} must be positive and even");
            }
            (w, h)
        }
    })
}

/// One encoder's result at one size.
#[derive(Debug)]
struct Row {
    name: String,
    /// Per-frame wall times (ours only).
    per_frame: Option<Stats>,
    wall: Duration,
    cpu: Duration,
    bytes: u64,
    /// A reference row (no encoder): no ratio.
    reference: bool,
}

fn tool_exists(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn write_frames(path: &Path, w: u32, h: u32, frames: u64, fps: u32) -> anyhow::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for i in 0..frames {
        out.write_all(&moving_frame(w, h, i, fps).data)?;
    }
    out.flush()?;
    Ok(())
}

fn run_ours(raw: &Path, settings: &EncoderSettings, frames: u64) -> anyhow::Result<Row> {
    let mut encoder = OpenH264Encoder::new(settings.clone())?;
    let (w, h) = (settings.width, settings.height);
    let mut input = File::open(raw)?;
    let mut buf = vec![0u8; VideoFrame::i420_len(w, h)];
    let mut times = Vec::with_capacity(frames as usize);
    let (mut wall, mut cpu, mut bytes) = (Duration::ZERO, Duration::ZERO, 0u64);
    for i in 0..frames {
        input.read_exact(&mut buf)?;
        let frame = VideoFrame::from_i420(
            w,
            h,
            std::mem::take(&mut buf),
            i,
            CaptureTime(i * 1_000_000 / u64::from(settings.fps)),
        )?;
        let cpu0 = self_cpu();
        let t0 = Instant::now();
        let unit = encoder.encode(&frame)?;
        let dt = t0.elapsed();
        cpu += self_cpu() - cpu0;
        wall += dt;
        times.push(dt);
        bytes += unit.map_or(0, |u| u.data.len() as u64);
        buf = frame.data;
    }
    Ok(Row {
        name: "ours (openh264, 1 thread)".to_owned(),
        per_frame: Some(stats(&times)),
        wall,
        cpu,
        bytes,
        reference: false,
    })
}

fn run_gst(
    name: &str,
    raw: &Path,
    out: &Path,
    w: u32,
    h: u32,
    fps: u32,
    encoder: &[String],
) -> anyhow::Result<Row> {
    let frame_bytes = VideoFrame::i420_len(w, h);
    let mut args: Vec<String> = vec![
        "-q".into(),
        "filesrc".into(),
        format!("location={}", raw.display()),
        format!("blocksize={frame_bytes}"),
        "!".into(),
        "rawvideoparse".into(),
        "format=i420".into(),
        format!("width={w}"),
        format!("height={h}"),
        format!("framerate={fps}/1"),
        "!".into(),
    ];
    if encoder.is_empty() {
        // The reference row: reading and parsing only, nothing written.
        args.push("fakesink".into());
    } else {
        args.extend(encoder.iter().cloned());
        args.extend([
            "!".into(),
            "filesink".into(),
            format!("location={}", out.display()),
        ]);
    }
    let _ = std::fs::remove_file(out);
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let output = Command::new("gst-launch-1.0")
        .args(&args)
        .stdout(Stdio::null())
        .output()
        .context("running gst-launch-1.0")?;
    let wall = t0.elapsed();
    let cpu = children_cpu() - cpu0;
    if !output.status.success() {
        bail!(
            "gst-launch-1.0 {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let bytes = std::fs::metadata(out).map_or(0, |m| m.len());
    Ok(Row {
        name: name.to_owned(),
        per_frame: None,
        wall,
        cpu,
        bytes,
        reference: encoder.is_empty(),
    })
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn print_table(label: &str, frames: u64, fps: u32, rows: &[Row]) {
    println!();
    println!("{label}");
    println!(
        "{:<34} {:>9} {:>7} {:>7} {:>10} {:>9} {:>8} {:>11} {:>10}",
        "encoder",
        "wall ms/f",
        "p50",
        "p95",
        "CPU ms/f",
        "core %",
        "fps",
        "kbit/s out",
        "ours/peer"
    );
    let n = frames.max(1) as f64;
    let ours = rows.first();
    for row in rows {
        let wall_ms = row.wall.as_secs_f64() * 1e3 / n;
        let cpu_ms = row.cpu.as_secs_f64() * 1e3 / n;
        let (p50, p95) = row.per_frame.map_or(("-".to_owned(), "-".to_owned()), |s| {
            (format!("{:.2}", s.p50), format!("{:.2}", s.p95))
        });
        let kbps = row.bytes as f64 * 8.0 * f64::from(fps) / n / 1000.0;
        let core_pct = cpu_ms * f64::from(fps) / 10.0;
        let ratio = match ours {
            Some(o) if !std::ptr::eq(o, row) && !row.reference && row.wall > Duration::ZERO => {
                format!(
                    "{:.2}w {:.2}c",
                    o.wall.as_secs_f64() / row.wall.as_secs_f64(),
                    o.cpu.as_secs_f64() / row.cpu.as_secs_f64().max(1e-9)
                )
            }
            _ => "-".to_owned(),
        };
        println!(
            "{:<34} {:>9.2} {:>7} {:>7} {:>10.2} {:>8.0}% {:>8.0} {:>11.0} {:>10}",
            row.name,
            wall_ms,
            p50,
            p95,
            cpu_ms,
            core_pct,
            1000.0 / wall_ms.max(1e-9),
            kbps,
            ratio
        );
    }
}

/// Runs `bench encode`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.frames == 0 || args.fps == 0 {
        bail!("--frames and --fps must be positive");
    }
    let sizes = args
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gst = tool_exists("gst-launch-1.0", "--version");
    let has = |element: &str| gst && tool_exists("gst-inspect-1.0", element);
    let (x264, openh264enc) = (has("x264enc"), has("openh264enc"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bench encode: {} frames per size at {} fps, {} ({} cores), load average {}",
        args.frames,
        args.fps,
        cpu_model(),
        cores,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !gst {
        println!("gst-launch-1.0 not found: GStreamer peers skipped, only our encoder is measured");
    } else {
        if !x264 {
            println!("GStreamer has no x264enc: that peer is skipped");
        }
        if !openh264enc {
            println!("GStreamer has no openh264enc: that peer is skipped");
        }
    }
    println!(
        "wall ms/f: ours = time inside encode() per frame; GStreamer = whole gst-launch run / frames \
         (includes start-up, file read and parse: see the read+parse row)."
    );
    println!(
        "CPU ms/f: user+sys (ours: RUSAGE_SELF around encode(); gst: RUSAGE_CHILDREN). core % = CPU \
         share of one core at the input frame rate. ours/peer: wall (w) and CPU (c) ratios."
    );

    let dir = tempfile::tempdir()?;
    for (w, h) in sizes {
        let kbps = args.bitrate_kbps.unwrap_or_else(|| {
            let bits = f64::from(w) * f64::from(h) * f64::from(args.fps) * 0.09 / 1000.0;
            ((bits / 100.0).round() * 100.0).max(100.0) as u32
        });
        let raw = dir.path().join(format!("{w}x{h}.i420"));
        write_frames(&raw, w, h, args.frames, args.fps)?;
        let gop = args.fps * 2;
        let settings = EncoderSettings {
            width: w,
            height: h,
            fps: args.fps,
            bitrate_bps: kbps * 1000,
            keyframe_interval_frames: gop,
            profile: H264Profile::ConstrainedBaseline,
        };
        let mut rows = vec![run_ours(&raw, &settings, args.frames)?];
        let out = dir.path().join("out.h264");
        if x264 {
            rows.push(run_gst(
                "gst x264enc ultrafast zerolatency",
                &raw,
                &out,
                w,
                h,
                args.fps,
                &words(&format!(
                    "x264enc speed-preset=ultrafast tune=zerolatency bitrate={kbps} key-int-max={gop}"
                )),
            )?);
        }
        if openh264enc {
            rows.push(run_gst(
                "gst openh264enc (same settings)",
                &raw,
                &out,
                w,
                h,
                args.fps,
                &words(&format!(
                    "openh264enc bitrate={} rate-control=bitrate complexity=medium gop-size={gop} \
                     multi-thread=1 slice-mode=n-slices num-slices=1 enable-frame-skip=false",
                    kbps * 1000
                )),
            )?);
        }
        if gst {
            rows.push(run_gst(
                "gst read+parse only (fakesink)",
                &raw,
                &out,
                w,
                h,
                args.fps,
                &[],
            )?);
        }
        print_table(
            &format!(
                "{w}x{h} @ {} fps, target {kbps} kbit/s, IDR every {gop} frames",
                args.fps
            ),
            args.frames,
            args.fps,
            &rows,
        );
        std::fs::remove_file(&raw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("720p").unwrap(), (1280, 720));
        assert_eq!(parse_size(" 1080p").unwrap(), (1920, 1080));
        assert_eq!(parse_size("320x240").unwrap(), (320, 240));
        assert!(parse_size("321x240").is_err());
        assert!(parse_size("big").is_err());
    }
}

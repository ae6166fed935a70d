//! The `stamp-decode` tool's interface, as the Python and GStreamer harnesses use it:
//! raw I420 on stdin, one JSON line per frame on stdout.

// A test harness: a failed step should fail the test on the spot.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use telecart_stamp::{CaptureTime, TestPattern};

const BIN: &str = env!("CARGO_BIN_EXE_stamp-decode");

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Runs `stamp-decode args` on `input`; returns its exit code and stdout lines as JSON.
fn run(args: &[&str], input: Vec<u8>) -> (i32, Vec<Value>) {
    let (code, stdout) = run_raw(args, input);
    let lines = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (code, lines)
}

/// Runs `stamp-decode args` on `input`; returns its exit code and stdout.
fn run_raw(args: &[&str], input: Vec<u8>) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    (output.status.code().unwrap(), stdout)
}

#[test]
fn prints_one_line_per_frame_with_latency() {
    let pattern = TestPattern::new(640, 480).unwrap();
    let t0 = now_micros();
    let mut input = Vec::new();
    for sequence in [7u64, 8, u64::from(u32::MAX) + 5] {
        input.extend(
            pattern
                .render(sequence, CaptureTime(t0 + sequence % 100))
                .data,
        );
    }
    // A frame with no stamp, then half a frame: the input was cut.
    input.extend(vec![16u8; 640 * 480 * 3 / 2]);
    input.extend(vec![16u8; 1000]);

    let (code, lines) = run(&["--width", "640", "--height", "480"], input);
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (n, sequence) in [7u64, 8, u64::from(u32::MAX) + 5].into_iter().enumerate() {
        let line = &lines[n];
        assert_eq!(line["frame"], n);
        assert_eq!(line["sequence"], sequence);
        assert_eq!(line["capture_time_us"], t0 + sequence % 100);
        let latency = line["latency_us"].as_i64().unwrap();
        assert!((0..60_000_000).contains(&latency), "latency {latency}");
        assert_eq!(line.as_object().unwrap().len(), 4);
    }
    assert_eq!(lines[3]["frame"], 3);
    assert_eq!(lines[3]["error"], "no stamp found");
    assert_eq!(lines[4]["frame"], 4);
    assert!(
        lines[4]["error"]
            .as_str()
            .unwrap()
            .starts_with("truncated frame")
    );
}

#[test]
fn reads_gstreamer_padded_rows() {
    // 642 wide: GStreamer pads Y rows to 644 bytes and chroma rows from 321 to 324.
    let (w, h) = (642usize, 480usize);
    let frame = TestPattern::new(w as u32, h as u32)
        .unwrap()
        .render(99, CaptureTime(1_773_000_000_000_000));
    let (y, u, v) = frame.planes();
    let mut input = Vec::new();
    for row in y.chunks(w) {
        input.extend(row);
        input.extend([0, 0]);
    }
    for plane in [u, v] {
        for row in plane.chunks(w / 2) {
            input.extend(row);
            input.extend([0, 0, 0]);
        }
    }
    let args = ["--width=642", "--height=480", "--layout=gstreamer"];
    let (code, lines) = run(&args, input);
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["sequence"], 99);
}

#[test]
fn refuses_a_bad_command_line() {
    let (code, lines) = run(&["--width", "640"], Vec::new());
    assert_eq!((code, lines.len()), (2, 0));
    let (code, stdout) = run_raw(&["--help"], Vec::new());
    assert_eq!(code, 0);
    assert!(stdout.starts_with("usage: stamp-decode"));
}

/// The pattern through GStreamer's x264 encoder at 300 kbps and libav's decoder, read back
/// by the tool: the chain a GStreamer-based receiver test uses. Skipped when GStreamer
/// (with x264enc and avdec_h264) is not installed.
#[test]
fn reads_frames_through_gstreamer_h264() {
    let available = ["x264enc", "avdec_h264", "rawvideoparse"]
        .iter()
        .all(|element| {
            Command::new("gst-inspect-1.0")
                .arg(element)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if !available {
        eprintln!("skipped: GStreamer with x264enc, avdec_h264 and rawvideoparse not found");
        return;
    }
    let (w, h, frames) = (640u32, 480u32, 60u64);
    let pipeline = format!(
        "fdsrc fd=0 blocksize={} ! rawvideoparse width={w} height={h} format=i420 framerate=30/1 \
         ! x264enc bitrate=300 speed-preset=ultrafast tune=zerolatency key-int-max=60 \
         ! video/x-h264,profile=constrained-baseline ! h264parse ! avdec_h264 \
         ! video/x-raw,format=I420 ! fdsink fd=1",
        w * h * 3 / 2
    );
    let mut gst = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut decode = Command::new(BIN)
        .args(["--width", &w.to_string(), "--height", &h.to_string()])
        .stdin(Stdio::from(gst.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut gst_in = gst.stdin.take().unwrap();
    let t0 = now_micros();
    let writer = std::thread::spawn(move || {
        let pattern = TestPattern::new(w, h).unwrap();
        let mut frame = pattern.render(0, CaptureTime(0));
        for sequence in 0..frames {
            pattern.render_into(&mut frame, sequence, CaptureTime(t0 + sequence * 33_333));
            gst_in.write_all(&frame.data).unwrap();
        }
    });
    let mut out = String::new();
    decode
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    writer.join().unwrap();
    assert!(gst.wait().unwrap().success());
    assert!(decode.wait().unwrap().success());
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, frames, "{out}");
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line["sequence"], n, "{line}");
        assert_eq!(line["capture_time_us"], t0 + n as u64 * 33_333);
    }
}

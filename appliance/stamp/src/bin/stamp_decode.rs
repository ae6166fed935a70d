//! `stamp-decode`: the receiver-side reader of telecart's stamped test pattern.
//!
//! Reads raw I420 frames from stdin and prints one JSON line per frame on stdout; see the
//! `telecart-stamp` crate docs ("The `stamp-decode` tool") for the interface, which other
//! test harnesses rely on.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use telecart_stamp::{MAX_DIMENSION, MIN_WIDTH, decode_stamp, strip_height};

const USAGE: &str = "\
usage: stamp-decode --width W --height H [--layout packed|gstreamer]

Reads raw I420 frames of W x H from stdin and prints one JSON line per frame:
  {\"frame\":N,\"sequence\":S,\"capture_time_us\":T,\"latency_us\":L}
  {\"frame\":N,\"error\":\"...\"}
N counts frames from 0; L is this host's wall clock when the frame was read minus T,
in microseconds (negative if the clocks disagree).

--layout packed     planes tightly packed, W*H*3/2 bytes a frame (ffmpeg -f rawvideo,
                    GStreamer when W is a multiple of 8) [default]
--layout gstreamer  GStreamer's default I420 strides: rows padded to 4 bytes";

/// How the frames on stdin are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Y, U, V tightly packed.
    Packed,
    /// GStreamer's default I420: Y rows padded to 4 bytes, chroma rows too.
    Gstreamer,
}

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Args {
    width: u32,
    height: u32,
    layout: Layout,
}

impl Args {
    /// Bytes of one Y row.
    fn y_stride(self) -> usize {
        match self.layout {
            Layout::Packed => self.width as usize,
            Layout::Gstreamer => (self.width as usize).next_multiple_of(4),
        }
    }

    /// Bytes of one whole frame.
    fn frame_len(self) -> usize {
        let (w, h) = (self.width as usize, self.height as usize);
        let chroma_stride = match self.layout {
            Layout::Packed => w / 2,
            Layout::Gstreamer => (w / 2).next_multiple_of(4),
        };
        self.y_stride() * h + 2 * chroma_stride * (h / 2)
    }
}

/// Parses the arguments after the program name. `Ok(None)` means help was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut width = None;
    let mut height = None;
    let mut layout = Layout::Packed;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if name == "--help" || name == "-h" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--width" => width = Some(parse_dimension("--width", &value()?)?),
            "--height" => height = Some(parse_dimension("--height", &value()?)?),
            "--layout" => {
                layout = match value()?.as_str() {
                    "packed" => Layout::Packed,
                    "gstreamer" => Layout::Gstreamer,
                    other => {
                        return Err(format!(
                            "--layout must be packed or gstreamer, not {other:?}"
                        ));
                    }
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let width = width.ok_or("--width is required")?;
    let height = height.ok_or("--height is required")?;
    if width < MIN_WIDTH || height < strip_height(width) {
        return Err(format!(
            "a {width}x{height} picture cannot carry a stamp: the width must be at least {MIN_WIDTH} and the height at least width/8"
        ));
    }
    Ok(Some(Args {
        width,
        height,
        layout,
    }))
}

fn parse_dimension(name: &str, value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(v) if v > 0 && v.is_multiple_of(2) && v <= MAX_DIMENSION => Ok(v),
        _ => Err(format!(
            "{name} must be an even number of pixels from 2 to {MAX_DIMENSION}, not {value:?}"
        )),
    }
}

/// Fills `buf` from `input`; returns how many bytes it got (less than `buf.len()` only at the end).
fn read_frame(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Wall clock in microseconds since the UNIX epoch.
fn now_micros() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_micros() as i128,
        Err(before) => -(before.duration().as_micros() as i128),
    }
}

/// The JSON line for frame `index` held in `buf` (`got` bytes of it valid), read at `now`.
fn report(args: Args, index: u64, buf: &[u8], got: usize, now: i128) -> serde_json::Value {
    if got < buf.len() {
        return json!({
            "frame": index,
            "error": format!("truncated frame: input ended after {got} of {} bytes", buf.len()),
        });
    }
    match decode_stamp(buf, args.width, args.height, args.y_stride()) {
        Ok(stamp) => {
            let capture = stamp.capture_time.as_micros();
            let latency = (now - i128::from(capture)).clamp(i64::MIN.into(), i64::MAX.into());
            json!({
                "frame": index,
                "sequence": stamp.sequence,
                "capture_time_us": capture,
                "latency_us": latency as i64,
            })
        }
        Err(e) => json!({ "frame": index, "error": e.to_string() }),
    }
}

fn run(args: Args) -> io::Result<()> {
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut buf = vec![0u8; args.frame_len()];
    for index in 0u64.. {
        let got = read_frame(&mut input, &mut buf)?;
        if got == 0 {
            return Ok(());
        }
        let line = report(args, index, &buf, got, now_micros());
        writeln!(output, "{line}")?;
        output.flush()?;
        if got < buf.len() {
            return Ok(());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("stamp-decode: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away: nothing left to tell anyone.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stamp-decode: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_both_spellings_and_the_layout() {
        let want = Args {
            width: 640,
            height: 480,
            layout: Layout::Packed,
        };
        assert_eq!(
            parse(&["--width", "640", "--height", "480"]),
            Ok(Some(want))
        );
        assert_eq!(parse(&["--height=480", "--width=640"]), Ok(Some(want)));
        let gst = parse(&["--width", "642", "--height", "480", "--layout", "gstreamer"]);
        assert_eq!(
            gst.map(|a| a.map(|a| a.layout)),
            Ok(Some(Layout::Gstreamer))
        );
        assert_eq!(parse(&["--help"]), Ok(None));
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            &["--width", "640"][..],
            &["--width", "641", "--height", "480"],
            &["--width", "640", "--height", "0"],
            &["--width", "x", "--height", "480"],
            &["--width", "100", "--height", "100"],
            &["--width", "640", "--height", "480", "--fps", "30"],
            &["--width", "640", "--height", "480", "--layout", "nv12"],
            &["--width"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn frame_sizes_match_ffmpeg_and_gstreamer() {
        let args = |width, layout| Args {
            width,
            height: 480,
            layout,
        };
        assert_eq!(args(640, Layout::Packed).frame_len(), 640 * 480 * 3 / 2);
        assert_eq!(args(640, Layout::Gstreamer).frame_len(), 640 * 480 * 3 / 2);
        // GStreamer pads 642 to 644 for Y and 321 to 324 for U and V.
        assert_eq!(
            args(642, Layout::Gstreamer).frame_len(),
            644 * 480 + 2 * 324 * 240
        );
        assert_eq!(args(642, Layout::Gstreamer).y_stride(), 644);
    }
}

//! `cartctl privacy-check`: proves on a running cart that privacy really stops the camera and
//! the microphone, and that both come back. It drives the console like a nurse's switch would
//! (`POST /api/cart/privacy`), watches what the cart actually sends (the console's live H.264
//! stream, decoded here) and reads the microphone chain's counters on `/metrics`.
//!
//! The verdict is pure ([`judge`]); the HTTP, the decoder and the clock are the edges.

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// `cartctl privacy-check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The cart's console.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    console: String,
    /// The console's access token, if it has one.
    #[arg(long, env = "CARTD_CONSOLE_TOKEN")]
    token: Option<String>,
    /// How long privacy is held on (and the camera watched before it).
    #[arg(long, default_value_t = 3.0)]
    hold_s: f64,
    /// Wait this long for the console to answer (cartd still starting).
    #[arg(long, default_value_t = 0)]
    wait_s: u64,
    /// Bound on each wait for a picture or the slate.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
}

/// What a decoded frame of the cart's stream shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// The camera (anything that is not the slate).
    Picture,
    /// The privacy slate.
    Slate,
}

/// Mean absolute luma difference under which a frame is the slate. Encoding the flat slate
/// costs a few levels; any camera picture is tens of levels away somewhere.
const SLATE_MAX_MEAN_DIFF: f64 = 8.0;

/// The slate's luma at one size, made once per size rather than per frame.
#[derive(Default)]
pub(crate) struct SlateReference {
    size: (u32, u32),
    luma: Vec<u8>,
}

impl SlateReference {
    /// Classifies a decoded luma plane (`stride` bytes a row) against the slate of its size.
    pub(crate) fn classify(
        &mut self,
        luma: &[u8],
        stride: usize,
        width: u32,
        height: u32,
    ) -> Shown {
        if self.size != (width, height) || self.luma.is_empty() {
            self.size = (width, height);
            let slate = telecart_cart::privacy::slate(width, height);
            self.luma = slate.data[..(width * height) as usize].to_vec();
        }
        compare(&self.luma, luma, stride, width, height)
    }
}

fn compare(slate: &[u8], luma: &[u8], stride: usize, width: u32, height: u32) -> Shown {
    let (w, h) = (width as usize, height as usize);
    let mut total = 0u64;
    for row in 0..h {
        let Some(line) = luma.get(row * stride..row * stride + w) else {
            return Shown::Picture;
        };
        let reference = &slate[row * w..row * w + w];
        total += line
            .iter()
            .zip(reference)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum::<u64>();
    }
    let mean = total as f64 / (w * h).max(1) as f64;
    if mean <= SLATE_MAX_MEAN_DIFF {
        Shown::Slate
    } else {
        Shown::Picture
    }
}

/// The microphone chain's counters at one moment (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MicCounters {
    /// 10 ms frames through the capture chain.
    pub(crate) processed: u64,
    /// 10 ms frames of silence (below -70 dBFS) at the chain's input.
    pub(crate) silent: u64,
}

impl MicCounters {
    /// Reads them from a Prometheus text exposition; None if the chain does not report.
    pub(crate) fn parse(metrics: &str) -> Option<MicCounters> {
        let value = |name: &str| {
            metrics.lines().find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let series = series.split('{').next()?;
                let series = series.strip_suffix("_total").unwrap_or(series);
                (series == name).then(|| value.trim().parse::<f64>().ok())?
            })
        };
        Some(MicCounters {
            processed: value("telecart_audio_frames_processed")? as u64,
            silent: value("telecart_audio_silent_frames")? as u64,
        })
    }

    fn since(self, earlier: MicCounters) -> (u64, u64) {
        (
            self.processed.saturating_sub(earlier.processed),
            self.silent.saturating_sub(earlier.silent),
        )
    }
}

/// Everything the check saw, in the order it happened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observations {
    /// Frames decoded, with when they were decoded.
    pub(crate) frames: Vec<(Instant, Shown)>,
    /// When the console accepted privacy on.
    pub(crate) on_at: Option<Instant>,
    /// When the console accepted privacy off.
    pub(crate) off_at: Option<Instant>,
    /// Microphone counters: before privacy (start, end of the same span), and across privacy.
    pub(crate) mic_before: Option<(MicCounters, MicCounters)>,
    /// Counters from just after privacy took effect to just before it was turned off.
    pub(crate) mic_during: Option<(MicCounters, MicCounters)>,
}

/// One line of the verdict.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    pub(crate) pass: Option<bool>,
    pub(crate) what: &'static str,
    pub(crate) detail: String,
}

fn finding(pass: Option<bool>, what: &'static str, detail: String) -> Finding {
    Finding { pass, what, detail }
}

/// The verdict on what was seen: the camera before, only the slate from the first slate until
/// privacy was turned off, a silent microphone meanwhile, the camera again after.
pub(crate) fn judge(seen: &Observations) -> Vec<Finding> {
    let mut out = Vec::new();
    let (Some(on_at), Some(off_at)) = (seen.on_at, seen.off_at) else {
        out.push(finding(
            Some(false),
            "privacy",
            "the console did not accept the privacy request".into(),
        ));
        return out;
    };
    let before = seen.frames.iter().filter(|(t, _)| *t < on_at);
    let pictures_before = before.clone().filter(|(_, s)| *s == Shown::Picture).count();
    out.push(finding(
        Some(pictures_before > 0),
        "camera",
        format!("{pictures_before} camera frames before privacy"),
    ));

    let first_slate = seen
        .frames
        .iter()
        .find(|(t, s)| *t >= on_at && *s == Shown::Slate)
        .map(|(t, _)| *t);
    match first_slate {
        Some(slate_at) if slate_at <= off_at => {
            let leaked = seen
                .frames
                .iter()
                .filter(|(t, s)| *t > slate_at && *t <= off_at && *s == Shown::Picture)
                .count();
            let slates = seen
                .frames
                .iter()
                .filter(|(t, s)| *t >= slate_at && *t <= off_at && *s == Shown::Slate)
                .count();
            out.push(finding(
                Some(leaked == 0),
                "privacy on",
                format!(
                    "slate {} ms after the request; {leaked} camera frames and {slates} slate frames in {:.1} s of privacy",
                    slate_at.duration_since(on_at).as_millis(),
                    off_at.duration_since(slate_at).as_secs_f64()
                ),
            ));
        }
        _ => out.push(finding(
            Some(false),
            "privacy on",
            "the slate never appeared while privacy was on".into(),
        )),
    }

    out.push(match seen.mic_during {
        Some((start, end)) => {
            let (processed, silent) = end.since(start);
            let baseline = seen
                .mic_before
                .map(|(a, b)| b.since(a))
                .filter(|(p, _)| *p > 0)
                .map(|(p, s)| {
                    format!(
                        " (before privacy: {:.1}% silent)",
                        100.0 * s as f64 / p as f64
                    )
                })
                .unwrap_or_default();
            if processed == 0 {
                finding(
                    Some(false),
                    "microphone",
                    "no microphone frames were processed during privacy".into(),
                )
            } else {
                finding(
                    Some(silent >= processed),
                    "microphone",
                    format!(
                        "{:.1}% of {processed} 10 ms frames silent during privacy{baseline}",
                        100.0 * silent as f64 / processed as f64
                    ),
                )
            }
        }
        None => finding(
            None,
            "microphone",
            "the cart reports no microphone chain counters (no microphone, or processing off)"
                .into(),
        ),
    });

    let back = seen
        .frames
        .iter()
        .find(|(t, s)| *t >= off_at && *s == Shown::Picture)
        .map(|(t, _)| *t);
    out.push(match back {
        Some(t) => finding(
            Some(true),
            "privacy off",
            format!(
                "camera {} ms after the request",
                t.duration_since(off_at).as_millis()
            ),
        ),
        None => finding(
            Some(false),
            "privacy off",
            "the camera did not come back after privacy was turned off".into(),
        ),
    });
    out
}

struct Console {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Console {
    fn new(args: &Args) -> Console {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Console {
            base: args.console.trim_end_matches('/').to_string(),
            token: args.token.clone(),
            agent,
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let response = req
            .call()
            .with_context(|| format!("GET {}{path}", self.base))?;
        if !response.status().is_success() {
            bail!("GET {path}: {}", response.status());
        }
        Ok(response)
    }

    fn text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .get(path)?
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()?)
    }

    fn privacy(&self, on: bool) -> anyhow::Result<()> {
        let mut req = self.agent.post(format!("{}/api/cart/privacy", self.base));
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let response = req
            .header("Content-Type", "application/json")
            .send(format!("{{\"on\":{on}}}"))
            .context("POST /api/cart/privacy")?;
        if !response.status().is_success() {
            bail!("POST /api/cart/privacy: {}", response.status());
        }
        Ok(())
    }

    fn privacy_on(&self) -> anyhow::Result<bool> {
        let view: serde_json::Value =
            serde_json::from_str(&self.text("/api/cart")?).context("GET /api/cart: not JSON")?;
        view.get("privacy")
            .and_then(serde_json::Value::as_bool)
            .context("GET /api/cart: no `privacy`")
    }

    fn mic(&self) -> Option<MicCounters> {
        MicCounters::parse(&self.text("/metrics").ok()?)
    }
}

/// Splits an Annex B byte stream into access units as the bytes arrive: a unit ends where the
/// next one's first slice, parameter set, SEI or delimiter begins, which is known from the first
/// bytes of that NAL unit, so a unit is out as soon as the next one starts.
#[derive(Default)]
pub(crate) struct AccessUnits {
    /// Bytes from the start code of the NAL unit being received.
    pending: Vec<u8>,
    /// Whether `pending`'s NAL unit has been looked at for a picture boundary.
    head_checked: bool,
    unit: Vec<u8>,
    unit_has_slice: bool,
}

impl AccessUnits {
    /// Feeds bytes; returns the access units they completed.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(bytes);
        let mut done = Vec::new();
        loop {
            let starts = start_codes(&self.pending);
            match starts.first() {
                None => return done,
                Some(0) => {}
                // Bytes before the first start code belong to no NAL unit.
                Some(&first) => {
                    self.pending.drain(..first);
                    continue;
                }
            }
            if !self.head_checked {
                let Some((kind, first_mb_zero)) = nal_head(&self.pending) else {
                    return done;
                };
                let begins_picture = match kind {
                    1 | 5 => first_mb_zero,
                    6..=9 => true,
                    _ => false,
                };
                if begins_picture && self.unit_has_slice {
                    done.push(std::mem::take(&mut self.unit));
                    self.unit_has_slice = false;
                }
                self.unit_has_slice |= matches!(kind, 1 | 5);
                self.head_checked = true;
            }
            let Some(&next) = starts.get(1) else {
                return done;
            };
            self.unit.extend(self.pending.drain(..next));
            self.head_checked = false;
        }
    }
}

/// The NAL unit type and whether a slice starts at macroblock 0 (its first header bit is the
/// `ue(v)` code for 0), from the bytes after a start code; None until enough bytes are here.
fn nal_head(nal: &[u8]) -> Option<(u8, bool)> {
    let header = nal.iter().position(|b| *b == 1)? + 1;
    let kind = nal.get(header)? & 0x1f;
    Some((kind, nal.get(header + 1)? & 0x80 != 0))
}

/// Offsets of the 3- and 4-byte start codes in `data`.
fn start_codes(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            out.push(if i > 0 && data[i - 1] == 0 { i - 1 } else { i });
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// Reads the console's stream, decodes it and sends what each frame shows.
fn watch_stream(mut body: impl Read, frames: mpsc::Sender<(Instant, Shown)>) -> anyhow::Result<()> {
    let mut decoder = Decoder::new().context("starting the H.264 decoder")?;
    let mut units = AccessUnits::default();
    let mut slate = SlateReference::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body
            .read(&mut buf)
            .context("reading the console's stream")?;
        if n == 0 {
            bail!("the console's stream ended");
        }
        for unit in units.push(&buf[..n]) {
            let Ok(Some(picture)) = decoder.decode(&unit) else {
                continue;
            };
            let (width, height) = picture.dimensions();
            let (stride, _, _) = picture.strides();
            let shown = slate.classify(picture.y(), stride, width as u32, height as u32);
            if frames.send((Instant::now(), shown)).is_err() {
                return Ok(());
            }
        }
    }
}

/// Collects frames until `until` says stop or `timeout` passes.
fn collect(
    rx: &mpsc::Receiver<(Instant, Shown)>,
    seen: &mut Observations,
    timeout: Duration,
    mut until: impl FnMut(&(Instant, Shown)) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(frame) => {
                seen.frames.push(frame);
                if until(&frame) {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Runs the check and prints the verdict; an error when any part fails.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let console = Console::new(args);
    let ready_by = Instant::now() + Duration::from_secs(args.wait_s);
    let privacy_was_on = loop {
        match console.privacy_on() {
            Ok(on) => break on,
            Err(e) if Instant::now() >= ready_by => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    if privacy_was_on {
        bail!("privacy is already on: turn it off to check that it works");
    }
    let hold = Duration::from_secs_f64(args.hold_s.max(0.5));
    let timeout = Duration::from_secs(args.timeout_s);
    let stream = console.get("/api/stream.h264")?;
    let (tx, rx) = mpsc::channel();
    let watcher = std::thread::spawn(move || watch_stream(stream.into_body().into_reader(), tx));
    let mut seen = Observations::default();

    let mut pictures = 0;
    if !collect(&rx, &mut seen, timeout, |(_, s)| {
        pictures += usize::from(*s == Shown::Picture);
        pictures >= 5
    }) {
        let why = if watcher.is_finished() {
            match watcher.join() {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "the stream stopped".into(),
            }
        } else {
            format!("no camera picture within {} s", timeout.as_secs())
        };
        bail!("the cart's stream: {why}");
    }
    let mic_start = console.mic();
    collect(&rx, &mut seen, hold, |_| false);
    seen.mic_before = mic_start.zip(console.mic());

    let result = (|| -> anyhow::Result<()> {
        console.privacy(true)?;
        seen.on_at = Some(Instant::now());
        collect(&rx, &mut seen, timeout, |(_, s)| *s == Shown::Slate);
        // The microphone gate acts on the next 10 ms frame; leave a block's worth of margin.
        collect(&rx, &mut seen, Duration::from_millis(200), |_| false);
        let mic_start = console.mic();
        collect(&rx, &mut seen, hold, |_| false);
        seen.mic_during = mic_start.zip(console.mic());
        Ok(())
    })();
    // Whatever happened, the cart goes back to how it was found.
    let off = console.privacy(false);
    seen.off_at = off.is_ok().then(Instant::now);
    result?;
    off?;
    let off_at = seen.off_at;
    collect(&rx, &mut seen, timeout, |(t, s)| {
        off_at.is_some_and(|off| *t >= off) && *s == Shown::Picture
    });
    drop(rx);

    let findings = judge(&seen);
    let mut failed = 0;
    for f in &findings {
        let verdict = match f.pass {
            Some(true) => "PASS",
            Some(false) => {
                failed += 1;
                "FAIL"
            }
            None => "SKIP",
        };
        println!("{verdict} {:<12} {}", f.what, f.detail);
    }
    if failed > 0 {
        bail!("{failed} privacy check(s) failed");
    }
    println!("privacy works: the camera and microphone stop and come back");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_codec::OpenH264Encoder;
    use telecart_codec::synthetic::moving_frame;
    use telecart_codec::{EncoderSettings, VideoEncoder};
    use telecart_core::VideoFrame;
    use telecart_core::config::H264Profile;

    #[test]
    fn the_slate_is_the_slate_and_a_picture_is_not() {
        let slate = telecart_cart::privacy::slate(320, 240);
        let mut reference = SlateReference::default();
        let mut classify = |l: &[u8], s, w, h| reference.classify(l, s, w, h);
        assert_eq!(classify(&slate.data, 320, 320, 240), Shown::Slate);
        let picture = moving_frame(320, 240, 3, 30);
        assert_eq!(classify(&picture.data, 320, 320, 240), Shown::Picture);
        // A slate with a camera's strip left in it is not the slate.
        let mut leaky = slate.data.clone();
        leaky[..320 * 60].copy_from_slice(&picture.data[..320 * 60]);
        assert_eq!(classify(&leaky, 320, 320, 240), Shown::Picture);
        // A short plane is a picture, never a panic.
        assert_eq!(classify(&slate.data[..1000], 320, 320, 240), Shown::Picture);
    }

    fn encoded_stream(frames: &[VideoFrame]) -> Vec<u8> {
        let (w, h) = (frames[0].width, frames[0].height);
        let mut encoder = OpenH264Encoder::new(EncoderSettings {
            width: w,
            height: h,
            fps: 30,
            bitrate_bps: 400_000,
            keyframe_interval_frames: 0,
            profile: H264Profile::ConstrainedBaseline,
        })
        .unwrap();
        frames
            .iter()
            .flat_map(|f| encoder.encode(f).unwrap().unwrap().data.to_vec())
            .collect()
    }

    #[test]
    fn a_stream_cut_anywhere_decodes_into_the_frames_in_it() {
        let slate = telecart_cart::privacy::slate(160, 120);
        let frames: Vec<VideoFrame> = (0..6)
            .map(|i| {
                if (2..4).contains(&i) {
                    slate.clone()
                } else {
                    moving_frame(160, 120, i, 30)
                }
            })
            .collect();
        let stream = encoded_stream(&frames);
        for chunk in [1, 7, 100, 4096] {
            let mut units = AccessUnits::default();
            let mut decoder = Decoder::new().unwrap();
            let mut shown = Vec::new();
            let mut reference = SlateReference::default();
            for piece in stream.chunks(chunk) {
                for unit in units.push(piece) {
                    if let Some(p) = decoder.decode(&unit).unwrap() {
                        shown.push(reference.classify(p.y(), p.strides().0, 160, 120));
                    }
                }
            }
            // The last unit waits for the next one's start.
            use Shown::*;
            assert_eq!(
                shown,
                [Picture, Picture, Slate, Slate, Picture],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn counters_are_read_from_the_exposition_with_labels_and_suffixes() {
        let text = "# HELP x\ntelecart_audio_frames_processed_total{cart=\"a b\"} 799\n\
                    telecart_audio_silent_frames_total{cart=\"a b\"} 188\n";
        assert_eq!(
            MicCounters::parse(text),
            Some(MicCounters {
                processed: 799,
                silent: 188
            })
        );
        assert_eq!(
            MicCounters::parse("telecart_audio_frames_processed 1\n"),
            None
        );
    }

    fn timeline(frames: &[(u64, Shown)], on: u64, off: u64) -> Observations {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        Observations {
            frames: frames.iter().map(|(ms, s)| (at(*ms), *s)).collect(),
            on_at: Some(at(on)),
            off_at: Some(at(off)),
            mic_before: Some((
                MicCounters::default(),
                MicCounters {
                    processed: 100,
                    silent: 10,
                },
            )),
            mic_during: Some((
                MicCounters::default(),
                MicCounters {
                    processed: 300,
                    silent: 300,
                },
            )),
        }
    }

    fn verdicts(seen: &Observations) -> Vec<(&'static str, Option<bool>)> {
        judge(seen).into_iter().map(|f| (f.what, f.pass)).collect()
    }

    #[test]
    fn a_clean_toggle_passes_and_every_kind_of_leak_fails() {
        use Shown::*;
        let good = [
            (0, Picture),
            (40, Picture),
            (140, Slate),
            (180, Slate),
            (1040, Picture),
        ];
        let all_pass = vec![
            ("camera", Some(true)),
            ("privacy on", Some(true)),
            ("microphone", Some(true)),
            ("privacy off", Some(true)),
        ];
        assert_eq!(verdicts(&timeline(&good, 100, 1000)), all_pass);

        // A camera frame between slates while privacy is on.
        let leak = [
            (0, Picture),
            (140, Slate),
            (180, Picture),
            (220, Slate),
            (1040, Picture),
        ];
        assert_eq!(
            verdicts(&timeline(&leak, 100, 1000))[1],
            ("privacy on", Some(false))
        );

        // The slate never came.
        let never = [(0, Picture), (140, Picture), (1040, Picture)];
        assert_eq!(
            verdicts(&timeline(&never, 100, 1000))[1],
            ("privacy on", Some(false))
        );

        // The camera did not come back.
        let stuck = [(0, Picture), (140, Slate), (1040, Slate)];
        assert_eq!(
            verdicts(&timeline(&stuck, 100, 1000))[3],
            ("privacy off", Some(false))
        );

        // The microphone was heard during privacy.
        let mut heard = timeline(&good, 100, 1000);
        heard.mic_during = Some((
            MicCounters::default(),
            MicCounters {
                processed: 300,
                silent: 280,
            },
        ));
        assert_eq!(verdicts(&heard)[2], ("microphone", Some(false)));
        heard.mic_during = None;
        assert_eq!(verdicts(&heard)[2], ("microphone", None));
    }
}

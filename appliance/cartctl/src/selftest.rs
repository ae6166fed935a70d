//! `cartctl selftest`: camera, microphone, speaker loop, board/GPIO, network reachability,
//! storage and clock, each PASS, FAIL (with the reason) or SKIP (with why), non-zero exit on any
//! FAIL. Every check has a time bound, so a hung device cannot hang the tool.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use telecart_core::config::{MicrophoneSource, SpeakerSink, VideoSource};
use telecart_core::{CaptureTime, Config, VideoFrame};
use telecart_turn::StunBinding;

/// `cartctl selftest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The cart's configuration.
    #[arg(
        long,
        short,
        env = "CARTD_CONFIG",
        default_value = "/etc/telecart/cart.toml"
    )]
    config: PathBuf,
    /// The `[update]` configuration (for the board name), if any.
    #[arg(
        long,
        env = "CARTCTL_UPDATE_CONFIG",
        default_value = "/etc/telecart/update.toml"
    )]
    update_config: PathBuf,
    /// Bound on each device and network check.
    #[arg(long, default_value_t = 5)]
    timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    Skip,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        })
    }
}

struct Check {
    name: String,
    verdict: Verdict,
    detail: String,
}

fn check(name: &str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        verdict,
        detail: detail.into(),
    }
}

/// Runs `f` on a thread and gives up after `timeout` (the thread is left to finish on its own).
fn bounded<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).ok()
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let board = telecart_update::UpdateConfig::load(&args.update_config)
        .ok()
        .map(|c| c.board);
    let mut checks = vec![
        camera(&config, timeout),
        microphone(&config, timeout),
        speaker(&config, timeout),
        board_check(board.as_deref()),
    ];
    checks.extend(network(&config, timeout));
    checks.push(storage(&config));
    checks.push(clock());
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(8);
    for c in &checks {
        println!("{:<width$}  {}  {}", c.name, c.verdict, c.detail);
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let passed = checks.iter().filter(|c| c.verdict == Verdict::Pass).count();
    let skipped = checks.len() - failed - passed;
    println!("selftest: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn camera(config: &Config, timeout: Duration) -> Check {
    let video = config.video.clone();
    let simulated = video.source == VideoSource::TestPattern;
    let result = bounded(timeout, move || -> Result<String, String> {
        let (w, h) = (video.width, video.height);
        let mut cam = telecart_devices::open_camera(
            &video,
            move |seq, at: CaptureTime| {
                VideoFrame::black(w, h, seq, at).unwrap_or_else(|_| VideoFrame {
                    width: 0,
                    height: 0,
                    data: Vec::new(),
                    sequence: seq,
                    capture_time: at,
                })
            },
            |_| {},
            Arc::new(AtomicBool::new(false)),
        )
        .map_err(|e| e.to_string())?;
        if !simulated {
            let scan = telecart_devices::scan_cameras();
            if scan.cameras.is_empty() {
                let why = scan
                    .problems
                    .first()
                    .map_or(String::new(), |p| format!(" ({p})"));
                return Err(format!("no V4L2 capture device found under /dev{why}"));
            }
        }
        let frame = cam.next_frame().map_err(|e| e.to_string())?;
        Ok(format!(
            "{}: frame {}x{} captured",
            cam.description(),
            frame.width,
            frame.height
        ))
    });
    match result {
        Some(Ok(d)) if simulated => check(
            "camera",
            Verdict::Pass,
            format!("simulated source (video.source = test-pattern), no camera checked: {d}"),
        ),
        Some(Ok(d)) => check("camera", Verdict::Pass, d),
        Some(Err(e)) => check("camera", Verdict::Fail, e),
        None => check(
            "camera",
            Verdict::Fail,
            format!("no frame within {} s", timeout.as_secs()),
        ),
    }
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

fn microphone(config: &Config, timeout: Duration) -> Check {
    let audio = config.audio.clone();
    let simulated = audio.microphone != MicrophoneSource::Alsa;
    let result = bounded(timeout, move || -> Result<String, String> {
        let mut mic = telecart_devices::open_microphone(&audio).map_err(|e| e.to_string())?;
        let mut samples = Vec::new();
        for _ in 0..20 {
            samples.extend(mic.read().map_err(|e| e.to_string())?.samples);
        }
        Ok(format!(
            "{}: {} samples, RMS level {:.0}",
            mic.description(),
            samples.len(),
            rms(&samples)
        ))
    });
    let name = "microphone";
    match result {
        Some(Ok(d)) if simulated => check(
            name,
            Verdict::Pass,
            format!("simulated source, no microphone checked: {d}"),
        ),
        Some(Ok(d)) => check(name, Verdict::Pass, d),
        Some(Err(e)) => check(name, Verdict::Fail, e),
        None => check(
            name,
            Verdict::Fail,
            format!("no audio within {} s", timeout.as_secs()),
        ),
    }
}

/// Plays a 1 kHz tone and listens for it on the microphone (the cart's speaker-to-mic loop).
fn speaker(config: &Config, timeout: Duration) -> Check {
    let name = "speaker loop";
    if config.audio.speaker == SpeakerSink::None {
        return check(name, Verdict::Skip, "audio.speaker = none");
    }
    let audio = config.audio.clone();
    let result = bounded(timeout, move || -> Result<String, String> {
        let mut out = telecart_devices::open_speaker(&audio)
            .map_err(|e| e.to_string())?
            .ok_or("no speaker")?;
        let mut mic = telecart_devices::open_microphone(&audio).map_err(|e| e.to_string())?;
        let rate = audio.sample_rate;
        let period = (rate * audio.period_ms / 1000) as usize * usize::from(audio.channels);
        let (mut heard, mut quiet) = (Vec::new(), Vec::new());
        for i in 0..50u64 {
            let tone = i >= 10;
            let samples: Vec<i16> = (0..period)
                .map(|n| {
                    let t = (i as usize * period + n) as f64
                        / f64::from(rate)
                        / f64::from(audio.channels);
                    if tone {
                        (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                    } else {
                        0
                    }
                })
                .collect();
            let frame = telecart_core::AudioFrame {
                sample_rate: rate,
                channels: audio.channels,
                samples,
                sequence: i,
                capture_time: CaptureTime(0),
            };
            out.write(&frame).map_err(|e| e.to_string())?;
            let got = mic.read().map_err(|e| e.to_string())?.samples;
            if i < 10 {
                quiet.extend(got)
            } else if i >= 20 {
                heard.extend(got)
            }
        }
        let (q, h) = (rms(&quiet), rms(&heard));
        if h > 4.0 * q.max(10.0) {
            Ok(format!(
                "{}: tone heard (RMS {h:.0} vs {q:.0} before)",
                out.description()
            ))
        } else {
            Err(format!(
                "{}: tone not heard on the microphone (RMS {h:.0} vs {q:.0} before)",
                out.description()
            ))
        }
    });
    match result {
        Some(Ok(d)) => check(name, Verdict::Pass, d),
        Some(Err(e)) => check(name, Verdict::Fail, e),
        None => check(
            name,
            Verdict::Fail,
            format!("did not finish within {} s", timeout.as_secs()),
        ),
    }
}

fn board_check(board: Option<&str>) -> Check {
    let model = std::fs::read_to_string("/proc/device-tree/model")
        .map(|m| m.trim_end_matches('\0').to_string())
        .or_else(|_| {
            std::fs::read_to_string("/sys/class/dmi/id/product_name").map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|_| "unknown machine".into());
    let chips: Vec<String> = std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("gpiochip"))
                .collect()
        })
        .unwrap_or_default();
    let needs_gpio = board.is_some_and(|b| b.starts_with("rpi") || b.starts_with("cm"));
    let detail = format!(
        "{model}; board {}; GPIO chips: {}",
        board.unwrap_or("not configured"),
        if chips.is_empty() {
            "none".into()
        } else {
            chips.join(", ")
        }
    );
    if needs_gpio && chips.is_empty() {
        check(
            "board/GPIO",
            Verdict::Fail,
            format!("{detail}: a Raspberry Pi board needs /dev/gpiochip*"),
        )
    } else if board.is_none() {
        check(
            "board/GPIO",
            Verdict::Skip,
            format!("{detail} (no [update] board to check against)"),
        )
    } else {
        check("board/GPIO", Verdict::Pass, detail)
    }
}

fn host_port(rest: &str, default_port: u16) -> String {
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !rest.ends_with(']')
    {
        rest.to_string()
    } else {
        format!("{rest}:{default_port}")
    }
}

fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))
}

/// A STUN Binding request through the sans-IO client of telecart-turn, bounded by `timeout`.
fn stun(target: &str, timeout: Duration) -> Result<String, String> {
    let server = resolve(target)?;
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut binding =
        StunBinding::new(Instant::now(), Duration::from_millis(250)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    loop {
        while let Some(bytes) = binding.poll_transmit() {
            socket.send_to(&bytes, server).map_err(|e| e.to_string())?;
        }
        if let Some(result) = binding.result() {
            return result
                .map(|mapped| format!("{server} answered, sees us at {mapped}"))
                .map_err(|e| e.to_string());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "{server}: no STUN answer within {} s",
                timeout.as_secs()
            ));
        }
        let wake = binding.poll_timeout().unwrap_or(deadline).min(deadline);
        socket
            .set_read_timeout(Some(
                wake.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            ))
            .map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                let _ = binding.handle_input(&buf[..n]);
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                binding.handle_timeout(Instant::now())
            }
            Err(e) => return Err(format!("{server}: {e}")),
        }
    }
}

fn tcp(target: &str, timeout: Duration) -> Result<String, String> {
    let addr = resolve(target)?;
    TcpStream::connect_timeout(&addr, timeout)
        .map(|_| format!("{addr} accepts TCP"))
        .map_err(|e| format!("{addr}: {e}"))
}

fn network(config: &Config, timeout: Duration) -> Vec<Check> {
    let mut out = Vec::new();
    for url in &config.webrtc.stun_servers {
        let target = host_port(url.trim_start_matches("stun:"), 3478);
        out.push(match stun(&target, timeout) {
            Ok(d) => check(&format!("network {url}"), Verdict::Pass, d),
            Err(e) => check(&format!("network {url}"), Verdict::Fail, e),
        });
    }
    for t in &config.webrtc.turn_servers {
        let name = format!("network {}", t.url);
        let result = if let Some(rest) = t.url.strip_prefix("turns:") {
            tcp(&host_port(rest, 5349), timeout)
        } else {
            let rest = t.url.trim_start_matches("turn:");
            if t.url.contains("transport=tcp") {
                tcp(&host_port(rest, 3478), timeout)
            } else {
                stun(&host_port(rest, 3478), timeout)
            }
        };
        out.push(match result {
            Ok(d) => check(&name, Verdict::Pass, d),
            Err(e) => check(&name, Verdict::Fail, e),
        });
    }
    let sync = &config.store.sync;
    if sync.enabled {
        let name = format!("network {}", sync.url);
        let rest = sync
            .url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        out.push(match tcp(&host_port(&rest, 443), timeout) {
            Ok(d) => check(&name, Verdict::Pass, d),
            Err(e) => check(&name, Verdict::Fail, e),
        });
    }
    if out.is_empty() {
        out.push(check(
            "network",
            Verdict::Skip,
            "no STUN, TURN or sync server configured",
        ));
    }
    out
}

fn storage(config: &Config) -> Check {
    let dir = &config.cart.data_dir;
    let probe = dir.join(format!(".selftest-{}", std::process::id()));
    let result = (|| -> Result<String, String> {
        if !dir.is_dir() {
            return Err(format!(
                "cart.data_dir {} is not a directory",
                dir.display()
            ));
        }
        let data: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let mut f =
            std::fs::File::create(&probe).map_err(|e| format!("{}: {e}", probe.display()))?;
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("writing {}: {e}", probe.display()))?;
        let mut back = Vec::new();
        std::fs::File::open(&probe)
            .and_then(|mut f| f.read_to_end(&mut back))
            .map_err(|e| format!("reading {}: {e}", probe.display()))?;
        if back != data {
            return Err(format!(
                "{}: read back differs from what was written",
                probe.display()
            ));
        }
        let free = free_bytes(dir).map_or("free space unknown".into(), |b| {
            format!("{} MiB free", b >> 20)
        });
        let key = match telecart_store::MasterKey::load(&config.store.master_key) {
            Ok(_) => "master key readable (0600)".to_string(),
            Err(e) => {
                return Err(format!(
                    "1 MiB written and read back, but store.master_key: {e}"
                ));
            }
        };
        Ok(format!(
            "{}: 1 MiB written, synced and read back; {free}; {key}",
            dir.display()
        ))
    })();
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(d) => check("storage", Verdict::Pass, d),
        Err(e) => check("storage", Verdict::Fail, e),
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, written by the call; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| s.f_bavail * s.f_frsize)
}

fn clock() -> Check {
    // No cart is built before 2026: an earlier clock means no RTC and no NTP yet.
    const FLOOR_S: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    const CEILING_S: u64 = 4_102_444_800; // 2100-01-01
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let synced = Path::new("/run/systemd/timesync/synchronized").exists();
    let sync = if synced {
        "NTP synchronized"
    } else {
        "NTP synchronization not confirmed (no systemd-timesyncd flag)"
    };
    let when = telecart_store::technician::format_time(now * 1000);
    if (FLOOR_S..CEILING_S).contains(&now) {
        check("clock", Verdict::Pass, format!("{when}; {sync}"))
    } else {
        check(
            "clock",
            Verdict::Fail,
            format!(
                "{when} is not plausible (no RTC or NTP?): TLS certificates and log times will be wrong; {sync}"
            ),
        )
    }
}

//! WebRTC against real peers, each in a network namespace the test creates:
//! - the aiortc WHIP endpoint (`tests/peers/whip_aiortc.py`) decodes the cart's
//!   H.264 and Opus; the stamped test pattern gives sequence numbers and
//!   glass-to-glass latency (also through 5 % UDP loss, where NACK/RTX must repair);
//! - headless Chromium (`tests/peers/browser_call.mjs`) calls the console's call page.
//!
//! The binary (harness = false) plays several parts, chosen by its arguments:
//! - no arguments, or a name filter: the tests; they need root and the peers
//!   installed by `bash tests/setup.sh` (`TELECART_WORK` overrides `<repo>/.work`),
//!   and fail with a clear message when either is missing;
//! - `__publish URL SECONDS WxH@FPS`: the cart publishing, run inside the namespace;
//!   prints the publish report and its own CPU use as JSON lines;
//! - `__console SECONDS`: the cart's daemon (pipeline + console), prints `URL <url>`;
//! - `--width W --height H`: the stamp decoder aiortc feeds decoded I420 frames to.
//!
//! It prints glass-to-glass latency p50/p95, set-up time and the cart's CPU.

#![allow(clippy::unwrap_used)]

mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__publish") => publish_child(&args[1..]),
        Some("__console") => console_child(&args[1..]),
        Some("--width") => stamp_decoder(&args),
        _ => {
            type Test = (&'static str, fn());
            let tests: [Test; 12] = [
                (
                    "chromium_call_follows_the_carts_route_change",
                    chromium_call_follows_the_carts_route_change,
                ),
                (
                    "chromium_restarts_ice_through_the_console",
                    chromium_restarts_ice_through_the_console,
                ),
                (
                    "publish_through_coturn_with_relay_candidates_only",
                    publish_through_coturn_with_relay_candidates_only,
                ),
                (
                    "publish_through_coturn_over_tcp_with_relay_candidates_only",
                    publish_through_coturn_over_tcp_with_relay_candidates_only,
                ),
                (
                    "publish_relay_only_through_the_turn_server_of_the_link_header",
                    publish_relay_only_through_the_turn_server_of_the_link_header,
                ),
                (
                    "publish_to_janus_restarts_ice_and_media_keeps_flowing",
                    publish_to_janus_restarts_ice_and_media_keeps_flowing,
                ),
                (
                    "publish_to_janus_follows_a_network_change",
                    publish_to_janus_follows_a_network_change,
                ),
                (
                    "publish_through_coturn_over_tls_with_relay_candidates_only",
                    publish_through_coturn_over_tls_with_relay_candidates_only,
                ),
                (
                    "publish_to_janus_is_accepted_and_counted",
                    publish_to_janus_is_accepted_and_counted,
                ),
                (
                    "publish_to_aiortc_decodes_stamped_h264_and_opus",
                    publish_to_aiortc_decodes_stamped_h264_and_opus,
                ),
                (
                    "chromium_calls_the_console_call_page",
                    chromium_calls_the_console_call_page,
                ),
                (
                    "publish_through_5_percent_loss_keeps_decoding",
                    publish_through_5_percent_loss_keeps_decoding,
                ),
            ];
            let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            for (name, test) in tests {
                if args.iter().any(|a| a == "--list") {
                    println!("{name}: test");
                    continue;
                }
                if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
                    test();
                    println!("test {name} ... ok");
                }
            }
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// ---------- the stamp decoder (aiortc runs us with --width W --height H) ----------

fn stamp_decoder(args: &[String]) {
    let get = |name: &str| -> u32 {
        let i = args.iter().position(|a| a == name).unwrap();
        args[i + 1].parse().unwrap()
    };
    let (w, h) = (get("--width"), get("--height"));
    let len = (w * h * 3 / 2) as usize;
    let mut buf = vec![0u8; len];
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    for frame in 0u64.. {
        if input.read_exact(&mut buf).is_err() {
            return;
        }
        let line = match telecart_stamp::decode_stamp(&buf, w, h, w as usize) {
            Ok(stamp) => {
                let capture = stamp.capture_time.as_micros();
                serde_json::json!({"frame": frame, "sequence": stamp.sequence,
                    "capture_time_us": capture,
                    "latency_us": now_us() as i64 - capture as i64})
            }
            Err(e) => serde_json::json!({"frame": frame, "error": e.to_string()}),
        };
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }
}

// ---------- the cart (inside the namespace) ----------

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn publish_child(args: &[String]) {
    let url = args[0].clone();
    let seconds: u64 = args[1].parse().unwrap();
    let (size, fps) = args[2].split_once('@').unwrap();
    let (w, h) = size.split_once('x').unwrap();
    let mut config = telecart_core::Config::default();
    config.cart.name = "webrtc-test".into();
    config.cart.data_dir = std::env::temp_dir().join("telecart-webrtc-test");
    config.video.width = w.parse().unwrap();
    config.video.height = h.parse().unwrap();
    config.video.fps = fps.parse().unwrap();
    let mut opts = telecart_runtime::webrtc::PublishOptions::new(url);
    opts.duration = Some(Duration::from_secs(seconds));
    opts.bind = args.get(3).map(|ip| ip.parse().unwrap());
    if let Ok(url) = std::env::var("TELECART_TEST_TURN") {
        // The daemon's own path from [webrtc] turn_servers and ca_file.
        config.webrtc.turn_servers = vec![telecart_core::config::TurnServerConfig {
            url,
            username: "cart".into(),
            password: "pw".into(),
        }];
        config.webrtc.ca_file = std::env::var_os("TELECART_TEST_CA").map(PathBuf::from);
        config.webrtc.relay_only = true;
    }
    if std::env::var_os("TELECART_TEST_RELAY_ONLY").is_some() {
        // No TURN configured: the relay must come from the answer's Link header.
        config.webrtc.relay_only = true;
    }
    if let Ok(at) = std::env::var("TELECART_TEST_ICE_RESTART_AT") {
        // What SIGUSR1 does in `cartd publish`: restart ICE once, `at` seconds in.
        let restart = std::sync::Arc::new(tokio::sync::Notify::new());
        opts.ice_restart = Some(restart.clone());
        let at = Duration::from_secs_f64(at.parse().unwrap());
        std::thread::spawn(move || {
            std::thread::sleep(at);
            restart.notify_one();
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let wall = Instant::now();
    let cpu0 = cpu_seconds();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let result = runtime.block_on(telecart_runtime::webrtc::publish_config(
        config, opts, stop_rx,
    ));
    let cpu = cpu_seconds() - cpu0;
    match result {
        Ok(report) => println!("{}", report.to_json()),
        Err(e) => println!("{}", serde_json::json!({"error": format!("{e:#}")})),
    }
    println!(
        "{}",
        serde_json::json!({"cpu_s": cpu, "wall_s": wall.elapsed().as_secs_f64()})
    );
}

fn console_child(args: &[String]) {
    let seconds: u64 = args[0].parse().unwrap();
    let mut config = telecart_core::Config::default();
    config.cart.name = "webrtc-test".into();
    let scratch = tempfile::tempdir().unwrap();
    config.cart.data_dir = scratch.path().to_owned();
    config.store.data_dir = scratch.path().join("log");
    config.store.master_key = scratch.path().join("master.key");
    config.console.listen = args
        .get(1)
        .map_or("127.0.0.1:0", String::as_str)
        .parse()
        .unwrap();
    if std::env::var_os("TELECART_TEST_SPEAKER").is_some() {
        // ALSA's file plugin (from $HOME/.asoundrc) stands in for the speaker.
        config.audio.speaker = telecart_core::config::SpeakerSink::Alsa;
        config.audio.playback_device = "out".into();
    }
    config.video.width = 640;
    config.video.height = 480;
    config.video.fps = 30;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(telecart_runtime::run(
            config,
            telecart_runtime::KeyPolicy::CreateIfMissing,
            |addr, _cart| {
                println!("URL http://{addr}/");
            },
            async move { tokio::time::sleep(Duration::from_secs(seconds)).await },
        ))
        .unwrap();
}

// ---------- the tests ----------

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn work_dir() -> PathBuf {
    std::env::var_os("TELECART_WORK")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".work"))
}

fn netns_sh() -> PathBuf {
    repo_root().join("tests/peers/netns.sh")
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> Netns {
        Netns::create_with(tag, false)
    }

    fn create_with(tag: &str, veth: bool) -> Netns {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this interop test needs root (network namespaces); CI runs as root"
        );
        let name = format!("tc-{tag}-{}", std::process::id());
        let mut cmd = Command::new(netns_sh());
        cmd.args(["create", &name]);
        if veth {
            cmd.arg("--veth");
        }
        let status = cmd.stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "netns.sh create {name} failed: {status}");
        Netns(name)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(netns_sh());
        c.arg("exec").arg(&self.0).arg(program);
        c
    }

    fn curl_json(&self, url: &str) -> Option<Value> {
        let out = self
            .command("curl")
            .args(["-s", "-m", "2", url])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(netns_sh())
            .args(["delete", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

/// A peer process, SIGTERMed (then killed) on drop.
struct Peer {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(mut cmd: Command, what: &str) -> Peer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    fn line(&self, timeout: Duration, what: &str) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("{what}: no output within {timeout:?}"))
    }

    fn terminate(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// Starts `whip_aiortc.py` in `ns`, decoding stamps with this binary; returns it and its port.
fn start_aiortc(ns: &Netns, extra: &[&str]) -> (Peer, u16) {
    let python = work_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "aiortc peer missing: {} does not exist; run `bash tests/setup.sh` (or set TELECART_WORK)",
        python.display()
    );
    let mut cmd = ns.command(&python);
    cmd.arg(repo_root().join("tests/peers/whip_aiortc.py"))
        .args([
            "--port",
            "0",
            "--ice-host-address",
            "127.0.0.1",
            "--final-stats",
        ])
        .arg("--stamp-decoder")
        .arg(std::env::current_exe().unwrap())
        .args(extra);
    let peer = Peer::spawn(cmd, "whip_aiortc.py");
    let line = peer.line(Duration::from_secs(20), "whip_aiortc.py");
    let port = line
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("whip_aiortc.py said {line:?}"))
        .trim()
        .parse()
        .unwrap();
    (peer, port)
}

fn chromium_calls_the_console_call_page() {
    let ns = Netns::create("webrtc-browser");
    let node_dir = std::env::var_os("TELECART_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| work_dir().join("node"));
    assert!(
        node_dir.join("node_modules/playwright-core").exists(),
        "browser peer missing: no playwright-core in {}; run `bash tests/setup.sh` (or set TELECART_WORK)",
        node_dir.display()
    );
    // The remote party's audio is played through ALSA: the file plugin records it.
    let home = std::env::temp_dir().join(format!("tc-speaker-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let played = home.join("played.raw");
    std::fs::write(
        home.join(".asoundrc"),
        format!(
            "pcm.out {{ type file; slave.pcm null; file \"{}\"; format raw }}\n",
            played.display()
        ),
    )
    .unwrap();
    let mut cart = ns.command(std::env::current_exe().unwrap());
    cart.env("HOME", &home)
        .env("TELECART_TEST_SPEAKER", "1")
        .args(["__console", "60"]);
    let cart = Peer::spawn(cart, "the cart's console");
    let line = cart.line(Duration::from_secs(30), "the cart's console");
    let url = line.strip_prefix("URL ").unwrap().trim().to_string();

    let mut browser = ns.command("node");
    browser
        .env("TELECART_NODE_DIR", &node_dir)
        .arg(repo_root().join("tests/peers/browser_call.mjs"))
        .arg(format!("{url}call"))
        .args(["--seconds", "6", "--quiet"]);
    let out = browser.stderr(Stdio::inherit()).output().unwrap();
    assert!(
        out.status.success(),
        "browser_call.mjs failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("browser stats: {stats}");
    let frames = stats["framesDecoded"].as_u64().unwrap();
    assert!(
        frames >= 90,
        "Chromium decoded {frames} frames of the cart's video in ~6 s"
    );
    assert_eq!(stats["videoCodec"], "video/H264");
    assert!(
        stats["audioBytesReceived"].as_u64().unwrap() > 10_000,
        "cart audio reaches the browser"
    );
    assert!(
        stats["framesSent"].as_u64().unwrap() > 30,
        "the browser sends video"
    );
    assert!(
        stats["dataChannelMessages"].as_u64().unwrap() >= 1,
        "cart status on the data channel"
    );
    // The demo microphone plays clinical speech: the cart transcribes it and
    // the captions reach the browser on the data channel.
    let captions = stats["captions"].as_array().unwrap();
    assert!(
        !captions.is_empty(),
        "no caption reached the browser (is the whisper model in .work/models? run tests/setup.sh)"
    );
    println!(
        "BENCH webrtc captions at the browser: {} ({:?} …)",
        captions.len(),
        captions.first()
    );
    let c = &stats["cart"];
    assert!(
        c["remote_video_frames"].as_u64().unwrap() > 30,
        "cart receives the browser's video: {c}"
    );
    assert!(
        c["remote_audio_packets_decoded"].as_u64().unwrap() > 100,
        "cart decodes the browser's Opus: {c}"
    );
    assert_eq!(c["remote_audio_decode_errors"], 0);
    drop(cart);
    let pcm = std::fs::read(&played).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&home);
    let samples: Vec<i16> = pcm
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let rms = (samples.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>()
        / samples.len().max(1) as f64)
        .sqrt();
    assert!(
        samples.len() > 48_000,
        "the browser's audio reached the speaker: {} samples played",
        samples.len()
    );
    assert!(rms > 100.0, "played audio is not silence (rms {rms:.0})");
    assert!(c["mos"].as_f64().unwrap() > 4.0, "{c}");
    println!(
        "BENCH webrtc chromium call: {frames} frames decoded by Chromium, connect {:.0} ms, rtt {} s",
        c["connect_ms"].as_f64().unwrap_or(f64::NAN),
        stats["rtt"]
    );
}

/// What a publish to Janus gave: the cart's report and the Admin API's
/// counters sampled while it ran (wall clock µs, summary).
struct JanusRun {
    report: Value,
    samples: Vec<(u64, Value)>,
}

/// Janus + simple-whip-server in `server` (ICE on `ice_iface` only); the cart
/// publishes from `cart_ns` for `seconds` to the WHIP URL with its host
/// replaced by `whip_host` when given, bound to `bind` when given, with `env`.
/// `during` is called about twice a second with the time since the cart started.
#[allow(clippy::too_many_arguments)]
fn janus_publish(
    server: &Netns,
    cart_ns: &Netns,
    ice_iface: &str,
    whip_host: Option<&str>,
    bind: Option<&str>,
    seconds: u64,
    env: &[(&str, &str)],
    mut during: impl FnMut(Duration),
) -> JanusRun {
    assert!(
        work_dir().join("janus-whip").exists(),
        "Janus peer missing: no simple-whip-server in {}; run `bash tests/setup.sh`",
        work_dir().display()
    );
    let mut janus = server.command(repo_root().join("tests/peers/janus_whip.py"));
    janus
        .env("TELECART_WORK", work_dir())
        .args(["--ice-iface", ice_iface, "--id", "cart"]);
    let mut janus = Peer::spawn(janus, "janus_whip.py");
    let (mut whip_url, mut admin_url) = (String::new(), String::new());
    loop {
        let line = janus.line(Duration::from_secs(30), "janus_whip.py");
        if let Some(u) = line.strip_prefix("WHIP_URL ") {
            whip_url = u.trim().into();
        } else if let Some(u) = line.strip_prefix("ADMIN_URL ") {
            admin_url = u.trim().into();
        } else if line.trim() == "READY" {
            break;
        }
    }
    if let Some(host) = whip_host {
        whip_url = whip_url.replace("127.0.0.1", host);
    }
    let mut cart = cart_ns.command(std::env::current_exe().unwrap());
    cart.args(["__publish", &whip_url, &seconds.to_string(), "640x480@30"]);
    if let Some(ip) = bind {
        cart.arg(ip);
    }
    for (k, v) in env {
        cart.env(k, v);
    }
    let started = Instant::now();
    let cart = Peer::spawn(cart, "the cart");
    // Janus forgets the handle when the publisher leaves: read its counters while publishing.
    let mut samples = Vec::new();
    let until = started + Duration::from_secs(seconds) - Duration::from_millis(800);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        during(started.elapsed());
        let out = server
            .command(repo_root().join("tests/peers/janus_stats.py"))
            .arg(&admin_url)
            .output()
            .unwrap();
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
            && v["media"]["video"]["packets_in"].as_u64().unwrap_or(0) > 0
        {
            samples.push((now_us(), v));
        }
    }
    let report: Value =
        serde_json::from_str(&cart.line(Duration::from_secs(seconds + 30), "the cart")).unwrap();
    janus.terminate();
    JanusRun { report, samples }
}

fn video_in(v: &Value) -> u64 {
    v["media"]["video"]["packets_in"].as_u64().unwrap_or(0)
}

/// The call page's `restartIce()` (what it does by itself when ICE fails
/// after a network change): a new offer PATCHed to `/api/call/<id>`, the
/// cart's answer applied, video keeps coming.
fn chromium_restarts_ice_through_the_console() {
    let ns = Netns::create("webrtc-browser-restart");
    let node_dir = std::env::var_os("TELECART_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| work_dir().join("node"));
    assert!(
        node_dir.join("node_modules/playwright-core").exists(),
        "browser peer missing: no playwright-core in {}; run `bash tests/setup.sh` (or set TELECART_WORK)",
        node_dir.display()
    );
    let mut cart = ns.command(std::env::current_exe().unwrap());
    cart.args(["__console", "60"]);
    let cart = Peer::spawn(cart, "the cart's console");
    let line = cart.line(Duration::from_secs(30), "the cart's console");
    let url = line.strip_prefix("URL ").unwrap().trim().to_string();
    let mut browser = ns.command("node");
    browser
        .env("TELECART_NODE_DIR", &node_dir)
        .arg(repo_root().join("tests/peers/browser_call.mjs"))
        .arg(format!("{url}call"))
        .args(["--seconds", "8", "--restart-ice-at", "3", "--quiet"]);
    let out = browser.stderr(Stdio::inherit()).output().unwrap();
    assert!(
        out.status.success(),
        "browser_call.mjs failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("browser stats: {stats}");
    let restart = &stats["restart"];
    assert_eq!(restart["ok"], true, "{restart}");
    let before = restart["framesDecodedBefore"].as_u64().unwrap();
    let after = stats["framesDecoded"].as_u64().unwrap();
    assert!(
        after >= before + 60,
        "Chromium decoded {before} frames before the restart and {after} at the end"
    );
    let c = &stats["cart"];
    assert!(c["ice_restarts"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["ice_restart_connect_ms"].as_f64().is_some(), "{c}");
    println!(
        "BENCH webrtc chromium ICE restart via PATCH /api/call: {} ms in the page, cart ICE \
         connected again {:.0} ms after its answer; frames decoded {before} -> {after}",
        restart["ms"],
        c["ice_restart_connect_ms"].as_f64().unwrap_or(f64::NAN)
    );
}

/// A browser call while the cart's route to the browser starts leaving from
/// another address (a new default route): two namespaces and a veth pair,
/// Chromium on 10.77.1.1, the cart's console on 0.0.0.0 reached at
/// 10.77.1.2. 6 s into the call the route's source becomes 10.77.1.3: the
/// cart moves its media there, the page sees ICE stall and restarts it
/// through the console, and the video keeps coming over the new address.
fn chromium_call_follows_the_carts_route_change() {
    let browser_ns = Netns::create("webrtc-route-browser");
    let cart_ns = Netns::create("webrtc-route-cart");
    let ip = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}: {status}");
    };
    ip(&[
        "link",
        "add",
        "tcrt0",
        "netns",
        &browser_ns.0,
        "type",
        "veth",
        "peer",
        "name",
        "tcrt1",
        "netns",
        &cart_ns.0,
    ]);
    ip(&[
        "-n",
        &browser_ns.0,
        "addr",
        "add",
        "10.77.1.1/24",
        "dev",
        "tcrt0",
    ]);
    ip(&["-n", &browser_ns.0, "link", "set", "tcrt0", "up"]);
    ip(&[
        "-n",
        &cart_ns.0,
        "addr",
        "add",
        "10.77.1.2/24",
        "dev",
        "tcrt1",
    ]);
    ip(&[
        "-n",
        &cart_ns.0,
        "addr",
        "add",
        "10.77.1.3/32",
        "dev",
        "tcrt1",
    ]);
    ip(&["-n", &cart_ns.0, "link", "set", "tcrt1", "up"]);
    let node_dir = std::env::var_os("TELECART_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| work_dir().join("node"));
    assert!(
        node_dir.join("node_modules/playwright-core").exists(),
        "browser peer missing: no playwright-core in {}; run `bash tests/setup.sh` (or set TELECART_WORK)",
        node_dir.display()
    );
    let mut cart = cart_ns.command(std::env::current_exe().unwrap());
    cart.args(["__console", "60", "0.0.0.0:0"]);
    let cart = Peer::spawn(cart, "the cart's console");
    let line = cart.line(Duration::from_secs(30), "the cart's console");
    let url = line
        .strip_prefix("URL ")
        .unwrap()
        .trim()
        .replace("0.0.0.0", "10.77.1.2");
    let mut browser = browser_ns.command("node");
    browser
        .env("TELECART_NODE_DIR", &node_dir)
        .arg(repo_root().join("tests/peers/browser_call.mjs"))
        .arg(format!("{url}call"))
        .args(["--seconds", "22", "--quiet"]);
    let browser = browser
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Wait for the call (the console lists it), then change the route.
    let started = Instant::now();
    let mut call_up = false;
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(calls) = browser_ns.curl_json(&format!("{url}api/calls"))
            && calls
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["stats"]["state"] == "connected"))
        {
            call_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(call_up, "the browser's call never connected");
    std::thread::sleep(Duration::from_secs(6));
    ip(&[
        "-n",
        &cart_ns.0,
        "route",
        "replace",
        "10.77.1.0/24",
        "dev",
        "tcrt1",
        "src",
        "10.77.1.3",
    ]);
    let moved_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = browser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "browser_call.mjs failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("browser stats: {stats}");
    let c = &stats["cart"];
    let pair = c["ice_pair"].as_str().unwrap_or("");
    assert!(
        pair.starts_with("10.77.1.3:"),
        "the cart's media moved to the new source address: {pair}"
    );
    assert!(c["ice_restarts"].as_u64().unwrap() >= 1, "{c}");
    let history = stats["framesHistory"].as_array().unwrap();
    let at_move = history
        .iter()
        .filter(|h| h[0].as_u64().unwrap() <= moved_ms)
        .map(|h| h[1].as_u64().unwrap())
        .max()
        .unwrap_or(0);
    let end = stats["framesDecoded"].as_u64().unwrap();
    assert!(
        end >= at_move + 60,
        "Chromium decoded {at_move} frames when the route changed and {end} at the end"
    );
    // And the video is flowing again at the end, over the new address.
    let frames = |h: &Value| h[1].as_u64().unwrap();
    let tail = &history[history.len().saturating_sub(4)..];
    let (first, last) = (frames(&tail[0]), frames(&tail[tail.len() - 1]));
    assert!(
        last >= first + 45,
        "the last 3 s decoded {} frames: {history:?}",
        last - first
    );
    println!(
        "BENCH webrtc chromium call, cart route change: pair {pair}, ICE restarted by the page, \
         cart connected again {:.0} ms after its answer; frames decoded {at_move} -> {end}",
        c["ice_restart_connect_ms"].as_f64().unwrap_or(f64::NAN)
    );
}

fn publish_to_janus_is_accepted_and_counted() {
    let seconds = 6u64;
    let ns = Netns::create_with("webrtc-janus", true);
    // Janus only uses veth0 (127.0.0.2): the cart's host candidate must be there too.
    let run = janus_publish(
        &ns,
        &ns,
        "veth0",
        None,
        Some("127.0.0.2"),
        seconds,
        &[],
        |_| {},
    );
    let report = run.report;
    assert!(
        report["error"].is_null(),
        "publish to Janus failed: {report}"
    );
    let (_, j) = run
        .samples
        .last()
        .cloned()
        .expect("Janus never counted RTP from the cart");
    eprintln!("janus: {j}");
    assert_eq!(j["ice_state"], "ready", "{j}");
    assert_eq!(j["dtls_state"], "connected", "{j}");
    let video = video_in(&j);
    let audio = j["media"]["audio"]["packets_in"].as_u64().unwrap_or(0);
    assert!(video > 100, "{video} H.264 packets counted by Janus");
    assert!(audio > 100, "{audio} Opus packets counted by Janus");
    assert_eq!(report["delete"], "ok");
    println!(
        "BENCH webrtc janus: ICE ready, DTLS connected, {video} video + {audio} audio packets counted"
    );
}

/// Checks an ICE restart that the run's report says happened: the endpoint
/// answered it, ICE came back, and Janus kept counting the cart's video on
/// the same handle for the rest of the run. Returns (packets before, after).
fn assert_media_after_restart(run: &JanusRun, reason: &str) -> (u64, u64) {
    let report = &run.report;
    assert!(report["error"].is_null(), "publish failed: {report}");
    let restarts = report["ice_restarts"].as_array().unwrap();
    eprintln!("cart restarts: {restarts:?}");
    let restart = restarts
        .iter()
        .find(|r| r["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} ICE restart in {restarts:?}"));
    assert_eq!(restart["result"], "ok", "{restart}");
    assert!(
        restart["remote_ufrag"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    let s = &report["stats"];
    assert!(s["ice_restarts"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        s["ice_restart_connect_ms"].as_f64().is_some(),
        "ICE connected again after the restart: {s}"
    );
    assert_eq!(report["post_attempts"], 1, "one WHIP session, no new POST");
    assert_eq!(report["delete"], "ok");
    let at = restart["at_unix_us"].as_u64().unwrap();
    let before = run
        .samples
        .iter()
        .filter(|(t, _)| *t <= at)
        .map(|(_, v)| video_in(v))
        .max()
        .unwrap_or(0);
    let (_, last) = run.samples.last().expect("Janus counted RTP");
    let after = video_in(last);
    eprintln!("janus at the end: {last}");
    let handles = last["handles"].as_array().unwrap();
    assert_eq!(handles.len(), 1, "still one Janus handle: {last}");
    assert_eq!(last["ice_state"], "ready", "{last}");
    assert_eq!(last["dtls_state"], "connected", "{last}");
    assert!(
        after > before + 100,
        "Janus counted {before} video packets before the restart and {after} at the end"
    );
    (before, after)
}

fn publish_to_janus_restarts_ice_and_media_keeps_flowing() {
    let seconds = 12u64;
    let ns = Netns::create_with("webrtc-janus-restart", true);
    let run = janus_publish(
        &ns,
        &ns,
        "veth0",
        None,
        Some("127.0.0.2"),
        seconds,
        &[("TELECART_TEST_ICE_RESTART_AT", "4")],
        |_| {},
    );
    let (before, after) = assert_media_after_restart(&run, "requested");
    println!(
        "BENCH webrtc janus ICE restart: PATCH 200, ICE connected again {:.0} ms after the answer; \
         video packets {before} -> {after}",
        run.report["stats"]["ice_restart_connect_ms"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
}

/// A Wi-Fi roam, played with two namespaces joined by a veth pair: the cart
/// loses 10.77.0.2 and gets 10.77.0.3 while publishing to Janus on 10.77.0.1.
fn publish_to_janus_follows_a_network_change() {
    let seconds = 16u64;
    let server = Netns::create("webrtc-roam-srv");
    let cart = Netns::create("webrtc-roam-cart");
    let ip = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}: {status}");
    };
    ip(&[
        "link", "add", "tcroam0", "netns", &server.0, "type", "veth", "peer", "name", "tcroam1",
        "netns", &cart.0,
    ]);
    ip(&[
        "-n",
        &server.0,
        "addr",
        "add",
        "10.77.0.1/24",
        "dev",
        "tcroam0",
    ]);
    ip(&["-n", &server.0, "link", "set", "tcroam0", "up"]);
    ip(&[
        "-n",
        &cart.0,
        "addr",
        "add",
        "10.77.0.2/24",
        "dev",
        "tcroam1",
    ]);
    ip(&["-n", &cart.0, "link", "set", "tcroam1", "up"]);
    let mut roamed = false;
    let mut address_lost_us = 0;
    let run = janus_publish(
        &server,
        &cart,
        "tcroam0",
        Some("10.77.0.1"),
        None,
        seconds,
        &[],
        |elapsed| {
            if !roamed && elapsed >= Duration::from_secs(5) {
                // The old address goes, a moment of nothing, then the new one.
                ip(&[
                    "-n",
                    &cart.0,
                    "addr",
                    "del",
                    "10.77.0.2/24",
                    "dev",
                    "tcroam1",
                ]);
                address_lost_us = now_us();
                std::thread::sleep(Duration::from_millis(500));
                ip(&[
                    "-n",
                    &cart.0,
                    "addr",
                    "add",
                    "10.77.0.3/24",
                    "dev",
                    "tcroam1",
                ]);
                eprintln!("roam: 10.77.0.2 -> 10.77.0.3 at {elapsed:?}");
                roamed = true;
            }
        },
    );
    assert!(roamed, "the test never changed the address");
    let (before, after) = assert_media_after_restart(&run, "address_lost");
    let restart = run.report["ice_restarts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"] == "ok")
        .cloned()
        .unwrap();
    assert!(
        restart["from"].as_str().unwrap().starts_with("10.77.0.2:"),
        "{restart}"
    );
    assert!(
        restart["to"].as_str().unwrap().starts_with("10.77.0.3:"),
        "{restart}"
    );
    let pair = run.report["stats"]["ice_pair"].as_str().unwrap_or("");
    assert!(
        pair.starts_with("10.77.0.3:"),
        "the new address carries the media: {pair}"
    );
    let restart_after_ms =
        (restart["at_unix_us"].as_u64().unwrap() as f64 - address_lost_us as f64) / 1e3;
    println!(
        "BENCH webrtc janus roam: address lost (new one 500 ms later) -> PATCH restart after \
         {restart_after_ms:.0} ms (settle 2 s, 1 s polling), connected again {:.0} ms after the \
         answer; video packets {before} -> {after}; pair {pair}",
        run.report["stats"]["ice_restart_connect_ms"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
}

/// How the cart reaches coturn in the relay-only tests.
#[derive(Clone, Copy, PartialEq)]
enum TurnPath {
    /// `[webrtc] turn_servers = turn:…?transport=udp`.
    Udp,
    /// `turn:…?transport=tcp`: TURN over TCP, for networks that drop UDP.
    Tcp,
    /// `turns:` with a private CA.
    Tls,
    /// No TURN configured: the WHIP answer's `Link` header names the server
    /// (with credentials); the relay candidate is trickled with PATCH.
    LinkHeader,
}

fn publish_through_coturn_with_relay_candidates_only() {
    coturn_relay_only(TurnPath::Udp);
}

/// TURN over TCP in a real call: the relay is reached over one TCP connection.
fn publish_through_coturn_over_tcp_with_relay_candidates_only() {
    coturn_relay_only(TurnPath::Tcp);
}

/// TURN over TLS, as on hospital networks where only 443/TLS leaves: the
/// server's certificate comes from a private CA given as `webrtc.ca_file`.
fn publish_through_coturn_over_tls_with_relay_candidates_only() {
    coturn_relay_only(TurnPath::Tls);
}

/// RFC 9725 §4.6: the endpoint hands out its TURN server in a `Link` header;
/// the cart, relay-only and with no TURN of its own, allocates there after the
/// answer and trickles the relay candidate.
fn publish_relay_only_through_the_turn_server_of_the_link_header() {
    coturn_relay_only(TurnPath::LinkHeader);
}

fn coturn_relay_only(path: TurnPath) {
    let tls = path == TurnPath::Tls;
    let seconds = 5u64;
    let ns = Netns::create(match path {
        TurnPath::Udp => "webrtc-turn",
        TurnPath::Tcp => "webrtc-turn-tcp",
        TurnPath::Tls => "webrtc-turns",
        TurnPath::LinkHeader => "webrtc-turn-link",
    });
    assert!(
        Command::new("sh")
            .args(["-c", "command -v turnserver"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success(),
        "TURN peer missing: no `turnserver` (Debian package coturn); run `bash tests/setup.sh`"
    );
    let dir = std::env::temp_dir().join(format!("tc-turn-{}-{}", std::process::id(), path as u8));
    std::fs::create_dir_all(&dir).unwrap();
    let mut coturn = ns.command("turnserver");
    coturn.args([
        "-n",
        "--no-cli",
        "--no-dtls",
        "-L",
        "127.0.0.1",
        "-E",
        "127.0.0.1",
    ]);
    if tls {
        let (cert, key) = tls_certificate(&dir);
        coturn
            .arg("--tls-listening-port=5349")
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--pkey={}", key.display()));
    } else {
        coturn.arg("--no-tls");
    }
    if path == TurnPath::Tcp {
        // Session lines name the client's transport (checked below).
        coturn.arg("--verbose");
    }
    coturn
        .args([
            "-p",
            "3478",
            "--allow-loopback-peers",
            "-a",
            "-u",
            "cart:pw",
            "-r",
            "telecart",
        ])
        .args([
            "--min-port",
            "50000",
            "--max-port",
            "50100",
            "--log-file",
            "stdout",
            "--simple-log",
        ])
        .arg("--userdb")
        .arg(dir.join("turndb"))
        .arg("--pidfile")
        .arg(dir.join("turn.pid"));
    let coturn = Peer::spawn(coturn, "turnserver");
    // coturn logs to stdout; wait until it listens.
    let up = Instant::now() + Duration::from_secs(10);
    loop {
        let line = coturn.line(Duration::from_secs(10), "turnserver");
        if line.contains("listener opened on") || line.contains("Total General servers") {
            break;
        }
        assert!(Instant::now() < up, "turnserver did not come up");
    }
    std::thread::sleep(Duration::from_millis(300));
    let link: &[&str] = if path == TurnPath::LinkHeader {
        &[
            "--link-ice-server",
            "turn:127.0.0.1:3478?transport=udp",
            "--link-username",
            "cart",
            "--link-credential",
            "pw",
        ]
    } else {
        &[]
    };
    let (mut aiortc, port) = start_aiortc(&ns, link);
    let base = format!("http://127.0.0.1:{port}");
    let mut cart = ns.command(std::env::current_exe().unwrap());
    match path {
        TurnPath::Tls => {
            cart.env("TELECART_TEST_TURN", "turns:localhost:5349")
                .env("TELECART_TEST_CA", dir.join("ca.pem"));
        }
        TurnPath::Udp => {
            cart.env("TELECART_TEST_TURN", "turn:127.0.0.1:3478?transport=udp");
        }
        TurnPath::Tcp => {
            cart.env("TELECART_TEST_TURN", "turn:127.0.0.1:3478?transport=tcp");
        }
        TurnPath::LinkHeader => {
            cart.env("TELECART_TEST_RELAY_ONLY", "1");
        }
    }
    cart.args([
        "__publish",
        &format!("{base}/whip/cart"),
        &seconds.to_string(),
        "640x480@30",
    ]);
    let cart = Peer::spawn(cart, "the cart");
    let report: Value =
        serde_json::from_str(&cart.line(Duration::from_secs(seconds + 40), "the cart")).unwrap();
    aiortc.terminate();
    let mut coturn = coturn;
    coturn.terminate();
    let mut coturn_log = Vec::new();
    while let Ok(line) = coturn.lines.recv_timeout(Duration::from_secs(2)) {
        coturn_log.push(line);
    }
    drop(coturn);
    if path == TurnPath::Tcp {
        // coturn names the client connection's transport when it opens the session.
        let tcp: Vec<&String> = coturn_log
            .iter()
            .filter(|l| l.contains("tcp or tls connected to") || l.contains("TCP socket closed"))
            .collect();
        eprintln!("coturn about TCP: {tcp:?}");
        assert!(!tcp.is_empty(), "coturn saw no TCP client: {coturn_log:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        report["error"].is_null(),
        "publish through TURN failed: {report}"
    );
    let stats_line = aiortc
        .lines
        .try_iter()
        .find(|l| l.starts_with("STATS "))
        .expect("whip_aiortc.py prints STATS when stopped");
    let peer: Value = serde_json::from_str(&stats_line["STATS ".len()..]).unwrap();
    let relay = if path == TurnPath::LinkHeader {
        assert!(
            report["relay_candidate"].is_null(),
            "no TURN configured: {report}"
        );
        let trickled = report["trickled_candidates"].as_array().unwrap();
        assert!(
            trickled
                .iter()
                .any(|c| c.as_str().unwrap().contains("typ relay")),
            "the relay candidate went out in a PATCH: {trickled:?}"
        );
        report["late_relay_candidates"][0]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        report["relay_candidate"].as_str().unwrap().to_string()
    };
    let relayed_addr = relay.split_whitespace().next().unwrap();
    let pair = report["stats"]["ice_pair"].as_str().unwrap();
    assert!(
        pair.starts_with(relayed_addr),
        "the selected pair uses the relay: {pair} vs {relay}"
    );
    let frames = peer["video_frames_decoded"].as_u64().unwrap();
    assert!(
        frames * 10 >= seconds * 30 * 7,
        "{frames} frames decoded through the relay"
    );
    let over = match path {
        TurnPath::Udp => "UDP",
        TurnPath::Tcp => "TCP",
        TurnPath::Tls => "TLS",
        TurnPath::LinkHeader => "UDP from the Link header, trickled,",
    };
    println!("BENCH webrtc coturn {over} relay-only: {frames} frames decoded, pair {pair}");
}

/// A private CA (`ca.pem` in `dir`) and a `localhost` certificate it signed; returns cert and key files.
fn tls_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let pki = common::private_pki();
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), pki.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), pki.key.serialize_pem()).unwrap();
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn publish_through_5_percent_loss_keeps_decoding() {
    // netem drops 5 % of everything, retransmissions and aiortc's PLI included. Once in a few
    // runs aiortc then delivers nothing more, periodic IDRs notwithstanding (a CI rehearsal
    // decoded 146 of 300, stopping at frame 149, no decoder error, no PLI at the cart). One
    // fresh attempt; a cart that cannot keep decoding fails both.
    if std::panic::catch_unwind(publish_through_5_percent_loss_once).is_err() {
        eprintln!("publish under 5 % loss: first attempt failed (above), trying once more");
        publish_through_5_percent_loss_once();
    }
}

fn publish_through_5_percent_loss_once() {
    let seconds = 10u64;
    let ns = Netns::create("webrtc-loss");
    let status = Command::new(netns_sh())
        .args(["loss", &ns.0, "lo", "5"])
        .status()
        .unwrap();
    assert!(status.success(), "netns.sh loss failed: {status}");
    let (mut aiortc, port) = start_aiortc(&ns, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let mut cart = ns.command(std::env::current_exe().unwrap());
    cart.args([
        "__publish",
        &format!("{base}/whip/cart"),
        &seconds.to_string(),
        "640x480@30",
    ]);
    let cart = Peer::spawn(cart, "the cart");
    let report: Value =
        serde_json::from_str(&cart.line(Duration::from_secs(seconds + 40), "the cart")).unwrap();
    assert!(
        report["error"].is_null(),
        "publish failed under loss: {report}"
    );
    aiortc.terminate();
    let stats_line = aiortc
        .lines
        .try_iter()
        .find(|l| l.starts_with("STATS "))
        .expect("whip_aiortc.py prints STATS when stopped");
    let peer: Value = serde_json::from_str(&stats_line["STATS ".len()..]).unwrap();
    let s = &report["stats"];
    eprintln!("cart report under loss: {report}");
    eprintln!(
        "aiortc under loss: inbound {} stamps {}",
        peer["inbound_rtp"], peer["stamps"]
    );
    let frames = peer["video_frames_decoded"].as_u64().unwrap();
    let expected = seconds * 30;
    assert!(
        frames * 10 >= expected * 7,
        "{frames} of ~{expected} frames decoded at 5 % loss"
    );
    let lost = peer["inbound_rtp"]["video"]["packets_lost"]
        .as_u64()
        .unwrap();
    let rtx = peer["inbound_rtp"]["video"]["rtx_packets_received"]
        .as_u64()
        .unwrap();
    assert!(lost > 0, "the namespace dropped packets");
    assert!(
        rtx > 0,
        "NACK/RTX repaired losses ({lost} lost, {rtx} retransmitted)"
    );
    assert!(s["nacks"].as_u64().unwrap() > 0, "{s}");
    // The configured start is 1500 kbps; loss must push the encoder below it.
    let target = s["encoder_target_bps"].as_u64().unwrap();
    assert!(
        target < 1_200_000,
        "bitrate adapts down under loss: {target} bps"
    );
    let st = &peer["stamps"];
    assert_eq!(st["out_of_order"], 0, "{st}");
    assert!(
        st["decoded"].as_u64().unwrap() * 10 >= st["frames_fed"].as_u64().unwrap() * 9,
        "{st}"
    );
    println!(
        "BENCH webrtc aiortc 5% loss: {frames} frames decoded, {lost} video packets lost, {rtx} RTX, \
         {} NACKs, estimate {} bps, encoder target {} bps, loss seen {}",
        s["nacks"], s["bwe_bps"], s["encoder_target_bps"], s["loss"]
    );
}

fn publish_to_aiortc_decodes_stamped_h264_and_opus() {
    let seconds = 8u64;
    let ns = Netns::create("webrtc-aiortc");
    let (mut aiortc, port) = start_aiortc(&ns, &[]);
    let base = format!("http://127.0.0.1:{port}");

    let mut cart = ns.command(std::env::current_exe().unwrap());
    cart.args([
        "__publish",
        &format!("{base}/whip/cart"),
        &seconds.to_string(),
        "1280x720@30",
    ]);
    let cart_started_us = now_us();
    let cart = Peer::spawn(cart, "the cart");

    // Poll the endpoint until the first frame is decoded: call set-up time.
    let mut first_decoded_us = None;
    let poll_deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < poll_deadline {
        if let Some(stats) = ns.curl_json(&format!("{base}/stats"))
            && stats["video_frames_decoded"].as_u64().unwrap_or(0) > 0
        {
            first_decoded_us = Some(now_us());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let report_line = cart.line(Duration::from_secs(seconds + 30), "the cart");
    let cpu_line = cart.line(Duration::from_secs(5), "the cart (CPU)");
    let report: Value = serde_json::from_str(&report_line).unwrap();
    let cpu: Value = serde_json::from_str(&cpu_line).unwrap();
    assert!(report["error"].is_null(), "publish failed: {report}");
    aiortc.terminate();
    let stats_line = aiortc
        .lines
        .try_iter()
        .find(|l| l.starts_with("STATS "))
        .expect("whip_aiortc.py prints STATS when stopped");
    let peer: Value = serde_json::from_str(&stats_line["STATS ".len()..]).unwrap();

    let s = &report["stats"];
    eprintln!("cart report: {report}");
    eprintln!(
        "aiortc stats: {}",
        peer.to_string().chars().take(1500).collect::<String>()
    );
    // Negotiation and hang-up.
    assert!(
        s["video_codec"]
            .as_str()
            .unwrap()
            .contains("profile-level-id=42e01f"),
        "{s}"
    );
    assert!(
        s["audio_codec"].as_str().unwrap().starts_with("opus"),
        "{s}"
    );
    assert_eq!(report["delete"], "ok");
    assert_eq!(peer["sessions"], 1);
    assert_eq!(peer["closed"], true, "DELETE closed the session");
    assert_eq!(peer["video_codec"], "H264");
    assert_eq!(
        (peer["width"].as_u64(), peer["height"].as_u64()),
        (Some(1280), Some(720))
    );
    // Media decoded by someone else's stack.
    let frames = peer["video_frames_decoded"].as_u64().unwrap();
    let expected = seconds * 30;
    assert!(
        frames * 10 >= expected * 8,
        "{frames} of ~{expected} frames decoded"
    );
    let audio = peer["audio_frames_decoded"].as_u64().unwrap();
    assert!(
        audio * 20 * 10 >= seconds * 1000 * 8,
        "{audio} Opus frames decoded"
    );
    assert!(
        peer["audio_rms_total"].as_f64().unwrap() > 0.01,
        "audio is not silence"
    );
    // Stamps: every decoded frame read, sequence increasing, none missing.
    let st = &peer["stamps"];
    assert_eq!(st["failed"], 0, "{st}");
    assert_eq!(st["decoded"], st["frames_fed"], "{st}");
    assert_eq!(st["out_of_order"], 0, "{st}");
    assert_eq!(st["duplicates"], 0, "{st}");
    assert!(
        st["last_sequence"].as_u64() > st["first_sequence"].as_u64(),
        "{st}"
    );
    assert!(st["missing"].as_u64().unwrap() <= expected / 50, "{st}");
    let p50 = st["latency_ms"]["p50"].as_f64().unwrap();
    let p95 = st["latency_ms"]["p95"].as_f64().unwrap();
    assert!(
        p50 < 150.0 && p95 < 250.0,
        "glass-to-glass p50 {p50} ms, p95 {p95} ms"
    );

    let setup_ms = first_decoded_us
        .map(|t| (t.saturating_sub(report["post_unix_us"].as_u64().unwrap())) as f64 / 1e3);
    let cpu_pct = 100.0 * cpu["cpu_s"].as_f64().unwrap() / cpu["wall_s"].as_f64().unwrap();
    println!(
        "BENCH webrtc aiortc 720p30: glass-to-glass p50 {p50:.1} ms p95 {p95:.1} ms; \
         connect {:.0} ms after POST; first frame decoded {} ms after POST (20 ms polling); \
         cart CPU {cpu_pct:.0}% of one core ({} frames decoded, {} audio frames)",
        s["connect_ms"].as_f64().unwrap_or(f64::NAN),
        setup_ms.map_or("?".into(), |m| format!("{m:.0}")),
        frames,
        audio
    );
    let _ = cart_started_us;
    assert!(
        setup_ms.is_some(),
        "never saw a decoded frame while polling"
    );
}

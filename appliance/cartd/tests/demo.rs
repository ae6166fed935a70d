//! `cartd demo` end to end, as a person would use it: start the daemon, read
//! the console, watch the live H.264 stream and check every frame's stamp.

// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The daemon under test; killed on drop even when an assertion fails.
struct Daemon {
    child: Child,
    base: String,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cartd"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cartd starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("cartd prints its URL");
        let base = line
            .split("open ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Daemon { child, base }
    }

    fn get(&self, path: &str) -> ureq::http::Response<ureq::Body> {
        ureq::get(format!("{}{path}", self.base))
            .call()
            .expect(path)
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cartd did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn demo_serves_console_metrics_snapshot_and_a_stamped_live_stream() {
    let daemon = Daemon::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--video",
        "640x480@30",
        "--seconds",
        "60",
    ]);

    assert_eq!(
        daemon.get("/healthz").into_body().read_to_string().unwrap(),
        "ok\n"
    );
    let page = daemon.get("/").into_body().read_to_string().unwrap();
    assert!(page.contains("telecart console"));

    // Three seconds of the live stream.
    let mut stream = daemon.get("/api/stream.h264").into_body().into_reader();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let n = stream.read(&mut chunk).expect("stream readable");
        assert!(n > 0, "stream ended early");
        bytes.extend_from_slice(&chunk[..n]);
    }
    let received_at = now_us();
    drop(stream);

    let mut units = telecart_codec::h264::split_access_units(&bytes);
    units.pop(); // may be cut short
    assert!(units.len() >= 60, "{} frames in 3 s at 30 fps", units.len());
    assert!(
        telecart_codec::h264::contains_idr(units[0]),
        "a new viewer starts on an IDR"
    );

    let mut decoder = Decoder::new().unwrap();
    let mut sequences = Vec::new();
    let mut oldest_capture = u64::MAX;
    for unit in &units {
        let picture = decoder
            .decode(unit)
            .unwrap()
            .expect("each unit is a picture");
        assert_eq!(picture.dimensions(), (640, 480));
        let stamp = telecart_stamp::decode_stamp(picture.y(), 640, 480, picture.strides().0)
            .expect("every frame carries a readable stamp");
        oldest_capture = oldest_capture.min(stamp.capture_time.as_micros());
        sequences.push(stamp.sequence);
    }
    assert!(
        sequences.windows(2).all(|w| w[1] > w[0]),
        "sequence numbers increase: {sequences:?}"
    );
    let gaps: u64 = sequences.windows(2).map(|w| w[1] - w[0] - 1).sum();
    assert!(
        gaps <= 2,
        "at most a couple of frames lost between capture and viewer, lost {gaps}"
    );
    assert!(
        received_at > oldest_capture,
        "capture times are this host's wall clock"
    );

    let status: serde_json::Value = serde_json::from_str(
        &daemon
            .get("/api/status")
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["cart"], "telecart-demo");
    assert_eq!(status["pipeline"]["encoder"], "openh264");
    assert_eq!(status["pipeline"]["camera_state"], "streaming");
    assert!(status["pipeline"]["frames_encoded"].as_u64().unwrap() >= 60);
    assert!(
        status["pipeline"]["audio_blocks_captured"]
            .as_u64()
            .unwrap()
            > 0
    );

    let metrics = daemon.get("/metrics").into_body().read_to_string().unwrap();
    for name in [
        "telecart_video_frames_encoded_total",
        "telecart_video_frames_captured_total",
        "telecart_camera_streaming",
        "telecart_audio_frames_processed_total",
        "telecart_privacy",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    assert!(metrics.contains("cart=\"telecart-demo\""));

    let mut jpeg = Vec::new();
    daemon
        .get("/api/snapshot.jpg")
        .into_body()
        .into_reader()
        .read_to_end(&mut jpeg)
        .unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG");

    assert!(daemon.terminate().success(), "clean exit on SIGTERM");
}

#[test]
fn demo_ends_cleanly_while_a_viewer_is_still_watching() {
    let daemon = Daemon::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--video",
        "320x240@15",
        "--seconds",
        "60",
    ]);
    let mut stream = daemon.get("/api/stream.h264").into_body().into_reader();
    let mut chunk = [0u8; 4096];
    assert!(stream.read(&mut chunk).unwrap() > 0);
    // The open stream must not hold the shutdown hostage.
    assert!(daemon.terminate().success());
}

#[test]
fn check_config_accepts_the_example_and_lists_every_problem_of_a_bad_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cart.example.toml");
    let ok = Command::new(env!("CARGO_BIN_EXE_cartd"))
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(": ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cart.toml");
    std::fs::write(
        &bad,
        "[video]\nwidth = 641\nfps = 0\n[audio]\nchannels = 3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cartd"))
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        ":2: video.width: must be an even number",
        ":3: video.fps: must be 1 to 60",
        ":5: audio.channels: must be 1 or 2",
        "3 problem(s)",
    ] {
        assert!(err.contains(want), "{want:?} in\n{err}");
    }
}

#[test]
fn run_refuses_a_bad_config_before_touching_devices() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cart.toml");
    std::fs::write(&bad, "[video]\nsource = \"webcam\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cartd"))
        .args(["run", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("video.source: unknown variant `webcam`")
    );
}

#[test]
fn run_refuses_to_start_without_a_provisioned_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cart.toml");
    let key = dir.path().join("absent.key");
    std::fs::write(
        &config,
        format!(
            "[console]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = \"{}\"\nmaster_key = \"{}\"\n",
            dir.path().join("log").display(),
            key.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cartd"))
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store.master_key") && err.contains("missing"),
        "{err}"
    );
    assert!(
        !key.exists(),
        "a provisioned cart never invents its own key"
    );
}

fn post_json(base: &str, path: &str, body: &str) -> u16 {
    ureq::post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body)
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| match e {
            ureq::Error::StatusCode(code) => code,
            other => panic!("{path}: {other}"),
        })
}

/// What one decoded frame of the live stream showed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shown {
    /// The camera (test pattern) with its stamp: capture time in µs.
    Camera(u64),
    /// The privacy slate: no stamp, and nothing of the picture.
    Slate,
}

#[test]
fn privacy_from_the_console_puts_the_slate_on_the_stream_and_is_audited() {
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--video",
        "320x240@30",
        "--seconds",
        "60",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let reader = {
        let mut stream = daemon.get("/api/stream.h264").into_body().into_reader();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                }
            }
            bytes
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let privacy_on_at = now_us();
    assert_eq!(
        post_json(&daemon.base, "/api/cart/privacy", r#"{"on":true}"#),
        202
    );
    std::thread::sleep(Duration::from_millis(1500));
    let view: serde_json::Value = serde_json::from_str(
        &daemon
            .get("/api/cart")
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(view["privacy"], true, "{view}");
    assert_eq!(view["state"], "privacy", "{view}");
    assert_eq!(view["auto_answer_suppressed"], true, "{view}");
    let metrics = daemon.get("/metrics").into_body().read_to_string().unwrap();
    assert!(
        metrics.contains("telecart_privacy{cart=\"telecart-demo\"} 1"),
        "{metrics}"
    );
    let privacy_off_at = now_us();
    assert_eq!(
        post_json(&daemon.base, "/api/cart/privacy", r#"{"on":false}"#),
        202
    );
    // Bad requests are refused, not guessed at.
    assert_eq!(
        post_json(&daemon.base, "/api/cart/privacy", r#"{"on":"yes"}"#),
        400
    );
    assert_eq!(
        post_json(
            &daemon.base,
            "/api/cart/button",
            r#"{"button":"self-destruct"}"#
        ),
        400
    );
    let bytes = reader.join().unwrap();

    let mut units = telecart_codec::h264::split_access_units(&bytes);
    units.pop();
    let mut decoder = Decoder::new().unwrap();
    let slate = telecart_cart::privacy::slate(320, 240);
    let mut shown = Vec::new();
    for unit in &units {
        let Some(picture) = decoder.decode(unit).unwrap() else {
            continue;
        };
        shown.push({
            let y = picture.y();
            match telecart_stamp::decode_stamp(y, 320, 240, picture.strides().0) {
                Ok(stamp) => Shown::Camera(stamp.capture_time.as_micros()),
                Err(_) => {
                    // Lossy coding: compare luma on average, not exactly.
                    let stride = picture.strides().0;
                    let mut diff = 0u64;
                    for row in 0..240 {
                        for col in 0..320 {
                            let a = y[row * stride + col] as i64;
                            let b = slate.data[row * 320 + col] as i64;
                            diff += (a - b).unsigned_abs();
                        }
                    }
                    let mean = diff as f64 / (320.0 * 240.0);
                    assert!(
                        mean < 4.0,
                        "an unstamped frame that is not the slate (mean |Δ| {mean})"
                    );
                    Shown::Slate
                }
            }
        });
    }
    // Camera, then slate, then camera: nothing of the picture inside the slate run.
    let runs: Vec<(bool, usize)> = shown.iter().fold(Vec::new(), |mut runs, s| {
        let is_slate = *s == Shown::Slate;
        match runs.last_mut() {
            Some((kind, n)) if *kind == is_slate => *n += 1,
            _ => runs.push((is_slate, 1)),
        }
        runs
    });
    assert_eq!(
        runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        [false, true, false],
        "runs (slate?, frames): {runs:?}"
    );
    let last_camera_before = shown
        .iter()
        .take_while(|s| **s != Shown::Slate)
        .filter_map(|s| match s {
            Shown::Camera(t) => Some(*t),
            Shown::Slate => None,
        })
        .max()
        .unwrap();
    let first_camera_after = shown
        .iter()
        .skip(runs[0].1 + runs[1].1)
        .find_map(|s| match s {
            Shown::Camera(t) => Some(*t),
            Shown::Slate => None,
        })
        .unwrap();
    // Numbers for the closing notes, not assertions: frames captured after the
    // request that still showed the camera, and how long privacy-off took.
    eprintln!(
        "privacy on: last camera frame captured {:.1} ms after the request; off: first camera frame {:.1} ms after",
        (last_camera_before as f64 - privacy_on_at as f64) / 1e3,
        (first_camera_after as f64 - privacy_off_at as f64) / 1e3,
    );
    assert!(daemon.terminate().success());

    // Both toggles are on the audit trail, with who did them.
    let key = telecart_store::MasterKey::load(&data.path().join("master.key")).unwrap();
    let store = telecart_store::SledStore::open(&data.path().join("log"), &key).unwrap();
    let mut audit = Vec::new();
    for readout in telecart_store::LogStore::read_from(&store, 1, 4096).unwrap() {
        if let telecart_store::Readout::Ok { record, .. } = readout
            && let telecart_store::RecordBody::Audit(entry) = record.body
        {
            audit.push((entry.actor, entry.action));
        }
    }
    let privacy: Vec<_> = audit
        .iter()
        .filter(|(_, action)| action.starts_with("cart.privacy"))
        .cloned()
        .collect();
    assert_eq!(
        privacy,
        [
            (
                "console:127.0.0.1".to_string(),
                "cart.privacy_on".to_string()
            ),
            (
                "console:127.0.0.1".to_string(),
                "cart.privacy_off".to_string()
            ),
        ],
        "audit trail: {audit:?}"
    );
}

/// A browser's offer (receive video and audio), made by str0m as a browser would.
fn browser_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(Instant::now());
    let addr = "127.0.0.1:40000".parse().unwrap();
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").unwrap());
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, _pending) = change.apply().unwrap();
    offer.to_sdp_string()
}

fn cart_view(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_str(
        &daemon
            .get("/api/cart")
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap()
}

fn wait_for_state(daemon: &Daemon, state: &str) -> serde_json::Value {
    wait_for(daemon, "state", state)
}

fn wait_for(daemon: &Daemon, key: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = cart_view(daemon);
        if view[key] == state {
            return view;
        }
        assert!(Instant::now() < deadline, "never {state}: {view}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Offers a call in the background; the status and body when the console answers.
fn call_in_background(base: &str) -> std::thread::JoinHandle<(u16, String)> {
    let url = format!("{base}/api/call");
    let offer = browser_offer();
    std::thread::spawn(move || {
        match ureq::post(&url)
            .header("Content-Type", "application/sdp")
            .send(&offer)
        {
            Ok(r) => (r.status().as_u16(), r.into_body().read_to_string().unwrap()),
            Err(ureq::Error::StatusCode(code)) => (code, String::new()),
            Err(e) => panic!("call: {e}"),
        }
    })
}

#[test]
fn under_privacy_a_call_rings_until_the_call_button_and_the_hang_up_button_ends_it() {
    let daemon = Daemon::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--video",
        "320x240@15",
        "--seconds",
        "60",
    ]);
    wait_for_state(&daemon, "ready");

    // Privacy off: the console's callers are answered at once.
    let (status, answer) = call_in_background(&daemon.base).join().unwrap();
    assert_eq!(status, 201);
    assert!(answer.contains("H264"), "{answer}");
    wait_for(&daemon, "call", "active");
    // A second caller while the first is up is turned away.
    let (status, _) = call_in_background(&daemon.base).join().unwrap();
    assert_eq!(status, 503, "busy");
    assert_eq!(
        post_json(&daemon.base, "/api/cart/button", r#"{"button":"hang_up"}"#),
        202
    );
    wait_for_state(&daemon, "ready");

    // Privacy on: the call rings, and the call button answers it.
    post_json(&daemon.base, "/api/cart/privacy", r#"{"on":true}"#);
    wait_for_state(&daemon, "privacy");
    let ringing = call_in_background(&daemon.base);
    let view = wait_for_state(&daemon, "ringing");
    assert!(
        view["notices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("privacy is on")),
        "{view}"
    );
    assert!(
        !ringing.is_finished(),
        "the caller waits while the cart rings"
    );
    post_json(&daemon.base, "/api/cart/button", r#"{"button":"call"}"#);
    let (status, answer) = ringing.join().unwrap();
    assert_eq!(status, 201);
    assert!(answer.contains("H264"), "{answer}");
    assert_eq!(
        post_json(&daemon.base, "/api/cart/button", r#"{"button":"hang_up"}"#),
        202
    );

    // Declined with the hang-up button while ringing: 403.
    wait_for(&daemon, "call", "idle");
    let declined = call_in_background(&daemon.base);
    wait_for_state(&daemon, "ringing");
    post_json(&daemon.base, "/api/cart/button", r#"{"button":"hang_up"}"#);
    assert_eq!(declined.join().unwrap().0, 403);

    // A malformed offer never reaches the state machine.
    let bad = ureq::post(format!("{}/api/call", daemon.base))
        .header("Content-Type", "application/sdp")
        .send("v=0\r\nthis is not SDP\r\n");
    assert!(matches!(bad, Err(ureq::Error::StatusCode(400))), "{bad:?}");
    assert_eq!(cart_view(&daemon)["state"], "privacy");
    assert!(daemon.terminate().success());
}

#[test]
fn garbage_udp_at_a_call_is_counted_and_ignored() {
    let daemon = Daemon::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--video",
        "320x240@15",
        "--seconds",
        "60",
    ]);
    wait_for_state(&daemon, "ready");
    let (status, answer) = call_in_background(&daemon.base).join().unwrap();
    assert_eq!(status, 201);
    // The cart's host candidate: `a=candidate:... udp <prio> <ip> <port> typ host`.
    let candidate = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.contains("typ host"))
        .unwrap_or_else(|| panic!("no host candidate in\n{answer}"));
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    let target = format!("{}:{}", fields[4], fields[5]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Random bytes, and bytes that look like STUN, DTLS and RTP to a demultiplexer.
    let mut sent = 0u64;
    for i in 0..600u32 {
        let mut datagram: Vec<u8> = (0..(i % 300 + 1))
            .map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8)
            .collect();
        datagram[0] = match i % 4 {
            0 => 0x00, // STUN's first byte
            1 => 22,   // DTLS handshake
            2 => 0x80, // RTP version 2
            _ => datagram[0],
        };
        if socket.send_to(&datagram, &target).is_ok() {
            sent += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let calls: serde_json::Value = serde_json::from_str(
        &daemon
            .get("/api/calls")
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let stats = &calls[0]["stats"];
    assert!(
        stats["datagrams_ignored"].as_u64().unwrap() > 0,
        "{sent} garbage datagrams, none counted: {stats}"
    );
    assert_eq!(
        daemon.get("/healthz").into_body().read_to_string().unwrap(),
        "ok\n"
    );
    assert!(daemon.terminate().success());
}

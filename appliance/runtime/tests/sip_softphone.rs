//! A browser softphone calls the cart over SIP: JsSIP in headless Chromium
//! (`tests/peers/sip_softphone.mjs`) registers over WebSocket (RFC 7118) with Kamailio
//! (`tests/peers/sip/kamailio-softphone.cfg`), the whole cart daemon (`telecart_runtime::run`)
//! registers over UDP, JsSIP calls the cart's AOR and the cart answers the WebRTC offer
//! through str0m, as it answers the console's browser calls.
//!
//! The same over secure WebSocket (`wss`): Kamailio gets a TLS listener with a certificate from
//! a CA made by the test; Chromium trusts that certificate by its key pin
//! (`--ignore-certificate-errors-spki-list`), and the cart registers over `wss` too, trusting only
//! that CA (`[sip] ca_cert`).
//!
//! Two calls: JsSIP hangs up the first (the cart sees the BYE and goes idle), the cart's
//! hang-up button ends the second (JsSIP sees the BYE). Chromium's getStats must show decoded
//! H.264 frames and audio from the cart in both; the encrypted session log must hold both as
//! `sip` sessions. Skips loudly when Kamailio (with its websocket module), Chromium, node,
//! playwright-core or JsSIP is missing (`bash tests/setup.sh` installs the last two).

#![allow(clippy::unwrap_used)]

#[path = "../../sip/tests/common/ca.rs"]
mod ca;

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn node_dir() -> PathBuf {
    std::env::var_os("TELECART_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("TELECART_WORK")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join(".work"))
                .join("node")
        })
}

fn skip(what: &str) -> bool {
    eprintln!("\n!!!!!!!! SKIPPED sip_softphone: {what} !!!!!!!!\n");
    true
}

fn missing_peer(transport: Transport) -> bool {
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for bin in ["kamailio", "node"] {
        if !have(bin) {
            return skip(&format!("`{bin}` is not installed"));
        }
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return skip("/usr/bin/chromium is not installed");
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so").exists()
        && !Path::new("/usr/lib/aarch64-linux-gnu/kamailio/modules/websocket.so").exists()
    {
        return skip("kamailio-websocket-modules is not installed");
    }
    if transport == Transport::Wss
        && !Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists()
        && !Path::new("/usr/lib/aarch64-linux-gnu/kamailio/modules/tls.so").exists()
    {
        return skip("kamailio-tls-modules is not installed");
    }
    for module in ["playwright-core", "jssip"] {
        if !node_dir().join("node_modules").join(module).exists() {
            return skip(&format!(
                "no {module} in {} (run `bash tests/setup.sh`)",
                node_dir().display()
            ));
        }
    }
    false
}

fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if p < 65_000 && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A child stopped by its pid when dropped: SIGTERM first, which Kamailio needs to take its
/// worker processes down with it (a SIGKILLed Kamailio leaves them running), then SIGKILL.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How the softphone and the cart reach Kamailio.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    /// The softphone over WebSocket, the cart over UDP.
    Ws,
    /// Both over secure WebSocket.
    Wss,
}

/// The throwaway PKI of a `wss` run: what the cart trusts and what Chromium pins.
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    port: u16,
}

struct Kamailio {
    udp: u16,
    ws: u16,
    tls: Option<Tls>,
    log: PathBuf,
    _child: Killed,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    fn start(users: &[(&str, &str)], transport: Transport) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (udp, tcp, ws) = (free_port(), free_port(), free_port());
        let tls = (transport == Transport::Wss).then(|| {
            let (ca, cert, key) = ca::make_ca(dir.path());
            let cfg = dir.path().join("tls.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
                     require_certificate = no\nprivate_key = {}\ncertificate = {}\n",
                    key.display(),
                    cert.display()
                ),
            )
            .unwrap();
            (
                Tls {
                    ca,
                    cert,
                    port: free_port(),
                },
                cfg,
            )
        });
        let (tls_listen, tls_module) = match &tls {
            Some((t, cfg)) => (
                format!("enable_tls=yes\nlisten=tls:127.0.0.1:{}", t.port),
                format!(
                    "loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")",
                    cfg.display()
                ),
            ),
            None => (String::new(), String::new()),
        };
        let users: String = users
            .iter()
            .map(|(u, p)| format!("\t$sht(users=>{u}) = \"{p}\";\n"))
            .collect();
        let cfg =
            std::fs::read_to_string(repo_root().join("tests/peers/sip/kamailio-softphone.cfg"))
                .unwrap()
                .replace("@@UDP_PORT@@", &udp.to_string())
                .replace("@@TCP_PORT@@", &tcp.to_string())
                .replace("@@WS_PORT@@", &ws.to_string())
                .replace("@@TLS_LISTEN@@", &tls_listen)
                .replace("@@TLS_MODULE@@", &tls_module)
                .replace("@@ALGORITHM@@", "MD5")
                .replace("@@USERS@@", &users);
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, cfg).unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let log = dir.path().join("kamailio.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&path)
            .args(["-DD", "-E", "-Y"])
            .arg(&run)
            .args(["-m", "64", "-M", "8"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let k = Self {
            udp,
            ws,
            tls: tls.map(|(t, _)| t),
            log,
            _child: Killed(child),
            _dir: dir,
        };
        assert!(
            wait(Duration::from_secs(15), || std::net::TcpStream::connect((
                "127.0.0.1",
                ws
            ))
            .is_ok()),
            "kamailio did not listen:\n{}",
            k.log_text()
        );
        k
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

/// The daemon's log, kept for the cart's own INVITE-to-200 OK figure.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One browser and one cart at a time: each case alone takes both cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The daemon's log, shared by the cases (one tracing subscriber per process).
fn daemon_log() -> LogBuffer {
    static LOG: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,telecart_sip=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    })
    .clone()
}

#[test]
fn jssip_in_chromium_calls_the_cart_over_websocket_and_str0m_answers() {
    softphone_calls_the_cart(Transport::Ws);
}

#[test]
fn jssip_in_chromium_calls_the_cart_over_secure_websocket_and_str0m_answers() {
    softphone_calls_the_cart(Transport::Wss);
}

fn softphone_calls_the_cart(transport: Transport) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if missing_peer(transport) {
        return;
    }
    let logs = daemon_log();
    logs.0.lock().unwrap().clear();

    let kamailio = Kamailio::start(&[("cart1", "cartpw"), ("doctor", "docpw")], transport);
    let scratch = tempfile::tempdir().unwrap();
    let mut config = telecart_core::Config::default();
    config.cart.name = "softphone-test".into();
    config.cart.data_dir = scratch.path().to_owned();
    config.store.data_dir = scratch.path().join("log");
    config.store.master_key = scratch.path().join("master.key");
    config.console.listen = "127.0.0.1:0".parse().unwrap();
    config.video.width = 640;
    config.video.height = 480;
    config.video.fps = 30;
    // Whisper would take both cores from the calls; captions are tested elsewhere.
    config.captions.enabled = false;
    config.sip.enabled = true;
    match &kamailio.tls {
        None => config.sip.registrars = vec![format!("sip:127.0.0.1:{}", kamailio.udp)],
        Some(tls) => {
            config.sip.registrars = vec![format!("sip:127.0.0.1:{}", tls.port)];
            config.sip.transport = telecart_core::config::SipTransport::Wss;
            config.sip.ca_cert = Some(tls.ca.clone());
        }
    }
    config.sip.user = "cart1".into();
    config.sip.password = "cartpw".into();
    config.sip.listen = "127.0.0.1:0".parse().unwrap();
    config.sip.policy.allowed_callers = vec!["doctor@127.0.0.1".into()];
    // Over wss the cart also answers muted, and the console unmutes it.
    let muted_answer = transport == Transport::Wss;
    config.sip.policy.mute_on_answer = muted_answer;

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(telecart_runtime::run(
                config,
                telecart_runtime::KeyPolicy::CreateIfMissing,
                move |console, cart| {
                    let _ = ready_tx.send((console, cart));
                },
                async move {
                    let _ = stop_rx.await;
                },
            ))
            .unwrap();
    });
    let (console, cart) = ready_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(
        wait(Duration::from_secs(15), || kamailio
            .log_text()
            .contains("REGISTER ok cart1")),
        "the cart did not register:\n{}",
        kamailio.log_text()
    );

    if kamailio.tls.is_some() {
        assert!(
            kamailio
                .log_text()
                .lines()
                .any(|l| l.contains("REGISTER ok cart1") && l.contains("proto wss")),
            "the cart registered over wss:\n{}",
            kamailio.log_text()
        );
    }
    let mut browser = Command::new("node");
    browser
        .env("TELECART_NODE_DIR", node_dir())
        .arg(repo_root().join("tests/peers/sip_softphone.mjs"));
    match &kamailio.tls {
        None => browser.args(["--ws", &format!("ws://127.0.0.1:{}", kamailio.ws)]),
        Some(tls) => browser
            .args(["--ws", &format!("wss://127.0.0.1:{}", tls.port)])
            .arg("--trust-cert")
            .arg(&tls.cert),
    };
    if muted_answer {
        browser.arg("--mute-check");
    } else {
        // One session refresh by re-INVITE (JsSIP refreshes its 90 s timer at 45 s) on the
        // WebRTC call: the cart answers it with the same answer and the media goes on.
        browser.args(["--refresh-wait", "50"]);
    }
    let mut browser = browser
        .args([
            "--user",
            "doctor",
            "--password",
            "docpw",
            "--domain",
            "127.0.0.1",
        ])
        .args(["--target", "sip:cart1@127.0.0.1"])
        .args([
            "--seconds",
            "4",
            "--timeout",
            "30",
            "--calls",
            "local,remote",
            // JsSIP sends 1 and # by INFO; the cart answers with 4 and * by INFO.
            "--dtmf",
            "1#",
            "--expect-dtmf",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = browser.stdout.take().unwrap();
    let browser = Killed(browser);
    let mut verdict = None;
    let mut active_seen = Vec::new();
    let mut idle_after_local_bye = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        eprintln!("softphone: {line}");
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event.get("verdict").is_some() {
            verdict = Some(event);
            break;
        }
        match event["event"].as_str() {
            Some("confirmed") => {
                active_seen.push(wait(Duration::from_secs(5), || {
                    cart.view().call == "active"
                }));
            }
            Some("call-ended") if event["call"] == 1 => {
                // JsSIP's BYE ended the str0m call and the cart's call.
                idle_after_local_bye = wait(Duration::from_secs(5), || cart.view().call == "idle");
            }
            Some("await-unmute") => {
                let reply = console_post(console, "/api/cart/mute", r#"{"on":false}"#);
                assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
            }
            Some("await-dtmf") => {
                let reply = console_post(console, "/api/cart/dtmf", r#"{"digits":"4*"}"#);
                assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
            }
            Some("await-remote-bye") => {
                cart.press(telecart_runtime::cart::ConsoleButton::HangUp, false);
            }
            _ => {}
        }
    }
    drop(browser);
    let idle_at_end = wait(Duration::from_secs(5), || cart.view().call == "idle");
    let calls_view = cart.view();
    drop(cart);
    let _ = stop_tx.send(());
    daemon.join().unwrap();

    let verdict = verdict.expect("sip_softphone.mjs printed no verdict");
    if verdict["verdict"] != "ok" {
        eprintln!("kamailio's log:\n{}", kamailio.log_text());
    }
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    let answered_ms: Vec<f64> = logs
        .lines()
        .filter(|l| l.contains("sip: answered (WebRTC media)"))
        .filter_map(|l| {
            l.split("ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let calls = verdict["calls"].as_array().unwrap();
    for c in calls {
        println!(
            "BENCH sip softphone {transport:?} call {} ({}): INVITE->200 OK at the cart {:?} ms, at JsSIP {:.1} ms \
             (call() to 200 OK {:.0} ms); INVITE->first decoded frame in Chromium {:.0} ms; \
             {} frames decoded ({}), {} audio packets ({}, energy {}) from the cart; ended by {}",
            c["call"],
            c["mode"],
            answered_ms.get(c["call"].as_u64().unwrap() as usize - 1),
            c["inviteTo200Ms"].as_f64().unwrap_or(f64::NAN),
            c["callTo200Ms"].as_f64().unwrap_or(f64::NAN),
            c["inviteToFirstFrameMs"].as_f64().unwrap_or(f64::NAN),
            c["framesDecoded"],
            c["videoCodec"],
            c["audioPacketsReceived"],
            c["audioCodec"],
            c["totalAudioEnergy"],
            c["end"]
        );
    }
    assert_eq!(calls.len(), 2, "{verdict}\n{}", kamailio.log_text());
    assert_eq!(
        active_seen,
        [true, true],
        "the cart's machine was active in each call"
    );
    // JsSIP's INFO keys, read by the cart as DTMF events, two per call.
    let info_keys: String = logs
        .lines()
        .filter(|l| l.contains("sip: DTMF") && l.contains("via=\"INFO\""))
        .filter_map(|l| l.split("digit=").nth(1)?.chars().next())
        .collect();
    assert_eq!(info_keys, "1#1#", "the cart read JsSIP's DTMF INFOs");
    for c in calls {
        assert_eq!(
            c["dtmfReceived"], "4*",
            "JsSIP got the cart's DTMF INFOs: {c}"
        );
        if muted_answer {
            let (muted, unmuted) = (
                c["mutedEnergy"].as_f64().unwrap(),
                c["unmutedEnergy"].as_f64().unwrap(),
            );
            println!(
                "{transport:?} call {}: audio energy muted {muted:e}, unmuted {unmuted:e}",
                c["call"]
            );
            assert!(
                unmuted > 0.0 && muted < unmuted / 1000.0,
                "answered muted (silence), heard after the console's unmute: {c}"
            );
        }
    }
    if !muted_answer {
        let first = &calls[0];
        let refreshes = first["refreshes"].as_array().unwrap();
        assert!(
            !refreshes.is_empty() && refreshes.iter().all(|r| r["answered"] == true),
            "JsSIP's session refresh (re-INVITE) answered: {first}"
        );
        assert!(first.get("setRemoteDescriptionFailed").is_none(), "{first}");
        assert!(
            first["framesDuringRefreshWait"].as_u64().unwrap_or(0) > 30 * 30,
            "the video went on across the refresh: {first}"
        );
    }
    for c in calls {
        assert!(
            c["framesDecoded"].as_u64().unwrap_or(0) > 30,
            "Chromium decoded the cart's video: {c}\n{}",
            kamailio.log_text()
        );
        assert_eq!(c["videoCodec"], "video/H264", "{c}");
        assert!(
            c["audioPacketsReceived"].as_u64().unwrap_or(0) > 50,
            "Chromium received the cart's audio: {c}"
        );
        assert_eq!(c["audioCodec"], "audio/opus", "{c}");
        assert!(
            c["totalAudioEnergy"].as_f64().unwrap_or(0.0) > 0.0,
            "the cart's microphone is heard, not silence: {c}"
        );
    }
    assert_eq!(calls[0]["end"]["originator"], "local", "{}", calls[0]);
    assert!(
        idle_after_local_bye,
        "JsSIP's BYE did not end the cart's call"
    );
    assert_eq!(
        calls[1]["end"]["originator"],
        "remote",
        "JsSIP saw the cart's BYE: {}\n{}",
        calls[1],
        kamailio.log_text()
    );
    assert_eq!(calls[1]["end"]["cause"], "Terminated", "{}", calls[1]);
    assert!(idle_at_end, "{calls_view:?}");
    assert_eq!(verdict["verdict"], "ok", "{verdict}");

    // Both calls in the encrypted session log as SIP calls from the doctor, each ended.
    let records = {
        use telecart_store::LogStore as _;
        let key = telecart_store::MasterKey::load(&scratch.path().join("master.key")).unwrap();
        let store = telecart_store::SledStore::open(&scratch.path().join("log"), &key).unwrap();
        (1..=store.durable_upto())
            .filter_map(|seq| store.read(seq).ok())
            .collect::<Vec<_>>()
    };
    let starts: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            telecart_store::RecordBody::SessionStart {
                protocol, remote, ..
            } => Some((r.session, protocol.clone(), remote.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    let mut reasons = Vec::new();
    for (session, protocol, remote) in &starts {
        assert_eq!(protocol, "sip");
        assert_eq!(remote, "sip:doctor@127.0.0.1");
        let end = records.iter().find_map(|r| match &r.body {
            telecart_store::RecordBody::SessionEnd { reason, .. } if r.session == *session => {
                Some(reason.clone())
            }
            _ => None,
        });
        assert!(end.is_some(), "no end for {session:?}: {records:?}");
        println!("session {session:?}: ended {end:?}");
        reasons.extend(end);
    }
    // JsSIP's BYE ended the first (not the closing of its peer connection), the cart the second.
    assert_eq!(reasons, ["bye", "hangup"]);
}

/// POSTs `json` to the cart's console; the status line and the rest of the reply.
fn console_post(console: std::net::SocketAddr, path: &str, json: &str) -> String {
    let mut stream = std::net::TcpStream::connect(console).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {console}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

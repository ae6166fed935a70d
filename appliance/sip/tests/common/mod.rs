//! Real peers for the SIP tests: Kamailio (registrar and proxy), baresip (the specialist's
//! phone), SIPp; each started on 127.0.0.1 with free ports and stopped by its own pid.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telecart_core::media::{AudioFrame, EncodedVideo};
use telecart_sip::MediaPort;
use tokio::sync::mpsc;

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Whether `bin` is installed; if not, says so loudly (CI always has the peers).
pub fn have(bin: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `{bin}` is not installed (apt-get install: see .ci/debian-packages.d/sip) !!!!!!!!\n"
        );
    }
    found
}

/// A port free for both UDP and TCP on 127.0.0.1 (and, with `pair`, the one above it too).
pub fn free_port(pair: bool) -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if p >= 65_000 {
            continue;
        }
        let ok = std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && (!pair
                || (UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
                    && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()));
        if ok {
            return p;
        }
    }
}

/// A child process killed (by its pid) when dropped, with its output in a file.
pub struct Peer {
    pub child: Child,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Peer {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Peer {
    /// SIGTERM to the pid we started, then a wait: Kamailio's main process then stops its
    /// children (SIGKILL alone leaves them running, holding the ports and connections).
    pub fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.peer.terminate();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_tcp(port: u16, what: &str, peer: &mut Peer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            panic!("{what} exited ({status}):\n{}", peer.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port}:\n{}", peer.log_text());
}

pub struct Kamailio {
    pub udp: u16,
    pub tcp: u16,
    pub peer: Peer,
}

impl Kamailio {
    /// Starts Kamailio with `users` (name, password) and digest `algorithm` (MD5, SHA-256).
    pub fn start(users: &[(&str, &str)], algorithm: &str) -> Self {
        Self::start_with(users, algorithm, "", "", "")
    }

    /// Starts Kamailio that relays INVITEs for `user` to `127.0.0.1:port` without a
    /// registration (peers that cannot register, or cannot with this digest algorithm), after
    /// authenticating and record-routing them as any call.
    pub fn start_routing(users: &[(&str, &str)], algorithm: &str, user: &str, port: u16) -> Self {
        let route = format!(
            "\tif ($rU == \"{user}\") {{\n\t\t$du = \"sip:127.0.0.1:{port}\";\n\t\t\
             xlog(\"L_INFO\", \"static route $rm to {user}\\n\");\n\t\tt_relay();\n\t\texit;\n\t}}\n"
        );
        Self::launch(users, algorithm, "", "", "", &route)
    }

    pub fn start_with(
        users: &[(&str, &str)],
        algorithm: &str,
        extra_listen: &str,
        extra_modules: &str,
        extra_routes: &str,
    ) -> Self {
        Self::launch(
            users,
            algorithm,
            extra_listen,
            extra_modules,
            extra_routes,
            "",
        )
    }

    fn launch(
        users: &[(&str, &str)],
        algorithm: &str,
        extra_listen: &str,
        extra_modules: &str,
        extra_routes: &str,
        static_routes: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let udp = free_port(false);
        let tcp = free_port(false);
        let users: String = users
            .iter()
            .map(|(u, p)| format!("\t$sht(users=>{u}) = \"{p}\";\n"))
            .collect();
        let cfg = std::fs::read_to_string(repo_file("tests/peers/sip/kamailio.cfg"))
            .unwrap()
            .replace("@@UDP_PORT@@", &udp.to_string())
            .replace("@@TCP_PORT@@", &tcp.to_string())
            .replace("@@ALGORITHM@@", algorithm)
            .replace("@@USERS@@", &users)
            .replace("@@EXTRA_LISTEN@@", extra_listen)
            .replace("@@EXTRA_MODULES@@", extra_modules)
            .replace("@@EXTRA_ROUTES@@", extra_routes)
            .replace("@@STATIC_ROUTES@@", static_routes);
        let mut peer = spawn_kamailio(dir, &cfg);
        wait_tcp(tcp, "kamailio", &mut peer);
        Self { udp, tcp, peer }
    }
}

/// Runs Kamailio in the foreground on `cfg` (written into `dir`, which also holds its run
/// directory and log).
pub fn spawn_kamailio(dir: tempfile::TempDir, cfg: &str) -> Peer {
    let cfg_path = dir.path().join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let log = dir.path().join("kamailio.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("kamailio")
        .arg("-f")
        .arg(&cfg_path)
        .args(["-DD", "-E", "-Y"])
        .arg(&run)
        .args(["-m", "64", "-M", "8"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start kamailio");
    Peer { child, log, dir }
}

pub struct Baresip {
    pub sip: u16,
    pub ctrl: u16,
    pub peer: Peer,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    stream: TcpStream,
}

impl Baresip {
    /// Starts baresip as `user` registering at `registrar_port` (UDP), with `extra` account
    /// parameters (`;mediaenc=srtp-mand`).
    pub fn start(user: &str, password: &str, registrar_port: u16, extra: &str) -> Self {
        Self::start_answering(user, password, registrar_port, extra, "manual")
    }

    /// [`Baresip::start`] with `answermode` `manual` or `auto` (answers every call itself).
    pub fn start_answering(
        user: &str,
        password: &str,
        registrar_port: u16,
        extra: &str,
        answermode: &str,
    ) -> Self {
        Self::launch(
            "",
            &format!(
                "<sip:{user}@127.0.0.1>;auth_pass={password};answermode={answermode};outbound=\"sip:127.0.0.1:{registrar_port}\";regint=300{extra}"
            ),
        )
    }

    /// baresip with `config_extra` lines after the shared config and one `account` line.
    pub fn launch(config_extra: &str, account: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sip = free_port(true);
        let ctrl = free_port(false);
        let mut config = std::fs::read_to_string(repo_file("tests/peers/sip/baresip.config"))
            .unwrap()
            .replace("@@SIP_PORT@@", &sip.to_string())
            .replace("@@CTRL_PORT@@", &ctrl.to_string());
        config.push_str(config_extra);
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(dir.path().join("accounts"), format!("{account}\n")).unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let log = dir.path().join("baresip.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-n", "127.0.0.1", "-v"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start baresip");
        let mut peer = Peer { child, log, dir };
        wait_tcp(ctrl, "baresip", &mut peer);
        let stream = TcpStream::connect(("127.0.0.1", ctrl)).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let reader = stream.try_clone().unwrap();
        let sink = events.clone();
        std::thread::spawn(move || read_netstrings(reader, sink));
        Self {
            sip,
            ctrl,
            peer,
            events,
            stream,
        }
    }

    pub fn command(&mut self, command: &str, params: &str) {
        let body =
            serde_json::json!({"command": command, "params": params, "token": command}).to_string();
        let msg = format!("{}:{},", body.len(), body);
        self.stream.write_all(msg.as_bytes()).unwrap();
    }

    /// Waits for an event of `kind` (`CALL_ESTABLISHED`, …) and returns it.
    pub fn wait_event(&self, kind: &str, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(e) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|e| e["type"] == kind)
            {
                return Some(e.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until `kind` has been seen `n` times (counting from baresip's start).
    pub fn wait_events(&self, kind: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let seen = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == kind)
                .count();
            if seen >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The response to the last command with this token.
    pub fn wait_response(&self, token: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(e) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|e| e["response"] == true && e["token"] == token)
            {
                return e["data"].as_str().map(str::to_string);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until baresip's account registered (its log; the ctrl_tcp event may come before
    /// the test connects).
    pub fn wait_registered(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.peer.log_text().contains("[1 binding]") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits for `needle` in baresip's log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.peer.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn read_netstrings(mut stream: TcpStream, sink: Arc<Mutex<Vec<serde_json::Value>>>) {
    let mut reader = BufReader::new(&mut stream);
    loop {
        let mut len = Vec::new();
        if reader.read_until(b':', &mut len).unwrap_or(0) == 0 {
            return;
        }
        let Ok(n) = String::from_utf8_lossy(&len[..len.len() - 1])
            .trim()
            .parse::<usize>()
        else {
            return;
        };
        let mut body = vec![0; n + 1];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(v) = serde_json::from_slice(&body[..n]) {
            sink.lock().unwrap().push(v);
        }
    }
}

/// The cart's media for the tests: the real pipeline (test pattern + tone), the peer's audio
/// collected instead of played.
pub struct PipelineMedia {
    pub pipeline: Arc<telecart_runtime::Pipeline>,
    pub played: Mutex<Vec<AudioFrame>>,
    pub keyframes: std::sync::atomic::AtomicU64,
}

impl PipelineMedia {
    pub fn start() -> Arc<Self> {
        let mut config = telecart_core::Config::default();
        config.video.width = 320;
        config.video.height = 240;
        config.video.fps = 15;
        config.video.bitrate_kbps = 300;
        config.audio.microphone = telecart_core::config::MicrophoneSource::Tone;
        config.audio.tone_hz = 1000;
        let pipeline =
            Arc::new(telecart_runtime::Pipeline::start(&config, Default::default()).unwrap());
        Arc::new(Self {
            pipeline,
            played: Mutex::new(Vec::new()),
            keyframes: Default::default(),
        })
    }

    /// Dominant frequency of what was played, by zero crossings over the last `secs` seconds.
    pub fn played_frequency(&self, secs: f64) -> Option<(f64, u32)> {
        let played = self.played.lock().unwrap();
        let rate = played.last()?.sample_rate;
        let samples: Vec<i16> = played
            .iter()
            .flat_map(|f| f.samples.iter().copied())
            .collect();
        let n = ((secs * f64::from(rate)) as usize).min(samples.len());
        let tail = &samples[samples.len() - n..];
        if n < rate as usize / 10 {
            return None;
        }
        let crossings = tail.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        Some((crossings as f64 / 2.0 / (n as f64 / f64::from(rate)), rate))
    }
}

fn forward<T: Send + Sync + 'static>(
    sub: Option<telecart_runtime::bus::Subscriber<T>>,
) -> Option<mpsc::Receiver<Arc<T>>> {
    let mut sub = sub?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(d) = sub.recv().await {
            if tx.send(d.item).await.is_err() {
                return;
            }
        }
    });
    Some(rx)
}

impl MediaPort for PipelineMedia {
    fn video(&self) -> Option<mpsc::Receiver<Arc<EncodedVideo>>> {
        forward(self.pipeline.video.subscribe())
    }

    fn microphone(&self) -> Option<mpsc::Receiver<Arc<AudioFrame>>> {
        forward(self.pipeline.raw_audio.subscribe())
    }

    fn request_keyframe(&self) {
        self.keyframes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pipeline.encoder.request_keyframe();
    }

    fn play(&self, frame: AudioFrame) {
        self.played.lock().unwrap().push(frame);
    }
}

pub fn sip_config(
    kamailio_port: u16,
    transport: &str,
    allowed: &[&str],
) -> telecart_core::config::SipConfig {
    let text = format!(
        "enabled = true\nregistrars = [\"sip:127.0.0.1:{kamailio_port}\"]\nuser = \"cart1\"\n\
         transport = \"{transport}\"\nlisten = \"127.0.0.1:0\"\nexpires_secs = 120\n\
         [policy]\nallowed_callers = [{}]\n",
        allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    toml::from_str(&text).unwrap()
}

/// Waits up to `timeout` for the cart to be registered; the status it ended on.
pub async fn registered_within(
    status: &tokio::sync::watch::Receiver<telecart_sip::SipStatus>,
    timeout: Duration,
) -> telecart_sip::SipStatus {
    wait_until(timeout, || status.borrow().registration == "registered").await;
    status.borrow().clone()
}

/// Waits up to 10 s for the cart to be registered with `registrar`; fails the test with the
/// cart's status and the registrar's log otherwise.
pub async fn expect_registered(
    status: &tokio::sync::watch::Receiver<telecart_sip::SipStatus>,
    registrar: &Peer,
) -> telecart_sip::SipStatus {
    let s = registered_within(status, Duration::from_secs(10)).await;
    assert_eq!(
        s.registration,
        "registered",
        "{s:?}\n{}",
        registrar.log_text()
    );
    s
}

pub async fn wait_until<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

pub fn local(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

//! The host's SIP side of the `call` step: Kamailio as the hospital's registrar and proxy
//! (`tests/peers/sip/kamailio.cfg`, the SIP tests' config) and baresip as the specialist's
//! video phone (`tests/peers/sip/baresip.config`), both bound to an address the cart reaches
//! without NAT (docs/hil.md, "Network"). Once the cart has registered, baresip calls it through
//! Kamailio, keeps the call up for a while, reads its own call statistics and hangs up (BYE
//! along Kamailio's Record-Route). What baresip decoded is read from its statistics and from
//! the WAV its `sndfile` module writes of the decoded audio.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The cart's SIP account on the runner's Kamailio.
pub(crate) const CART_USER: &str = "hil-cart";
/// The specialist's account (baresip).
pub(crate) const CALLER_USER: &str = "doctor";

/// Where the runner's registrar is and the accounts on it, fixed before the cart's
/// configuration is rendered (the plan's `{sip_*}` variables).
#[derive(Debug, Clone)]
pub(crate) struct SipAccounts {
    /// Kamailio's address (UDP and TCP) as the cart reaches it.
    pub(crate) registrar: SocketAddr,
    /// The cart's digest password.
    pub(crate) cart_password: String,
    /// The caller's digest password.
    pub(crate) caller_password: String,
}

impl SipAccounts {
    /// Accounts on a registrar at `address`, port `port` (0: a free one on `address`, when
    /// `address` is already local; otherwise the standard 5060).
    pub(crate) fn new(address: IpAddr, port: u16) -> SipAccounts {
        let port = if port != 0 {
            port
        } else {
            free_port(address, false).unwrap_or(5060)
        };
        let secret = |who: &str| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("{who}-{:08x}{:08x}", std::process::id(), nanos)
        };
        SipAccounts {
            registrar: SocketAddr::new(address, port),
            cart_password: secret("cart"),
            caller_password: secret("doctor"),
        }
    }

    /// The plan's variables for the cart's `[sip]` section.
    pub(crate) fn vars(&self) -> Vec<(String, String)> {
        let host = self.registrar.ip();
        vec![
            ("sip_registrar".into(), format!("sip:{}", self.registrar)),
            ("sip_user".into(), CART_USER.into()),
            ("sip_password".into(), self.cart_password.clone()),
            ("sip_caller".into(), format!("{CALLER_USER}@{host}")),
        ]
    }
}

/// How long the specialist keeps the call up once it is established.
const CALL_HOLD: Duration = Duration::from_secs(12);
/// How long the peer waits for the cart to register.
const REGISTER_WAIT: Duration = Duration::from_secs(120);

/// Kamailio and baresip, started for one step, and the call scenario running against the cart.
pub(crate) struct SipPeer {
    kamailio: Child,
    baresip: Child,
    kamailio_log: PathBuf,
    baresip_log: PathBuf,
    dumps: PathBuf,
    abort: Arc<AtomicBool>,
    scenario: Option<JoinHandle<Scenario>>,
}

/// What the call scenario saw.
#[derive(Debug, Default)]
struct Scenario {
    cart_registered: bool,
    call_established: bool,
    setup_ms: Option<f64>,
    callstat: String,
    video_debug: String,
    call_closed: bool,
    note: Vec<String>,
}

impl SipPeer {
    /// Starts Kamailio and baresip on `accounts.registrar`'s address (their logs and files
    /// go under `dir`) and the scenario: wait for the cart's REGISTER, call, hold, hang up.
    pub(crate) fn start(
        repo: &Path,
        accounts: &SipAccounts,
        dir: &Path,
    ) -> anyhow::Result<SipPeer> {
        if let Some(missing) = missing_programs() {
            bail!("{missing}");
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let host = accounts.registrar.ip();
        let port = accounts.registrar.port();

        // Kamailio: the SIP tests' registrar and proxy, listening on the LAN address.
        let users = format!(
            "\t$sht(users=>{CART_USER}) = \"{}\";\n\t$sht(users=>{CALLER_USER}) = \"{}\";\n",
            accounts.cart_password, accounts.caller_password
        );
        let cfg = std::fs::read_to_string(repo.join("tests/peers/sip/kamailio.cfg"))
            .context("reading tests/peers/sip/kamailio.cfg")?
            .replace("127.0.0.1", &host.to_string())
            .replace("@@UDP_PORT@@", &port.to_string())
            .replace("@@TCP_PORT@@", &port.to_string())
            .replace("@@ALGORITHM@@", "MD5")
            .replace("@@USERS@@", &users)
            .replace("@@EXTRA_LISTEN@@", "")
            .replace("@@EXTRA_MODULES@@", "")
            .replace("@@EXTRA_ROUTES@@", "")
            .replace("@@STATIC_ROUTES@@", "");
        let kdir = dir.join("kamailio");
        std::fs::create_dir_all(kdir.join("run"))?;
        std::fs::write(kdir.join("kamailio.cfg"), cfg)?;
        let kamailio_log = dir.join("kamailio.log");
        let out = std::fs::File::create(&kamailio_log)?;
        let mut kamailio = Command::new("kamailio")
            .arg("-f")
            .arg(kdir.join("kamailio.cfg"))
            .args(["-DD", "-E", "-Y"])
            .arg(kdir.join("run"))
            .args(["-m", "64", "-M", "8"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting kamailio")?;
        if let Err(e) = wait_tcp(SocketAddr::new(host, port), &mut kamailio) {
            stop(&mut kamailio);
            bail!("kamailio: {e}\n{}", tail(&kamailio_log, 15));
        }

        // baresip: the specialist's phone, SIP and RTP on the LAN address, its control
        // socket on the runner's loopback.
        let bdir = dir.join("baresip");
        let dumps = dir.join("decoded");
        std::fs::create_dir_all(&bdir)?;
        std::fs::create_dir_all(&dumps)?;
        let sip_port = free_port(host, true).context("no free port for baresip")?;
        let ctrl_port = free_port(IpAddr::from([127, 0, 0, 1]), false)
            .context("no free port for baresip's control socket")?;
        let config = std::fs::read_to_string(repo.join("tests/peers/sip/baresip.config"))
            .context("reading tests/peers/sip/baresip.config")?
            .replace(
                "sip_listen\t\t127.0.0.1:@@SIP_PORT@@",
                &format!("sip_listen\t\t{}", SocketAddr::new(host, sip_port)),
            )
            .replace("@@CTRL_PORT@@", &ctrl_port.to_string());
        // What baresip decodes of the cart's audio, as a WAV file per call. baresip 1.0 has
        // no player that consumes in real time without a sound card (`aubridge` with no
        // source is never pulled; bridged to a source it stalled after 4 s here), so this
        // holds the first seconds of the call, not all of it; the receive bit rate on its
        // status line covers the whole call.
        let mut config = config;
        config.push_str(&format!(
            "module\t\t\tsndfile.so\nsnd_path\t\t{}\n",
            dumps.display()
        ));
        std::fs::write(bdir.join("config"), config)?;
        std::fs::write(
            bdir.join("accounts"),
            format!(
                "<sip:{CALLER_USER}@{host}>;auth_pass={};answermode=manual;outbound=\"sip:{}\";regint=300\n",
                accounts.caller_password, accounts.registrar
            ),
        )?;
        std::fs::write(bdir.join("contacts"), "")?;
        let baresip_log = dir.join("baresip.log");
        let out = std::fs::File::create(&baresip_log)?;
        let mut baresip = Command::new("baresip")
            .arg("-f")
            .arg(&bdir)
            .args(["-n", &host.to_string(), "-v"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting baresip")?;
        let ctrl = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), ctrl_port);
        if let Err(e) = wait_tcp(ctrl, &mut baresip) {
            stop(&mut baresip);
            stop(&mut kamailio);
            bail!("baresip: {e}\n{}", tail(&baresip_log, 15));
        }
        let phone = match Phone::connect(ctrl) {
            Ok(p) => p,
            Err(e) => {
                stop(&mut baresip);
                stop(&mut kamailio);
                return Err(e);
            }
        };
        let abort = Arc::new(AtomicBool::new(false));
        let scenario = {
            let abort = abort.clone();
            let kamailio_log = kamailio_log.clone();
            let uri = format!("sip:{CART_USER}@{host}");
            std::thread::spawn(move || call_the_cart(phone, &uri, &kamailio_log, &abort))
        };
        Ok(SipPeer {
            kamailio,
            baresip,
            kamailio_log,
            baresip_log,
            dumps,
            abort,
            scenario: Some(scenario),
        })
    }

    /// Ends the scenario (it has normally finished with the cart's script), stops both peers
    /// and returns what baresip decoded and what Kamailio relayed.
    pub(crate) fn finish(mut self) -> Value {
        self.abort.store(true, Ordering::Relaxed);
        let scenario = self
            .scenario
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // baresip writes its decoder statistics and closes the WAV files as the call ends;
        // SIGTERM lets it finish that.
        terminate(&mut self.baresip);
        terminate(&mut self.kamailio);
        let kamailio = std::fs::read_to_string(&self.kamailio_log).unwrap_or_default();
        let baresip = std::fs::read_to_string(&self.baresip_log).unwrap_or_default();
        let video = parse_vidisp(&scenario.video_debug);
        let decoder = baresip
            .lines()
            .find(|l| l.contains("avcodec: decoder stats"))
            .map(|l| l.trim().to_string());
        let audio = decoded_audio(&self.dumps);
        let audio_rx_bps = max_audio_rx_bps(&baresip);
        let mut note = scenario.note.clone();
        if let Err(e) = &audio {
            note.push(format!("decoded audio: {e:#}"));
        }
        let audio = audio.unwrap_or_default();
        json!({
            "cart_registered": scenario.cart_registered,
            "call_established": scenario.call_established,
            "setup_ms": scenario.setup_ms,
            "call_closed": scenario.call_closed,
            "bye_relayed": kamailio.contains(&format!("in-dialog BYE to sip:{CART_USER}@")),
            "video_frames_decoded": video.map_or(0, |v| v.2),
            "width": video.map_or(0, |v| v.0),
            "height": video.map_or(0, |v| v.1),
            "video_decoder": decoder,
            "audio_received": audio_rx_bps > 0,
            "audio_rx_bps_max": audio_rx_bps,
            "audio_frames_decoded": audio.frames,
            "audio_rms_total": audio.rms,
            "callstat": scenario.callstat,
            "video_debug": scenario.video_debug,
            "notes": note,
        })
    }
}

impl Drop for SipPeer {
    fn drop(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        stop(&mut self.baresip);
        stop(&mut self.kamailio);
    }
}

/// Why the SIP peer cannot run on this machine (a program not installed), if it cannot.
pub(crate) fn missing_programs() -> Option<String> {
    let missing: Vec<&str> = ["kamailio", "baresip"]
        .into_iter()
        .filter(|p| which(p).is_none())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (apt-get install: .ci/debian-packages.d/hil)",
            missing.join(" and ")
        )
    })
}

/// baresip's control socket (`ctrl_tcp`: netstring JSON commands, events and responses).
struct Phone {
    stream: TcpStream,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Phone {
    fn connect(ctrl: SocketAddr) -> anyhow::Result<Phone> {
        let stream = TcpStream::connect(ctrl).context("baresip's control socket")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let reader = stream.try_clone()?;
        let sink = events.clone();
        std::thread::spawn(move || read_netstrings(reader, &sink));
        Ok(Phone { stream, events })
    }

    fn command(&mut self, command: &str, params: &str) -> std::io::Result<()> {
        let body = json!({"command": command, "params": params, "token": command}).to_string();
        self.stream
            .write_all(format!("{}:{body},", body.len()).as_bytes())
    }

    /// The first event or response `matches` accepts, within `timeout` (or until `abort`).
    fn wait(
        &self,
        timeout: Duration,
        abort: &AtomicBool,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !abort.load(Ordering::Relaxed) {
            if let Some(v) = lock(&self.events).iter().find(|e| matches(e)) {
                return Some(v.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// The specialist's side: wait for the cart's registration (Kamailio's log), call it, keep
/// the call up, read the call's statistics, hang up and wait until the call is closed.
fn call_the_cart(mut phone: Phone, uri: &str, kamailio_log: &Path, abort: &AtomicBool) -> Scenario {
    let mut s = Scenario::default();
    let registered = format!("REGISTER ok {CART_USER} ");
    let deadline = Instant::now() + REGISTER_WAIT;
    while !abort.load(Ordering::Relaxed) && Instant::now() < deadline {
        if std::fs::read_to_string(kamailio_log).is_ok_and(|t| t.contains(&registered)) {
            s.cart_registered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !s.cart_registered {
        s.note
            .push("the cart did not register with Kamailio".into());
        return s;
    }
    let dialed = Instant::now();
    if let Err(e) = phone.command("dial", uri) {
        s.note.push(format!("dial: {e}"));
        return s;
    }
    let is = |kind: &'static str| move |e: &Value| e["type"] == kind;
    if phone
        .wait(Duration::from_secs(30), abort, is("CALL_ESTABLISHED"))
        .is_none()
    {
        let events: Vec<String> = lock(&phone.events)
            .iter()
            .filter_map(|e| e["type"].as_str().map(str::to_string))
            .collect();
        s.note.push(format!(
            "the call to {uri} was not established within 30 s (events: {})",
            events.join(", ")
        ));
        let _ = phone.command("hangup", "");
        return s;
    }
    s.call_established = true;
    s.setup_ms = Some(dialed.elapsed().as_secs_f64() * 1000.0);
    let hold_until = Instant::now() + CALL_HOLD;
    while Instant::now() < hold_until && !abort.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if phone.command("callstat", "").is_ok()
        && let Some(r) = phone.wait(Duration::from_secs(5), abort, |e| {
            e["response"] == true && e["token"] == "callstat"
        })
    {
        s.callstat = r["data"].as_str().unwrap_or_default().to_string();
    }
    // The video stream's counters (the display's frames and picture size).
    if phone.command("video_debug", "").is_ok()
        && let Some(r) = phone.wait(Duration::from_secs(5), abort, |e| {
            e["response"] == true && e["token"] == "video_debug"
        })
    {
        s.video_debug = r["data"].as_str().unwrap_or_default().to_string();
    }
    if let Err(e) = phone.command("hangup", "") {
        s.note.push(format!("hangup: {e}"));
        return s;
    }
    s.call_closed = phone
        .wait(Duration::from_secs(10), abort, is("CALL_CLOSED"))
        .is_some();
    s
}

fn read_netstrings(stream: TcpStream, sink: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = Vec::new();
        if reader.read_until(b':', &mut len).unwrap_or(0) == 0 {
            return;
        }
        let digits = String::from_utf8_lossy(&len[..len.len() - 1])
            .trim()
            .to_string();
        let Ok(n) = digits.parse::<usize>() else {
            return;
        };
        if n > 1 << 20 {
            return;
        }
        let mut body = vec![0; n + 1];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(v) = serde_json::from_slice(&body[..n]) {
            lock(sink).push(v);
        }
    }
}

/// `vidisp: fakevideo 640 x 480 frames=312` in baresip's `video_debug`: width, height and
/// the frames its display was handed (decoded frames).
fn parse_vidisp(callstat: &str) -> Option<(u64, u64, u64)> {
    let line = callstat
        .lines()
        .find(|l| l.trim_start().starts_with("vidisp:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let x = words.iter().position(|w| *w == "x")?;
    let width = words.get(x.checked_sub(1)?)?.parse().ok()?;
    let height = words.get(x + 1)?.parse().ok()?;
    let frames = words
        .iter()
        .find_map(|w| w.strip_prefix("frames="))?
        .parse()
        .ok()?;
    Some((width, height, frames))
}

/// The highest audio receive bit rate on baresip's status line (`audio=TX/RX (bit/s)`, redrawn
/// about ten times a second during a call).
fn max_audio_rx_bps(log: &str) -> u64 {
    log.split("audio=")
        .skip(1)
        .filter_map(|rest| {
            let rates = rest.split_whitespace().next()?;
            rates.split_once('/')?.1.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// What baresip decoded of the cart's audio (its `sndfile` dump of the decoder's output).
#[derive(Debug, Default, Clone, Copy)]
struct DecodedAudio {
    /// 20 ms frames of decoded audio.
    frames: u64,
    /// RMS over all of it, full scale 1.0.
    rms: f64,
}

fn decoded_audio(dir: &Path) -> anyhow::Result<DecodedAudio> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("-dec.wav"))
        })
        .collect();
    files.sort();
    let Some(file) = files.first() else {
        bail!("baresip wrote no decoded audio in {}", dir.display());
    };
    let mut reader =
        hound::WavReader::open(file).with_context(|| format!("reading {}", file.display()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        bail!("{}: not 16-bit PCM ({spec:?})", file.display());
    }
    let mut sum = 0.0f64;
    let mut n = 0u64;
    for sample in reader.samples::<i16>() {
        let x = f64::from(sample?) / 32768.0;
        sum += x * x;
        n += 1;
    }
    let per_frame = u64::from(spec.sample_rate / 50) * u64::from(spec.channels.max(1));
    Ok(DecodedAudio {
        frames: n / per_frame.max(1),
        rms: if n == 0 { 0.0 } else { (sum / n as f64).sqrt() },
    })
}

/// A port free for UDP and TCP on `address` (with `pair`, the one above it too: RTP and RTCP).
fn free_port(address: IpAddr, pair: bool) -> Option<u16> {
    for _ in 0..100 {
        let udp = UdpSocket::bind((address, 0)).ok()?;
        let port = udp.local_addr().ok()?.port();
        if port >= 65_000 {
            continue;
        }
        let ok = std::net::TcpListener::bind((address, port)).is_ok()
            && (!pair
                || (UdpSocket::bind((address, port + 1)).is_ok()
                    && std::net::TcpListener::bind((address, port + 1)).is_ok()));
        if ok {
            return Some(port);
        }
    }
    None
}

fn wait_tcp(address: SocketAddr, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}) before listening on {address}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not listening on {address} after 20 s"))
}

/// SIGTERM, then SIGKILL after 5 s.
fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    crate::target::wait_until(child, Instant::now() + Duration::from_secs(5));
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baresip_display_statistics() {
        let callstat = "video RTP: ...\n     source: fakevideo 640 x 480, fps=15.00 frames=180\n     vidisp: fakevideo 640 x 480 frames=287\n     n_keyframes=3, n_picup=1\n";
        assert_eq!(parse_vidisp(callstat), Some((640, 480, 287)));
        assert_eq!(parse_vidisp("no video"), None);
        assert_eq!(parse_vidisp("     vidisp: (none) x frames=z"), None);
    }

    #[test]
    fn baresip_status_line_receive_rate() {
        let log = "[0:00:00] audio=0/0 video=0/0 (bit/s) efps=0.0/0.0    [0:00:05] audio=99400/8026 video=960/132802 (bit/s) efps=15.0/16.0    [0:00:06] audio=99400/7744 video=1/2 (bit/s)\nstream: audio=garbage";
        assert_eq!(max_audio_rx_bps(log), 8026);
        assert_eq!(max_audio_rx_bps("no status"), 0);
    }

    #[test]
    fn accounts_render_the_carts_variables() {
        let a = SipAccounts::new(IpAddr::from([10, 77, 0, 1]), 5060);
        let vars = a.vars();
        assert!(vars.contains(&("sip_registrar".into(), "sip:10.77.0.1:5060".into())));
        assert!(vars.contains(&("sip_caller".into(), "doctor@10.77.0.1".into())));
        assert_ne!(a.cart_password, a.caller_password);
    }
}

//! `bench sip`: our SIP endpoint against baresip in the same roles, through one Kamailio.
//!
//! Kamailio (registrar and proxy, digest MD5 with qop=auth) and the configs come from
//! `tests/peers/sip/`. A baresip "doctor" is the caller for both answerers:
//! - **answering**: the doctor dials the cart (our endpoint, auto-answer policy) N times, then a
//!   second baresip (`answermode=auto`) N times; set-up time is the doctor's dial to its
//!   `CALL_ESTABLISHED`, so both answerers are timed by the same clock; the cart also reports
//!   its own INVITE-to-200 OK time;
//! - **registering**: N REGISTERs (each with its 401 round trip) by our endpoint, timed from
//!   REGISTER to 200 OK; baresip makes a new user agent for its account N times (`uadel`,
//!   `uanew`), timed from `uanew` to its `REGISTER_OK` event;
//! - **CPU**: our process's CPU time over the calls (ours runs in this process) against the
//!   answering baresip's (from `/proc/PID/stat`), per call.
//!
//! Media differs: the cart's media port here sends nothing (signalling and RTP set-up only),
//! while baresip generates a tone and encodes it; the CPU row says so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telecart_core::media::{AudioFrame, EncodedVideo};
use tokio::sync::mpsc;

use crate::measure::{self_cpu, stats};

/// Options of `bench sip`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Calls to each answerer.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// REGISTER transactions by each registrant.
    #[arg(long, default_value_t = 20)]
    registrations: usize,
    /// The repository's `tests/peers/sip` directory (Kamailio and baresip configs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/peers/sip"))]
    peers: PathBuf,
}

const CART_PASSWORD: &str = "cart-secret";
const DOCTOR_PASSWORD: &str = "doctor-secret";
const PEER_PASSWORD: &str = "peer-secret";

fn tool_exists(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> anyhow::Result<u16> {
    loop {
        let p = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        if p < 65_000
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return Ok(p);
        }
    }
}

/// A child stopped when dropped: SIGTERM first, because Kamailio's main process only reaps
/// its worker processes on a signal it can catch; SIGKILL after 3 s.
struct Peer {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// utime + stime of the child so far.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64(f.iter().sum::<u64>() as f64 / ticks)
    }
}

fn wait_tcp(port: u16, peer: &mut Peer, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            bail!("{what} exited ({status}):\n{}", peer.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {port}:\n{}", peer.log_text())
}

fn kamailio(peers: &Path) -> anyhow::Result<(Peer, u16)> {
    let dir = tempfile::tempdir()?;
    let (udp, tcp) = (free_port()?, free_port()?);
    let users: String = [
        ("cart1", CART_PASSWORD),
        ("doctor", DOCTOR_PASSWORD),
        ("peer", PEER_PASSWORD),
    ]
    .iter()
    .map(|(u, p)| format!("\t$sht(users=>{u}) = \"{p}\";\n"))
    .collect();
    let cfg = std::fs::read_to_string(peers.join("kamailio.cfg"))
        .with_context(|| format!("{}", peers.join("kamailio.cfg").display()))?
        .replace("@@UDP_PORT@@", &udp.to_string())
        .replace("@@TCP_PORT@@", &tcp.to_string())
        .replace("@@ALGORITHM@@", "MD5")
        .replace("@@USERS@@", &users)
        .replace("@@EXTRA_LISTEN@@", "")
        .replace("@@EXTRA_MODULES@@", "")
        .replace("@@EXTRA_ROUTES@@", "")
        .replace("@@STATIC_ROUTES@@", "")
        .replace("debug=2", "debug=1");
    let path = dir.path().join("kamailio.cfg");
    std::fs::write(&path, cfg)?;
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run)?;
    let log = dir.path().join("kamailio.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new("kamailio")
        .arg("-f")
        .arg(&path)
        .args(["-DD", "-E", "-Y"])
        .arg(&run)
        .args(["-m", "64", "-M", "8"])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("start kamailio")?;
    let mut peer = Peer {
        child,
        log,
        _dir: dir,
    };
    wait_tcp(tcp, &mut peer, "kamailio")?;
    Ok((peer, udp))
}

/// baresip with its ctrl_tcp connection; events counted by type.
struct Baresip {
    peer: Peer,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    stream: TcpStream,
}

impl Baresip {
    fn start(
        peers: &Path,
        user: &str,
        password: &str,
        registrar: u16,
        answermode: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (sip, ctrl) = (free_port()?, free_port()?);
        let config = std::fs::read_to_string(peers.join("baresip.config"))?
            .replace("@@SIP_PORT@@", &sip.to_string())
            .replace("@@CTRL_PORT@@", &ctrl.to_string());
        std::fs::write(dir.path().join("config"), config)?;
        std::fs::write(
            dir.path().join("accounts"),
            format!(
                "<sip:{user}@127.0.0.1>;auth_pass={password};answermode={answermode};outbound=\"sip:127.0.0.1:{registrar}\";regint=300\n"
            ),
        )?;
        std::fs::write(dir.path().join("contacts"), "")?;
        let log = dir.path().join("baresip.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-n", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start baresip")?;
        let mut peer = Peer {
            child,
            log,
            _dir: dir,
        };
        wait_tcp(ctrl, &mut peer, "baresip")?;
        let stream = TcpStream::connect(("127.0.0.1", ctrl))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let (reader, sink) = (stream.try_clone()?, events.clone());
        std::thread::spawn(move || read_netstrings(reader, sink));
        let b = Self {
            peer,
            events,
            stream,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !b.peer.log_text().contains("[1 binding]") {
            if Instant::now() > deadline {
                bail!("baresip {user} did not register:\n{}", b.peer.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(b)
    }

    fn command(&mut self, command: &str, params: &str) -> anyhow::Result<()> {
        let body =
            serde_json::json!({"command": command, "params": params, "token": command}).to_string();
        self.stream
            .write_all(format!("{}:{},", body.len(), body).as_bytes())?;
        Ok(())
    }

    fn count(&self, kind: &str) -> usize {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| e["type"] == kind)
            .count()
    }

    /// Waits until `kind` has been seen more than `seen` times.
    fn wait_count(&self, kind: &str, seen: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count(kind) > seen {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}

fn read_netstrings(stream: TcpStream, sink: Arc<Mutex<Vec<serde_json::Value>>>) {
    let mut reader = BufReader::new(stream);
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
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(v);
        }
    }
}

/// A cart with no camera or microphone: signalling and RTP set-up only.
struct NoMedia;

impl telecart_sip::MediaPort for NoMedia {
    fn video(&self) -> Option<mpsc::Receiver<Arc<EncodedVideo>>> {
        None
    }
    fn microphone(&self) -> Option<mpsc::Receiver<Arc<AudioFrame>>> {
        None
    }
    fn request_keyframe(&self) {}
    fn play(&self, _: AudioFrame) {}
}

fn cart_config(registrar: u16) -> anyhow::Result<telecart_core::config::SipConfig> {
    let text = format!(
        "enabled = true\nregistrars = [\"sip:127.0.0.1:{registrar}\"]\nuser = \"cart1\"\n\
         transport = \"udp\"\nlisten = \"127.0.0.1:0\"\nexpires_secs = 120\n\
         [policy]\nallowed_callers = [\"doctor@127.0.0.1\"]\n"
    );
    Ok(toml::from_str(&text)?)
}

async fn registered(ep: &telecart_sip::SipEndpoint) -> anyhow::Result<f64> {
    let mut status = ep.status.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status.borrow().clone();
        if s.registration == "registered" {
            return s.last_register_ms.context("no REGISTER time");
        }
        if Instant::now() > deadline {
            bail!("the cart did not register: {s:?}");
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
    }
}

/// The doctor calls `uri` `n` times; set-up times (dial to CALL_ESTABLISHED).
fn calls(doctor: &mut Baresip, uri: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for _ in 0..n {
        let (up, down) = (
            doctor.count("CALL_ESTABLISHED"),
            doctor.count("CALL_CLOSED"),
        );
        let dialed = Instant::now();
        doctor.command("dial", uri)?;
        if !doctor.wait_count("CALL_ESTABLISHED", up, Duration::from_secs(10)) {
            bail!("call to {uri} not established:\n{}", doctor.peer.log_text());
        }
        times.push(dialed.elapsed());
        std::thread::sleep(Duration::from_millis(200));
        doctor.command("hangup", "")?;
        if !doctor.wait_count("CALL_CLOSED", down, Duration::from_secs(10)) {
            bail!("call to {uri} not closed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(times)
}

fn ms(d: f64) -> String {
    format!("{d:8.2} ms")
}

/// Runs `bench sip`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    for tool in ["kamailio", "baresip"] {
        if !tool_exists(tool) {
            bail!("`{tool}` is not installed (.ci/debian-packages.d/sip)");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (kam, registrar) = kamailio(&args.peers)?;
    let mut doctor = Baresip::start(&args.peers, "doctor", DOCTOR_PASSWORD, registrar, "manual")?;

    // Registrations: each of ours is a fresh endpoint's first REGISTER (401, then 200).
    let mut ours_reg = Vec::new();
    for _ in 0..args.registrations {
        let ep = rt.block_on(telecart_sip::start(
            cart_config(registrar)?,
            CART_PASSWORD.into(),
            Arc::new(NoMedia),
        ))?;
        ours_reg.push(Duration::from_secs_f64(
            rt.block_on(registered(&ep))? / 1000.0,
        ));
        rt.block_on(ep.shutdown());
    }
    let mut peer = Baresip::start(&args.peers, "peer", PEER_PASSWORD, registrar, "auto")?;
    // baresip's equivalent of a fresh registration: a new user agent for the same account
    // (`uadel` then `uanew`), timed from `uanew` to its REGISTER_OK (401 round trip included).
    let mut peer_reg = Vec::new();
    let account = format!(
        "<sip:peer@127.0.0.1>;auth_pass={PEER_PASSWORD};answermode=auto;outbound=\"sip:127.0.0.1:{registrar}\";regint=300"
    );
    for _ in 0..args.registrations {
        peer.command("uadel", "sip:peer@127.0.0.1")?;
        std::thread::sleep(Duration::from_millis(50));
        let seen = peer.count("REGISTER_OK");
        let sent = Instant::now();
        peer.command("uanew", &account)?;
        if !peer.wait_count("REGISTER_OK", seen, Duration::from_secs(5)) {
            println!(
                "baresip gave no REGISTER_OK on `uanew`: its registration rate is not measured"
            );
            peer_reg.clear();
            break;
        }
        peer_reg.push(sent.elapsed());
    }

    // Calls to the cart.
    let ep = rt.block_on(telecart_sip::start(
        cart_config(registrar)?,
        CART_PASSWORD.into(),
        Arc::new(NoMedia),
    ))?;
    rt.block_on(registered(&ep))?;
    let cpu0 = self_cpu();
    let mut answer_ms = Vec::new();
    let mut ours_setup = Vec::new();
    for _ in 0..args.calls {
        ours_setup.extend(calls(&mut doctor, "sip:cart1@127.0.0.1", 1)?);
        if let Some(ms) = ep.status.borrow().last_answer_ms {
            answer_ms.push(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let ours_cpu = self_cpu().saturating_sub(cpu0);
    rt.block_on(ep.shutdown());

    // The same calls to baresip.
    let cpu0 = peer.peer.cpu();
    let peer_setup = calls(&mut doctor, "sip:peer@127.0.0.1", args.calls)?;
    let peer_cpu = peer.peer.cpu().saturating_sub(cpu0);
    drop(kam);

    let (o, p) = (stats(&ours_setup), stats(&peer_setup));
    let a = stats(&answer_ms);
    println!(
        "\nSIP through Kamailio on 127.0.0.1 ({} calls, {} registrations each)\n",
        args.calls, args.registrations
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "", "telecart", "baresip", "ratio"
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8.2}",
        "call set-up, dial to established (mean)",
        ms(o.mean),
        ms(p.mean),
        o.mean / p.mean.max(1e-9)
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8.2}",
        "call set-up, median",
        ms(o.p50),
        ms(p.p50),
        o.p50 / p.p50.max(1e-9)
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8.2}",
        "call set-up, p95",
        ms(o.p95),
        ms(p.p95),
        o.p95 / p.p95.max(1e-9)
    );
    println!(
        "{:<44} {:>12} {:>12}",
        "INVITE to 200 OK inside the answerer (mean)",
        ms(a.mean),
        "n/a"
    );
    let per_call = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / args.calls.max(1) as f64;
    println!(
        "{:<44} {:>12} {:>12} {:>8.2}",
        "CPU per call (answerer; ours sends no media)",
        ms(per_call(ours_cpu)),
        ms(per_call(peer_cpu)),
        per_call(ours_cpu) / per_call(peer_cpu).max(1e-9)
    );
    let r = stats(&ours_reg);
    let rate = |mean_ms: f64| 1000.0 / mean_ms.max(1e-9);
    if peer_reg.is_empty() {
        println!(
            "{:<44} {:>12} {:>12}",
            "REGISTER incl. 401 round trip (mean)",
            ms(r.mean),
            "n/a"
        );
    } else {
        let q = stats(&peer_reg);
        println!(
            "{:<44} {:>12} {:>12} {:>8.2}",
            "REGISTER to 200 OK (mean; ours incl. 401)",
            ms(r.mean),
            ms(q.mean),
            r.mean / q.mean.max(1e-9)
        );
        println!(
            "{:<44} {:>10.0}/s {:>10.0}/s {:>8.2}",
            "registrations per second, one at a time",
            rate(r.mean),
            rate(q.mean),
            rate(r.mean) / rate(q.mean).max(1e-9)
        );
    }
    println!("\nratio = telecart / baresip (lower is better, except registrations per second)");
    Ok(())
}

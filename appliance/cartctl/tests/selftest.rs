//! `cartctl selftest` on this machine: with the config's simulated sources and a real STUN server
//! (coturn) it passes; with a camera and ALSA configured on a machine that has neither, and with
//! an unreachable STUN server, it fails with the reason and a non-zero exit.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn selftest(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cartctl"))
        .args([
            "selftest",
            "--timeout-s",
            "3",
            "--update-config",
            "/nonexistent",
        ])
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A cart config whose data directory and master key live in `dir`.
fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let key = dir.join("master.key");
    if !key.exists() {
        telecart_store::MasterKey::generate_file(&key).unwrap();
    }
    let path = dir.join("cart.toml");
    std::fs::write(
        &path,
        format!("[cart]\ndata_dir = \"{d}\"\n[store]\ndata_dir = \"{d}/log\"\nmaster_key = \"{d}/master.key\"\n{body}", d = dir.display()),
    )
    .unwrap();
    path
}

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn coturn(port: u16, dir: &Path) -> Option<Coturn> {
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--no-cli",
            "--no-dtls",
            "--no-tls",
            "--stun-only",
            "--log-file=stdout",
            "--simple-log",
        ])
        .arg(format!("--listening-port={port}"))
        .arg(format!(
            "--pidfile={}",
            dir.join("turnserver.pid").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            std::thread::sleep(std::time::Duration::from_millis(500));
            Some(Coturn(c))
        }
        Err(e) => {
            eprintln!("!!! SKIPPING the STUN part: turnserver (coturn) not runnable: {e}");
            None
        }
    }
}

#[test]
fn simulated_sources_and_a_real_stun_server_pass() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let server = coturn(port, dir.path());
    let stun = if server.is_some() {
        format!("[webrtc]\nstun_servers = [\"stun:127.0.0.1:{port}\"]\n")
    } else {
        String::new()
    };
    let config = write_config(
        dir.path(),
        &format!(
            "[video]\nsource = \"test-pattern\"\nwidth = 320\nheight = 240\n[audio]\nmicrophone = \"tone\"\nspeaker = \"none\"\n{stun}"
        ),
    );
    let out = selftest(&config);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("camera") && t.contains("simulated source (video.source = test-pattern)"),
        "{t}"
    );
    assert!(t.contains("frame 320x240 captured"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("microphone") && l.contains("PASS")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("storage") && l.contains("PASS") && l.contains("read back")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("clock") && l.contains("PASS")),
        "{t}"
    );
    if server.is_some() {
        assert!(
            t.lines()
                .any(|l| l.starts_with(&format!("network stun:127.0.0.1:{port}"))
                    && l.contains("PASS")
                    && l.contains("sees us at 127.0.0.1")),
            "{t}"
        );
    }
    assert!(t.contains("0 failed"), "{t}");
}

#[test]
fn a_missing_camera_and_an_unreachable_stun_server_fail_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    // A socket that is bound but never answers: the port cannot be taken by a
    // STUN server another test starts meanwhile.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let config = write_config(
        dir.path(),
        &format!(
            "[video]\nsource = \"camera\"\n[audio]\nmicrophone = \"tone\"\nspeaker = \"none\"\n[webrtc]\nstun_servers = [\"stun:127.0.0.1:{port}\"]\n"
        ),
    );
    let out = selftest(&config);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    if !Path::new("/dev/video0").exists() {
        assert!(
            t.lines().any(|l| l.starts_with("camera")
                && l.contains("FAIL")
                && l.contains("no V4L2 capture device")),
            "{t}"
        );
    }
    assert!(
        t.lines()
            .any(|l| l.starts_with("network stun:") && l.contains("FAIL")),
        "{t}"
    );
    assert!(t.contains("check(s) failed"), "{t}");
}

#[test]
fn a_missing_data_directory_fails_storage() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[video]\nsource = \"test-pattern\"\n[audio]\nmicrophone = \"silence\"\nspeaker = \"none\"\n",
    );
    let text_in = std::fs::read_to_string(&config).unwrap().replacen(
        &format!("data_dir = \"{}\"", dir.path().display()),
        "data_dir = \"/nonexistent/telecart\"",
        1,
    );
    std::fs::write(&config, text_in).unwrap();
    let out = selftest(&config);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.lines().any(|l| l.starts_with("storage")
            && l.contains("FAIL")
            && l.contains("/nonexistent/telecart")),
        "{t}"
    );
}

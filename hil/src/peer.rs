//! The host's WHIP peer: `tests/peers/whip_aiortc.py` (aiortc), which decodes the cart's
//! H.264 and Opus and reports what it decoded on `GET /stats`.

use anyhow::{Context, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running WHIP peer.
pub(crate) struct WhipPeer {
    child: Child,
    address: IpAddr,
    port: u16,
}

impl WhipPeer {
    /// Starts the peer listening on `address` (also its only ICE host candidate).
    /// Its log goes to `log`.
    pub(crate) fn start(
        repo: &Path,
        python: &Path,
        address: IpAddr,
        log: &Path,
    ) -> anyhow::Result<WhipPeer> {
        if !python.exists() {
            bail!(
                "{} is missing: run tests/setup.sh (it makes the peers' venv)",
                python.display()
            );
        }
        let addr = address.to_string();
        let mut child = Command::new(python)
            .arg(repo.join("tests/peers/whip_aiortc.py"))
            .args(["--host", &addr, "--port", "0", "--ice-host-address", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(log)
                    .with_context(|| format!("creating {}", log.display()))?,
            )
            .spawn()
            .context("starting tests/peers/whip_aiortc.py")?;
        let stdout = child.stdout.take().context("the peer's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => Ok(WhipPeer {
                child,
                address,
                port,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the WHIP peer did not say LISTENING within 30 s")
            }
        }
    }

    /// The endpoint the cart publishes to.
    pub(crate) fn whip_url(&self) -> String {
        format!("http://{}/whip/cart", self.socket())
    }

    fn socket(&self) -> String {
        match self.address {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }

    /// What the peer decoded so far.
    pub(crate) fn stats(&self) -> anyhow::Result<Value> {
        let url = format!("http://{}/stats", self.socket());
        let mut response = ureq::get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let text = response.body_mut().read_to_string()?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Stops the peer (SIGTERM: it closes its sessions) and waits for it.
    pub(crate) fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of a child this struct owns and has not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        if crate::target::wait_until(&mut self.child, deadline).is_none() {
            eprintln!("hil: the WHIP peer ignored SIGTERM and was killed");
        }
    }
}

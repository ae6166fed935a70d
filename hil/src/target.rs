//! What the runner needs from a cart, virtual or real, and running host commands with a
//! time limit.

use crate::verdict::Outcome;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where things are on the cart (the plan's `{bin}`, `{share}` and `{data}`).
#[derive(Debug, Clone)]
pub(crate) struct CartPaths {
    /// The cart's binaries (cartd, cartctl, devices-probe).
    pub(crate) bin: String,
    /// Read-only inputs rendered by the runner (configs, speech.wav).
    pub(crate) share: String,
    /// Storage that survives a reboot.
    pub(crate) data: String,
}

/// A cart the plan runs against.
pub(crate) trait Target {
    /// Runs a POSIX sh script on the cart (with `set -e`), within `timeout`.
    fn exec(&mut self, script: &str, timeout: Duration) -> Outcome;
    /// Reboots the cart and returns once it runs commands again.
    fn reboot(&mut self, timeout: Duration) -> anyhow::Result<()>;
    /// The host address the cart reaches the runner's peers on: they listen there and
    /// offer it as their ICE candidate.
    fn peer_address(&self) -> IpAddr;
    /// The host's address on a network where the cart's own addresses are reachable, without
    /// NAT (SIP carries addresses in Contact and SDP): the SIP peers listen there. `Err` says
    /// why there is none.
    fn lan_address(&self) -> Result<IpAddr, String>;
    /// Why the cart's CPU runs slower than the real one (emulated), if it does.
    fn emulated_cpu(&self) -> Option<String>;
    /// Shuts the cart down or disconnects (the virtual cart powers off).
    fn finish(&mut self) -> anyhow::Result<()>;
}

/// The script as run on the cart: stops at the first failing command.
pub(crate) fn wrap_script(script: &str) -> String {
    format!("set -e\n{script}\n")
}

/// Runs a host command with `stdin` as its input; kills it after `timeout`.
pub(crate) fn run_with_timeout(mut command: Command, stdin: &[u8], timeout: Duration) -> Outcome {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                lost: Some(format!("cannot start {:?}: {e}", command.get_program())),
                ..Outcome::default()
            };
        }
    };
    if let Some(mut input) = child.stdin.take() {
        // A command that exits without reading its input is not an error here.
        let _ = input.write_all(stdin);
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_until(&mut child, Instant::now() + timeout);
    let mut outcome = Outcome {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        ..Outcome::default()
    };
    match status {
        Some(s) => outcome.exit = Some(s.code().unwrap_or(128)),
        None => outcome.lost = Some(format!("timed out after {} s", timeout.as_secs())),
    }
    outcome
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` until `deadline`; kills it then and returns `None`.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

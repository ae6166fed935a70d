//! A real cart over SSH: the plan's scripts run through `ssh HOST sh -s`.

use crate::target::{CartPaths, Target, run_with_timeout, wrap_script};
use crate::verdict::Outcome;
use anyhow::{Context, bail};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A cart reached with `ssh` (keys, no password prompts: BatchMode).
pub(crate) struct SshCart {
    destination: String,
    peer_address: IpAddr,
}

impl SshCart {
    /// Checks that the cart answers and copies the plan's inputs to `paths.share`.
    pub(crate) fn connect(
        destination: String,
        peer_address: IpAddr,
        paths: &CartPaths,
        share: &Path,
    ) -> anyhow::Result<SshCart> {
        let mut cart = SshCart {
            destination,
            peer_address,
        };
        let hello = cart.exec("uname -a", Duration::from_secs(30));
        if hello.exit != Some(0) {
            bail!(
                "ssh {} does not answer: {}{}",
                cart.destination,
                hello.stderr.trim(),
                hello.lost.unwrap_or_default()
            );
        }
        let prepare = cart.exec(
            &format!("rm -rf {0} && mkdir -p {0} {1}", paths.share, paths.data),
            Duration::from_secs(30),
        );
        if prepare.exit != Some(0) {
            bail!(
                "cannot prepare {} on the cart: {}",
                paths.share,
                prepare.stderr.trim()
            );
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(share)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .context("tar")?;
        let status = cart
            .ssh()
            .arg(format!("tar -C {} -xf -", paths.share))
            .stdin(tar.stdout.context("tar's output")?)
            .status()?;
        if !status.success() {
            bail!("copying the plan's inputs to the cart failed: {status}");
        }
        Ok(cart)
    }

    fn ssh(&self) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .arg(&self.destination);
        command
    }

    fn answers(&self) -> bool {
        self.ssh()
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Target for SshCart {
    fn exec(&mut self, script: &str, timeout: Duration) -> Outcome {
        let mut command = self.ssh();
        command.args(["sh", "-s"]);
        run_with_timeout(command, wrap_script(script).as_bytes(), timeout)
    }

    fn reboot(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let asked = self.exec(
            "sync; (sleep 1; reboot) >/dev/null 2>&1 &",
            Duration::from_secs(30),
        );
        if asked.exit != Some(0) {
            bail!("reboot refused: {}", asked.stderr.trim());
        }
        while self.answers() {
            if Instant::now() > deadline {
                bail!(
                    "the cart still answers {} s after reboot",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        while !self.answers() {
            if Instant::now() > deadline {
                bail!("the cart is not back within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(())
    }

    fn peer_address(&self) -> IpAddr {
        self.peer_address
    }

    fn lan_address(&self) -> Result<IpAddr, String> {
        // A real cart and this machine are on the hospital's network: no NAT between them.
        Ok(self.peer_address)
    }

    fn emulated_cpu(&self) -> Option<String> {
        None
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

//! The virtual cart: QEMU (KVM where available, else TCG) booting Debian's stock kernel with
//! the kernel's own virtual camera (vivid) and sound card (snd-aloop), an initramfs holding
//! busybox, the cart's binaries and their shared libraries, and three 9p shares: control
//! (commands in, results out), the plan's inputs (read-only) and the cart's data (kept across
//! reboots).
//!
//! The guest's `/init` (`hil/guest/init`) runs each `NNN.cmd` file the runner drops into the
//! control share and answers with `NNN.out`, `NNN.err` and `NNN.rc`.

use crate::target::{CartPaths, Target, wait_until};
use crate::verdict::Outcome;
use anyhow::{Context, bail};
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the host's peers are for the guest: an address on the loopback of the runner's own
/// network namespace (TEST-NET-1, RFC 5737). QEMU's user-mode network forwards the guest's
/// packets to it as ordinary host sockets, and nothing can leave: the namespace has no other
/// interface.
pub(crate) const PEER_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The virtual cart's second network: a tap device in the runner's namespace, bridged to
/// nothing, with the host on [`LAN_HOST`] and the cart on [`LAN_CART`]. It is what a ward's
/// network is to a real cart: no NAT, so the addresses SIP puts in Contact and SDP are
/// reachable both ways (through QEMU's user-mode NAT they are not: docs/hil.md, "Network").
pub(crate) const LAN_TAP: &str = "hil-lan0";
/// The host's end of the tap network (the SIP peers listen here).
pub(crate) const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The cart's address on it (eth1 in the guest, set by `/init` from `hil.lan=`).
pub(crate) const LAN_CART: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The MAC of the cart's tap NIC: `/init` finds the interface by it.
const LAN_MAC: &str = "52:54:00:77:00:02";

/// Creates the tap network's host side ([`LAN_TAP`], [`LAN_HOST`]/24). Run inside the
/// runner's own network namespace (root): it vanishes with it. `Err` says why not (no
/// /dev/net/tun, no CAP_NET_ADMIN); the steps that need it are then skipped with that reason.
pub(crate) fn create_lan() -> Result<(), String> {
    let address = format!("{LAN_HOST}/24");
    for args in [
        vec!["tuntap", "add", "dev", LAN_TAP, "mode", "tap"],
        vec!["addr", "add", address.as_str(), "dev", LAN_TAP],
        vec!["link", "set", LAN_TAP, "up"],
    ] {
        let out = Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// The guest's paths, as the plan sees them.
pub(crate) fn paths() -> CartPaths {
    CartPaths {
        bin: "/opt/telecart/bin".into(),
        share: "/hil/share".into(),
        data: "/data".into(),
    }
}

const GUEST_INIT: &str = include_str!("../guest/init");

/// Everything the virtual cart is made of.
#[derive(Debug, Clone)]
pub(crate) struct VirtualCartSpec {
    /// `$WORK/hil/kernel` from `tests/setup.d/hil.sh`: `vmlinux` and `lib/modules`.
    pub(crate) kernel_dir: PathBuf,
    /// Host binaries to put in the guest's `{bin}`.
    pub(crate) cart_binaries: Vec<PathBuf>,
    /// Rendered plan inputs (the guest's `{share}`).
    pub(crate) share: PathBuf,
    /// Where the run keeps the initramfs, the control share, the data share and console logs.
    pub(crate) work: PathBuf,
    /// Leave the camera driver out (the negative run).
    pub(crate) without_camera_driver: bool,
    /// Longest a boot may take until the guest says it is ready.
    pub(crate) boot_timeout: Duration,
    /// The tap network ([`create_lan`]): `Ok` gives the cart a second NIC on it; `Err` is why
    /// there is none.
    pub(crate) lan: Result<(), String>,
}

/// A running virtual cart.
pub(crate) struct VirtualCart {
    spec: VirtualCartSpec,
    initramfs: PathBuf,
    qemu: Option<Child>,
    boot: u32,
    next_command: u32,
    /// `kvm` while KVM works, else `tcg`.
    accelerator: &'static str,
    /// How long each boot took until the guest was ready.
    pub(crate) boot_times: Vec<Duration>,
}

impl VirtualCart {
    /// Builds the initramfs and boots the cart the first time.
    pub(crate) fn start(spec: VirtualCartSpec) -> anyhow::Result<VirtualCart> {
        let vmlinux = spec.kernel_dir.join("vmlinux");
        if !vmlinux.exists() {
            bail!(
                "{} is missing: run tests/setup.sh (tests/setup.d/hil.sh fetches the kernel)",
                vmlinux.display()
            );
        }
        fs::create_dir_all(&spec.work)?;
        let initramfs = spec.work.join("initramfs.cpio");
        build_initramfs(&spec, &initramfs)?;
        fs::create_dir_all(spec.work.join("data"))?;
        let mut cart = VirtualCart {
            spec,
            initramfs,
            qemu: None,
            boot: 0,
            next_command: 1,
            accelerator: accelerator(),
            boot_times: Vec::new(),
        };
        cart.boot()?;
        Ok(cart)
    }

    fn ctl(&self) -> PathBuf {
        self.spec.work.join(format!("ctl-{}", self.boot))
    }

    fn console_log(&self) -> PathBuf {
        self.spec.work.join(format!("console-{}.log", self.boot))
    }

    /// Boots the cart; if KVM is what fails (QEMU aborts, or KVM stops the guest with an
    /// internal error, as where KVM is nested), boots again under TCG and stays there.
    fn boot(&mut self) -> anyhow::Result<()> {
        match self.boot_once() {
            Err(e) if self.accelerator == "kvm" => {
                let why = format!("{e:#}");
                eprintln!(
                    "\n!!!!!!!! hil: the virtual cart did not boot under KVM ({}); TCG from now on !!!!!!!!\n",
                    why.lines().take(3).collect::<Vec<_>>().join(" | ")
                );
                self.kill();
                self.accelerator = "tcg";
                self.boot_once()
            }
            other => other,
        }
    }

    fn boot_once(&mut self) -> anyhow::Result<()> {
        self.boot += 1;
        let ctl = self.ctl();
        // A reused --out holds an earlier run's answers, which would be read as this boot's.
        if ctl.exists() {
            fs::remove_dir_all(&ctl)?;
        }
        fs::create_dir_all(&ctl)?;
        let console = fs::File::create(self.console_log())?;
        // no_timer_check: on a busy host the emulated timer can miss the kernel's IO-APIC
        // check, which then panics.
        let mut append = format!(
            "console=ttyS0 panic=-1 quiet no_timer_check hil.boot={}",
            self.boot
        );
        if self.spec.without_camera_driver {
            append.push_str(" hil.no_vivid");
        }
        let mut lan_nic: Vec<String> = Vec::new();
        if self.spec.lan.is_ok() {
            append.push_str(&format!(" hil.lan={LAN_CART}/24,{LAN_MAC}"));
            lan_nic = vec![
                "-netdev".into(),
                format!("tap,id=n1,ifname={LAN_TAP},script=no,downscript=no"),
                "-device".into(),
                format!("virtio-net-pci,netdev=n1,mac={LAN_MAC},romfile="),
            ];
        }
        let share = |path: &Path, tag: &str, readonly: bool| {
            format!(
                "local,path={},mount_tag={tag},security_model=none{}",
                path.display(),
                if readonly { ",readonly=on" } else { "" }
            )
        };
        let accelerator = self.accelerator;
        eprintln!("hil: virtual cart boot {}: {accelerator}", self.boot);
        let started = Instant::now();
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                accelerator,
                "-m",
                "1024",
                "-smp",
                "2",
                "-nographic",
            ])
            // The cart's binaries are built for x86-64-v3 (.cargo/config.toml); the default
            // qemu64 CPU is older. `max` is the host's CPU under KVM, and under TCG every
            // instruction set TCG emulates (AVX2, FMA, F16C).
            .args(["-cpu", "max"])
            .args(["-no-reboot", "-kernel"])
            .arg(self.spec.kernel_dir.join("vmlinux"))
            .arg("-initrd")
            .arg(&self.initramfs)
            .args(["-append", &append])
            .args(["-netdev", "user,id=n0"])
            .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
            .args(&lan_nic)
            .args(["-virtfs", &share(&ctl, "ctl0", false)])
            .args(["-virtfs", &share(&self.spec.share, "share0", true)])
            .args([
                "-virtfs",
                &share(&self.spec.work.join("data"), "data0", false),
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        self.qemu = Some(child);
        let ready = ctl.join("ready");
        let deadline = started + self.spec.boot_timeout;
        while !ready.exists() {
            if let Some(status) = self.qemu_exited() {
                bail!(
                    "the virtual cart stopped while booting ({status}); console:\n{}",
                    self.console_tail(30)
                );
            }
            if self.accelerator == "kvm"
                && started.elapsed().as_millis() % 1000 < 50
                && fs::read_to_string(self.console_log())
                    .is_ok_and(|c| c.contains("KVM internal error"))
            {
                self.kill();
                bail!("KVM internal error; console:\n{}", self.console_tail(30));
            }
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "the virtual cart was not ready after {} s; console:\n{}",
                    self.spec.boot_timeout.as_secs(),
                    self.console_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.boot_times.push(started.elapsed());
        Ok(())
    }

    fn qemu_exited(&mut self) -> Option<String> {
        match self.qemu.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            None => Some("not running".into()),
            Some(Ok(None)) => None,
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.qemu.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The guest's facts from its last boot (kernel, modules, uptime at ready).
    pub(crate) fn ready_report(&self) -> String {
        fs::read_to_string(self.ctl().join("ready")).unwrap_or_default()
    }

    /// The last lines of the current boot's console.
    pub(crate) fn console_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.console_log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Powers the guest off (it syncs and unmounts the data share first) and waits.
    fn power_off(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.qemu.take() else {
            return Ok(());
        };
        fs::write(self.ctl().join("poweroff"), b"")?;
        match wait_until(&mut child, Instant::now() + timeout) {
            Some(_) => Ok(()),
            None => bail!(
                "the virtual cart did not power off within {} s",
                timeout.as_secs()
            ),
        }
    }
}

impl Target for VirtualCart {
    fn exec(&mut self, script: &str, timeout: Duration) -> Outcome {
        let ctl = self.ctl();
        let id = format!("{:03}", self.next_command);
        self.next_command += 1;
        let cmd = ctl.join(format!("{id}.cmd"));
        let tmp = ctl.join(format!("{id}.tmp"));
        let written = fs::write(&tmp, crate::target::wrap_script(script))
            .and_then(|()| fs::rename(&tmp, &cmd));
        if let Err(e) = written {
            return Outcome {
                lost: Some(format!("cannot write {}: {e}", cmd.display())),
                ..Outcome::default()
            };
        }
        let rc = ctl.join(format!("{id}.rc"));
        let deadline = Instant::now() + timeout;
        let lost = loop {
            if let Ok(text) = fs::read_to_string(&rc) {
                let read = |ext: &str| fs::read_to_string(ctl.join(format!("{id}.{ext}")));
                let exit = text.trim().parse().ok();
                return Outcome {
                    exit,
                    stdout: read("out").unwrap_or_default(),
                    stderr: read("err").unwrap_or_default(),
                    lost: exit
                        .is_none()
                        .then(|| format!("unreadable exit status {:?}", text.trim())),
                    peer_stats: None,
                };
            }
            if let Some(status) = self.qemu_exited() {
                break format!(
                    "the virtual cart stopped ({status}); console:\n{}",
                    self.console_tail(20)
                );
            }
            if Instant::now() > deadline {
                break format!("timed out after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The guest may still be running the command: start over so later steps can run.
        let partial = |ext: &str| fs::read_to_string(ctl.join(format!("{id}.{ext}")));
        let outcome = Outcome {
            exit: None,
            stdout: partial("out").unwrap_or_default(),
            stderr: partial("err").unwrap_or_default(),
            lost: Some(lost),
            peer_stats: None,
        };
        self.kill();
        if let Err(e) = self.boot() {
            eprintln!("hil: the virtual cart did not come back: {e:#}");
        }
        outcome
    }

    fn reboot(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.power_off(timeout)?;
        self.boot()
    }

    fn peer_address(&self) -> IpAddr {
        IpAddr::V4(PEER_ADDRESS)
    }

    fn lan_address(&self) -> Result<IpAddr, String> {
        match &self.spec.lan {
            Ok(()) => Ok(IpAddr::V4(LAN_HOST)),
            Err(why) => Err(format!("no tap network for the virtual cart: {why}")),
        }
    }

    fn emulated_cpu(&self) -> Option<String> {
        (self.accelerator == "tcg").then(|| {
            "the virtual cart runs under TCG (KVM is not usable on this host), where a whisper \
             tiny.en decode of 12 s of speech did not finish in 390 s (2026-11-25)"
                .to_string()
        })
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.power_off(Duration::from_secs(60))
    }
}

impl Drop for VirtualCart {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Puts busybox, the module tree, alsa-lib's configuration, aplay, the cart's binaries and
/// every shared library they load into one newc cpio archive (uncompressed: decompressing
/// under TCG costs more than reading the bigger file).
fn build_initramfs(spec: &VirtualCartSpec, out: &Path) -> anyhow::Result<()> {
    let root = spec.work.join("rootfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/share",
        "opt/telecart/bin",
        "etc",
        "proc",
        "sys",
        "dev",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = which("busybox").context("busybox (apt-get install busybox-static)")?;
    fs::copy(&busybox, root.join("bin/busybox"))?;
    let applets = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    run(Command::new("cp")
        .arg("-a")
        .arg(spec.kernel_dir.join("lib"))
        .arg(&root))?;
    run(Command::new("cp")
        .args(["-a", "/usr/share/alsa"])
        .arg(root.join("usr/share")))?;
    let aplay = which("aplay").context("aplay (apt-get install alsa-utils)")?;
    fs::copy(&aplay, root.join("usr/bin/aplay"))?;
    // The same program records when called arecord (the call step records the speaker).
    std::os::unix::fs::symlink("aplay", root.join("usr/bin/arecord"))?;
    copy_libraries(&aplay, &root)?;
    for binary in &spec.cart_binaries {
        let name = binary
            .file_name()
            .context("a cart binary without a file name")?;
        fs::copy(binary, root.join("opt/telecart/bin").join(name))
            .with_context(|| format!("copying {}", binary.display()))?;
        // Debug builds carry hundreds of MB of debug info; the initramfs lives in
        // the guest's RAM, so only the code goes in.
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg(root.join("opt/telecart/bin").join(name))
            .status()
            .context("running strip (binutils)")?;
        if !status.success() {
            bail!("strip --strip-debug {} failed: {status}", name.display());
        }
        copy_libraries(binary, &root)?;
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    let init = root.join("init");
    fs::write(&init, GUEST_INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let archive = fs::File::create(out)?;
    let status = Command::new("sh")
        .args(["-c", "find . | cpio -o -H newc --quiet"])
        .current_dir(&root)
        .stdout(archive)
        .status()
        .context("running cpio (apt-get install cpio)")?;
    if !status.success() {
        bail!("cpio failed: {status}");
    }
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// Copies every library `ldd` names for `binary` (and the dynamic loader) to the same path
/// under `root`.
fn copy_libraries(binary: &Path, root: &Path) -> anyhow::Result<()> {
    let out = Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for lib in ldd_paths(&text) {
        let dest = root.join(lib.trim_start_matches('/'));
        if dest.exists() {
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(lib, &dest).with_context(|| format!("copying {lib}"))?;
    }
    Ok(())
}

/// The absolute paths in `ldd`'s output.
fn ldd_paths(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then_some(path)
        })
        .collect()
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not installed"))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status()?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// KVM when this machine lets us open it (the cart's code runs natively instead of through
/// TCG's instruction translation), else TCG, which runs anywhere.
fn accelerator() -> &'static str {
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if kvm { "kvm" } else { "tcg" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibasound.so.2 => /lib/x86_64-linux-gnu/libasound.so.2 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                    \tlibmissing.so => not found\n";
        assert_eq!(
            ldd_paths(text),
            vec![
                "/lib/x86_64-linux-gnu/libasound.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }
}

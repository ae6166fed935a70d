//! `telecart-hil`: runs the cart's hardware-in-the-loop plan (`hil/plan.toml`) against a
//! virtual cart (QEMU with the kernel's vivid camera and snd-aloop sound card) or a real cart
//! over SSH, prints a per-step report and exits non-zero if any step failed.
//!
//! ```text
//! cargo run -p telecart-hil -- virtual                       # the virtual cart (root)
//! cargo run -p telecart-hil -- virtual --without-camera-driver --only camera   # must fail
//! cargo run -p telecart-hil -- ssh root@cart-07 --peer-address 10.1.2.3
//! ```
//! See docs/hil.md.

mod peer;
mod plan;
mod report;
mod sip_peer;
mod ssh;
mod target;
mod verdict;
mod virtual_cart;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use plan::{Action, PeerKind, Plan, substitute};
use report::{StepResult, Tally};
use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use target::{CartPaths, Target};
use verdict::{Outcome, Verdict, judge};

#[derive(Debug, Parser)]
#[command(
    name = "telecart-hil",
    about = "Runs the cart's hardware-in-the-loop plan"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    target: TargetCommand,
}

#[derive(Debug, Args)]
struct Common {
    /// The plan (default: hil/plan.toml of this repository).
    #[arg(long, global = true)]
    plan: Option<PathBuf>,
    /// Where the run's files go (report.json, console logs, the data share).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Run only these steps (repeatable); the others are left out of the report.
    #[arg(long, global = true)]
    only: Vec<String>,
    /// Run the steps that require this feature although the plan marks it unavailable.
    #[arg(long, global = true)]
    feature: Vec<String>,
    /// Override a target variable of the plan, e.g. `--var mic_pcm=hw:1,0`.
    #[arg(long, global = true, value_parser = parse_var)]
    var: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
enum TargetCommand {
    /// A virtual cart: QEMU (TCG) with Debian's kernel, vivid and snd-aloop. Needs root
    /// (its own network namespace) and tests/setup.sh (kernel, peers).
    Virtual {
        /// Boot without the camera driver: the camera steps must fail (the negative run).
        #[arg(long)]
        without_camera_driver: bool,
        /// Use the binaries already built instead of running cargo build.
        #[arg(long)]
        no_build: bool,
        /// Give the cart no tap network (the steps with a SIP peer are then skipped).
        #[arg(long)]
        without_lan: bool,
        /// The kernel and modules from tests/setup.d/hil.sh (default: $WORK/hil/kernel).
        #[arg(long)]
        kernel_dir: Option<PathBuf>,
        /// Longest a boot may take, in seconds.
        #[arg(long, default_value_t = 120)]
        boot_timeout_s: u64,
    },
    /// A real cart over SSH (key login; the cart has cartd, cartctl, devices-probe and aplay).
    Ssh {
        /// `user@host` as ssh takes it.
        destination: String,
        /// This machine's address as the cart reaches it (the WHIP peer listens there).
        #[arg(long)]
        peer_address: IpAddr,
        /// Where the cart's binaries are.
        #[arg(long, default_value = "/usr/bin")]
        bin_dir: String,
        /// A directory on the cart that survives a reboot (the plan's {data}).
        #[arg(long, default_value = "/var/lib/telecart-hil")]
        data_dir: String,
        /// Where the plan's inputs are copied on the cart.
        #[arg(long, default_value = "/tmp/telecart-hil")]
        share_dir: String,
    },
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?}: expected NAME=VALUE"))
}

/// The repository (for the plan, the cart configs and the peers).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `.work` of the repository, as tests/setup.sh makes it.
fn work_dir(repo: &Path) -> PathBuf {
    std::env::var_os("TELECART_WORK").map_or_else(|| repo.join(".work"), PathBuf::from)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(tally) if tally.fail == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hil: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Tally> {
    let started = Instant::now();
    let repo = repo_root();
    let work = work_dir(&repo);
    let plan_path = cli
        .common
        .plan
        .clone()
        .unwrap_or_else(|| repo.join("hil/plan.toml"));
    let plan_text = fs::read_to_string(&plan_path)
        .with_context(|| format!("reading {}", plan_path.display()))?;
    let plan =
        Plan::parse(&plan_text).with_context(|| format!("{} is not valid", plan_path.display()))?;
    for name in &cli.common.only {
        if !plan.steps.iter().any(|s| &s.name == name) {
            bail!("--only {name}: the plan has no such step");
        }
    }
    let out = match &cli.common.out {
        Some(dir) => dir.clone(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            work.join("hil/runs").join(stamp.to_string())
        }
    };
    fs::create_dir_all(&out)?;
    let out = std::path::absolute(&out)?;

    let (kind, paths) = match &cli.target {
        TargetCommand::Virtual { .. } => ("virtual", virtual_cart::paths()),
        TargetCommand::Ssh {
            bin_dir,
            data_dir,
            share_dir,
            ..
        } => (
            "ssh",
            CartPaths {
                bin: bin_dir.clone(),
                share: share_dir.clone(),
                data: data_dir.clone(),
            },
        ),
    };
    let mut vars = plan.vars.get(kind).cloned().unwrap_or_default();
    vars.extend(cli.common.var.iter().cloned());
    vars.insert("bin".into(), paths.bin.clone());
    vars.insert("share".into(), paths.share.clone());
    vars.insert("data".into(), paths.data.clone());
    // The SIP peers' registrar: on the virtual cart's tap network (the runner's namespace is
    // its own, so the standard port is free), or on this machine's address for a real cart.
    let sip_accounts = match &cli.target {
        TargetCommand::Virtual { .. } => {
            sip_peer::SipAccounts::new(IpAddr::V4(virtual_cart::LAN_HOST), 5060)
        }
        TargetCommand::Ssh { peer_address, .. } => sip_peer::SipAccounts::new(*peer_address, 0),
    };
    vars.extend(sip_accounts.vars());

    let share = out.join("share");
    render_share(&repo.join("hil/cart"), &share, &vars)?;
    share_model(
        &work.join("models/ggml-tiny.en.bin"),
        &share.join("model.bin"),
    )?;

    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut target: Box<dyn Target> = match cli.target {
        TargetCommand::Virtual {
            without_camera_driver,
            no_build,
            without_lan,
            kernel_dir,
            boot_timeout_s,
        } => {
            let t = Instant::now();
            let binaries = cart_binaries(&repo, !no_build)?;
            timings.push(("build".into(), t.elapsed()));
            // From here on the runner, QEMU and the peers live in a network namespace of
            // their own: the guest reaches the peers, and nothing reaches anything else.
            isolate_network()?;
            let lan = if without_lan {
                Err("left out (--without-lan)".to_string())
            } else {
                virtual_cart::create_lan()
            };
            if let Err(why) = &lan {
                eprintln!(
                    "\n!!!!!!!! hil: no tap network for the virtual cart ({why}): \
                     steps with a SIP peer are SKIPPED !!!!!!!!\n"
                );
            }
            let t = Instant::now();
            let cart = virtual_cart::VirtualCart::start(virtual_cart::VirtualCartSpec {
                kernel_dir: kernel_dir.unwrap_or_else(|| work.join("hil/kernel")),
                cart_binaries: binaries,
                share: share.clone(),
                work: out.clone(),
                without_camera_driver,
                boot_timeout: Duration::from_secs(boot_timeout_s),
                lan,
            })?;
            timings.push(("initramfs + first boot".into(), t.elapsed()));
            println!(
                "hil: {} on the virtual cart{} (boot {:.1} s)",
                plan.plan.name,
                if without_camera_driver {
                    ", camera driver left out"
                } else {
                    ""
                },
                cart.boot_times.first().map_or(0.0, Duration::as_secs_f64)
            );
            for line in cart.ready_report().lines() {
                println!("      {line}");
            }
            Box::new(cart)
        }
        TargetCommand::Ssh {
            destination,
            peer_address,
            ..
        } => {
            println!("hil: {} on {destination}", plan.plan.name);
            Box::new(ssh::SshCart::connect(
                destination,
                peer_address,
                &paths,
                &share,
            )?)
        }
    };

    let python = work.join("venv/bin/python");
    let mut results: Vec<StepResult> = Vec::new();
    let mut earlier: BTreeMap<String, String> = BTreeMap::new();
    for step in &plan.steps {
        if !cli.common.only.is_empty() && !cli.common.only.contains(&step.name) {
            continue;
        }
        let t = Instant::now();
        let mut result = StepResult {
            name: step.name.clone(),
            what: step.what.clone(),
            verdict: Verdict::Pass,
            took: Duration::ZERO,
            outcome: None,
            diagnosis: None,
        };
        let emulated_cpu = target.emulated_cpu();
        if let Some(why) = plan.skip_reason(step, &cli.common.feature, emulated_cpu.as_deref()) {
            result.verdict = Verdict::Skip(why);
        } else if step.action == Action::Reboot {
            if let Err(e) = target.reboot(step.timeout()) {
                result.verdict = Verdict::Fail(vec![format!("{e:#}")]);
            }
        } else {
            let host = HostSide {
                repo: &repo,
                python: &python,
                out: &out,
                sip: &sip_accounts,
            };
            run_step(step, &vars, target.as_mut(), &host, &earlier, &mut result);
        }
        result.took = t.elapsed();
        if let Some(outcome) = &result.outcome {
            earlier.insert(step.name.clone(), outcome.stdout.clone());
        }
        print!("{}", result.render());
        results.push(result);
    }
    if let Err(e) = target.finish() {
        eprintln!("hil: {e:#}");
    }
    drop(target);

    let tally = Tally::of(&results);
    timings.push(("whole run".into(), started.elapsed()));
    let times: Vec<String> = timings
        .iter()
        .map(|(what, d)| format!("{what} {:.1} s", d.as_secs_f64()))
        .collect();
    println!("hil: {}", times.join(", "));
    println!("{}", tally.line());
    let report = serde_json::json!({
        "plan": plan.plan.name,
        "target": kind,
        "result": if tally.fail == 0 { "PASS" } else { "FAIL" },
        "timings_s": timings.iter().map(|(w, d)| (w.clone(), d.as_secs_f64())).collect::<BTreeMap<_, _>>(),
        "steps": results.iter().map(StepResult::to_json).collect::<Vec<_>>(),
    });
    fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("hil: report and logs in {}", out.display());
    Ok(tally)
}

/// Where the host's side of a step lives: the repository (peers), the peers' Python, the
/// run's directory (peer logs) and the SIP accounts the cart's configuration names.
struct HostSide<'a> {
    repo: &'a Path,
    python: &'a Path,
    out: &'a Path,
    sip: &'a sip_peer::SipAccounts,
}

/// The host peer of a running step.
enum RunningPeer {
    Whip(peer::WhipPeer),
    Sip(sip_peer::SipPeer),
}

/// Runs one `run` step: its peer, its script, its verdict and, on failure, its diagnosis.
fn run_step(
    step: &plan::Step,
    vars: &BTreeMap<String, String>,
    target: &mut dyn Target,
    host: &HostSide<'_>,
    earlier: &BTreeMap<String, String>,
    result: &mut StepResult,
) {
    let mut vars = vars.clone();
    let peer = match step.peer {
        Some(PeerKind::Whip) => match peer::WhipPeer::start(
            host.repo,
            host.python,
            target.peer_address(),
            &host.out.join(format!("peer-{}.log", step.name)),
        ) {
            Ok(p) => {
                vars.insert("whip_url".into(), p.whip_url());
                Some(RunningPeer::Whip(p))
            }
            Err(e) => {
                result.verdict = Verdict::Fail(vec![format!("peer: {e:#}")]);
                return;
            }
        },
        Some(PeerKind::Sip) => {
            if let Err(why) = target.lan_address() {
                result.verdict = Verdict::Skip(format!(
                    "!!! the SIP peer needs a network without NAT to the cart: {why} !!!"
                ));
                return;
            }
            if let Some(missing) = sip_peer::missing_programs() {
                result.verdict = Verdict::Skip(format!("!!! the SIP peer: {missing} !!!"));
                return;
            }
            match sip_peer::SipPeer::start(
                host.repo,
                host.sip,
                &host.out.join(format!("sip-{}", step.name)),
            ) {
                Ok(p) => Some(RunningPeer::Sip(p)),
                Err(e) => {
                    result.verdict = Verdict::Fail(vec![format!("peer: {e:#}")]);
                    return;
                }
            }
        }
        None => None,
    };
    let script = step.run.as_deref().unwrap_or_default();
    let mut outcome = match substitute(script, &vars) {
        Ok(script) => target.exec(&script, step.timeout()),
        Err(e) => Outcome {
            lost: Some(format!("plan: {e}")),
            ..Outcome::default()
        },
    };
    match peer {
        Some(RunningPeer::Whip(peer)) => {
            match peer.stats() {
                Ok(stats) => outcome.peer_stats = Some(stats),
                Err(e) => eprintln!("hil: {}: peer statistics: {e:#}", step.name),
            }
            peer.stop();
        }
        Some(RunningPeer::Sip(peer)) => outcome.peer_stats = Some(peer.finish()),
        None => {}
    }
    let mut pass = step.pass.clone();
    let contains: Result<Vec<String>, String> = pass
        .stdout_contains
        .iter()
        .map(|text| substitute(text, &vars))
        .collect();
    result.verdict = match contains {
        Ok(contains) => {
            pass.stdout_contains = contains;
            judge(&pass, &outcome, earlier)
        }
        Err(e) => Verdict::Fail(vec![format!("plan: {e}")]),
    };
    if matches!(result.verdict, Verdict::Fail(_))
        && let Some(diagnose) = &step.diagnose
        && let Ok(script) = substitute(diagnose, &vars)
    {
        let d = target.exec(&script, Duration::from_secs(60));
        result.diagnosis = Some(format!("{}{}", d.stdout, d.stderr));
    }
    result.outcome = Some(outcome);
}

/// Renders every file of `from` (the cart's configs) into `to` with the plan's variables,
/// and adds the known speech the microphone steps play (`speech.wav`, 48 kHz mono).
fn render_share(from: &Path, to: &Path, vars: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if to.exists() {
        fs::remove_dir_all(to)?;
    }
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let text = fs::read_to_string(&path)?;
        let rendered =
            substitute(&text, vars).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let name = path.file_name().context("a file without a name")?;
        fs::write(to.join(name), rendered)?;
    }
    let spoken = to.join("speech-22k.wav");
    let status = Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&spoken)
        .arg(SPEECH)
        .status()
        .context("espeak-ng (apt-get install espeak-ng)")?;
    if !status.success() {
        bail!("espeak-ng failed: {status}");
    }
    let status = Command::new("sox")
        .arg(&spoken)
        .args(["-r", "48000", "-c", "1", "-b", "16"])
        .arg(to.join("speech.wav"))
        .status()
        .context("sox (apt-get install sox)")?;
    if !status.success() {
        bail!("sox failed: {status}");
    }
    fs::remove_file(spoken)?;
    Ok(())
}

/// Puts the captioning model (made by tests/setup.sh) in the share for the transcription step:
/// a hard link when it can, it is 75 MB. Without it that step fails and says why.
fn share_model(model: &Path, to: &Path) -> anyhow::Result<()> {
    if !model.exists() {
        eprintln!(
            "hil: {} is missing (tests/setup.sh makes it): the transcription step will fail",
            model.display()
        );
        return Ok(());
    }
    if fs::hard_link(model, to).is_err() {
        fs::copy(model, to).with_context(|| format!("copying {}", model.display()))?;
    }
    Ok(())
}

/// What the microphone steps say into the cart.
const SPEECH: &str = "Good morning. This is the telecart hardware in the loop test. \
    The patient reports chest pain and shortness of breath since last night.";

/// Builds cartd, cartctl and devices-probe (unless `build` is false) and returns their paths.
fn cart_binaries(repo: &Path, build: bool) -> anyhow::Result<Vec<PathBuf>> {
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo)
            // The same selection as the suite's `cargo test --workspace --all-targets`,
            // so features resolve alike and CI reuses those artifacts instead of
            // rebuilding half the dependency graph.
            .args(["build", "--workspace", "--all-targets"])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of the cart's binaries failed: {status}");
        }
    }
    let debug = target_dir.join("debug");
    let binaries = vec![
        debug.join("cartd"),
        debug.join("cartctl"),
        debug.join("examples/devices-probe"),
    ];
    for b in &binaries {
        if !b.exists() {
            bail!(
                "{} is missing (build it, or leave out --no-build)",
                b.display()
            );
        }
    }
    Ok(binaries)
}

/// Moves this process into a new network namespace with only a loopback interface that
/// carries 127.0.0.1 and the peers' address. Must run before any thread is started.
fn isolate_network() -> anyhow::Result<()> {
    // SAFETY: unshare(2) with a flag constant; affects only this (still single-threaded)
    // process and the children it starts afterwards.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "cannot create a network namespace ({}): the virtual cart needs root",
            std::io::Error::last_os_error()
        );
    }
    let address = format!("{}/32", virtual_cart::PEER_ADDRESS);
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", address.as_str(), "dev", "lo"],
    ] {
        let status = Command::new("ip")
            .args(&args)
            .status()
            .context("ip (apt-get install iproute2)")?;
        if !status.success() {
            bail!("ip {} failed: {status}", args.join(" "));
        }
    }
    Ok(())
}

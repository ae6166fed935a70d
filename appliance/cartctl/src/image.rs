//! `cartctl image`: sign, verify, flash, status, commit, rollback.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use telecart_update::boot;
use telecart_update::flash::{self, FlashEvent, FlashOptions};
use telecart_update::image::{self as img, Manifest, PayloadKind, PayloadSource};
use telecart_update::state::{self, SlotContent, SlotsRecord};
use telecart_update::{Slot, UpdateConfig, keys};

use crate::now_ms;

/// `cartctl image`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The `[update]` configuration (slots, boot loader, trusted keys).
    #[arg(
        long,
        short,
        global = true,
        env = "CARTCTL_UPDATE_CONFIG",
        default_value = "/etc/telecart/update.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Creates a signing key pair on the build machine (private key mode 0600; never on a cart).
    Keygen {
        /// Private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Public key (PEM) to install on carts as an `update.public_keys` entry.
        #[arg(long)]
        public: PathBuf,
    },
    /// Builds and signs an image from a root file system image and boot files.
    Sign {
        /// Signing key (PKCS#8 PEM, from `image keygen` or `openssl genpkey -algorithm ed25519`).
        #[arg(long)]
        key: PathBuf,
        /// Board the image is for.
        #[arg(long)]
        board: String,
        /// Version (semantic versioning).
        #[arg(long)]
        version: String,
        /// Oldest installed version that may take this image directly.
        #[arg(long)]
        min_version: Option<String>,
        /// Build identifier (source commit, recipe hash).
        #[arg(long)]
        build_id: String,
        /// Root file system image.
        #[arg(long)]
        rootfs: PathBuf,
        /// Boot files (kernel, device tree, cmdline.txt), any number.
        #[arg(long)]
        boot: Vec<PathBuf>,
        /// The image to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Checks an image's signature and every payload hash; with the cart's config also board and version.
    Verify {
        /// The image.
        image: PathBuf,
        /// Verify with this public key instead of the config's keys (build machines).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Writes an image to the inactive slot, reads it back, and arms a one-time try boot.
    Flash {
        /// The image.
        image: PathBuf,
        /// Install an older version than the running one (recorded in the update audit log).
        #[arg(long)]
        allow_downgrade: bool,
        /// Who is flashing (recorded in the audit log with an override).
        #[arg(long, env = "USER", default_value = "unknown")]
        actor: String,
    },
    /// Running slot, boot-loader state, what each slot holds.
    Status,
    /// Makes the running (tried) slot permanent.
    Commit,
    /// Cancels a pending try, or goes back to the other slot if it holds a verified image.
    Rollback,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Keygen { key, public } => {
            keys::write_key_pair(&keys::generate()?, &key, &public)?;
            println!(
                "{}: signing key (mode 0600; keep it off carts and out of the repository)",
                key.display()
            );
            println!("{}: public key for update.public_keys", public.display());
            Ok(())
        }
        ImageCommand::Sign {
            key,
            board,
            version,
            min_version,
            build_id,
            rootfs,
            boot,
            out,
        } => sign(
            &key,
            board,
            version,
            min_version,
            build_id,
            &rootfs,
            &boot,
            &out,
        ),
        ImageCommand::Verify { image, public_key } => verify(&args.config, &image, public_key),
        ImageCommand::Flash {
            image,
            allow_downgrade,
            actor,
        } => flash_image(&load(&args.config)?, &image, allow_downgrade, &actor),
        ImageCommand::Status => status(&load(&args.config)?),
        ImageCommand::Commit => {
            let config = load(&args.config)?;
            let running = running(&config)?;
            let state = flash::commit(boot::open(&config)?.as_mut(), running)?;
            println!(
                "slot {running} committed; next boot: slot {}",
                state.next_boot()
            );
            Ok(())
        }
        ImageCommand::Rollback => {
            let config = load(&args.config)?;
            let running = running(&config)?;
            let (_, next) = flash::rollback(&config, boot::open(&config)?.as_mut(), running)?;
            println!("rolled back: the next boot starts slot {next}");
            Ok(())
        }
    }
}

fn load(path: &Path) -> anyhow::Result<UpdateConfig> {
    Ok(UpdateConfig::load(path)?)
}

fn running(config: &UpdateConfig) -> anyhow::Result<Slot> {
    state::running_slot(config)?.with_context(|| {
        format!(
            "cannot tell which slot runs: {} has neither telecart.slot= nor a root= naming update.slot_a/slot_b",
            config.cmdline.display()
        )
    })
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn rate(bytes: u64, took: Duration) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!(
        "{mib:.1} MiB in {:.2} s, {:.1} MiB/s",
        took.as_secs_f64(),
        mib / took.as_secs_f64().max(1e-9)
    )
}

#[allow(clippy::too_many_arguments)]
fn sign(
    key: &Path,
    board: String,
    version: String,
    min_version: Option<String>,
    build_id: String,
    rootfs: &Path,
    boot: &[PathBuf],
    out: &Path,
) -> anyhow::Result<()> {
    let key = keys::load_signing_key(key)?;
    let source = |name: String, kind: PayloadKind, path: PathBuf| PayloadSource {
        name,
        kind,
        open: Box::new(move || Ok(Box::new(File::open(&path)?) as Box<dyn std::io::Read>)),
    };
    let mut sources = vec![source(
        "rootfs".into(),
        PayloadKind::Rootfs,
        rootfs.to_path_buf(),
    )];
    for b in boot {
        let name = b
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no file name", b.display()))?
            .to_string();
        sources.push(source(name, PayloadKind::Boot, b.clone()));
    }
    let payloads = img::describe_payloads(&mut sources)?;
    let manifest = Manifest {
        board,
        version,
        min_version,
        build_id,
        payloads,
    };
    let tmp = out.with_extension("partial");
    let mut file = BufWriter::with_capacity(
        1 << 20,
        File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let started = Instant::now();
    img::write_image(&manifest, &key, &mut sources, &mut file)?;
    file.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    println!(
        "{}: {} {} for {} ({} payloads, {})",
        out.display(),
        manifest.version,
        manifest.build_id,
        manifest.board,
        manifest.payloads.len(),
        rate(manifest.total_size(), started.elapsed())
    );
    Ok(())
}

fn print_manifest(m: &Manifest) {
    println!("board:       {}", m.board);
    println!("version:     {}", m.version);
    if let Some(min) = &m.min_version {
        println!("min version: {min}");
    }
    println!("build id:    {}", m.build_id);
    for p in &m.payloads {
        println!(
            "payload:     {:<16} {:>12} bytes  sha256 {}",
            p.name, p.size, p.sha256
        );
    }
}

fn verify(config_path: &Path, image: &Path, public_key: Option<PathBuf>) -> anyhow::Result<()> {
    let file = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let config = match public_key {
        Some(k) => UpdateConfig {
            public_keys: vec![k],
            board: String::new(),
            ..UpdateConfig::default()
        },
        None => load(config_path)?,
    };
    let bar = bar(total, "verifying");
    let started = Instant::now();
    let manifest = flash::verify(
        &config,
        std::io::BufReader::with_capacity(1 << 20, file),
        &mut |d| {
            bar.set_position(d);
            true
        },
    );
    bar.finish_and_clear();
    let manifest = manifest.with_context(|| format!("{} REFUSED", image.display()))?;
    print_manifest(&manifest);
    if !config.board.is_empty() && manifest.board != config.board {
        bail!(
            "{} is for board {}, this cart is {}",
            image.display(),
            manifest.board,
            config.board
        );
    }
    println!(
        "{}: signature and payloads OK ({})",
        image.display(),
        rate(manifest.total_size(), started.elapsed())
    );
    Ok(())
}

fn flash_image(
    config: &UpdateConfig,
    image: &Path,
    allow_downgrade: bool,
    actor: &str,
) -> anyhow::Result<()> {
    let running = running(config)?;
    let record = SlotsRecord::load(&config.state_dir)?;
    let installed = flash::installed_version(&record, running, Some(&config.version_file));
    let file = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut control = boot::open(config)?;
    let options = FlashOptions {
        allow_downgrade,
        actor: actor.to_string(),
        now_ms: now_ms(),
    };
    let mut current: Option<ProgressBar> = None;
    let started = Instant::now();
    let result = flash::flash(
        config,
        std::io::BufReader::with_capacity(1 << 20, file),
        control.as_mut(),
        running,
        installed,
        &options,
        &mut |event| {
            match event {
                FlashEvent::Verified { manifest, slot } => {
                    println!(
                        "signature OK: {} {} for {}; writing slot {slot} ({})",
                        manifest.version,
                        manifest.build_id,
                        manifest.board,
                        config.slot(slot).device.display()
                    );
                    current = Some(bar(manifest.rootfs().size, "writing"));
                }
                FlashEvent::Writing { done, .. } => {
                    if let Some(b) = &current {
                        b.set_position(done);
                    }
                }
                FlashEvent::Syncing => {
                    if let Some(b) = &current {
                        b.set_message("syncing");
                    }
                }
                FlashEvent::ReadingBack { done, total } => {
                    if let Some(b) = &current
                        && b.message() != "reading back"
                    {
                        b.finish_and_clear();
                        current = Some(bar(total, "reading back"));
                    }
                    if let Some(b) = &current {
                        b.set_position(done);
                    }
                }
                FlashEvent::BootFile(name) => println!("boot file {name} written"),
            }
            true
        },
    );
    if let Some(b) = current {
        b.finish_and_clear();
    }
    let report = result.with_context(|| {
        format!(
            "{} REFUSED or failed; slot {running} (running) is untouched",
            image.display()
        )
    })?;
    let size = report.manifest.rootfs().size;
    println!("written:   {}", rate(size, report.write_time));
    println!(
        "read back: {} (SHA-256 matches)",
        rate(size, report.read_back_time)
    );
    if let Some(d) = &report.downgrade {
        println!(
            "DOWNGRADE {} -> {} recorded in {}",
            d.from,
            d.to,
            telecart_update::audit::path(&config.state_dir).display()
        );
    }
    println!(
        "slot {} armed for one try boot ({} boot(s) to report healthy) in {:.1} s; reboot with: {}",
        report.slot,
        config.effective_boot_limit(),
        started.elapsed().as_secs_f64(),
        report.reboot_command
    );
    Ok(())
}

fn status(config: &UpdateConfig) -> anyhow::Result<()> {
    let running = state::running_slot(config)?;
    let control = boot::open(config)?;
    println!("board:       {}", config.board);
    println!("boot loader: {}", control.describe());
    println!(
        "running:     {}",
        running.map_or("unknown".to_string(), |s| format!("slot {s}"))
    );
    let state = control.load()?;
    println!("committed:   slot {}", state.committed);
    match state.trial {
        Some(t) => println!(
            "on trial:    slot {} ({} of {} boots used)",
            t.slot, t.boots, state.boot_limit
        ),
        None => println!("on trial:    none"),
    }
    println!("next boot:   slot {}", state.next_boot());
    let record = SlotsRecord::load(&config.state_dir)?;
    for slot in [Slot::A, Slot::B] {
        let what = match record.slots.get(&slot) {
            Some(SlotContent::Verified {
                version, build_id, ..
            }) => format!("{version} ({build_id}), verified"),
            Some(SlotContent::Writing { version }) => {
                format!("INCOMPLETE flash of {version}: not bootable")
            }
            None => "not flashed by cartctl".into(),
        };
        println!(
            "slot {slot}:      {} {what}",
            config.slot(slot).device.display()
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

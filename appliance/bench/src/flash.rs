//! `bench flash`: `cartctl image flash`'s engine against `dd` writing the same payload to the same
//! target file in the same run.
//!
//! A random root file system of `--size-mib` is signed into an image; ours streams it into slot B
//! of a cart whose slots are files in `--dir` (verify signature, write, fsync, drop the page
//! cache, read back and hash, arm the try in a U-Boot environment). The peer is
//! `dd if=rootfs of=slot bs=1M conv=fsync,notrunc`, and, for the same work ours does, that `dd`
//! followed by `sha256sum` of the slot after dropping its cached pages the same way. Each runs
//! `--runs` times, alternating; medians are compared.

use std::fs::File;
use std::io::{BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telecart_update::boot::{self, uboot};
use telecart_update::config::{EnvLocation, SlotConfig};
use telecart_update::flash::{self, FlashOptions};
use telecart_update::image::{self, Manifest, PayloadKind, PayloadSource};
use telecart_update::{Bootloader, Slot, UpdateConfig, keys};

/// Options of `bench flash`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Payload size in MiB.
    #[arg(long, default_value_t = 128)]
    size_mib: u64,
    /// Runs of each side (medians are compared).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory for the slot files (put it on the medium you want to measure).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn drop_cache(path: &Path) -> anyhow::Result<()> {
    let f = File::open(path)?;
    // SAFETY: a valid descriptor; only a hint to the kernel.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs == 0 || args.size_mib == 0 {
        bail!("--runs and --size-mib must be positive");
    }
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let d = dir.path();
    let size = args.size_mib << 20;

    // Payload: pseudo-random (incompressible), written once.
    let rootfs = d.join("rootfs.img");
    {
        let mut out = std::io::BufWriter::new(File::create(&rootfs)?);
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..args.size_mib {
            for chunk in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            out.write_all(&block)?;
        }
        out.flush()?;
    }
    let key = keys::generate()?;
    keys::write_key_pair(&key, &d.join("bench.key"), &d.join("bench.pub"))?;
    let open_rootfs = {
        let rootfs = rootfs.clone();
        move || Ok(Box::new(File::open(&rootfs)?) as Box<dyn std::io::Read>)
    };
    let mut sources = vec![PayloadSource {
        name: "rootfs".into(),
        kind: PayloadKind::Rootfs,
        open: Box::new(open_rootfs),
    }];
    let manifest = Manifest {
        board: "bench".into(),
        version: "1.0.0".into(),
        min_version: None,
        build_id: "bench".into(),
        payloads: image::describe_payloads(&mut sources)?,
    };
    let image_path = d.join("bench.tcimg");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(&image_path)?);
    image::write_image(&manifest, &key, &mut sources, &mut out)?;
    out.flush()?;
    drop(out);

    let slot_b = d.join("slot-b.img");
    std::fs::write(d.join("slot-a.img"), b"running")?;
    File::create(&slot_b)?.set_len(size)?;
    let mut env = uboot::Environment::default();
    env.set("bootcmd", Some("run telecart_boot"));
    uboot::create(&d.join("uboot.env"), &env, 0x4000, false)?;
    let config = UpdateConfig {
        board: "bench".into(),
        public_keys: vec![d.join("bench.pub")],
        slot_a: SlotConfig {
            device: d.join("slot-a.img"),
            partition: 2,
            boot_dir: None,
        },
        slot_b: SlotConfig {
            device: slot_b.clone(),
            partition: 3,
            boot_dir: None,
        },
        bootloader: Bootloader::Uboot,
        boot_limit: 3,
        uboot_env: vec![EnvLocation {
            path: d.join("uboot.env"),
            offset: 0,
            size: 0x4000,
        }],
        state_dir: d.join("state"),
        ..UpdateConfig::default()
    };

    let has_dd = Command::new("dd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_dd {
        bail!("dd is not installed (coreutils)");
    }
    println!(
        "bench flash: {} MiB payload, {} runs each, slot file on {}",
        args.size_mib,
        args.runs,
        d.display()
    );
    let (mut ours_total, mut ours_write, mut ours_read) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dd_write, mut dd_verify) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        drop_cache(&image_path)?;
        let mut control = boot::open(&config)?;
        let t0 = Instant::now();
        let report = flash::flash(
            &config,
            BufReader::with_capacity(1 << 20, File::open(&image_path)?),
            control.as_mut(),
            Slot::A,
            Some(semver::Version::new(0, 1, 0)),
            &FlashOptions {
                allow_downgrade: false,
                actor: "bench".into(),
                now_ms: 0,
            },
            &mut |_| true,
        )?;
        ours_total.push(t0.elapsed());
        ours_write.push(report.write_time);
        ours_read.push(report.read_back_time);

        drop_cache(&rootfs)?;
        let t0 = Instant::now();
        let status = Command::new("dd")
            .arg(format!("if={}", rootfs.display()))
            .arg(format!("of={}", slot_b.display()))
            .args(["bs=1M", "conv=fsync,notrunc", "status=none"])
            .status()
            .context("running dd")?;
        if !status.success() {
            bail!("dd failed: {status}");
        }
        dd_write.push(t0.elapsed());
        drop_cache(&slot_b)?;
        let sum = Command::new("sha256sum")
            .arg(&slot_b)
            .output()
            .context("running sha256sum")?;
        if !sum.status.success() {
            bail!("sha256sum failed");
        }
        dd_verify.push(t0.elapsed());
    }
    let (ot, ow, or) = (median(ours_total), median(ours_write), median(ours_read));
    let (dw, dv) = (median(dd_write), median(dd_verify));
    println!("{:<44} {:>10} {:>10}", "", "median s", "MiB/s");
    let row = |name: &str, t: Duration| {
        println!(
            "{name:<44} {:>10.3} {:>10.1}",
            t.as_secs_f64(),
            mib_s(size, t)
        )
    };
    row("ours: stream + SHA-256 + write + fsync", ow);
    row("dd bs=1M conv=fsync", dw);
    row("ours: read back + SHA-256", or);
    row("ours: whole flash (all of the above + arm)", ot);
    row("dd + sha256sum of the slot (same work)", dv);
    println!(
        "ratio write ours/dd:              {:.2}x the time",
        ow.as_secs_f64() / dw.as_secs_f64()
    );
    println!(
        "ratio whole flash ours/(dd+sum):  {:.2}x the time",
        ot.as_secs_f64() / dv.as_secs_f64()
    );
    Ok(())
}

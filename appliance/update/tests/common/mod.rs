//! Shared helpers: a generated signing key, images built in memory, a cart whose slots are files.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use telecart_update::boot::{self, BootControl};
use telecart_update::config::{EnvLocation, SlotConfig};
use telecart_update::image::{self, Manifest, PayloadKind, PayloadSource};
use telecart_update::{Bootloader, Slot, UpdateConfig, keys};

/// A key pair written into `dir` (private key 0600), as `cartctl image keygen` would.
pub fn key_pair(dir: &Path, name: &str) -> (SigningKey, PathBuf) {
    let key = keys::generate().unwrap();
    let public = dir.join(format!("{name}.pub"));
    keys::write_key_pair(&key, &dir.join(format!("{name}.key")), &public).unwrap();
    (key, public)
}

/// Pseudo-random bytes (a fixed LCG: tests are reproducible).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// Payloads from memory.
pub fn sources(payloads: &[(&str, PayloadKind, Vec<u8>)]) -> Vec<PayloadSource<'static>> {
    payloads
        .iter()
        .map(|(name, kind, data)| {
            let data = data.clone();
            PayloadSource {
                name: (*name).to_string(),
                kind: *kind,
                open: Box::new(move || Ok(Box::new(Cursor::new(data.clone())))),
            }
        })
        .collect()
}

/// A signed image of `rootfs` (+ boot files) for `board` at `version`.
pub fn image_with(
    key: &SigningKey,
    board: &str,
    version: &str,
    min_version: Option<&str>,
    rootfs: &[u8],
    boot_files: &[(&str, Vec<u8>)],
) -> Vec<u8> {
    let mut list = vec![("rootfs", PayloadKind::Rootfs, rootfs.to_vec())];
    for (n, d) in boot_files {
        list.push((n, PayloadKind::Boot, d.clone()));
    }
    let mut src = sources(&list);
    let payloads = image::describe_payloads(&mut src).unwrap();
    let manifest = Manifest {
        board: board.into(),
        version: version.into(),
        min_version: min_version.map(String::from),
        build_id: format!("test-{version}"),
        payloads,
    };
    let mut out = Vec::new();
    image::write_image(&manifest, key, &mut src, &mut out).unwrap();
    out
}

/// A simple image: board `rpi4`.
pub fn image(key: &SigningKey, version: &str, rootfs: &[u8]) -> Vec<u8> {
    image_with(key, "rpi4", version, None, rootfs, &[])
}

/// A cart whose slots and U-Boot environment (redundant) are files in a temporary directory.
pub struct Cart {
    pub dir: tempfile::TempDir,
    pub config: UpdateConfig,
}

pub const SLOT_SIZE: usize = 3 << 20;

impl Cart {
    /// Slot A holds `a_contents` and runs version `installed`; slot B is zeroes.
    pub fn new(public_key: &Path, bootloader: Bootloader) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("slot-a.img"), bytes(SLOT_SIZE, 1)).unwrap();
        std::fs::write(p.join("slot-b.img"), vec![0u8; SLOT_SIZE]).unwrap();
        std::fs::create_dir_all(p.join("boot-b")).unwrap();
        std::fs::create_dir_all(p.join("bootfs")).unwrap();
        let config = UpdateConfig {
            board: "rpi4".into(),
            public_keys: vec![public_key.to_path_buf()],
            slot_a: SlotConfig {
                device: p.join("slot-a.img"),
                partition: 2,
                boot_dir: Some(p.join("boot-a")),
            },
            slot_b: SlotConfig {
                device: p.join("slot-b.img"),
                partition: 3,
                boot_dir: Some(p.join("boot-b")),
            },
            bootloader,
            boot_limit: 3,
            uboot_env: vec![
                EnvLocation {
                    path: p.join("uboot.env"),
                    offset: 0,
                    size: 0x2000,
                },
                EnvLocation {
                    path: p.join("uboot.env"),
                    offset: 0x2000,
                    size: 0x2000,
                },
            ],
            grub_env: p.join("grubenv"),
            tryboot_dir: p.join("bootfs"),
            tryboot_flag: p.join("tryboot-flag"),
            cmdline: p.join("cmdline"),
            state_dir: p.join("state"),
            version_file: p.join("telecart-version"),
        };
        // Fresh boot-loader state: slot A committed.
        let mut env = boot::uboot::Environment::default();
        env.set("bootcmd", Some("run telecart_boot"));
        boot::uboot::create(&p.join("uboot.env.0"), &env, 0x2000, true).unwrap();
        let mut both = std::fs::read(p.join("uboot.env.0")).unwrap();
        both.extend(vec![0xffu8; 0x2000]);
        std::fs::write(p.join("uboot.env"), both).unwrap();
        std::fs::write(p.join("grubenv"), boot::grub::encode_block(&[]).unwrap()).unwrap();
        let cart = Self { dir, config };
        cart.set_running(Slot::A);
        cart
    }

    pub fn set_running(&self, slot: Slot) {
        std::fs::write(
            &self.config.cmdline,
            format!("console=ttyS0 telecart.slot={} rw\n", slot.as_str()),
        )
        .unwrap();
    }

    pub fn control(&self) -> Box<dyn BootControl> {
        boot::open(&self.config).unwrap()
    }

    pub fn slot_bytes(&self, slot: Slot) -> Vec<u8> {
        std::fs::read(&self.config.slot(slot).device).unwrap()
    }

    /// Power on: the boot loader acts on its environment, and the kernel command line says which
    /// slot runs. Tryboot's one-shot flag is set when the technician rebooted with it.
    pub fn power_on(&self, tryboot_reboot: bool) -> Slot {
        let mut control = self.control();
        let mut state = control.load().unwrap();
        let slot = if self.config.bootloader == Bootloader::Tryboot {
            // The firmware: [tryboot] only right after `reboot "0 tryboot"`.
            let s = match state.trial {
                Some(t) if tryboot_reboot => t.slot,
                _ => state.committed,
            };
            std::fs::write(
                &self.config.tryboot_flag,
                (u32::from(tryboot_reboot && state.trial.is_some())).to_be_bytes(),
            )
            .unwrap();
            s
        } else {
            let s = state.boot();
            control.store(&state).unwrap();
            s
        };
        self.set_running(slot);
        slot
    }
}

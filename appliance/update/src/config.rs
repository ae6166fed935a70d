//! The `[update]` configuration section: slots, boot loader, trusted keys.
//!
//! It lives here until the lead moves it into `telecart_core::Config`; [`UpdateConfig::load`]
//! reads the `[update]` table of any TOML file and ignores the other tables, so the same
//! `cart.toml` can carry it once the core config accepts the section.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, UpdateError};
use crate::slot::Slot;

/// `[update]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// This cart's board; an image for another board is refused (`rpi4`, `rpi5`, `cm4`, `x86-64`).
    pub board: String,
    /// Ed25519 public keys (PEM, `BEGIN PUBLIC KEY`) whose signatures are trusted.
    pub public_keys: Vec<PathBuf>,
    /// Slot A.
    pub slot_a: SlotConfig,
    /// Slot B.
    pub slot_b: SlotConfig,
    /// Which boot loader arms the try boot and falls back.
    pub bootloader: Bootloader,
    /// Boots a new slot gets to report healthy before the boot loader goes back (1..=9; tryboot is always 1).
    pub boot_limit: u32,
    /// U-Boot environment copies (first, and the redundant one if the build has `CONFIG_ENV_REDUNDANT`).
    pub uboot_env: Vec<EnvLocation>,
    /// GRUB environment block.
    pub grub_env: PathBuf,
    /// The Raspberry Pi boot partition that holds `autoboot.txt`.
    pub tryboot_dir: PathBuf,
    /// The firmware's flag saying this boot is a tryboot (device tree).
    pub tryboot_flag: PathBuf,
    /// Kernel command line: `telecart.slot=a|b` or `root=` names the running slot.
    pub cmdline: PathBuf,
    /// Installed versions per slot and the local audit log of downgrade overrides.
    pub state_dir: PathBuf,
    /// File in the running root file system naming its version (written by the image build);
    /// used when the running slot was not flashed by this tool.
    pub version_file: PathBuf,
}

/// One A/B slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SlotConfig {
    /// Root file system partition (block device) or image file.
    pub device: PathBuf,
    /// Partition number on the boot medium (Raspberry Pi tryboot's `boot_partition`).
    pub partition: u32,
    /// Where this slot's boot files go (a mounted boot partition); images with boot files need it.
    pub boot_dir: Option<PathBuf>,
}

/// A U-Boot environment copy: `fw_env.config`'s device, offset and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvLocation {
    /// File or block device.
    pub path: PathBuf,
    /// Byte offset of the copy.
    #[serde(default)]
    pub offset: u64,
    /// `CONFIG_ENV_SIZE`.
    pub size: usize,
}

/// Boot loaders with a one-time try boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// U-Boot with `bootcount`/`bootlimit`/`altbootcmd` (see docs/update.md for the boot script).
    Uboot,
    /// Raspberry Pi firmware: `autoboot.txt` `[tryboot]` and `reboot "0 tryboot"`.
    Tryboot,
    /// GRUB with `load_env`/`save_env` (see docs/update.md for the grub.cfg part).
    Grub,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            board: String::new(),
            public_keys: vec![PathBuf::from("/etc/telecart/keys/update-signing.pub")],
            slot_a: SlotConfig {
                device: PathBuf::from("/dev/mmcblk0p2"),
                partition: 2,
                boot_dir: None,
            },
            slot_b: SlotConfig {
                device: PathBuf::from("/dev/mmcblk0p3"),
                partition: 3,
                boot_dir: None,
            },
            bootloader: Bootloader::Uboot,
            boot_limit: 3,
            uboot_env: vec![EnvLocation {
                path: PathBuf::from("/boot/uboot.env"),
                offset: 0,
                size: 0x4000,
            }],
            grub_env: PathBuf::from("/boot/grub/grubenv"),
            tryboot_dir: PathBuf::from("/boot/firmware"),
            tryboot_flag: PathBuf::from("/proc/device-tree/chosen/bootloader/tryboot"),
            cmdline: PathBuf::from("/proc/cmdline"),
            state_dir: PathBuf::from("/var/lib/telecart/update"),
            version_file: PathBuf::from("/etc/telecart-version"),
        }
    }
}

impl UpdateConfig {
    /// Reads the `[update]` table of a TOML file (other tables are ignored) and validates it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UpdateError::io(format!("reading {}", path.display()), &e))?;
        Self::from_toml(path, &text)
    }

    /// Parses the `[update]` table of TOML text; `file` only names it in errors.
    pub fn from_toml(file: &Path, text: &str) -> Result<Self> {
        let bad = |m: String| UpdateError::Config(format!("{}: {m}", file.display()));
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let section = table
            .remove("update")
            .ok_or_else(|| bad("has no [update] section".into()))?;
        let config: UpdateConfig = section
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("update: {}", e.message().trim())))?;
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(bad(issues
                .iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")))
        }
    }

    /// Every rule the types alone cannot express, as (dotted key, message); empty when good.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        let b = self.board.trim();
        if b.is_empty()
            || b.len() > 32
            || !b
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            bad(
                "update.board",
                format!("must be 1 to 32 letters, digits, '-' or '_', got {b:?}"),
            );
        }
        if self.public_keys.is_empty() {
            bad(
                "update.public_keys",
                "needs at least one trusted key".into(),
            );
        }
        for (key, slot) in [
            ("update.slot_a", &self.slot_a),
            ("update.slot_b", &self.slot_b),
        ] {
            if !slot.device.is_absolute() {
                bad(
                    &format!("{key}.device"),
                    format!(
                        "must be an absolute path, got {:?}",
                        slot.device.display().to_string()
                    ),
                );
            }
        }
        if self.slot_a.device == self.slot_b.device {
            bad(
                "update.slot_b.device",
                "must differ from update.slot_a.device".into(),
            );
        }
        if !(1..=9).contains(&self.boot_limit) {
            bad(
                "update.boot_limit",
                format!("must be 1 to 9, got {}", self.boot_limit),
            );
        }
        match self.bootloader {
            Bootloader::Uboot => {
                if !(1..=2).contains(&self.uboot_env.len()) {
                    bad(
                        "update.uboot_env",
                        "needs one copy, or two with a redundant environment".into(),
                    );
                }
                for env in &self.uboot_env {
                    if !(64..=1 << 24).contains(&env.size) {
                        bad(
                            "update.uboot_env",
                            format!("size must be 64 bytes to 16 MiB, got {}", env.size),
                        );
                    }
                }
            }
            Bootloader::Tryboot => {
                if self.slot_a.partition == 0 || self.slot_b.partition == 0 {
                    bad(
                        "update.slot_a.partition",
                        "tryboot needs each slot's partition number".into(),
                    );
                }
                if self.slot_a.partition == self.slot_b.partition {
                    bad(
                        "update.slot_b.partition",
                        "must differ from update.slot_a.partition".into(),
                    );
                }
            }
            Bootloader::Grub => {}
        }
        if !self.state_dir.is_absolute() {
            bad("update.state_dir", "must be an absolute path".into());
        }
        out
    }

    /// The configuration of one slot.
    pub fn slot(&self, slot: Slot) -> &SlotConfig {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }

    /// Boots a try gets with this boot loader (the Pi firmware's tryboot flag is one-shot).
    pub fn effective_boot_limit(&self) -> u32 {
        match self.bootloader {
            Bootloader::Tryboot => 1,
            _ => self.boot_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_update_table_and_validates() {
        let text = "[video]\nwidth = 1\n[update]\nboard = \"rpi4\"\nbootloader = \"grub\"\n\
                    [update.slot_a]\ndevice = \"/dev/sda2\"\n[update.slot_b]\ndevice = \"/dev/sda3\"\n";
        let c = UpdateConfig::from_toml(Path::new("cart.toml"), text).unwrap();
        assert_eq!(c.bootloader, Bootloader::Grub);
        assert_eq!(c.slot(Slot::B).device, PathBuf::from("/dev/sda3"));

        let err = UpdateConfig::from_toml(Path::new("cart.toml"), "[update]\nbord = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bord`"), "{err}");
        let err = UpdateConfig::from_toml(Path::new("cart.toml"), "[update]\nboot_limit = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("update.board") && err.contains("update.boot_limit"),
            "{err}"
        );
        assert!(UpdateConfig::from_toml(Path::new("c.toml"), "").is_err());
    }
}

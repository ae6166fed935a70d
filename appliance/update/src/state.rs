//! What the cart knows about its slots besides the boot loader: which slot runs, and what each
//! slot holds (`slots.json` in `update.state_dir`, replaced atomically).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::UpdateConfig;
use crate::error::{Result, UpdateError};
use crate::slot::Slot;

/// What is in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum SlotContent {
    /// A flash started and did not finish: not bootable, never a rollback target.
    Writing {
        /// Version being written.
        version: String,
    },
    /// A complete image, verified by read-back.
    Verified {
        /// Its version.
        version: String,
        /// Its build id.
        build_id: String,
        /// SHA-256 of its signed manifest.
        manifest_sha256: String,
    },
}

impl SlotContent {
    /// The version, whatever the status.
    pub fn version(&self) -> &str {
        match self {
            SlotContent::Writing { version } | SlotContent::Verified { version, .. } => version,
        }
    }
}

/// `slots.json`: what each slot holds (a slot never flashed by this tool is absent).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsRecord {
    /// Per slot.
    pub slots: BTreeMap<Slot, SlotContent>,
}

impl SlotsRecord {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("slots.json")
    }

    /// Reads the record (empty when the file does not exist yet).
    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| UpdateError::State(format!(
                "{} is damaged ({e}); move it away and record the installed version with `cartctl image status`",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(UpdateError::io(format!("reading {}", path.display()), &e)),
        }
    }

    /// Replaces the record atomically and durably.
    pub fn store(&self, state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir);
        let io = |e: std::io::Error| UpdateError::io(format!("writing {}", path.display()), &e);
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let tmp = path.with_extension("json.new");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| UpdateError::State(e.to_string()))?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(state_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// Whether a slot holds a verified image.
    pub fn is_verified(&self, slot: Slot) -> bool {
        matches!(self.slots.get(&slot), Some(SlotContent::Verified { .. }))
    }

    /// The verified version in a slot.
    pub fn verified_version(&self, slot: Slot) -> Option<semver::Version> {
        match self.slots.get(&slot) {
            Some(SlotContent::Verified { version, .. }) => semver::Version::parse(version).ok(),
            _ => None,
        }
    }
}

/// The running slot from a kernel command line: `telecart.slot=a|b`, else `root=` equal to a
/// slot's device.
pub fn slot_from_cmdline(cmdline: &str, config: &UpdateConfig) -> Option<Slot> {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    if let Some(s) = words.iter().find_map(|w| w.strip_prefix("telecart.slot=")) {
        return s.parse().ok();
    }
    let root = words.iter().find_map(|w| w.strip_prefix("root="))?;
    [Slot::A, Slot::B]
        .into_iter()
        .find(|s| config.slot(*s).device == Path::new(root))
}

/// The running slot, from `update.cmdline`; `None` when the command line names neither.
pub fn running_slot(config: &UpdateConfig) -> Result<Option<Slot>> {
    let text = std::fs::read_to_string(&config.cmdline)
        .map_err(|e| UpdateError::io(format!("reading {}", config.cmdline.display()), &e))?;
    Ok(slot_from_cmdline(&text, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_slot_from_the_command_line() {
        let c = UpdateConfig::default();
        assert_eq!(
            slot_from_cmdline("quiet telecart.slot=b", &c),
            Some(Slot::B)
        );
        assert_eq!(
            slot_from_cmdline("root=/dev/mmcblk0p2 rw", &c),
            Some(Slot::A)
        );
        assert_eq!(slot_from_cmdline("root=/dev/sda1", &c), None);
    }

    #[test]
    fn record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = SlotsRecord::load(dir.path()).unwrap();
        r.slots.insert(
            Slot::B,
            SlotContent::Writing {
                version: "1.0.0".into(),
            },
        );
        r.store(dir.path()).unwrap();
        assert_eq!(SlotsRecord::load(dir.path()).unwrap(), r);
        assert!(!r.is_verified(Slot::B));
    }
}

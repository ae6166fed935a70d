//! Raspberry Pi tryboot: `autoboot.txt` on the first FAT partition and the firmware's one-shot flag.
//!
//! ```text
//! [all]
//! tryboot_a_b=1
//! boot_partition=2      # the committed slot's partition
//! [tryboot]
//! boot_partition=3      # the slot on trial
//! ```
//!
//! The firmware boots `[tryboot]` only on the boot after `reboot "0 tryboot"`, and clears that
//! flag itself, so a try gets exactly one boot; any later boot (a crash, a watchdog reset, a power
//! cut) starts `[all]` again. The running system learns it is on a tryboot from
//! `/proc/device-tree/chosen/bootloader/tryboot`. The file is replaced atomically (write, sync,
//! rename), so a power cut leaves either the old or the new file.

use std::io::Write;
use std::path::PathBuf;

use crate::boot::BootControl;
use crate::config::UpdateConfig;
use crate::error::{Result, UpdateError};
use crate::slot::{BootState, Slot, Trial};

/// Sections and their lines, in order, as the file has them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Autoboot {
    sections: Vec<(String, Vec<String>)>,
}

impl Autoboot {
    /// Parses `autoboot.txt` (lines before any section go to `[all]`).
    pub fn parse(text: &str) -> Self {
        let mut sections: Vec<(String, Vec<String>)> = vec![("all".into(), Vec::new())];
        for line in text.lines() {
            let l = line.trim();
            if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                sections.push((name.to_string(), Vec::new()));
            } else if !l.is_empty()
                && let Some(last) = sections.last_mut()
            {
                last.1.push(l.to_string());
            }
        }
        Self { sections }
    }

    /// The last `key=` value in a section.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, lines)| lines.iter())
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
            .next_back()
    }

    /// Sets `key=value` in the last section of that name (creating it).
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        let line = format!("{key}={value}");
        if !self.sections.iter().any(|(s, _)| s == section) {
            self.sections.push((section.to_string(), Vec::new()));
        }
        if let Some((_, lines)) = self.sections.iter_mut().rev().find(|(s, _)| s == section) {
            lines.retain(|l| l.split_once('=').is_none_or(|(k, _)| k.trim() != key));
            lines.push(line);
        }
    }

    /// The file text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, lines) in &self.sections {
            if lines.is_empty() {
                continue;
            }
            out.push_str(&format!("[{name}]\n"));
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// `autoboot.txt` in the boot partition.
#[derive(Debug, Clone)]
pub struct TrybootControl {
    file: PathBuf,
    flag: PathBuf,
    partitions: [u32; 2],
}

impl TrybootControl {
    /// From `update.tryboot_dir`, `update.tryboot_flag` and the slots' partition numbers.
    pub fn new(config: &UpdateConfig) -> Self {
        Self {
            file: config.tryboot_dir.join("autoboot.txt"),
            flag: config.tryboot_flag.clone(),
            partitions: [config.slot_a.partition, config.slot_b.partition],
        }
    }

    fn err(&self, reason: impl Into<String>) -> UpdateError {
        UpdateError::BootEnv {
            path: self.file.display().to_string(),
            reason: reason.into(),
        }
    }

    fn slot_of(&self, partition: &str) -> Result<Slot> {
        let n: u32 = partition
            .parse()
            .map_err(|_| self.err(format!("boot_partition={partition:?} is not a number")))?;
        match self.partitions.iter().position(|p| *p == n) {
            Some(0) => Ok(Slot::A),
            Some(_) => Ok(Slot::B),
            None => Err(self.err(format!("boot_partition={n} is neither slot's partition"))),
        }
    }

    fn partition(&self, slot: Slot) -> u32 {
        self.partitions[usize::from(slot == Slot::B)]
    }

    /// Whether the firmware says this boot is a tryboot.
    pub fn in_tryboot(&self) -> bool {
        std::fs::read(&self.flag).is_ok_and(|b| b.len() >= 4 && b[..4] != [0, 0, 0, 0])
    }

    fn read(&self) -> Result<Autoboot> {
        match std::fs::read_to_string(&self.file) {
            Ok(t) => Ok(Autoboot::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Autoboot::default()),
            Err(e) => Err(UpdateError::io(
                format!("reading {}", self.file.display()),
                &e,
            )),
        }
    }
}

impl BootControl for TrybootControl {
    fn load(&self) -> Result<BootState> {
        let file = self.read()?;
        let committed = match file.get("all", "boot_partition") {
            Some(p) => self.slot_of(p)?,
            None => Slot::A,
        };
        let trial = match file.get("tryboot", "boot_partition") {
            Some(p) => {
                let slot = self.slot_of(p)?;
                (slot != committed).then(|| Trial {
                    slot,
                    boots: u32::from(self.in_tryboot()),
                })
            }
            None => None,
        };
        Ok(BootState {
            committed,
            trial,
            boot_limit: 1,
        })
    }

    fn store(&mut self, state: &BootState) -> Result<()> {
        let mut file = self.read()?;
        file.set("all", "tryboot_a_b", "1");
        file.set(
            "all",
            "boot_partition",
            &self.partition(state.committed).to_string(),
        );
        let try_slot = state.trial.map_or(state.committed, |t| t.slot);
        file.set(
            "tryboot",
            "boot_partition",
            &self.partition(try_slot).to_string(),
        );
        let tmp = self.file.with_extension("txt.new");
        let io =
            |e: std::io::Error| UpdateError::io(format!("writing {}", self.file.display()), &e);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(file.render().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &self.file).map_err(io)?;
        if let Some(dir) = self.file.parent() {
            // Make the rename durable; a FAT directory may refuse fsync, which only weakens that.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    fn reboot_command(&self) -> &'static str {
        "reboot \"0 tryboot\""
    }

    fn describe(&self) -> String {
        format!("Raspberry Pi tryboot {}", self.file.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoboot_keeps_other_lines_and_sets_partitions() {
        let mut a = Autoboot::parse(
            "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n",
        );
        assert_eq!(a.get("all", "boot_partition"), Some("2"));
        assert_eq!(a.get("tryboot", "boot_partition"), Some("3"));
        a.set("all", "boot_partition", "3");
        assert_eq!(
            a.render(),
            "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=3\n"
        );
    }
}

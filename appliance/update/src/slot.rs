//! The A/B slots and the boot-count state machine, sans IO.
//!
//! [`BootState`] is what a boot loader's environment holds; its methods are the only ways the
//! state changes, each an explicit step: [`BootState::arm_try`] after a verified flash,
//! [`BootState::boot`] (what the boot-loader script does at power-on, modelled so tests can run
//! sequences of boots on virtual boot counts), [`BootState::report_healthy`] from the daemon,
//! [`BootState::commit`] and [`BootState::rollback`] from the technician. The boot-loader
//! implementations in [`crate::boot`] only translate this state to and from their environments.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, UpdateError};

/// One of the two root file system slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"a"` or `"b"`, as stored in boot environments.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

impl FromStr for Slot {
    type Err = UpdateError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "a" | "A" => Ok(Slot::A),
            "b" | "B" => Ok(Slot::B),
            other => Err(UpdateError::State(format!(
                "{other:?} is not a slot (a or b)"
            ))),
        }
    }
}

/// A one-time try of a freshly flashed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    /// The slot being tried.
    pub slot: Slot,
    /// Boots of it so far (the boot loader's `bootcount`).
    pub boots: u32,
}

/// What the boot loader's environment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootState {
    /// The slot booted when no try is pending, and the one fallen back to when a try fails.
    pub committed: Slot,
    /// A try in progress.
    pub trial: Option<Trial>,
    /// Boots the try gets before the boot loader falls back to `committed`.
    pub boot_limit: u32,
}

/// What [`BootState::report_healthy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthOutcome {
    /// Nothing was pending: the running slot was already committed.
    AlreadyCommitted,
    /// The running slot was on trial and is now committed.
    Committed(Slot),
    /// The boot loader had fallen back: the try of this slot failed and is now cleared.
    TrialFailed(Slot),
}

/// Which slot runs according to the boot state, from the daemon's or the tool's point of view.
impl BootState {
    /// A fresh cart running `slot` with nothing pending.
    pub fn new(committed: Slot, boot_limit: u32) -> Self {
        Self {
            committed,
            trial: None,
            boot_limit,
        }
    }

    /// After a verified flash of `slot` while `running` runs: the next boot tries `slot`, at most
    /// `boot_limit` times, then falls back.
    pub fn arm_try(&mut self, slot: Slot, running: Slot) -> Result<()> {
        if slot == running {
            return Err(UpdateError::ActiveSlot(slot.to_string()));
        }
        if let Some(t) = self.trial
            && t.slot == running
        {
            return Err(UpdateError::State(format!(
                "slot {running} runs on trial: commit it (or let it roll back) before flashing slot {slot}"
            )));
        }
        // The fallback is whatever runs now, so a cart always falls back to a slot that booted.
        self.committed = running;
        self.trial = Some(Trial { slot, boots: 0 });
        Ok(())
    }

    /// What the boot loader does at power-on; returns the slot it boots. A model of the scripts in
    /// docs/update.md (U-Boot's `bootcount > bootlimit` runs `altbootcmd`), for tests.
    pub fn boot(&mut self) -> Slot {
        match &mut self.trial {
            Some(t) if t.boots < self.boot_limit => {
                t.boots += 1;
                t.slot
            }
            Some(_) => {
                self.trial = None;
                self.committed
            }
            None => self.committed,
        }
    }

    /// The daemon says `running` came up healthy.
    pub fn report_healthy(&mut self, running: Slot) -> HealthOutcome {
        match self.trial {
            Some(t) if t.slot == running => {
                self.committed = running;
                self.trial = None;
                HealthOutcome::Committed(running)
            }
            Some(t) if self.committed == running => {
                // Tryboot's flag is one-shot and GRUB/U-Boot clear the try themselves only at the
                // next limit check: a healthy fallback boot means the try is over.
                self.trial = None;
                HealthOutcome::TrialFailed(t.slot)
            }
            _ => HealthOutcome::AlreadyCommitted,
        }
    }

    /// The technician makes the running slot permanent.
    pub fn commit(&mut self, running: Slot) -> Result<()> {
        match self.trial {
            Some(t) if t.slot == running => {
                self.committed = running;
                self.trial = None;
                Ok(())
            }
            Some(t) => Err(UpdateError::State(format!(
                "slot {running} runs, but slot {} is armed for a try: reboot into it first",
                t.slot
            ))),
            None if self.committed == running => Ok(()),
            None => Err(UpdateError::State(format!(
                "slot {running} runs but slot {} is committed and nothing is on trial",
                self.committed
            ))),
        }
    }

    /// The technician goes back: a pending try is cancelled; with none pending, the other slot
    /// becomes the committed one (only if it holds a complete, verified image: `other_bootable`).
    /// Returns the slot the next boot starts.
    pub fn rollback(&mut self, running: Slot, other_bootable: bool) -> Result<Slot> {
        if let Some(t) = self.trial {
            self.trial = None;
            if t.slot == running {
                // Running the trial: the next boot returns to the fallback.
                return Ok(self.committed);
            }
            return Ok(self.committed);
        }
        if !other_bootable {
            return Err(UpdateError::State(format!(
                "slot {} holds no complete, verified image: nothing to roll back to",
                running.other()
            )));
        }
        self.committed = running.other();
        Ok(self.committed)
    }

    /// The slot the next boot starts, without changing anything.
    pub fn next_boot(&self) -> Slot {
        let mut copy = *self;
        copy.boot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_try_is_committed() {
        let mut s = BootState::new(Slot::A, 3);
        s.arm_try(Slot::B, Slot::A).unwrap();
        assert_eq!(s.boot(), Slot::B);
        assert_eq!(s.report_healthy(Slot::B), HealthOutcome::Committed(Slot::B));
        for _ in 0..5 {
            assert_eq!(s.boot(), Slot::B);
        }
        assert_eq!(s.report_healthy(Slot::B), HealthOutcome::AlreadyCommitted);
    }

    #[test]
    fn a_try_that_never_reports_falls_back_after_the_limit() {
        for limit in 1..=5 {
            let mut s = BootState::new(Slot::A, limit);
            s.arm_try(Slot::B, Slot::A).unwrap();
            for boot in 1..=limit {
                assert_eq!(s.boot(), Slot::B, "boot {boot} of {limit}");
                assert_eq!(s.trial.unwrap().boots, boot);
            }
            assert_eq!(s.boot(), Slot::A);
            assert_eq!(s.trial, None);
            assert_eq!(s.boot(), Slot::A);
            assert_eq!(s.report_healthy(Slot::A), HealthOutcome::AlreadyCommitted);
        }
    }

    #[test]
    fn healthy_on_the_fallback_clears_a_stale_try() {
        // Tryboot: the firmware's one-shot flag went; the normal boot runs A with B still armed.
        let mut s = BootState::new(Slot::A, 1);
        s.arm_try(Slot::B, Slot::A).unwrap();
        assert_eq!(
            s.report_healthy(Slot::A),
            HealthOutcome::TrialFailed(Slot::B)
        );
        assert_eq!(s.next_boot(), Slot::A);
    }

    #[test]
    fn the_running_slot_is_never_armed_and_a_trial_must_settle_first() {
        let mut s = BootState::new(Slot::A, 3);
        assert_eq!(
            s.arm_try(Slot::A, Slot::A),
            Err(UpdateError::ActiveSlot("A".into()))
        );
        s.arm_try(Slot::B, Slot::A).unwrap();
        s.boot();
        assert!(matches!(
            s.arm_try(Slot::A, Slot::B),
            Err(UpdateError::State(_))
        ));
        // Re-flashing the slot on trial from the fallback is allowed: it re-arms.
        let mut t = BootState::new(Slot::A, 3);
        t.arm_try(Slot::B, Slot::A).unwrap();
        t.arm_try(Slot::B, Slot::A).unwrap();
        assert_eq!(
            t.trial,
            Some(Trial {
                slot: Slot::B,
                boots: 0
            })
        );
    }

    #[test]
    fn commit_and_rollback_sequences() {
        let mut s = BootState::new(Slot::A, 3);
        s.arm_try(Slot::B, Slot::A).unwrap();
        // Committing before booting the new slot is refused.
        assert!(s.commit(Slot::A).is_err());
        assert_eq!(s.boot(), Slot::B);
        s.commit(Slot::B).unwrap();
        assert_eq!(s.next_boot(), Slot::B);
        // Manual rollback to A, which still holds the old verified image.
        assert!(s.rollback(Slot::B, false).is_err());
        assert_eq!(s.rollback(Slot::B, true).unwrap(), Slot::A);
        assert_eq!(s.boot(), Slot::A);
        // Rollback while a try is pending cancels it.
        s.arm_try(Slot::B, Slot::A).unwrap();
        assert_eq!(s.rollback(Slot::A, true).unwrap(), Slot::A);
        assert_eq!(s.trial, None);
        // Rollback while running the trial sends the next boot back.
        s.arm_try(Slot::B, Slot::A).unwrap();
        assert_eq!(s.boot(), Slot::B);
        assert_eq!(s.rollback(Slot::B, true).unwrap(), Slot::A);
        assert_eq!(s.boot(), Slot::A);
    }
}

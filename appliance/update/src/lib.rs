//! Firmware updates of the telecart appliance: signed images, A/B slots, boot-count rollback.
//!
//! - [`image`]: the signed image format, streamed and verified without holding a payload in memory;
//! - [`keys`]: Ed25519 keys in the PEM formats OpenSSL uses;
//! - [`slot`]: the sans-IO boot state machine (arm a try, boot, report healthy, commit, roll back);
//! - [`boot`]: the [`boot::BootControl`] trait and its U-Boot, Raspberry Pi tryboot and GRUB
//!   implementations (the boot loaders' real on-disk formats);
//! - [`flash`]: writing an image to the inactive slot, read-back, arming the try;
//! - [`config`]: the `[update]` section.
//!
//! See `docs/update.md`.
#![warn(missing_docs, unreachable_pub)]

pub mod audit;
pub mod boot;
pub mod config;
mod error;
pub mod flash;
pub mod image;
pub mod keys;
pub mod slot;
pub mod state;

pub use config::{Bootloader, UpdateConfig};
pub use error::{IoKind, Result, UpdateError};
pub use slot::{BootState, HealthOutcome, Slot};

/// Called by `cartd` once it is up and working: on a try boot this commits the new slot; on a
/// fallback boot it clears the failed try. Does nothing (and writes nothing) when nothing is pending.
pub fn mark_booted_healthy(config: &UpdateConfig) -> Result<HealthOutcome> {
    let running = state::running_slot(config)?
        .ok_or_else(|| UpdateError::State("cannot tell which slot runs (no telecart.slot= or matching root= on the kernel command line)".into()))?;
    let mut control = boot::open(config)?;
    let mut boot_state = control.load()?;
    let outcome = boot_state.report_healthy(running);
    if outcome != HealthOutcome::AlreadyCommitted {
        control.store(&boot_state)?;
    }
    Ok(outcome)
}

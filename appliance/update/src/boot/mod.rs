//! Boot-loader control: where [`BootState`] is kept and how the boot loader acts on it.
//!
//! Each implementation reads and writes its boot loader's own on-disk format, so the boot loader
//! and the field tools (`fw_printenv`, `grub-editenv`) see the same state:
//! - [`uboot::UbootControl`]: U-Boot's environment (CRC32, optional redundant copy with flags),
//!   standard `bootcount`/`bootlimit`/`upgrade_available`/`altbootcmd` semantics;
//! - [`tryboot::TrybootControl`]: Raspberry Pi firmware `autoboot.txt` and the one-shot tryboot flag;
//! - [`grub::GrubControl`]: GRUB's 1024-byte environment block.

pub mod grub;
pub mod tryboot;
pub mod uboot;

use crate::config::{Bootloader, UpdateConfig};
use crate::error::Result;
use crate::slot::BootState;

/// Where the boot state lives.
pub trait BootControl {
    /// Reads the state.
    fn load(&self) -> Result<BootState>;
    /// Writes the state durably (synced to the medium when this returns).
    fn store(&mut self, state: &BootState) -> Result<()>;
    /// What the technician runs to start the try, for example `reboot "0 tryboot"`.
    fn reboot_command(&self) -> &'static str {
        "reboot"
    }
    /// A one-line description (boot loader and file).
    fn describe(&self) -> String;
}

/// The configured boot loader's control.
pub fn open(config: &UpdateConfig) -> Result<Box<dyn BootControl>> {
    Ok(match config.bootloader {
        Bootloader::Uboot => Box::new(uboot::UbootControl::new(
            config.uboot_env.clone(),
            config.effective_boot_limit(),
        )?),
        Bootloader::Tryboot => Box::new(tryboot::TrybootControl::new(config)),
        Bootloader::Grub => Box::new(grub::GrubControl::new(
            config.grub_env.clone(),
            config.effective_boot_limit(),
        )),
    })
}

/// Writes `bytes` at `offset` of an existing file or device and syncs it.
pub(crate) fn write_at_synced(path: &std::path::Path, offset: u64, bytes: &[u8]) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let ctx = || format!("writing {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| crate::UpdateError::io(ctx(), &e))?;
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| crate::UpdateError::io(ctx(), &e))
}

/// Reads `len` bytes at `offset`.
pub(crate) fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let ctx = || format!("reading {}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| crate::UpdateError::io(ctx(), &e))?;
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| crate::UpdateError::io(ctx(), &e))?;
    Ok(buf)
}

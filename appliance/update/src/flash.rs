//! Writing a verified image to the inactive slot, and the technician's slot operations.
//!
//! Order of a flash, each step durable before the next:
//! 1. signature, manifest, board, version policy (nothing written yet; a refusal changes nothing);
//! 2. a downgrade override is written to the audit log;
//! 3. the boot state is reset to "boot the running slot" if anything pointed at the target slot,
//!    and the target is recorded as `writing`, so a power cut from here on boots the running slot
//!    and never offers the half-written one as a rollback target;
//! 4. the payload streams into the slot while its hash is computed; fsync;
//! 5. the page cache for the slot is dropped and the slot is read back and hashed;
//! 6. boot files go to the slot's boot directory (temporary name, fsync, rename);
//! 7. the end of the image is checked (no trailing data);
//! 8. the slot is recorded `verified` and the one-time try is armed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::audit;
use crate::boot::BootControl;
use crate::config::UpdateConfig;
use crate::error::{Result, UpdateError};
use crate::image::{self, Downgrade, ImageReader, InstallPolicy, Manifest, PayloadKind};
use crate::keys;
use crate::slot::{BootState, Slot};
use crate::state::{SlotContent, SlotsRecord};

/// What the technician asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashOptions {
    /// Install an older version (written to the audit log first).
    pub allow_downgrade: bool,
    /// Who is flashing (for the audit log).
    pub actor: String,
    /// Wall-clock time for the audit log, milliseconds since the epoch.
    pub now_ms: u64,
}

/// Progress of a flash, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlashEvent {
    /// The image verified and passed the policy; writing starts.
    Verified {
        /// The manifest.
        manifest: Box<Manifest>,
        /// The slot being written.
        slot: Slot,
    },
    /// Bytes of the root file system written.
    Writing {
        /// Done so far.
        done: u64,
        /// Total.
        total: u64,
    },
    /// Waiting for the medium to confirm the writes.
    Syncing,
    /// Bytes read back.
    ReadingBack {
        /// Done so far.
        done: u64,
        /// Total.
        total: u64,
    },
    /// A boot file was written.
    BootFile(String),
}

/// What a finished flash did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashReport {
    /// The slot written and armed.
    pub slot: Slot,
    /// The image's manifest.
    pub manifest: Manifest,
    /// A downgrade allowed by override (and audited).
    pub downgrade: Option<Downgrade>,
    /// Time writing and syncing the root file system.
    pub write_time: Duration,
    /// Time reading it back.
    pub read_back_time: Duration,
    /// What to run to start the try.
    pub reboot_command: &'static str,
}

/// The installed version: the running slot's verified record, else `/etc/telecart-version`-style
/// file given by the caller (the image build writes it into the root file system).
pub fn installed_version(
    record: &SlotsRecord,
    running: Slot,
    version_file: Option<&Path>,
) -> Option<semver::Version> {
    record.verified_version(running).or_else(|| {
        let text = std::fs::read_to_string(version_file?).ok()?;
        semver::Version::parse(text.trim()).ok()
    })
}

/// Flashes `image` into the slot that is not `running` and arms a one-time try of it.
/// `progress` may stop the flash by returning `false` (the slot is then left unarmed).
pub fn flash(
    config: &UpdateConfig,
    image: impl Read,
    control: &mut dyn BootControl,
    running: Slot,
    installed: Option<semver::Version>,
    options: &FlashOptions,
    progress: &mut dyn FnMut(FlashEvent) -> bool,
) -> Result<FlashReport> {
    let trusted = keys::load_trusted(&config.public_keys)?;
    let mut reader = ImageReader::open(image, &trusted)?;
    let manifest = reader.manifest().clone();
    if installed.is_none() && !options.allow_downgrade {
        return Err(UpdateError::State(
            "the installed version is unknown (no verified record of the running slot, no version file): \
             cannot rule out a downgrade; use --allow-downgrade (audited)"
                .into(),
        ));
    }
    let policy = InstallPolicy {
        board: config.board.clone(),
        installed: installed.clone(),
        allow_downgrade: options.allow_downgrade,
    };
    let downgrade = policy.check(&manifest)?;
    let target = running.other();
    let slot_config = config.slot(target);
    let boot_files: Vec<_> = manifest
        .payloads
        .iter()
        .filter(|p| p.kind == PayloadKind::Boot)
        .collect();
    if !boot_files.is_empty() && slot_config.boot_dir.is_none() {
        return Err(UpdateError::Config(format!(
            "the image has boot files but update.slot_{}.boot_dir is not set",
            target.as_str()
        )));
    }
    let mut state = control.load()?;
    if let Some(t) = state.trial
        && t.slot == running
    {
        return Err(UpdateError::State(format!(
            "slot {running} runs on trial: commit it (or roll back) before flashing slot {target}"
        )));
    }

    if downgrade.is_some() || installed.is_none() {
        audit::append(
            &config.state_dir,
            options.now_ms,
            &options.actor,
            "update.override",
            &format!(
                "installing {} (build {}) over {} into slot {target}: {}",
                manifest.version,
                manifest.build_id,
                installed.map_or_else(|| "an unknown version".to_string(), |v| v.to_string()),
                if downgrade.is_some() {
                    "downgrade allowed by --allow-downgrade"
                } else {
                    "installed version unknown"
                },
            ),
        )?;
    }

    // Nothing may point at the target while it is being overwritten.
    let safe = BootState::new(running, state.boot_limit);
    if state != safe {
        state = safe;
        control.store(&state)?;
    }
    let mut record = SlotsRecord::load(&config.state_dir)?;
    record.slots.insert(
        target,
        SlotContent::Writing {
            version: manifest.version.clone(),
        },
    );
    record.store(&config.state_dir)?;

    if !progress(FlashEvent::Verified {
        manifest: Box::new(manifest.clone()),
        slot: target,
    }) {
        return Err(UpdateError::Interrupted(0));
    }
    let device = &slot_config.device;
    let total = manifest.rootfs().size;
    let mut file = open_slot(device, total)?;
    let started = Instant::now();
    reader.copy_payload(&mut file, &mut |done| {
        progress(FlashEvent::Writing { done, total })
    })?;
    progress(FlashEvent::Syncing);
    file.sync_all()
        .map_err(|e| UpdateError::io(format!("syncing {}", device.display()), &e))?;
    let write_time = started.elapsed();

    let started = Instant::now();
    let read_back = read_back_sha256(&mut file, device, total, &mut |done| {
        progress(FlashEvent::ReadingBack { done, total })
    })?;
    let read_back_time = started.elapsed();
    if Some(read_back) != image::parse_sha256(&manifest.rootfs().sha256) {
        return Err(UpdateError::ReadBack {
            target: device.display().to_string(),
            read_back: image::hex(&read_back),
        });
    }
    drop(file);

    while let Some(info) = reader.next_payload().cloned() {
        let Some(dir) = &slot_config.boot_dir else {
            break;
        };
        write_boot_file(&mut reader, dir, &info.name)?;
        progress(FlashEvent::BootFile(info.name));
    }
    let manifest_sha256 = image::hex(&reader.manifest_sha256());
    reader.finish()?;

    record.slots.insert(
        target,
        SlotContent::Verified {
            version: manifest.version.clone(),
            build_id: manifest.build_id.clone(),
            manifest_sha256,
        },
    );
    record.store(&config.state_dir)?;
    state.arm_try(target, running)?;
    control.store(&state)?;
    Ok(FlashReport {
        slot: target,
        manifest,
        downgrade,
        write_time,
        read_back_time,
        reboot_command: control.reboot_command(),
    })
}

fn open_slot(device: &Path, needed: u64) -> Result<File> {
    let ctx = || format!("opening slot {}", device.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| UpdateError::io(ctx(), &e))?;
    let meta = file.metadata().map_err(|e| UpdateError::io(ctx(), &e))?;
    if !meta.is_file() {
        // A block device: its size is where a seek to the end lands.
        let capacity = file
            .seek(SeekFrom::End(0))
            .and_then(|c| file.seek(SeekFrom::Start(0)).map(|_| c))
            .map_err(|e| UpdateError::io(ctx(), &e))?;
        if capacity < needed {
            return Err(UpdateError::SlotTooSmall {
                target: device.display().to_string(),
                capacity,
                needed,
            });
        }
    }
    Ok(file)
}

/// Drops the slot's cached pages (so the read comes from the medium) and hashes its first `len` bytes.
fn read_back_sha256(
    file: &mut File,
    device: &Path,
    len: u64,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<[u8; 32]> {
    let ctx = || format!("reading back {}", device.display());
    // SAFETY: a valid open descriptor; posix_fadvise only gives the kernel a hint.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| UpdateError::io(ctx(), &e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; image::CHUNK];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(image::CHUNK as u64)).unwrap_or(image::CHUNK);
        file.read_exact(&mut buf[..want])
            .map_err(|e| UpdateError::io(ctx(), &e))?;
        hasher.update(&buf[..want]);
        done += want as u64;
        if !progress(done) {
            return Err(UpdateError::Interrupted(done));
        }
    }
    Ok(hasher.finalize().into())
}

fn write_boot_file<R: Read>(reader: &mut ImageReader<R>, dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.new"));
    let io = |e: std::io::Error| UpdateError::io(format!("writing {}", path.display()), &e);
    let mut f = File::create(&tmp).map_err(io)?;
    if let Err(e) = reader.copy_payload(&mut f, &mut |_| true) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Streams an image through every check without writing anything; returns its manifest.
pub fn verify(
    config: &UpdateConfig,
    image: impl Read,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<Manifest> {
    let trusted = keys::load_trusted(&config.public_keys)?;
    ImageReader::open(image, &trusted)?.verify_all(progress)
}

/// `cartctl image commit`: makes the running slot permanent.
pub fn commit(control: &mut dyn BootControl, running: Slot) -> Result<BootState> {
    let mut state = control.load()?;
    let before = state;
    state.commit(running)?;
    if state != before {
        control.store(&state)?;
    }
    Ok(state)
}

/// `cartctl image rollback`: cancels a pending try, or makes the other slot (if it holds a
/// verified image) the one the next boot starts.
pub fn rollback(
    config: &UpdateConfig,
    control: &mut dyn BootControl,
    running: Slot,
) -> Result<(BootState, Slot)> {
    let record = SlotsRecord::load(&config.state_dir)?;
    let mut state = control.load()?;
    let next = state.rollback(running, record.is_verified(running.other()))?;
    control.store(&state)?;
    Ok((state, next))
}

/// Writes `bytes` to a writer and syncs: used by tests and the bench for slot files.
pub fn write_all_synced(mut file: &File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

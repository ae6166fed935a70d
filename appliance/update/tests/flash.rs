//! Flashing to slot files and loop devices, then boot sequences on virtual boot counts through
//! each boot loader's real environment format; power cuts at random offsets.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Cart, SLOT_SIZE, bytes, image, image_with, key_pair};
use telecart_update::flash::{self, FlashEvent, FlashOptions};
use telecart_update::state::{SlotContent, SlotsRecord};
use telecart_update::{Bootloader, HealthOutcome, Slot, UpdateError};

const ALL: [Bootloader; 3] = [Bootloader::Uboot, Bootloader::Tryboot, Bootloader::Grub];

fn options() -> FlashOptions {
    FlashOptions {
        allow_downgrade: false,
        actor: "tech".into(),
        now_ms: 0,
    }
}

fn flash_on(cart: &Cart, img: &[u8], running: Slot) -> Result<flash::FlashReport, UpdateError> {
    let mut control = cart.control();
    flash::flash(
        &cart.config,
        img,
        control.as_mut(),
        running,
        Some(semver::Version::new(1, 0, 0)),
        &options(),
        &mut |_| true,
    )
}

fn healthy(cart: &Cart) -> HealthOutcome {
    telecart_update::mark_booted_healthy(&cart.config).unwrap()
}

fn setup(bootloader: Bootloader) -> (Cart, ed25519_dalek::SigningKey, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(keys.path(), "release");
    (Cart::new(&public, bootloader), key, keys)
}

#[test]
fn flash_writes_the_inactive_slot_reads_back_and_arms_a_try() {
    for bl in ALL {
        let (cart, key, _k) = setup(bl);
        let rootfs = bytes(2 << 20, 5);
        let a_before = cart.slot_bytes(Slot::A);
        let img = image_with(
            &key,
            "rpi4",
            "1.1.0",
            None,
            &rootfs,
            &[("cmdline.txt", b"root=/dev/mmcblk0p3".to_vec())],
        );
        let mut events = Vec::new();
        let mut control = cart.control();
        let report = flash::flash(
            &cart.config,
            img.as_slice(),
            control.as_mut(),
            Slot::A,
            Some(semver::Version::new(1, 0, 0)),
            &options(),
            &mut |e| {
                events.push(e);
                true
            },
        )
        .unwrap();
        assert_eq!(report.slot, Slot::B);
        assert_eq!(&cart.slot_bytes(Slot::B)[..rootfs.len()], rootfs.as_slice());
        assert_eq!(cart.slot_bytes(Slot::A), a_before);
        assert_eq!(
            std::fs::read(
                cart.config
                    .slot_b
                    .boot_dir
                    .as_ref()
                    .unwrap()
                    .join("cmdline.txt")
            )
            .unwrap(),
            b"root=/dev/mmcblk0p3"
        );
        assert!(events.contains(&FlashEvent::Writing {
            done: rootfs.len() as u64,
            total: rootfs.len() as u64
        }));
        assert!(events.contains(&FlashEvent::ReadingBack {
            done: rootfs.len() as u64,
            total: rootfs.len() as u64
        }));
        assert!(
            SlotsRecord::load(&cart.config.state_dir)
                .unwrap()
                .is_verified(Slot::B)
        );
        let state = control.load().unwrap();
        assert_eq!(state.trial.map(|t| t.slot), Some(Slot::B), "{bl:?}");
        assert_eq!(state.committed, Slot::A);
        if bl == Bootloader::Tryboot {
            assert_eq!(report.reboot_command, "reboot \"0 tryboot\"");
        }
    }
}

/// Flash B, boot it, report healthy: committed; every later boot is B, on every boot loader.
#[test]
fn a_healthy_new_slot_is_committed() {
    for bl in ALL {
        let (cart, key, _k) = setup(bl);
        flash_on(&cart, &image(&key, "1.1.0", &bytes(1 << 20, 2)), Slot::A).unwrap();
        assert_eq!(cart.power_on(true), Slot::B, "{bl:?}");
        assert_eq!(healthy(&cart), HealthOutcome::Committed(Slot::B), "{bl:?}");
        for _ in 0..4 {
            assert_eq!(cart.power_on(false), Slot::B, "{bl:?}");
            assert_eq!(healthy(&cart), HealthOutcome::AlreadyCommitted);
        }
    }
}

/// A new slot that never reports healthy: after the boot limit the boot loader goes back to A.
#[test]
fn a_new_slot_that_never_reports_healthy_rolls_back_after_the_limit() {
    for bl in ALL {
        let (cart, key, _k) = setup(bl);
        flash_on(&cart, &image(&key, "1.1.0", &bytes(1 << 20, 2)), Slot::A).unwrap();
        let limit = cart.config.effective_boot_limit();
        for boot in 0..limit {
            assert_eq!(cart.power_on(boot == 0), Slot::B, "{bl:?} boot {boot}");
        }
        assert_eq!(cart.power_on(false), Slot::A, "{bl:?}");
        let outcome = healthy(&cart);
        assert!(
            matches!(
                outcome,
                HealthOutcome::AlreadyCommitted | HealthOutcome::TrialFailed(Slot::B)
            ),
            "{bl:?} {outcome:?}"
        );
        assert_eq!(cart.power_on(false), Slot::A);
        assert_eq!(healthy(&cart), HealthOutcome::AlreadyCommitted);
    }
}

#[test]
fn commit_and_rollback_from_the_technician() {
    for bl in ALL {
        let (cart, key, _k) = setup(bl);
        flash_on(&cart, &image(&key, "1.1.0", &bytes(1 << 20, 2)), Slot::A).unwrap();
        // Commit before booting the new slot is refused.
        assert!(flash::commit(cart.control().as_mut(), Slot::A).is_err());
        // Rollback while armed cancels the try.
        flash::rollback(&cart.config, cart.control().as_mut(), Slot::A).unwrap();
        assert_eq!(cart.power_on(true), Slot::A, "{bl:?}");
        // Flash again, boot B, commit by hand.
        flash_on(&cart, &image(&key, "1.1.0", &bytes(1 << 20, 2)), Slot::A).unwrap();
        assert_eq!(cart.power_on(true), Slot::B);
        flash::commit(cart.control().as_mut(), Slot::B).unwrap();
        assert_eq!(cart.power_on(false), Slot::B, "{bl:?}");
        // Later, roll back to A: A holds no image this tool verified (it came from the factory).
        let err = flash::rollback(&cart.config, cart.control().as_mut(), Slot::B).unwrap_err();
        assert!(err.to_string().contains("nothing to roll back to"), "{err}");
        // Flash A with 1.2.0 from B, commit it, then roll back to B, which holds verified 1.1.0.
        let mut control = cart.control();
        flash::flash(
            &cart.config,
            image(&key, "1.2.0", &bytes(1 << 20, 3)).as_slice(),
            control.as_mut(),
            Slot::B,
            Some(semver::Version::new(1, 1, 0)),
            &options(),
            &mut |_| true,
        )
        .unwrap();
        assert_eq!(cart.power_on(true), Slot::A);
        assert_eq!(healthy(&cart), HealthOutcome::Committed(Slot::A));
        let (_, next) = flash::rollback(&cart.config, cart.control().as_mut(), Slot::A).unwrap();
        assert_eq!(next, Slot::B);
        assert_eq!(cart.power_on(false), Slot::B, "{bl:?}");
    }
}

/// Stop the flash at pseudo-random offsets (a power cut mid-write): the running slot is byte
/// for byte what it was, the next boots start it, the half-written slot is never offered as a
/// rollback target, and a later complete flash works.
#[test]
fn a_flash_cut_at_any_offset_leaves_the_running_slot_bootable() {
    for bl in ALL {
        let (cart, key, _k) = setup(bl);
        let img = image(&key, "1.1.0", &bytes(SLOT_SIZE - 4096, 7));
        let a_before = cart.slot_bytes(Slot::A);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..6 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let cut_at = seed % (SLOT_SIZE as u64);
            let mut control = cart.control();
            let err = flash::flash(
                &cart.config,
                img.as_slice(),
                control.as_mut(),
                Slot::A,
                Some(semver::Version::new(1, 0, 0)),
                &options(),
                &mut |e| match e {
                    FlashEvent::Writing { done, .. } | FlashEvent::ReadingBack { done, .. } => {
                        done < cut_at
                    }
                    _ => true,
                },
            )
            .unwrap_err();
            assert!(matches!(err, UpdateError::Interrupted(_)), "{err}");
            assert_eq!(cart.slot_bytes(Slot::A), a_before);
            assert_eq!(cart.power_on(true), Slot::A, "{bl:?} cut at {cut_at}");
            assert_eq!(healthy(&cart), HealthOutcome::AlreadyCommitted);
            let record = SlotsRecord::load(&cart.config.state_dir).unwrap();
            assert!(matches!(
                record.slots.get(&Slot::B),
                Some(SlotContent::Writing { .. })
            ));
            assert!(flash::rollback(&cart.config, cart.control().as_mut(), Slot::A).is_err());
        }
        flash_on(&cart, &img, Slot::A).unwrap();
        assert_eq!(cart.power_on(true), Slot::B);
    }
}

/// Re-flashing a slot that is armed but not yet booted first disarms it, so a cut in the middle
/// of the second flash does not boot a half-written slot.
#[test]
fn reflashing_an_armed_slot_disarms_it_first() {
    let (cart, key, _k) = setup(Bootloader::Uboot);
    flash_on(&cart, &image(&key, "1.1.0", &bytes(1 << 20, 2)), Slot::A).unwrap();
    let mut control = cart.control();
    let err = flash::flash(
        &cart.config,
        image(&key, "1.2.0", &bytes(2 << 20, 4)).as_slice(),
        control.as_mut(),
        Slot::A,
        Some(semver::Version::new(1, 0, 0)),
        &options(),
        &mut |e| !matches!(e, FlashEvent::Writing { done, .. } if done > 1 << 20),
    )
    .unwrap_err();
    assert!(matches!(err, UpdateError::Interrupted(_)));
    assert_eq!(cart.power_on(false), Slot::A);
}

#[test]
fn flashing_while_running_the_trial_is_refused() {
    let (cart, key, _k) = setup(Bootloader::Uboot);
    flash_on(&cart, &image(&key, "1.1.0", &bytes(1 << 20, 2)), Slot::A).unwrap();
    assert_eq!(cart.power_on(true), Slot::B);
    let err = flash_on(&cart, &image(&key, "1.2.0", &bytes(1 << 20, 2)), Slot::B).unwrap_err();
    assert!(err.to_string().contains("runs on trial"), "{err}");
}

/// A real block device: a loop device over a file (needs root and /dev/loop-control).
#[test]
fn flash_to_a_loop_device() {
    let (mut cart, key, _k) = setup(Bootloader::Uboot);
    let backing = cart.dir.path().join("loop-backing.img");
    std::fs::write(&backing, vec![0u8; 4 << 20]).unwrap();
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output();
    let device = match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_string(),
        other => {
            eprintln!(
                "!!! SKIPPING flash_to_a_loop_device: losetup failed ({other:?}); needs root and loop devices"
            );
            return;
        }
    };
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(device.clone());
    cart.config.slot_b.device = device.clone().into();
    // A payload larger than the device is refused before anything is armed.
    let err = flash_on(&cart, &image(&key, "1.2.0", &bytes(5 << 20, 1)), Slot::A).unwrap_err();
    assert_eq!(
        err,
        UpdateError::SlotTooSmall {
            target: device.clone(),
            capacity: 4 << 20,
            needed: 5 << 20
        }
    );
    assert_eq!(cart.power_on(true), Slot::A);

    let rootfs = bytes(3 << 20, 11);
    flash_on(&cart, &image(&key, "1.1.0", &rootfs), Slot::A).unwrap();
    let written = std::fs::read(&device).unwrap();
    assert_eq!(&written[..rootfs.len()], rootfs.as_slice());
    assert_eq!(cart.power_on(true), Slot::B);
    assert_eq!(healthy(&cart), HealthOutcome::Committed(Slot::B));
}

//! The GRUB environment block against Debian's `grub-editenv` (grub-common): its blocks read by
//! us, ours read by it. Skips loudly when grub-editenv is absent.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use telecart_update::boot::BootControl;
use telecart_update::boot::grub::{self, GrubControl};
use telecart_update::{BootState, Slot};

fn editenv(args: &[&str]) -> Option<String> {
    match Command::new("grub-editenv").args(args).output() {
        Ok(o) => {
            assert!(
                o.status.success(),
                "grub-editenv {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8(o.stdout).unwrap())
        }
        Err(_) => {
            eprintln!("!!! SKIPPING: grub-editenv is not installed (Debian: grub-common)");
            None
        }
    }
}

#[test]
fn grub_editenv_and_we_read_each_others_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grubenv");
    let f = file.to_str().unwrap();
    if editenv(&[f, "create"]).is_none() {
        return;
    }
    editenv(&[f, "set", "saved_entry=Telecart", "odd=back\\slash"]).unwrap();
    let vars = grub::parse_block(&std::fs::read(&file).unwrap()).unwrap();
    assert!(vars.contains(&("saved_entry".into(), "Telecart".into())));
    assert!(
        vars.contains(&("odd".into(), "back\\slash".into())),
        "{vars:?}"
    );

    let mut control = GrubControl::new(file.clone(), 3);
    assert_eq!(control.load().unwrap(), BootState::new(Slot::A, 3));
    let mut state = BootState::new(Slot::A, 3);
    state.arm_try(Slot::B, Slot::A).unwrap();
    state.boot();
    control.store(&state).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1024);
    let listed = editenv(&[f, "list"]).unwrap();
    for want in [
        "telecart_slot=a",
        "telecart_try=b",
        "telecart_try_boots=1",
        "saved_entry=Telecart",
        "odd=back\\slash",
    ] {
        assert!(
            listed.lines().any(|l| l == want),
            "{want} missing in:\n{listed}"
        );
    }
    // GRUB's save_env stepping the count, done here by grub-editenv.
    editenv(&[f, "set", "telecart_try_boots=2"]).unwrap();
    assert_eq!(control.load().unwrap().trial.unwrap().boots, 2);
    state = control.load().unwrap();
    state.report_healthy(Slot::B);
    control.store(&state).unwrap();
    let listed = editenv(&[f, "list"]).unwrap();
    assert!(listed.lines().any(|l| l == "telecart_slot=b"));
    assert!(listed.lines().any(|l| l == "telecart_try="));
}

#[test]
fn a_damaged_block_is_an_error_not_a_fresh_state() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grubenv");
    std::fs::write(&file, vec![b'#'; 1024]).unwrap();
    let control = GrubControl::new(file.clone(), 3);
    assert!(control.load().is_err());
    std::fs::write(&file, b"# GRUB Environment Block\n").unwrap();
    assert!(control.load().is_err());
}

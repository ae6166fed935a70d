//! The U-Boot environment against Debian's u-boot-tools (`mkenvimage`) and libubootenv
//! (`fw_printenv`, `fw_setenv`): their files read by us, ours read by them, redundant copies and
//! their flags. Fixtures in `tests/fixtures/` were made by `mkenvimage` (see the README there);
//! the live checks skip loudly when the tools are absent.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use telecart_update::boot::BootControl;
use telecart_update::boot::uboot::{self, Environment, UbootControl};
use telecart_update::config::EnvLocation;
use telecart_update::{BootState, Slot};

const FIXTURE_TEXT: &str = include_str!("fixtures/uboot-env.txt");

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "!!! SKIPPING: {name} is not installed (Debian: u-boot-tools / libubootenv-tool)"
        );
    }
    found
}

fn fixture_vars() -> Vec<(String, String)> {
    FIXTURE_TEXT
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn loc(path: &Path, offset: u64) -> EnvLocation {
    EnvLocation {
        path: path.to_path_buf(),
        offset,
        size: 0x2000,
    }
}

#[test]
fn committed_mkenvimage_fixtures_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let single = std::fs::read(dir.join("uboot-env.bin")).unwrap();
    let copy = uboot::parse_copy(&single, false).unwrap();
    assert_eq!(copy.env.vars(), fixture_vars().as_slice());
    let redundant = std::fs::read(dir.join("uboot-env-redundant.bin")).unwrap();
    let copy = uboot::parse_copy(&redundant, true).unwrap();
    assert_eq!(copy.flag, Some(1));
    assert_eq!(copy.env.vars(), fixture_vars().as_slice());
    // One flipped bit anywhere in the data is caught.
    let mut bad = single.clone();
    bad[100] ^= 4;
    assert!(uboot::parse_copy(&bad, false).is_err());
}

#[test]
fn mkenvimage_output_made_now_parses() {
    if !tool("mkenvimage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("env.txt");
    std::fs::write(
        &txt,
        FIXTURE_TEXT
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    for redundant in [false, true] {
        let out = dir.path().join("env.bin");
        let mut cmd = Command::new("mkenvimage");
        if redundant {
            cmd.arg("-r");
        }
        assert!(
            cmd.args(["-s", "0x2000", "-o"])
                .arg(&out)
                .arg(&txt)
                .status()
                .unwrap()
                .success()
        );
        let copy = uboot::parse_copy(&std::fs::read(&out).unwrap(), redundant).unwrap();
        assert_eq!(copy.env.vars(), fixture_vars().as_slice());
    }
}

fn fw(tool_name: &str, config: &Path, args: &[&str]) -> String {
    let out = Command::new(tool_name)
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool_name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Our writes, read by fw_printenv; fw_setenv's writes, read by us; for a single and a redundant
/// environment, several saves in a row (so the redundant flag advances and the copy alternates).
#[test]
fn libubootenv_and_we_read_each_others_writes() {
    if !tool("fw_printenv") || !tool("fw_setenv") {
        return;
    }
    for redundant in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let mut env = Environment::default();
        for (k, v) in fixture_vars() {
            env.set(&k, Some(&v));
        }
        let locations = if redundant {
            uboot::create(&file, &env, 0x2000, true).unwrap();
            let mut bytes = std::fs::read(&file).unwrap();
            bytes.extend(vec![0xffu8; 0x2000]);
            std::fs::write(&file, bytes).unwrap();
            vec![loc(&file, 0), loc(&file, 0x2000)]
        } else {
            uboot::create(&file, &env, 0x2000, false).unwrap();
            vec![loc(&file, 0)]
        };
        let config = dir.path().join("fw_env.config");
        std::fs::write(&config, uboot::fw_env_config(&locations)).unwrap();
        let mut control = UbootControl::new(locations, 3).unwrap();

        // Arm a try through the trait and let fw_printenv read it.
        let mut state = BootState::new(Slot::A, 3);
        state.arm_try(Slot::B, Slot::A).unwrap();
        control.store(&state).unwrap();
        let printed = fw("fw_printenv", &config, &[]);
        for want in [
            "telecart_slot=b",
            "telecart_fallback=a",
            "upgrade_available=1",
            "bootcount=0",
            "bootlimit=3",
            "bootdelay=2",
        ] {
            assert!(
                printed.lines().any(|l| l == want),
                "{want} missing in:\n{printed}"
            );
        }

        // The boot loader counts a boot (fw_setenv stands in for U-Boot's bootcount_inc).
        fw("fw_setenv", &config, &["bootcount", "1"]);
        let loaded = control.load().unwrap();
        assert_eq!(loaded.trial.unwrap().boots, 1, "redundant={redundant}");

        // cartd reports healthy; fw_printenv sees the commit; unrelated variables survive.
        let mut s = loaded;
        s.report_healthy(Slot::B);
        control.store(&s).unwrap();
        assert_eq!(
            fw("fw_printenv", &config, &["-n", "upgrade_available"]).trim(),
            "0"
        );
        assert_eq!(
            fw("fw_printenv", &config, &["-n", "telecart_slot"]).trim(),
            "b"
        );
        assert_eq!(
            fw("fw_printenv", &config, &["-n", "bootcmd"]).trim(),
            fixture_vars()
                .iter()
                .find(|(k, _)| k == "bootcmd")
                .unwrap()
                .1
        );
        fw("fw_setenv", &config, &["serial#", "cart-0042"]);
        assert_eq!(
            control.read_env().unwrap().0.get("serial#"),
            Some("cart-0042")
        );
        assert_eq!(control.load().unwrap(), s);
    }
}

/// A power cut while saving a redundant environment leaves the previous copy current.
#[test]
fn a_torn_save_of_a_redundant_environment_keeps_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("uboot.env");
    let mut env = Environment::default();
    env.set("bootcmd", Some("run telecart_boot"));
    uboot::create(&file, &env, 0x2000, true).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend(vec![0xffu8; 0x2000]);
    std::fs::write(&file, bytes).unwrap();
    let mut control = UbootControl::new(vec![loc(&file, 0), loc(&file, 0x2000)], 3).unwrap();
    let committed = BootState::new(Slot::A, 3);
    control.store(&committed).unwrap();
    let mut armed = committed;
    armed.arm_try(Slot::B, Slot::A).unwrap();
    let before = std::fs::read(&file).unwrap();
    control.store(&armed).unwrap();
    let after = std::fs::read(&file).unwrap();
    // The save wrote one copy; cut it short by restoring half of that copy's old bytes.
    let changed = if before[..0x2000] == after[..0x2000] {
        0x2000
    } else {
        0
    };
    let mut torn = after.clone();
    torn[changed + 0x1000..changed + 0x2000]
        .copy_from_slice(&before[changed + 0x1000..changed + 0x2000]);
    torn[changed + 10] ^= 0xff;
    std::fs::write(&file, torn).unwrap();
    assert_eq!(control.load().unwrap(), committed);
}

//! `cartctl image` end to end on a cart whose slots and U-Boot environment are files: keys made
//! by OpenSSL, sign, verify (ours and OpenSSL's check of the signature), flash, status, commit,
//! rollback, and refusals with a non-zero exit.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn cartctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cartctl"))
        .arg("image")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("USER", "tech-7")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn failed(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "should have failed:\n{text}");
    text
}

fn has_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("!!! openssl absent: using cartctl image keygen instead of OpenSSL keys");
    }
    ok
}

#[test]
fn sign_verify_flash_commit_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n);
    let s = |n: &str| d.join(n).to_str().unwrap().to_string();
    let unused = p("unused.toml");

    // Signing key: OpenSSL's when available (proves the PEM formats), else ours.
    if has_openssl() {
        assert!(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "ed25519",
                    "-out",
                    &s("release.key")
                ])
                .status()
                .unwrap()
                .success()
        );
        assert!(
            Command::new("openssl")
                .args([
                    "pkey",
                    "-in",
                    &s("release.key"),
                    "-pubout",
                    "-out",
                    &s("release.pub")
                ])
                .status()
                .unwrap()
                .success()
        );
    } else {
        ok(&cartctl(
            &unused,
            &[
                "keygen",
                "--key",
                &s("release.key"),
                "--public",
                &s("release.pub"),
            ],
        ));
    }
    let rootfs: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(p("rootfs.img"), &rootfs).unwrap();
    std::fs::write(p("cmdline.txt"), b"root=/dev/mmcblk0p3 telecart.slot=b\n").unwrap();
    let sign = |version: &str, out: &str| {
        ok(&cartctl(
            &unused,
            &[
                "sign",
                "--key",
                &s("release.key"),
                "--board",
                "rpi4",
                "--version",
                version,
                "--build-id",
                "ci-1",
                "--rootfs",
                &s("rootfs.img"),
                "--boot",
                &s("cmdline.txt"),
                "--out",
                &s(out),
            ],
        ))
    };
    sign("1.1.0", "new.tcimg");
    sign("0.9.0", "old.tcimg");
    let text = ok(&cartctl(
        &unused,
        &["verify", &s("new.tcimg"), "--public-key", &s("release.pub")],
    ));
    assert!(text.contains("signature and payloads OK"), "{text}");

    // OpenSSL verifies our signature over the domain-separated manifest.
    if has_openssl() {
        let image = std::fs::read(p("new.tcimg")).unwrap();
        let len = u32::from_be_bytes(image[10..14].try_into().unwrap()) as usize;
        let mut msg = b"telecart-image/v1\0".to_vec();
        msg.extend_from_slice(&image[78..78 + len]);
        std::fs::write(p("msg"), msg).unwrap();
        std::fs::write(p("sig"), &image[14..78]).unwrap();
        let out = Command::new("openssl")
            .args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &s("release.pub"),
                "-rawin",
                "-in",
                &s("msg"),
                "-sigfile",
                &s("sig"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The cart: file slots, a redundant U-Boot environment made by our create().
    std::fs::write(p("slot-a.img"), vec![0x11u8; 4 << 20]).unwrap();
    std::fs::write(p("slot-b.img"), vec![0u8; 4 << 20]).unwrap();
    std::fs::create_dir(p("boot-b")).unwrap();
    std::fs::create_dir(p("boot-a")).unwrap();
    std::fs::write(p("cmdline"), "console=ttyS0 telecart.slot=a\n").unwrap();
    std::fs::write(p("telecart-version"), "1.0.0\n").unwrap();
    let mut env = telecart_update::boot::uboot::Environment::default();
    env.set("bootcmd", Some("run telecart_boot"));
    telecart_update::boot::uboot::create(&p("uboot.env"), &env, 0x2000, false).unwrap();
    let config = p("update.toml");
    std::fs::write(&config, format!(
        "[update]\nboard = \"rpi4\"\npublic_keys = [\"{pub}\"]\nbootloader = \"uboot\"\nboot_limit = 2\n\
         state_dir = \"{d}/state\"\ncmdline = \"{d}/cmdline\"\nversion_file = \"{d}/telecart-version\"\n\
         [update.slot_a]\ndevice = \"{d}/slot-a.img\"\nboot_dir = \"{d}/boot-a\"\n[update.slot_b]\ndevice = \"{d}/slot-b.img\"\nboot_dir = \"{d}/boot-b\"\n\
         [[update.uboot_env]]\npath = \"{d}/uboot.env\"\nsize = 0x2000\n",
        pub = s("release.pub"), d = d.display())).unwrap();

    // Refusals exit non-zero and write nothing.
    let text = failed(&cartctl(&config, &["flash", &s("rootfs.img")]));
    assert!(text.contains("not a telecart image"), "{text}");
    let text = failed(&cartctl(&config, &["flash", &s("old.tcimg")]));
    assert!(text.contains("downgrade refused"), "{text}");
    assert_eq!(std::fs::read(p("slot-b.img")).unwrap(), vec![0u8; 4 << 20]);

    let text = ok(&cartctl(&config, &["flash", &s("new.tcimg")]));
    assert!(text.contains("slot B armed for one try boot"), "{text}");
    assert!(text.contains("read back:"), "{text}");
    assert_eq!(
        &std::fs::read(p("slot-b.img")).unwrap()[..rootfs.len()],
        rootfs.as_slice()
    );
    assert_eq!(
        std::fs::read(p("slot-a.img")).unwrap(),
        vec![0x11u8; 4 << 20]
    );
    let text = ok(&cartctl(&config, &["status"]));
    assert!(
        text.contains("on trial:    slot B (0 of 2 boots used)"),
        "{text}"
    );
    assert!(text.contains("1.1.0 (ci-1), verified"), "{text}");

    // The boot loader boots B (bootcount 1); the technician commits.
    let mut control = telecart_update::boot::uboot::UbootControl::new(
        vec![telecart_update::config::EnvLocation {
            path: p("uboot.env"),
            offset: 0,
            size: 0x2000,
        }],
        2,
    )
    .unwrap();
    use telecart_update::boot::BootControl;
    let mut state = control.load().unwrap();
    assert_eq!(state.boot(), telecart_update::Slot::B);
    control.store(&state).unwrap();
    std::fs::write(p("cmdline"), "console=ttyS0 telecart.slot=b\n").unwrap();
    ok(&cartctl(&config, &["commit"]));
    let text = ok(&cartctl(&config, &["status"]));
    assert!(
        text.contains("committed:   slot B") && text.contains("on trial:    none"),
        "{text}"
    );

    // Slot A came from the factory, not from cartctl: nothing verified to roll back to.
    let text = failed(&cartctl(&config, &["rollback"]));
    assert!(text.contains("nothing to roll back to"), "{text}");

    // The downgrade with the override goes through and is audited.
    let text = ok(&cartctl(
        &config,
        &["flash", &s("old.tcimg"), "--allow-downgrade"],
    ));
    assert!(text.contains("DOWNGRADE 1.1.0 -> 0.9.0"), "{text}");
    let audit = std::fs::read_to_string(d.join("state/audit.log")).unwrap();
    assert!(
        audit.contains("tech-7") && audit.contains("0.9.0"),
        "{audit}"
    );
}

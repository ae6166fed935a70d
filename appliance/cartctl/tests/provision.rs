//! `cartctl provision`: keys, CSR, master key and config on a fresh cart; a certificate signed by
//! a CA is installed only if it certifies this
//! device's key and names this device. The CA is OpenSSL.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn cartctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cartctl"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn provision_a_cart_and_install_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |n: &str| d.join(n).to_str().unwrap().to_string();
    std::fs::write(
        d.join("template.toml"),
        "[cart]\nname = \"Ward 3 cart\"\n[video]\nsource = \"test-pattern\"\n",
    )
    .unwrap();
    let out = cartctl(&[
        "provision",
        "init",
        "--device-id",
        "cart-0042",
        "--template",
        &s("template.toml"),
        "--keys-dir",
        &s("keys"),
        "--config-out",
        &s("cart.toml"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mode(&d.join("keys/device.key")), 0o600);
    assert_eq!(mode(&d.join("keys/master.key")), 0o600);
    let config = telecart_core::Config::load(&d.join("cart.toml")).unwrap();
    assert_eq!(config.store.device_id, "cart-0042");
    assert_eq!(config.cart.name, "Ward 3 cart");
    telecart_store::MasterKey::load(&config.store.master_key).unwrap();
    // Provisioning twice refuses to overwrite.
    let again = cartctl(&[
        "provision",
        "init",
        "--device-id",
        "cart-0042",
        "--template",
        &s("template.toml"),
        "--keys-dir",
        &s("keys"),
        "--config-out",
        &s("cart.toml"),
    ]);
    assert!(!again.status.success());

    // The CA (OpenSSL, as a hospital CA would run it) signs the CSR.
    let openssl = |args: &[&str]| -> bool {
        match Command::new("openssl").args(args).current_dir(d).output() {
            Ok(o) => {
                assert!(
                    o.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                true
            }
            Err(_) => false,
        }
    };
    if !openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Hospital Device CA",
    ]) {
        eprintln!("!!! SKIPPING install-cert: openssl is not installed");
        return;
    }
    openssl(&[
        "x509",
        "-req",
        "-in",
        "keys/device.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "issued.pem",
        "-days",
        "30",
    ]);
    // A certificate for the right name but another key, and one for another device.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "30",
        "-subj",
        "/CN=cart-0042",
    ]);
    let out = cartctl(&[
        "provision",
        "install-cert",
        &s("other.pem"),
        "--config",
        &s("cart.toml"),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("certifies another key"),
        "{}",
        text(&out)
    );
    assert!(!d.join("keys/device.crt").exists());
    openssl(&[
        "req",
        "-new",
        "-key",
        "keys/device.key",
        "-out",
        "wrong-cn.csr",
        "-subj",
        "/CN=cart-9999",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "wrong-cn.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "wrong-cn.pem",
        "-days",
        "30",
    ]);
    let out = cartctl(&[
        "provision",
        "install-cert",
        &s("wrong-cn.pem"),
        "--config",
        &s("cart.toml"),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("cart-9999"),
        "{}",
        text(&out)
    );

    let out = cartctl(&[
        "provision",
        "install-cert",
        &s("issued.pem"),
        "--config",
        &s("cart.toml"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(d.join("keys/device.crt")).unwrap(),
        std::fs::read(d.join("issued.pem")).unwrap()
    );
}

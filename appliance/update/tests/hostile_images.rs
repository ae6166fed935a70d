//! Every image the cart must refuse, one test each: `flash` returns the refusal, the running
//! slot's bytes are untouched and the next boot starts the running slot.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Cart, bytes, image, image_with, key_pair};
use ed25519_dalek::Signer;
use telecart_update::flash::{self, FlashOptions};
use telecart_update::image::{HEADER_LEN, MAGIC};
use telecart_update::{Bootloader, Slot, UpdateError};

fn options(allow_downgrade: bool) -> FlashOptions {
    FlashOptions {
        allow_downgrade,
        actor: "tech-7".into(),
        now_ms: 1_700_000_000_000,
    }
}

/// Flashes `image` on a cart running 2.0.0 in slot A and returns the error; checks nothing moved.
fn refuse(cart: &Cart, image: &[u8], allow_downgrade: bool) -> UpdateError {
    let before = cart.slot_bytes(Slot::A);
    let mut control = cart.control();
    let err = flash::flash(
        &cart.config,
        image,
        control.as_mut(),
        Slot::A,
        Some(semver::Version::new(2, 0, 0)),
        &options(allow_downgrade),
        &mut |_| true,
    )
    .unwrap_err();
    assert_eq!(cart.slot_bytes(Slot::A), before, "running slot changed");
    let state = control.load().unwrap();
    assert_eq!(state.trial, None, "a refused image was armed");
    assert_eq!(state.next_boot(), Slot::A);
    err
}

struct Setup {
    cart: Cart,
    key: ed25519_dalek::SigningKey,
    _keys: tempfile::TempDir,
}

fn setup() -> Setup {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(keys.path(), "release");
    Setup {
        cart: Cart::new(&public, Bootloader::Uboot),
        key,
        _keys: keys,
    }
}

fn good(s: &Setup) -> Vec<u8> {
    image(&s.key, "2.1.0", &bytes(1 << 20, 9))
}

fn manifest_len(img: &[u8]) -> usize {
    u32::from_be_bytes(img[10..14].try_into().unwrap()) as usize
}

#[test]
fn the_good_image_is_accepted() {
    let s = setup();
    let img = good(&s);
    let mut control = s.cart.control();
    let report = flash::flash(
        &s.cart.config,
        img.as_slice(),
        control.as_mut(),
        Slot::A,
        Some(semver::Version::new(2, 0, 0)),
        &options(false),
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(report.slot, Slot::B);
    assert_eq!(control.load().unwrap().next_boot(), Slot::B);
}

#[test]
fn a_raw_file_system_is_not_an_image() {
    let s = setup();
    assert_eq!(
        refuse(&s.cart, &bytes(1 << 20, 3), false),
        UpdateError::NotAnImage
    );
    assert_eq!(refuse(&s.cart, b"", false), UpdateError::NotAnImage);
}

#[test]
fn an_unsigned_image_is_refused() {
    let s = setup();
    let mut img = good(&s);
    img[14..78].fill(0);
    assert_eq!(refuse(&s.cart, &img, false), UpdateError::Unsigned);
}

#[test]
fn an_image_signed_by_another_key_is_refused() {
    let s = setup();
    let (other, _) = key_pair(s.cart.dir.path(), "attacker");
    let img = image(&other, "2.1.0", &bytes(1 << 20, 9));
    assert_eq!(refuse(&s.cart, &img, false), UpdateError::BadSignature(1));
}

#[test]
fn a_tampered_manifest_is_refused() {
    let s = setup();
    let mut img = good(&s);
    // Bump the version digit inside the signed JSON.
    let at = HEADER_LEN
        + img[HEADER_LEN..]
            .windows(5)
            .position(|w| w == b"2.1.0")
            .unwrap();
    img[at + 2] = b'9';
    assert_eq!(refuse(&s.cart, &img, false), UpdateError::BadSignature(1));
}

#[test]
fn a_tampered_payload_is_refused() {
    let s = setup();
    let mut img = good(&s);
    let at = HEADER_LEN + manifest_len(&img) + 500_000;
    img[at] ^= 0x40;
    assert_eq!(
        refuse(&s.cart, &img, false),
        UpdateError::PayloadHash("rootfs".into())
    );
}

#[test]
fn an_image_truncated_in_the_header_is_refused() {
    let s = setup();
    let img = good(&s);
    assert!(
        matches!(refuse(&s.cart, &img[..40], false), UpdateError::Truncated(w) if w.contains("header"))
    );
}

#[test]
fn an_image_truncated_in_the_manifest_is_refused() {
    let s = setup();
    let img = good(&s);
    assert!(
        matches!(refuse(&s.cart, &img[..HEADER_LEN + 10], false), UpdateError::Truncated(w) if w.contains("manifest"))
    );
}

#[test]
fn an_image_truncated_in_the_payload_is_refused() {
    let s = setup();
    let img = good(&s);
    let err = refuse(&s.cart, &img[..img.len() - 1], false);
    assert!(
        matches!(&err, UpdateError::Truncated(w) if w.contains("rootfs")),
        "{err}"
    );
}

#[test]
fn data_after_the_last_payload_is_refused() {
    let s = setup();
    let mut img = good(&s);
    img.push(0);
    assert_eq!(refuse(&s.cart, &img, false), UpdateError::TrailingData);
}

#[test]
fn an_image_for_another_board_is_refused() {
    let s = setup();
    let img = image_with(&s.key, "rpi5", "2.1.0", None, &bytes(4096, 1), &[]);
    assert_eq!(
        refuse(&s.cart, &img, false),
        UpdateError::WrongBoard {
            image: "rpi5".into(),
            device: "rpi4".into()
        }
    );
}

#[test]
fn a_downgrade_is_refused_without_the_override() {
    let s = setup();
    let img = image(&s.key, "1.9.9", &bytes(4096, 1));
    assert_eq!(
        refuse(&s.cart, &img, false),
        UpdateError::Downgrade {
            image: "1.9.9".into(),
            installed: "2.0.0".into()
        }
    );
    assert!(!telecart_update::audit::path(&s.cart.config.state_dir).exists());
}

#[test]
fn a_downgrade_with_the_override_is_flashed_and_audited() {
    let s = setup();
    let img = image(&s.key, "1.9.9", &bytes(4096, 1));
    let mut control = s.cart.control();
    let report = flash::flash(
        &s.cart.config,
        img.as_slice(),
        control.as_mut(),
        Slot::A,
        Some(semver::Version::new(2, 0, 0)),
        &options(true),
        &mut |_| true,
    )
    .unwrap();
    assert!(report.downgrade.is_some());
    let lines = telecart_update::audit::verify(&s.cart.config.state_dir).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].actor, "tech-7");
    assert!(lines[0].detail.contains("1.9.9") && lines[0].detail.contains("2.0.0"));
}

#[test]
fn an_image_needing_a_newer_installed_version_is_refused() {
    let s = setup();
    let img = image_with(&s.key, "rpi4", "3.0.0", Some("2.5.0"), &bytes(4096, 1), &[]);
    assert_eq!(
        refuse(&s.cart, &img, false),
        UpdateError::InstalledTooOld {
            minimum: "2.5.0".into(),
            installed: "2.0.0".into()
        }
    );
}

#[test]
fn a_newer_format_is_refused() {
    let s = setup();
    let mut img = good(&s);
    img[8..10].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(
        refuse(&s.cart, &img, false),
        UpdateError::UnsupportedFormat(2)
    );
}

#[test]
fn an_absurd_manifest_length_is_refused() {
    let s = setup();
    let mut img = good(&s);
    img[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        refuse(&s.cart, &img, false),
        UpdateError::ManifestSize(u32::MAX)
    );
}

/// A manifest the release key did sign but that breaks the rules (a boot file escaping its
/// directory) is still refused.
#[test]
fn a_signed_but_invalid_manifest_is_refused() {
    let s = setup();
    let manifest = br#"{"board":"rpi4","version":"2.1.0","build_id":"x","payloads":[
        {"name":"rootfs","kind":"rootfs","size":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"name":"../../etc/shadow","kind":"boot","size":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}"#;
    let mut msg = b"telecart-image/v1\0".to_vec();
    msg.extend_from_slice(manifest);
    let sig = s.key.sign(&msg);
    let mut img = MAGIC.to_vec();
    img.extend_from_slice(&1u16.to_be_bytes());
    img.extend_from_slice(&(manifest.len() as u32).to_be_bytes());
    img.extend_from_slice(&sig.to_bytes());
    img.extend_from_slice(manifest);
    assert!(
        matches!(refuse(&s.cart, &img, false), UpdateError::BadManifest(m) if m.contains("plain file name"))
    );
}

#[test]
fn no_trusted_key_means_nothing_verifies() {
    let mut s = setup();
    s.cart.config.public_keys.clear();
    let img = good(&s);
    assert_eq!(refuse(&s.cart, &img, false), UpdateError::NoTrustedKeys);
}

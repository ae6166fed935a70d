//! The firmware image reader and the manifest parser on arbitrary bytes: a clear error or a
//! verified image, never a panic, never an allocation the header merely claims.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use telecart_update::image::{ImageReader, Manifest};

fn trusted() -> &'static [ed25519_dalek::VerifyingKey] {
    static KEYS: OnceLock<Vec<ed25519_dalek::VerifyingKey>> = OnceLock::new();
    KEYS.get_or_init(|| vec![SigningKey::from_bytes(&[7u8; 32]).verifying_key()])
}

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data);
    if let Ok(reader) = ImageReader::open(data, trusted()) {
        let _ = reader.verify_all(&mut |_| true);
    }
});

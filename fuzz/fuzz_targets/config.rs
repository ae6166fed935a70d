//! Any text as a configuration file: an error or a valid config, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = telecart_core::Config::from_toml(Path::new("fuzz.toml"), text) {
            assert!(config.validate().is_empty());
        }
    }
});

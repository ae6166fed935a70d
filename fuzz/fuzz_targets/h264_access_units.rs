//! Any byte stream as H.264 Annex-B: access units out, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_codec::h264;

fuzz_target!(|data: &[u8]| {
    for unit in h264::split_access_units(data) {
        assert!(unit.data.starts_with(&[0, 0, 0, 1]));
        let _ = h264::is_keyframe(&unit.data);
    }
    let _ = h264::sps_profile(data);
});

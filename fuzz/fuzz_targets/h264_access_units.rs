//! Any byte stream as H.264 Annex-B: access units out, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_codec::h264;

fuzz_target!(|data: &[u8]| {
    let units = h264::split_access_units(data);
    for unit in &units {
        let _ = h264::contains_idr(unit);
    }
    let _ = h264::sps_profile(data);
});

//! Any luma plane, any geometry: a stamp or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let width = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let height = u32::from(u16::from_le_bytes([data[2], data[3]]));
    let stride = usize::from(u16::from_le_bytes([data[4], data[5]]));
    let _ = telecart_stamp::decode_stamp(&data[6..], width, height, stride);
});

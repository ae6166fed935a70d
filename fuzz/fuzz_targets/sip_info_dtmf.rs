//! Any INFO body under each Content-Type a softphone might send, through the DTMF reader:
//! a key or a clear error, never a panic; a key read back from the body the cart would send.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_sip::dtmf_info;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (content_type, body) = text.split_once('\n').unwrap_or(("application/dtmf-relay", &text));
    for ct in [content_type, "application/dtmf-relay", "application/dtmf"] {
        if let Ok(press) = dtmf_info::parse(ct, body) {
            let again = dtmf_info::parse("application/dtmf-relay", &dtmf_info::relay_body(press.digit, 160));
            assert_eq!(again.map(|p| p.digit), Ok(press.digit));
        }
    }
});

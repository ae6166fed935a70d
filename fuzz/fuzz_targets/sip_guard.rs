//! Any datagram through the SIP socket's screen (`telecart_sip::guard`): passed, dropped or
//! answered with a 400/501 no longer than the request plus headers of our own, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_sip::guard::{Screened, screen};

fuzz_target!(|data: &[u8]| {
    let (parsed, datagram) = data.split_first().map_or((false, data), |(b, d)| (b & 1 == 1, d));
    if let Screened::Answer { status, response } = screen(datagram, parsed, "fuzz") {
        assert!(status == 400 || status == 501);
        assert!(response.starts_with(b"SIP/2.0 "));
        assert!(response.len() <= 2 * datagram.len() + 256);
    }
});

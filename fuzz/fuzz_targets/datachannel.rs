//! Any data-channel message: parsed and re-encoded identically, or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_webrtc::datachannel::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::parse(data) {
        let again = Message::parse(message.to_json().as_bytes()).expect("our own encoding parses");
        assert_eq!(again, message);
    }
});

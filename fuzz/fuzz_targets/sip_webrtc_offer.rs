//! Any INVITE body through the WebRTC-offer check (`telecart_sip::webrtc_offer`): a verdict
//! or a 488 reason, never a panic; a WebRTC verdict always names a usable codec.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_sip::webrtc_offer;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match webrtc_offer::check(&text) {
        Ok(Some(offer)) => assert!(offer.opus || offer.h264),
        Ok(None) => {}
        Err(e) => assert_eq!(e.status(), 488),
    }
});

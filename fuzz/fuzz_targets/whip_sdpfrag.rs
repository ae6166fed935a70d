//! A trickle/ICE-restart fragment from a WHIP endpoint (PATCH 200 body): parsed,
//! then merged into a previous answer as the cart does after a restart.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_webrtc::trickle::{Fragment, FragmentTemplate, restart_answer};

const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 108\r\na=mid:0\r\na=ice-ufrag:a\r\na=ice-pwd:bbbbbbbbbbbbbbbbbbbbbb\r\n\
    a=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(frag) = Fragment::parse(&text) {
        let _ = restart_answer(ANSWER, &frag);
        let _ = restart_answer(&text, &frag);
    }
    let _ = FragmentTemplate::from_offer(&text);
});

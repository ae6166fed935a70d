//! Any digest challenge through the parser and, when it parses, into an answer; any
//! Session-Expires/Min-SE pair through the RFC 4028 decisions (answering, settling our own
//! call's 2xx, retrying a 422) and a timer, any SDP as the
//! answer to the cart's own offer (with and without SDES keys): errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use telecart_sip::digest::Challenge;
use telecart_sip::outgoing::{self, OfferedKeys, SipSrtp};
use telecart_sip::session_timer::{self, Refresher, SessionTimer, TimerRequest};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = Challenge::parse(&text) {
        let _ = c.answer("cart1", "pw", "REGISTER", "sip:127.0.0.1", "abc", 1);
    }
    let (se, min_se) = text.split_once('\n').unwrap_or((&text, ""));
    let settled = session_timer::settle_response(Some(se));
    let _ = session_timer::retry_after_too_small(Some(min_se), session_timer::REQUESTED_SE);
    for supported in [false, true] {
        let answer = session_timer::answer_invite(&TimerRequest {
            session_expires: Some(se),
            min_se: Some(min_se),
            supported,
        });
        for (answer, we_are) in [(&answer, Refresher::Uas), (&settled, Refresher::Uac)] {
            let _ = answer.session_expires_header();
            let t0 = Instant::now();
            if let Some(mut timer) = SessionTimer::for_answer(answer, we_are, t0) {
                let _ = timer.poll_action(t0 + Duration::from_secs(86_400));
                let _ = timer.poll_timeout();
            }
        }
    }
    // An answer to each kind of offer of ours: plain, best-effort and mandatory SDES-SRTP.
    for mode in [SipSrtp::Off, SipSrtp::Optional, SipSrtp::Mandatory] {
        if let Ok(keys) = OfferedKeys::generate(mode) {
            let _ = outgoing::settle(&text, true, &keys);
        }
    }
});

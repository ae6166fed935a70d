//! Any SDP offer through parse and answer (and the answer back through the parser), any
//! `a=crypto` value through the SDES parser, and any datagram into a call's media session on
//! either socket, plain and SRTP (AES-CM and AES-GCM): errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use telecart_sip::media::{AudioSetup, MediaSession, MediaSetup, StreamKind, VideoSetup};
use telecart_sip::sdp::{self, Capabilities, LocalMedia, SessionDescription};
use telecart_sip::srtp::{CryptoAttribute, CryptoSuite, MasterKey, SdesKeys};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = CryptoAttribute::parse(&text);
    if let Ok(offer) = SessionDescription::parse(&text) {
        let _ = sdp::is_hold_offer(&offer);
        for srtp in [false, true] {
            if let Ok(answer) = sdp::answer(&offer, &Capabilities { video: true, srtp, require_srtp: data.len() % 2 == 1 }) {
                let local = LocalMedia {
                    address: "192.0.2.1".parse().expect("static"),
                    audio_port: 4000,
                    video_port: 4002,
                    session_id: 1,
                    version: 1,
                    on_hold: srtp,
                };
                let rendered = answer.render(&local);
                let back = SessionDescription::parse(&rendered);
                assert!(back.is_ok(), "{rendered}");
                // Every key line we write parses back as what we hold.
                for m in back.iter().flat_map(|b| b.media.iter()) {
                    for line in &m.crypto {
                        assert!(CryptoAttribute::parse(line).is_ok(), "{line}");
                    }
                }
                let _ = sdp::answer_again(&offer, &Capabilities { video: true, srtp, require_srtp: data.len() % 2 == 1 }, Some(&answer));
            }
        }
    }
    let remote = "192.0.2.9:5000".parse().expect("static");
    let first = data.first().copied().unwrap_or(0);
    // Fixed keys: the fuzzer's datagrams fail authentication except by a forgery, which is the
    // point; the plain session sees the same bytes.
    let keys = |suite: CryptoSuite| {
        let material = vec![0x5a; suite.key_len() + suite.salt_len()];
        let key = MasterKey::from_material(suite, &material).expect("sized");
        SdesKeys { tag: 1, local: key.clone(), remote: key }
    };
    let srtp = match first % 3 {
        0 => None,
        1 => Some(keys(CryptoSuite::AesCm128HmacSha1_80)),
        _ => Some(keys(CryptoSuite::AeadAes128Gcm)),
    };
    let setup = MediaSetup {
        audio: Some(AudioSetup {
            codec: telecart_core::media::AudioCodec::Opus,
            pt: 111,
            clock: 48_000,
            dtmf_pt: Some(101),
            dtmf_clock: 8000,
            remote,
            rtcp_mux: first & 4 == 4,
            srtp: srtp.clone(),
        }),
        video: Some(VideoSetup { pt: 96, remote, rtcp_mux: true, srtp }),
        send_paused: false,
    };
    let t0 = Instant::now();
    let mut session = MediaSession::new(setup, 7, t0, 0);
    for (i, chunk) in data.chunks(64).enumerate() {
        let stream = if i % 2 == 0 { StreamKind::Audio } else { StreamKind::Video };
        session.handle_receive(t0, stream, i % 3 == 0, remote, chunk);
    }
    session.send_video(data, 0);
    session.handle_timeout(t0 + Duration::from_secs(6));
    while session.poll_event().is_some() {}
    // What we send on a protected stream opens with the same keys (the session is its own peer).
    let echo: Vec<_> = std::iter::from_fn(|| session.poll_transmit()).collect();
    let failures = session.stats().srtp_auth_failures;
    for t in echo {
        session.handle_receive(t0, t.stream, t.rtcp_socket, remote, &t.data);
    }
    assert_eq!(session.stats().srtp_auth_failures, failures, "our own SRTP must verify");
});

//! Any SDP offer through parse and answer (and the answer back through the parser), and any
//! datagram into a call's media session on either socket: errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use telecart_sip::media::{AudioSetup, MediaSession, MediaSetup, StreamKind, VideoSetup};
use telecart_sip::sdp::{self, Capabilities, LocalMedia, SessionDescription};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(offer) = SessionDescription::parse(&text) {
        let _ = sdp::is_hold_offer(&offer);
        for srtp in [false, true] {
            if let Ok(answer) = sdp::answer(&offer, &Capabilities { video: true, srtp }) {
                let local = LocalMedia {
                    address: "192.0.2.1".parse().expect("static"),
                    audio_port: 4000,
                    video_port: 4002,
                    audio_crypto: None,
                    video_crypto: None,
                    session_id: 1,
                    version: 1,
                    on_hold: srtp,
                };
                let rendered = answer.render(&local);
                assert!(SessionDescription::parse(&rendered).is_ok(), "{rendered}");
            }
        }
    }
    let remote = "192.0.2.9:5000".parse().expect("static");
    let setup = MediaSetup {
        audio: Some(AudioSetup {
            codec: telecart_core::media::AudioCodec::Opus,
            pt: 111,
            clock: 48_000,
            dtmf_pt: Some(101),
            remote,
            rtcp_mux: data.first().is_some_and(|b| b & 1 == 1),
        }),
        video: Some(VideoSetup { pt: 96, remote, rtcp_mux: true }),
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
    while session.poll_transmit().is_some() {}
});

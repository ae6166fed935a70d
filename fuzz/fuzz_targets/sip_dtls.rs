//! DTLS-SRTP for SIP media: any text through the `a=fingerprint` and `a=setup` parsers and an
//! offer's DTLS streams through the answerer; any datagrams into a DTLS endpoint in either role
//! (before and after a real handshake with a second endpoint) and into a DTLS-SRTP media
//! session: errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use telecart_sip::dtls::{
    self, DtlsEndpoint, DtlsParams, DtlsRole, Fingerprint, Identity, Setup,
};
use telecart_sip::media::{AudioSetup, MediaSession, MediaSetup, StreamKind};
use telecart_sip::sdp::{self, Capabilities, SessionDescription};

fn identities() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Identity::generate().expect("certificate"),
            Identity::generate().expect("certificate"),
        )
    })
}

/// Two endpoints, handshaken in memory: `a` with keys, to be fed junk after keys.
fn keyed(t0: Instant) -> Option<DtlsEndpoint> {
    let (ia, ib) = identities();
    let mut a = DtlsEndpoint::new(ia, DtlsRole::Client, vec![ib.fingerprint().clone()], t0).ok()?;
    let mut b = DtlsEndpoint::new(ib, DtlsRole::Server, vec![ia.fingerprint().clone()], t0).ok()?;
    for _ in 0..20 {
        while let Some(p) = a.poll_transmit() {
            b.handle_datagram(t0, &p).ok()?;
        }
        while let Some(p) = b.poll_transmit() {
            a.handle_datagram(t0, &p).ok()?;
        }
        if a.is_keyed() {
            return Some(a);
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Fingerprint::parse(&text);
    let _ = Setup::parse(&text);
    if let Ok(offer) = SessionDescription::parse(&text) {
        let caps = Capabilities { video: true, srtp: true, require_srtp: data.len() % 2 == 0 };
        if let Ok(answer) = sdp::answer(&offer, &caps) {
            let _ = sdp::answer_again(&offer, &caps, Some(&answer));
        }
    }
    let (ia, ib) = identities();
    let t0 = Instant::now();
    let datagrams = data.split(|b| *b == 0xff);
    for role in [DtlsRole::Client, DtlsRole::Server] {
        let Ok(mut e) = DtlsEndpoint::new(ia, role, vec![ib.fingerprint().clone()], t0) else {
            continue;
        };
        for (i, d) in datagrams.clone().enumerate() {
            let now = t0 + Duration::from_millis(i as u64 * 300);
            let _ = e.handle_datagram(now, d);
            let _ = e.handle_timeout(now);
            while e.poll_transmit().is_some() {}
            let _ = e.take_keys();
        }
    }
    if let Some(mut a) = keyed(t0) {
        for d in datagrams.clone() {
            let _ = a.handle_datagram(t0, d);
        }
        assert!(a.is_keyed(), "keys stay after junk");
    }
    let remote = "192.0.2.2:4000".parse().expect("static");
    let setup = MediaSetup {
        audio: Some(AudioSetup {
            codec: telecart_core::media::AudioCodec::Pcmu,
            pt: 0,
            clock: 8000,
            dtmf_pt: Some(101),
            dtmf_clock: 8000,
            remote,
            rtcp_mux: data.first().is_some_and(|b| b & 1 == 1),
            srtp: None,
        }),
        video: None,
        send_paused: false,
    };
    let mut session = MediaSession::new(setup, 3, t0, 0);
    let params = DtlsParams {
        setup: Setup::Passive,
        role: DtlsRole::Server,
        local: ia.fingerprint().clone(),
        remote: vec![ib.fingerprint().clone()],
    };
    if session.start_dtls(t0, StreamKind::Audio, &params, ia).is_ok() {
        for (i, d) in datagrams.enumerate() {
            session.handle_receive(t0, StreamKind::Audio, i % 2 == 1, remote, d);
            session.handle_timeout(t0 + Duration::from_secs(i as u64));
            while session.poll_transmit().is_some() {}
            while session.poll_event().is_some() {}
        }
    }
    let _ = dtls::is_dtls(data);
});

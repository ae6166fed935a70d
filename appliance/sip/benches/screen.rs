//! What the UDP screen (`guard` in front of rsipstack) costs per datagram, beside the stack's own
//! parse of the same datagram: the screen parses once more to learn whether the stack would
//! take it, so the "screened" row is the extra work on every message the cart receives.
//!
//! `cargo bench -p telecart-sip --bench screen`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use rsipstack::sip::SipMessage;
use std::hint::black_box;
use telecart_sip::guard::{Screened, screen};

/// baresip 1.0's INVITE through Kamailio (audio and video offer), as the cart receives it.
const INVITE: &str = "INVITE sip:cart@127.0.0.1:5070;transport=udp SIP/2.0\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2f1c.5d1e7a4b000000000000000000000000.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;received=127.0.0.1;branch=z9hG4bK4d0b8f0a3c6e1a2f;rport=5080\r\n\
Contact: <sip:doctor-0x55d0@127.0.0.1:5080;transport=udp>\r\n\
Max-Forwards: 69\r\n\
To: <sip:cart@127.0.0.1>\r\n\
From: <sip:doctor@127.0.0.1>;tag=8e0a3f7c1b2d4e5f\r\n\
Call-ID: 6a1b2c3d4e5f6071\r\n\
CSeq: 40123 INVITE\r\n\
User-Agent: baresip v1.0.0 (x86_64/linux)\r\n\
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER\r\n\
Supported: replaces,norefersub\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 499\r\n\
\r\n\
v=0\r\n\
o=- 3166458491 1862395284 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 10236 RTP/AVP 96 0 8 101\r\n\
b=AS:128\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
m=video 10058 RTP/AVP 97\r\n\
b=AS:2000\r\n\
a=rtpmap:97 H264/90000\r\n\
a=fmtp:97 packetization-mode=1;profile-level-id=42e01f\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtcp-fb:* nack pli\r\n\
a=ssrc:12345678 cname:doctor\r\n";

/// Kamailio's 200 OK to the cart's REGISTER (the commonest datagram on a registered cart).
const REGISTER_OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;rport=5070;branch=z9hG4bK-7c1e2d3f4a5b6c7d;received=127.0.0.1\r\n\
From: <sip:cart@127.0.0.1>;tag=a1b2c3d4\r\n\
To: <sip:cart@127.0.0.1>;tag=0d2a6e4c1f9b8a7e5d3c2b1a0f9e8d7c-5a1b\r\n\
Call-ID: 9c7e3a1b-5d2f-4e6a-8b0c-1d2e3f4a5b6c\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:cart@127.0.0.1:5070;transport=udp>;expires=600\r\n\
Server: kamailio (5.6.3 (x86_64/linux))\r\n\
Content-Length: 0\r\n\
\r\n";

fn bench(c: &mut Criterion) {
    for (name, message) in [
        ("INVITE with SDP", INVITE),
        ("200 OK to REGISTER", REGISTER_OK),
    ] {
        let bytes = message.as_bytes();
        assert!(SipMessage::try_from(bytes).is_ok(), "{name} must parse");
        assert_eq!(screen(bytes, true, "0badcafe"), Screened::Pass);
        c.bench_function(&format!("{name}: the stack's parse"), |b| {
            b.iter(|| SipMessage::try_from(black_box(bytes)).is_ok())
        });
        c.bench_function(&format!("{name}: the screen (parse + guard)"), |b| {
            b.iter(|| {
                let parsed = SipMessage::try_from(black_box(bytes)).is_ok();
                screen(black_box(bytes), parsed, "0badcafe")
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

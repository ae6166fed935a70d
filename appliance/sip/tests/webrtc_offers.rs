//! Broken WebRTC offers (browser softphones) against the cart's SIP port while it is registered
//! with a real Kamailio: no fingerprint, no ICE and an unusable fingerprint, only codecs the cart cannot send
//! get 488 with the reason in a `Warning` before anything rings; a WebRTC offer the cart's
//! WebRTC stack refuses gets its status after ringing; nothing panics and the endpoint stays
//! registered. (The answered path is `appliance/runtime/tests/sip_softphone.rs`, with JsSIP.)

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use telecart_sip::{CallRecord, CartPort, RingVerdict, WebRtcAnswering, WebRtcRequest};

/// No camera, no microphone: these calls never get media.
struct NoMedia;

impl telecart_sip::MediaPort for NoMedia {
    fn video(&self) -> Option<tokio::sync::mpsc::Receiver<Arc<telecart_core::EncodedVideo>>> {
        None
    }
    fn microphone(&self) -> Option<tokio::sync::mpsc::Receiver<Arc<telecart_core::AudioFrame>>> {
        None
    }
    fn request_keyframe(&self) {}
}

/// A cart that answers every ring and whose WebRTC stack refuses every offer with 488; it
/// counts rings and WebRTC requests.
#[derive(Default)]
struct RefusingCart {
    rings: AtomicU32,
    webrtc: AtomicU32,
}

impl CartPort for RefusingCart {
    fn ring(&self, _caller: &str, _auto: bool) -> (u64, RingVerdict) {
        let n = self.rings.fetch_add(1, Ordering::SeqCst);
        (u64::from(n) + 1, Box::pin(async { Ok(()) }))
    }
    fn connected(&self, call: Option<u64>, _record: &CallRecord) -> u64 {
        call.unwrap_or(99)
    }
    fn ended(&self, _call: Option<u64>, _record: &CallRecord) {}
    fn answer_webrtc(&self, _call: Option<u64>, _request: WebRtcRequest) -> WebRtcAnswering {
        self.webrtc.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err((488, "offer refused by the WebRTC stack".to_string())) })
    }
}

const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n\
a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host\r\n\
a=ice-ufrag:Bq3f\r\na=ice-pwd:7mvBK1f0ZbBxK2Gqfh0f6N6G\r\n\
a=fingerprint:sha-256 5B:2B:5E:DE:80:10:43:2F:4E:25:4C:23:43:3C:0F:28:92:19:1E:A5:37:5D:FC:33:05:B3:2B:3C:4F:25:3F:7B\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

fn invite(port: u16, call: &str, body: &str) -> String {
    format!(
        "INVITE sip:cart1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call}\r\n\
From: <sip:doctor@127.0.0.1>;tag=f{call}\r\nTo: <sip:cart1@127.0.0.1>\r\nCall-ID: {call}\r\n\
CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:doctor@127.0.0.1:{port}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The first final response to `msg`.
fn final_response(sock: &UdpSocket, to: std::net::SocketAddr, msg: &str) -> Option<String> {
    sock.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = vec![0; 65_535];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if !text.starts_with("SIP/2.0 1") {
                return Some(text);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_webrtc_offers_get_488_and_nothing_rings() {
    if !have("kamailio") {
        return;
    }
    let k = Kamailio::start(&[("cart1", "pw")], "MD5");
    let cart = Arc::new(RefusingCart::default());
    let port: Arc<dyn CartPort> = cart.clone();
    let config = sip_config(k.udp, "udp", &["doctor@127.0.0.1"]);
    let ep = telecart_sip::start_with(config, "pw".into(), Arc::new(NoMedia), Some(port))
        .await
        .unwrap();
    let status = ep.status.clone();
    assert!(
        wait_until(Duration::from_secs(10), || status.borrow().registration
            == "registered")
        .await,
        "{:?}\n{}",
        status.borrow(),
        k.peer.log_text()
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = sock.local_addr().unwrap().port();
    let without = |prefix: &str| -> String {
        OFFER
            .lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\r\n"))
            .collect()
    };
    let cases = [
        ("no fingerprint", without("a=fingerprint"), "fingerprint"),
        // Without ICE the offer is plain DTLS-SRTP, answered on the cart's own RTP path
        // (`tests/dtls_srtp.rs`); a fingerprint that path cannot check is refused there.
        (
            "no ICE credentials and a sha-1 fingerprint",
            without("a=ice-").replace(
                "sha-256 5B:2B:5E:DE:80:10:43:2F:4E:25:4C:23:43:3C:0F:28:92:19:1E:A5:37:5D:FC:33:05:B3:2B:3C:4F:25:3F:7B",
                "sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB",
            ),
            "fingerprint hash sha-1",
        ),
        (
            "only PCMU over DTLS",
            OFFER
                .replace("SAVPF 111", "SAVPF 0")
                .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:0 PCMU/8000"),
            "no common codec",
        ),
    ];
    for (i, (what, body, reason)) in cases.iter().enumerate() {
        let reply = final_response(&sock, ep.local_addr, &invite(me, &format!("w{i}"), body))
            .unwrap_or_else(|| panic!("{what}: no answer"));
        println!("{what}: {}", reply.lines().next().unwrap_or(""));
        assert!(reply.starts_with("SIP/2.0 488"), "{what}: {reply}");
        let warning = reply
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("warning:"))
            .unwrap_or_default();
        assert!(warning.contains(reason), "{what}: {reply}");
    }
    assert_eq!(cart.rings.load(Ordering::SeqCst), 0, "nothing rang");

    // A well-formed WebRTC offer rings and is handed to the WebRTC stack, whose refusal is
    // the INVITE's final answer.
    let reply = final_response(&sock, ep.local_addr, &invite(me, "ok1", OFFER)).unwrap();
    println!(
        "refused by the stack: {}",
        reply.lines().next().unwrap_or("")
    );
    assert!(reply.starts_with("SIP/2.0 488"), "{reply}");
    assert_eq!(cart.rings.load(Ordering::SeqCst), 1);
    assert_eq!(cart.webrtc.load(Ordering::SeqCst), 1);
    assert!(wait_until(Duration::from_secs(3), || status.borrow().call.is_none()).await);
    assert_eq!(status.borrow().registration, "registered");
    assert_eq!(status.borrow().calls_rejected, 4);
    ep.shutdown().await;
}

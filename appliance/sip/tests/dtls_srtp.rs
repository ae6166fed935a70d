//! DTLS-SRTP without ICE (RFC 5763/5764) with real peers. aiortc's RTCDtlsTransport (OpenSSL
//! DTLS, ECDSA certificate, libsrtp) as a SIP phone calls the cart: both DTLS associations come
//! up with the certificates the SDP fingerprints name, its tone is decrypted and heard at the
//! cart, the cart's audio and H.264 are decrypted and decoded at the peer, BYE ends the call.
//! baresip 1.0 with `;mediaenc=dtls_srtp` and the cart call each other through Kamailio: the
//! offer reaches the cart's own RTP path and is answered (and baresip takes the cart's offer),
//! but baresip's RSA certificate cannot meet the cart's ECDSA-only DTLS (see
//! `assert_rsa_peer_refused`), so the cart ends those calls with the reason and sends nothing
//! in the clear. Also: with `srtp = "mandatory"` a plain-RTP call from baresip is refused with
//! 488 and a `Warning` saying why, before anything rings. Answer time (INVITE to 200 OK at the
//! cart) and handshake time are printed.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use telecart_core::config::{SipSrtp, SipSrtpKeying};
use telecart_sip::{CallRecord, CartPort, RingVerdict, SipCommand};

const CART_PASSWORD: &str = "cart-secret-1";
const DOCTOR_PASSWORD: &str = "doctor-secret-2";

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("cart1", CART_PASSWORD), ("doctor", DOCTOR_PASSWORD)]
}

fn peers_present() -> bool {
    have("kamailio") && have("baresip")
}

/// The lines of baresip's log that speak of DTLS or SRTP (what it negotiated, or why not).
fn dtls_lines(doctor: &Baresip) -> String {
    doctor
        .peer
        .log_text()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("dtls") || l.contains("srtp")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cart that answers every ring and keeps the record of each call that ended.
#[derive(Default)]
struct RecordingCart {
    ended: Mutex<Vec<CallRecord>>,
}

impl CartPort for RecordingCart {
    fn ring(&self, _caller: &str, _auto: bool) -> (u64, RingVerdict) {
        (1, Box::pin(async { Ok(()) }))
    }

    fn connected(&self, call: Option<u64>, _record: &CallRecord) -> u64 {
        call.unwrap_or(1)
    }

    fn ended(&self, _call: Option<u64>, record: &CallRecord) {
        self.ended.lock().unwrap().push(record.clone());
    }
}

/// Why baresip 1.0's dtls_srtp cannot meet the cart (nor any DTLS stack without RSA): libre
/// makes its DTLS certificate with `tls_set_selfsigned_rsa`, and dimpl speaks ECDSA only
/// (ECDHE_ECDSA suites, ECDSA signatures; RSA is one of its stated non-goals). As DTLS server
/// baresip finds no cipher suite for its RSA key and answers the cart's ClientHello with a
/// handshake_failure alert; as DTLS client it has no certificate that fits the ECDSA schemes of
/// the cart's CertificateRequest and sends none, and without the peer's certificate there is
/// nothing to check its SDP fingerprint against. Either way the cart must end the call with
/// the reason and never send media in the clear; that is what these two tests hold.
fn assert_rsa_peer_refused(what: &str, cart: &RecordingCart, doctor: &Baresip, expect: &str) {
    let records = cart.ended.lock().unwrap().clone();
    println!("{what}: the cart's call record: {records:?}");
    println!("{what}: baresip DTLS/SRTP log:\n{}", dtls_lines(doctor));
    let record = records.last().expect("the call ended");
    assert!(
        record.reason.starts_with("media: ") && record.reason.contains(expect),
        "{what}: {record:?}"
    );
    let m = &record.media;
    assert_eq!(
        (m.audio_packets_received, m.dtls_handshake_ms),
        (0, None),
        "{what}: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_1_0_calling_with_dtls_srtp_is_answered_then_ended_for_its_rsa_certificate() {
    if !peers_present() {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let cart = Arc::new(RecordingCart::default());
    let port: Arc<dyn CartPort> = cart.clone();
    let ep = telecart_sip::start_with(
        sip_config(k.udp, "udp", &["doctor@127.0.0.1"]),
        CART_PASSWORD.into(),
        PipelineMedia::start(),
        Some(port),
    )
    .await
    .unwrap();
    let status = ep.status.clone();
    expect_registered(&status, &k.peer).await;
    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, ";mediaenc=dtls_srtp");
    assert!(
        doctor.wait_registered(Duration::from_secs(10)),
        "{}",
        doctor.peer.log_text()
    );
    let dialed = Instant::now();
    doctor.command("dial", "sip:cart1@127.0.0.1");
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "the cart did not answer baresip's DTLS-SRTP offer: {:?}\n{}",
        doctor.events(),
        k.peer.log_text()
    );
    println!(
        "baresip -> cart: call set up in {:.0} ms, INVITE to 200 OK at the cart {:.1} ms",
        dialed.elapsed().as_secs_f64() * 1000.0,
        status.borrow().last_answer_ms.unwrap_or_default()
    );
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(10))
            .is_some(),
        "the failed handshake did not end the call"
    );
    assert!(wait_until(Duration::from_secs(3), || status.borrow().call.is_none()).await);
    assert!(
        doctor.wait_log("dtls_accept failed", Duration::from_secs(1)),
        "{}",
        dtls_lines(&doctor)
    );
    // 40: handshake_failure, baresip's answer to ECDSA-only cipher suites.
    assert_rsa_peer_refused(
        "baresip -> cart",
        &cart,
        &doctor,
        "DTLS failed: security error: received fatal alert: description=40",
    );
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_offering_dtls_srtp_to_baresip_1_0_ends_the_call_for_its_missing_certificate() {
    if !peers_present() {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let cart = Arc::new(RecordingCart::default());
    let port: Arc<dyn CartPort> = cart.clone();
    let mut config = sip_config(k.udp, "udp", &[]);
    config.srtp = SipSrtp::Mandatory;
    config.srtp_keying = SipSrtpKeying::Dtls;
    let ep = telecart_sip::start_with(
        config,
        CART_PASSWORD.into(),
        PipelineMedia::start(),
        Some(port),
    )
    .await
    .unwrap();
    let status = ep.status.clone();
    expect_registered(&status, &k.peer).await;
    let doctor = Baresip::start_answering(
        "doctor",
        DOCTOR_PASSWORD,
        k.udp,
        ";mediaenc=dtls_srtp",
        "auto",
    );
    assert!(
        doctor.wait_registered(Duration::from_secs(10)),
        "{}",
        doctor.peer.log_text()
    );
    ep.commands
        .send(SipCommand::Call("sip:doctor@127.0.0.1".into()))
        .await
        .unwrap();
    // baresip answers the cart's UDP/TLS/RTP/SAVPF offer (so the offer is one it takes) and
    // starts its DTLS client; the cart, DTLS server, gets no certificate and hangs up.
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "baresip did not take the cart's DTLS-SRTP offer: {:?}\n{}",
        doctor.events(),
        doctor.peer.log_text()
    );
    assert!(
        doctor.wait_log("dtls connect to", Duration::from_secs(2)),
        "{}",
        dtls_lines(&doctor)
    );
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(10))
            .is_some(),
        "the cart did not end the call"
    );
    assert!(
        k.peer.log_text().contains("in-dialog BYE to sip:doctor"),
        "{}",
        k.peer.log_text()
    );
    assert_rsa_peer_refused(
        "cart -> baresip",
        &cart,
        &doctor,
        "DTLS failed: certificate error: no client certificate received",
    );
    ep.shutdown().await;
}

/// A plain-RTP INVITE straight to the cart's SIP port; returns its final response.
fn invite_final_response(cart: std::net::SocketAddr, body: &str) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = sock.local_addr().unwrap().port();
    let msg = format!(
        "INVITE sip:cart1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKplain1\r\n\
         From: <sip:doctor@127.0.0.1>;tag=plain1\r\nTo: <sip:cart1@127.0.0.1>\r\nCall-ID: plain-rtp-1\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:doctor@127.0.0.1:{me}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.send_to(msg.as_bytes(), cart).unwrap();
    let mut buf = vec![0; 65_535];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if !text.starts_with("SIP/2.0 1") {
                return text;
            }
        }
    }
    panic!("no final response to the plain INVITE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_mandatory_refuses_a_plain_rtp_call_with_488_before_it_rings() {
    if !peers_present() {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let media = PipelineMedia::start();
    let mut config = sip_config(k.udp, "udp", &["doctor@127.0.0.1"]);
    config.srtp = SipSrtp::Mandatory;
    let ep = telecart_sip::start(config, CART_PASSWORD.into(), media.clone())
        .await
        .unwrap();
    let status = ep.status.clone();
    expect_registered(&status, &k.peer).await;
    // baresip with plain RTP (no mediaenc) through Kamailio.
    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, "");
    assert!(
        doctor.wait_registered(Duration::from_secs(10)),
        "{}",
        doctor.peer.log_text()
    );
    doctor.command("dial", "sip:cart1@127.0.0.1");
    let closed = doctor.wait_event("CALL_CLOSED", Duration::from_secs(10));
    println!("plain baresip call: {closed:?}");
    let closed = closed.expect("baresip's call was not refused");
    assert!(
        closed["param"].as_str().unwrap_or_default().contains("488"),
        "{closed:?}\n{}",
        doctor.peer.log_text()
    );
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_millis(100))
            .is_none()
            && doctor
                .wait_event("CALL_RINGING", Duration::from_millis(100))
                .is_none(),
        "{:?}",
        doctor.events()
    );
    // The same kind of offer sent straight to the cart: 488 and the reason in a Warning.
    let plain = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    let reply = invite_final_response(ep.local_addr, plain);
    println!("{}", reply.lines().next().unwrap_or_default());
    assert!(reply.starts_with("SIP/2.0 488"), "{reply}");
    let warning = reply
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("warning:"))
        .unwrap_or_default();
    println!("{warning}");
    assert!(warning.contains("SRTP is mandatory"), "{reply}");
    assert_eq!(status.borrow().calls_rejected, 2, "{:?}", status.borrow());
    assert_eq!(status.borrow().calls_answered, 0);
    ep.shutdown().await;
}

/// aiortc's RTCDtlsTransport (OpenSSL, ECDSA P-256) as a SIP phone with DTLS-SRTP and no ICE
/// (`tests/peers/sip/aiortc_dtls_peer.py`): its INVITE straight to the cart, audio and video
/// DTLS associations with the cart as DTLS client, a 440 Hz PCMU tone decrypted at the cart,
/// the cart's PCMU and H.264 decrypted by libsrtp and decoded by FFmpeg at the peer, its BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_calls_the_cart_with_dtls_srtp_without_ice() {
    let python = repo_file(".work/venv/bin/python");
    if !have("kamailio") {
        return;
    }
    if !python.exists() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: {} is missing (tests/setup.sh makes it) !!!!!!!!\n",
            python.display()
        );
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let media = PipelineMedia::start();
    let ep = telecart_sip::start(
        sip_config(k.udp, "udp", &["doctor@127.0.0.1"]),
        CART_PASSWORD.into(),
        media.clone(),
    )
    .await
    .unwrap();
    let status = ep.status.clone();
    expect_registered(&status, &k.peer).await;
    let cart = ep.local_addr.to_string();
    let peer = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(repo_file("tests/peers/sip/aiortc_dtls_peer.py"))
            .args([cart.as_str(), "6"])
            .output()
            .unwrap()
    });
    // While the call runs: what the cart heard.
    let mut heard = None;
    let mut cart_media = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !peer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = status.borrow().clone();
        if s.call.is_some() && s.media.audio_packets_received > 100 {
            heard = media.played_frequency(1.0);
            cart_media = Some(s.media.clone());
        }
    }
    let out = peer.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("aiortc peer: {e}\n{stderr}"));
    println!("aiortc peer: {report}");
    let s = status.borrow().clone();
    println!(
        "aiortc -> cart: INVITE to 200 OK at the cart {:?} ms (at the peer {:.1} ms); DTLS \
         handshake at the cart {:?} ms (at the peer {:.1} ms, both streams)",
        s.last_answer_ms,
        report["answer_ms"].as_f64().unwrap_or_default(),
        s.media.dtls_handshake_ms,
        report["dtls_ms"].as_f64().unwrap_or_default()
    );
    assert_eq!(report["cart_setup"], "active", "{report}");
    assert_eq!(
        report["dtls_states"],
        serde_json::json!({"audio": "connected", "video": "connected"}),
        "{report}\n{stderr}"
    );
    let m = cart_media.expect("the cart received the peer's audio");
    println!("aiortc -> cart: cart media during the call {m:?}");
    assert!(m.dtls_handshake_ms.is_some());
    assert_eq!((m.srtp_auth_failures, m.srtp_replayed), (0, 0), "{m:?}");
    let (hz, _) = heard.expect("audio played at the cart");
    println!("aiortc -> cart: the peer's tone decrypted and decoded at the cart: {hz:.1} Hz");
    assert!((430.0..450.0).contains(&hz), "heard {hz} Hz");
    let peer_hz = report["audio_hz"].as_f64().unwrap_or_default();
    assert!(
        report["audio_received"].as_u64().unwrap_or_default() > 100,
        "{report}"
    );
    assert!(
        (950.0..1050.0).contains(&peer_hz),
        "the cart's 1 kHz tone: {report}"
    );
    assert!(
        report["video_frames_decoded"].as_u64().unwrap_or_default() > 10,
        "{report}"
    );
    assert!(
        report["bye"]
            .as_str()
            .unwrap_or_default()
            .starts_with("SIP/2.0 200"),
        "{report}"
    );
    assert!(
        wait_until(Duration::from_secs(3), || status.borrow().call.is_none()).await,
        "{:?}",
        status.borrow()
    );
    ep.shutdown().await;
}

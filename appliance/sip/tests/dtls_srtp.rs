//! DTLS-SRTP without ICE (RFC 5763/5764) with a real peer: baresip 1.0 with
//! `;mediaenc=dtls_srtp` (libre's DTLS on OpenSSL) and the cart call each other through
//! Kamailio. Checked: the offer goes to the cart's own RTP path (not the WebRTC stack), the
//! handshake runs on the media ports with the certificates the SDP fingerprints name, baresip's
//! tone is decrypted and heard at the cart, baresip decrypts the cart's audio and decodes its
//! H.264, and BYE ends the call. Also: with `srtp = "mandatory"` a plain-RTP call from baresip
//! is refused with 488 and a `Warning` saying why, before anything rings. Answer time
//! (INVITE to 200 OK at the cart) and the handshake time are printed.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use telecart_core::config::{SipSrtp, SipSrtpKeying};
use telecart_sip::SipCommand;

const CART_PASSWORD: &str = "cart-secret-1";
const DOCTOR_PASSWORD: &str = "doctor-secret-2";

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("cart1", CART_PASSWORD), ("doctor", DOCTOR_PASSWORD)]
}

fn peers_present() -> bool {
    have("kamailio") && have("baresip")
}

async fn registered(status: &tokio::sync::watch::Receiver<telecart_sip::SipStatus>) {
    assert!(
        wait_until(Duration::from_secs(10), || status.borrow().registration
            == "registered")
        .await,
        "{:?}",
        status.borrow()
    );
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

/// An established DTLS-SRTP call, checked at both ends after 6 s of media: keys agreed, the
/// tone decrypted at the cart, the cart's audio and video sent and nothing refused but
/// baresip's clear RTCP APP packets.
async fn assert_dtls_media_both_ways(
    what: &str,
    status: &tokio::sync::watch::Receiver<telecart_sip::SipStatus>,
    media: &PipelineMedia,
    doctor: &Baresip,
) {
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = status.borrow().clone();
    let m = &s.media;
    println!(
        "{what}: DTLS handshake {:?} ms; cart received {} audio packets, sent {} audio / {} video \
         frames; unkeyed drops {}, auth failures {}, replays {}, DTLS errors after keys {}",
        m.dtls_handshake_ms,
        m.audio_packets_received,
        m.audio_packets_sent,
        m.video_frames_sent,
        m.dtls_unkeyed_drops,
        m.srtp_auth_failures,
        m.srtp_replayed,
        m.dtls_errors_after_keys
    );
    println!("{what}: baresip DTLS/SRTP log:\n{}", dtls_lines(doctor));
    assert_eq!(
        s.call.as_ref().map(|c| c.1),
        Some("answered"),
        "{what}: {s:?}"
    );
    assert!(m.dtls_handshake_ms.is_some(), "{what}: no DTLS keys: {s:?}");
    assert!(m.audio_packets_received > 100, "{what}: {s:?}");
    assert!(m.audio_packets_sent > 100, "{what}: {s:?}");
    assert!(m.video_frames_sent > 20, "{what}: {s:?}");
    assert!(m.srtp_auth_failures <= 2, "{what}: {s:?}");
    assert_eq!(
        (m.srtp_replayed, m.srtp_protect_failures),
        (0, 0),
        "{what}: {s:?}"
    );
    let (hz, _) = media.played_frequency(2.0).expect("audio from baresip");
    println!("{what}: baresip's tone decrypted and decoded at the cart: {hz:.1} Hz");
    assert!((430.0..450.0).contains(&hz), "{what}: heard {hz} Hz");
}

/// After the call: baresip opened every SRTP packet of the cart and decoded its H.264.
fn assert_baresip_decoded(what: &str, doctor: &Baresip) {
    let log = doctor.peer.log_text();
    let stats = log
        .lines()
        .find(|l| l.contains("avcodec: decoder stats"))
        .unwrap_or_default()
        .to_string();
    println!("{what}: baresip video {stats}");
    assert!(
        stats.contains("lost_fragments:0") && !stats.contains("keyframes:0"),
        "{what}: baresip did not decode the cart's H.264: {stats:?}\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_the_cart_with_dtls_srtp_without_ice() {
    if !peers_present() {
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
    registered(&status).await;
    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, ";mediaenc=dtls_srtp");
    assert!(
        doctor.wait_registered(Duration::from_secs(10)),
        "{}",
        doctor.peer.log_text()
    );
    let dialed = Instant::now();
    doctor.command("dial", "sip:cart1@127.0.0.1");
    let established = doctor.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert!(
        established.is_some(),
        "events {:?}\nbaresip:\n{}\nkamailio:\n{}",
        doctor.events(),
        doctor.peer.log_text(),
        k.peer.log_text()
    );
    let setup_ms = dialed.elapsed().as_secs_f64() * 1000.0;
    let answer_ms = status.borrow().last_answer_ms.unwrap();
    println!(
        "baresip -> cart (dtls_srtp): call set up in {setup_ms:.0} ms, INVITE to 200 OK at the \
         cart {answer_ms:.1} ms"
    );
    assert!(
        doctor
            .wait_event("CALL_RTPESTAB", Duration::from_secs(10))
            .is_some()
            || doctor.wait_log("dtls_srtp", Duration::from_secs(1)),
        "{}",
        dtls_lines(&doctor)
    );
    assert_dtls_media_both_ways("baresip -> cart", &status, &media, &doctor).await;
    doctor.command("hangup", "");
    assert!(
        wait_until(Duration::from_secs(5), || status.borrow().call.is_none()).await,
        "the caller's BYE did not end the call: {:?}",
        status.borrow()
    );
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some()
    );
    assert_baresip_decoded("baresip -> cart", &doctor);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_calls_baresip_offering_dtls_srtp() {
    if !peers_present() {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let media = PipelineMedia::start();
    let mut config = sip_config(k.udp, "udp", &[]);
    config.srtp = SipSrtp::Mandatory;
    config.srtp_keying = SipSrtpKeying::Dtls;
    let ep = telecart_sip::start(config, CART_PASSWORD.into(), media.clone())
        .await
        .unwrap();
    let status = ep.status.clone();
    registered(&status).await;
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
    let dialed = Instant::now();
    ep.commands
        .send(SipCommand::Call("sip:doctor@127.0.0.1".into()))
        .await
        .unwrap();
    let answered = wait_until(Duration::from_secs(10), || {
        status.borrow().call.as_ref().map(|c| c.1) == Some("answered")
    })
    .await;
    assert!(
        answered,
        "{:?}\nbaresip:\n{}\nkamailio:\n{}",
        status.borrow(),
        doctor.peer.log_text(),
        k.peer.log_text()
    );
    println!(
        "cart -> baresip (dtls): answered in {:.0} ms",
        dialed.elapsed().as_secs_f64() * 1000.0
    );
    assert_dtls_media_both_ways("cart -> baresip", &status, &media, &doctor).await;
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some(),
        "the cart's BYE did not reach baresip"
    );
    assert_baresip_decoded("cart -> baresip", &doctor);
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
    registered(&status).await;
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
    registered(&status).await;
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

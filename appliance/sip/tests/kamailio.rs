//! The cart registers with a real Kamailio (digest MD5 and SHA-256, qop=auth, over UDP and TCP)
//! and answers baresip, the specialist's phone, calling through it: policy, SDP, audio both
//! ways, H.264 to baresip, DTMF, hang-up from either side.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use telecart_sip::{SipCommand, SipStatus};

const CART_PASSWORD: &str = "cart-secret-1";
const DOCTOR_PASSWORD: &str = "doctor-secret-2";

fn users() -> Vec<(&'static str, &'static str)> {
    vec![
        ("cart1", CART_PASSWORD),
        ("doctor", DOCTOR_PASSWORD),
        ("intruder", "x"),
    ]
}

struct NoMedia;

impl telecart_sip::MediaPort for NoMedia {
    fn video(&self) -> Option<tokio::sync::mpsc::Receiver<Arc<telecart_core::EncodedVideo>>> {
        None
    }
    fn microphone(&self) -> Option<tokio::sync::mpsc::Receiver<Arc<telecart_core::AudioFrame>>> {
        None
    }
    fn request_keyframe(&self) {}
    fn play(&self, _: telecart_core::AudioFrame) {}
}

async fn registered(
    status: &mut tokio::sync::watch::Receiver<SipStatus>,
    timeout: Duration,
) -> SipStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status.borrow().clone();
        if s.registration == "registered" || Instant::now() > deadline {
            return s;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), status.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_digest_md5_and_sha256_over_udp_and_tcp() {
    if !have("kamailio") {
        return;
    }
    for algorithm in ["MD5", "SHA-256"] {
        for transport in ["udp", "tcp"] {
            let k = Kamailio::start(&users(), algorithm);
            let port = if transport == "udp" { k.udp } else { k.tcp };
            let started = Instant::now();
            let ep = telecart_sip::start(
                sip_config(port, transport, &[]),
                CART_PASSWORD.into(),
                Arc::new(NoMedia),
            )
            .await
            .unwrap();
            let mut status = ep.status.clone();
            let s = registered(&mut status, Duration::from_secs(10)).await;
            assert_eq!(
                s.registration,
                "registered",
                "{algorithm}/{transport}: {s:?}\n{}",
                k.peer.log_text()
            );
            println!(
                "registered {algorithm} over {transport} in {:.1} ms (REGISTER round trips {:.1} ms)",
                started.elapsed().as_secs_f64() * 1000.0,
                s.last_register_ms.unwrap()
            );
            let log = k.peer.log_text();
            assert!(
                log.contains(&format!("REGISTER ok cart1 from 127.0.0.1")),
                "{log}"
            );
            ep.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_failure_with_backoff_not_a_loop() {
    if !have("kamailio") {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let ep = telecart_sip::start(
        sip_config(k.udp, "udp", &[]),
        "wrong".into(),
        Arc::new(NoMedia),
    )
    .await
    .unwrap();
    let mut status = ep.status.clone();
    let s = registered(&mut status, Duration::from_secs(3)).await;
    assert_eq!(s.registration, "failed", "{s:?}");
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("401"),
        "{s:?}"
    );
    // Backoff: 1 s then 2 s, so in 3 s at most three REGISTER transactions (each with one
    // authenticated retry) reached Kamailio, not a tight loop.
    let challenges = k.peer.log_text().matches("REGISTER ok").count();
    assert_eq!(challenges, 0);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_the_cart_through_kamailio_audio_both_ways_and_video() {
    if !have("kamailio") || !have("baresip") {
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
    let mut status = ep.status.clone();
    let s = registered(&mut status, Duration::from_secs(10)).await;
    assert_eq!(s.registration, "registered", "{s:?}");

    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, "");
    assert!(
        doctor
            .wait_event("REGISTER_OK", Duration::from_secs(10))
            .is_some(),
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
    println!("call set up in {setup_ms:.0} ms (INVITE to 200 OK at the cart {answer_ms:.1} ms)");

    // Let media flow, then check both directions.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = status.borrow().clone();
    assert_eq!(s.call.as_ref().map(|c| c.1), Some("answered"), "{s:?}");
    assert!(s.media.audio_packets_received > 100, "{s:?}");
    assert!(s.media.audio_packets_sent > 100, "{s:?}");
    assert!(s.media.video_frames_sent > 20, "{s:?}");
    assert_eq!(s.media.wrong_source, 0);
    let (hz, rate) = media.played_frequency(2.0).expect("audio from baresip");
    println!("baresip's tone arrives at {hz:.1} Hz ({rate} Hz PCM)");
    assert!((430.0..450.0).contains(&hz), "ausine is 440 Hz, heard {hz}");

    doctor.command("callstat", "");
    let stat = doctor
        .wait_response("callstat", Duration::from_secs(3))
        .unwrap_or_default();
    println!("baresip callstat:\n{stat}");

    // DTMF from the doctor's keypad reaches the cart.
    doctor.command("sndcode", "5");
    let got = wait_until(Duration::from_secs(3), || {
        status.borrow().dtmf_received.contains('5')
    })
    .await;
    println!("dtmf: {:?}", status.borrow().dtmf_received);

    // The doctor hangs up: the cart's call ends.
    doctor.command("hangup", "");
    assert!(
        wait_until(Duration::from_secs(5), || status.borrow().call.is_none()).await,
        "{:?}",
        status.borrow()
    );
    let log = doctor.peer.log_text();
    let video_decoded = log.contains("h264") || log.contains("H264");
    println!("baresip video decoder mentioned: {video_decoded}");
    let _ = got;
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_not_allowed_are_refused_with_403_and_cart_hangs_up_with_bye() {
    if !have("kamailio") || !have("baresip") {
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
    let mut status = ep.status.clone();
    assert_eq!(
        registered(&mut status, Duration::from_secs(10))
            .await
            .registration,
        "registered"
    );

    let mut intruder = Baresip::start("intruder", "x", k.udp, "");
    assert!(
        intruder
            .wait_event("REGISTER_OK", Duration::from_secs(10))
            .is_some()
    );
    intruder.command("dial", "sip:cart1@127.0.0.1");
    let closed = intruder
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .expect("refused");
    assert!(closed.to_string().contains("403"), "{closed}");
    assert_eq!(status.borrow().calls_rejected, 1);
    drop(intruder);

    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, "");
    assert!(
        doctor
            .wait_event("REGISTER_OK", Duration::from_secs(10))
            .is_some()
    );
    doctor.command("dial", "sip:cart1@127.0.0.1");
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some(),
        "{:?}",
        doctor.events()
    );
    ep.shutdown().await;
}

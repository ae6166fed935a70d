//! The cart registers with a real Kamailio (digest MD5 and SHA-256, qop=auth, over UDP and TCP)
//! and answers baresip, the specialist's phone, calling through it: policy, SDP, audio both
//! ways, H.264 to baresip, DTMF, hang-up from either side.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use telecart_sip::SipCommand;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_digest_md5_and_sha256_over_udp_and_tcp() {
    if !have("kamailio") {
        return;
    }
    // SHA-256 (RFC 8760): rsipstack 0.7.14 cannot parse Kamailio's `algorithm=SHA-256`
    // challenge, so the driver answers it with crate::digest.
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
            let status = ep.status.clone();
            let s = registered_within(&status, Duration::from_secs(10)).await;
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
                log.contains("REGISTER ok cart1 from 127.0.0.1")
                    && log.contains(&format!("proto {transport}")),
                "{log}"
            );
            ep.shutdown().await;
            // Shutting down unregisters (Expires: 0) before the transport closes.
            let log = k.peer.log_text();
            assert_eq!(
                log.matches("REGISTER ok cart1").count(),
                2,
                "{algorithm}/{transport}: no unregister\n{log}"
            );
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
    let status = ep.status.clone();
    let s = registered_within(&status, Duration::from_secs(3)).await;
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
    let status = ep.status.clone();
    let s = registered_within(&status, Duration::from_secs(10)).await;
    assert_eq!(s.registration, "registered", "{s:?}");

    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, "");
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

    // The doctor hangs up: baresip's BYE, relayed by Kamailio along the Record-Route, ends
    // the cart's call.
    doctor.command("hangup", "");
    let ended = wait_until(Duration::from_secs(5), || status.borrow().call.is_none()).await;
    assert!(
        ended,
        "the caller's BYE did not end the cart's call: {:?}\nkamailio:\n{}",
        status.borrow(),
        k.peer.log_text()
    );
    assert!(
        k.peer.log_text().contains("in-dialog BYE to sip:cart1@"),
        "{}",
        k.peer.log_text()
    );
    let log = doctor.peer.log_text();
    // baresip's avcodec prints its decoder's count of key frames when the call ends.
    let stats = log
        .lines()
        .find(|l| l.contains("avcodec: decoder stats"))
        .unwrap_or_default()
        .to_string();
    println!("baresip: {stats}");
    assert!(
        stats.contains("lost_fragments:0") && !stats.contains("keyframes:0"),
        "baresip did not decode the cart's H.264: {stats:?}\n{log}"
    );
    let _ = got;
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_not_allowed_are_refused_with_403_and_allowed_ones_answered() {
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
    let status = ep.status.clone();
    assert_eq!(
        registered_within(&status, Duration::from_secs(10))
            .await
            .registration,
        "registered"
    );

    let mut intruder = Baresip::start("intruder", "x", k.udp, "");
    assert!(intruder.wait_registered(Duration::from_secs(10)));
    intruder.command("dial", "sip:cart1@127.0.0.1");
    let closed = intruder
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .expect("refused");
    assert!(closed.to_string().contains("403"), "{closed}");
    assert_eq!(status.borrow().calls_rejected, 1);
    drop(intruder);

    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, "");
    assert!(doctor.wait_registered(Duration::from_secs(10)));
    doctor.command("dial", "sip:cart1@127.0.0.1");
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The cart hangs up: its BYE follows the route set to baresip.
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some(),
        "the cart's BYE did not reach baresip: {:?}\nkamailio:\n{}",
        doctor.events(),
        k.peer.log_text()
    );
    assert!(
        k.peer.log_text().contains("in-dialog BYE to sip:doctor"),
        "{}",
        k.peer.log_text()
    );
    assert!(ep.status.borrow().call.is_none());
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_registered_over_tcp_gets_its_calls_down_that_connection() {
    if !have("kamailio") || !have("baresip") {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let ep = telecart_sip::start(
        sip_config(k.tcp, "tcp", &["doctor@127.0.0.1"]),
        CART_PASSWORD.into(),
        Arc::new(NoMedia),
    )
    .await
    .unwrap();
    let status = ep.status.clone();
    let s = registered_within(&status, Duration::from_secs(10)).await;
    assert_eq!(s.registration, "registered", "{s:?}");

    // baresip calls over UDP; Kamailio finds the cart's binding, whose Contact names the
    // cart's end of the TCP connection, and sends the INVITE down it (the cart listens on
    // no TCP port, so nothing else could reach it).
    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, "");
    assert!(doctor.wait_registered(Duration::from_secs(10)));
    doctor.command("dial", "sip:cart1@127.0.0.1");
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "events {:?}\nkamailio:\n{}",
        doctor.events(),
        k.peer.log_text()
    );
    let log = k.peer.log_text();
    let relay = log
        .lines()
        .find(|l| l.contains("relay INVITE to sip:cart1@"))
        .unwrap_or_default()
        .to_string();
    println!("kamailio: {}", relay.trim());
    assert!(
        relay.to_ascii_lowercase().contains(";transport=tcp"),
        "{log}"
    );
    // Both BYE directions cross the TCP/UDP boundary Kamailio double-record-routes.
    doctor.command("hangup", "");
    assert!(
        wait_until(Duration::from_secs(5), || status.borrow().call.is_none()).await,
        "{:?}\n{}",
        status.borrow(),
        k.peer.log_text()
    );
    assert!(doctor.wait_events("CALL_CLOSED", 1, Duration::from_secs(5)));

    doctor.command("dial", "sip:cart1@127.0.0.1");
    assert!(doctor.wait_events("CALL_ESTABLISHED", 2, Duration::from_secs(10)));
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    assert!(
        doctor.wait_events("CALL_CLOSED", 2, Duration::from_secs(5)),
        "{:?}\n{}",
        doctor.events(),
        k.peer.log_text()
    );
    ep.shutdown().await;
}

/// The cart's real controller (simulated board) and session log around the endpoint.
struct Cart {
    controller: Arc<telecart_runtime::cart::CartController>,
    log: Arc<telecart_runtime::SessionLog>,
    store_dir: tempfile::TempDir,
}

impl Cart {
    fn start(outgoing: &str) -> Self {
        let store_dir = tempfile::tempdir().unwrap();
        let store = telecart_core::config::StoreConfig {
            data_dir: store_dir.path().join("log"),
            master_key: store_dir.path().join("master.key"),
            ..Default::default()
        };
        let log = Arc::new(
            telecart_runtime::SessionLog::open(
                &store,
                telecart_runtime::KeyPolicy::CreateIfMissing,
            )
            .unwrap(),
        );
        let board = telecart_core::config::BoardConfig {
            outgoing_uri: Some(outgoing.to_string()),
            ring_timeout_s: 20,
            ..Default::default()
        };
        let controller = Arc::new(
            telecart_runtime::cart::CartController::start(
                &board,
                telecart_runtime::cart::Wiring {
                    calls: Arc::new(telecart_runtime::webrtc::call::Calls::default()),
                    log: Some(log.clone()),
                },
            )
            .unwrap(),
        );
        controller.input(telecart_cart::machine::Input::BootComplete);
        controller.input(telecart_cart::machine::Input::NetworkUp);
        Self {
            controller,
            log,
            store_dir,
        }
    }

    async fn wait_call(&self, phase: &str) -> bool {
        wait_until(Duration::from_secs(10), || {
            self.controller.view().call == phase
        })
        .await
    }

    /// The session log's records, read back after everything holding it let go.
    fn records(self) -> Vec<telecart_store::Record> {
        use telecart_store::LogStore as _;
        self.controller.stop();
        drop(self.controller);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.log) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.log);
        let key =
            telecart_store::MasterKey::load(&self.store_dir.path().join("master.key")).unwrap();
        let store =
            telecart_store::SledStore::open(&self.store_dir.path().join("log"), &key).unwrap();
        (1..=store.durable_upto())
            .filter_map(|seq| store.read(seq).ok())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_calls_go_through_the_carts_state_machine_and_session_log() {
    if !have("kamailio") || !have("baresip") {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    let cart = Cart::start("sip:doctor@127.0.0.1");
    let mut config = sip_config(k.udp, "udp", &["doctor@127.0.0.1"]);
    config.policy.others = telecart_core::config::OtherCallers::Ring;
    let port: Arc<dyn telecart_sip::CartPort> = Arc::new(telecart_runtime::sip::SipCart::new(
        cart.controller.clone(),
        None,
        None,
    ));
    let ep = telecart_sip::start_with(config, CART_PASSWORD.into(), Arc::new(NoMedia), Some(port))
        .await
        .unwrap();
    cart.controller.attach_sip(ep.commands.clone());
    let status = ep.status.clone();
    assert_eq!(
        registered_within(&status, Duration::from_secs(10))
            .await
            .registration,
        "registered"
    );

    // 1. An allowed caller: the machine auto-answers, the cart shows the call, the caller's
    //    BYE ends it.
    let mut doctor = Baresip::start_answering("doctor", DOCTOR_PASSWORD, k.udp, "", "auto");
    assert!(doctor.wait_registered(Duration::from_secs(10)));
    doctor.command("dial", "sip:cart1@127.0.0.1");
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some()
    );
    assert!(
        cart.wait_call("active").await,
        "{:?}",
        cart.controller.view()
    );
    doctor.command("hangup", "");
    assert!(cart.wait_call("idle").await, "{:?}", cart.controller.view());

    // 2. A caller the policy lets ring: the cart rings until the call button answers; the
    //    hang-up button ends the call with a BYE.
    let mut intruder = Baresip::start("intruder", "x", k.udp, "");
    assert!(intruder.wait_registered(Duration::from_secs(10)));
    intruder.command("dial", "sip:cart1@127.0.0.1");
    assert!(
        intruder
            .wait_event("CALL_RINGING", Duration::from_secs(10))
            .is_some()
    );
    assert!(
        cart.wait_call("ringing").await,
        "{:?}",
        cart.controller.view()
    );
    assert_eq!(status.borrow().call.as_ref().map(|c| c.1), Some("ringing"));
    cart.controller
        .press(telecart_runtime::cart::ConsoleButton::Call, false);
    assert!(
        intruder
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "{:?}",
        intruder.events()
    );
    assert!(cart.wait_call("active").await);
    cart.controller
        .press(telecart_runtime::cart::ConsoleButton::HangUp, false);
    assert!(
        intruder
            .wait_event("CALL_CLOSED", Duration::from_secs(10))
            .is_some()
    );
    assert!(cart.wait_call("idle").await);
    drop(intruder);

    // 3. The call button dials board.outgoing_uri through the endpoint; baresip answers
    //    by itself; the hang-up button ends it.
    let dialed = Instant::now();
    cart.controller
        .press(telecart_runtime::cart::ConsoleButton::Call, false);
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "{:?}\n{:?}\n{}",
        doctor.events(),
        cart.controller.view(),
        k.peer.log_text()
    );
    assert!(
        cart.wait_call("active").await,
        "{:?}",
        cart.controller.view()
    );
    println!(
        "call button to the doctor's CALL_ESTABLISHED: {:.0} ms",
        dialed.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(status.borrow().call.as_ref().map(|c| c.1), Some("answered"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cart.controller
        .press(telecart_runtime::cart::ConsoleButton::HangUp, false);
    let closed = doctor.wait_event("CALL_CLOSED", Duration::from_secs(10));
    assert!(closed.is_some(), "{:?}", doctor.events());
    assert!(cart.wait_call("idle").await);
    assert!(status.borrow().call.is_none());
    ep.shutdown().await;
    drop(doctor);

    // Three calls, each with its start and end in the encrypted session log.
    let records = cart.records();
    let starts: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            telecart_store::RecordBody::SessionStart {
                direction,
                protocol,
                remote,
            } => Some((
                r.session,
                direction.clone(),
                protocol.clone(),
                remote.clone(),
            )),
            _ => None,
        })
        .collect();
    println!("session starts: {starts:?}");
    assert_eq!(starts.len(), 3, "{records:?}");
    assert!(starts.iter().all(|s| s.2 == "sip"));
    assert_eq!(
        starts.iter().map(|s| s.3.as_str()).collect::<Vec<_>>(),
        [
            "sip:doctor@127.0.0.1",
            "sip:intruder@127.0.0.1",
            "sip:doctor@127.0.0.1"
        ]
    );
    assert_eq!(
        starts.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["inbound", "inbound", "outbound"]
    );
    for (session, ..) in &starts {
        let end = records.iter().find_map(|r| match &r.body {
            telecart_store::RecordBody::SessionEnd { reason, .. } if r.session == *session => {
                Some(reason.clone())
            }
            _ => None,
        });
        assert!(end.is_some(), "no end for {session:?}: {records:?}");
    }
}

/// The call button through a proxy that challenges INVITEs with RFC 8760 `algorithm=SHA-256`
/// (rsipstack 0.7.14 cannot parse it; the driver answers with `crate::digest`). baresip 1.0
/// cannot register with SHA-256 ("Function not implemented"), so Kamailio routes `doctor` to it
/// statically instead of through its location table. Also a live check of `srtp = "optional"`:
/// baresip without `mediaenc` answers the best-effort offer in the clear, and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_answers_a_sha256_proxy_challenge_to_its_invite() {
    if !have("kamailio") || !have("baresip") {
        return;
    }
    let doctor = Baresip::launch("", "<sip:doctor@127.0.0.1>;answermode=auto;regint=0");
    let k = Kamailio::start_routing(&users(), "SHA-256", "doctor", doctor.sip);
    let udp = k.udp;

    let media = PipelineMedia::start();
    let ep = telecart_sip::start(
        sip_config(udp, "udp", &[]),
        CART_PASSWORD.into(),
        media.clone(),
    )
    .await
    .unwrap();
    let status = ep.status.clone();
    let s = registered_within(&status, Duration::from_secs(10)).await;
    assert_eq!(s.registration, "registered", "{s:?}\n{}", k.peer.log_text());
    let dialed = Instant::now();
    ep.commands
        .send(SipCommand::Call("sip:doctor@127.0.0.1".into()))
        .await
        .unwrap();
    let answered = wait_until(Duration::from_secs(10), || {
        status.borrow().call.as_ref().map(|c| c.1) == Some("answered")
    })
    .await;
    let klog = k.peer.log_text();
    assert!(
        answered,
        "{:?}\nkamailio:\n{klog}\nbaresip:\n{}",
        status.borrow(),
        doctor.peer.log_text()
    );
    println!(
        "SHA-256 407 answered: call button to 200 OK {:.0} ms",
        dialed.elapsed().as_secs_f64() * 1000.0
    );
    // One INVITE challenged, one relayed with our SHA-256 credentials.
    assert_eq!(
        klog.matches("request INVITE sip:doctor@").count(),
        2,
        "{klog}"
    );
    assert!(klog.contains("static route INVITE to doctor"), "{klog}");
    // The retry is the same call (RFC 3261 §8.1.3.5): same Call-ID, a higher CSeq.
    let invites: Vec<(&str, u32)> = klog
        .lines()
        .filter(|l| l.contains("request INVITE sip:doctor@"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("call-id ")?;
            let (call_id, cseq) = rest.split_once(" cseq ")?;
            Some((call_id, cseq.trim().parse().ok()?))
        })
        .collect();
    assert_eq!(invites.len(), 2, "{klog}");
    assert_eq!(invites[0].0, invites[1].0, "{invites:?}");
    assert!(invites[1].1 > invites[0].1, "{invites:?}");
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
            .is_some(),
        "{:?}",
        doctor.events()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = status.borrow().media.clone();
    assert!(m.audio_packets_received > 30, "{m:?}");
    assert_eq!(
        m.srtp_auth_failures, 0,
        "optional SRTP, answered in the clear: {m:?}"
    );
    let (hz, _) = media.played_frequency(1.0).expect("audio from baresip");
    assert!((430.0..450.0).contains(&hz), "heard {hz} Hz");
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some(),
        "the cart's BYE did not reach baresip:\n{}",
        k.peer.log_text()
    );
    ep.shutdown().await;
    drop(k);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_cancels_its_own_call_while_it_rings() {
    if !have("kamailio") || !have("baresip") {
        return;
    }
    let k = Kamailio::start(&users(), "MD5");
    // Answered by hand: the doctor's phone rings until the cart gives up.
    let doctor = Baresip::start("doctor", DOCTOR_PASSWORD, k.udp, "");
    assert!(doctor.wait_registered(Duration::from_secs(10)));
    let ep = telecart_sip::start(
        sip_config(k.udp, "udp", &[]),
        CART_PASSWORD.into(),
        Arc::new(NoMedia),
    )
    .await
    .unwrap();
    let status = ep.status.clone();
    let s = registered_within(&status, Duration::from_secs(10)).await;
    assert_eq!(s.registration, "registered", "{s:?}");
    ep.commands
        .send(SipCommand::Call("sip:doctor@127.0.0.1".into()))
        .await
        .unwrap();
    assert!(
        doctor
            .wait_event("CALL_INCOMING", Duration::from_secs(10))
            .is_some(),
        "{:?}\n{}",
        doctor.events(),
        k.peer.log_text()
    );
    assert_eq!(status.borrow().call.as_ref().map(|c| c.1), Some("dialing"));
    let cancelled = Instant::now();
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    let closed = doctor.wait_event("CALL_CLOSED", Duration::from_secs(5));
    assert!(
        closed.is_some(),
        "the cart's CANCEL did not reach baresip: {:?}\n{}",
        doctor.events(),
        k.peer.log_text()
    );
    let call_id = closed.as_ref().and_then(|e| e["id"].as_str()).unwrap_or("");
    assert!(!call_id.contains('@'), "a bare random Call-ID: {call_id}");
    println!(
        "hang-up while ringing -> baresip's CALL_CLOSED in {:.0} ms: {closed:?}",
        cancelled.elapsed().as_secs_f64() * 1000.0
    );
    assert!(
        k.peer.log_text().contains("request CANCEL sip:doctor@"),
        "{}",
        k.peer.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || status.borrow().call.is_none()).await,
        "{:?}",
        status.borrow()
    );
    // Nothing was answered, and the cart can call again at once.
    assert_eq!(status.borrow().calls_answered, 0);
    ep.commands
        .send(SipCommand::Call("sip:doctor@127.0.0.1".into()))
        .await
        .unwrap();
    assert!(doctor.wait_events("CALL_INCOMING", 2, Duration::from_secs(10)));
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    assert!(doctor.wait_events("CALL_CLOSED", 2, Duration::from_secs(5)));
    ep.shutdown().await;
}

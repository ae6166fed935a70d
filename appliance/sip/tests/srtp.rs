//! SDES-SRTP with a real peer: baresip (`mediaenc=srtp-mand`, libre's SRTP) and the cart call
//! each other through Kamailio, baresip's leg over TLS, the cart's over UDP or TLS. baresip 1.0
//! offers a single suite, AES_CM_128_HMAC_SHA1_80, but answers the others: with the cart as
//! the offerer, Kamailio (`tests/peers/sip/kamailio-srtp.cfg`) narrows the cart's offer to one
//! suite and baresip answers it, which is how AEAD_AES_128_GCM meets baresip; every suite also
//! meets libsrtp below. Checked: the call is set up with RTP/SAVP and keys both ways, baresip's
//! tone is heard at the cart after decryption, the cart's audio and H.264 are decrypted and
//! decoded by baresip, no datagram fails authentication but baresip's clear RTCP APP packets,
//! and BYE from either side ends the call.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use telecart_sip::SipCommand;

const CART_PASSWORD: &str = "cart-secret-1";
const DOCTOR_PASSWORD: &str = "doctor-secret-2";
const SUITES: [&str; 5] = [
    "AES_CM_128_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
];

struct Pki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    /// Certificate and key in one file, as baresip's `sip_certificate` takes them.
    client_pem: std::path::PathBuf,
}

/// A CA made now, a certificate for 127.0.0.1 (Kamailio) and one for baresip, signed by it.
fn make_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "telecart SRTP test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        (params.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server, server_key) = leaf("localhost");
    let (client, client_key) = leaf("doctor");
    let pki = Pki {
        ca: dir.path().join("ca.pem"),
        server_cert: dir.path().join("server.pem"),
        server_key: dir.path().join("server.key"),
        client_pem: dir.path().join("doctor.pem"),
        _dir: dir,
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.server_cert, server.pem()).unwrap();
    std::fs::write(&pki.server_key, server_key.serialize_pem()).unwrap();
    std::fs::write(
        &pki.client_pem,
        format!("{}{}", client.pem(), client_key.serialize_pem()),
    )
    .unwrap();
    pki
}

struct KamailioTls {
    udp: u16,
    tls: u16,
    peer: Peer,
}

impl Drop for KamailioTls {
    fn drop(&mut self) {
        self.peer.terminate();
    }
}

/// Kamailio from `kamailio-srtp.cfg`, offers narrowed to `suite`.
fn start_kamailio(pki: &Pki, suite: &str) -> KamailioTls {
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, tls) = (free_port(false), free_port(false), free_port(false));
    let tls_cfg = dir.path().join("tls.cfg");
    std::fs::write(
        &tls_cfg,
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
             private_key = {}\ncertificate = {}\n\n[client:default]\nverify_certificate = no\nrequire_certificate = no\n",
            pki.server_key.display(),
            pki.server_cert.display()
        ),
    )
    .unwrap();
    // Every other suite's a=crypto line goes; Kamailio fixes Content-Length.
    let narrow: String = SUITES
        .iter()
        .filter(|s| **s != suite)
        .map(|s| {
            format!("\t\tsubst_body(\"/a=crypto:[0-9]+ {s} [^[:space:]]*[[:space:]]+//g\");\n")
        })
        .collect();
    let users = format!(
        "\t$sht(users=>cart1) = \"{CART_PASSWORD}\";\n\t$sht(users=>doctor) = \"{DOCTOR_PASSWORD}\";\n"
    );
    let cfg = std::fs::read_to_string(repo_file("tests/peers/sip/kamailio-srtp.cfg"))
        .unwrap()
        .replace("@@UDP_PORT@@", &udp.to_string())
        .replace("@@TCP_PORT@@", &tcp.to_string())
        .replace("@@TLS_PORT@@", &tls.to_string())
        .replace("@@TLS_CONFIG@@", &tls_cfg.display().to_string())
        .replace("@@ALGORITHM@@", "MD5")
        .replace("@@USERS@@", &users)
        .replace("@@NARROW_OFFER@@", &narrow);
    let mut peer = spawn_kamailio(dir, &cfg);
    wait_tcp(tls, "kamailio", &mut peer);
    KamailioTls { udp, tls, peer }
}

/// baresip as the doctor, registered and calling over TLS, SRTP mandatory.
fn start_doctor(pki: &Pki, kamailio_tls: u16) -> Baresip {
    start_doctor_answering(pki, kamailio_tls, "manual")
}

/// [`start_doctor`] with baresip's `answermode` (`auto`: it answers the cart's calls itself).
fn start_doctor_answering(pki: &Pki, kamailio_tls: u16, answermode: &str) -> Baresip {
    Baresip::launch(
        &format!(
            "sip_certificate\t\t{}\nsip_cafile\t\t{}\n",
            pki.client_pem.display(),
            pki.ca.display()
        ),
        &format!(
            "<sip:doctor@127.0.0.1;transport=tls>;auth_pass={DOCTOR_PASSWORD};answermode={answermode};\
             outbound=\"sip:127.0.0.1:{kamailio_tls};transport=tls\";regint=300;mediaenc=srtp-mand"
        ),
    )
}

/// The cart's configuration for Kamailio `k`, registered over `transport` (`udp` or `tls`,
/// trusting only the test CA).
fn cart_config(
    k: &KamailioTls,
    pki: &Pki,
    transport: &str,
    allowed: &[&str],
) -> telecart_core::config::SipConfig {
    let port = if transport == "tls" { k.tls } else { k.udp };
    let mut config = sip_config(port, transport, allowed);
    if transport == "tls" {
        config.ca_cert = Some(pki.ca.clone());
    }
    config
}

/// baresip calls the cart with the offer narrowed to `suite`; the cart registered over
/// `cart_transport`.
async fn call_with_suite(suite: &str, cart_transport: &str) {
    let pki = make_pki();
    let k = start_kamailio(&pki, suite);
    let media = PipelineMedia::start();
    let config = cart_config(&k, &pki, cart_transport, &["doctor@127.0.0.1"]);
    let ep = telecart_sip::start(config, CART_PASSWORD.into(), media.clone())
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

    let mut doctor = start_doctor(&pki, k.tls);
    assert!(
        doctor.wait_log("[1 binding]", Duration::from_secs(10)),
        "baresip did not register over TLS:\n{}\nkamailio:\n{}",
        doctor.peer.log_text(),
        k.peer.log_text()
    );
    let dialed = Instant::now();
    doctor.command("dial", "sip:cart1@127.0.0.1");
    let established = doctor.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert!(
        established.is_some(),
        "{suite}: events {:?}\nbaresip:\n{}\nkamailio:\n{}",
        doctor.events(),
        doctor.peer.log_text(),
        k.peer.log_text()
    );
    println!(
        "{suite}: call set up in {:.0} ms",
        dialed.elapsed().as_secs_f64() * 1000.0
    );
    let klog = k.peer.log_text();
    assert!(klog.contains("INVITE from doctor over tls"), "{klog}");
    assert!(
        klog.contains("REGISTER ok cart1 from 127.0.0.1:")
            && klog.contains(&format!("proto {cart_transport}")),
        "{klog}"
    );
    // baresip reports the suite it settled on for each stream.
    assert!(
        doctor.wait_log(
            &format!("SRTP is Enabled (cryptosuite={suite})"),
            Duration::from_secs(5)
        ),
        "{suite}: baresip did not enable SRTP with it:\n{}",
        doctor.peer.log_text()
    );

    assert_srtp_media_both_ways(suite, &status, &media, &mut doctor).await;

    // The doctor's keypad: baresip sends RFC 4733 events (telephone-event/8000 beside Opus).
    doctor.command("sndcode", "5");
    let heard = wait_until(Duration::from_secs(3), || {
        status.borrow().dtmf_received.contains('5')
    })
    .await;
    println!(
        "{suite}: DTMF at the cart: {:?}",
        status.borrow().dtmf_received
    );
    assert!(
        heard,
        "{suite}: baresip's DTMF 5 did not arrive: {:?}",
        status.borrow()
    );

    doctor.command("hangup", "");
    let closed = doctor.wait_event("CALL_CLOSED", Duration::from_secs(5));
    assert!(closed.is_some(), "{suite}: baresip did not hang up");
    assert!(
        wait_until(Duration::from_secs(3), || status.borrow().call.is_none()).await,
        "{suite}: the caller's BYE did not end the cart's call: {:?}\n{}",
        status.borrow(),
        k.peer.log_text()
    );
    assert_baresip_opened_and_decoded(suite, &doctor);
    ep.shutdown().await;
}

/// Media of an SRTP call that is up, checked at both ends after 6 s: baresip's tone decrypted
/// and heard at the cart, the cart's audio and video sent, SRTCP authenticated, nothing
/// replayed, nothing but baresip's clear-text RTCP APP packets refused.
async fn assert_srtp_media_both_ways(
    suite: &str,
    status: &tokio::sync::watch::Receiver<telecart_sip::SipStatus>,
    media: &PipelineMedia,
    doctor: &mut Baresip,
) {
    // Long enough for baresip's first RTCP reports (every 5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = status.borrow().clone();
    assert_eq!(s.call.as_ref().map(|c| c.1), Some("answered"), "{s:?}");
    let m = &s.media;
    println!(
        "{suite}: cart received {} audio packets, sent {} audio / {} video frames; \
         auth failures {}, replays {}, malformed {}",
        m.audio_packets_received,
        m.audio_packets_sent,
        m.video_frames_sent,
        m.srtp_auth_failures,
        m.srtp_replayed,
        m.malformed
    );
    assert!(m.audio_packets_received > 100, "{suite}: {s:?}");
    assert!(m.audio_packets_sent > 100, "{suite}: {s:?}");
    assert!(
        m.video_frames_sent > 20,
        "{suite}: {s:?}\nbaresip:\n{}",
        doctor.peer.log_text()
    );
    // baresip sends an RTCP APP packet ("PING"/"PONG", 16 bytes) in the clear as each
    // stream starts; on a protected stream the cart refuses and counts it. Nothing else fails.
    assert!(m.srtp_auth_failures <= 2, "{suite}: {s:?}");
    assert_eq!(
        (m.srtp_replayed, m.srtp_protect_failures),
        (0, 0),
        "{suite}: {s:?}"
    );
    assert!(
        m.rtcp_received >= 1,
        "{suite}: baresip's SRTCP authenticated: {s:?}"
    );
    let (hz, _) = media.played_frequency(2.0).expect("audio from baresip");
    println!("{suite}: baresip's tone decrypted and decoded at the cart: {hz:.1} Hz");
    assert!((430.0..450.0).contains(&hz), "{suite}: heard {hz} Hz");

    doctor.command("callstat", "");
    let stat = doctor
        .wait_response("callstat", Duration::from_secs(3))
        .unwrap_or_default();
    println!("{suite}: baresip callstat:\n{stat}");
}

/// After the call: baresip decrypted every SRTP packet of the cart and decoded its H.264.
fn assert_baresip_opened_and_decoded(suite: &str, doctor: &Baresip) {
    let log = doctor.peer.log_text();
    // libre logs each SRTP/SRTCP datagram it cannot authenticate or decrypt.
    let srtp_errors: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("srtp") && (l.contains("fail") || l.contains("error"))
        })
        .collect();
    assert!(
        srtp_errors.is_empty(),
        "{suite}: baresip could not open the cart's SRTP: {srtp_errors:?}"
    );
    let stats = log
        .lines()
        .find(|l| l.contains("avcodec: decoder stats"))
        .unwrap_or_default()
        .to_string();
    println!("{suite}: baresip video {stats}");
    assert!(
        stats.contains("lost_fragments:0") && !stats.contains("keyframes:0"),
        "{suite}: baresip did not decode the cart's H.264: {stats:?}\n{log}"
    );
}

fn peers_present() -> bool {
    if !have("kamailio") || !have("baresip") {
        return false;
    }
    if !std::path::Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists() {
        eprintln!("\n!!!!!!!! SKIPPED: kamailio-tls-modules is not installed !!!!!!!!\n");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_srtp_mandatory_aes_cm_128_hmac_sha1_80_over_tls() {
    if peers_present() {
        call_with_suite("AES_CM_128_HMAC_SHA1_80", "udp").await;
    }
}

/// Both legs over TLS: the cart registered on Kamailio's TLS listener gets baresip's INVITE
/// (and the keys in it) down that connection, media is SDES-SRTP, the caller's BYE ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_the_cart_registered_over_tls_with_srtp() {
    if peers_present() {
        call_with_suite("AES_CM_128_HMAC_SHA1_80", "tls").await;
    }
}

/// The call button with `srtp = "mandatory"`: the cart's INVITE offers RTP/SAVP(F) with an
/// AES_CM_128_HMAC_SHA1_80 and an AEAD_AES_128_GCM key per stream, Kamailio narrows it to
/// `suite`, baresip (`srtp-mand`, auto-answer) answers that line with its key; media both ways
/// decrypted, then the cart hangs up (BYE through Kamailio's Record-Route).
async fn cart_calls_with_suite(suite: &str, cart_transport: &str) {
    let pki = make_pki();
    let k = start_kamailio(&pki, suite);
    let media = PipelineMedia::start();
    let mut config = cart_config(&k, &pki, cart_transport, &[]);
    config.srtp = telecart_core::config::SipSrtp::Mandatory;
    let ep = telecart_sip::start(config, CART_PASSWORD.into(), media.clone())
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
    let mut doctor = start_doctor_answering(&pki, k.tls, "auto");
    assert!(
        doctor.wait_log("[1 binding]", Duration::from_secs(10)),
        "baresip did not register over TLS:\n{}\nkamailio:\n{}",
        doctor.peer.log_text(),
        k.peer.log_text()
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
        "{suite}: {:?}\nbaresip:\n{}\nkamailio:\n{}",
        status.borrow(),
        doctor.peer.log_text(),
        k.peer.log_text()
    );
    println!(
        "{suite} (cart over {cart_transport}): the cart's call answered in {:.0} ms",
        dialed.elapsed().as_secs_f64() * 1000.0
    );
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
            .is_some(),
        "{:?}",
        doctor.events()
    );
    let klog = k.peer.log_text();
    assert!(
        klog.contains(&format!("INVITE from cart1 over {cart_transport}")),
        "{klog}"
    );
    assert!(
        doctor.wait_log(
            &format!("SRTP is Enabled (cryptosuite={suite})"),
            Duration::from_secs(5)
        ),
        "{suite}: baresip did not enable SRTP with it:\n{}",
        doctor.peer.log_text()
    );
    assert_srtp_media_both_ways(suite, &status, &media, &mut doctor).await;

    ep.commands.send(SipCommand::HangUp).await.unwrap();
    assert!(
        doctor
            .wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some(),
        "{suite}: the cart's BYE did not reach baresip:\n{}",
        k.peer.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(3), || status.borrow().call.is_none()).await,
        "{:?}",
        status.borrow()
    );
    assert_baresip_opened_and_decoded(suite, &doctor);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_dials_baresip_with_srtp_mandatory_aes_cm_128_hmac_sha1_80() {
    if peers_present() {
        cart_calls_with_suite("AES_CM_128_HMAC_SHA1_80", "udp").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_dials_baresip_with_srtp_mandatory_aead_aes_128_gcm() {
    if peers_present() {
        cart_calls_with_suite("AEAD_AES_128_GCM", "udp").await;
    }
}

/// The call button with the cart registered over TLS: the INVITE, its keys and the BYE go down
/// the registered TLS connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_dials_baresip_over_tls_with_srtp() {
    if peers_present() {
        cart_calls_with_suite("AES_CM_128_HMAC_SHA1_80", "tls").await;
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Both directions of one call's audio stream against libsrtp (Cisco's reference SRTP, 2.x via
/// pylibsrtp 1.0.0, installed by `tests/setup.d/libsrtp.sh`), for every suite the cart
/// implements and libsrtp knows, through the real `MediaSession` path.
#[test]
fn every_suite_interoperates_with_libsrtp_both_ways_rtp_and_rtcp() {
    use std::net::SocketAddr;
    use telecart_sip::media::{AudioSetup, MediaEvent, MediaSession, MediaSetup, StreamKind};
    use telecart_sip::srtp::{CryptoSuite, MasterKey, SdesKeys};

    let python = repo_file(".work/libsrtp/bin/python");
    if !python.exists() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: libsrtp peer missing ({}): run tests/setup.sh !!!!!!!!\n",
            python.display()
        );
        return;
    }
    let remote: SocketAddr = "192.0.2.7:4000".parse().unwrap();
    for suite in [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
        CryptoSuite::AeadAes128Gcm,
        CryptoSuite::AeadAes256Gcm,
    ] {
        let cart_key = MasterKey::generate(suite).unwrap();
        let peer_key = MasterKey::generate(suite).unwrap();
        let b64 = |k: &MasterKey| k.inline().trim_start_matches("inline:").to_string();
        let setup = MediaSetup {
            audio: Some(AudioSetup {
                codec: telecart_core::media::AudioCodec::Pcmu,
                pt: 0,
                clock: 8000,
                dtmf_pt: None,
                dtmf_clock: 8000,
                remote,
                rtcp_mux: true,
                srtp: Some(SdesKeys {
                    tag: 1,
                    local: cart_key.clone(),
                    remote: peer_key.clone(),
                }),
            }),
            video: None,
            send_paused: false,
        };
        let t0 = Instant::now();
        let mut cart = MediaSession::new(setup, 11, t0, 1 << 40);
        let mut rtp = Vec::new();
        for n in 0..20u8 {
            cart.send_audio(format!("cart-{n}").as_bytes(), 160);
            rtp.push(hex(&cart.poll_transmit().unwrap().data));
        }
        cart.handle_timeout(t0 + Duration::from_secs(5));
        let rtcp: Vec<String> = std::iter::from_fn(|| cart.poll_transmit())
            .map(|t| hex(&t.data))
            .collect();
        assert_eq!(rtcp.len(), 1, "{suite}: one sender report");
        let request = serde_json::json!({
            "profile": suite.name(),
            "cart_key": b64(&cart_key),
            "peer_key": b64(&peer_key),
            "rtp": rtp,
            "rtcp": rtcp,
        });
        let mut child = Command::new(&python)
            .arg(repo_file("tests/peers/sip/libsrtp_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{suite}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // libsrtp opened everything the cart sent.
        assert_eq!(
            (reply["rtp_errors"].as_u64(), reply["rtcp_errors"].as_u64()),
            (Some(0), Some(0)),
            "{suite}: {reply}"
        );
        let opened = reply["rtp"].as_array().unwrap();
        assert_eq!(opened.len(), 20, "{suite}");
        for (n, p) in opened.iter().enumerate() {
            let p = unhex(p.as_str().unwrap());
            assert_eq!(&p[12..], format!("cart-{n}").as_bytes(), "{suite}");
        }
        let sr = unhex(reply["rtcp"][0].as_str().unwrap());
        assert_eq!(sr[1], 200, "{suite}: libsrtp decrypted a sender report");
        // The cart opens what libsrtp sent.
        for p in reply["sent_rtp"].as_array().unwrap() {
            cart.handle_receive(
                t0,
                StreamKind::Audio,
                false,
                remote,
                &unhex(p.as_str().unwrap()),
            );
        }
        for p in reply["sent_rtcp"].as_array().unwrap() {
            cart.handle_receive(
                t0,
                StreamKind::Audio,
                false,
                remote,
                &unhex(p.as_str().unwrap()),
            );
        }
        let payloads: Vec<Vec<u8>> = std::iter::from_fn(|| cart.poll_event())
            .filter_map(|e| match e {
                MediaEvent::Audio { payload, .. } => Some(payload),
                _ => None,
            })
            .collect();
        let want: Vec<Vec<u8>> = (0..20)
            .map(|n| format!("libsrtp-{n}").into_bytes())
            .collect();
        assert_eq!(payloads, want, "{suite}");
        let stats = cart.stats();
        assert_eq!(
            (stats.srtp_auth_failures, stats.rtcp_received),
            (0, 1),
            "{suite}: {stats:?}"
        );
        println!("{suite}: cart <-> libsrtp: 20 RTP and 1 RTCP each way");
    }
}

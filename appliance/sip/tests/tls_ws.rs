//! Registration with a real Kamailio over TLS (a test CA made at run time; the cart trusts only
//! that CA) and over WebSocket (RFC 7118, Kamailio's websocket module).

#![allow(clippy::unwrap_used)]

#[path = "common/ca.rs"]
mod ca;
mod common;

use ca::make_ca;
use common::*;
use std::sync::Arc;
use std::time::Duration;

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
async fn registers_over_tls_trusting_only_the_configured_ca() {
    if !have("kamailio") {
        return;
    }
    if !std::path::Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists() {
        eprintln!("\n!!!!!!!! SKIPPED: kamailio-tls-modules is not installed !!!!!!!!\n");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_ca(certs.path());
    let tls_port = free_port(false);
    let tls_cfg = certs.path().join("tls.cfg");
    std::fs::write(
        &tls_cfg,
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
             private_key = {}\ncertificate = {}\n\n[client:default]\nverify_certificate = no\nrequire_certificate = no\n",
            key.display(),
            cert.display()
        ),
    )
    .unwrap();
    let k = Kamailio::start_with(
        &[("cart1", "pw")],
        "MD5",
        &format!("enable_tls=yes\nlisten=tls:127.0.0.1:{tls_port}"),
        &format!(
            "loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")",
            tls_cfg.display()
        ),
        "",
    );
    let mut config = sip_config(tls_port, "tls", &[]);
    config.ca_cert = Some(ca.clone());
    let ep = telecart_sip::start(config, "pw".into(), Arc::new(NoMedia))
        .await
        .unwrap();
    let status = ep.status.clone();
    expect_registered(&status, &k.peer).await;
    assert!(
        k.peer.log_text().contains("proto tls"),
        "{}",
        k.peer.log_text()
    );
    println!(
        "registered over TLS in {:.1} ms",
        status.borrow().last_register_ms.unwrap()
    );
    ep.shutdown().await;

    // Another CA: the handshake must fail and the cart must not register.
    stays_unregistered_trusting_another_ca(tls_port, "tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_websocket_and_takes_a_call_down_it() {
    if !have("kamailio") {
        return;
    }
    if !std::path::Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so").exists() {
        eprintln!("\n!!!!!!!! SKIPPED: kamailio-websocket-modules is not installed !!!!!!!!\n");
        return;
    }
    let ws_port = free_port(false);
    let k = Kamailio::start_with(
        &[("cart1", "pw"), ("doctor", "doc")],
        "MD5",
        &format!("listen=tcp:127.0.0.1:{ws_port}\ntcp_accept_no_cl=yes"),
        "loadmodule \"xhttp.so\"\nloadmodule \"websocket.so\"",
        "event_route[xhttp:request] {\n\
         \tif ($hdr(Upgrade) =~ \"websocket\" && $hdr(Connection) =~ \"Upgrade\" && $rm =~ \"GET\") {\n\
         \t\tif (ws_handle_handshake()) { exit; }\n\t}\n\
         \txhttp_reply(\"404\", \"Not Found\", \"\", \"\");\n}",
    );
    let config = sip_config(ws_port, "ws", &["doctor@127.0.0.1"]);
    let ep = telecart_sip::start(config, "pw".into(), Arc::new(NoMedia))
        .await
        .unwrap();
    let status = ep.status.clone();
    expect_registered(&status, &k.peer).await;
    assert!(
        k.peer.log_text().contains("proto ws"),
        "{}",
        k.peer.log_text()
    );
    if have("baresip") {
        // RFC 7118 §5: Kamailio cannot open a WebSocket to the cart; the INVITE must come
        // down the registered one, which the Contact names.
        let mut doctor = Baresip::start("doctor", "doc", k.udp, "");
        assert!(doctor.wait_registered(Duration::from_secs(10)));
        doctor.command("dial", "sip:cart1@127.0.0.1");
        assert!(
            doctor.wait_events("CALL_ESTABLISHED", 1, Duration::from_secs(10)),
            "{:?}\n{}",
            doctor.events(),
            k.peer.log_text()
        );
        let log = k.peer.log_text();
        assert!(
            log.to_ascii_lowercase()
                .contains("relay invite to sip:cart1@127.0.0.1"),
            "{log}"
        );
        assert!(log.to_ascii_lowercase().contains("transport=ws"), "{log}");
        doctor.command("hangup", "");
        assert!(
            wait_until(Duration::from_secs(5), || status.borrow().call.is_none()).await,
            "{:?}\n{}",
            status.borrow(),
            k.peer.log_text()
        );
    }
    ep.shutdown().await;
}

/// Secure WebSocket (RFC 7118 `wss`): rsipstack cannot dial it with a CA of ours, so the driver
/// dials it (src/wss.rs); the cart must register trusting `ca_cert`, and refuse another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_secure_websocket_trusting_only_the_configured_ca() {
    if !have("kamailio") {
        return;
    }
    let modules = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
    if !std::path::Path::new(&format!("{modules}/tls.so")).exists()
        || !std::path::Path::new(&format!("{modules}/websocket.so")).exists()
    {
        eprintln!(
            "\n!!!!!!!! SKIPPED: kamailio-tls-modules or -websocket-modules missing !!!!!!!!\n"
        );
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_ca(certs.path());
    let wss_port = free_port(false);
    let tls_cfg = certs.path().join("tls.cfg");
    std::fs::write(
        &tls_cfg,
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
             private_key = {}\ncertificate = {}\n",
            key.display(),
            cert.display()
        ),
    )
    .unwrap();
    let k = Kamailio::start_with(
        &[("cart1", "pw")],
        "MD5",
        &format!("enable_tls=yes\nlisten=tls:127.0.0.1:{wss_port}\ntcp_accept_no_cl=yes"),
        &format!(
            "loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")\n\
             loadmodule \"xhttp.so\"\nloadmodule \"websocket.so\"",
            tls_cfg.display()
        ),
        "event_route[xhttp:request] {\n\
         \tif ($hdr(Upgrade) =~ \"websocket\" && $hdr(Connection) =~ \"Upgrade\" && $rm =~ \"GET\") {\n\
         \t\tif (ws_handle_handshake()) { exit; }\n\t}\n\
         \txhttp_reply(\"404\", \"Not Found\", \"\", \"\");\n}",
    );
    let mut config = sip_config(wss_port, "wss", &[]);
    config.ca_cert = Some(ca);
    let ep = telecart_sip::start(config, "pw".into(), Arc::new(NoMedia))
        .await
        .unwrap();
    let status = ep.status.clone();
    expect_registered(&status, &k.peer).await;
    assert!(
        k.peer.log_text().contains("proto wss"),
        "{}",
        k.peer.log_text()
    );
    ep.shutdown().await;

    stays_unregistered_trusting_another_ca(wss_port, "wss").await;
}

/// The cart configured with a CA that did not sign the registrar's certificate: the handshake
/// fails and it never registers.
async fn stays_unregistered_trusting_another_ca(port: u16, transport: &str) {
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_ca(other.path());
    let mut config = sip_config(port, transport, &[]);
    config.ca_cert = Some(other_ca);
    let ep = telecart_sip::start(config, "pw".into(), Arc::new(NoMedia))
        .await
        .unwrap();
    let status = ep.status.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(
        status.borrow().registration,
        "registered",
        "{transport}: {:?}",
        status.borrow()
    );
    ep.shutdown().await;
}

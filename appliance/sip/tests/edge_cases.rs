//! Edge cases against the cart's SIP port while it stays registered with a real Kamailio:
//! SIPp scenarios (CANCEL before the answer, re-INVITE hold/resume then BYE from the caller)
//! and hostile datagrams (bad SDP, unknown dialogs and methods, junk), each answered as
//! RFC 3261 says or dropped, never a crash, the registration untouched.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use telecart_sip::SipCommand;

async fn registered_cart(
    k: &Kamailio,
    delay_ms: u32,
) -> (telecart_sip::SipEndpoint, Arc<PipelineMedia>) {
    let media = PipelineMedia::start();
    let mut config = sip_config(k.udp, "udp", &["doctor@127.0.0.1"]);
    config.policy.auto_answer_delay_ms = delay_ms;
    let ep = telecart_sip::start(config, "pw".into(), media.clone())
        .await
        .unwrap();
    expect_registered(&ep.status, &k.peer).await;
    (ep, media)
}

fn sipp(scenario: &str, target: std::net::SocketAddr) -> (bool, String) {
    sipp_for(scenario, target, 20)
}

fn sipp_for(scenario: &str, target: std::net::SocketAddr, timeout_secs: u32) -> (bool, String) {
    run_sipp(scenario, Some(target), free_port(true), timeout_secs)
}

/// SIPp on `port`: calling `target` (UAC scenarios) or, without one, waiting for a call (UAS).
fn run_sipp(
    scenario: &str,
    target: Option<std::net::SocketAddr>,
    port: u16,
    timeout_secs: u32,
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let media_port = free_port(true);
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(repo_file(&format!("tests/peers/sip/sipp/{scenario}")))
        .args(target.map(|t| t.to_string()))
        .args(["-s", "cart1", "-i", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args([
            "-mp",
            &media_port.to_string(),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            &format!("{timeout_secs}s"),
        ])
        .args(["-trace_err", "-error_file"])
        .arg(dir.path().join("err.log"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default();
    (
        out.status.success(),
        format!(
            "{}\n{}\n{err}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_cancel_before_answer_and_reinvite_hold_then_bye() {
    if !have("kamailio") || !have("sipp") {
        return;
    }
    let k = Kamailio::start(&[("cart1", "pw")], "MD5");
    let (ep, _media) = registered_cart(&k, 2000).await;
    let target = ep.local_addr;
    let (ok, out) = tokio::task::spawn_blocking(move || sipp("cancel_before_answer.xml", target))
        .await
        .unwrap();
    assert!(ok, "CANCEL scenario failed:\n{out}");
    let s = ep.status.borrow().clone();
    assert_eq!((s.call.clone(), s.calls_answered), (None, 0), "{s:?}");

    let (ok, out) = tokio::task::spawn_blocking(move || sipp("reinvite_hold_bye.xml", target))
        .await
        .unwrap();
    assert!(ok, "re-INVITE scenario failed:\n{out}");
    let status = ep.status.clone();
    assert!(wait_until(Duration::from_secs(3), || status.borrow().call.is_none()).await);
    assert_eq!(status.borrow().calls_answered, 1);
    assert_eq!(status.borrow().registration, "registered");
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_session_timer_too_small_then_refreshed_by_the_cart() {
    if !have("kamailio") || !have("sipp") {
        return;
    }
    let k = Kamailio::start(&[("cart1", "pw")], "MD5");
    let (ep, _media) = registered_cart(&k, 0).await;
    let target = ep.local_addr;
    // 422 for 30 s, then a 90 s session the cart refreshes at 45 s (so this takes ~46 s).
    let (ok, out) = tokio::task::spawn_blocking(move || sipp_for("session_timer.xml", target, 75))
        .await
        .unwrap();
    assert!(ok, "session timer scenario failed:\n{out}");
    let status = ep.status.clone();
    assert!(wait_until(Duration::from_secs(3), || status.borrow().call.is_none()).await);
    assert_eq!(status.borrow().calls_answered, 1);
    ep.shutdown().await;
}

fn exchange(sock: &UdpSocket, to: std::net::SocketAddr, msg: &str) -> Option<String> {
    sock.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = vec![0; 65_535];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                // Skip provisional responses.
                if text.starts_with("SIP/2.0 1") {
                    continue;
                }
                return Some(text);
            }
            Err(_) => continue,
        }
    }
    None
}

fn request(method: &str, port: u16, call: &str, to_tag: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:cart1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call}{method}\r\n\
From: <sip:doctor@127.0.0.1>;tag=f{call}\r\nTo: <sip:cart1@127.0.0.1>{to_tag}\r\nCall-ID: {call}\r\n\
CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContact: <sip:doctor@127.0.0.1:{port}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_get_rfc_answers_and_leave_registration_alone() {
    if !have("kamailio") {
        return;
    }
    let k = Kamailio::start(&[("cart1", "pw")], "MD5");
    let (ep, _media) = registered_cart(&k, 0).await;
    let cart = ep.local_addr;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let status_line = |r: Option<String>| r.map(|r| r.lines().next().unwrap_or("").to_string());

    let sdp_ct = "Content-Type: application/sdp\r\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "SDP with no common codec",
            request(
                "INVITE",
                port,
                "c1",
                "",
                sdp_ct,
                "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\n",
            ),
            "SIP/2.0 488",
        ),
        (
            "SDP that is not SDP",
            request("INVITE", port, "c2", "", sdp_ct, "hello"),
            "SIP/2.0 488",
        ),
        (
            "BYE for no dialog",
            request("BYE", port, "c3", ";tag=nosuch", "", ""),
            "SIP/2.0 481",
        ),
        (
            "BYE without To tag",
            request("BYE", port, "c4", "", "", ""),
            "SIP/2.0 481",
        ),
        (
            "OPTIONS",
            request("OPTIONS", port, "c6", "", "", ""),
            "SIP/2.0 200",
        ),
    ];
    for (what, msg, want) in &cases {
        let got = status_line(exchange(&sock, cart, msg));
        println!("{what}: {got:?}");
        assert!(
            got.as_deref().is_some_and(|g| g.starts_with(want)),
            "{what}: {got:?}"
        );
    }
    // An extension method (rsipstack's parser refuses it; the cart's socket answers it).
    let got = exchange(&sock, cart, &request("FROBNICATE", port, "c5", "", "", ""));
    println!("unknown method: {got:?}");
    let got = got.unwrap_or_default();
    assert!(got.starts_with("SIP/2.0 501 "), "{got}");
    assert!(got.contains("Allow: INVITE"), "{got}");
    assert!(got.contains("CSeq: 1 FROBNICATE"), "{got}");
    // A body shorter than its Content-Length: 400 (RFC 3261 §18.3), the stack never sees it.
    let truncated = request("INVITE", port, "c7", "", "", "")
        .replace("Content-Length: 0", "Content-Length: 9999");
    let got = status_line(exchange(&sock, cart, &truncated));
    assert_eq!(got.as_deref(), Some("SIP/2.0 400 Bad Request"), "{got:?}");
    // Junk with nothing to answer to (no request line, no Via, a response, an ACK): dropped,
    // and the cart keeps working.
    let huge = format!(
        "INVITE sip:cart1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKh\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(60_000)
    );
    for junk in [
        "\u{0}\u{1}\u{2}".to_string(),
        "INVITE\r\n\r\n".to_string(),
        "SIP/2.0 200 OK\r\n\r\n".to_string(),
        request("ACK", port, "c10", "", "", "").replace("SIP/2.0\r\n", "SIP/2.0 x\r\n"),
        request("INVITE", port, "c8", "", "", "").replace("Via: SIP/2.0/UDP", "Via: SIP/9.9/XYZ"),
        huge,
    ] {
        let got = status_line(exchange(&sock, cart, &junk));
        println!("junk {:?}: {got:?}", junk.get(..24));
    }
    let got = status_line(exchange(
        &sock,
        cart,
        &request("OPTIONS", port, "c9", "", "", ""),
    ));
    assert_eq!(
        got.as_deref(),
        Some("SIP/2.0 200 OK"),
        "still answering after junk"
    );
    let s = ep.status.borrow().clone();
    assert_eq!(s.registration, "registered", "{s:?}");
    assert!(s.calls_rejected >= 2, "{s:?}");
    assert_eq!(s.unknown_methods, 1, "{s:?}");
    assert_eq!(s.bad_requests, 1, "{s:?}");
    // A loop: the INVITE of the call in progress again on another branch (a forking proxy's
    // two paths meeting at the cart) is a merged request, 482 (RFC 3261 §8.2.2.2), not a second
    // call and not busy.
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let invite = request("INVITE", port, "c11", "", sdp_ct, sdp);
    let got = status_line(exchange(&sock, cart, &invite));
    assert_eq!(got.as_deref(), Some("SIP/2.0 200 OK"), "{got:?}");
    let other_branch = invite.replace("branch=z9hG4bKc11INVITE", "branch=z9hG4bKc11loop");
    let got = status_line(exchange(&sock, cart, &other_branch));
    assert_eq!(got.as_deref(), Some("SIP/2.0 482 Loop Detected"), "{got:?}");
    assert_eq!(
        ep.status.borrow().calls_answered,
        1,
        "{:?}",
        ep.status.borrow()
    );
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_answers_the_carts_call_and_leaves_the_session_refresh_to_it() {
    if !have("kamailio") || !have("sipp") {
        return;
    }
    let sipp_port = free_port(true);
    let k = Kamailio::start_routing(&[("cart1", "pw")], "MD5", "doctor", sipp_port);
    let (ep, _media) = registered_cart(&k, 0).await;
    let sipp =
        tokio::task::spawn_blocking(move || run_sipp("uas_session_timer.xml", None, sipp_port, 90));
    // SIPp binds its port before reading the scenario's first message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ep.commands
        .send(SipCommand::Call("sip:doctor@127.0.0.1".into()))
        .await
        .unwrap();
    let status = ep.status.clone();
    let answered = wait_until(Duration::from_secs(10), || {
        status.borrow().call.as_ref().map(|c| c.1) == Some("answered")
    })
    .await;
    if !answered {
        let _ = ep.commands.send(SipCommand::HangUp).await;
        let (_, out) = sipp.await.unwrap();
        panic!("not answered: {:?}\nSIPp:\n{out}", status.borrow());
    }
    // The refresh is due at 45 s (half of 90); hang up after it.
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(
        status.borrow().call.as_ref().map(|c| c.1),
        Some("answered"),
        "the refreshed call is still up"
    );
    ep.commands.send(SipCommand::HangUp).await.unwrap();
    let (ok, out) = sipp.await.unwrap();
    assert!(
        ok,
        "SIPp (UAS, session timer):\n{out}\n{}",
        k.peer.log_text()
    );
    let klog = k.peer.log_text();
    assert!(
        klog.matches("request INVITE sip:doctor@").count() >= 2,
        "the INVITE (and its digest retry) through Kamailio:\n{klog}"
    );
    assert!(
        klog.contains("in-dialog INVITE"),
        "the refresh through Kamailio's Record-Route:\n{klog}"
    );
    ep.shutdown().await;
}

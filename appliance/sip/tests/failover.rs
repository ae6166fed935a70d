//! Failover to the secondary registrar against two real Kamailio instances: the cart
//! registered with the primary, the primary killed, the cart's keep-alive notices (over TCP
//! the flow is gone: it re-registers, fails fast twice and moves on; over UDP its OPTIONS
//! probe goes unanswered: it moves on at once) and registers with the secondary; a call
//! through the secondary then reaches it. The time from the kill to the secondary's 200 OK is
//! printed (no timed assertion).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};

const CART_PASSWORD: &str = "cart-secret-1";
const DOCTOR_PASSWORD: &str = "doctor-secret-2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_registrar_fails_over_to_the_secondary_over_tcp() {
    fails_over("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_registrar_fails_over_to_the_secondary_over_udp() {
    fails_over("udp").await;
}

async fn fails_over(transport: &str) {
    if !have("kamailio") || !have("baresip") {
        return;
    }
    let users = [("cart1", CART_PASSWORD), ("doctor", DOCTOR_PASSWORD)];
    let primary = Kamailio::start(&users, "MD5");
    let secondary = Kamailio::start(&users, "MD5");
    let port = |k: &Kamailio| if transport == "udp" { k.udp } else { k.tcp };
    let (primary_port, secondary_port) = (port(&primary), port(&secondary));
    let mut config = sip_config(primary_port, transport, &["doctor@127.0.0.1"]);
    config.registrars = vec![
        format!("sip:127.0.0.1:{primary_port}"),
        format!("sip:127.0.0.1:{secondary_port}"),
    ];
    let keepalive = 2;
    config.keepalive_secs = keepalive;
    let media = PipelineMedia::start();
    let ep = telecart_sip::start(config, CART_PASSWORD.into(), media.clone())
        .await
        .unwrap();
    let status = ep.status.clone();
    let on = |port: u16| {
        let s = status.borrow();
        s.registration == "registered"
            && s.registrar
                .as_deref()
                .is_some_and(|r| r.contains(&format!(":{port}")))
    };
    assert!(
        wait_until(Duration::from_secs(10), || on(primary_port)).await,
        "{:?}\n{}",
        status.borrow(),
        primary.peer.log_text()
    );
    // A live registrar answers the keep-alive probes: the cart stays where it is.
    tokio::time::sleep(Duration::from_secs(u64::from(keepalive) * 2 + 1)).await;
    let registrations = status.borrow().registrations;
    assert!(on(primary_port), "{:?}", status.borrow());
    assert_eq!(registrations, 1, "{:?}", status.borrow());

    let killed = Instant::now();
    drop(primary);
    let failed_over = wait_until(Duration::from_secs(30), || on(secondary_port)).await;
    let took = killed.elapsed();
    assert!(
        failed_over,
        "{:?}\nsecondary:\n{}",
        status.borrow(),
        secondary.peer.log_text()
    );
    println!(
        "{transport}: primary killed -> registered with the secondary in {:.2} s (keep-alive every \
         {keepalive} s); REGISTER round trip {:.1} ms",
        took.as_secs_f64(),
        status.borrow().last_register_ms.unwrap_or_default()
    );
    assert!(status.borrow().registrations > registrations);
    assert!(
        secondary
            .peer
            .log_text()
            .contains("REGISTER ok cart1 from 127.0.0.1"),
        "{}",
        secondary.peer.log_text()
    );

    // Reachable through the secondary: baresip registered there calls the cart.
    let mut doctor = Baresip::start("doctor", DOCTOR_PASSWORD, secondary.udp, "");
    assert!(doctor.wait_registered(Duration::from_secs(10)));
    doctor.command("dial", "sip:cart1@127.0.0.1");
    assert!(
        doctor
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "{:?}\n{}",
        doctor.events(),
        secondary.peer.log_text()
    );
    doctor.command("hangup", "");
    assert!(
        wait_until(Duration::from_secs(5), || status.borrow().call.is_none()).await,
        "{:?}",
        status.borrow()
    );
    ep.shutdown().await;
}

//! The client against a scripted server, on virtual time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::codec::attribute::{ErrorCode, types};
use crate::codec::channel::ChannelData;
use crate::codec::credentials::long_term_key;

const USER: &str = "cart";
const PASS: &str = "s3cret";
const REALM: &str = "telecart.test";

fn server() -> SocketAddr {
    "198.51.100.1:3478".parse().unwrap()
}
fn relayed() -> SocketAddr {
    "198.51.100.1:50000".parse().unwrap()
}
fn mapped() -> SocketAddr {
    "203.0.113.5:61000".parse().unwrap()
}
fn peer() -> SocketAddr {
    "192.0.2.77:40000".parse().unwrap()
}

fn md5_key() -> Vec<u8> {
    long_term_key(PasswordAlgorithm::MD5, USER, REALM, PASS).unwrap()
}

/// The scripted server side: builds responses with the crate's own codec.
struct Script {
    key: Vec<u8>,
    sha256: bool,
}

impl Script {
    fn new() -> Self {
        Self {
            key: md5_key(),
            sha256: false,
        }
    }

    fn respond(&self, req: &Message, class: Class, attrs: Vec<Attribute>) -> Vec<u8> {
        let mut m = Message::new(class, req.method, req.transaction_id);
        m.attributes = attrs;
        let integrity = if self.sha256 {
            Integrity::Sha256(&self.key)
        } else {
            Integrity::Sha1(&self.key)
        };
        m.encode(integrity, true).unwrap()
    }

    fn ok(&self, req: &Message, attrs: Vec<Attribute>) -> Vec<u8> {
        self.respond(req, Class::Success, attrs)
    }

    fn error(&self, req: &Message, code: u16, extra: Vec<Attribute>) -> Vec<u8> {
        let mut attrs = vec![Attribute::ErrorCode(ErrorCode {
            code,
            reason: "scripted".into(),
        })];
        attrs.extend(extra);
        let mut m = Message::new(Class::Error, req.method, req.transaction_id);
        m.attributes = attrs;
        m.encode(Integrity::None, true).unwrap()
    }

    fn challenge(&self, req: &Message, code: u16, nonce: &str) -> Vec<u8> {
        self.error(
            req,
            code,
            vec![
                Attribute::Realm(REALM.into()),
                Attribute::Nonce(nonce.into()),
            ],
        )
    }

    fn allocate_ok(&self, req: &Message) -> Vec<u8> {
        self.ok(
            req,
            vec![
                Attribute::XorRelayedAddress(relayed()),
                Attribute::XorMappedAddress(mapped()),
                Attribute::Lifetime(600),
            ],
        )
    }
}

fn decode(bytes: &[u8]) -> Message {
    Message::decode(bytes).unwrap()
}

fn next_request(c: &mut TurnClient) -> Message {
    decode(&c.poll_transmit().expect("a request"))
}

fn attr<T>(m: &Message, f: impl FnMut(&Attribute) -> Option<T>) -> Option<T> {
    m.attributes.iter().find_map(f)
}

fn nonce_of(m: &Message) -> Option<String> {
    attr(m, |a| match a {
        Attribute::Nonce(n) => Some(n.clone()),
        _ => None,
    })
}

fn events(c: &mut TurnClient) -> Vec<TurnEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn config(transport: TurnTransport) -> TurnConfig {
    TurnConfig::new(server(), transport, USER, PASS)
}

/// A client that went through 401 and Allocate success at `t0`.
fn allocated(transport: TurnTransport, t0: Instant) -> (TurnClient, Script) {
    let s = Script::new();
    let mut c = TurnClient::new(config(transport), t0);
    let req = next_request(&mut c);
    c.handle_input(t0, &s.challenge(&req, 401, "n1")).unwrap();
    let req = next_request(&mut c);
    c.handle_input(t0, &s.allocate_ok(&req)).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [TurnEvent::Allocated { .. }]
    ));
    (c, s)
}

#[test]
fn allocate_answers_401_with_long_term_credentials() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);

    let first = next_request(&mut c);
    assert_eq!(
        (first.class, first.method),
        (Class::Request, Method::ALLOCATE)
    );
    assert!(
        first
            .attributes
            .contains(&Attribute::RequestedTransport(17))
    );
    assert!(!first.has_integrity());
    assert!(c.poll_transmit().is_none());

    c.handle_input(t0, &s.challenge(&first, 401, "nonce-1"))
        .unwrap();
    let second = next_request(&mut c);
    assert_ne!(second.transaction_id, first.transaction_id);
    assert!(
        second
            .attributes
            .contains(&Attribute::Username(USER.into()))
    );
    assert!(second.attributes.contains(&Attribute::Realm(REALM.into())));
    assert_eq!(nonce_of(&second).as_deref(), Some("nonce-1"));
    second.verify_integrity(&md5_key()).unwrap();
    assert!(matches!(
        second.attributes.last(),
        Some(Attribute::Fingerprint(_))
    ));

    c.handle_input(t0, &s.allocate_ok(&second)).unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Allocated {
            relayed: relayed(),
            mapped: mapped(),
            lifetime: Duration::from_secs(600)
        }]
    );
    assert_eq!(c.relayed_addr(), Some(relayed()));
    assert_eq!(c.mapped_addr(), Some(mapped()));
    // Refreshed at half the lifetime.
    assert_eq!(
        c.poll_timeout(),
        Some((
            t0 + Duration::from_secs(300),
            TimeoutReason::AllocationRefresh
        ))
    );
}

#[test]
fn wrong_password_fails_on_the_second_401() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    c.handle_input(t0, &s.challenge(&req, 401, "n1")).unwrap();
    let req = next_request(&mut c);
    c.handle_input(t0, &s.challenge(&req, 401, "n1")).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [TurnEvent::Failed(TurnError::AuthenticationFailed(_))]
    ));
    assert!(c.is_finished());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn challenge_without_nonce_fails() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    c.handle_input(
        t0,
        &s.error(&req, 401, vec![Attribute::Realm(REALM.into())]),
    )
    .unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [TurnEvent::Failed(TurnError::AuthenticationFailed(_))]
    ));
}

#[test]
fn allocate_error_is_reported() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    c.handle_input(t0, &s.error(&req, 486, vec![])).unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::ServerError {
            method: "Allocate",
            code: 486,
            reason: "scripted".into()
        })]
    );
}

/// Steps `c` through its timeouts with no answers, recording when it sends.
fn run_silent(c: &mut TurnClient, t0: Instant) -> (Vec<u128>, Option<(u128, TurnEvent)>) {
    let mut sends = Vec::new();
    let mut now = t0;
    while c.poll_transmit().is_some() {
        sends.push(0);
    }
    while let Some((at, _)) = c.poll_timeout() {
        assert!(at >= now, "time never goes backwards");
        now = at;
        c.handle_timeout(now);
        while c.poll_transmit().is_some() {
            sends.push(now.duration_since(t0).as_millis());
        }
        if let Some(e) = c.poll_event() {
            return (sends, Some((now.duration_since(t0).as_millis(), e)));
        }
    }
    (sends, None)
}

#[test]
fn udp_retransmits_on_the_rfc8489_schedule_then_times_out() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    assert_eq!(
        c.poll_timeout(),
        Some((
            t0 + Duration::from_millis(500),
            TimeoutReason::Retransmit(Method::ALLOCATE)
        ))
    );
    let (sends, end) = run_silent(&mut c, t0);
    assert_eq!(sends, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(
        end,
        Some((
            39_500,
            TurnEvent::Failed(TurnError::Timeout { method: "Allocate" })
        ))
    );
}

#[test]
fn custom_rto_scales_the_schedule() {
    let t0 = Instant::now();
    let mut cfg = config(TurnTransport::Udp);
    cfg.rto = Duration::from_millis(100);
    let mut c = TurnClient::new(cfg, t0);
    let (sends, end) = run_silent(&mut c, t0);
    assert_eq!(sends, vec![0, 100, 300, 700, 1500, 3100, 6300]);
    assert_eq!(end.map(|(t, _)| t), Some(7900));
}

#[test]
fn stream_transports_send_once_and_time_out_after_ti() {
    for transport in [TurnTransport::Tcp, TurnTransport::Tls] {
        let t0 = Instant::now();
        let mut c = TurnClient::new(config(transport), t0);
        assert_eq!(
            c.poll_timeout(),
            Some((
                t0 + Duration::from_millis(39_500),
                TimeoutReason::TransactionTimeout(Method::ALLOCATE)
            ))
        );
        let (sends, end) = run_silent(&mut c, t0);
        assert_eq!(sends, vec![0]);
        assert_eq!(end.map(|(t, _)| t), Some(39_500));
    }
}

#[test]
fn retransmission_is_stopped_by_the_answer() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    c.handle_timeout(t0 + Duration::from_millis(500));
    // The retransmission is the same request, byte for byte.
    assert_eq!(next_request(&mut c), req);
    c.handle_input(
        t0 + Duration::from_millis(600),
        &s.challenge(&req, 401, "n"),
    )
    .unwrap();
    // A duplicate answer to the retransmission is ignored.
    c.handle_input(
        t0 + Duration::from_millis(601),
        &s.challenge(&req, 401, "n"),
    )
    .unwrap();
    let req2 = next_request(&mut c);
    assert!(req2.has_integrity());
    assert!(c.poll_transmit().is_none());
    // The new request has its own schedule from 600 ms.
    assert_eq!(
        c.poll_timeout().map(|(t, _)| t),
        Some(t0 + Duration::from_millis(1100))
    );
}

#[test]
fn refresh_retries_with_the_new_nonce_on_438() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    let t1 = t0 + Duration::from_secs(300);
    c.handle_timeout(t1);
    let refresh = next_request(&mut c);
    assert_eq!(refresh.method, Method::REFRESH);
    assert!(refresh.attributes.contains(&Attribute::Lifetime(600)));
    assert_eq!(nonce_of(&refresh).as_deref(), Some("n1"));
    c.handle_input(t1, &s.challenge(&refresh, 438, "n2"))
        .unwrap();
    let again = next_request(&mut c);
    assert_eq!(again.method, Method::REFRESH);
    assert_eq!(nonce_of(&again).as_deref(), Some("n2"));
    again.verify_integrity(&md5_key()).unwrap();
    c.handle_input(t1, &s.ok(&again, vec![Attribute::Lifetime(600)]))
        .unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Refreshed {
            lifetime: Duration::from_secs(600)
        }]
    );
    assert_eq!(
        c.poll_timeout(),
        Some((
            t1 + Duration::from_secs(300),
            TimeoutReason::AllocationRefresh
        ))
    );
    // Later requests carry the new nonce too.
    c.send_to(t1, peer(), b"x").unwrap();
    assert_eq!(nonce_of(&next_request(&mut c)).as_deref(), Some("n2"));
}

#[test]
fn endless_stale_nonces_give_up() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    c.handle_timeout(t0 + Duration::from_secs(300));
    for i in 0..10 {
        let Some(bytes) = c.poll_transmit() else {
            break;
        };
        let req = decode(&bytes);
        c.handle_input(t0, &s.challenge(&req, 438, &format!("stale{i}")))
            .unwrap();
    }
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::TooManyRetries(
            "438 Stale Nonce"
        ))]
    );
}

#[test]
fn refresh_failure_loses_the_allocation() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    c.handle_timeout(t0 + Duration::from_secs(300));
    let req = next_request(&mut c);
    c.handle_input(t0, &s.error(&req, 437, vec![])).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [TurnEvent::Failed(TurnError::ServerError { code: 437, .. })]
    ));
}

#[test]
fn refresh_timeout_is_retried_while_the_allocation_lasts() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Tcp, t0);
    let t1 = t0 + Duration::from_secs(300);
    c.handle_timeout(t1);
    let _lost = next_request(&mut c);
    let t2 = t1 + Duration::from_millis(39_500);
    assert_eq!(
        c.poll_timeout(),
        Some((t2, TimeoutReason::TransactionTimeout(Method::REFRESH)))
    );
    // The timed-out refresh is sent again at once: 260 s of the allocation are left.
    c.handle_timeout(t2);
    let retry = next_request(&mut c);
    assert_eq!(retry.method, Method::REFRESH);
    c.handle_input(t2, &s.ok(&retry, vec![Attribute::Lifetime(600)]))
        .unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [TurnEvent::Refreshed { .. }]
    ));
}

/// Answers the CreatePermission and ChannelBind that a first `send_to` starts.
fn grant(c: &mut TurnClient, s: &Script, now: Instant) -> Vec<Vec<u8>> {
    let mut data = Vec::new();
    let mut pending = Vec::new();
    while let Some(bytes) = c.poll_transmit() {
        pending.push(bytes);
    }
    for bytes in pending {
        let m = decode(&bytes);
        match (m.class, m.method) {
            (Class::Request, Method::CREATE_PERMISSION | Method::CHANNEL_BIND) => {
                m.verify_integrity(&md5_key()).unwrap();
                c.handle_input(now, &s.ok(&m, vec![])).unwrap();
            }
            _ => data.push(bytes),
        }
    }
    while let Some(bytes) = c.poll_transmit() {
        data.push(bytes);
    }
    data
}

#[test]
fn send_to_creates_permission_then_binds_channel() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);

    c.send_to(t0, peer(), b"first").unwrap();
    c.send_to(t0, peer(), b"second").unwrap();
    let perm = next_request(&mut c);
    assert_eq!(perm.method, Method::CREATE_PERMISSION);
    assert!(
        perm.attributes
            .contains(&Attribute::XorPeerAddress(SocketAddr::new(peer().ip(), 0)))
    );
    let bind = next_request(&mut c);
    assert_eq!(bind.method, Method::CHANNEL_BIND);
    assert!(bind.attributes.contains(&Attribute::ChannelNumber(0x4000)));
    assert!(bind.attributes.contains(&Attribute::XorPeerAddress(peer())));
    // Data waits for the permission.
    assert!(c.poll_transmit().is_none());

    c.handle_input(t0, &s.ok(&perm, vec![])).unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::PermissionCreated(peer().ip())]
    );
    for expected in [&b"first"[..], b"second"] {
        let ind = next_request(&mut c);
        assert_eq!((ind.class, ind.method), (Class::Indication, Method::SEND));
        assert!(ind.attributes.contains(&Attribute::XorPeerAddress(peer())));
        assert!(ind.attributes.contains(&Attribute::Data(expected.to_vec())));
    }
    // Before the channel is bound: Send indications.
    c.send_to(t0, peer(), b"third").unwrap();
    assert_eq!(next_request(&mut c).method, Method::SEND);

    c.handle_input(t0, &s.ok(&bind, vec![])).unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::ChannelBound {
            peer: peer(),
            channel: 0x4000
        }]
    );
    assert_eq!(c.channel_of(peer()), Some(0x4000));
    c.send_to(t0, peer(), b"fourth!").unwrap();
    let bytes = c.poll_transmit().unwrap();
    // UDP: no padding.
    assert_eq!(
        bytes,
        ChannelData::encode(0x4000, b"fourth!", false).unwrap()
    );
    assert!(c.poll_transmit().is_none());
}

#[test]
fn channel_data_is_padded_over_streams() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Tls, t0);
    c.send_to(t0, peer(), b"abc").unwrap();
    grant(&mut c, &s, t0);
    events(&mut c);
    c.send_to(t0, peer(), b"abcde").unwrap();
    let bytes = c.poll_transmit().unwrap();
    assert_eq!(bytes.len(), 12);
    assert_eq!(bytes, ChannelData::encode(0x4000, b"abcde", true).unwrap());
}

#[test]
fn each_peer_gets_its_own_channel_and_one_permission_per_ip() {
    let t0 = Instant::now();
    let (mut c, _s) = allocated(TurnTransport::Udp, t0);
    let p2: SocketAddr = "192.0.2.77:40002".parse().unwrap();
    c.send_to(t0, peer(), b"a").unwrap();
    c.send_to(t0, p2, b"b").unwrap();
    let reqs: Vec<Message> = std::iter::from_fn(|| c.poll_transmit())
        .map(|b| decode(&b))
        .collect();
    let perms = reqs
        .iter()
        .filter(|m| m.method == Method::CREATE_PERMISSION)
        .count();
    let chans: Vec<u16> = reqs
        .iter()
        .filter_map(|m| {
            attr(m, |a| match a {
                Attribute::ChannelNumber(n) => Some(*n),
                _ => None,
            })
        })
        .collect();
    assert_eq!(perms, 1);
    assert_eq!(chans, vec![0x4000, 0x4001]);
}

#[test]
fn incoming_data_indication_and_channel_data() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    let ind = Message::new(Class::Indication, Method::DATA, TransactionId::random())
        .with(Attribute::XorPeerAddress(peer()))
        .with(Attribute::Data(b"hi there".to_vec()))
        .encode(Integrity::None, false)
        .unwrap();
    c.handle_input(t0, &ind).unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Data {
            peer: peer(),
            data: b"hi there".to_vec()
        }]
    );
    // ChannelData on a channel nobody bound is refused.
    let cd = ChannelData::encode(0x4000, b"x", false).unwrap();
    assert_eq!(
        c.handle_input(t0, &cd),
        Err(TurnError::InvalidChannelNumber(0x4000))
    );
    c.send_to(t0, peer(), b"a").unwrap();
    grant(&mut c, &s, t0);
    events(&mut c);
    c.handle_input(t0, &cd).unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Data {
            peer: peer(),
            data: b"x".to_vec()
        }]
    );
    // A Data indication without DATA is refused.
    let bad = Message::new(Class::Indication, Method::DATA, TransactionId::random())
        .with(Attribute::XorPeerAddress(peer()))
        .encode(Integrity::None, false)
        .unwrap();
    assert!(matches!(
        c.handle_input(t0, &bad),
        Err(TurnError::MissingAttribute { attr: "DATA", .. })
    ));
}

#[test]
fn permissions_and_channels_are_refreshed_while_used_and_dropped_when_not() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    c.send_to(t0, peer(), b"a").unwrap();
    grant(&mut c, &s, t0);
    events(&mut c);

    // Keep using it; the allocation refresh at 300 s is answered too.
    let mut now = t0;
    let mut refreshed_perm = Vec::new();
    let mut refreshed_chan = Vec::new();
    while now < t0 + Duration::from_secs(600) {
        now += Duration::from_secs(10);
        c.handle_timeout(now);
        c.send_to(now, peer(), b"keepalive").unwrap();
        while let Some(bytes) = c.poll_transmit() {
            let m = match Message::decode(&bytes) {
                Ok(m) => m,
                Err(_) => continue, // ChannelData
            };
            match m.method {
                Method::CREATE_PERMISSION => refreshed_perm.push(now.duration_since(t0).as_secs()),
                Method::CHANNEL_BIND => refreshed_chan.push(now.duration_since(t0).as_secs()),
                _ => {}
            }
            if m.class == Class::Request {
                let attrs = if m.method == Method::REFRESH {
                    vec![Attribute::Lifetime(600)]
                } else {
                    vec![]
                };
                c.handle_input(now, &s.ok(&m, attrs)).unwrap();
            }
        }
    }
    assert_eq!(refreshed_perm, vec![240, 480]);
    assert_eq!(refreshed_chan, vec![540]);
    assert_eq!(c.channel_of(peer()), Some(0x4000));

    // Now stop using the peer. Each is refreshed once more for the use since its last
    // refresh (permission at 720 s, channel at 1080 s), then dropped without a request.
    let end = t0 + Duration::from_secs(2000);
    let mut late = Vec::new();
    while let Some((at, _)) = c.poll_timeout() {
        if at > end {
            break;
        }
        now = at;
        c.handle_timeout(now);
        while let Some(bytes) = c.poll_transmit() {
            let m = decode(&bytes);
            if m.method != Method::REFRESH {
                late.push((m.method, now.duration_since(t0).as_secs()));
            }
            let attrs = if m.method == Method::REFRESH {
                vec![Attribute::Lifetime(600)]
            } else {
                vec![]
            };
            c.handle_input(now, &s.ok(&m, attrs)).unwrap();
        }
    }
    assert_eq!(
        late,
        vec![
            (Method::CREATE_PERMISSION, 720),
            (Method::CHANNEL_BIND, 1080)
        ]
    );
    assert_eq!(c.channel_of(peer()), None);
    assert!(!c.has_permission(peer().ip()));
}

#[test]
fn permission_failure_is_reported_and_sends_fail_for_a_while() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    c.send_to(t0, peer(), b"a").unwrap();
    let perm = next_request(&mut c);
    let bind = next_request(&mut c);
    c.handle_input(t0, &s.error(&perm, 403, vec![])).unwrap();
    c.handle_input(t0, &s.error(&bind, 403, vec![])).unwrap();
    let ev = events(&mut c);
    assert!(matches!(
        ev.as_slice(),
        [
            TurnEvent::PermissionFailed { .. },
            TurnEvent::ChannelBindFailed { .. }
        ]
    ));
    assert!(matches!(
        c.send_to(t0 + Duration::from_secs(1), peer(), b"b"),
        Err(TurnError::ServerError { code: 403, .. })
    ));
    assert!(c.poll_transmit().is_none());
    // The allocation itself is fine.
    assert!(c.is_allocated());
    // After the back-off, a new attempt.
    let later = t0 + Duration::from_secs(31);
    c.handle_timeout(later);
    c.send_to(later, peer(), b"c").unwrap();
    assert_eq!(next_request(&mut c).method, Method::CREATE_PERMISSION);
}

#[test]
fn close_sends_refresh_with_lifetime_zero() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    c.close(t0);
    let req = next_request(&mut c);
    assert_eq!(req.method, Method::REFRESH);
    assert!(req.attributes.contains(&Attribute::Lifetime(0)));
    req.verify_integrity(&md5_key()).unwrap();
    assert!(c.send_to(t0, peer(), b"x").is_err());
    c.handle_input(t0, &s.ok(&req, vec![Attribute::Lifetime(0)]))
        .unwrap();
    assert_eq!(events(&mut c), vec![TurnEvent::Closed]);
    assert!(c.is_finished());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn close_completes_even_if_the_server_is_gone() {
    let t0 = Instant::now();
    let (mut c, _s) = allocated(TurnTransport::Udp, t0);
    c.close(t0);
    let (_, end) = run_silent(&mut c, t0);
    assert_eq!(end, Some((39_500, TurnEvent::Closed)));
}

#[test]
fn close_before_allocation_is_immediate() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let _ = c.poll_transmit();
    c.close(t0);
    assert_eq!(events(&mut c), vec![TurnEvent::Closed]);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn try_alternate_redirects_the_allocation() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Tls), t0);
    let req = next_request(&mut c);
    let alt: SocketAddr = "198.51.100.2:443".parse().unwrap();
    c.handle_input(
        t0,
        &s.error(
            &req,
            300,
            vec![
                Attribute::AlternateServer(alt),
                Attribute::AlternateDomain("turn2.example.org".into()),
            ],
        ),
    )
    .unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Redirected {
            server: alt,
            domain: Some("turn2.example.org".into())
        }]
    );
    assert_eq!(c.server(), alt);
    let again = next_request(&mut c);
    assert_eq!(again.method, Method::ALLOCATE);
    assert!(!again.has_integrity());
    // A redirect back to where we are is refused.
    c.handle_input(
        t0,
        &s.error(&again, 300, vec![Attribute::AlternateServer(alt)]),
    )
    .unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::BadAlternate(alt))]
    );
}

#[test]
fn unauthenticated_redirect_of_an_authenticated_request_is_refused() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    c.handle_input(t0, &s.challenge(&req, 401, "n")).unwrap();
    let req = next_request(&mut c);
    // Forged 300 without integrity: dropped, the transaction goes on.
    let forged = s.error(
        &req,
        300,
        vec![Attribute::AlternateServer("6.6.6.6:3478".parse().unwrap())],
    );
    assert!(matches!(
        c.handle_input(t0, &forged),
        Err(TurnError::IntegrityMismatch(_))
    ));
    assert!(events(&mut c).is_empty());
    c.handle_input(t0, &s.allocate_ok(&req)).unwrap();
    assert!(c.is_allocated());
}

#[test]
fn responses_with_bad_integrity_are_dropped_over_udp() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    let s = Script::new();
    c.handle_input(t0, &s.challenge(&req, 401, "n")).unwrap();
    let req = next_request(&mut c);
    let wrong = Script {
        key: b"not the key".to_vec(),
        sha256: false,
    };
    assert_eq!(
        c.handle_input(t0, &wrong.allocate_ok(&req)),
        Err(TurnError::IntegrityMismatch("HMAC does not match"))
    );
    // A success without any integrity is not accepted either.
    let mut plain = Message::new(Class::Success, Method::ALLOCATE, req.transaction_id);
    plain.attributes = vec![
        Attribute::XorRelayedAddress(relayed()),
        Attribute::XorMappedAddress(mapped()),
    ];
    assert!(matches!(
        c.handle_input(t0, &plain.encode(Integrity::None, false).unwrap()),
        Err(TurnError::IntegrityMismatch(_))
    ));
    assert!(events(&mut c).is_empty());
    assert!(!c.is_allocated());
    // The genuine answer still works.
    c.handle_input(t0, &s.allocate_ok(&req)).unwrap();
    assert!(c.is_allocated());
}

#[test]
fn responses_with_bad_integrity_fail_the_transaction_over_tcp() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Tcp), t0);
    let req = next_request(&mut c);
    let s = Script::new();
    c.handle_input(t0, &s.challenge(&req, 401, "n")).unwrap();
    let req = next_request(&mut c);
    let wrong = Script {
        key: b"not the key".to_vec(),
        sha256: false,
    };
    assert!(c.handle_input(t0, &wrong.allocate_ok(&req)).is_err());
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::IntegrityMismatch(
            "HMAC does not match"
        ))]
    );
}

#[test]
fn unknown_required_attribute_in_a_response_fails_it() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    let mut m = Message::new(Class::Error, Method::ALLOCATE, req.transaction_id);
    m.attributes = vec![
        Attribute::ErrorCode(ErrorCode {
            code: 401,
            reason: "Unauthorized".into(),
        }),
        Attribute::Other {
            typ: 0x0042,
            value: vec![],
        },
    ];
    assert_eq!(
        c.handle_input(t0, &m.encode(Integrity::None, true).unwrap()),
        Err(TurnError::UnknownRequiredAttributes(vec![0x0042]))
    );
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::UnknownRequiredAttributes(
            vec![0x0042]
        ))]
    );
}

#[test]
fn sha256_password_algorithm_is_negotiated() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    let offered = vec![
        PasswordAlgorithm::new(PasswordAlgorithm::MD5),
        PasswordAlgorithm::new(PasswordAlgorithm::SHA256),
    ];
    let nonce = "obMatJos2AAABxyz";
    let s = Script::new();
    c.handle_input(
        t0,
        &s.error(
            &req,
            401,
            vec![
                Attribute::Realm(REALM.into()),
                Attribute::Nonce(nonce.into()),
                Attribute::PasswordAlgorithms(offered.clone()),
            ],
        ),
    )
    .unwrap();
    let req = next_request(&mut c);
    assert!(
        req.attributes
            .contains(&Attribute::PasswordAlgorithms(offered))
    );
    assert!(
        req.attributes
            .contains(&Attribute::PasswordAlgorithm(PasswordAlgorithm::new(
                PasswordAlgorithm::SHA256
            )))
    );
    assert!(
        req.attributes
            .iter()
            .any(|a| a.typ() == types::MESSAGE_INTEGRITY_SHA256)
    );
    assert!(
        !req.attributes
            .iter()
            .any(|a| a.typ() == types::MESSAGE_INTEGRITY)
    );
    let key = long_term_key(PasswordAlgorithm::SHA256, USER, REALM, PASS).unwrap();
    req.verify_integrity(&key).unwrap();
    let s256 = Script { key, sha256: true };
    c.handle_input(t0, &s256.allocate_ok(&req)).unwrap();
    assert!(c.is_allocated());
}

#[test]
fn stripped_password_algorithms_is_a_downgrade_and_fails() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    let s = Script::new();
    c.handle_input(t0, &s.challenge(&req, 401, "obMatJos2AAABxyz"))
        .unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [TurnEvent::Failed(TurnError::AuthenticationFailed(_))]
    ));
}

#[test]
fn stream_input_split_at_every_byte_boundary() {
    let t0 = Instant::now();
    let s = Script::new();

    // Transaction IDs are random, so each client gets responses built for its requests.
    for split in 0..200usize {
        let mut c = TurnClient::new(config(TurnTransport::Tcp), t0);
        let req1 = next_request(&mut c);
        let challenge = s.challenge(&req1, 401, "n1");
        let data = Message::new(Class::Indication, Method::DATA, TransactionId::random())
            .with(Attribute::XorPeerAddress(peer()))
            .with(Attribute::Data(vec![7; 13]))
            .encode(Integrity::None, true)
            .unwrap();
        // First read: the challenge and part of a Data indication.
        let mut stream = challenge.clone();
        stream.extend_from_slice(&data);
        let cut = split.min(stream.len());
        c.handle_input(t0, &stream[..cut]).unwrap();
        c.handle_input(t0, &stream[cut..]).unwrap();
        let req2 = next_request(&mut c);
        assert!(req2.has_integrity(), "split {split}");
        // Second read: the success and a ChannelData for a bound channel, split again.
        let ok = s.allocate_ok(&req2);
        let cut2 = split % (ok.len() + 1);
        c.handle_input(t0, &ok[..cut2]).unwrap();
        c.handle_input(t0, &ok[cut2..]).unwrap();
        let ev = events(&mut c);
        assert_eq!(ev.len(), 2, "split {split}: {ev:?}");
        assert!(matches!(ev[0], TurnEvent::Data { .. }));
        assert!(matches!(ev[1], TurnEvent::Allocated { .. }));
    }
}

#[test]
fn garbage_on_a_stream_fails_the_client() {
    let t0 = Instant::now();
    let mut c = TurnClient::new(config(TurnTransport::Tcp), t0);
    let _ = c.poll_transmit();
    assert_eq!(
        c.handle_input(t0, &[0x80, 1, 2, 3]),
        Err(TurnError::StreamFraming(0x80))
    );
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Failed(TurnError::StreamFraming(0x80))]
    );
    assert_eq!(c.handle_input(t0, &[0]), Err(TurnError::Closed));
}

#[test]
fn garbage_over_udp_is_dropped_and_the_client_goes_on() {
    let t0 = Instant::now();
    let (mut c, _s) = allocated(TurnTransport::Udp, t0);
    for bad in [
        &[][..],
        &[0x80, 0, 0, 0],
        &[0x00, 0x01],
        &[0x40, 0x00, 0x00, 0x09, 1],
    ] {
        assert!(c.handle_input(t0, bad).is_err());
    }
    assert!(events(&mut c).is_empty());
    assert!(c.is_allocated());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Random bytes from the "server" never panic the client, over UDP or a stream, in any
    /// state.
    #[test]
    fn random_input_never_panics(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..6),
        stream in any::<bool>(),
        allocate in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let transport = if stream { TurnTransport::Tcp } else { TurnTransport::Udp };
        let mut c = if allocate {
            allocated(transport, t0).0
        } else {
            TurnClient::new(config(transport), t0)
        };
        for chunk in &chunks {
            let _ = c.handle_input(t0, chunk);
        }
        c.handle_timeout(t0 + Duration::from_secs(1));
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
    }

    /// A valid response prefix with random attribute bytes never panics the client.
    #[test]
    fn random_responses_never_panic(body in proptest::collection::vec(any::<u8>(), 0..120)) {
        let t0 = Instant::now();
        let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
        let req = next_request(&mut c);
        for class in [0x01u8, 0x11] {
            let len = body.len() - body.len() % 4;
            let mut bytes = vec![class, 0x03, 0, 0];
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            bytes.extend_from_slice(&0x2112A442u32.to_be_bytes());
            bytes.extend_from_slice(&req.transaction_id.0);
            bytes.extend_from_slice(&body[..len]);
            let _ = c.handle_input(t0, &bytes);
        }
        while c.poll_event().is_some() {}
    }
}

#[test]
fn ip_of_permission_ignores_port() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    c.send_to(t0, peer(), b"a").unwrap();
    grant(&mut c, &s, t0);
    assert!(c.has_permission(IpAddr::from([192, 0, 2, 77])));
}

#[test]
fn explicit_refresh_and_stats() {
    let t0 = Instant::now();
    let (mut c, s) = allocated(TurnTransport::Udp, t0);
    c.refresh(t0).unwrap();
    // A second call while the first is in flight sends nothing more.
    c.refresh(t0).unwrap();
    let req = next_request(&mut c);
    assert_eq!(req.method, Method::REFRESH);
    assert!(c.poll_transmit().is_none());
    c.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(next_request(&mut c), req);
    c.handle_input(t0, &s.challenge(&req, 438, "n2")).unwrap();
    let req = next_request(&mut c);
    c.handle_input(t0, &s.ok(&req, vec![Attribute::Lifetime(300)]))
        .unwrap();
    assert_eq!(
        events(&mut c),
        vec![TurnEvent::Refreshed {
            lifetime: Duration::from_secs(300)
        }]
    );
    c.send_to(t0, peer(), b"a").unwrap();
    grant(&mut c, &s, t0);
    c.send_to(t0, peer(), b"b").unwrap();
    let _ = c.handle_input(t0, &[0xff]);
    let stats = c.stats();
    assert_eq!(stats.retransmissions, 1);
    assert_eq!(stats.stale_nonces, 1);
    assert_eq!(stats.send_indications, 1);
    assert_eq!(stats.channel_data_sent, 1);
    assert_eq!(stats.dropped_inputs, 1);
    c.close(t0);
    assert_eq!(c.refresh(t0), Err(TurnError::NotAllocated("refresh")));
}

#[test]
fn truncated_and_corrupted_responses_are_dropped_without_effect() {
    let t0 = Instant::now();
    let s = Script::new();
    let mut c = TurnClient::new(config(TurnTransport::Udp), t0);
    let req = next_request(&mut c);
    c.handle_input(t0, &s.challenge(&req, 401, "n")).unwrap();
    let req = next_request(&mut c);
    let good = s.allocate_ok(&req);
    for n in 0..good.len() {
        assert!(c.handle_input(t0, &good[..n]).is_err(), "prefix {n}");
    }
    // Wrong length field.
    let mut bad = good.clone();
    bad[3] = bad[3].wrapping_add(4);
    assert!(c.handle_input(t0, &bad).is_err());
    // Bad fingerprint.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(
        c.handle_input(t0, &bad),
        Err(TurnError::FingerprintMismatch)
    );
    // Every single-bit flip in the body is caught by FINGERPRINT or MESSAGE-INTEGRITY.
    for i in 20..good.len() - 8 {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert!(c.handle_input(t0, &bad).is_err(), "flip at {i}");
    }
    assert!(events(&mut c).is_empty());
    assert!(!c.is_allocated());
    c.handle_input(t0, &good).unwrap();
    assert!(c.is_allocated());
}

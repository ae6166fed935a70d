//! Interop against a real coturn (Debian package `coturn`), started by each test on
//! 127.0.0.1 with ports chosen at run time and stopped by a drop guard.
//!
//! Over UDP, TCP and TLS: allocate, create a permission for a local UDP peer, relay data both
//! ways, bind a channel and relay through it, refresh, close. Also: the STUN Binding helper,
//! a wrong password, and 438 Stale Nonce with coturn's short nonce lifetime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use telecart_turn::{TlsOptions, TurnConfig, TurnError, TurnSocket, TurnTransport, stun_binding};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const USER: &str = "cart7";
const PASS: &str = "pa55-word";
const REALM: &str = "telecart.test";
const TLS_NAME: &str = "turn.telecart.test";
/// Upper bound for any single step, so a broken server fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(10);

/// A running turnserver, killed (exactly that process) and reaped on drop.
struct Coturn {
    child: Child,
    port: u16,
    tls_port: u16,
    /// The relay port range.
    relay: std::ops::Range<u16>,
    ca_der: Vec<u8>,
    dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut log = String::new();
            if let Ok(mut f) = File::open(self.log_path()) {
                let _ = f.read_to_string(&mut log);
            }
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- turnserver log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Coturn {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("turnserver.log")
    }

    fn addr(&self, transport: TurnTransport) -> SocketAddr {
        let port = match transport {
            TurnTransport::Tls => self.tls_port,
            _ => self.port,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn tls(&self) -> TlsOptions {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone().into()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsOptions {
            config: Arc::new(config),
            server_name: TLS_NAME.try_into().unwrap(),
        }
    }

    fn config(&self, transport: TurnTransport) -> TurnConfig {
        TurnConfig::new(self.addr(transport), transport, USER, PASS)
    }

    async fn connect(&self, transport: TurnTransport) -> TurnSocket {
        let tls = (transport == TurnTransport::Tls).then(|| self.tls());
        timeout(STEP, TurnSocket::connect(self.config(transport), tls))
            .await
            .expect("allocation within 10 s")
            .expect("allocation")
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let udp = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `n` consecutive UDP ports free right now, for coturn's relay range.
fn free_udp_range(n: u16) -> u16 {
    loop {
        let base = StdUdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base.checked_add(n).is_none() {
            continue;
        }
        if (base..base + n).all(|p| StdUdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

/// A private CA and a server certificate for [`TLS_NAME`] signed by it.
fn certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "telecart test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec![TLS_NAME.to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, TLS_NAME);
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (cert, key, ca.der().to_vec())
}

fn start_coturn(extra: &[&str]) -> Coturn {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_der) = certificates(dir.path());
    let port = free_port();
    let tls_port = free_port();
    let relay = free_udp_range(40);
    let log = File::create(dir.path().join("turnserver.log")).unwrap();
    let mut cmd = Command::new("turnserver");
    cmd.arg("-n")
        .arg("--listening-ip=127.0.0.1")
        .arg("--relay-ip=127.0.0.1")
        .arg(format!("--listening-port={port}"))
        .arg(format!("--tls-listening-port={tls_port}"))
        .arg(format!("--min-port={relay}"))
        .arg(format!("--max-port={}", relay + 39))
        .arg("--lt-cred-mech")
        .arg(format!("--user={USER}:{PASS}"))
        .arg(format!("--realm={REALM}"))
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--pkey={}", key.display()))
        .arg(format!("--userdb={}", dir.path().join("turndb").display()))
        .arg(format!(
            "--pidfile={}",
            dir.path().join("turnserver.pid").display()
        ))
        .arg("--no-cli")
        .arg("--no-dtls")
        .arg("--allow-loopback-peers")
        .arg("--log-file=stdout")
        .arg("--simple-log")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`turnserver` is not installed: these interop tests need coturn. \
             Install the Debian package `coturn` (apt-get install -y coturn)."
        ),
        Err(e) => panic!("cannot start turnserver: {e}"),
    };
    let coturn = Coturn {
        child,
        port,
        tls_port,
        relay: relay..relay + 40,
        ca_der,
        dir,
    };
    // Ready when both TCP listeners accept (the UDP listener is set up before them).
    let deadline = Instant::now() + STEP;
    for p in [port, tls_port] {
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(
                Instant::now() < deadline,
                "turnserver did not listen on {p}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    coturn
}

/// The whole life of an allocation against coturn.
async fn relay_round_trip(transport: TurnTransport) {
    let coturn = start_coturn(&[]);
    let turn = coturn.connect(transport).await;
    let relayed = turn.relayed_addr();
    assert_eq!(relayed.ip(), coturn.addr(transport).ip());
    assert!(coturn.relay.contains(&relayed.port()));
    // On loopback the server sees our own socket.
    assert_eq!(turn.mapped_addr(), turn.local_addr());

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];

    // Client -> relay -> peer (permission created on the way, Send indication).
    turn.send_to(peer_addr, b"hello peer").await.unwrap();
    let (n, from) = timeout(STEP, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"hello peer"[..], relayed));

    // Peer -> relay -> client.
    peer.send_to(b"hello cart", relayed).await.unwrap();
    let (from, data) = timeout(STEP, turn.recv_from()).await.unwrap().unwrap();
    assert_eq!((from, data.as_slice()), (peer_addr, &b"hello cart"[..]));

    // The channel was requested with the first send; wait until coturn confirmed it.
    let deadline = Instant::now() + STEP;
    while turn.channel_of(peer_addr).is_none() {
        assert!(Instant::now() < deadline, "no channel bound");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(turn.channel_of(peer_addr), Some(0x4000));

    // Through the channel, both ways, with sizes that exercise padding on streams.
    let before = turn.stats();
    for len in [1usize, 2, 3, 4, 5, 1200] {
        let out: Vec<u8> = (0..len).map(|i| i as u8).collect();
        turn.send_to(peer_addr, &out).await.unwrap();
        let (n, from) = timeout(STEP, peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&out[..], relayed));

        let back: Vec<u8> = out.iter().map(|b| b ^ 0x5A).collect();
        peer.send_to(&back, relayed).await.unwrap();
        let (from, data) = timeout(STEP, turn.recv_from()).await.unwrap().unwrap();
        assert_eq!((from, data), (peer_addr, back));
    }
    let after = turn.stats();
    assert_eq!(after.channel_data_sent - before.channel_data_sent, 6);
    assert_eq!(
        after.channel_data_received - before.channel_data_received,
        6
    );
    assert_eq!(after.send_indications, before.send_indications);

    // Refresh, then close (Refresh with lifetime 0).
    let lifetime = timeout(STEP, turn.refresh()).await.unwrap().unwrap();
    assert!(lifetime >= Duration::from_secs(60), "{lifetime:?}");
    timeout(STEP, turn.close()).await.unwrap().unwrap();

    // After the release, a new allocation from a new connection works.
    let again = coturn.connect(transport).await;
    again.send_to(peer_addr, b"after close").await.unwrap();
    let (n, _) = timeout(STEP, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"after close");
    timeout(STEP, again.close()).await.unwrap().unwrap();
}

#[tokio::test]
async fn coturn_udp() {
    relay_round_trip(TurnTransport::Udp).await;
}

#[tokio::test]
async fn coturn_tcp() {
    relay_round_trip(TurnTransport::Tcp).await;
}

#[tokio::test]
async fn coturn_tls() {
    relay_round_trip(TurnTransport::Tls).await;
}

#[tokio::test]
async fn coturn_rejects_a_wrong_password() {
    let coturn = start_coturn(&[]);
    for transport in [TurnTransport::Udp, TurnTransport::Tcp] {
        let mut config = coturn.config(transport);
        config.password = "not-it".into();
        let result = timeout(STEP, TurnSocket::connect(config, None))
            .await
            .unwrap();
        assert!(
            matches!(result, Err(TurnError::AuthenticationFailed(_))),
            "{transport:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn coturn_tls_checks_the_certificate_name() {
    let coturn = start_coturn(&[]);
    let mut tls = coturn.tls();
    tls.server_name = "wrong.telecart.test".try_into().unwrap();
    let result = timeout(
        STEP,
        TurnSocket::connect(coturn.config(TurnTransport::Tls), Some(tls)),
    )
    .await
    .unwrap();
    assert!(matches!(result, Err(TurnError::Io { .. })), "{result:?}");
}

#[tokio::test]
async fn coturn_stale_nonce_is_retried() {
    // Nonces live one second: after waiting, the next request draws 438 Stale Nonce.
    let coturn = start_coturn(&["--stale-nonce=1"]);
    let turn = coturn.connect(TurnTransport::Udp).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    timeout(STEP, turn.refresh()).await.unwrap().unwrap();
    assert!(turn.stats().stale_nonces >= 1, "{:?}", turn.stats());
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    turn.send_to(peer.local_addr().unwrap(), b"still here")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = timeout(STEP, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"still here");
    timeout(STEP, turn.close()).await.unwrap().unwrap();
}

#[tokio::test]
async fn coturn_stun_binding() {
    let coturn = start_coturn(&[]);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mapped = timeout(STEP, stun_binding(&socket, coturn.addr(TurnTransport::Udp)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mapped, socket.local_addr().unwrap());
}

#[tokio::test]
async fn coturn_try_alternate_redirects_to_the_other_server() {
    // Server A sends every Allocate to server B with 300 Try Alternate.
    let b = start_coturn(&[]);
    for transport in [TurnTransport::Udp, TurnTransport::Tcp] {
        let alt = format!("--alternate-server={}", b.addr(transport));
        let a = start_coturn(&[&alt]);
        let turn = a.connect(transport).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        turn.send_to(peer.local_addr().unwrap(), b"via B")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = timeout(STEP, peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"via B"[..], turn.relayed_addr()));
        // The relay lives on B.
        assert!(b.relay.contains(&turn.relayed_addr().port()));
        assert!(!a.relay.contains(&turn.relayed_addr().port()));
        timeout(STEP, turn.close()).await.unwrap().unwrap();
    }
}

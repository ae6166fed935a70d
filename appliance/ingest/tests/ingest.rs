//! The reference ingest server against a real PostgreSQL, over real mutual TLS.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use telecart_ingest::db;
use telecart_ingest::testing::{PgServer, TestPki, TestServer};
use telecart_store::wire::{Ack, ApiError, UploadBatch, WireRecord};

fn client(pki: &TestPki, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca_cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match identity {
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
        None => b.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap()
}

fn rec(device: &str, seq: u64, text: &str) -> WireRecord {
    WireRecord {
        seq,
        idempotency_key: format!("{device}:{seq}"),
        digest: format!("{:064x}", seq * 1000 + text.len() as u64),
        session_id: "00".repeat(16),
        recorded_at_ms: 1_700_000_000_000 + seq,
        kind: "transcript_segment".into(),
        body: Some(
            json!({"kind": "transcript_segment", "speaker": "remote", "start_ms": 0, "end_ms": 1, "text": text}),
        ),
        unreadable: None,
    }
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    device: &str,
    recs: Vec<WireRecord>,
) -> (u16, serde_json::Value) {
    let r = c
        .post(format!("{url}/v1/devices/{device}/records"))
        .json(&UploadBatch { records: recs })
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_end_to_end() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path()).unwrap();
    let (c1, k1) = pki.device("cart-1").unwrap();
    let (c2, k2) = pki.device("cart-2").unwrap();
    let server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
    let url = server.url();
    let cart1 = client(&pki, Some((&c1, &k1)));
    let cart2 = client(&pki, Some((&c2, &k2)));

    // Health over mTLS.
    assert_eq!(
        cart1
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    // No client certificate: the handshake is refused.
    assert!(
        client(&pki, None)
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_err()
    );

    // First batch.
    let (s, v) = post(
        &cart1,
        &url,
        "cart-1",
        (1..=5).map(|i| rec("cart-1", i, "a")).collect(),
    )
    .await;
    assert_eq!(
        (s, serde_json::from_value::<Ack>(v).unwrap()),
        (200, Ack { acked_upto: 5 })
    );
    // Exactly the same batch again (a retry after a lost ack): acknowledged, not stored twice.
    let (s, v) = post(
        &cart1,
        &url,
        "cart-1",
        (1..=5).map(|i| rec("cart-1", i, "a")).collect(),
    )
    .await;
    assert_eq!((s, v["acked_upto"].as_u64()), (200, Some(5)));
    // Overlapping retry that extends.
    let (s, v) = post(
        &cart1,
        &url,
        "cart-1",
        (4..=8).map(|i| rec("cart-1", i, "a")).collect(),
    )
    .await;
    assert_eq!((s, v["acked_upto"].as_u64()), (200, Some(8)));
    // A gap is refused with the expected sequence.
    let (s, v) = post(
        &cart1,
        &url,
        "cart-1",
        (10..=11).map(|i| rec("cart-1", i, "a")).collect(),
    )
    .await;
    let e: ApiError = serde_json::from_value(v).unwrap();
    assert_eq!((s, e.error.as_str(), e.expected_seq), (409, "gap", Some(9)));
    // Different content under a stored sequence is a conflict, and nothing of the batch is stored.
    let (s, v) = post(
        &cart1,
        &url,
        "cart-1",
        vec![rec("cart-1", 8, "different"), rec("cart-1", 9, "a")],
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")));
    // Another device's path with my certificate: forbidden.
    let (s, v) = post(&cart2, &url, "cart-1", vec![rec("cart-1", 9, "a")]).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")));
    // Malformed input: clear 400s.
    for bad in [
        vec![rec("cart-2", 1, "a"), rec("cart-2", 3, "a")],
        vec![WireRecord {
            idempotency_key: "x".into(),
            ..rec("cart-2", 1, "a")
        }],
        vec![WireRecord {
            body: None,
            ..rec("cart-2", 1, "a")
        }],
        vec![WireRecord {
            digest: "zz".into(),
            ..rec("cart-2", 1, "a")
        }],
        vec![],
    ] {
        let (s, v) = post(&cart2, &url, "cart-2", bad).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("bad_request")), "{v}");
    }
    let r = cart2
        .post(format!("{url}/v1/devices/cart-2/records"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Unreadable placeholders are accepted.
    let unreadable = WireRecord {
        kind: "unreadable".into(),
        body: None,
        unreadable: Some("record 1: authentication failed".into()),
        ..rec("cart-2", 1, "")
    };
    let (s, _) = post(&cart2, &url, "cart-2", vec![unreadable]).await;
    assert_eq!(s, 200);

    let ack: Ack = cart1
        .get(format!("{url}/v1/devices/cart-1/ack"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ack.acked_upto, 8);
    let stored = db::records(&server.state.pool, "cart-1").await.unwrap();
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(stored[0].body.as_ref().unwrap()["text"], "a");
    assert_eq!(
        db::records(&server.state.pool, "cart-2")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_uploads_store_once() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path()).unwrap();
    let (c, k) = pki.device("cart-9").unwrap();
    let server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
    let url = server.url();
    let cl = client(&pki, Some((&c, &k)));
    // Eight clients race the same and overlapping batches.
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let cl = cl.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..10u64 {
                let from = 1 + b * 10 + (t % 3);
                let from = from.min(1 + b * 10);
                let recs: Vec<_> = (from..from + 12).map(|i| rec("cart-9", i, "x")).collect();
                let _ = post(&cl, &url, "cart-9", recs).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = db::records(&server.state.pool, "cart-9").await.unwrap();
    let seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() >= 100);
}

/// Kills exactly the child it holds, also when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_api() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path()).unwrap();
    let (c, k) = pki.device("cart-b").unwrap();
    let port = telecart_ingest::testing::free_port().unwrap();
    let _child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_telecart-ingest"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cert")
            .arg(&pki.server_cert)
            .arg("--key")
            .arg(&pki.server_key)
            .arg("--client-ca")
            .arg(&pki.ca_cert)
            .arg("--database")
            .arg(pg.conninfo())
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let url = format!("https://localhost:{port}");
    let cl = client(&pki, Some((&c, &k)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cl.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not come up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, v) = post(
        &cl,
        &url,
        "cart-b",
        (1..=3).map(|i| rec("cart-b", i, "b")).collect(),
    )
    .await;
    assert_eq!((s, v["acked_upto"].as_u64()), (200, Some(3)));
    let ack: Ack = cl
        .get(format!("{url}/v1/devices/cart-b/ack"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ack.acked_upto, 3);
}

//! Device-side sync against the reference ingest server: real PostgreSQL, real HTTPS with mutual
//! TLS, faults injected by the server (errors before and after commit, slow answers, stale acks)
//! and by stopping and restarting it.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telecart_ingest::db;
use telecart_ingest::faults::FaultPlan;
use telecart_ingest::testing::{PgServer, TestPki, TestServer};
use telecart_store::sync::{Alarm, SchedulerConfig, SyncStatus};
use telecart_store::{LogStore, MasterKey, NewRecord, RecordBody, SessionId, SledStore};
use telecart_sync::{SyncHandle, Uploader};

struct Device {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    key: MasterKey,
    store: Arc<SledStore>,
}

fn device() -> Device {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("log");
    let kp = dir.path().join("master.key");
    let key = MasterKey::generate_file(&kp).unwrap();
    let store = Arc::new(SledStore::open(&data, &key).unwrap());
    Device {
        _dir: dir,
        data,
        key,
        store,
    }
}

fn transcript(i: u64) -> NewRecord {
    NewRecord {
        session: SessionId([5; 16]),
        at_ms: 1_700_000_000_000 + i,
        body: RecordBody::TranscriptSegment {
            speaker: "remote".into(),
            start_ms: i,
            end_ms: i + 1,
            text: format!("segment {i}"),
        },
    }
}

fn sched(batch: usize) -> SchedulerConfig {
    SchedulerConfig {
        batch_size: batch,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(400),
        retention: Duration::from_secs(365 * 86_400),
        disk_budget: 1 << 40,
        housekeeping_interval: Duration::from_secs(3600),
        idle_poll: Duration::from_millis(200),
    }
}

fn uploader(pki: &TestPki, url: &str, device: &str, timeout: Duration) -> Uploader {
    let (cert, key) = pki.device(device).unwrap();
    let tls = telecart_sync::tls::client_config(&pki.ca_cert, &cert, &key).unwrap();
    Uploader::new(url, device, tls, timeout).unwrap()
}

async fn wait_for(
    h: &SyncHandle,
    deadline: Duration,
    what: &str,
    pred: impl Fn(&SyncStatus) -> bool,
) -> SyncStatus {
    let mut rx = h.status();
    let end = Instant::now() + deadline;
    loop {
        let s = rx.borrow_and_update().clone();
        if pred(&s) {
            return s;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("timed out waiting for {what}: {s:?}");
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
    }
}

/// The server holds each of 1..=n exactly once, inserted in order, with the device's content.
async fn assert_exactly_once_in_order(server: &TestServer, dev: &str, store: &SledStore, n: u64) {
    let stored = db::records(&server.state.pool, dev).await.unwrap();
    assert_eq!(stored.len() as u64, n, "count");
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(
        db::insertion_order(&server.state.pool, dev).await.unwrap(),
        (1..=n).collect::<Vec<_>>(),
        "inserted in order"
    );
    let local = store.read_from(1, n as usize).unwrap();
    for (s, l) in stored.iter().zip(&local) {
        let w = telecart_store::wire::to_wire(dev, l);
        assert_eq!((s.seq, &s.digest, &s.kind), (w.seq, &w.digest, &w.kind));
        assert_eq!(s.body, w.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_under_faults_delivers_each_record_exactly_once_in_order() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path()).unwrap();
    let mut server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
    server.faults().set(FaultPlan {
        error_before: 120,
        error_after_commit: 120,
        slow: 60,
        delay: Duration::from_millis(1500),
        stale_ack: 120,
    });
    let d = device();
    let up = uploader(&pki, &server.url(), "cart-7", Duration::from_millis(800));
    let h = telecart_sync::spawn(d.store.clone(), up, sched(16), 42);

    // A writer appends while the server misbehaves, goes down and restarts.
    let total = 1500u64;
    let writer = {
        let store = d.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut i = 0;
            while i < total {
                let n = (1 + i % 9).min(total - i);
                let batch: Vec<_> = (i..i + n).map(transcript).collect();
                store.append_batch(batch).unwrap();
                if i.is_multiple_of(50) {
                    store.audit(i, "cartd", "call.answer", "").unwrap();
                }
                i += n;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.stop().await; // down
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.resume().await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.stop().await; // restarting
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.resume().await.unwrap();
    }
    writer.await.unwrap();
    let n = d.store.durable_upto();
    assert!(n > total, "records plus audit entries");
    let st = wait_for(&h, Duration::from_secs(120), "everything synced", |s| {
        s.synced_upto == n
    })
    .await;
    assert!(st.alarms.is_empty(), "{st:?}");
    assert_eq!(d.store.synced_upto(), n, "ack persisted");
    let stats = server.faults().stats();
    assert!(stats.injected > 5, "faults were injected: {stats:?}");
    h.shutdown().await.unwrap();
    server.faults().set(FaultPlan::default());
    assert_exactly_once_in_order(&server, "cart-7", &d.store, n).await;
    eprintln!(
        "synced {n} records through {} requests with {} injected faults",
        stats.requests, stats.injected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_backlog_then_restart_of_the_device() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path()).unwrap();
    let mut server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
    server.stop().await;
    let d = device();
    d.store
        .append_batch((0..300).map(transcript).collect())
        .unwrap();
    let h = telecart_sync::spawn(
        d.store.clone(),
        uploader(&pki, &server.url(), "cart-3", Duration::from_secs(5)),
        sched(64),
        1,
    );
    let st = wait_for(&h, Duration::from_secs(10), "failures while offline", |s| {
        s.failures >= 3
    })
    .await;
    assert!(st.last_error.is_some() && st.synced_upto == 0, "{st:?}");
    // The device restarts (sync task and store), the server comes back.
    h.shutdown().await.unwrap();
    let Device {
        _dir,
        data,
        key,
        store,
    } = d;
    drop(store);
    let store = Arc::new(SledStore::open(&data, &key).unwrap());
    server.resume().await.unwrap();
    let h = telecart_sync::spawn(
        store.clone(),
        uploader(&pki, &server.url(), "cart-3", Duration::from_secs(5)),
        sched(64),
        2,
    );
    let st = wait_for(&h, Duration::from_secs(30), "backlog synced", |s| {
        s.synced_upto == 300
    })
    .await;
    assert_eq!(st.failures, 0);
    h.shutdown().await.unwrap();
    assert_exactly_once_in_order(&server, "cart-3", &store, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_an_untrusted_certificate_gets_nothing() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&tmp.path().join("real")).unwrap();
    let other = TestPki::generate(&tmp.path().join("other")).unwrap();
    let server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
    let d = device();
    d.store
        .append_batch((0..10).map(transcript).collect())
        .unwrap();
    // Our device certificate, but trusting another CA: the server is not believed.
    let (cert, key) = pki.device("cart-5").unwrap();
    let tls = telecart_sync::tls::client_config(&other.ca_cert, &cert, &key).unwrap();
    let up = Uploader::new(&server.url(), "cart-5", tls, Duration::from_secs(5)).unwrap();
    let h = telecart_sync::spawn(d.store.clone(), up, sched(64), 3);
    let st = wait_for(&h, Duration::from_secs(10), "failures", |s| s.failures >= 2).await;
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("certificate") || e.contains("Certificate")),
        "{st:?}"
    );
    h.shutdown().await.unwrap();
    assert_eq!(d.store.synced_upto(), 0);
    assert!(
        db::records(&server.state.pool, "cart-5")
            .await
            .unwrap()
            .is_empty()
    );
    // A device certificate of another device: forbidden, alarm, nothing marked synced.
    let d2 = device();
    d2.store.append(transcript(1)).unwrap();
    let (cert, key) = pki.device("cart-6").unwrap();
    let tls = telecart_sync::tls::client_config(&pki.ca_cert, &cert, &key).unwrap();
    let up = Uploader::new(&server.url(), "cart-5", tls, Duration::from_secs(5)).unwrap();
    let h = telecart_sync::spawn(d2.store.clone(), up, sched(64), 4);
    let st = wait_for(&h, Duration::from_secs(10), "rejection alarm", |s| {
        !s.alarms.is_empty()
    })
    .await;
    assert!(
        matches!(&st.alarms[0], Alarm::ServerRejects { status: 403, .. }),
        "{st:?}"
    );
    h.shutdown().await.unwrap();
    assert_eq!(d2.store.synced_upto(), 0);
    // Key file permissions are enforced.
    let (_, key) = pki.device("cart-8").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert!(telecart_sync::tls::client_config(&pki.ca_cert, Path::new(&cert), &key).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purge_and_disk_budget_alarm_never_drop_unsynced() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path()).unwrap();
    let mut server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
    let d = device();
    d.store
        .append_batch((0..200).map(transcript).collect())
        .unwrap();
    let cfg = SchedulerConfig {
        retention: Duration::ZERO,
        housekeeping_interval: Duration::from_millis(100),
        disk_budget: 1,
        ..sched(50)
    };
    let h = telecart_sync::spawn(
        d.store.clone(),
        uploader(&pki, &server.url(), "cart-4", Duration::from_secs(5)),
        cfg,
        5,
    );
    wait_for(&h, Duration::from_secs(20), "synced", |s| {
        s.synced_upto == 200
    })
    .await;
    // Synced records are purged (retention zero here), the server has them all.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.store.purged_upto() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.store.purged_upto(), 200);
    // Offline, over budget: the alarm is raised and unsynced records stay.
    server.stop().await;
    d.store
        .append_batch((200..260).map(transcript).collect())
        .unwrap();
    h.notify();
    let st = wait_for(&h, Duration::from_secs(20), "disk alarm", |s| {
        s.alarms
            .iter()
            .any(|a| matches!(a, Alarm::DiskBudget { unsynced, .. } if *unsynced > 0))
    })
    .await;
    let Some(Alarm::DiskBudget { unsynced, .. }) = st
        .alarms
        .iter()
        .find(|a| matches!(a, Alarm::DiskBudget { .. }))
    else {
        panic!()
    };
    assert_eq!(*unsynced, 60);
    assert_eq!(d.store.purged_upto(), 200);
    for seq in 201..=260 {
        d.store.read(seq).unwrap();
    }
    server.resume().await.unwrap();
    wait_for(&h, Duration::from_secs(30), "synced after outage", |s| {
        s.synced_upto == 260
    })
    .await;
    h.shutdown().await.unwrap();
    let stored = db::records(&server.state.pool, "cart-4").await.unwrap();
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=260).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_record_is_uploaded_as_unreadable_not_skipped() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path()).unwrap();
    let server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
    let Device {
        _dir,
        data,
        key,
        store,
    } = device();
    store
        .append_batch((0..20).map(transcript).collect())
        .unwrap();
    drop(store);
    {
        let db = sled::open(&data).unwrap();
        let mut k = vec![b'r'];
        k.extend_from_slice(&7u64.to_be_bytes());
        let mut v = db.get(&k).unwrap().unwrap().to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x80;
        db.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let store = Arc::new(SledStore::open(&data, &key).unwrap());
    let h = telecart_sync::spawn(
        store.clone(),
        uploader(&pki, &server.url(), "cart-2", Duration::from_secs(5)),
        sched(8),
        6,
    );
    wait_for(&h, Duration::from_secs(20), "synced", |s| {
        s.synced_upto == 20
    })
    .await;
    h.shutdown().await.unwrap();
    let stored = db::records(&server.state.pool, "cart-2").await.unwrap();
    assert_eq!(stored.len(), 20);
    assert_eq!(stored[6].kind, "unreadable");
    assert!(stored[6].body.is_none());
    assert_eq!(stored[7].kind, "transcript_segment");
}

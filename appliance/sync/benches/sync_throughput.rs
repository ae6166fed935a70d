//! Sync throughput: records per second from the sled store to the reference ingest server
//! (HTTPS with mutual TLS, PostgreSQL with fsync on), for a backlog, at several batch sizes.
//!
//! `cargo bench -p telecart-sync --bench sync_throughput` (needs the PostgreSQL server binaries).

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use telecart_ingest::testing::{PgServer, TestPki, TestServer};
use telecart_store::sync::SchedulerConfig;
use telecart_store::{LogStore, MasterKey, NewRecord, RecordBody, SessionId, SledStore};
use telecart_sync::Uploader;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "sync_throughput: run with `cargo bench -p telecart-sync --bench sync_throughput`"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pg = PgServer::start().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(tmp.path()).unwrap();
        let server = TestServer::start(&pg.conninfo(), &pki).await.unwrap();
        println!("{:<10} {:>10} {:>12} {:>14}", "batch", "records", "seconds", "records/s");
        for (i, (batch, n)) in [(64usize, 10_000u64), (256, 20_000), (1000, 20_000)].into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(SledStore::open(dir.path(), &MasterKey::from_bytes(&[3; 32])).unwrap());
            for chunk in 0..n / 1000 {
                store
                    .append_batch(
                        (chunk * 1000..(chunk + 1) * 1000)
                            .map(|j| NewRecord {
                                session: SessionId([2; 16]),
                                at_ms: 1_700_000_000_000 + j,
                                body: RecordBody::TranscriptSegment {
                                    speaker: "remote".into(),
                                    start_ms: j,
                                    end_ms: j + 900,
                                    text: "the patient reports intermittent chest pain since yesterday evening, no fever".into(),
                                },
                            })
                            .collect(),
                    )
                    .unwrap();
            }
            let device = format!("bench-{i}");
            let (cert, key) = pki.device(&device).unwrap();
            let tls = telecart_sync::tls::client_config(&pki.ca_cert, &cert, &key).unwrap();
            let up = Uploader::new(&server.url(), &device, tls, Duration::from_secs(30)).unwrap();
            let cfg = SchedulerConfig { batch_size: batch, housekeeping_interval: Duration::from_secs(3600), ..SchedulerConfig::default() };
            let t = Instant::now();
            let h = telecart_sync::spawn(store.clone(), up, cfg, 1);
            let mut rx = h.status();
            while rx.borrow_and_update().synced_upto < n {
                let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
            }
            let el = t.elapsed().as_secs_f64();
            h.shutdown().await.unwrap();
            println!("{batch:<10} {n:>10} {el:>12.2} {:>14.0}", n as f64 / el);
        }
    });
}

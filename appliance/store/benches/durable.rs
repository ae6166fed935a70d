//! Durable (acknowledged) records per second: our sled store against SQLite (rusqlite, WAL,
//! `synchronous=FULL`) storing the same sealed records, in the same run.
//!
//! `cargo bench -p telecart-store --bench durable` (set `BENCH_DIR` to measure another disk;
//! default: a temporary directory under the target directory's filesystem, i.e. `/work`).
//! A record is counted once the call that stores it has returned after `flush` (sled) or `COMMIT`
//! (SQLite): one record per flush, and group commit (one flush per batch).

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use telecart_store::crypto::DataKey;
use telecart_store::record::{self, Header, Kind};
use telecart_store::{LogStore, MasterKey, NewRecord, RecordBody, SessionId, SledStore};

fn body(i: u64) -> NewRecord {
    NewRecord {
        session: SessionId([1; 16]),
        at_ms: 1_700_000_000_000 + i,
        body: RecordBody::TranscriptSegment {
            speaker: "remote".into(),
            start_ms: i * 1000,
            end_ms: i * 1000 + 900,
            text: "the patient reports intermittent chest pain since yesterday evening, no fever"
                .into(),
        },
    }
}

fn sled_run(dir: &std::path::Path, n: u64, batch: u64) -> f64 {
    let key = MasterKey::from_bytes(&[7; 32]);
    let s = SledStore::open(dir, &key).unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        s.append_batch((i..i + batch).map(body).collect()).unwrap();
        i += batch;
    }
    let el = t.elapsed().as_secs_f64();
    assert_eq!(s.durable_upto(), n);
    n as f64 / el
}

fn sqlite_run(dir: &std::path::Path, n: u64, batch: u64, sync: &str) -> f64 {
    let key = DataKey::generate(1).unwrap();
    let mut c = rusqlite::Connection::open(dir.join("log.sqlite")).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", sync).unwrap();
    c.execute_batch("CREATE TABLE records (seq INTEGER PRIMARY KEY, env BLOB NOT NULL)")
        .unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let tx = c.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO records (seq, env) VALUES (?1, ?2)")
                .unwrap();
            for j in i..i + batch {
                let r = body(j);
                let plain = record::encode_body(&r.body).unwrap();
                let h = Header {
                    kind: Kind::TranscriptSegment,
                    epoch: 1,
                    seq: j + 1,
                    at_ms: r.at_ms,
                    session: r.session,
                };
                let env = record::seal(&h, &plain, &key).unwrap();
                st.execute(rusqlite::params![(j + 1) as i64, env]).unwrap();
            }
        }
        tx.commit().unwrap();
        i += batch;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("durable: run with `cargo bench -p telecart-store --bench durable`");
        return;
    }
    let base = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().to_path_buf()
        });
    println!(
        "durable records/s (same sealed ~200-byte transcript records), directory under {}",
        base.display()
    );
    println!(
        "{:<28} {:>12} {:>14} {:>14} {:>10}",
        "batch (records per flush)", "sled", "sqlite FULL", "sqlite NORMAL", "sled/FULL"
    );
    for (batch, n) in [(1u64, 2_000u64), (16, 16_000), (64, 32_000), (256, 64_000)] {
        let d1 = tempfile::tempdir_in(&base).unwrap();
        let d2 = tempfile::tempdir_in(&base).unwrap();
        let d3 = tempfile::tempdir_in(&base).unwrap();
        let a = sled_run(d1.path(), n, batch);
        let b = sqlite_run(d2.path(), n, batch, "FULL");
        let c = sqlite_run(d3.path(), n, batch, "NORMAL");
        println!("{batch:<28} {a:>12.0} {b:>14.0} {c:>14.0} {:>10.2}", a / b);
    }
    println!(
        "sqlite NORMAL in WAL mode is not durable on power loss (commits may roll back); shown for reference only."
    );
}

//! Crash safety: a writer is SIGKILLed at random moments, 100+ times; after each kill, every record
//! it had acknowledged (printed after the flush returned) is present and decrypts, and the audit
//! chain verifies.
//!
//! The writer is this test binary re-invoked with `CRASH_CHILD_DIR` set (test `crash_child`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use telecart_store::{LogStore, MasterKey, RecordBody, SledStore};

const CHILD_DIR: &str = "CRASH_CHILD_DIR";
const CHILD_KEY: &str = "CRASH_CHILD_KEY";

#[test]
fn crash_child() {
    let (Ok(dir), Ok(key)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_KEY)) else {
        return;
    };
    let key = MasterKey::load(key.as_ref()).unwrap();
    let s = SledStore::open(dir.as_ref(), &key).unwrap();
    let pid = std::process::id();
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    loop {
        // Mixed batch sizes (group commit) and audit entries.
        let k = 1 + n % 7;
        let mut texts = Vec::new();
        let mut batch = Vec::new();
        for j in 0..k {
            let text = format!("c{pid}-{}", n + j);
            batch.push(transcript(n + j, &text));
            texts.push(text);
        }
        n += k;
        let seqs = s.append_batch(batch).unwrap();
        for (seq, t) in seqs.iter().zip(&texts) {
            writeln!(out, "ACK {seq} {t}").unwrap();
        }
        if n.is_multiple_of(5) {
            let seq = s.audit(n, "crash-test", "tick", &n.to_string()).unwrap();
            writeln!(out, "AUDIT {seq}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let f = Fixture::new();
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut audits = 0u64;
    let mut rng = 0x1234_5678_9abc_def1u64 ^ u64::from(std::process::id());
    let started = Instant::now();
    let trials = 100;
    for trial in 0..trials {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &f.data)
            .env(CHILD_KEY, &f.key_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(20 + rng % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut fresh = Vec::new();
        for l in lines {
            let mut it = l.split_whitespace();
            match (
                it.next(),
                it.next().and_then(|s| s.parse::<u64>().ok()),
                it.next(),
            ) {
                (Some("ACK"), Some(seq), Some(text)) => {
                    if let Some(prev) = acked.insert(seq, text.to_string()) {
                        panic!(
                            "trial {trial}: acknowledged sequence {seq} reused ({prev} then {text})"
                        );
                    }
                    fresh.push(seq);
                }
                (Some("AUDIT"), Some(_), None) => audits += 1,
                _ => {}
            }
        }
        let s = SledStore::open(&f.data, &f.key()).unwrap();
        // Every 10th trial re-checks everything ever acknowledged and the audit chain; the others
        // check what this writer acknowledged.
        let full = trial % 10 == 9;
        let check: Vec<u64> = if full {
            acked.keys().copied().collect()
        } else {
            fresh
        };
        for seq in check {
            let text = &acked[&seq];
            match s.read(seq) {
                Ok(r) => match r.body {
                    RecordBody::TranscriptSegment { text: t, .. } => {
                        assert_eq!(&t, text, "trial {trial} seq {seq}")
                    }
                    other => panic!("trial {trial} seq {seq}: wrong kind {other:?}"),
                },
                Err(e) => panic!("trial {trial}: acknowledged record {seq} lost: {e}"),
            }
        }
        if full {
            let v = s.verify().unwrap();
            assert!(v.is_clean(), "trial {trial}: {v:?}");
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{trials} SIGKILL trials, {} acknowledged records, {audits} audit entries, {elapsed:?}",
        acked.len()
    );
    assert!(acked.len() > 500, "the writer must get going between kills");
    assert!(elapsed < Duration::from_secs(120));
}

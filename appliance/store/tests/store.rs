//! The sled store: round trips, keys, tampering, purge, plaintext never on disk.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use telecart_store::store::PurgeReport;
use telecart_store::technician::{self, Filter};
use telecart_store::wire::WireRecord;
use telecart_store::{
    Kind, LogStore, MasterKey, NewRecord, RecordBody, SessionId, SledStore, StoreError,
};

fn all_kinds(at: u64) -> Vec<NewRecord> {
    let s = SessionId([3; 16]);
    let r = |body| NewRecord {
        session: s,
        at_ms: at,
        body,
    };
    vec![
        r(RecordBody::SessionStart {
            direction: "inbound".into(),
            protocol: "webrtc".into(),
            remote: "dr-who".into(),
        }),
        r(RecordBody::Participants {
            participants: vec![telecart_store::record::Participant {
                role: "patient".into(),
                name: "Jane Roe".into(),
                address: None,
            }],
        }),
        r(RecordBody::CallQuality {
            rtt_ms: 40.5,
            jitter_ms: 3.0,
            loss_pct: 0.1,
            mos: 4.2,
            bitrate_kbps: 1800,
        }),
        r(RecordBody::TranscriptSegment {
            speaker: "remote".into(),
            start_ms: 0,
            end_ms: 1500,
            text: "any allergies?".into(),
        }),
        r(RecordBody::PrivacyToggle {
            enabled: true,
            source: "switch".into(),
        }),
        r(RecordBody::Error {
            component: "camera".into(),
            message: "unplugged".into(),
        }),
        r(RecordBody::SessionEnd {
            reason: "hangup".into(),
            duration_ms: 61_000,
        }),
    ]
}

#[test]
fn roundtrip_reopen_and_sequence_continuity() {
    let f = Fixture::new();
    let recs = all_kinds(1000);
    {
        let s = f.open();
        let seqs = s.append_batch(recs.clone()).unwrap();
        assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
        assert_eq!(s.audit(2000, "nurse-1", "call.answer", "").unwrap(), 8);
        assert_eq!(s.durable_upto(), 8);
    }
    let s = f.open();
    assert_eq!(s.durable_upto(), 8);
    for (i, r) in recs.iter().enumerate() {
        let got = s.read(i as u64 + 1).unwrap();
        assert_eq!(
            (got.session, got.at_ms, &got.body),
            (r.session, r.at_ms, &r.body)
        );
    }
    assert_eq!(s.append(transcript(9, "next")).unwrap(), 9);
    let v = s.verify().unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!((v.records, v.audit_entries), (9, 1));
}

#[test]
fn wrong_master_key_is_refused() {
    let f = Fixture::new();
    f.open().append(transcript(1, "x")).unwrap();
    let other = MasterKey::from_bytes(&[42; 32]);
    assert!(matches!(
        SledStore::open(&f.data, &other),
        Err(StoreError::WrongKey { epoch: 1 })
    ));
}

#[test]
fn data_key_rotation_and_master_key_rewrap() {
    let f = Fixture::new();
    let key = f.key();
    {
        let s = f.open();
        s.append(transcript(1, "old epoch")).unwrap();
        assert_eq!(s.rotate_data_key(&key).unwrap(), 2);
        s.append(transcript(2, "new epoch")).unwrap();
        assert_eq!(s.read(1).unwrap().epoch, 1);
        assert_eq!(s.read(2).unwrap().epoch, 2);
    }
    let new_master = MasterKey::from_bytes(&[9; 32]);
    {
        let s = f.open();
        assert_eq!(s.current_epoch(), 2);
        s.rewrap_keys(&new_master).unwrap();
    }
    assert!(matches!(
        SledStore::open(&f.data, &key),
        Err(StoreError::WrongKey { .. })
    ));
    let s = SledStore::open(&f.data, &new_master).unwrap();
    assert!(
        matches!(&s.read(1).unwrap().body, RecordBody::TranscriptSegment { text, .. } if text == "old epoch")
    );
    assert!(
        matches!(&s.read(2).unwrap().body, RecordBody::TranscriptSegment { text, .. } if text == "new epoch")
    );
    assert!(s.verify().unwrap().is_clean());
}

#[test]
fn flipped_ciphertext_bits_are_detected() {
    let f = Fixture::new();
    {
        let s = f.open();
        for i in 1..=5 {
            s.append(transcript(i, "secret")).unwrap();
        }
    }
    {
        let db = raw(&f.data);
        let mut v = db.get(rkey(3)).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n - 20] ^= 0x10;
        db.insert(rkey(3), v).unwrap();
        db.flush().unwrap();
    }
    let s = f.open();
    assert!(matches!(s.read(3), Err(StoreError::Tampered { seq: 3 })));
    let rs = s.read_from(1, 10).unwrap();
    assert_eq!(rs.len(), 5);
    assert!(matches!(
        rs[2],
        telecart_store::Readout::Unreadable { seq: 3, .. }
    ));
    let v = s.verify().unwrap();
    assert_eq!(v.unreadable.len(), 1);
    assert_eq!(v.unreadable[0].0, 3);
    // `list` shows the damage.
    let l = technician::list(&s, &Filter::default()).unwrap();
    assert!(
        l[2].problem
            .as_deref()
            .is_some_and(|p| p.contains("authentication failed"))
    );
}

#[test]
fn moved_record_is_detected() {
    let f = Fixture::new();
    {
        let s = f.open();
        s.append(transcript(1, "a")).unwrap();
        s.append(transcript(2, "b")).unwrap();
    }
    {
        let db = raw(&f.data);
        let v1 = db.get(rkey(1)).unwrap().unwrap();
        db.insert(rkey(2), v1).unwrap();
        db.flush().unwrap();
    }
    let s = f.open();
    assert!(matches!(
        s.read(2),
        Err(StoreError::Malformed { seq: 2, .. })
    ));
}

fn audited_store(f: &Fixture) {
    let s = f.open();
    for i in 0..6u64 {
        s.append(transcript(i, "t")).unwrap();
        s.audit(i, "tech-7", "privacy.on", &format!("n={i}"))
            .unwrap();
    }
    assert!(s.verify().unwrap().is_clean());
}

#[test]
fn altered_audit_entry_is_detected() {
    let f = Fixture::new();
    audited_store(&f);
    {
        let db = raw(&f.data);
        let mut v = db.get(rkey(6)).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n - 1] ^= 1;
        db.insert(rkey(6), v).unwrap();
        db.flush().unwrap();
    }
    let v = f.open().verify().unwrap();
    assert!(
        v.audit_break
            .as_deref()
            .is_some_and(|b| b.contains("entry 6")),
        "{v:?}"
    );
}

#[test]
fn deleted_audit_entries_are_detected() {
    // In the middle: the chain breaks at the next entry.
    let f = Fixture::new();
    audited_store(&f);
    {
        let db = raw(&f.data);
        db.remove(rkey(4)).unwrap();
        db.flush().unwrap();
    }
    let v = f.open().verify().unwrap();
    assert_eq!(v.missing, vec![4]);
    assert!(
        v.audit_break
            .as_deref()
            .is_some_and(|b| b.contains("entry 6 does not chain")),
        "{v:?}"
    );

    // At the end: the sealed head no longer matches.
    let f = Fixture::new();
    audited_store(&f);
    {
        let db = raw(&f.data);
        db.remove(rkey(12)).unwrap();
        db.flush().unwrap();
    }
    let s = f.open();
    let v = s.verify().unwrap();
    assert!(
        v.audit_break
            .as_deref()
            .is_some_and(|b| b.contains("chain ends after 5 entries but 6")),
        "{v:?}"
    );
}

#[test]
fn replaced_audit_entry_from_elsewhere_is_detected() {
    // An insider copies a genuine (validly sealed) audit entry over another one.
    let f = Fixture::new();
    audited_store(&f);
    {
        let db = raw(&f.data);
        let v2 = db.get(rkey(2)).unwrap().unwrap();
        db.insert(rkey(8), v2).unwrap();
        db.flush().unwrap();
    }
    let v = f.open().verify().unwrap();
    assert!(v.audit_break.is_some(), "{v:?}");
}

#[test]
fn purge_keeps_unsynced_and_chain_verifiable() {
    let f = Fixture::new();
    let s = f.open();
    for i in 0..10u64 {
        s.append(transcript(i, "x")).unwrap();
        s.audit(i, "cartd", "call.end", "").unwrap();
    }
    assert!(
        s.mark_synced(21).is_err(),
        "cannot sync what is not durable"
    );
    s.mark_synced(12).unwrap();
    s.mark_synced(5).unwrap();
    assert_eq!(s.synced_upto(), 12, "never moves back");
    // Cutoff in the past: nothing old enough.
    assert_eq!(
        s.purge_synced(20, 1_700_000_000_000 - 1).unwrap(),
        PurgeReport {
            removed: 0,
            purged_upto: 0
        }
    );
    // Only synced records go, even if more are asked for.
    let r = s.purge_synced(20, u64::MAX).unwrap();
    assert_eq!(
        r,
        PurgeReport {
            removed: 12,
            purged_upto: 12
        }
    );
    assert!(matches!(s.read(12), Err(StoreError::NotFound { seq: 12 })));
    assert!(s.read(13).is_ok());
    let v = s.verify().unwrap();
    assert!(v.is_clean(), "{v:?}");
    drop(s);
    let s = f.open();
    assert_eq!(s.append(transcript(99, "y")).unwrap(), 21);
    s.audit(1, "cartd", "x", "").unwrap();
    assert!(s.verify().unwrap().is_clean());
    // Purging everything, then reopening, keeps the sequence going.
    s.mark_synced(22).unwrap();
    assert_eq!(s.purge_synced(22, u64::MAX).unwrap().purged_upto, 22);
    drop(s);
    let s = f.open();
    assert_eq!(s.append(transcript(100, "z")).unwrap(), 23);
    assert!(s.verify().unwrap().is_clean());
}

#[test]
fn technician_list_show_export_are_audited() {
    let f = Fixture::new();
    let s = f.open();
    s.append_batch(all_kinds(5)).unwrap();
    s.append(NewRecord {
        session: SessionId([1; 16]),
        ..transcript(1, "other session")
    })
    .unwrap();
    let l = technician::list(
        &s,
        &Filter {
            session: Some(SessionId([3; 16])),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(l.len(), 7);
    assert!(l[0].to_string().contains("session_start"));
    let shown = technician::show(&s, 4, "tech-7", 9).unwrap();
    assert!(shown.contains("any allergies?"));
    let mut out = Vec::new();
    let sum = technician::export(
        &s,
        "cart-1",
        &Filter {
            kind: Some(Kind::TranscriptSegment),
            ..Default::default()
        },
        "tech-7",
        10,
        &mut out,
    )
    .unwrap();
    assert_eq!(sum.records, 2);
    let lines: Vec<WireRecord> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].idempotency_key, "cart-1:4");
    // Both accesses are on the audit trail.
    let audits = technician::list(
        &s,
        &Filter {
            kind: Some(Kind::Audit),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(audits.len(), 2);
    let RecordBody::Audit(e) = s.read(sum.audit_seq).unwrap().body else {
        panic!()
    };
    assert_eq!(
        (e.actor.as_str(), e.action.as_str(), e.detail.as_str()),
        ("tech-7", "log.export", "kind=transcript_segment")
    );
    assert!(s.verify().unwrap().is_clean());
}

#[test]
fn no_plaintext_under_the_data_directory() {
    const MARKER: &str = "ZEBRA-PLAINTEXT-MARKER-4711";
    let f = Fixture::new();
    {
        let s = f.open();
        for i in 0..300u64 {
            s.append(transcript(i, &format!("patient says {MARKER} number {i}")))
                .unwrap();
        }
        s.audit(1, "tech", "note", MARKER).unwrap();
        s.rotate_data_key(&f.key()).unwrap();
        s.append_batch((0..50).map(|i| transcript(i, MARKER)).collect())
            .unwrap();
        technician::show(&s, 5, "tech", 2).unwrap();
        technician::export(
            &s,
            "cart",
            &Filter::default(),
            "tech",
            3,
            &mut std::io::sink(),
        )
        .unwrap();
        s.mark_synced(100).unwrap();
        s.purge_synced(100, u64::MAX).unwrap();
    }
    drop(f.open());
    let files = files_under(&f.data);
    assert!(!files.is_empty());
    for p in files {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "marker found in {}",
            p.display()
        );
        assert!(
            !bytes.windows(8).any(|w| w == b"patient "),
            "plaintext found in {}",
            p.display()
        );
    }
}

#[test]
fn truncated_sled_file_is_reported_not_a_panic() {
    let f = Fixture::new();
    {
        let s = f.open();
        for i in 0..200u64 {
            s.append(transcript(i, "x")).unwrap();
        }
    }
    let mut files: Vec<_> = files_under(&f.data)
        .into_iter()
        .filter(|p| !p.ends_with("telecart.watermarks"))
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let big = &files[0];
    let len = std::fs::metadata(big).unwrap().len();
    let fh = std::fs::OpenOptions::new().write(true).open(big).unwrap();
    fh.set_len(len / 2).unwrap();
    drop(fh);
    match SledStore::open(&f.data, &f.key()) {
        Err(e) => {
            eprintln!("truncated store refused: {e}");
            // Reported with the path.
            assert!(e.to_string().contains("data"), "{e}");
        }
        Ok(s) => {
            // sled recovered a prefix: what is left is intact, the loss is reported, and the lost
            // sequences are never reused for new records.
            let v = s.verify().unwrap();
            eprintln!("truncated store opened: {v:?}");
            assert!(v.unreadable.is_empty(), "{v:?}");
            let present = v.records;
            if present < 200 {
                assert_eq!(v.missing.first(), Some(&(present + 1)), "{v:?}");
            }
            assert_eq!(s.durable_upto(), 200);
            assert_eq!(s.append(transcript(1, "after")).unwrap(), 201);
            // Sync would see the lost ones as unreadable, not skip them.
            if present < 200 {
                let r = s.read_from(present + 1, 1).unwrap();
                assert!(matches!(r[0], telecart_store::Readout::Unreadable { .. }));
            }
        }
    }
}

#[test]
fn watermark_sidecar_is_sealed() {
    let f = Fixture::new();
    {
        let s = f.open();
        s.append(transcript(1, "x")).unwrap();
    }
    let wm = f.data.join("telecart.watermarks");
    let mut b = std::fs::read(&wm).unwrap();
    b[30] ^= 1;
    std::fs::write(&wm, &b).unwrap();
    let s = f.open();
    let v = s.verify().unwrap();
    assert!(
        !v.is_clean(),
        "an altered watermark file is reported: {v:?}"
    );
    assert!(s.read(1).is_ok());
}

#[test]
fn concurrent_appenders_get_unique_contiguous_sequences() {
    let f = Fixture::new();
    let s = std::sync::Arc::new(f.open());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..50u64 {
                    let seq = s.append(transcript(i, &format!("t{t}"))).unwrap();
                    assert!(s.durable_upto() >= seq);
                    mine.push(seq);
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
}

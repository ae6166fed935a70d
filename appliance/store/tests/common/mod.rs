#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use telecart_store::{MasterKey, NewRecord, RecordBody, SessionId, SledStore};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub key_path: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key_path = dir.path().join("master.key");
        MasterKey::generate_file(&key_path).unwrap();
        Self {
            dir,
            data,
            key_path,
        }
    }

    pub fn key(&self) -> MasterKey {
        MasterKey::load(&self.key_path).unwrap()
    }

    /// Opens the store, waiting briefly for a handle dropped just before to let go of
    /// sled's file lock (its flusher thread releases it asynchronously).
    pub fn open(&self) -> SledStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match SledStore::open(&self.data, &self.key()) {
                Ok(store) => return store,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open {}: {e}", self.data.display()),
            }
        }
    }
}

pub fn transcript(i: u64, text: &str) -> NewRecord {
    NewRecord {
        session: SessionId([7; 16]),
        at_ms: 1_700_000_000_000 + i,
        body: RecordBody::TranscriptSegment {
            speaker: "remote".into(),
            start_ms: i,
            end_ms: i + 1,
            text: text.into(),
        },
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Raw access to the sled tree under the store, for tampering tests (the store must be closed).
/// sled itself, underneath the store (to tamper with it); waits for the lock like [`Fixture::open`].
pub fn raw(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("sled {}: {e}", dir.display()),
        }
    }
}

pub fn rkey(seq: u64) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

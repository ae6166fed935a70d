//! The store: our trait, and its sled implementation.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use zeroize::Zeroizing;

use crate::audit::{ChainHead, content_digest, entry_hash, parse_hash};
use crate::crypto::{DataKey, KeyWrapper, NONCE_LEN};
use crate::error::{Result, StoreError};
use crate::record::{
    self, AuditEntry, Envelope, Header, Kind, NewRecord, Record, RecordBody, SessionId, hex,
};

/// Layout version of the key space inside sled (meta keys, key entries, record keys).
pub const LAYOUT_VERSION: u32 = 1;

const META_LAYOUT: &[u8] = b"m:layout";
const META_EPOCH: &[u8] = b"m:epoch";
const META_SYNCED: &[u8] = b"m:synced";
const META_PURGED: &[u8] = b"m:purged";
const META_HEAD: &[u8] = b"m:head";
const META_ANCHOR: &[u8] = b"m:anchor";
/// Sidecar file (inside the data directory, beside sled's files) holding the sealed watermarks, so
/// that records lost from the end of a damaged sled file are detected and their sequences never
/// reused.
const WATERMARK_FILE: &str = "telecart.watermarks";
/// The sidecar is rewritten whenever appends cross a multiple of this many sequences (and after
/// every sync acknowledgement, purge and on close).
const WATERMARK_EVERY: u64 = 256;

fn rkey(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'r';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn kkey(epoch: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = b'k';
    k[1..].copy_from_slice(&epoch.to_be_bytes());
    k
}

fn seq_of_rkey(k: &[u8]) -> Option<u64> {
    if k.len() != 9 || k[0] != b'r' {
        return None;
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&k[1..]);
    Some(u64::from_be_bytes(a))
}

fn read_u64(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

fn read_u32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes)
}

/// A record read for sync or display.
#[derive(Debug)]
#[non_exhaustive]
pub enum Readout {
    /// It decrypted and parsed.
    Ok {
        /// The record.
        record: Record,
        /// [`content_digest`] of its plaintext (for the ingest API).
        digest: [u8; 32],
    },
    /// It is missing, malformed, or failed authentication.
    Unreadable {
        /// Its sequence.
        seq: u64,
        /// Why.
        error: StoreError,
    },
}

impl Readout {
    /// The record's sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Readout::Ok { record, .. } => record.seq,
            Readout::Unreadable { seq, .. } => *seq,
        }
    }
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Records removed.
    pub removed: u64,
    /// Every record up to this sequence is gone.
    pub purged_upto: u64,
}

/// The result of [`LogStore::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records present.
    pub records: u64,
    /// Sequences expected (between the purge point and the last sequence) but absent (first 100).
    pub missing: Vec<u64>,
    /// Records present that failed to open, with the reason (first 100).
    pub unreadable: Vec<(u64, String)>,
    /// Audit entries present.
    pub audit_entries: u64,
    /// The first break of the audit chain, if any.
    pub audit_break: Option<String>,
}

impl VerifyReport {
    /// Nothing missing, nothing unreadable, audit chain intact.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unreadable.is_empty() && self.audit_break.is_none()
    }
}

/// The session-log store. Every method is synchronous and may block on disk; callers in async code
/// use `spawn_blocking`.
pub trait LogStore: Send + Sync {
    /// Appends records in order and returns their sequences once they are durable (flushed to disk).
    /// One flush covers the whole batch (group commit). An [`RecordBody::Audit`] entry gets its
    /// `prev_hash` set by the store, whatever the caller put there.
    fn append_batch(&self, records: Vec<NewRecord>) -> Result<Vec<u64>>;

    /// Appends one record and returns its sequence once it is durable.
    fn append(&self, record: NewRecord) -> Result<u64> {
        let seqs = self.append_batch(vec![record])?;
        seqs.first()
            .copied()
            .ok_or(StoreError::Invalid("empty append"))
    }

    /// Appends an audit-trail entry (durable on return).
    fn audit(&self, at_ms: u64, actor: &str, action: &str, detail: &str) -> Result<u64> {
        self.append(NewRecord {
            session: SessionId::NONE,
            at_ms,
            body: RecordBody::Audit(AuditEntry {
                actor: actor.into(),
                action: action.into(),
                detail: detail.into(),
                prev_hash: String::new(),
            }),
        })
    }

    /// Reads and decrypts one record.
    fn read(&self, seq: u64) -> Result<Record>;

    /// Reads up to `max` durable records from `from` on, in order; gaps and damaged records come
    /// back as [`Readout::Unreadable`] so that callers see them instead of skipping them.
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Readout>>;

    /// Every record up to this sequence is durable.
    fn durable_upto(&self) -> u64;

    /// Every record up to this sequence was acknowledged by the server.
    fn synced_upto(&self) -> u64;

    /// Every record up to this sequence was purged.
    fn purged_upto(&self) -> u64;

    /// Records the server's acknowledgement (durable on return). Never moves backwards.
    fn mark_synced(&self, upto: u64) -> Result<()>;

    /// Removes synced records up to `upto` whose time is at or before `cutoff_ms`, oldest first,
    /// stopping at the first younger one. Never touches unsynced records.
    fn purge_synced(&self, upto: u64, cutoff_ms: u64) -> Result<PurgeReport>;

    /// Bytes the store occupies on disk.
    fn disk_usage(&self) -> Result<u64>;

    /// Walks every record: sequence gaps, authentication of each record, the audit hash chain.
    fn verify(&self) -> Result<VerifyReport>;
}

struct WriteState {
    next_seq: u64,
    key: Arc<DataKey>,
    head: ChainHead,
}

/// [`LogStore`] on sled 0.34, sealed with XChaCha20-Poly1305 data keys wrapped by a [`KeyWrapper`].
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    keys: RwLock<BTreeMap<u32, Arc<DataKey>>>,
    state: Mutex<WriteState>,
    purge_lock: Mutex<()>,
    durable: AtomicU64,
    synced: AtomicU64,
    purged: AtomicU64,
    head_unreadable: bool,
    lost_tail: bool,
    watermark_lock: Mutex<()>,
    db_file: std::fs::File,
    synced_blobs: Mutex<std::collections::BTreeSet<std::ffi::OsString>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state half-updated in a way that matters:
    // the on-disk state is the truth and in-memory counters only move after a successful write.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn meta_ad(name: &[u8]) -> Vec<u8> {
    let mut ad = b"telecart/meta/v1/".to_vec();
    ad.extend_from_slice(name);
    ad
}

impl SledStore {
    /// Opens (or creates) the store in directory `path`, unwrapping its data keys with `wrapper`.
    ///
    /// Fails with [`StoreError::WrongKey`] if `wrapper` is not the key the store was created with,
    /// and with [`StoreError::Damaged`] if sled cannot recover its files.
    pub fn open(path: &Path, wrapper: &dyn KeyWrapper) -> Result<Self> {
        let cfg = sled::Config::new()
            .path(path)
            .cache_capacity(16 << 20)
            .mode(sled::Mode::LowSpace);
        let damaged = |reason: String| StoreError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let db = match catch_unwind(AssertUnwindSafe(|| cfg.open())) {
            Ok(Ok(db)) => db,
            Ok(Err(sled::Error::Io(e))) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
            Ok(Err(e)) => return Err(damaged(e.to_string())),
            Err(_) => return Err(damaged("sled panicked during recovery".into())),
        };
        match db.get(META_LAYOUT)? {
            None => {
                if db.iter().next().is_some() {
                    return Err(damaged(
                        "layout marker missing from a non-empty store".into(),
                    ));
                }
                Self::initialise(&db, wrapper)?;
            }
            Some(v) => {
                let found = read_u32(&v).unwrap_or(u32::MAX);
                if found != LAYOUT_VERSION {
                    return Err(StoreError::UnsupportedLayout {
                        found,
                        supported: LAYOUT_VERSION,
                    });
                }
            }
        }
        let mut keys = BTreeMap::new();
        for kv in db.scan_prefix(b"k") {
            let (k, v) = kv?;
            let epoch = read_u32(&k[1..]).ok_or_else(|| damaged("bad key entry".into()))?;
            keys.insert(epoch, Arc::new(wrapper.unwrap(epoch, &v)?));
        }
        let epoch = db
            .get(META_EPOCH)?
            .and_then(|v| read_u32(&v))
            .ok_or_else(|| damaged("no current epoch".into()))?;
        let key = keys
            .get(&epoch)
            .cloned()
            .ok_or(StoreError::MissingKey { seq: 0, epoch })?;
        let meta_u64 = |name: &[u8]| -> Result<u64> {
            Ok(db.get(name)?.and_then(|v| read_u64(&v)).unwrap_or(0))
        };
        let mut synced = meta_u64(META_SYNCED)?;
        let mut purged = meta_u64(META_PURGED)?;
        let last = match db.scan_prefix(b"r").next_back() {
            Some(kv) => seq_of_rkey(&kv?.0).unwrap_or(0),
            None => 0,
        };
        let mut high = last.max(purged);
        let mut lost_tail = false;
        match read_watermarks(path, &keys) {
            Some(w) => {
                if w.durable > high {
                    // sled came back with fewer records than were acknowledged: a damaged file.
                    tracing::error!(path = %path.display(), present = high, acknowledged = w.durable,
                        "records missing from the end of the store; their sequences will not be reused");
                    lost_tail = true;
                    high = w.durable;
                }
                synced = synced.max(w.synced.min(high));
                purged = purged.max(w.purged.min(high));
            }
            None if path.join(WATERMARK_FILE).exists() => {
                tracing::error!(path = %path.display(), "watermark file unreadable");
                lost_tail = true;
            }
            None => {}
        }
        let next_seq = high + 1;
        let db_path = path.join("db");
        let db_file = std::fs::File::open(&db_path).map_err(|source| StoreError::Io {
            path: db_path.clone(),
            source,
        })?;
        // Files sled created (its log, conf, blobs directory) must be reachable after a power cut.
        sync_dir(path)?;
        let mut store = Self {
            db,
            path: path.to_path_buf(),
            keys: RwLock::new(keys),
            state: Mutex::new(WriteState {
                next_seq,
                key,
                head: ChainHead::EMPTY,
            }),
            purge_lock: Mutex::new(()),
            durable: AtomicU64::new(next_seq - 1),
            synced: AtomicU64::new(synced),
            purged: AtomicU64::new(purged),
            head_unreadable: false,
            lost_tail,
            watermark_lock: Mutex::new(()),
            db_file,
            synced_blobs: Mutex::new(Default::default()),
        };
        let head = match store
            .read_sealed_meta(META_HEAD)
            .and_then(|b| ChainHead::decode(&b))
        {
            Some(h) => h,
            None => {
                // Keep logging (a cart must keep its audit trail going) but remember the damage:
                // verify() reports it. The head is recomputed from the entries present.
                tracing::error!(path = %path.display(), "audit chain head unreadable; recomputing from entries");
                store.head_unreadable = true;
                store.walk(false)?.1
            }
        };
        lock(&store.state).head = head;
        Ok(store)
    }

    /// Makes everything applied so far durable.
    ///
    /// sled 0.34's `flush` writes its log with `sync_file_range` on Linux, which flushes neither the
    /// file's metadata (its growing size) nor the drive's volatile write cache, and never fsyncs the
    /// blob files it writes for large pages. So after sled's flush we `fdatasync` the log file and
    /// fsync any blob file not yet synced (and the blobs directory): the same guarantee as SQLite's
    /// `synchronous=FULL`.
    fn durable_flush(&self) -> Result<()> {
        self.db.flush()?;
        let db_path = || self.path.join("db");
        self.db_file.sync_data().map_err(|source| StoreError::Io {
            path: db_path(),
            source,
        })?;
        let blobs = self.path.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: blobs,
                    source,
                });
            }
        };
        let mut synced = lock(&self.synced_blobs);
        let mut present = std::collections::BTreeSet::new();
        let mut new = false;
        for e in entries {
            let Ok(e) = e else { continue };
            let name = e.file_name();
            if !synced.contains(&name) {
                match std::fs::File::open(e.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => new = true,
                    // Removed by sled meanwhile: nothing to make durable.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(StoreError::Io {
                            path: e.path(),
                            source,
                        });
                    }
                }
            }
            present.insert(name);
        }
        *synced = present;
        if new {
            sync_dir(&blobs)?;
        }
        Ok(())
    }

    /// Writes the sealed watermarks sidecar (durable, atomic: temp file, fsync, rename, fsync dir).
    fn write_watermarks(&self) -> Result<()> {
        let _g = lock(&self.watermark_lock);
        let key = lock(&self.state).key.clone();
        let w = Watermarks {
            durable: self.durable_upto(),
            synced: self.synced_upto(),
            purged: self.purged_upto(),
        };
        let sealed = seal_meta(&key, WATERMARK_FILE.as_bytes(), &w.encode())?;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        let tmp = self.path.join(format!("{WATERMARK_FILE}.tmp"));
        let dst = self.path.join(WATERMARK_FILE);
        {
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            std::io::Write::write_all(&mut f, &sealed).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        sync_dir(&self.path)
    }

    fn initialise(db: &sled::Db, wrapper: &dyn KeyWrapper) -> Result<()> {
        let key = DataKey::generate(1)?;
        let wrapped = wrapper.wrap(1, &key)?;
        let mut b = sled::Batch::default();
        b.insert(&kkey(1), wrapped);
        b.insert(META_EPOCH, &1u32.to_be_bytes());
        b.insert(
            META_HEAD,
            seal_meta(&key, META_HEAD, &ChainHead::EMPTY.encode())?,
        );
        b.insert(META_LAYOUT, &LAYOUT_VERSION.to_be_bytes());
        db.apply_batch(b)?;
        db.flush()?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The epoch new records are sealed under.
    pub fn current_epoch(&self) -> u32 {
        lock(&self.state).key.epoch()
    }

    /// Starts a new data-key epoch: new records are sealed under a fresh key, older records stay
    /// readable under theirs (nothing is re-encrypted). Returns the new epoch.
    pub fn rotate_data_key(&self, wrapper: &dyn KeyWrapper) -> Result<u32> {
        let mut st = lock(&self.state);
        let epoch = st
            .key
            .epoch()
            .checked_add(1)
            .ok_or(StoreError::Invalid("epoch overflow"))?;
        let key = Arc::new(DataKey::generate(epoch)?);
        let mut b = sled::Batch::default();
        b.insert(&kkey(epoch), wrapper.wrap(epoch, &key)?);
        b.insert(META_EPOCH, &epoch.to_be_bytes());
        self.db.apply_batch(b)?;
        self.durable_flush()?;
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(epoch, key.clone());
        st.key = key;
        Ok(epoch)
    }

    /// Re-wraps every data key under `new` (rotation of the device master key). Records are not
    /// touched. After this, the store opens with `new` only.
    pub fn rewrap_keys(&self, new: &dyn KeyWrapper) -> Result<()> {
        let _st = lock(&self.state);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut b = sled::Batch::default();
        for (epoch, key) in keys.iter() {
            b.insert(&kkey(*epoch), new.wrap(*epoch, key)?);
        }
        self.db.apply_batch(b)?;
        self.durable_flush()?;
        Ok(())
    }

    fn key(&self, epoch: u32) -> Option<Arc<DataKey>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&epoch)
            .cloned()
    }

    fn read_sealed_meta(&self, name: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let v = self.db.get(name).ok()??;
        let epoch = read_u32(v.get(..4)?)?;
        let nonce: [u8; NONCE_LEN] = v.get(4..4 + NONCE_LEN)?.try_into().ok()?;
        let key = self.key(epoch)?;
        key.open(&nonce, &meta_ad(name), v.get(4 + NONCE_LEN..)?)
    }

    fn open_envelope(&self, seq: u64, bytes: &[u8]) -> Result<(Record, Zeroizing<Vec<u8>>)> {
        let env = Envelope::parse(seq, bytes)?;
        if env.header.seq != seq {
            return Err(StoreError::Malformed {
                seq,
                reason: "sequence in header differs from its key",
            });
        }
        let key = self.key(env.header.epoch).ok_or(StoreError::MissingKey {
            seq,
            epoch: env.header.epoch,
        })?;
        env.open(&key)
    }

    /// Walks all records present. Returns the report and the chain head recomputed from them.
    fn walk(&self, check_head: bool) -> Result<(VerifyReport, ChainHead)> {
        let mut report = VerifyReport::default();
        let purged = self.purged.load(Ordering::SeqCst);
        let anchor = if purged == 0 {
            Some(ChainHead::EMPTY)
        } else {
            self.read_sealed_meta(META_ANCHOR)
                .and_then(|b| ChainHead::decode(&b))
                .or(if self.db.get(META_ANCHOR)?.is_none() {
                    Some(ChainHead::EMPTY)
                } else {
                    None
                })
        };
        let mut chain = anchor.unwrap_or(ChainHead::EMPTY);
        if anchor.is_none() {
            report.audit_break = Some("purge anchor unreadable".into());
        }
        let mut expected = purged + 1;
        let note_break = |report: &mut VerifyReport, msg: String| {
            if report.audit_break.is_none() {
                report.audit_break = Some(msg);
            }
        };
        for kv in self.db.scan_prefix(b"r") {
            let (k, v) = kv?;
            let Some(seq) = seq_of_rkey(&k) else { continue };
            while expected < seq {
                if report.missing.len() < 100 {
                    report.missing.push(expected);
                }
                expected += 1;
            }
            expected = seq + 1;
            report.records += 1;
            let is_audit = Envelope::parse(seq, &v)
                .map(|e| e.header.kind == Kind::Audit)
                .unwrap_or(false);
            match self.open_envelope(seq, &v) {
                Ok((rec, plain)) => {
                    if let RecordBody::Audit(e) = &rec.body {
                        report.audit_entries += 1;
                        if parse_hash(&e.prev_hash) != Some(chain.hash) {
                            note_break(
                                &mut report,
                                format!("entry {seq} does not chain to the previous entry"),
                            );
                        }
                        chain = ChainHead {
                            hash: entry_hash(seq, &plain),
                            count: chain.count + 1,
                        };
                    }
                }
                Err(e) => {
                    if report.unreadable.len() < 100 {
                        report.unreadable.push((seq, e.to_string()));
                    }
                    if is_audit {
                        report.audit_entries += 1;
                        note_break(&mut report, format!("entry {seq} unreadable"));
                    }
                }
            }
        }
        let next = lock(&self.state).next_seq;
        while expected < next {
            if report.missing.len() < 100 {
                report.missing.push(expected);
            }
            expected += 1;
        }
        if check_head && self.lost_tail && report.missing.is_empty() {
            report.missing.push(0);
        }
        if check_head {
            if self.head_unreadable {
                note_break(
                    &mut report,
                    "sealed chain head was unreadable at open".into(),
                );
            }
            let head = lock(&self.state).head;
            if head != chain {
                note_break(
                    &mut report,
                    format!(
                        "chain ends after {} entries but {} were written (entries removed or altered)",
                        chain.count, head.count
                    ),
                );
            }
        }
        Ok((report, chain))
    }
}

fn seal_meta(key: &DataKey, name: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let (nonce, ct) = key.seal(&meta_ad(name), plain)?;
    let mut v = Vec::with_capacity(4 + NONCE_LEN + ct.len());
    v.extend_from_slice(&key.epoch().to_be_bytes());
    v.extend_from_slice(&nonce);
    v.extend_from_slice(&ct);
    Ok(v)
}

impl LogStore for SledStore {
    fn append_batch(&self, records: Vec<NewRecord>) -> Result<Vec<u64>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut seqs = Vec::with_capacity(records.len());
        {
            let mut st = lock(&self.state);
            let key = st.key.clone();
            let mut head = st.head;
            let mut seq = st.next_seq;
            let mut batch = sled::Batch::default();
            for mut r in records {
                if let RecordBody::Audit(e) = &mut r.body {
                    e.prev_hash = hex(&head.hash);
                }
                let plain = record::encode_body(&r.body)?;
                if r.body.kind() == Kind::Audit {
                    head = ChainHead {
                        hash: entry_hash(seq, &plain),
                        count: head.count + 1,
                    };
                }
                let header = Header {
                    kind: r.body.kind(),
                    epoch: key.epoch(),
                    seq,
                    at_ms: r.at_ms,
                    session: r.session,
                };
                batch.insert(&rkey(seq), record::seal(&header, &plain, &key)?);
                seqs.push(seq);
                seq += 1;
            }
            if head != st.head {
                batch.insert(META_HEAD, seal_meta(&key, META_HEAD, &head.encode())?);
            }
            self.db.apply_batch(batch)?;
            st.next_seq = seq;
            st.head = head;
        }
        // Outside the lock: concurrent appenders share flushes (sled's flush covers every write
        // applied before it), and every sequence below ours was applied before we took the lock.
        self.durable_flush()?;
        if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
            self.durable.fetch_max(*last, Ordering::SeqCst);
            if (first - 1) / WATERMARK_EVERY != *last / WATERMARK_EVERY {
                self.write_watermarks()?;
            }
        }
        Ok(seqs)
    }

    fn read(&self, seq: u64) -> Result<Record> {
        let v = self
            .db
            .get(rkey(seq))?
            .ok_or(StoreError::NotFound { seq })?;
        Ok(self.open_envelope(seq, &v)?.0)
    }

    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Readout>> {
        let durable = self.durable.load(Ordering::SeqCst);
        let from = from.max(self.purged.load(Ordering::SeqCst) + 1);
        let mut out = Vec::new();
        if from > durable || max == 0 {
            return Ok(out);
        }
        let mut expected = from;
        for kv in self.db.range(rkey(from)..=rkey(durable)) {
            let (k, v) = kv?;
            let Some(seq) = seq_of_rkey(&k) else { continue };
            while expected < seq && out.len() < max {
                out.push(Readout::Unreadable {
                    seq: expected,
                    error: StoreError::NotFound { seq: expected },
                });
                expected += 1;
            }
            if out.len() >= max {
                return Ok(out);
            }
            expected = seq + 1;
            out.push(match self.open_envelope(seq, &v) {
                Ok((record, plain)) => {
                    let digest = content_digest(seq, record.at_ms, &plain);
                    Readout::Ok { record, digest }
                }
                Err(error) => Readout::Unreadable { seq, error },
            });
            if out.len() >= max {
                return Ok(out);
            }
        }
        while expected <= durable && out.len() < max {
            out.push(Readout::Unreadable {
                seq: expected,
                error: StoreError::NotFound { seq: expected },
            });
            expected += 1;
        }
        Ok(out)
    }

    fn durable_upto(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    fn synced_upto(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    fn purged_upto(&self) -> u64 {
        self.purged.load(Ordering::SeqCst)
    }

    fn mark_synced(&self, upto: u64) -> Result<()> {
        if upto > self.durable_upto() {
            return Err(StoreError::Invalid(
                "cannot mark records synced that are not durable",
            ));
        }
        let _g = lock(&self.purge_lock);
        if upto <= self.synced_upto() {
            return Ok(());
        }
        self.db.insert(META_SYNCED, &upto.to_be_bytes())?;
        self.durable_flush()?;
        self.synced.store(upto, Ordering::SeqCst);
        self.write_watermarks()
    }

    fn purge_synced(&self, upto: u64, cutoff_ms: u64) -> Result<PurgeReport> {
        let _g = lock(&self.purge_lock);
        let limit = upto.min(self.synced_upto());
        let start = self.purged_upto();
        let mut report = PurgeReport {
            removed: 0,
            purged_upto: start,
        };
        if limit <= start {
            return Ok(report);
        }
        let mut anchor = match self
            .read_sealed_meta(META_ANCHOR)
            .and_then(|b| ChainHead::decode(&b))
        {
            Some(a) => a,
            None => ChainHead::EMPTY,
        };
        let anchor_before = anchor;
        let mut batch = sled::Batch::default();
        let mut last = start;
        for kv in self.db.range(rkey(start + 1)..=rkey(limit)) {
            let (k, v) = kv?;
            let Some(seq) = seq_of_rkey(&k) else { continue };
            if let Ok(env) = Envelope::parse(seq, &v) {
                if env.header.at_ms > cutoff_ms {
                    break;
                }
                if env.header.kind == Kind::Audit
                    && let Ok((_, plain)) = self.open_envelope(seq, &v)
                {
                    anchor = ChainHead {
                        hash: entry_hash(seq, &plain),
                        count: anchor.count + 1,
                    };
                }
            }
            batch.remove(&k);
            report.removed += 1;
            last = seq;
        }
        // Gaps up to the last removed record are purged too (they were synced as unreadable).
        if last == start {
            return Ok(report);
        }
        if anchor != anchor_before {
            let key = lock(&self.state).key.clone();
            batch.insert(META_ANCHOR, seal_meta(&key, META_ANCHOR, &anchor.encode())?);
        }
        batch.insert(META_PURGED, &last.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.durable_flush()?;
        self.purged.store(last, Ordering::SeqCst);
        report.purged_upto = last;
        self.write_watermarks()?;
        Ok(report)
    }

    fn disk_usage(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }

    fn verify(&self) -> Result<VerifyReport> {
        Ok(self.walk(true)?.0)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.write_watermarks() {
            tracing::error!(error = %e, "writing watermarks on close");
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watermarks {
    durable: u64,
    synced: u64,
    purged: u64,
}

impl Watermarks {
    fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.durable.to_be_bytes());
        b[8..16].copy_from_slice(&self.synced.to_be_bytes());
        b[16..].copy_from_slice(&self.purged.to_be_bytes());
        b
    }
}

fn read_watermarks(dir: &Path, keys: &BTreeMap<u32, Arc<DataKey>>) -> Option<Watermarks> {
    let v = std::fs::read(dir.join(WATERMARK_FILE)).ok()?;
    let epoch = read_u32(v.get(..4)?)?;
    let nonce: [u8; NONCE_LEN] = v.get(4..4 + NONCE_LEN)?.try_into().ok()?;
    let plain = keys.get(&epoch)?.open(
        &nonce,
        &meta_ad(WATERMARK_FILE.as_bytes()),
        v.get(4 + NONCE_LEN..)?,
    )?;
    Some(Watermarks {
        durable: read_u64(plain.get(..8)?)?,
        synced: read_u64(plain.get(8..16)?)?,
        purged: read_u64(plain.get(16..24)?)?,
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

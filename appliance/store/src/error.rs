//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in the session-log store, its crypto and its record format.
///
/// No variant ever carries plaintext of a record: messages name sequences, epochs and paths only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing a file (key file, data directory) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A key file may be read by other users; the key is refused.
    #[error(
        "{path}: key file is accessible by group or others (mode {mode:o}); it must be 0600 or 0400"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file does not hold a key of the expected form.
    #[error("{path}: {reason}")]
    KeyFileFormat {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A wrapped data key did not unwrap: the master key is not the one this store was created with,
    /// or the wrapped key was altered.
    #[error(
        "data key of epoch {epoch} does not unwrap: wrong device master key, or the key entry was altered"
    )]
    WrongKey {
        /// The key epoch.
        epoch: u32,
    },
    /// A record refers to a data-key epoch that the store does not hold.
    #[error("record {seq}: data key epoch {epoch} is missing from the store")]
    MissingKey {
        /// Record sequence.
        seq: u64,
        /// The epoch it names.
        epoch: u32,
    },
    /// A record's bytes are not a well-formed envelope.
    #[error("record {seq}: malformed envelope: {reason}")]
    Malformed {
        /// Sequence (the sled key) of the record, 0 if unknown.
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The AEAD tag did not verify: the ciphertext, its header or the key entry was altered.
    #[error("record {seq}: authentication failed (ciphertext or header altered)")]
    Tampered {
        /// Record sequence.
        seq: u64,
    },
    /// A record decrypted but its content does not parse.
    #[error("record {seq}: content does not parse: {reason}")]
    BadContent {
        /// Record sequence.
        seq: u64,
        /// The parser's message (never includes the content).
        reason: String,
    },
    /// The store was written by a newer, unknown layout version.
    #[error("store layout version {found} is not supported (this build reads {supported})")]
    UnsupportedLayout {
        /// Version found on disk.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// A record with that sequence is not in the store (purged, or never written).
    #[error("record {seq} is not in the store")]
    NotFound {
        /// The sequence asked for.
        seq: u64,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// sled reported an error.
    #[error("sled: {0}")]
    Sled(String),
    /// sled's files are damaged beyond what sled can open (it panicked while recovering).
    #[error("{path}: store files are damaged and cannot be opened: {reason}")]
    Damaged {
        /// The data directory.
        path: PathBuf,
        /// What sled said.
        reason: String,
    },
    /// The audit trail's hash chain is broken.
    #[error("audit trail broken at record {seq}: {reason}")]
    AuditChain {
        /// The first audit record that does not chain (0: the sealed head).
        seq: u64,
        /// What does not match.
        reason: &'static str,
    },
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Writing an export failed.
    #[error("export: {0}")]
    Export(#[source] std::io::Error),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e.to_string())
    }
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

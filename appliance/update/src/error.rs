//! The one error type of the crate.

use std::fmt;

/// Everything that can go wrong reading an image, flashing it or switching slots.
///
/// Derives `Clone + PartialEq` so tests assert on the exact refusal; IO errors are kept as their
/// kind and message for that reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The input does not start with the image magic: a raw file system, an archive, the wrong file.
    #[error("not a telecart image (no TCARTIMG header): refusing unsigned or foreign input")]
    NotAnImage,
    /// A newer image format than this tool reads.
    #[error("image format {0} is not supported (this tool reads format 1)")]
    UnsupportedFormat(u16),
    /// The manifest length in the header is absurd.
    #[error("manifest length {0} bytes is outside 2..=65536")]
    ManifestSize(u32),
    /// The image ended early.
    #[error("image is truncated: it ended inside {0}")]
    Truncated(String),
    /// The signature field is all zeros: the image was never signed.
    #[error("image is unsigned")]
    Unsigned,
    /// No trusted key verifies the signature.
    #[error(
        "signature does not verify with any of the {0} trusted key(s): wrongly signed or tampered"
    )]
    BadSignature(usize),
    /// No trusted key is configured, so nothing can be verified.
    #[error("no trusted public key configured (update.public_keys)")]
    NoTrustedKeys,
    /// The signed manifest is not valid.
    #[error("manifest: {0}")]
    BadManifest(String),
    /// The image is for another board.
    #[error("image is for board {image:?}, this cart is {device:?}")]
    WrongBoard {
        /// Board named in the manifest.
        image: String,
        /// This cart's board.
        device: String,
    },
    /// Installing would go back to an older version.
    #[error(
        "image version {image} is older than the installed {installed}: downgrade refused (use --allow-downgrade, which is audited)"
    )]
    Downgrade {
        /// Version in the image.
        image: String,
        /// Version running now.
        installed: String,
    },
    /// The installed version is too old to take this image directly.
    #[error("image needs at least version {minimum} installed, this cart runs {installed}")]
    InstalledTooOld {
        /// The manifest's `min_version`.
        minimum: String,
        /// Version running now.
        installed: String,
    },
    /// A payload's bytes do not hash to the signed manifest's value.
    #[error("payload {0:?} does not match its signed SHA-256: tampered or corrupt")]
    PayloadHash(String),
    /// Bytes after the last payload.
    #[error("image has data after its last payload: tampered or corrupt")]
    TrailingData,
    /// What was written to the slot does not read back as the same bytes.
    #[error(
        "read-back of {target} does not match the image (SHA-256 {read_back}): the slot is not armed"
    )]
    ReadBack {
        /// The slot's device or file.
        target: String,
        /// Hash of what was read back.
        read_back: String,
    },
    /// The slot is too small for the payload.
    #[error("{target} holds {capacity} bytes, the payload needs {needed}")]
    SlotTooSmall {
        /// The slot's device or file.
        target: String,
        /// Its size.
        capacity: u64,
        /// The payload size.
        needed: u64,
    },
    /// Refused to overwrite the running slot.
    #[error("refusing to write slot {0}: it is the slot running now")]
    ActiveSlot(String),
    /// A boot-loader environment is damaged or not in the expected format.
    #[error("boot environment {path}: {reason}")]
    BootEnv {
        /// The file or device.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A slot operation that the current state does not allow.
    #[error("{0}")]
    State(String),
    /// A key file could not be used.
    #[error("key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The `[update]` configuration is not valid.
    #[error("{0}")]
    Config(String),
    /// The flash was stopped on request before it finished (the slot is not armed).
    #[error(
        "flash interrupted after {0} bytes; the running slot is untouched and the new slot is not armed"
    )]
    Interrupted(u64),
    /// An operating-system error.
    #[error("{context}: {message}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The error kind.
        kind: IoKind,
        /// The OS message.
        message: String,
    },
}

/// A comparable stand-in for [`std::io::ErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoKind(pub std::io::ErrorKind);

impl fmt::Display for IoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl UpdateError {
    /// An IO error with what was being done.
    pub fn io(context: impl Into<String>, e: &std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            kind: IoKind(e.kind()),
            message: e.to_string(),
        }
    }
}

/// Result with [`UpdateError`].
pub type Result<T, E = UpdateError> = std::result::Result<T, E>;

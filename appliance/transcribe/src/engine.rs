//! One decoder: whisper.cpp's `whisper_full` on an utterance, with the settings captions need.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use whisper_rs::{FullParams, SamplingStrategy, WhisperState};

use crate::{SAMPLE_RATE, TranscribeError, WhisperModel};

/// Decoder settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeConfig {
    /// CPU threads whisper.cpp uses for one utterance.
    pub threads: u32,
    /// Text Whisper reads as what came before (biases spelling and vocabulary); empty: none.
    pub prompt: String,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            threads: 2,
            prompt: crate::Vocabulary::bundled().prompt(),
        }
    }
}

/// A model plus its own decoding state (one per worker thread).
pub struct Decoder {
    state: WhisperState,
    config: DecodeConfig,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// whisper.cpp's abort callback: true once the transcriber is stopping.
unsafe extern "C" fn abort_when_stopped(user_data: *mut std::ffi::c_void) -> bool {
    if user_data.is_null() {
        return false;
    }
    // SAFETY: `user_data` is the `Arc<AtomicBool>` of the decoder running this decode.
    let stop = unsafe { &*(user_data as *const AtomicBool) };
    stop.load(Ordering::Relaxed)
}

/// whisper.cpp returns nothing for less than a second of audio; short words ("yes", "no") are
/// padded with silence to this length.
const MIN_SAMPLES: usize = SAMPLE_RATE as usize * 11 / 10;

/// Whisper's stock outputs for silence and noise, which are not speech.
fn is_non_speech(text: &str) -> bool {
    let t = text.trim();
    t.is_empty()
        || (t.starts_with('[') && t.ends_with(']'))
        || (t.starts_with('(') && t.ends_with(')'))
        || (t.starts_with('*') && t.ends_with('*'))
}

impl Decoder {
    /// A decoder on `model`; `stop` aborts a decode in progress when set.
    pub fn new(
        model: &WhisperModel,
        config: DecodeConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, TranscribeError> {
        if !(1..=64).contains(&config.threads) {
            return Err(TranscribeError::Config(format!(
                "threads must be 1 to 64, got {}",
                config.threads
            )));
        }
        let state = model.context.create_state().map_err(|e| {
            TranscribeError::Whisper(format!("cannot create a decoding state: {e}"))
        })?;
        Ok(Self {
            state,
            config,
            stop,
        })
    }

    /// The text of 16 kHz mono `samples` (at most 30 s are looked at), trimmed; empty for
    /// silence and noise.
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<String, TranscribeError> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.config.threads as i32);
        params.set_language(Some("en"));
        params.set_translate(false);
        // Each utterance stands alone: carrying text across utterances makes one bad
        // caption poison the next ones.
        params.set_no_context(true);
        params.set_no_timestamps(true);
        params.set_single_segment(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        // No temperature fallback: re-decoding at higher temperatures multiplies the worst-case
        // latency, and for captions a fast best guess beats a slow better one.
        params.set_temperature_inc(0.0);
        if !self.config.prompt.is_empty() {
            params.set_initial_prompt(&self.config.prompt);
        }
        // whisper-rs 0.16's `set_abort_callback_safe` hands whisper.cpp a pointer to a boxed
        // trait object but reads it back as the concrete closure (undefined behaviour: it
        // aborted decodes at random here), so the raw callback is used with the flag itself.
        // SAFETY: the callback only reads an AtomicBool through `user_data`, which points into
        // `self.stop`'s allocation, alive for the whole synchronous `full` call below.
        unsafe {
            params.set_abort_callback(Some(abort_when_stopped));
            params.set_abort_callback_user_data(Arc::as_ptr(&self.stop) as *mut std::ffi::c_void);
        }

        let padded;
        let audio = if samples.len() < MIN_SAMPLES {
            padded = {
                let mut p = samples.to_vec();
                p.resize(MIN_SAMPLES, 0.0);
                p
            };
            &padded[..]
        } else {
            &samples[..samples.len().min(30 * SAMPLE_RATE as usize)]
        };
        if audio.is_empty() {
            return Ok(String::new());
        }
        self.state
            .full(params, audio)
            .map_err(|e| TranscribeError::Whisper(e.to_string()))?;
        let mut text = String::new();
        for segment in self.state.as_iter() {
            let piece = segment
                .to_str_lossy()
                .map_err(|e| TranscribeError::Whisper(e.to_string()))?;
            if is_non_speech(&piece) {
                continue;
            }
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(piece.trim());
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_non_speech_outputs_are_recognised() {
        for t in [
            "",
            "  ",
            "[BLANK_AUDIO]",
            "(silence)",
            "[Music]",
            "*coughs*",
        ] {
            assert!(is_non_speech(t), "{t:?}");
        }
        assert!(!is_non_speech("The patient (age 40) is fine."));
    }
}

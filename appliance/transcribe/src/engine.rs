//! One decoder: whisper.cpp's `whisper_full` on an utterance, with the settings captions need.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use whisper_rs::{FullParams, SamplingStrategy, WhisperState};

use crate::{SAMPLE_RATE, TranscribeError, WhisperModel};

/// Decoder settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeConfig {
    /// CPU threads whisper.cpp uses for one utterance.
    pub threads: u32,
    /// Text Whisper reads as what came before (biases spelling and vocabulary); empty: none.
    pub prompt: String,
    /// The shortest encoder window a partial is decoded with; `None`: partials get the full
    /// 30 s window like finals.
    ///
    /// Whisper's encoder costs the same for 1 s of speech as for 30 s unless its window
    /// (`audio_ctx`) is narrowed. A narrow window makes a partial 3x cheaper, but the tiny
    /// model then misses rare words ("nausea" read as "nothing" at 10 and 15 s windows), so
    /// finals, which are recorded and shown last, always get the full window.
    pub partial_window: Option<Duration>,
    /// The window finals are decoded with: [`Window::Full`] unless the CPU is too slow for it.
    pub final_window: Window,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            threads: 2,
            prompt: crate::Vocabulary::bundled().prompt(),
            partial_window: Some(MIN_FITTED_WINDOW),
            final_window: Window::Full,
        }
    }
}

/// The shortest fitted window partials get by default: shorter ones cost little less and
/// garble more.
pub const MIN_FITTED_WINDOW: Duration = Duration::from_secs(6);

/// How much of Whisper's 30 s encoder window one decode uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The whole window (what Whisper was trained on): the most accurate.
    Full,
    /// The audio's length plus a second of margin, but at least this long.
    Fitted(Duration),
}

/// Whisper's encoder positions per second of audio (1500 for its 30 s window).
const ENCODER_POSITIONS_PER_SECOND: f64 = 50.0;
const FULL_WINDOW_SECONDS: f64 = 30.0;

impl Window {
    /// whisper.cpp's `audio_ctx` for `samples` 16 kHz samples (0: the model's full window).
    fn audio_ctx(self, samples: usize) -> i32 {
        match self {
            Window::Full => 0,
            Window::Fitted(min) => {
                let seconds = (samples as f64 / f64::from(SAMPLE_RATE) + 1.0)
                    .max(min.as_secs_f64())
                    .min(FULL_WINDOW_SECONDS);
                if seconds >= FULL_WINDOW_SECONDS {
                    0
                } else {
                    (seconds * ENCODER_POSITIONS_PER_SECOND).ceil() as i32
                }
            }
        }
    }
}

/// Why a decode was cut short: the transcriber stopping, or more urgent work (a final waiting
/// while a partial decodes).
#[derive(Debug, Default)]
pub struct Interrupt {
    stop: Arc<AtomicBool>,
    preempt: AtomicBool,
}

impl Interrupt {
    /// Interrupted when `stop` is set (shared by every decoder of a transcriber).
    pub fn new(stop: Arc<AtomicBool>) -> Self {
        Self {
            stop,
            preempt: AtomicBool::new(false),
        }
    }

    /// Asks the decode in progress (if any) to give up, until [`Interrupt::clear`].
    pub fn preempt(&self) {
        self.preempt.store(true, Ordering::Relaxed);
    }

    /// Lets decodes run again after [`Interrupt::preempt`].
    pub fn clear(&self) {
        self.preempt.store(false, Ordering::Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.preempt.load(Ordering::Relaxed)
    }
}

/// A model plus its own decoding state (one per worker thread).
pub struct Decoder {
    state: WhisperState,
    config: DecodeConfig,
    interrupt: Arc<Interrupt>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// whisper.cpp's abort callback: true once the decode is interrupted.
unsafe extern "C" fn abort_when_interrupted(user_data: *mut std::ffi::c_void) -> bool {
    if user_data.is_null() {
        return false;
    }
    // SAFETY: `user_data` is the `Arc<Interrupt>` of the decoder running this decode.
    let interrupt = unsafe { &*(user_data as *const Interrupt) };
    interrupt.is_set()
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
        Self::with_interrupt(model, config, Arc::new(Interrupt::new(stop)))
    }

    /// A decoder on `model` that gives up a decode when `interrupt` says so.
    pub fn with_interrupt(
        model: &WhisperModel,
        config: DecodeConfig,
        interrupt: Arc<Interrupt>,
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
            interrupt,
        })
    }

    /// The text of 16 kHz mono `samples` (at most 30 s are looked at), trimmed; empty for
    /// silence and noise. Decoded with the finals' window ([`DecodeConfig::final_window`]).
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<String, TranscribeError> {
        self.transcribe_in(samples, self.config.final_window)
    }

    /// A partial result's text: like [`Decoder::transcribe`], with the configured narrower
    /// window ([`DecodeConfig::partial_window`]).
    pub fn transcribe_partial(&mut self, samples: &[f32]) -> Result<String, TranscribeError> {
        let window = self
            .config
            .partial_window
            .map_or(Window::Full, Window::Fitted);
        self.transcribe_in(samples, window)
    }

    /// The text of `samples` decoded with `window`.
    pub fn transcribe_in(
        &mut self,
        samples: &[f32],
        window: Window,
    ) -> Result<String, TranscribeError> {
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
        // SAFETY: the callback only reads atomics through `user_data`, which points into
        // `self.interrupt`'s allocation, alive for the whole synchronous `full` call below.
        unsafe {
            params.set_abort_callback(Some(abort_when_interrupted));
            params.set_abort_callback_user_data(
                Arc::as_ptr(&self.interrupt) as *mut std::ffi::c_void
            );
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
        params.set_audio_ctx(window.audio_ctx(audio.len()));
        let result = self.state.full(params, audio);
        if self.interrupt.is_set() {
            return Err(TranscribeError::Interrupted);
        }
        result.map_err(|e| TranscribeError::Whisper(e.to_string()))?;
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
    fn a_fitted_window_covers_the_audio_plus_a_second_and_never_exceeds_whispers() {
        let six = Window::Fitted(Duration::from_secs(6));
        // Short audio: the minimum window (6 s = 300 encoder positions).
        assert_eq!(six.audio_ctx(16_000), 300);
        // 8 s of audio: 9 s of window.
        assert_eq!(six.audio_ctx(8 * 16_000), 450);
        // 29.5 s of audio would need more than 30 s: the model's own window.
        assert_eq!(six.audio_ctx(29 * 16_000 + 8_000), 0);
        assert_eq!(Window::Full.audio_ctx(16_000), 0);
    }

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

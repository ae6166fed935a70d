//! Offline transcription for live captions.
//!
//! whisper.cpp (through whisper-rs) with a model that ships with the cart, streaming: the
//! 16 kHz taps of the cart's microphone and of the remote party go through an energy VAD
//! that cuts utterances; worker threads transcribe each one (partials while the person
//! speaks, a final at the end), label it with the side and capture times, and mark medical
//! terms from a bundled vocabulary. Captions become `caption` messages of the `telecart`
//! data channel, or are burned into the outgoing video for SIP callers.
//!
//! ```no_run
//! use telecart_transcribe::{Side, Transcriber, TranscriberConfig, WhisperModel, default_model_path};
//! # fn main() -> Result<(), telecart_transcribe::TranscribeError> {
//! let model = WhisperModel::load(&default_model_path(), None)?;
//! let (input, captions) = Transcriber::start(&model, TranscriberConfig::default())?;
//! // From the audio threads: never blocks, drops and counts when behind.
//! # let frame = telecart_core::AudioFrame { sample_rate: 48_000, channels: 1, samples: vec![0; 960], sequence: 0, capture_time: telecart_core::CaptureTime(0) };
//! input.push(Side::Cart, frame);
//! drop(input);
//! while let Some(caption) = captions.recv() {
//!     println!("{}", caption.to_message().to_json());
//! }
//! # Ok(()) }
//! ```
//!
//! Pure parts (VAD, cutting, vocabulary, burn-in layout) are tested without the model; the
//! model-driven tests in `tests/` need the file `tests/setup.sh` writes and fail without it.

mod burn;
mod caption;
mod engine;
mod error;
mod file;
mod model;
mod resample;
pub mod segmenter;
mod transcriber;
pub mod vad;
mod vocab;

/// The sample rate Whisper works at.
pub const SAMPLE_RATE: u32 = 16_000;

pub use burn::CaptionBurner;
pub use caption::{Caption, Side};
pub use engine::{DecodeConfig, Decoder, Interrupt, MIN_FITTED_WINDOW, Window};
pub use error::TranscribeError;
pub use file::{Recording, read_wav_16k, transcribe_samples};
pub use model::{
    DEV_MODEL, INSTALLED_MODEL, MODEL_ENV, ModelInfo, TINY_EN_SHA256, WhisperModel,
    default_model_path, read_model_info, sha256_file,
};
pub use resample::{MonoResampler, downmix};
pub use transcriber::{AudioInput, Captions, Transcriber, TranscriberConfig, TranscriberStats};
pub use vocab::{BUNDLED_VOCABULARY, CATEGORIES, Entry, Vocabulary};

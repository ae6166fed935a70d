//! Transcribing a recording: the live pipeline's conversion, cutting, decoding and
//! highlighting, run in order on the calling thread (no queue, so nothing is dropped).

use std::path::Path;

use telecart_core::CaptureTime;

use crate::engine::{DecodeConfig, Decoder};
use crate::resample::{MAX_CHANNELS, MonoResampler, downmix};
use crate::segmenter::{CutterConfig, UtteranceCutter};
use crate::transcriber::decode;
use crate::{Caption, Side, TranscribeError, Vocabulary, WhisperModel};

/// A WAV file read as 16 kHz mono.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// 16 kHz mono samples in -1..1.
    pub samples: Vec<f32>,
    /// The file's own format, for messages: "22050 Hz 1 ch 16-bit".
    pub original: String,
}

/// Reads any WAV `hound` reads (8/16/24/32-bit integer, 32-bit float, any channel count and
/// rate), mixing down to mono and resampling to 16 kHz.
pub fn read_wav_16k(path: &Path) -> Result<Recording, TranscribeError> {
    let wav_error =
        |message: String| TranscribeError::Audio(format!("{}: {message}", path.display()));
    let reader = hound::WavReader::open(path).map_err(|e| match e {
        hound::Error::IoError(io) => TranscribeError::Io {
            path: path.to_path_buf(),
            message: io.to_string(),
        },
        other => wav_error(other.to_string()),
    })?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.channels > MAX_CHANNELS || spec.sample_rate == 0 {
        return Err(wav_error(format!(
            "header says {} channels at {} Hz",
            spec.channels, spec.sample_rate
        )));
    }
    let original = format!(
        "{} Hz {} ch {}-bit{}",
        spec.sample_rate,
        spec.channels,
        spec.bits_per_sample,
        if spec.sample_format == hound::SampleFormat::Float {
            " float"
        } else {
            ""
        }
    );
    let mut resampler = MonoResampler::new(spec.sample_rate)?;
    let channels = spec.channels as usize;
    let mut samples = Vec::new();
    let mut block = Vec::with_capacity(8192 * channels);
    let scale = match spec.sample_format {
        hound::SampleFormat::Float => 1.0,
        hound::SampleFormat::Int => 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32,
    };
    let mut flush = |block: &mut Vec<f32>, samples: &mut Vec<f32>| {
        let mono = downmix(block, channels);
        samples.extend(resampler.push(&mono, CaptureTime(0)).0);
        block.clear();
    };
    macro_rules! read_all {
        ($reader:expr, $ty:ty) => {
            for s in $reader.into_samples::<$ty>() {
                let s = s.map_err(|e| wav_error(e.to_string()))?;
                block.push(s as f32 * scale);
                if block.len() == block.capacity() {
                    flush(&mut block, &mut samples);
                }
            }
        };
    }
    match spec.sample_format {
        hound::SampleFormat::Float => read_all!(reader, f32),
        hound::SampleFormat::Int => read_all!(reader, i32),
    }
    // Whole frames only; a truncated last frame is dropped.
    block.truncate(block.len() / channels * channels);
    // Push silence through so the resampler's last chunk comes out.
    block.extend(std::iter::repeat_n(0.0, 4096 * channels));
    flush(&mut block, &mut samples);
    Ok(Recording { samples, original })
}

/// Transcribes 16 kHz mono `samples` as spoken by `side`: the captions, finals only, with
/// times counted from the start of the recording.
pub fn transcribe_samples(
    model: &WhisperModel,
    samples: &[f32],
    side: Side,
    cutter: CutterConfig,
    decode_config: DecodeConfig,
) -> Result<Vec<Caption>, TranscribeError> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut decoder = Decoder::new(model, decode_config, stop)?;
    let vocabulary = Vocabulary::bundled();
    let cutter_config = CutterConfig {
        partial_every: None,
        ..cutter
    };
    let mut cutter = UtteranceCutter::new(side, cutter_config);
    let mut segments = Vec::new();
    for (n, chunk) in samples.chunks(crate::SAMPLE_RATE as usize).enumerate() {
        segments.extend(cutter.push(chunk, CaptureTime(n as u64 * 1_000_000)));
    }
    segments.extend(cutter.finish());
    let mut captions = Vec::new();
    for segment in &segments {
        let caption = decode(&mut decoder, &vocabulary, segment, CaptureTime(0))?;
        if !caption.text.is_empty() {
            captions.push(caption);
        }
    }
    Ok(captions)
}

//! `cartctl transcribe FILE.wav`: the captioning pipeline on a recording (any WAV: rate,
//! channels and sample format are converted), printing timestamped, labelled text with the
//! medical terms marked.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use telecart_transcribe::segmenter::CutterConfig;
use telecart_transcribe::{
    DecodeConfig, Side, WhisperModel, default_model_path, read_wav_16k, transcribe_samples,
};

/// Arguments of `cartctl transcribe`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The recording (WAV, any rate and channel count).
    file: PathBuf,
    /// The ggml Whisper model (default: $TELECART_WHISPER_MODEL, the checkout's
    /// .work/models/ggml-tiny.en.bin, or /usr/share/telecart/models/ggml-tiny.en.bin).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Refuse a model whose sha256 differs (hex).
    #[arg(long)]
    model_sha256: Option<String>,
    /// Whose voice it is, for the labels.
    #[arg(long, value_parser = ["cart", "remote"], default_value = "cart")]
    side: String,
    /// whisper.cpp threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Decode without the medical vocabulary prompt.
    #[arg(long)]
    no_prompt: bool,
    /// One data-channel `caption` message (JSON) a line instead of text.
    #[arg(long)]
    json: bool,
}

fn clock(ms: u64) -> String {
    format!("{:02}:{:02}.{:03}", ms / 60_000, ms / 1000 % 60, ms % 1000)
}

/// Runs it.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let model_path = args.model.clone().unwrap_or_else(default_model_path);
    let model = WhisperModel::load(&model_path, args.model_sha256.as_deref())?;
    let recording = read_wav_16k(&args.file)?;
    let side = if args.side == "remote" {
        Side::Remote
    } else {
        Side::Cart
    };
    let defaults = DecodeConfig::default();
    let decode = DecodeConfig {
        threads: args.threads,
        prompt: if args.no_prompt {
            String::new()
        } else {
            defaults.prompt.clone()
        },
        ..defaults
    };
    if !args.json {
        eprintln!(
            "{}: {}, {:.1} s; model {} ({})",
            args.file.display(),
            recording.original,
            recording.samples.len() as f64 / 16_000.0,
            model.path().display(),
            model.info().kind()
        );
    }
    let started = std::time::Instant::now();
    let captions = transcribe_samples(
        &model,
        &recording.samples,
        side,
        CutterConfig::default(),
        decode,
    )
    .with_context(|| format!("transcribing {}", args.file.display()))?;
    let (open, close) = if std::io::stdout().is_terminal() {
        ("\x1b[1;33m", "\x1b[0m")
    } else {
        ("**", "**")
    };
    for caption in &captions {
        if args.json {
            println!("{}", caption.to_message().to_json());
        } else {
            println!(
                "[{} - {}] {}: {}",
                clock(caption.start_ms),
                clock(caption.end_ms),
                caption.side.label(),
                caption.marked(open, close)
            );
        }
    }
    if !args.json {
        eprintln!(
            "{} utterances in {:.1} s (real-time factor {:.2})",
            captions.len(),
            started.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64() / (recording.samples.len() as f64 / 16_000.0).max(1e-3)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_format() {
        assert_eq!(clock(0), "00:00.000");
        assert_eq!(clock(61_234), "01:01.234");
    }
}

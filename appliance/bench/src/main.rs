//! `bench`: the appliance's benchmarks, each run side by side with an established peer on the
//! same input in the same run, printing the ratio ours/peer.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod audio;
mod encode;
mod flash;
mod measure;
mod sip;
mod transcribe;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "telecart benchmarks, side by side with a peer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Software H.264 encode: our openh264 encoder against GStreamer's x264enc and openh264enc
    /// on the same frames.
    Encode(encode::Args),
    /// Firmware flash: cartctl's flash engine against `dd` of the same payload to the same file.
    Flash(flash::Args),
    /// Offline transcription: our captioning pipeline against whisper.cpp's own C API on the
    /// same espeak-ng speech (RTF, CPU, memory, WER, live caption latency).
    Transcribe(transcribe::Args),
    /// Speakerphone audio: our capture chain (AEC3 + noise suppression + AGC2 + Opus) and
    /// playback chain against GStreamer's webrtcdsp on the same audio.
    Audio(audio::Args),
    /// SIP: our endpoint against baresip answering the same calls and registering with the same
    /// Kamailio (set-up time, INVITE to 200 OK, CPU per call, registrations per second).
    Sip(sip::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Encode(args) => encode::run(&args),
        Command::Flash(args) => flash::run(&args),
        Command::Transcribe(args) => transcribe::run(&args),
        Command::Audio(args) => audio::run(&args),
        Command::Sip(args) => sip::run(&args),
    }
}

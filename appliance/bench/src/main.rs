//! `bench`: the appliance's benchmarks, each run side by side with an
//! established peer on the same input in the same run, printing the ratio.

mod encode;
mod measure;

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
    /// Software H.264 encode (openh264 in our pipeline) against GStreamer's x264enc and openh264enc.
    Encode(encode::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Encode(args) => encode::run(&args),
    }
}

//! `cartctl`: the telecart tool for field techs and operators.
//!
//! One module a subcommand: add a variant to [`Command`], a module with its `run`, and one arm
//! in `main`.

mod devices;
mod image;
mod keygen;
mod log;
mod privacy_check;
mod provision;
mod selftest;
mod transcribe;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "cartctl",
    version,
    about = "The telecart tool for field techs and operators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists cameras (formats, sizes, rates) and sound devices, as a configuration names them.
    Devices,
    /// Creates the device master key that encrypts the session log (mode 0600; refuses to overwrite).
    Keygen {
        /// Where to write it (the config's `store.master_key`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Reads the encrypted session log (stop cartd first: the store has one user at a time).
    Log {
        /// The cart's configuration (for `[store]`).
        #[arg(
            long,
            short,
            env = "CARTD_CONFIG",
            default_value = "/etc/telecart/cart.toml"
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// Firmware images: sign, verify, flash to the inactive slot, status, commit, rollback.
    Image(image::Args),
    /// Proves on a running cart that privacy stops the camera and microphone, and both come back.
    PrivacyCheck(privacy_check::Args),
    /// Provisions a new cart: identity key and CSR, certificate, storage master key, config.
    Provision(provision::Args),
    /// Checks camera, microphone, speaker, board, network, storage and clock; non-zero exit on failure.
    Selftest(selftest::Args),
    /// Transcribes a WAV file with the captioning pipeline: timestamped, labelled text, medical terms marked.
    Transcribe(transcribe::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Devices => {
            devices::run();
            Ok(())
        }
        Command::Keygen { out } => keygen::run(&out),
        Command::Log { config, command } => log::run(&config, command),
        Command::Image(args) => image::run(args),
        Command::Provision(args) => provision::run(args),
        Command::PrivacyCheck(args) => privacy_check::run(&args),
        Command::Selftest(args) => selftest::run(&args),
        Command::Transcribe(args) => transcribe::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cartctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

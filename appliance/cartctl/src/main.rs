//! `cartctl`: the telecart tool for field techs and operators.

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Devices => devices(),
    }
}

fn devices() -> ExitCode {
    let scan = telecart_devices::scan_cameras();
    println!("Cameras (video.device):");
    if scan.cameras.is_empty() {
        println!("  none found");
    }
    for camera in &scan.cameras {
        for line in camera.to_string().lines() {
            println!("  {line}");
        }
    }
    for problem in &scan.problems {
        println!("  ! {problem}");
    }
    let pcms = telecart_devices::list_pcms();
    println!("Sound devices (audio.capture_device / audio.playback_device):");
    if pcms.is_empty() {
        println!("  none found");
    }
    for pcm in pcms {
        let dirs = match (pcm.capture, pcm.playback) {
            (true, true) => "capture+playback",
            (true, false) => "capture",
            _ => "playback",
        };
        println!("  {:<32} {dirs:<16} {}", pcm.name, pcm.description);
    }
    ExitCode::SUCCESS
}

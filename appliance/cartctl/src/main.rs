//! `cartctl`: the telecart tool for field techs and operators.

mod transcribe;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use telecart_core::Config;
use telecart_store::technician::{self, Filter};
use telecart_store::{MasterKey, SledStore};

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
        command: LogCommand,
    },
    /// Transcribes a WAV file with the captioning pipeline: timestamped, labelled text, medical terms marked.
    Transcribe(transcribe::Args),
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// One line a record: sequence, time, session, kind (no patient data).
    List {
        /// At most this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// From this sequence on.
        #[arg(long)]
        from: Option<u64>,
    },
    /// One record in full, decrypted; recorded in the audit trail.
    Show {
        /// Its sequence number.
        seq: u64,
        /// Who is reading (recorded in the audit trail).
        #[arg(long, env = "USER")]
        actor: String,
    },
    /// Every record as JSON lines (PHI in the clear: write to an encrypted medium); recorded in the audit trail.
    Export {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Who is exporting (recorded in the audit trail).
        #[arg(long, env = "USER")]
        actor: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Devices => {
            devices();
            Ok(())
        }
        Command::Keygen { out } => keygen(&out),
        Command::Log { config, command } => log(&config, command),
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

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    if out.exists() {
        anyhow::bail!(
            "{} exists; a new key would make the existing log unreadable",
            out.display()
        );
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    MasterKey::generate_file(out).with_context(|| format!("writing {}", out.display()))?;
    println!("{}: new master key (mode 0600)", out.display());
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn log(config: &std::path::Path, command: LogCommand) -> anyhow::Result<()> {
    let config = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store_config = &config.store;
    let key = MasterKey::load(&store_config.master_key)
        .with_context(|| format!("store.master_key {}", store_config.master_key.display()))?;
    let store = SledStore::open(&store_config.data_dir, &key).with_context(|| {
        format!(
            "session log {} (is cartd running? stop it first)",
            store_config.data_dir.display()
        )
    })?;
    match command {
        LogCommand::List { limit, from } => {
            let filter = Filter {
                limit,
                from_seq: from,
                ..Filter::default()
            };
            for entry in technician::list(&store, &filter)? {
                println!("{entry}");
            }
        }
        LogCommand::Show { seq, actor } => {
            print!("{}", technician::show(&store, seq, &actor, now_ms())?);
        }
        LogCommand::Export { out, actor } => {
            let mut file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let summary = technician::export(
                &store,
                &store_config.device_id,
                &Filter::default(),
                &actor,
                now_ms(),
                &mut file,
            )?;
            println!(
                "{}: {} records ({} unreadable); export recorded as audit entry {}",
                out.display(),
                summary.records,
                summary.unreadable,
                summary.audit_seq
            );
        }
    }
    Ok(())
}

fn devices() {
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
}

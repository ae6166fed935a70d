//! `cartctl log`: reads the encrypted session log.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use telecart_core::Config;
use telecart_store::technician::{self, Filter};
use telecart_store::{MasterKey, SledStore};

use crate::now_ms;

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
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

pub(crate) fn run(config: &std::path::Path, command: LogCommand) -> anyhow::Result<()> {
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

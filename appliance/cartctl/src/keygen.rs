//! `cartctl keygen`: the device master key of the session log.

use anyhow::Context;
use telecart_store::MasterKey;

pub(crate) fn run(out: &std::path::Path) -> anyhow::Result<()> {
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

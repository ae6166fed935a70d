//! The local, append-only audit log of update decisions that override a refusal (downgrades).
//!
//! The session log's audit trail (`telecart-store`) has one user at a time and `cartd` holds it
//! while it runs, which is exactly when a technician flashes; so overrides go to
//! `update.state_dir/audit.log`: one JSON object a line, each carrying the SHA-256 of the line
//! before it (a hash chain, like the store's audit trail), opened with `O_APPEND` and synced
//! before the flash starts. `cartd` may copy new lines into the session log's audit trail.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, UpdateError};
use crate::image::hex;

/// One audit line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLine {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who (the technician).
    pub actor: String,
    /// What, dotted (`update.downgrade`).
    pub action: String,
    /// Detail (versions, slot, image hash).
    pub detail: String,
    /// SHA-256 of the previous line's bytes, hex; 64 zeros for the first.
    pub prev_hash: String,
}

/// The log file in a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

/// Appends a line (durable on return).
pub fn append(
    state_dir: &Path,
    at_ms: u64,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<AuditLine> {
    let file = path(state_dir);
    let io = |e: std::io::Error| UpdateError::io(format!("audit log {}", file.display()), &e);
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let prev_hash = match std::fs::File::open(&file) {
        Ok(f) => std::io::BufReader::new(f)
            .lines()
            .map_while(std::result::Result::ok)
            .last()
            .map_or_else(|| "0".repeat(64), |l| hex(&Sha256::digest(l.as_bytes()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "0".repeat(64),
        Err(e) => return Err(io(e)),
    };
    let line = AuditLine {
        at_ms,
        actor: actor.into(),
        action: action.into(),
        detail: detail.into(),
        prev_hash,
    };
    let mut text = serde_json::to_string(&line).map_err(|e| UpdateError::State(e.to_string()))?;
    text.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&file)
        .map_err(io)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    Ok(line)
}

/// Reads every line and checks the chain; returns the lines or the first broken link.
pub fn verify(state_dir: &Path) -> Result<Vec<AuditLine>> {
    let file = path(state_dir);
    let text = std::fs::read_to_string(&file)
        .map_err(|e| UpdateError::io(format!("audit log {}", file.display()), &e))?;
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line: AuditLine = serde_json::from_str(l)
            .map_err(|e| UpdateError::State(format!("audit log line {}: {e}", i + 1)))?;
        if line.prev_hash != prev {
            return Err(UpdateError::State(format!(
                "audit log line {}: chain broken (a line before it was changed or removed)",
                i + 1
            )));
        }
        prev = hex(&Sha256::digest(l.as_bytes()));
        out.push(line);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_chain_and_tampering_is_found() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), 1, "tech", "update.downgrade", "2.0.0 -> 1.0.0").unwrap();
        append(dir.path(), 2, "tech", "update.downgrade", "2.0.0 -> 1.5.0").unwrap();
        assert_eq!(verify(dir.path()).unwrap().len(), 2);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        std::fs::write(path(dir.path()), text.replacen("1.0.0", "1.0.1", 1)).unwrap();
        assert!(verify(dir.path()).is_err());
    }
}

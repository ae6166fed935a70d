//! GRUB's environment block and the boot state kept in it.
//!
//! The block is exactly 1024 bytes: `# GRUB Environment Block\n`, then `name=value\n` lines
//! (backslash and newline in values escaped with a backslash), padded with `#`. GRUB's
//! `save_env` rewrites the file's existing sectors in place, so the file must keep its size and
//! must not be replaced by a new file; we rewrite it in place like `grub-editenv` does.
//!
//! GRUB has no arithmetic, so the boot count is a digit stepped by a chain of `if`s in grub.cfg
//! (docs/update.md): `telecart_slot` is the committed slot, `telecart_try` the slot on trial
//! (empty when none) and `telecart_try_boots` the boots it has had.

use std::path::PathBuf;

use crate::boot::{BootControl, read_at, write_at_synced};
use crate::error::{Result, UpdateError};
use crate::slot::{BootState, Slot, Trial};

/// Size of the block.
pub const BLOCK_LEN: usize = 1024;
/// First line of the block.
pub const SIGNATURE: &str = "# GRUB Environment Block\n";

/// Parses a block into its variables, in order.
pub fn parse_block(bytes: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    if bytes.len() != BLOCK_LEN {
        return Err(format!("is {} bytes, not {BLOCK_LEN}", bytes.len()));
    }
    let rest = bytes
        .strip_prefix(SIGNATURE.as_bytes())
        .ok_or("does not start with \"# GRUB Environment Block\"")?;
    let text = std::str::from_utf8(rest).map_err(|_| "is not UTF-8")?;
    let mut vars = Vec::new();
    let mut chars = text.chars();
    let mut line = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) => line.push(e),
                None => return Err("ends inside an escape".into()),
            },
            '\n' => {
                let l = std::mem::take(&mut line);
                if l.starts_with('#') || l.is_empty() {
                    continue;
                }
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| format!("line {l:?} has no '='"))?;
                vars.push((k.to_string(), v.to_string()));
            }
            _ => line.push(c),
        }
    }
    // Whatever follows the last newline is padding.
    if !line.chars().all(|c| c == '#') {
        return Err("has text after its last line".into());
    }
    Ok(vars)
}

/// Encodes variables into a block.
pub fn encode_block(vars: &[(String, String)]) -> std::result::Result<Vec<u8>, String> {
    let mut out = String::from(SIGNATURE);
    for (k, v) in vars {
        if k.is_empty() || k.contains(['=', '\n', '\\', '#']) {
            return Err(format!("variable name {k:?} cannot be stored"));
        }
        out.push_str(k);
        out.push('=');
        for c in v.chars() {
            if c == '\\' || c == '\n' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    if out.len() > BLOCK_LEN {
        return Err(format!(
            "{} bytes of variables do not fit in {BLOCK_LEN}",
            out.len()
        ));
    }
    let mut bytes = out.into_bytes();
    bytes.resize(BLOCK_LEN, b'#');
    Ok(bytes)
}

fn set(vars: &mut Vec<(String, String)>, name: &str, value: &str) {
    match vars.iter_mut().find(|(k, _)| k == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => vars.push((name.to_string(), value.to_string())),
    }
}

fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// GRUB environment block at a path.
#[derive(Debug, Clone)]
pub struct GrubControl {
    path: PathBuf,
    boot_limit: u32,
}

impl GrubControl {
    /// The block at `path` (usually `/boot/grub/grubenv`).
    pub fn new(path: PathBuf, boot_limit: u32) -> Self {
        Self { path, boot_limit }
    }

    fn err(&self, reason: impl Into<String>) -> UpdateError {
        UpdateError::BootEnv {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// The variables in the block.
    pub fn read_vars(&self) -> Result<Vec<(String, String)>> {
        let len = std::fs::metadata(&self.path)
            .map_err(|e| UpdateError::io(format!("reading {}", self.path.display()), &e))?
            .len();
        if len != BLOCK_LEN as u64 {
            return Err(self.err(format!("is {len} bytes, not {BLOCK_LEN}")));
        }
        parse_block(&read_at(&self.path, 0, BLOCK_LEN)?).map_err(|e| self.err(e))
    }
}

impl BootControl for GrubControl {
    fn load(&self) -> Result<BootState> {
        let vars = self.read_vars()?;
        let slot = |name: &str| -> Result<Option<Slot>> {
            match get(&vars, name) {
                None | Some("") => Ok(None),
                Some(s) => s
                    .parse()
                    .map(Some)
                    .map_err(|e: UpdateError| self.err(e.to_string())),
            }
        };
        let committed = slot("telecart_slot")?.unwrap_or(Slot::A);
        let trial = match slot("telecart_try")? {
            None => None,
            Some(s) => Some(Trial {
                slot: s,
                boots: get(&vars, "telecart_try_boots")
                    .unwrap_or("0")
                    .parse()
                    .map_err(|_| self.err("telecart_try_boots is not a number"))?,
            }),
        };
        Ok(BootState {
            committed,
            trial,
            boot_limit: self.boot_limit,
        })
    }

    fn store(&mut self, state: &BootState) -> Result<()> {
        let mut vars = self.read_vars()?;
        set(&mut vars, "telecart_slot", state.committed.as_str());
        set(
            &mut vars,
            "telecart_try",
            state.trial.map_or("", |t| t.slot.as_str()),
        );
        set(
            &mut vars,
            "telecart_try_boots",
            &state.trial.map_or(0, |t| t.boots).to_string(),
        );
        set(
            &mut vars,
            "telecart_boot_limit",
            &state.boot_limit.to_string(),
        );
        let block = encode_block(&vars).map_err(|e| self.err(e))?;
        write_at_synced(&self.path, 0, &block)
    }

    fn describe(&self) -> String {
        format!("GRUB environment block {}", self.path.display())
    }
}

/// The grub.cfg part that boots the slot the block names and steps the boot count (limit 1..=9).
pub fn grub_cfg(boot_limit: u32) -> String {
    let mut steps = String::new();
    for n in 0..boot_limit.min(9) {
        let kw = if n == 0 { "if" } else { "elif" };
        steps.push_str(&format!(
            "  {kw} [ \"${{telecart_try_boots}}\" = \"{n}\" ]; then\n    set telecart_try_boots={}\n    set boot_slot=\"${{telecart_try}}\"\n",
            n + 1
        ));
    }
    format!(
        "load_env telecart_slot telecart_try telecart_try_boots\n\
         set boot_slot=\"${{telecart_slot}}\"\n\
         if [ -z \"${{boot_slot}}\" ]; then set boot_slot=a; fi\n\
         if [ -n \"${{telecart_try}}\" ]; then\n{steps}  else\n    set telecart_try=\n    set telecart_try_boots=0\n  fi\n  save_env telecart_try telecart_try_boots\nfi\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_with_escapes() {
        let vars = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x\\y\nz".to_string()),
        ];
        let block = encode_block(&vars).unwrap();
        assert_eq!(block.len(), BLOCK_LEN);
        assert_eq!(parse_block(&block).unwrap(), vars);
        assert!(parse_block(&block[..1000]).is_err());
        let mut bad = block.clone();
        bad[0] = b'x';
        assert!(parse_block(&bad).is_err());
        assert!(encode_block(&[("k".into(), "v".repeat(1100))]).is_err());
    }
}

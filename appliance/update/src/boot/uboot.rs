//! U-Boot's environment in its on-disk format, and the boot state kept in it.
//!
//! A copy is `CRC32 (little-endian) [flags byte if redundant] data`, where data is
//! `name=value\0...\0` padded to `CONFIG_ENV_SIZE`, and the CRC covers the data. With a redundant
//! environment the valid copy with the newer flag (incremented on every save, wrapping 255 → 0)
//! is current, and a save writes the *other* copy, so a power cut during a save leaves the
//! previous copy intact. This matches U-Boot's `env_import_redund` and libubootenv's
//! `fw_setenv` (verified against Debian's `mkenvimage` and `fw_printenv`/`fw_setenv` in tests).
//!
//! The boot state uses U-Boot's own boot-count variables (`CONFIG_BOOTCOUNT_LIMIT` with
//! `CONFIG_BOOTCOUNT_ENV`): `upgrade_available=1` makes U-Boot count boots in `bootcount`, and
//! when `bootcount` exceeds `bootlimit` it runs `altbootcmd` instead of `bootcmd`; ours switches
//! `telecart_slot` back to `telecart_fallback` (docs/update.md has the scripts).

use std::path::Path;

use crate::boot::{BootControl, read_at, write_at_synced};
use crate::config::EnvLocation;
use crate::error::{Result, UpdateError};
use crate::slot::{BootState, Slot, Trial};

/// The variables of one environment, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environment {
    vars: Vec<(String, String)>,
}

impl Environment {
    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or with `None` removes) a variable, keeping the order of the others.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        match (self.vars.iter().position(|(k, _)| k == name), value) {
            (Some(i), Some(v)) => self.vars[i].1 = v.to_string(),
            (Some(i), None) => {
                self.vars.remove(i);
            }
            (None, Some(v)) => self.vars.push((name.to_string(), v.to_string())),
            (None, None) => {}
        }
    }

    /// All variables, in order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// Parses the data part of a copy (after CRC and flag).
    pub fn parse_data(data: &[u8]) -> std::result::Result<Self, String> {
        let mut vars = Vec::new();
        let mut rest = data;
        loop {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or("no terminating NUL")?;
            if end == 0 {
                return Ok(Self { vars });
            }
            let entry = std::str::from_utf8(&rest[..end])
                .map_err(|_| format!("variable {} is not UTF-8", vars.len() + 1))?;
            let (k, v) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {entry:?} has no '='"))?;
            if k.is_empty() {
                return Err(format!("entry {entry:?} has an empty name"));
            }
            vars.push((k.to_string(), v.to_string()));
            rest = &rest[end + 1..];
        }
    }

    /// The data part for an environment of `data_len` bytes.
    pub fn encode_data(&self, data_len: usize) -> std::result::Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(data_len);
        for (k, v) in &self.vars {
            if k.contains(['=', '\0']) || v.contains('\0') {
                return Err(format!("variable {k:?} cannot be stored"));
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out.push(0);
        if out.len() > data_len {
            return Err(format!(
                "{} bytes of variables do not fit in {data_len}",
                out.len()
            ));
        }
        out.resize(data_len, 0);
        Ok(out)
    }
}

/// One parsed copy: its flag (redundant environments) and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The redundant copy's flag.
    pub flag: Option<u8>,
    /// The variables.
    pub env: Environment,
}

/// Parses one copy of `bytes.len()` bytes; `redundant` says whether it has a flag byte.
pub fn parse_copy(bytes: &[u8], redundant: bool) -> std::result::Result<Copy, String> {
    let header = if redundant { 5 } else { 4 };
    if bytes.len() <= header {
        return Err("shorter than its header".into());
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data = &bytes[header..];
    if crc32fast::hash(data) != stored {
        return Err("CRC32 mismatch".into());
    }
    Ok(Copy {
        flag: redundant.then_some(bytes[4]),
        env: Environment::parse_data(data)?,
    })
}

/// Encodes one copy of `size` bytes.
pub fn encode_copy(
    env: &Environment,
    size: usize,
    flag: Option<u8>,
) -> std::result::Result<Vec<u8>, String> {
    let header = if flag.is_some() { 5 } else { 4 };
    let data = env.encode_data(size.checked_sub(header).ok_or("size too small")?)?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
    if let Some(f) = flag {
        out.push(f);
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// Which of two valid redundant copies is current (U-Boot's rule, with 255 → 0 wrap-around).
pub fn newer_copy(flag0: u8, flag1: u8) -> usize {
    match (flag0, flag1) {
        (255, 0) => 1,
        (0, 255) => 0,
        (a, b) if a >= b => 0,
        _ => 1,
    }
}

/// U-Boot environment on one or two [`EnvLocation`]s.
#[derive(Debug, Clone)]
pub struct UbootControl {
    locations: Vec<EnvLocation>,
    boot_limit: u32,
}

impl UbootControl {
    /// One location, or two for a redundant environment.
    pub fn new(locations: Vec<EnvLocation>, boot_limit: u32) -> Result<Self> {
        if !(1..=2).contains(&locations.len()) {
            return Err(UpdateError::Config(
                "update.uboot_env needs one or two copies".into(),
            ));
        }
        Ok(Self {
            locations,
            boot_limit,
        })
    }

    fn env_err(&self, i: usize, reason: impl Into<String>) -> UpdateError {
        UpdateError::BootEnv {
            path: self.locations[i].path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Reads the current environment; returns it with the index of the copy it came from and
    /// that copy's flag.
    pub fn read_env(&self) -> Result<(Environment, usize, Option<u8>)> {
        let redundant = self.locations.len() == 2;
        let mut copies = Vec::new();
        let mut problems = Vec::new();
        for (i, loc) in self.locations.iter().enumerate() {
            let bytes = read_at(&loc.path, loc.offset, loc.size)?;
            match parse_copy(&bytes, redundant) {
                Ok(c) => copies.push((i, c)),
                Err(e) => problems.push(format!("copy {}: {e}", i + 1)),
            }
        }
        let chosen = match copies.len() {
            0 => return Err(self.env_err(0, format!("no valid copy ({})", problems.join("; ")))),
            1 => copies.remove(0),
            _ => {
                let pick = newer_copy(copies[0].1.flag.unwrap_or(0), copies[1].1.flag.unwrap_or(0));
                copies.remove(pick)
            }
        };
        Ok((chosen.1.env, chosen.0, chosen.1.flag))
    }

    /// Writes `env`: in place for a single copy, into the older copy with the next flag for a
    /// redundant environment.
    pub fn write_env(&self, env: &Environment) -> Result<()> {
        if self.locations.len() == 1 {
            let loc = &self.locations[0];
            let bytes = encode_copy(env, loc.size, None).map_err(|e| self.env_err(0, e))?;
            return write_at_synced(&loc.path, loc.offset, &bytes);
        }
        let (target, flag) = match self.read_env() {
            Ok((_, current, flag)) => (1 - current, flag.unwrap_or(0).wrapping_add(1)),
            Err(_) => (0, 1),
        };
        let loc = &self.locations[target];
        let bytes = encode_copy(env, loc.size, Some(flag)).map_err(|e| self.env_err(target, e))?;
        write_at_synced(&loc.path, loc.offset, &bytes)
    }
}

/// The variables the boot state lives in.
pub mod vars {
    /// Slot the boot script boots (`a` or `b`).
    pub const SLOT: &str = "telecart_slot";
    /// Slot `altbootcmd` returns to.
    pub const FALLBACK: &str = "telecart_fallback";
    /// U-Boot: count boots while this is 1.
    pub const UPGRADE_AVAILABLE: &str = "upgrade_available";
    /// U-Boot's boot counter.
    pub const BOOTCOUNT: &str = "bootcount";
    /// U-Boot's limit; above it `altbootcmd` runs.
    pub const BOOTLIMIT: &str = "bootlimit";
}

/// Reads the boot state from an environment.
pub fn state_from_env(
    env: &Environment,
    default_limit: u32,
) -> std::result::Result<BootState, String> {
    let slot = match env.get(vars::SLOT) {
        None | Some("") => Slot::A,
        Some(s) => s.parse::<Slot>().map_err(|e| e.to_string())?,
    };
    let number = |name: &str, default: u32| -> std::result::Result<u32, String> {
        match env.get(name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}={v:?} is not a number")),
        }
    };
    let boot_limit = number(vars::BOOTLIMIT, default_limit)?;
    if env.get(vars::UPGRADE_AVAILABLE) == Some("1") {
        let fallback = env
            .get(vars::FALLBACK)
            .ok_or("upgrade_available=1 but no telecart_fallback")?
            .parse::<Slot>()
            .map_err(|e| e.to_string())?;
        Ok(BootState {
            committed: fallback,
            trial: Some(Trial {
                slot,
                boots: number(vars::BOOTCOUNT, 0)?,
            }),
            boot_limit,
        })
    } else {
        Ok(BootState {
            committed: slot,
            trial: None,
            boot_limit,
        })
    }
}

/// Writes the boot state into an environment, leaving every other variable alone.
pub fn state_into_env(state: &BootState, env: &mut Environment) {
    let limit = state.boot_limit.to_string();
    env.set(vars::BOOTLIMIT, Some(&limit));
    match state.trial {
        Some(t) => {
            let boots = t.boots.to_string();
            env.set(vars::SLOT, Some(t.slot.as_str()));
            env.set(vars::FALLBACK, Some(state.committed.as_str()));
            env.set(vars::UPGRADE_AVAILABLE, Some("1"));
            env.set(vars::BOOTCOUNT, Some(&boots));
        }
        None => {
            env.set(vars::SLOT, Some(state.committed.as_str()));
            env.set(vars::FALLBACK, Some(state.committed.as_str()));
            env.set(vars::UPGRADE_AVAILABLE, Some("0"));
            env.set(vars::BOOTCOUNT, Some("0"));
        }
    }
}

impl BootControl for UbootControl {
    fn load(&self) -> Result<BootState> {
        let (env, i, _) = self.read_env()?;
        state_from_env(&env, self.boot_limit).map_err(|e| self.env_err(i, e))
    }

    fn store(&mut self, state: &BootState) -> Result<()> {
        let mut env = self.read_env().map(|(e, _, _)| e)?;
        state_into_env(state, &mut env);
        self.write_env(&env)
    }

    fn describe(&self) -> String {
        let paths: Vec<String> = self
            .locations
            .iter()
            .map(|l| format!("{}@{:#x}+{:#x}", l.path.display(), l.offset, l.size))
            .collect();
        format!("U-Boot environment {}", paths.join(" + "))
    }
}

/// `fw_env.config` lines for these locations (for `fw_printenv -c`).
pub fn fw_env_config(locations: &[EnvLocation]) -> String {
    locations
        .iter()
        .map(|l| format!("{} {:#x} {:#x}\n", l.path.display(), l.offset, l.size))
        .collect()
}

/// Creates a fresh environment file holding `env` (provisioning and tests; U-Boot's
/// `mkenvimage` does the same from a text file).
pub fn create(path: &Path, env: &Environment, size: usize, redundant: bool) -> Result<()> {
    let bytes =
        encode_copy(env, size, redundant.then_some(1)).map_err(|e| UpdateError::BootEnv {
            path: path.display().to_string(),
            reason: e,
        })?;
    std::fs::write(path, bytes)
        .map_err(|e| UpdateError::io(format!("writing {}", path.display()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_round_trip_and_detect_damage() {
        let mut env = Environment::default();
        env.set("bootcmd", Some("run distro_bootcmd"));
        env.set("a", Some("1"));
        for flag in [None, Some(7)] {
            let bytes = encode_copy(&env, 256, flag).unwrap();
            assert_eq!(bytes.len(), 256);
            let copy = parse_copy(&bytes, flag.is_some()).unwrap();
            assert_eq!((copy.flag, &copy.env), (flag, &env));
            let mut bad = bytes.clone();
            bad[20] ^= 1;
            assert_eq!(
                parse_copy(&bad, flag.is_some()).unwrap_err(),
                "CRC32 mismatch"
            );
        }
        assert!(encode_copy(&env, 16, None).is_err());
    }

    #[test]
    fn newer_flag_wins_with_wraparound() {
        assert_eq!(newer_copy(3, 2), 0);
        assert_eq!(newer_copy(2, 3), 1);
        assert_eq!(newer_copy(255, 0), 1);
        assert_eq!(newer_copy(0, 255), 0);
    }

    #[test]
    fn boot_state_maps_to_uboot_bootcount_variables() {
        let mut env = Environment::default();
        let mut s = BootState::new(Slot::A, 3);
        s.arm_try(Slot::B, Slot::A).unwrap();
        s.boot();
        state_into_env(&s, &mut env);
        assert_eq!(env.get("telecart_slot"), Some("b"));
        assert_eq!(env.get("upgrade_available"), Some("1"));
        assert_eq!(env.get("bootcount"), Some("1"));
        assert_eq!(state_from_env(&env, 3).unwrap(), s);
        s.report_healthy(Slot::B);
        state_into_env(&s, &mut env);
        assert_eq!(env.get("upgrade_available"), Some("0"));
        assert_eq!(state_from_env(&env, 3).unwrap(), s);
    }
}

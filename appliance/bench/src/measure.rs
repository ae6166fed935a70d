//! Wall time and CPU time of a piece of work, ours or a peer process's.

use std::process::Command;
use std::time::{Duration, Instant};

/// CPU time (user + system) so far, of this process or of its waited-for children.
pub(crate) fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What a run cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cost {
    /// Elapsed.
    pub(crate) wall: Duration,
    /// CPU used (may exceed wall with threads).
    pub(crate) cpu: Duration,
}

/// Runs a peer command to completion and measures it.
pub(crate) fn run_peer(cmd: &mut Command) -> anyhow::Result<Cost> {
    let cpu_before = cpu_time(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let out = cmd.output()?;
    let wall = started.elapsed();
    if !out.status.success() {
        anyhow::bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Cost {
        wall,
        cpu: cpu_time(libc::RUSAGE_CHILDREN).saturating_sub(cpu_before),
    })
}

/// Percentile of sorted samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Whether a program is on PATH.
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

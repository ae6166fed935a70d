//! CPU time and latency statistics.

use std::time::Duration;

/// User plus system CPU time of this process (`RUSAGE_SELF`) or of its waited-for children
/// (`RUSAGE_CHILDREN`).
pub(crate) fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: `rusage` is plain old data and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live rusage.
    let rc = unsafe { libc::getrusage(who, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of this process.
pub(crate) fn self_cpu() -> Duration {
    cpu_time(libc::RUSAGE_SELF)
}

/// CPU time of the children this process has waited for.
pub(crate) fn children_cpu() -> Duration {
    cpu_time(libc::RUSAGE_CHILDREN)
}

/// Mean, median and 95th percentile of samples in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p95: f64,
}

/// Statistics of `samples` (nearest-rank percentiles); zeros when empty.
pub(crate) fn stats(samples: &[Duration]) -> Stats {
    if samples.is_empty() {
        return Stats {
            mean: 0.0,
            p50: 0.0,
            p95: 0.0,
        };
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
        ms[i]
    };
    Stats {
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        p50: rank(0.50),
        p95: rank(0.95),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = stats(&samples);
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert!((s.p50 - 50.0).abs() < 1e-9);
        assert!((s.p95 - 95.0).abs() < 1e-9);
        assert_eq!(stats(&[]).mean, 0.0);
    }

    #[test]
    fn cpu_time_moves_forward() {
        let before = self_cpu();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(self_cpu() > before);
    }
}

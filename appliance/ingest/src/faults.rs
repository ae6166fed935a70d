//! Fault injection, for tests of device-side sync against a real server: errors before or after
//! the commit, slow answers, stale (repeated) acknowledgements. Off unless a plan is set through
//! the library API; the binary never sets one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Per-request probabilities, in per mille.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Answer 500 without storing anything.
    pub error_before: u32,
    /// Store, commit, then answer 500 (the acknowledgement is lost).
    pub error_after_commit: u32,
    /// Sleep `delay` before handling (client time-outs, then retries of committed batches).
    pub slow: u32,
    /// How long a slow answer takes.
    pub delay: Duration,
    /// Acknowledge an older sequence than what is held (a repeated, stale ack).
    pub stale_ack: u32,
}

/// What was injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Upload requests seen.
    pub requests: u64,
    /// Faults injected.
    pub injected: u64,
}

/// Shared fault state of a server.
#[derive(Debug, Default)]
pub struct Faults {
    plan: Mutex<FaultPlan>,
    rng: AtomicU64,
    requests: AtomicU64,
    injected: AtomicU64,
}

/// One request's draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Draw {
    pub(crate) error_before: bool,
    pub(crate) error_after_commit: bool,
    pub(crate) delay: Option<Duration>,
    pub(crate) stale_ack: bool,
}

impl Faults {
    /// No faults; `seed` makes the draws reproducible.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: AtomicU64::new(seed | 1),
            ..Self::default()
        }
    }

    /// Replaces the plan.
    pub fn set(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    /// Counters.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            requests: self.requests.load(Ordering::Relaxed),
            injected: self.injected.load(Ordering::Relaxed),
        }
    }

    fn roll(&self, per_mille: u32) -> bool {
        if per_mille == 0 {
            return false;
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let hit = x % 1000 < u64::from(per_mille);
        if hit {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub(crate) fn draw(&self) -> Draw {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let plan = self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Draw {
            error_before: self.roll(plan.error_before),
            error_after_commit: self.roll(plan.error_after_commit),
            delay: self.roll(plan.slow).then_some(plan.delay),
            stale_ack: self.roll(plan.stale_ack),
        }
    }
}

//! Drift-free pacing of simulated sources.
//!
//! Slot `n` is due at `start + n * interval`, computed from the start every
//! time (never by adding intervals, which drifts). A consumer that falls behind
//! gets at most one late slot back-to-back with the current one; anything older
//! is skipped and counted, like a real device overrunning.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use telecart_core::CaptureTime;

/// Wall-clock now as a [`CaptureTime`].
pub(crate) fn wall_clock_now() -> CaptureTime {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    CaptureTime(micros)
}

/// What the pacer says to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The next slot is not due yet: wait this long, then ask again.
    Wait(Duration),
    /// Produce slot `slot` now; `skipped` slots before it were dropped.
    Emit {
        /// Index of the slot since the start.
        slot: u64,
        /// Slots dropped just now because the consumer was late.
        skipped: u64,
    },
}

/// Deadlines of a source producing `units` per slot at `per_second` units a second
/// (one frame at `fps` frames a second, or `frames` samples at `rate` Hz).
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    units: u64,
    per_second: u64,
    paced: bool,
    start: Option<Instant>,
    next_slot: u64,
    skipped: u64,
}

impl Pacer {
    /// A pacer; `paced = false` emits every slot at once (tests, offline work).
    /// `units` and `per_second` must be positive (callers validate).
    pub(crate) fn new(units: u64, per_second: u64, paced: bool) -> Self {
        Self {
            units: units.max(1),
            per_second: per_second.max(1),
            paced,
            start: None,
            next_slot: 0,
            skipped: 0,
        }
    }

    /// When slot `slot` is due, from the start.
    pub(crate) fn due(&self, slot: u64) -> Duration {
        let nanos = slot as u128 * self.units as u128 * 1_000_000_000 / self.per_second as u128;
        Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }

    /// The last slot due at `elapsed` from the start.
    fn slot_at(&self, elapsed: Duration) -> u64 {
        let slot =
            elapsed.as_nanos() * self.per_second as u128 / (self.units as u128 * 1_000_000_000);
        slot.min(u64::MAX as u128) as u64
    }

    /// Pure decision for `elapsed` time since the start.
    pub(crate) fn step(&mut self, elapsed: Duration) -> Step {
        if self.paced {
            let due = self.due(self.next_slot);
            if elapsed < due {
                return Step::Wait(due - elapsed);
            }
            // Late. Allow one slot of catch-up: emit the slot before the latest
            // due one (the latest follows immediately), skipping anything older.
            let latest = self.slot_at(elapsed);
            let slot = self.next_slot.max(latest.saturating_sub(1));
            let skipped = slot - self.next_slot;
            self.skipped += skipped;
            self.next_slot = slot + 1;
            return Step::Emit { slot, skipped };
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        Step::Emit { slot, skipped: 0 }
    }

    /// Blocks until the next slot is due and returns it. The clock starts at
    /// the first call, so a source built long before it is read does not
    /// begin by skipping.
    pub(crate) fn wait_next(&mut self) -> u64 {
        let start = *self.start.get_or_insert_with(Instant::now);
        loop {
            match self.step(start.elapsed()) {
                Step::Wait(d) => std::thread::sleep(d),
                Step::Emit { slot, .. } => return slot,
            }
        }
    }

    /// Slots skipped so far because the consumer was late.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether this pacer follows real time.
    pub(crate) fn is_paced(&self) -> bool {
        self.paced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn on_time_consumer_waits_for_each_deadline() {
        let mut p = Pacer::new(1, 25, true); // 40 ms a frame
        assert_eq!(
            p.step(ms(0)),
            Step::Emit {
                slot: 0,
                skipped: 0
            }
        );
        assert_eq!(p.step(ms(1)), Step::Wait(ms(39)));
        assert_eq!(
            p.step(ms(40)),
            Step::Emit {
                slot: 1,
                skipped: 0
            }
        );
        assert_eq!(p.step(ms(41)), Step::Wait(ms(39)));
        assert_eq!(p.skipped(), 0);
    }

    #[test]
    fn deadlines_do_not_drift_with_fractional_intervals() {
        // 441 frames at 44.1 kHz is exactly 10 ms; 160 at 16 kHz likewise; 1 at 30 fps is 33.33.. ms.
        let p = Pacer::new(441, 44_100, true);
        assert_eq!(p.due(100_000), Duration::from_secs(1000));
        let p = Pacer::new(1, 30, true);
        assert_eq!(p.due(3), Duration::from_millis(100));
        assert_eq!(p.due(30 * 3600), Duration::from_secs(3600));
        assert_eq!(p.due(1), Duration::from_nanos(33_333_333));
    }

    #[test]
    fn a_little_late_emits_without_skipping_and_without_bursting() {
        let mut p = Pacer::new(1, 10, true); // 100 ms
        assert_eq!(
            p.step(ms(0)),
            Step::Emit {
                slot: 0,
                skipped: 0
            }
        );
        // 50 ms late for slot 1: emitted at once, and slot 2 is still waited for.
        assert_eq!(
            p.step(ms(150)),
            Step::Emit {
                slot: 1,
                skipped: 0
            }
        );
        assert_eq!(p.step(ms(151)), Step::Wait(ms(49)));
    }

    #[test]
    fn very_late_skips_ahead_with_at_most_one_catch_up_slot() {
        let mut p = Pacer::new(1, 10, true); // 100 ms
        assert_eq!(
            p.step(ms(0)),
            Step::Emit {
                slot: 0,
                skipped: 0
            }
        );
        // Stalled until 1.05 s: slots 1..=10 are due. Emit 9 (skipping 1..=8),
        // then 10 at once, then wait for 11.
        assert_eq!(
            p.step(ms(1050)),
            Step::Emit {
                slot: 9,
                skipped: 8
            }
        );
        assert_eq!(
            p.step(ms(1050)),
            Step::Emit {
                slot: 10,
                skipped: 0
            }
        );
        assert_eq!(p.step(ms(1050)), Step::Wait(ms(50)));
        assert_eq!(p.skipped(), 8);
    }

    #[test]
    fn unpaced_emits_every_slot_at_once() {
        let mut p = Pacer::new(1, 10, false);
        for n in 0..5 {
            assert_eq!(
                p.step(ms(0)),
                Step::Emit {
                    slot: n,
                    skipped: 0
                }
            );
        }
        assert!(!p.is_paced());
    }
}

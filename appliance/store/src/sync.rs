//! The sans-IO sync scheduler: decides what to upload next, when to retry, what to mark synced,
//! when to purge and when to raise the disk-budget alarm. It reads no clock and does no IO: feed it
//! [`Input`]s with the current `Instant`, and drain [`Scheduler::poll_output`] until it returns
//! [`Output::Timeout`]; call it again when that instant passes or after any new input.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables of the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Records per upload request.
    pub batch_size: usize,
    /// First retry delay after a failure.
    pub backoff_initial: Duration,
    /// Retry delay cap.
    pub backoff_max: Duration,
    /// How long synced records are kept before purging.
    pub retention: Duration,
    /// Bytes the store may use before the alarm is raised and synced records are purged early.
    pub disk_budget: u64,
    /// How often disk usage and retention are checked.
    pub housekeeping_interval: Duration,
    /// How often to look for new records when not told (a safety net; the driver also notifies).
    pub idle_poll: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            retention: Duration::from_secs(30 * 24 * 3600),
            disk_budget: 512 << 20,
            housekeeping_interval: Duration::from_secs(60),
            idle_poll: Duration::from_secs(5),
        }
    }
}

/// How an upload failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadFailure {
    /// Network down, timeout, TLS failure, 5xx, 429: retry with backoff.
    Transient(String),
    /// The server refused the batch (4xx other than 429): alarm, retry at the slowest pace.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
}

/// What happened outside.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// The store's durable and synced watermarks (at start, and whenever records were appended).
    Store {
        /// Every record up to here is durable.
        durable_upto: u64,
        /// Every record up to here is acknowledged (as persisted).
        synced_upto: u64,
    },
    /// The server acknowledged every record up to `acked_upto` and the driver persisted it.
    Uploaded {
        /// Highest contiguous sequence the server holds.
        acked_upto: u64,
    },
    /// The in-flight upload failed.
    UploadFailed(UploadFailure),
    /// Disk usage measured after [`Output::MeasureDisk`].
    DiskUsage {
        /// Bytes used by the store.
        bytes: u64,
    },
    /// A purge finished.
    Purged {
        /// Records removed.
        removed: u64,
    },
}

/// Why the scheduler wants to be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutReason {
    /// Waiting out a backoff before retrying.
    Backoff,
    /// Nothing to send; looking again later.
    Idle,
    /// Next disk and retention check.
    Housekeeping,
    /// An upload is in flight: wake only on its result (the driver bounds it with its own timeout).
    AwaitingUpload,
}

/// An alarm for console, metrics and LED.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Alarm {
    /// The store is over its disk budget with unsynced records it will not drop.
    DiskBudget {
        /// Bytes used.
        used: u64,
        /// The budget.
        budget: u64,
        /// Records not yet acknowledged.
        unsynced: u64,
    },
    /// The server refuses our uploads.
    ServerRejects {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server acknowledged sequences we never sent (misconfigured server or cloned device id).
    BogusAck {
        /// What it claimed.
        acked_upto: u64,
        /// The highest we sent.
        sent_upto: u64,
    },
}

/// The kind of an [`Alarm`], for clearing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlarmKind {
    /// [`Alarm::DiskBudget`].
    DiskBudget,
    /// [`Alarm::ServerRejects`].
    ServerRejects,
    /// [`Alarm::BogusAck`].
    BogusAck,
}

impl Alarm {
    /// Its kind.
    pub fn kind(&self) -> AlarmKind {
        match self {
            Alarm::DiskBudget { .. } => AlarmKind::DiskBudget,
            Alarm::ServerRejects { .. } => AlarmKind::ServerRejects,
            Alarm::BogusAck { .. } => AlarmKind::BogusAck,
        }
    }
}

/// What the driver should do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Read records `from..=upto` from the store and POST them; answer with
    /// [`Input::Uploaded`] (after persisting the ack with `mark_synced`) or [`Input::UploadFailed`].
    Upload {
        /// First sequence.
        from: u64,
        /// Last sequence.
        upto: u64,
    },
    /// Measure disk usage and answer with [`Input::DiskUsage`].
    MeasureDisk,
    /// Purge synced records up to `upto` that are at least `min_age` old; answer with [`Input::Purged`].
    Purge {
        /// Highest sequence that may go (never above the synced watermark).
        upto: u64,
        /// Minimum age ([`Duration::ZERO`] under disk pressure).
        min_age: Duration,
    },
    /// Raise an alarm.
    Alarm(Alarm),
    /// Clear an alarm.
    AlarmCleared(AlarmKind),
    /// Nothing to do until `at` (or until a new input).
    Timeout {
        /// When to call again.
        at: Instant,
        /// Why.
        reason: TimeoutReason,
    },
}

/// A snapshot for status displays and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Durable watermark.
    pub durable_upto: u64,
    /// Acknowledged watermark.
    pub synced_upto: u64,
    /// Consecutive failed attempts (0 when healthy).
    pub failures: u32,
    /// An upload is in flight.
    pub uploading: bool,
    /// Last disk usage measured.
    pub disk_used: u64,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

impl SyncStatus {
    /// Records waiting for an acknowledgement.
    pub fn backlog(&self) -> u64 {
        self.durable_upto.saturating_sub(self.synced_upto)
    }

    /// Whether an alarm of `kind` is active.
    pub fn has_alarm(&self, kind: AlarmKind) -> bool {
        self.alarms.iter().any(|a| a.kind() == kind)
    }

    /// Gauges for the metrics endpoint: (Prometheus name, help, value).
    pub fn gauges(&self) -> [(&'static str, &'static str, u64); 8] {
        [
            (
                "telecart_log_durable_seq",
                "Highest durable session-log sequence.",
                self.durable_upto,
            ),
            (
                "telecart_log_synced_seq",
                "Highest session-log sequence acknowledged by the ingest server.",
                self.synced_upto,
            ),
            (
                "telecart_log_backlog_records",
                "Session-log records not yet acknowledged.",
                self.backlog(),
            ),
            (
                "telecart_log_sync_failures",
                "Consecutive failed upload attempts.",
                u64::from(self.failures),
            ),
            (
                "telecart_log_disk_bytes",
                "Disk used by the session log.",
                self.disk_used,
            ),
            (
                "telecart_log_alarm_disk_budget",
                "1 while the session log is over its disk budget with unsynced records.",
                u64::from(self.has_alarm(AlarmKind::DiskBudget)),
            ),
            (
                "telecart_log_alarm_server_rejects",
                "1 while the ingest server refuses uploads.",
                u64::from(self.has_alarm(AlarmKind::ServerRejects)),
            ),
            (
                "telecart_log_alarm_bogus_ack",
                "1 after the ingest server acknowledged records never sent.",
                u64::from(self.has_alarm(AlarmKind::BogusAck)),
            ),
        ]
    }
}

/// Delay before retry number `attempt` (1-based): exponential, capped, with "equal jitter" (half
/// fixed, half uniformly random from `random`), so a fleet coming back online does not retry in step.
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration, random: u64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = initial.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = base / 2;
    let span = (base - half).as_millis() as u64;
    let jitter = if span == 0 { 0 } else { random % (span + 1) };
    half + Duration::from_millis(jitter)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    InFlight { from: u64, upto: u64 },
    Backoff { until: Instant },
}

/// The sync scheduler. See the module docs for the run loop.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    phase: Phase,
    durable: u64,
    synced: u64,
    failures: u32,
    rng: u64,
    next_housekeeping: Option<Instant>,
    measuring: bool,
    purging: bool,
    disk_used: u64,
    emergency_purge_done: bool,
    alarms: Vec<Alarm>,
    last_error: Option<String>,
    out: VecDeque<Output>,
}

impl Scheduler {
    /// A scheduler; `seed` seeds the jitter (take it from the OS; tests pass a constant).
    pub fn new(cfg: SchedulerConfig, seed: u64) -> Self {
        Self {
            cfg,
            phase: Phase::Idle,
            durable: 0,
            synced: 0,
            failures: 0,
            rng: seed | 1,
            next_housekeeping: None,
            measuring: false,
            purging: false,
            disk_used: 0,
            emergency_purge_done: false,
            alarms: Vec::new(),
            last_error: None,
            out: VecDeque::new(),
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: enough for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A status snapshot.
    pub fn status(&self) -> SyncStatus {
        SyncStatus {
            durable_upto: self.durable,
            synced_upto: self.synced,
            failures: self.failures,
            uploading: matches!(self.phase, Phase::InFlight { .. }),
            disk_used: self.disk_used,
            alarms: self.alarms.clone(),
            last_error: self.last_error.clone(),
        }
    }

    fn raise(&mut self, alarm: Alarm) {
        if let Some(a) = self.alarms.iter_mut().find(|a| a.kind() == alarm.kind()) {
            if *a != alarm {
                *a = alarm.clone();
                self.out.push_back(Output::Alarm(alarm));
            }
            return;
        }
        self.alarms.push(alarm.clone());
        self.out.push_back(Output::Alarm(alarm));
    }

    fn clear(&mut self, kind: AlarmKind) {
        let before = self.alarms.len();
        self.alarms.retain(|a| a.kind() != kind);
        if self.alarms.len() != before {
            self.out.push_back(Output::AlarmCleared(kind));
        }
    }

    fn fail(&mut self, now: Instant, slowest: bool) {
        self.failures = self.failures.saturating_add(1);
        let r = self.random();
        let delay = if slowest {
            backoff_delay(u32::MAX, self.cfg.backoff_initial, self.cfg.backoff_max, r)
        } else {
            backoff_delay(
                self.failures,
                self.cfg.backoff_initial,
                self.cfg.backoff_max,
                r,
            )
        };
        self.phase = Phase::Backoff { until: now + delay };
    }

    /// Feeds an input. Inputs that do not fit the current state (a late ack, a duplicate ack) are
    /// absorbed: an ack never moves the synced watermark backwards.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Store {
                durable_upto,
                synced_upto,
            } => {
                self.durable = self.durable.max(durable_upto);
                self.synced = self.synced.max(synced_upto);
            }
            Input::Uploaded { acked_upto } => {
                let Phase::InFlight { upto, .. } = self.phase else {
                    // An ack with nothing in flight: a duplicate. Never trusted beyond what we know.
                    return;
                };
                if acked_upto > upto {
                    self.raise(Alarm::BogusAck {
                        acked_upto,
                        sent_upto: upto,
                    });
                    self.synced = self.synced.max(upto);
                } else {
                    self.clear(AlarmKind::BogusAck);
                    self.synced = self.synced.max(acked_upto);
                }
                self.clear(AlarmKind::ServerRejects);
                self.failures = 0;
                self.last_error = None;
                self.phase = Phase::Idle;
            }
            Input::UploadFailed(f) => {
                if !matches!(self.phase, Phase::InFlight { .. }) {
                    return;
                }
                match f {
                    UploadFailure::Transient(msg) => {
                        self.last_error = Some(msg);
                        self.fail(now, false);
                    }
                    UploadFailure::Rejected { status, message } => {
                        self.last_error = Some(format!("HTTP {status}: {message}"));
                        self.raise(Alarm::ServerRejects { status, message });
                        self.fail(now, true);
                    }
                }
            }
            Input::DiskUsage { bytes } => {
                self.measuring = false;
                self.disk_used = bytes;
                if bytes <= self.cfg.disk_budget {
                    self.emergency_purge_done = false;
                    self.clear(AlarmKind::DiskBudget);
                } else if !self.emergency_purge_done && self.synced > 0 {
                    // Over budget: synced records go early, whatever their age.
                    self.emergency_purge_done = true;
                    self.purging = true;
                    self.out.push_back(Output::Purge {
                        upto: self.synced,
                        min_age: Duration::ZERO,
                    });
                } else {
                    let unsynced = self.durable.saturating_sub(self.synced);
                    self.raise(Alarm::DiskBudget {
                        used: bytes,
                        budget: self.cfg.disk_budget,
                        unsynced,
                    });
                }
            }
            Input::Purged { .. } => {
                self.purging = false;
                // Measure what is left: the alarm is raised, updated or cleared on it.
                self.measuring = true;
                self.out.push_back(Output::MeasureDisk);
            }
        }
    }

    /// The next thing to do. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self, now: Instant) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let hk = *self.next_housekeeping.get_or_insert(now);
        if now >= hk && !self.measuring && !self.purging {
            self.next_housekeeping = Some(now + self.cfg.housekeeping_interval);
            self.purging = true;
            self.emergency_purge_done = false;
            // Retention first, then a measurement (requested when the purge reports back).
            return Output::Purge {
                upto: self.synced,
                min_age: self.cfg.retention,
            };
        }
        let hk_at = self
            .next_housekeeping
            .unwrap_or(now + self.cfg.housekeeping_interval);
        match self.phase {
            Phase::InFlight { .. } => Output::Timeout {
                at: hk_at.max(now + self.cfg.idle_poll),
                reason: TimeoutReason::AwaitingUpload,
            },
            Phase::Backoff { until } if now < until => {
                let (at, reason) = if hk_at < until {
                    (hk_at, TimeoutReason::Housekeeping)
                } else {
                    (until, TimeoutReason::Backoff)
                };
                Output::Timeout { at, reason }
            }
            Phase::Backoff { .. } | Phase::Idle => {
                if self.durable > self.synced {
                    let from = self.synced + 1;
                    let upto = self
                        .durable
                        .min(self.synced.saturating_add(self.cfg.batch_size as u64));
                    self.phase = Phase::InFlight { from, upto };
                    return Output::Upload { from, upto };
                }
                self.phase = Phase::Idle;
                let idle = now + self.cfg.idle_poll;
                if hk_at < idle {
                    Output::Timeout {
                        at: hk_at,
                        reason: TimeoutReason::Housekeeping,
                    }
                } else {
                    Output::Timeout {
                        at: idle,
                        reason: TimeoutReason::Idle,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> SchedulerConfig {
        SchedulerConfig {
            batch_size: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
            disk_budget: 1000,
            housekeeping_interval: Duration::from_secs(60),
            idle_poll: Duration::from_secs(5),
        }
    }

    /// Drains outputs up to the timeout, answering housekeeping with `disk` bytes and no purge.
    fn drain(s: &mut Scheduler, now: Instant, disk: u64) -> Vec<Output> {
        let mut v = Vec::new();
        for _ in 0..100 {
            let o = s.poll_output(now);
            match &o {
                Output::Purge { .. } => s.handle_input(now, Input::Purged { removed: 0 }),
                Output::MeasureDisk => s.handle_input(now, Input::DiskUsage { bytes: disk }),
                _ => {}
            }
            let stop = matches!(o, Output::Timeout { .. } | Output::Upload { .. });
            v.push(o);
            if stop {
                break;
            }
        }
        v
    }

    fn uploads(v: &[Output]) -> Vec<(u64, u64)> {
        v.iter()
            .filter_map(|o| match o {
                Output::Upload { from, upto } => Some((*from, *upto)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn uploads_in_order_in_batches() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 1);
        s.handle_input(
            t0,
            Input::Store {
                durable_upto: 25,
                synced_upto: 0,
            },
        );
        let mut sent = Vec::new();
        for _ in 0..3 {
            let v = drain(&mut s, t0, 0);
            let u = uploads(&v);
            assert_eq!(u.len(), 1);
            sent.push(u[0]);
            s.handle_input(t0, Input::Uploaded { acked_upto: u[0].1 });
        }
        assert_eq!(sent, vec![(1, 10), (11, 20), (21, 25)]);
        let v = drain(&mut s, t0, 0);
        assert!(matches!(
            v.last(),
            Some(Output::Timeout {
                reason: TimeoutReason::Idle,
                ..
            })
        ));
        assert_eq!(s.status().backlog(), 0);
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut now = Instant::now();
        let mut s = Scheduler::new(cfg(), 7);
        s.handle_input(
            now,
            Input::Store {
                durable_upto: 5,
                synced_upto: 0,
            },
        );
        let mut delays = Vec::new();
        for _ in 0..10 {
            let v = drain(&mut s, now, 0);
            assert_eq!(uploads(&v), vec![(1, 5)], "the same records are retried");
            s.handle_input(
                now,
                Input::UploadFailed(UploadFailure::Transient("connection refused".into())),
            );
            let v = drain(&mut s, now, 0);
            let Some(Output::Timeout {
                at,
                reason: TimeoutReason::Backoff,
            }) = v.last().cloned()
            else {
                panic!("expected a backoff timeout, got {v:?}")
            };
            delays.push(at - now);
            // Nothing is sent before the timeout.
            assert!(uploads(&drain(&mut s, at - Duration::from_millis(1), 0)).is_empty());
            now = at;
        }
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(
            delays[9] >= Duration::from_secs(5),
            "capped at max with half jitter"
        );
        assert_eq!(s.status().failures, 10);
        let v = drain(&mut s, now, 0);
        assert_eq!(uploads(&v), vec![(1, 5)]);
        s.handle_input(now, Input::Uploaded { acked_upto: 5 });
        assert_eq!(s.status().failures, 0);
        assert_eq!(s.status().synced_upto, 5);
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        let d: std::collections::BTreeSet<_> = (0..50u64)
            .map(|r| {
                backoff_delay(
                    4,
                    Duration::from_millis(100),
                    Duration::from_secs(60),
                    r * 7919,
                )
            })
            .collect();
        assert!(d.len() > 30);
        assert_eq!(
            backoff_delay(1, Duration::from_millis(100), Duration::from_secs(1), 0),
            Duration::from_millis(50)
        );
        assert!(
            backoff_delay(
                u32::MAX,
                Duration::from_millis(100),
                Duration::from_secs(1),
                u64::MAX
            ) <= Duration::from_secs(1)
        );
    }

    #[test]
    fn duplicate_stale_and_partial_acks() {
        let t = Instant::now();
        let mut s = Scheduler::new(cfg(), 1);
        s.handle_input(
            t,
            Input::Store {
                durable_upto: 20,
                synced_upto: 0,
            },
        );
        assert_eq!(uploads(&drain(&mut s, t, 0)), vec![(1, 10)]);
        // Partial ack: continue after it.
        s.handle_input(t, Input::Uploaded { acked_upto: 4 });
        assert_eq!(uploads(&drain(&mut s, t, 0)), vec![(5, 14)]);
        // A stale ack of an earlier batch never moves the watermark back.
        s.handle_input(t, Input::Uploaded { acked_upto: 2 });
        assert_eq!(s.status().synced_upto, 4);
        // The same ack again, with nothing in flight: ignored.
        s.handle_input(t, Input::Uploaded { acked_upto: 20 });
        assert_eq!(s.status().synced_upto, 4);
        assert_eq!(uploads(&drain(&mut s, t, 0)), vec![(5, 14)]);
        // An ack beyond what was sent: alarm, and only what was sent counts.
        s.handle_input(t, Input::Uploaded { acked_upto: 99 });
        assert_eq!(s.status().synced_upto, 14);
        assert!(matches!(
            s.poll_output(t),
            Output::Alarm(Alarm::BogusAck {
                acked_upto: 99,
                sent_upto: 14
            })
        ));
    }

    #[test]
    fn rejection_alarms_and_retries_slowly_never_drops() {
        let t = Instant::now();
        let mut s = Scheduler::new(cfg(), 3);
        s.handle_input(
            t,
            Input::Store {
                durable_upto: 3,
                synced_upto: 0,
            },
        );
        drain(&mut s, t, 0);
        s.handle_input(
            t,
            Input::UploadFailed(UploadFailure::Rejected {
                status: 409,
                message: "conflict".into(),
            }),
        );
        let v = drain(&mut s, t, 0);
        assert!(
            v.iter()
                .any(|o| matches!(o, Output::Alarm(Alarm::ServerRejects { status: 409, .. })))
        );
        let Some(Output::Timeout { at, .. }) = v.last().cloned() else {
            panic!()
        };
        assert!(at - t >= Duration::from_secs(5));
        assert_eq!(
            uploads(&drain(&mut s, at, 0)),
            vec![(1, 3)],
            "retried, not dropped"
        );
        s.handle_input(at, Input::Uploaded { acked_upto: 3 });
        assert_eq!(
            s.poll_output(at),
            Output::AlarmCleared(AlarmKind::ServerRejects)
        );
    }

    #[test]
    fn retention_purge_and_disk_budget_alarm() {
        let t = Instant::now();
        let mut s = Scheduler::new(cfg(), 1);
        s.handle_input(
            t,
            Input::Store {
                durable_upto: 50,
                synced_upto: 20,
            },
        );
        // Housekeeping: retention purge of synced records only.
        assert_eq!(
            s.poll_output(t),
            Output::Purge {
                upto: 20,
                min_age: Duration::from_secs(3600)
            }
        );
        s.handle_input(t, Input::Purged { removed: 0 });
        assert_eq!(s.poll_output(t), Output::MeasureDisk);
        s.handle_input(t, Input::DiskUsage { bytes: 500 });
        // Not due again before the interval; an upload comes instead.
        assert!(matches!(
            s.poll_output(t),
            Output::Upload { from: 21, upto: 30 }
        ));
        s.handle_input(
            t,
            Input::UploadFailed(UploadFailure::Transient("down".into())),
        );
        let t1 = t + Duration::from_secs(60);
        assert_eq!(
            s.poll_output(t1),
            Output::Purge {
                upto: 20,
                min_age: Duration::from_secs(3600)
            }
        );
        s.handle_input(t1, Input::Purged { removed: 3 });
        assert_eq!(s.poll_output(t1), Output::MeasureDisk);
        // Over budget: synced records go early.
        s.handle_input(t1, Input::DiskUsage { bytes: 5000 });
        assert_eq!(
            s.poll_output(t1),
            Output::Purge {
                upto: 20,
                min_age: Duration::ZERO
            }
        );
        s.handle_input(t1, Input::Purged { removed: 17 });
        assert_eq!(s.poll_output(t1), Output::MeasureDisk);
        // Still over with unsynced records: alarm, and nothing unsynced is purged.
        s.handle_input(t1, Input::DiskUsage { bytes: 4000 });
        assert_eq!(
            s.poll_output(t1),
            Output::Alarm(Alarm::DiskBudget {
                used: 4000,
                budget: 1000,
                unsynced: 30
            })
        );
        assert!(s.status().alarms.len() == 1);
        let g = s.status().gauges();
        assert!(g.contains(&("telecart_log_alarm_disk_budget", g[5].1, 1)));
        assert!(g.contains(&("telecart_log_backlog_records", g[2].1, 30)));
        // Back under budget later: cleared.
        let t2 = t1 + Duration::from_secs(60);
        assert!(matches!(s.poll_output(t2), Output::Purge { .. }));
        s.handle_input(t2, Input::Purged { removed: 1 });
        assert_eq!(s.poll_output(t2), Output::MeasureDisk);
        s.handle_input(t2, Input::DiskUsage { bytes: 900 });
        assert_eq!(
            s.poll_output(t2),
            Output::AlarmCleared(AlarmKind::DiskBudget)
        );
    }

    #[test]
    fn days_offline_on_virtual_time() {
        // Three days of the server being down, records arriving all the while: the scheduler keeps
        // retrying at most every backoff_max, never gives up, and everything goes once it is back.
        let mut now = Instant::now();
        let end = now + Duration::from_secs(3 * 24 * 3600);
        let mut s = Scheduler::new(cfg(), 11);
        let mut durable = 0;
        let mut attempts = 0u64;
        while now < end {
            durable += 1;
            s.handle_input(
                now,
                Input::Store {
                    durable_upto: durable,
                    synced_upto: 0,
                },
            );
            let v = drain(&mut s, now, 0);
            if !uploads(&v).is_empty() {
                attempts += 1;
                s.handle_input(
                    now,
                    Input::UploadFailed(UploadFailure::Transient("timeout".into())),
                );
            }
            now += Duration::from_secs(7);
        }
        // About one attempt per 5..10 s once backoff is saturated.
        assert!(attempts > 3 * 24 * 360 / 2, "attempts {attempts}");
        let mut synced = 0;
        for _ in 0..10_000 {
            let v = drain(&mut s, now, 0);
            match uploads(&v).first() {
                Some(&(from, upto)) => {
                    assert_eq!(from, synced + 1);
                    synced = upto;
                    s.handle_input(now, Input::Uploaded { acked_upto: upto });
                }
                None => match v.last() {
                    Some(Output::Timeout { at, .. }) if synced < durable => now = *at,
                    _ => break,
                },
            }
        }
        assert_eq!(synced, durable);
    }
}

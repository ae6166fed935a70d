//! When to REGISTER, where, and what to do when it fails: a clock-free state machine.
//!
//! It never sends anything itself. The driver asks [`Registrar::poll_action`] with the current
//! time, carries out the REGISTER (digest challenges are the SIP stack's business: one outcome
//! per REGISTER transaction including its authenticated retry), and reports the outcome with
//! [`Registrar::handle_outcome`]. [`Registrar::poll_timeout`] says when to ask again and why.

use std::time::{Duration, Instant};

/// Tuning of the registration machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// How many registrars there are (index 0 is the primary).
    pub registrars: usize,
    /// Lifetime asked for.
    pub expires: Duration,
    /// NAT keep-alive period while registered; `None`: no keep-alives.
    pub keepalive: Option<Duration>,
    /// First retry delay after a failure.
    pub backoff_initial: Duration,
    /// Retry delay cap.
    pub backoff_max: Duration,
    /// Consecutive failures on one registrar before moving to the next.
    pub failover_after: u32,
    /// While registered on a secondary, how often to try the primary again.
    pub failback_after: Duration,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            registrars: 1,
            expires: Duration::from_secs(300),
            keepalive: Some(Duration::from_secs(25)),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            failover_after: 2,
            failback_after: Duration::from_secs(600),
        }
    }
}

/// What the driver must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrarAction {
    /// Send a REGISTER to registrar `registrar` asking for `expires` seconds (0: unregister).
    Register {
        /// Index into the configured registrars.
        registrar: usize,
        /// Requested lifetime in seconds.
        expires: u32,
    },
    /// Send a keep-alive on the flow to `registrar`: a CRLF ping (RFC 5626 §4.4.1) on a
    /// stream, an OPTIONS probe over UDP (whose silence is [`Registrar::registrar_silent`]).
    KeepAlive {
        /// Index into the configured registrars.
        registrar: usize,
    },
}

/// Why [`Registrar::poll_timeout`] wants to be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeReason {
    /// The binding is due for refresh.
    Refresh,
    /// A failed attempt is due for retry.
    Retry,
    /// A keep-alive is due.
    KeepAlive,
    /// The binding expires (the cart becomes unreachable unless a refresh succeeded).
    Expiry,
    /// Time to try the primary registrar again.
    Failback,
}

/// How one REGISTER transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 2xx with the lifetime the registrar granted (seconds).
    Registered {
        /// Granted lifetime, from Contact `expires` or the Expires header.
        granted_secs: u32,
    },
    /// 423 Interval Too Brief with the registrar's Min-Expires.
    IntervalTooBrief {
        /// Min-Expires from the response.
        min_expires_secs: u32,
    },
    /// Any other final response (including 401/407 after the credentials were tried).
    Rejected {
        /// The status code.
        status: u16,
    },
    /// No response: the transport failed or the transaction timed out.
    Unreachable,
}

/// The state a status page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationStatus {
    /// Not yet registered, first attempt in flight or pending.
    Registering {
        /// Registrar being tried.
        registrar: usize,
    },
    /// Registered; calls can reach the cart.
    Registered {
        /// Registrar holding the binding.
        registrar: usize,
        /// When the binding lapses without a refresh.
        expires_at: Instant,
    },
    /// Not registered; retrying later.
    Failed {
        /// Registrar to be tried next.
        registrar: usize,
        /// Consecutive failures.
        failures: u32,
        /// Last failure, for the operator.
        last: RegisterOutcome,
    },
    /// Unregistered on request (shutdown).
    Stopped,
}

#[derive(Clone, Debug)]
enum Phase {
    /// A REGISTER is due at `at`.
    Due {
        at: Instant,
        reason: WakeReason,
    },
    /// A REGISTER is in flight; `binding` is what is still held from before, if anything.
    InFlight,
    /// Registered until `expires_at`; refresh due at `refresh_at`.
    Bound {
        refresh_at: Instant,
        expires_at: Instant,
        next_keepalive: Option<Instant>,
        failback_at: Option<Instant>,
    },
    /// Unregister requested; one REGISTER with expires 0 pending or in flight.
    Stopping {
        sent: bool,
    },
    Stopped,
}

/// The registration state machine (one address of record, an ordered list of registrars).
#[derive(Clone, Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    phase: Phase,
    current: usize,
    /// Lifetime asked for next; raised by 423.
    asking_secs: u32,
    failures_here: u32,
    failures_total: u32,
    /// The binding still valid while a refresh is retried.
    held_until: Option<(usize, Instant)>,
    last_failure: Option<RegisterOutcome>,
}

/// Time before expiry at which a binding is refreshed: a fifth of the lifetime, within 2..=60 s
/// (enough for a retransmitted REGISTER and a digest round trip).
pub fn refresh_lead(granted: Duration) -> Duration {
    (granted / 5).clamp(Duration::from_secs(2), Duration::from_secs(60))
}

impl Registrar {
    /// A machine that registers with the primary as soon as it is polled.
    pub fn new(config: RegistrarConfig, now: Instant) -> Self {
        let asking_secs = u32::try_from(config.expires.as_secs()).unwrap_or(u32::MAX);
        Self {
            config,
            phase: Phase::Due {
                at: now,
                reason: WakeReason::Refresh,
            },
            current: 0,
            asking_secs,
            failures_here: 0,
            failures_total: 0,
            held_until: None,
            last_failure: None,
        }
    }

    /// What to do at `now`, if anything. Call again after every action and whenever
    /// [`Self::poll_timeout`] passes.
    pub fn poll_action(&mut self, now: Instant) -> Option<RegistrarAction> {
        self.expire_held(now);
        match &mut self.phase {
            Phase::Due { at, .. } if *at <= now => {
                self.phase = Phase::InFlight;
                Some(RegistrarAction::Register {
                    registrar: self.current,
                    expires: self.asking_secs,
                })
            }
            Phase::Bound {
                refresh_at,
                next_keepalive,
                failback_at,
                expires_at,
            } => {
                if let Some(at) = *failback_at
                    && at <= now
                {
                    // Try the primary again; the secondary binding stays until it expires.
                    self.held_until = Some((self.current, *expires_at));
                    self.current = 0;
                    self.failures_here = 0;
                    self.phase = Phase::InFlight;
                    return Some(RegistrarAction::Register {
                        registrar: 0,
                        expires: self.asking_secs,
                    });
                }
                if *refresh_at <= now {
                    self.held_until = Some((self.current, *expires_at));
                    self.phase = Phase::InFlight;
                    return Some(RegistrarAction::Register {
                        registrar: self.current,
                        expires: self.asking_secs,
                    });
                }
                if let (Some(at), Some(period)) = (next_keepalive.as_mut(), self.config.keepalive)
                    && *at <= now
                {
                    *at = now + period;
                    return Some(RegistrarAction::KeepAlive {
                        registrar: self.current,
                    });
                }
                None
            }
            Phase::Stopping { sent } if !*sent => {
                *sent = true;
                Some(RegistrarAction::Register {
                    registrar: self.current,
                    expires: 0,
                })
            }
            _ => None,
        }
    }

    /// When [`Self::poll_action`] has something to do next, and why; `None` while a REGISTER is
    /// in flight or after stopping.
    pub fn poll_timeout(&self) -> Option<(Instant, WakeReason)> {
        match &self.phase {
            Phase::Due { at, reason } => Some((*at, *reason)),
            Phase::Bound {
                refresh_at,
                next_keepalive,
                failback_at,
                ..
            } => {
                let mut best = (*refresh_at, WakeReason::Refresh);
                for (t, r) in [
                    (*next_keepalive, WakeReason::KeepAlive),
                    (*failback_at, WakeReason::Failback),
                ] {
                    if let Some(t) = t
                        && t < best.0
                    {
                        best = (t, r);
                    }
                }
                Some(best)
            }
            _ => None,
        }
        .map(|(t, r)| match self.held_until {
            Some((_, until)) if until < t => (until, WakeReason::Expiry),
            _ => (t, r),
        })
    }

    /// Feeds the outcome of the REGISTER last asked for.
    pub fn handle_outcome(&mut self, now: Instant, outcome: RegisterOutcome) {
        match self.phase {
            Phase::InFlight => {}
            Phase::Stopping { .. } => {
                self.phase = Phase::Stopped;
                self.held_until = None;
                return;
            }
            // An answer nobody is waiting for (a late retransmission): ignore.
            _ => return,
        }
        match outcome {
            RegisterOutcome::Registered { granted_secs } if granted_secs > 0 => {
                let granted = Duration::from_secs(u64::from(granted_secs));
                let expires_at = now + granted;
                self.failures_here = 0;
                self.failures_total = 0;
                self.last_failure = None;
                self.held_until = None;
                self.phase = Phase::Bound {
                    refresh_at: expires_at - refresh_lead(granted),
                    expires_at,
                    next_keepalive: self.config.keepalive.map(|k| now + k),
                    failback_at: (self.current != 0).then(|| now + self.config.failback_after),
                };
            }
            RegisterOutcome::IntervalTooBrief { min_expires_secs }
                if min_expires_secs > self.asking_secs && min_expires_secs <= 86_400 =>
            {
                self.asking_secs = min_expires_secs;
                self.phase = Phase::Due {
                    at: now,
                    reason: WakeReason::Retry,
                };
            }
            other => self.fail(now, other),
        }
    }

    fn fail(&mut self, now: Instant, outcome: RegisterOutcome) {
        self.failures_here += 1;
        self.failures_total += 1;
        self.last_failure = Some(outcome);
        if self.failures_here >= self.config.failover_after && self.config.registrars > 1 {
            self.current = (self.current + 1) % self.config.registrars;
            self.failures_here = 0;
        }
        let exponent = self.failures_total.saturating_sub(1).min(16);
        let delay = self
            .config
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(self.config.backoff_max);
        // A refresh that fails while the old binding still holds retries sooner than the
        // binding lapses, so a single lost REGISTER does not make the cart unreachable.
        let delay = match self.held_until {
            Some((_, until)) if until > now => delay.min((until - now) / 2),
            _ => delay,
        };
        self.phase = Phase::Due {
            at: now + delay,
            reason: WakeReason::Retry,
        };
    }

    /// The flow to the registrar in use is gone (RFC 5626 §4.4.1): its stream connection
    /// closed and could not be opened again, or came back as a new connection the binding
    /// does not name. Registers again at once instead of at the next refresh, keeping the old
    /// binding meanwhile; if the registrar is dead those attempts fail fast and the usual
    /// backoff and failover follow. Ignored unless bound.
    pub fn flow_lost(&mut self, now: Instant) {
        if let Phase::Bound { expires_at, .. } = self.phase {
            self.held_until = Some((self.current, expires_at));
            self.phase = Phase::Due {
                at: now,
                reason: WakeReason::Retry,
            };
        }
    }

    /// The registrar holding the binding did not answer a keep-alive probe (OPTIONS over
    /// UDP, where a CRLF ping has no answer): it is taken as down. The next REGISTER goes to
    /// the next registrar at once, instead of after `failover_after` refreshes have timed out
    /// (each a 32 s transaction over UDP); the old binding still counts until it lapses.
    pub fn registrar_silent(&mut self, now: Instant) {
        if let Phase::Bound { expires_at, .. } = self.phase {
            self.held_until = Some((self.current, expires_at));
            self.failures_here = self.config.failover_after.saturating_sub(1);
            self.fail(now, RegisterOutcome::Unreachable);
            self.phase = Phase::Due {
                at: now,
                reason: WakeReason::Retry,
            };
        }
    }

    fn expire_held(&mut self, now: Instant) {
        if let Some((_, until)) = self.held_until
            && until <= now
        {
            self.held_until = None;
        }
    }

    /// Unregister (REGISTER with expires 0) at the next poll; then the machine stops.
    pub fn stop(&mut self) {
        let bound = matches!(self.phase, Phase::Bound { .. } | Phase::InFlight)
            || self.held_until.is_some();
        self.phase = if bound {
            Phase::Stopping { sent: false }
        } else {
            Phase::Stopped
        };
    }

    /// The state for status pages and metrics.
    pub fn status(&self, now: Instant) -> RegistrationStatus {
        match &self.phase {
            Phase::Bound { expires_at, .. } => RegistrationStatus::Registered {
                registrar: self.current,
                expires_at: *expires_at,
            },
            Phase::Stopped | Phase::Stopping { .. } => RegistrationStatus::Stopped,
            _ => match (self.held_until, &self.last_failure) {
                (Some((registrar, expires_at)), _) if expires_at > now => {
                    RegistrationStatus::Registered {
                        registrar,
                        expires_at,
                    }
                }
                (_, Some(last)) => RegistrationStatus::Failed {
                    registrar: self.current,
                    failures: self.failures_total,
                    last: last.clone(),
                },
                (_, None) => RegistrationStatus::Registering {
                    registrar: self.current,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn config(registrars: usize) -> RegistrarConfig {
        RegistrarConfig {
            registrars,
            ..RegistrarConfig::default()
        }
    }

    fn register(registrar: usize, expires: u32) -> Option<RegistrarAction> {
        Some(RegistrarAction::Register { registrar, expires })
    }

    #[test]
    fn registers_at_once_and_refreshes_before_expiry() {
        let t0 = Instant::now();
        let mut r = Registrar::new(config(1), t0);
        assert_eq!(r.poll_action(t0), register(0, 300));
        assert_eq!(r.poll_action(t0), None);
        assert_eq!(
            r.poll_timeout(),
            None,
            "nothing to wake for while in flight"
        );
        r.handle_outcome(t0, RegisterOutcome::Registered { granted_secs: 120 });
        // Keep-alives every 25 s until the refresh at 120 - 24 = 96 s.
        assert_eq!(
            r.poll_timeout(),
            Some((t0 + secs(25), WakeReason::KeepAlive))
        );
        assert_eq!(
            r.poll_action(t0 + secs(25)),
            Some(RegistrarAction::KeepAlive { registrar: 0 })
        );
        assert_eq!(r.poll_action(t0 + secs(26)), None);
        let mut t = t0 + secs(25);
        while let Some((at, WakeReason::KeepAlive)) = r.poll_timeout() {
            t = at;
            assert!(r.poll_action(t).is_some());
        }
        assert_eq!(r.poll_timeout(), Some((t0 + secs(96), WakeReason::Refresh)));
        assert!(t < t0 + secs(96));
        assert_eq!(r.poll_action(t0 + secs(96)), register(0, 300));
        // While the refresh is in flight the old binding still counts.
        assert!(matches!(
            r.status(t0 + secs(97)),
            RegistrationStatus::Registered { registrar: 0, .. }
        ));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut r = Registrar::new(
            RegistrarConfig {
                backoff_max: secs(5),
                ..config(1)
            },
            t0,
        );
        let mut t = t0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            assert_eq!(r.poll_action(t), register(0, 300));
            r.handle_outcome(t, RegisterOutcome::Unreachable);
            let (at, reason) = r.poll_timeout().unwrap();
            assert_eq!(reason, WakeReason::Retry);
            assert_eq!(r.poll_action(at - Duration::from_millis(1)), None);
            delays.push((at - t).as_secs());
            t = at;
        }
        assert_eq!(delays, vec![1, 2, 4, 5, 5, 5]);
        assert!(matches!(
            r.status(t),
            RegistrationStatus::Failed {
                failures: 6,
                last: RegisterOutcome::Unreachable,
                ..
            }
        ));
    }

    #[test]
    fn fails_over_to_the_secondary_and_back_to_the_primary_later() {
        let t0 = Instant::now();
        let mut r = Registrar::new(config(2), t0);
        assert_eq!(r.poll_action(t0), register(0, 300));
        r.handle_outcome(t0, RegisterOutcome::Unreachable);
        let (t1, _) = r.poll_timeout().unwrap();
        assert_eq!(r.poll_action(t1), register(0, 300));
        r.handle_outcome(t1, RegisterOutcome::Rejected { status: 503 });
        let (t2, _) = r.poll_timeout().unwrap();
        assert_eq!(
            r.poll_action(t2),
            register(1, 300),
            "second failure: secondary"
        );
        r.handle_outcome(t2, RegisterOutcome::Registered { granted_secs: 3600 });
        assert!(matches!(
            r.status(t2),
            RegistrationStatus::Registered { registrar: 1, .. }
        ));
        // Keep-alives go to the secondary; after 600 s the primary is tried again.
        assert_eq!(
            r.poll_action(t2 + secs(25)),
            Some(RegistrarAction::KeepAlive { registrar: 1 })
        );
        assert_eq!(r.poll_action(t2 + secs(600)), register(0, 300));
        r.handle_outcome(t2 + secs(600), RegisterOutcome::Unreachable);
        // The secondary's binding still holds while the primary is retried.
        assert!(matches!(
            r.status(t2 + secs(601)),
            RegistrationStatus::Registered { registrar: 1, .. }
        ));
    }

    #[test]
    fn a_silent_registrar_fails_over_at_once_keeping_the_old_binding_meanwhile() {
        let t0 = Instant::now();
        let mut r = Registrar::new(config(2), t0);
        assert_eq!(r.poll_action(t0), register(0, 300));
        r.handle_outcome(t0, RegisterOutcome::Registered { granted_secs: 300 });
        let t1 = t0 + secs(25);
        assert_eq!(
            r.poll_action(t1),
            Some(RegistrarAction::KeepAlive { registrar: 0 })
        );
        let t2 = t1 + secs(4);
        r.registrar_silent(t2);
        assert_eq!(
            r.poll_action(t2),
            register(1, 300),
            "straight to the secondary"
        );
        assert!(matches!(
            r.status(t2),
            RegistrationStatus::Registered { registrar: 0, .. }
        ));
        r.handle_outcome(t2, RegisterOutcome::Registered { granted_secs: 300 });
        assert!(matches!(
            r.status(t2),
            RegistrationStatus::Registered { registrar: 1, .. }
        ));
        // With one registrar, a silent one is registered with again at once.
        let mut one = Registrar::new(config(1), t0);
        assert_eq!(one.poll_action(t0), register(0, 300));
        one.handle_outcome(t0, RegisterOutcome::Registered { granted_secs: 300 });
        one.registrar_silent(t1);
        assert_eq!(one.poll_action(t1), register(0, 300));
        // Silence reported when not bound changes nothing.
        one.registrar_silent(t1);
        assert_eq!(one.poll_action(t1), None);
    }

    #[test]
    fn a_lost_flow_registers_again_at_once_and_a_dead_primary_fails_over() {
        let t0 = Instant::now();
        let mut r = Registrar::new(config(2), t0);
        assert_eq!(r.poll_action(t0), register(0, 300));
        r.handle_outcome(t0, RegisterOutcome::Registered { granted_secs: 300 });
        // Not before it is noticed: nothing until the keep-alive.
        assert_eq!(r.poll_action(t0 + secs(1)), None);
        let t1 = t0 + secs(25);
        assert_eq!(
            r.poll_action(t1),
            Some(RegistrarAction::KeepAlive { registrar: 0 })
        );
        r.flow_lost(t1);
        assert_eq!(
            r.poll_action(t1),
            register(0, 300),
            "at once, not at refresh"
        );
        r.handle_outcome(t1, RegisterOutcome::Unreachable);
        // The old binding still counts while the primary is retried.
        assert!(matches!(
            r.status(t1),
            RegistrationStatus::Registered { registrar: 0, .. }
        ));
        let (t2, reason) = r.poll_timeout().unwrap();
        assert_eq!((t2 - t1, reason), (secs(1), WakeReason::Retry));
        assert_eq!(r.poll_action(t2), register(0, 300));
        r.handle_outcome(t2, RegisterOutcome::Unreachable);
        let (t3, _) = r.poll_timeout().unwrap();
        assert_eq!(t3 - t1, secs(3), "1 s then 2 s of backoff");
        assert_eq!(r.poll_action(t3), register(1, 300), "failed over");
        r.handle_outcome(t3, RegisterOutcome::Registered { granted_secs: 300 });
        assert!(matches!(
            r.status(t3),
            RegistrationStatus::Registered { registrar: 1, .. }
        ));
        // While not bound a lost flow changes nothing.
        let mut idle = Registrar::new(config(2), t0);
        idle.flow_lost(t0);
        assert_eq!(idle.poll_action(t0), register(0, 300));
        idle.flow_lost(t0);
        assert_eq!(idle.poll_action(t0), None, "in flight");
    }

    #[test]
    fn interval_too_brief_raises_the_lifetime_and_retries_at_once() {
        let t0 = Instant::now();
        let mut r = Registrar::new(config(1), t0);
        r.poll_action(t0);
        r.handle_outcome(
            t0,
            RegisterOutcome::IntervalTooBrief {
                min_expires_secs: 900,
            },
        );
        assert_eq!(r.poll_action(t0), register(0, 900));
        // A hostile Min-Expires below what we asked or beyond a day is a plain failure.
        r.handle_outcome(
            t0,
            RegisterOutcome::IntervalTooBrief {
                min_expires_secs: 10,
            },
        );
        assert_eq!(r.poll_action(t0), None);
    }

    #[test]
    fn failed_refresh_retries_before_the_old_binding_lapses() {
        let t0 = Instant::now();
        let mut r = Registrar::new(
            RegistrarConfig {
                backoff_initial: secs(100),
                keepalive: None,
                ..config(1)
            },
            t0,
        );
        r.poll_action(t0);
        r.handle_outcome(t0, RegisterOutcome::Registered { granted_secs: 60 });
        let (refresh, _) = r.poll_timeout().unwrap();
        assert_eq!(refresh, t0 + secs(48));
        assert!(r.poll_action(refresh).is_some());
        r.handle_outcome(refresh, RegisterOutcome::Unreachable);
        let (retry, _) = r.poll_timeout().unwrap();
        assert_eq!(
            retry,
            refresh + secs(6),
            "half of the 12 s left, not the 100 s backoff"
        );
    }

    #[test]
    fn stop_unregisters_once_and_late_answers_are_ignored() {
        let t0 = Instant::now();
        let mut r = Registrar::new(config(1), t0);
        r.poll_action(t0);
        r.handle_outcome(t0, RegisterOutcome::Registered { granted_secs: 300 });
        r.handle_outcome(t0, RegisterOutcome::Unreachable);
        assert!(matches!(
            r.status(t0),
            RegistrationStatus::Registered { .. }
        ));
        r.stop();
        assert_eq!(r.poll_action(t0), register(0, 0));
        assert_eq!(r.poll_action(t0), None);
        r.handle_outcome(t0, RegisterOutcome::Registered { granted_secs: 0 });
        assert_eq!(r.status(t0), RegistrationStatus::Stopped);
        assert_eq!(r.poll_timeout(), None);
    }
}

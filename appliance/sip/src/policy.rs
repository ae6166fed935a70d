//! Who gets answered: the call policy and the life of one incoming call before it is answered,
//! both clock-free.

use std::time::{Duration, Instant};

use telecart_core::config::{OtherCallers, SipPolicyConfig};

/// A caller pattern from `allowed_callers`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CallerPattern {
    Anyone,
    Host(String),
    Exact { user: String, host: String },
}

/// The caller's identity as the From header names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User part (may be empty for `sip:host`).
    pub user: String,
    /// Host part, without port.
    pub host: String,
}

impl Caller {
    /// Reads `user@host` out of a SIP URI such as `sip:doctor@10.0.0.1:5060;transport=tcp` or a
    /// name-addr `"Dr" <sip:doctor@h>;tag=x`. `None` if it is not a sip/sips URI.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let uri = match (uri.find('<'), uri.rfind('>')) {
            (Some(a), Some(b)) if a < b => &uri[a + 1..b],
            _ => uri.trim(),
        };
        let rest = uri
            .strip_prefix("sips:")
            .or_else(|| uri.strip_prefix("sip:"))?;
        let rest = rest.split([';', '?', '>']).next()?;
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (user.split(':').next().unwrap_or(""), hostport),
            None => ("", rest),
        };
        let host = if let Some(v6) = hostport.strip_prefix('[') {
            v6.split(']').next()?
        } else {
            hostport.split(':').next()?
        };
        if host.is_empty() {
            return None;
        }
        Some(Self {
            user: user.to_string(),
            host: host.to_ascii_lowercase(),
        })
    }
}

/// What to do with an incoming INVITE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ring for `after`, then answer; `muted`: microphone off until unmuted at the cart.
    AutoAnswer {
        /// Ringing time before the 200 OK.
        after: Duration,
        /// Answer with the microphone muted.
        muted: bool,
    },
    /// Ring until someone at the cart answers or `timeout` passes (then 480).
    Ring {
        /// How long to ring.
        timeout: Duration,
    },
    /// Refuse with this final status (403 not allowed, 486 busy).
    Reject {
        /// SIP status code.
        status: u16,
    },
}

/// The call policy from `[sip.policy]`.
#[derive(Clone, Debug)]
pub struct CallPolicy {
    allowed: Vec<CallerPattern>,
    delay: Duration,
    muted: bool,
    others: OtherCallers,
    ring_timeout: Duration,
}

impl CallPolicy {
    /// Builds the policy from the validated config section.
    pub fn new(config: &SipPolicyConfig) -> Self {
        let allowed = config
            .allowed_callers
            .iter()
            .filter_map(|c| {
                if c == "*" {
                    return Some(CallerPattern::Anyone);
                }
                let (user, host) = c.split_once('@')?;
                let host = host.to_ascii_lowercase();
                Some(if user.is_empty() {
                    CallerPattern::Host(host)
                } else {
                    CallerPattern::Exact {
                        user: user.to_string(),
                        host,
                    }
                })
            })
            .collect();
        Self {
            allowed,
            delay: Duration::from_millis(u64::from(config.auto_answer_delay_ms)),
            muted: config.mute_on_answer,
            others: config.others,
            ring_timeout: Duration::from_secs(u64::from(config.ring_timeout_secs)),
        }
    }

    /// Whether `caller` may be answered automatically.
    pub fn allows(&self, caller: &Caller) -> bool {
        self.allowed.iter().any(|p| match p {
            CallerPattern::Anyone => true,
            CallerPattern::Host(h) => *h == caller.host,
            CallerPattern::Exact { user, host } => *user == caller.user && *host == caller.host,
        })
    }

    /// Decides an incoming call. `busy`: the cart is already in a call (SIP or WebRTC), or the
    /// privacy switch is on.
    pub fn decide(&self, caller: Option<&Caller>, busy: bool) -> Decision {
        if busy {
            return Decision::Reject { status: 486 };
        }
        match caller {
            Some(c) if self.allows(c) => Decision::AutoAnswer {
                after: self.delay,
                muted: self.muted,
            },
            _ => match self.others {
                OtherCallers::Ring => Decision::Ring {
                    timeout: self.ring_timeout,
                },
                OtherCallers::Reject => Decision::Reject { status: 403 },
            },
        }
    }
}

/// What a pending incoming call needs the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingAction {
    /// Send 180 Ringing (once).
    Ring,
    /// Send 200 OK with the SDP answer.
    Answer {
        /// Start with the microphone muted.
        muted: bool,
    },
    /// Send this final error status.
    Reject {
        /// SIP status code.
        status: u16,
    },
}

/// One incoming call from the INVITE until it is answered, refused or cancelled.
#[derive(Clone, Debug)]
pub struct PendingCall {
    decision: Decision,
    received: Instant,
    rang: bool,
    done: bool,
    answer_now: bool,
    /// The cart's state machine must agree before the 200 OK (it rings, answers or refuses).
    admitted: bool,
    refused: Option<u16>,
}

impl PendingCall {
    /// A call decided at `now`.
    pub fn new(decision: Decision, now: Instant) -> Self {
        Self {
            decision,
            received: now,
            rang: false,
            done: false,
            answer_now: false,
            admitted: true,
            refused: None,
        }
    }

    /// A call the cart's state machine decides too: nothing is answered until [`admit`]
    /// (the machine answered, by policy or by the call button) and [`refuse`] ends it. A
    /// ringing call then rings until the machine's verdict, not the SIP ring timeout, so the
    /// two never disagree.
    ///
    /// [`admit`]: Self::admit
    /// [`refuse`]: Self::refuse
    pub fn gated(decision: Decision, now: Instant) -> Self {
        Self {
            admitted: false,
            ..Self::new(decision, now)
        }
    }

    /// The cart answered: an auto-answered call is answered once its delay has passed, a
    /// ringing one at once.
    pub fn admit(&mut self) {
        self.admitted = true;
        self.answer();
    }

    /// The cart turned the call away with this SIP status (486 busy, 480 no answer, 603
    /// declined).
    pub fn refuse(&mut self, status: u16) {
        self.refused = Some(status);
    }

    /// Someone at the cart pressed the call button to answer a ringing call.
    pub fn answer(&mut self) {
        if matches!(self.decision, Decision::Ring { .. }) {
            self.answer_now = true;
        }
    }

    /// The caller sent CANCEL: nothing more is sent (the stack answers 487).
    pub fn cancel(&mut self) {
        self.done = true;
    }

    /// Whether the call has been answered, refused or cancelled.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// What to send at `now`, if anything.
    pub fn poll_action(&mut self, now: Instant) -> Option<PendingAction> {
        if self.done {
            return None;
        }
        if let Some(status) = self.refused {
            self.done = true;
            return Some(PendingAction::Reject { status });
        }
        match self.decision.clone() {
            Decision::Reject { status } => {
                self.done = true;
                Some(PendingAction::Reject { status })
            }
            Decision::AutoAnswer { after, muted } => {
                if self.admitted && now >= self.received + after {
                    self.done = true;
                    Some(PendingAction::Answer { muted })
                } else if !self.rang {
                    self.rang = true;
                    Some(PendingAction::Ring)
                } else {
                    None
                }
            }
            Decision::Ring { timeout } => {
                if self.answer_now {
                    self.done = true;
                    Some(PendingAction::Answer { muted: false })
                } else if self.admitted && now >= self.received + timeout {
                    self.done = true;
                    Some(PendingAction::Reject { status: 480 })
                } else if !self.rang {
                    self.rang = true;
                    Some(PendingAction::Ring)
                } else {
                    None
                }
            }
        }
    }

    /// When to poll again; `None` when only an outside event (answer, cancel) can change things.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        if self.refused.is_some() {
            return Some(self.received);
        }
        match self.decision {
            // Until the cart admits the call only its verdict can change anything.
            Decision::AutoAnswer { .. } | Decision::Ring { .. } if !self.admitted => None,
            Decision::AutoAnswer { after, .. } => Some(self.received + after),
            Decision::Ring { timeout } => Some(self.received + timeout),
            Decision::Reject { .. } => Some(self.received),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], others: OtherCallers) -> CallPolicy {
        CallPolicy::new(&SipPolicyConfig {
            allowed_callers: allowed.iter().map(|s| s.to_string()).collect(),
            auto_answer_delay_ms: 1500,
            mute_on_answer: true,
            others,
            ring_timeout_secs: 30,
        })
    }

    fn caller(uri: &str) -> Caller {
        Caller::from_uri(uri).unwrap()
    }

    #[test]
    fn callers_are_read_from_uris_and_name_addrs() {
        assert_eq!(
            caller("\"Dr. Who\" <sip:doctor@Hospital.ORG:5061;transport=tls>;tag=abc"),
            Caller {
                user: "doctor".into(),
                host: "hospital.org".into()
            }
        );
        assert_eq!(caller("sips:[::1]:5061").host, "::1");
        assert_eq!(caller("sip:alice:secret@h").user, "alice");
        for bad in ["tel:+123", "", "sip:", "sip:@", "<sip:>", "http://x"] {
            assert_eq!(Caller::from_uri(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allowed_callers_are_auto_answered_after_the_delay_muted() {
        let p = policy(
            &["doctor@hospital.org", "@telehealth.example"],
            OtherCallers::Reject,
        );
        let auto = Decision::AutoAnswer {
            after: Duration::from_millis(1500),
            muted: true,
        };
        assert_eq!(
            p.decide(Some(&caller("sip:doctor@HOSPITAL.org")), false),
            auto
        );
        assert_eq!(
            p.decide(Some(&caller("sip:anyone@telehealth.example")), false),
            auto
        );
        assert_eq!(
            p.decide(Some(&caller("sip:Doctor@hospital.org")), false),
            Decision::Reject { status: 403 },
            "user parts are case-sensitive"
        );
        assert_eq!(p.decide(None, false), Decision::Reject { status: 403 });
        assert_eq!(
            p.decide(Some(&caller("sip:doctor@hospital.org")), true),
            Decision::Reject { status: 486 }
        );
    }

    #[test]
    fn others_ring_when_configured_and_star_allows_everyone() {
        let p = policy(&[], OtherCallers::Ring);
        assert_eq!(
            p.decide(Some(&caller("sip:x@y")), false),
            Decision::Ring {
                timeout: Duration::from_secs(30)
            }
        );
        let p = policy(&["*"], OtherCallers::Reject);
        assert!(p.allows(&caller("sip:x@y")));
    }

    #[test]
    fn pending_call_rings_then_answers_on_time() {
        let t0 = Instant::now();
        let mut c = PendingCall::new(
            Decision::AutoAnswer {
                after: Duration::from_millis(500),
                muted: false,
            },
            t0,
        );
        assert_eq!(c.poll_action(t0), Some(PendingAction::Ring));
        assert_eq!(c.poll_action(t0), None);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(
            c.poll_action(t0 + Duration::from_millis(500)),
            Some(PendingAction::Answer { muted: false })
        );
        assert!(c.is_done());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn zero_delay_answers_without_ringing_and_cancel_stops_everything() {
        let t0 = Instant::now();
        let auto = Decision::AutoAnswer {
            after: Duration::ZERO,
            muted: false,
        };
        let mut c = PendingCall::new(auto.clone(), t0);
        assert_eq!(
            c.poll_action(t0),
            Some(PendingAction::Answer { muted: false })
        );
        let mut c = PendingCall::new(
            Decision::Ring {
                timeout: Duration::from_secs(30),
            },
            t0,
        );
        assert_eq!(c.poll_action(t0), Some(PendingAction::Ring));
        c.cancel();
        assert_eq!(c.poll_action(t0 + Duration::from_secs(31)), None);
    }

    #[test]
    fn ringing_call_is_answered_by_hand_or_times_out_with_480() {
        let t0 = Instant::now();
        let ring = Decision::Ring {
            timeout: Duration::from_secs(30),
        };
        let mut c = PendingCall::new(ring.clone(), t0);
        c.poll_action(t0);
        c.answer();
        assert_eq!(
            c.poll_action(t0),
            Some(PendingAction::Answer { muted: false })
        );
        let mut c = PendingCall::new(ring, t0);
        c.poll_action(t0);
        assert_eq!(
            c.poll_action(t0 + Duration::from_secs(30)),
            Some(PendingAction::Reject { status: 480 })
        );
    }

    #[test]
    fn a_gated_auto_answer_waits_for_the_cart_then_its_delay() {
        let t0 = Instant::now();
        let decision = Decision::AutoAnswer {
            after: Duration::from_millis(500),
            muted: false,
        };
        let mut c = PendingCall::gated(decision, t0);
        assert_eq!(c.poll_action(t0), Some(PendingAction::Ring));
        assert_eq!(
            c.poll_timeout(),
            None,
            "only the cart's verdict can move it"
        );
        assert_eq!(c.poll_action(t0 + Duration::from_secs(9)), None);
        c.admit();
        assert_eq!(
            c.poll_action(t0 + Duration::from_millis(10_000)),
            Some(PendingAction::Answer { muted: false })
        );
        assert!(c.is_done());

        let mut early = PendingCall::gated(
            Decision::AutoAnswer {
                after: Duration::from_millis(500),
                muted: true,
            },
            t0,
        );
        assert_eq!(early.poll_action(t0), Some(PendingAction::Ring));
        early.admit();
        assert_eq!(early.poll_action(t0 + Duration::from_millis(100)), None);
        assert_eq!(early.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(
            early.poll_action(t0 + Duration::from_millis(500)),
            Some(PendingAction::Answer { muted: true })
        );
    }

    #[test]
    fn a_gated_ringing_call_follows_the_cart_not_the_sip_ring_timeout() {
        let t0 = Instant::now();
        let ring = Decision::Ring {
            timeout: Duration::from_secs(30),
        };
        let mut c = PendingCall::gated(ring.clone(), t0);
        assert_eq!(c.poll_action(t0), Some(PendingAction::Ring));
        assert_eq!(c.poll_action(t0 + Duration::from_secs(40)), None);
        c.admit();
        assert_eq!(
            c.poll_action(t0 + Duration::from_secs(41)),
            Some(PendingAction::Answer { muted: false })
        );

        let mut refused = PendingCall::gated(ring, t0);
        assert_eq!(refused.poll_action(t0), Some(PendingAction::Ring));
        refused.refuse(603);
        assert_eq!(refused.poll_timeout(), Some(t0));
        assert_eq!(
            refused.poll_action(t0 + Duration::from_secs(1)),
            Some(PendingAction::Reject { status: 603 })
        );
        assert_eq!(refused.poll_action(t0 + Duration::from_secs(2)), None);
    }
}

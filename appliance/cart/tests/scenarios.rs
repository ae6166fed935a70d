//! Cart state-machine scenarios on virtual time: one behaviour a test.
//!
//! The harness owns the machine and a virtual clock; `step` feeds an input at
//! the current virtual time and returns every output it produced; `advance`
//! moves the clock, firing any timer that falls due on the way.

use telecart_cart::Timestamp;
use telecart_cart::machine::*;

const URI: &str = "sip:nurse-station@hospital.example";

struct Cart {
    m: CartMachine,
    now: Timestamp,
}

impl Cart {
    fn new() -> Self {
        Self::with(MachineConfig {
            outgoing_uri: Some(URI.into()),
            ..MachineConfig::default()
        })
    }

    fn with(config: MachineConfig) -> Self {
        let mut c = Cart {
            m: CartMachine::new(config),
            now: Timestamp(1_700_000_000_000),
        };
        c.drain();
        c
    }

    /// Booted, online, idle.
    fn ready() -> Self {
        let mut c = Self::new();
        c.step(Input::BootComplete);
        c.step(Input::NetworkUp);
        assert_eq!(c.m.state(), CartState::Ready);
        c
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.m.poll_output()).collect()
    }

    fn step(&mut self, input: Input) -> Vec<Output> {
        self.m.handle_input(self.now, input);
        self.drain()
    }

    fn advance(&mut self, ms: u64) -> Vec<Output> {
        let end = self.now.plus_ms(ms);
        let mut out = Vec::new();
        while let Some((due, _)) = self.m.poll_timeout() {
            if due > end {
                break;
            }
            self.now = due;
            self.m.handle_timeout(due);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }

    fn ring(&mut self, id: u64, auto_answer: bool) -> Vec<Output> {
        self.step(Input::IncomingCall {
            call: CallId(id),
            caller: "dr.lee@tele.example".into(),
            auto_answer,
        })
    }

    fn privacy(&mut self, on: bool) -> Vec<Output> {
        self.step(Input::Privacy {
            on,
            by: Actor::PrivacySwitch,
        })
    }
}

fn actions(out: &[Output]) -> Vec<Action> {
    out.iter()
        .filter_map(|o| match o {
            Output::Action(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn audits(out: &[Output]) -> Vec<AuditEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Audit(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn indications(out: &[Output]) -> Vec<Indication> {
    out.iter()
        .filter_map(|o| match o {
            Output::Indication(i) => Some(*i),
            _ => None,
        })
        .collect()
}

const SHORT: Input = Input::CallButton {
    press: Press::Short,
};
const LONG: Input = Input::CallButton { press: Press::Long };

#[test]
fn starts_booting_with_the_booting_pattern() {
    let mut m = CartMachine::new(MachineConfig::default());
    let first = m.poll_output();
    assert_eq!(
        first,
        Some(Output::Indication(Indication {
            state: CartState::Booting,
            led: CartState::Booting.led(),
            privacy: false,
            battery_low: false,
        }))
    );
    assert_eq!(m.poll_output(), None);
}

#[test]
fn boot_complete_with_network_is_ready() {
    let mut c = Cart::new();
    c.step(Input::NetworkUp);
    let out = c.step(Input::BootComplete);
    assert_eq!(indications(&out)[0].state, CartState::Ready);
    assert_eq!(indications(&out)[0].led, CartState::Ready.led());
}

#[test]
fn boot_complete_without_network_is_offline() {
    let mut c = Cart::new();
    c.step(Input::BootComplete);
    assert_eq!(c.m.state(), CartState::Offline);
}

#[test]
fn buttons_do_nothing_while_booting() {
    let mut c = Cart::new();
    c.step(Input::NetworkUp);
    let out = c.step(SHORT);
    assert!(actions(&out).is_empty());
    assert!(out.contains(&Output::Notice(Notice::ButtonIgnored {
        state: CartState::Booting
    })));
}

#[test]
fn short_press_places_the_configured_call() {
    let mut c = Cart::ready();
    let out = c.step(SHORT);
    assert_eq!(actions(&out), vec![Action::PlaceCall { uri: URI.into() }]);
    assert_eq!(c.m.state(), CartState::InCall);
    let a = audits(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].who, Actor::CallButton);
    assert_eq!(a[0].at, c.now);
}

#[test]
fn short_press_offline_places_no_call() {
    let mut c = Cart::ready();
    c.step(Input::NetworkDown);
    let out = c.step(SHORT);
    assert!(actions(&out).is_empty());
    assert!(out.contains(&Output::Notice(Notice::CannotCallOffline)));
    assert_eq!(c.m.state(), CartState::Offline);
}

#[test]
fn short_press_without_outgoing_uri_is_a_notice() {
    let mut c = Cart::with(MachineConfig::default());
    c.step(Input::BootComplete);
    c.step(Input::NetworkUp);
    let out = c.step(SHORT);
    assert!(actions(&out).is_empty());
    assert!(out.contains(&Output::Notice(Notice::NoOutgoingUri)));
}

#[test]
fn the_far_end_answering_keeps_in_call_and_ending_returns_to_ready() {
    let mut c = Cart::ready();
    c.step(SHORT);
    c.step(Input::CallConnected { call: CallId(9) });
    assert_eq!(c.m.state(), CartState::InCall);
    c.step(Input::CallEnded { call: CallId(9) });
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn long_press_hangs_up() {
    let mut c = Cart::ready();
    c.step(SHORT);
    c.step(Input::CallConnected { call: CallId(9) });
    let out = c.step(LONG);
    assert_eq!(
        actions(&out),
        vec![Action::HangUp {
            call: Some(CallId(9))
        }]
    );
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn hang_up_button_cancels_an_outgoing_call_not_yet_answered() {
    let mut c = Cart::ready();
    c.step(SHORT);
    let out = c.step(Input::HangUpButton);
    assert_eq!(actions(&out), vec![Action::HangUp { call: None }]);
    assert_eq!(audits(&out)[0].who, Actor::HangUpButton);
}

#[test]
fn long_press_when_idle_does_nothing() {
    let mut c = Cart::ready();
    let out = c.step(LONG);
    assert!(actions(&out).is_empty());
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn incoming_call_with_auto_answer_is_answered_at_once() {
    let mut c = Cart::ready();
    let out = c.ring(5, true);
    assert_eq!(actions(&out), vec![Action::Answer { call: CallId(5) }]);
    assert_eq!(c.m.state(), CartState::InCall);
    assert_eq!(audits(&out)[0].who, Actor::Policy);
}

#[test]
fn incoming_call_without_auto_answer_rings_until_the_button() {
    let mut c = Cart::ready();
    let out = c.ring(5, false);
    assert!(actions(&out).is_empty());
    assert_eq!(c.m.state(), CartState::Ringing);
    assert_eq!(indications(&out)[0].led, CartState::Ringing.led());
    c.advance(3_000);
    let out = c.step(SHORT);
    assert_eq!(actions(&out), vec![Action::Answer { call: CallId(5) }]);
    assert_eq!(c.m.state(), CartState::InCall);
}

#[test]
fn unanswered_call_is_rejected_at_the_ring_timeout() {
    let mut c = Cart::ready();
    c.ring(5, false);
    assert!(actions(&c.advance(59_999)).is_empty());
    let out = c.advance(1);
    assert_eq!(
        actions(&out),
        vec![Action::Reject {
            call: CallId(5),
            reason: RejectReason::NoAnswer
        }]
    );
    assert_eq!(c.m.state(), CartState::Ready);
    assert_eq!(c.m.poll_timeout(), None);
}

#[test]
fn hang_up_button_declines_a_ringing_call() {
    let mut c = Cart::ready();
    c.ring(5, false);
    let out = c.step(Input::HangUpButton);
    assert_eq!(
        actions(&out),
        vec![Action::Reject {
            call: CallId(5),
            reason: RejectReason::Declined
        }]
    );
}

#[test]
fn caller_hanging_up_while_ringing_stops_the_ringing() {
    let mut c = Cart::ready();
    c.ring(5, false);
    c.step(Input::CallEnded { call: CallId(5) });
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn a_second_call_during_a_call_gets_busy() {
    let mut c = Cart::ready();
    c.ring(5, true);
    let out = c.ring(6, true);
    assert_eq!(
        actions(&out),
        vec![Action::Reject {
            call: CallId(6),
            reason: RejectReason::Busy
        }]
    );
    // The busy call's end does not end ours.
    c.step(Input::CallEnded { call: CallId(6) });
    assert_eq!(c.m.state(), CartState::InCall);
}

#[test]
fn calls_during_boot_or_update_are_turned_away() {
    let mut c = Cart::new();
    let out = c.ring(1, true);
    assert!(actions(&out).contains(&Action::Reject {
        call: CallId(1),
        reason: RejectReason::Unavailable
    }));
    let mut c = Cart::ready();
    c.step(Input::UpdateStarted);
    let out = c.ring(2, true);
    assert!(actions(&out).contains(&Action::Reject {
        call: CallId(2),
        reason: RejectReason::Unavailable
    }));
}

#[test]
fn privacy_on_mutes_and_suppresses_auto_answer() {
    let mut c = Cart::ready();
    let out = c.privacy(true);
    assert_eq!(
        actions(&out),
        vec![
            Action::MuteCameraAndMic,
            Action::SuppressAutoAnswer { suppressed: true }
        ]
    );
    assert_eq!(c.m.state(), CartState::Privacy);
    assert_eq!(
        indications(&out),
        vec![Indication {
            state: CartState::Privacy,
            led: CartState::Privacy.led(),
            privacy: true,
            battery_low: false
        }]
    );
}

#[test]
fn privacy_off_unmutes() {
    let mut c = Cart::ready();
    c.privacy(true);
    let out = c.privacy(false);
    assert_eq!(
        actions(&out),
        vec![
            Action::Unmute,
            Action::SuppressAutoAnswer { suppressed: false }
        ]
    );
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn every_privacy_toggle_is_audited_with_who_and_when() {
    let mut c = Cart::ready();
    let t0 = c.now;
    let on = c.privacy(true);
    c.advance(90_000);
    let off = c.step(Input::Privacy {
        on: false,
        by: Actor::Console {
            user: "nurse.kim".into(),
        },
    });
    assert_eq!(
        audits(&on),
        vec![AuditEvent {
            at: t0,
            who: Actor::PrivacySwitch,
            what: AuditAction::PrivacyOn
        }]
    );
    assert_eq!(
        audits(&off),
        vec![AuditEvent {
            at: t0.plus_ms(90_000),
            who: Actor::Console {
                user: "nurse.kim".into()
            },
            what: AuditAction::PrivacyOff
        }]
    );
}

#[test]
fn repeating_the_same_privacy_setting_is_not_a_toggle() {
    let mut c = Cart::ready();
    c.privacy(true);
    let out = c.privacy(true);
    assert!(out.is_empty());
}

#[test]
fn privacy_turns_auto_answer_into_ringing() {
    let mut c = Cart::ready();
    c.privacy(true);
    let out = c.ring(5, true);
    assert!(actions(&out).is_empty());
    assert!(out.contains(&Output::Notice(Notice::AutoAnswerSuppressed {
        call: CallId(5)
    })));
    assert_eq!(c.m.state(), CartState::Ringing);
    assert!(c.m.indication().privacy);
}

#[test]
fn privacy_during_a_call_keeps_the_call_and_mutes() {
    let mut c = Cart::ready();
    c.ring(5, true);
    let out = c.privacy(true);
    assert!(actions(&out).contains(&Action::MuteCameraAndMic));
    assert!(
        !actions(&out)
            .iter()
            .any(|a| matches!(a, Action::HangUp { .. }))
    );
    assert_eq!(c.m.state(), CartState::Privacy);
    c.privacy(false);
    assert_eq!(c.m.state(), CartState::InCall);
}

#[test]
fn privacy_works_while_booting() {
    let mut c = Cart::new();
    let out = c.privacy(true);
    assert!(actions(&out).contains(&Action::MuteCameraAndMic));
    assert_eq!(audits(&out).len(), 1);
    c.step(Input::NetworkUp);
    c.step(Input::BootComplete);
    assert_eq!(c.m.state(), CartState::Privacy);
}

#[test]
fn network_loss_shows_offline_and_recovery_shows_ready() {
    let mut c = Cart::ready();
    let out = c.step(Input::NetworkDown);
    assert_eq!(indications(&out)[0].state, CartState::Offline);
    let out = c.step(Input::NetworkUp);
    assert_eq!(indications(&out)[0].state, CartState::Ready);
}

#[test]
fn syncing_shows_while_idle_and_yields_to_a_call() {
    let mut c = Cart::ready();
    c.step(Input::SyncStarted);
    assert_eq!(c.m.state(), CartState::Syncing);
    c.ring(5, true);
    assert_eq!(c.m.state(), CartState::InCall);
    c.step(Input::CallEnded { call: CallId(5) });
    assert_eq!(c.m.state(), CartState::Syncing);
    c.step(Input::SyncFinished);
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn updating_shows_and_blocks_the_call_button() {
    let mut c = Cart::ready();
    c.step(Input::UpdateStarted);
    assert_eq!(c.m.state(), CartState::Updating);
    let out = c.step(SHORT);
    assert!(actions(&out).is_empty());
    c.step(Input::UpdateFinished);
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn fault_shows_until_every_fault_clears() {
    let mut c = Cart::ready();
    c.step(Input::FaultRaised {
        fault: "camera-missing".into(),
    });
    c.step(Input::FaultRaised {
        fault: "storage-full".into(),
    });
    assert_eq!(c.m.state(), CartState::Fault);
    assert_eq!(c.m.indication().led, CartState::Fault.led());
    c.step(Input::FaultCleared {
        fault: "camera-missing".into(),
    });
    assert_eq!(c.m.state(), CartState::Fault);
    c.step(Input::FaultCleared {
        fault: "storage-full".into(),
    });
    assert_eq!(c.m.state(), CartState::Ready);
}

#[test]
fn a_fault_still_lets_an_incoming_call_be_answered() {
    let mut c = Cart::ready();
    c.step(Input::FaultRaised {
        fault: "speaker-missing".into(),
    });
    let out = c.ring(5, true);
    assert_eq!(actions(&out), vec![Action::Answer { call: CallId(5) }]);
}

#[test]
fn a_fault_does_not_block_the_call_button() {
    let mut c = Cart::ready();
    c.step(Input::FaultRaised {
        fault: "speaker-missing".into(),
    });
    let out = c.step(SHORT);
    assert_eq!(actions(&out), vec![Action::PlaceCall { uri: URI.into() }]);
    assert_eq!(c.m.state(), CartState::Fault, "the fault stays shown");
}

#[test]
fn low_battery_sets_the_warning_until_charging() {
    let mut c = Cart::ready();
    let out = c.step(Input::Battery {
        percent: 40,
        charging: false,
    });
    assert!(out.is_empty(), "no change, no indication");
    let out = c.step(Input::Battery {
        percent: 15,
        charging: false,
    });
    assert!(indications(&out)[0].battery_low);
    let out = c.step(Input::Battery {
        percent: 15,
        charging: true,
    });
    assert!(!indications(&out)[0].battery_low);
}

#[test]
fn indication_is_emitted_only_on_change() {
    let mut c = Cart::ready();
    let out = c.step(Input::NetworkUp);
    assert!(out.is_empty());
}

#[test]
fn state_names_match_the_data_channel() {
    let names: Vec<_> = [
        CartState::Booting,
        CartState::Ready,
        CartState::Ringing,
        CartState::InCall,
        CartState::Privacy,
        CartState::Offline,
        CartState::Syncing,
        CartState::Updating,
        CartState::Fault,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        names,
        [
            "booting", "ready", "ringing", "in_call", "privacy", "offline", "syncing", "updating",
            "fault"
        ]
    );
}

#[test]
fn the_far_end_is_told_the_state_and_privacy() {
    let mut c = Cart::ready();
    c.ring(5, true);
    let out = c.privacy(true);
    let msg = indications(&out)[0].status_message();
    assert_eq!(
        msg,
        telecart_webrtc::datachannel::Message::Status {
            state: "privacy".into(),
            privacy: true
        }
    );
}

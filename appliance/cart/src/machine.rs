//! The cart's state machine: what the nurse sees and what the buttons do.
//!
//! Sans-IO and clock-free, in the style of str0m: every call takes `now`;
//! [`CartMachine::handle_input`] queues outputs, [`CartMachine::poll_output`]
//! drains them, and [`CartMachine::poll_timeout`] says when (and why) to call
//! [`CartMachine::handle_timeout`]. Poll outputs again after every
//! `handle_input` and `handle_timeout`; nothing else queues any.
//!
//! The shown state is one of nine ([`CartState`]) and is derived from the
//! facts the machine tracks, highest priority first: fault, updating,
//! booting, ringing, privacy, in call, offline, syncing, ready. The privacy
//! flag is also reported on its own (see [`Indication::privacy`]) so the
//! console can show "in call, privacy on".

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use serde::Serialize;

use crate::Timestamp;

/// The state shown on the LEDs and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CartState {
    /// Starting up; buttons do nothing yet.
    Booting,
    /// Idle and reachable: one press places the call.
    Ready,
    /// An incoming call waits to be answered.
    Ringing,
    /// A call is being placed or is up.
    InCall,
    /// The privacy switch is on: camera and microphone are off.
    Privacy,
    /// The network is down; calls cannot be placed.
    Offline,
    /// Session logs are being uploaded.
    Syncing,
    /// A firmware update is being written.
    Updating,
    /// Something needs a technician.
    Fault,
}

impl CartState {
    /// The name used on the data channel (`Status.state`) and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            CartState::Booting => "booting",
            CartState::Ready => "ready",
            CartState::Ringing => "ringing",
            CartState::InCall => "in_call",
            CartState::Privacy => "privacy",
            CartState::Offline => "offline",
            CartState::Syncing => "syncing",
            CartState::Updating => "updating",
            CartState::Fault => "fault",
        }
    }

    /// The LED pattern for this state.
    pub fn led(self) -> LedPattern {
        let (color, blink) = match self {
            CartState::Booting => (LedColor::White, Blink::Slow),
            CartState::Ready => (LedColor::Green, Blink::Solid),
            CartState::Ringing => (LedColor::Green, Blink::Fast),
            CartState::InCall => (LedColor::Blue, Blink::Solid),
            CartState::Privacy => (LedColor::Amber, Blink::Solid),
            CartState::Offline => (LedColor::Red, Blink::Slow),
            CartState::Syncing => (LedColor::Cyan, Blink::Slow),
            CartState::Updating => (LedColor::White, Blink::Fast),
            CartState::Fault => (LedColor::Red, Blink::Fast),
        };
        LedPattern { color, blink }
    }
}

impl fmt::Display for CartState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Colour of the status LED (an RGB LED or a ring; amber is red + green).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedColor {
    /// Red only.
    Red,
    /// Green only.
    Green,
    /// Blue only.
    Blue,
    /// Red and green.
    Amber,
    /// Green and blue.
    Cyan,
    /// All three.
    White,
}

/// How the status LED blinks; the board turns this into timed steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blink {
    /// Dark.
    Off,
    /// Steadily on.
    Solid,
    /// One second on, one second off.
    Slow,
    /// A quarter second on, a quarter second off.
    Fast,
}

/// What the status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LedPattern {
    /// Colour while lit.
    pub color: LedColor,
    /// Timing.
    pub blink: Blink,
}

/// Everything the LEDs and the console show; emitted whenever any part changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Indication {
    /// The shown state.
    pub state: CartState,
    /// Its LED pattern.
    pub led: LedPattern,
    /// Privacy switch on (also while the state shows something more urgent).
    pub privacy: bool,
    /// Battery low and not charging: the board overlays its warning flash.
    pub battery_low: bool,
}

impl Indication {
    /// The data-channel `status` message the far end gets when this changes.
    pub fn status_message(&self) -> telecart_webrtc::datachannel::Message {
        telecart_webrtc::datachannel::Message::Status {
            state: self.state.as_str().to_string(),
            privacy: self.privacy,
        }
    }
}

/// How long the call button was held (decided by the board's long-press detector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Press {
    /// Released before the long-press time: call or answer.
    Short,
    /// Held past the long-press time: hang up.
    Long,
}

/// A call, numbered by the call layer (SIP or WebRTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// Who or what caused something worth auditing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Actor {
    /// The physical privacy switch.
    PrivacySwitch,
    /// The call button.
    CallButton,
    /// The hang-up button.
    HangUpButton,
    /// A signed-in user of the local console page.
    Console {
        /// The console user.
        user: String,
    },
    /// The keyboard of the simulated board.
    Keyboard,
    /// The far end of a call.
    Caller {
        /// Caller identity as the call layer gave it.
        caller: String,
    },
    /// The cart's own policy (auto-answer, ring timeout, busy).
    Policy,
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "input")]
pub enum Input {
    /// Start-up finished (config loaded, devices opened).
    BootComplete,
    /// The call button was pressed and released (or held).
    CallButton {
        /// Short or long.
        press: Press,
    },
    /// The hang-up button was pressed.
    HangUpButton,
    /// The privacy switch (or the console, or the keyboard) set privacy.
    Privacy {
        /// Privacy on.
        on: bool,
        /// Who set it.
        by: Actor,
    },
    /// The network came up.
    NetworkUp,
    /// The network went down.
    NetworkDown,
    /// A call came in; `auto_answer` is the caller policy's verdict.
    IncomingCall {
        /// Its id.
        call: CallId,
        /// Caller identity.
        caller: String,
        /// The auto-answer policy allows answering without a button press.
        auto_answer: bool,
    },
    /// A call is up (the far end answered our call, or our answer completed).
    CallConnected {
        /// Its id.
        call: CallId,
    },
    /// A call ended, for any reason, from either side.
    CallEnded {
        /// Its id.
        call: CallId,
    },
    /// A log upload started.
    SyncStarted,
    /// The log upload finished (or gave up until later).
    SyncFinished,
    /// A firmware update started writing.
    UpdateStarted,
    /// The firmware update finished, failed or was abandoned.
    UpdateFinished,
    /// A fault appeared (such as `camera-missing`); faults are kept by name.
    FaultRaised {
        /// Fault name.
        fault: String,
    },
    /// A fault went away.
    FaultCleared {
        /// Fault name.
        fault: String,
    },
    /// A battery reading.
    Battery {
        /// State of charge, 0 to 100.
        percent: u8,
        /// On mains power and charging.
        charging: bool,
    },
}

/// Why the cart turned a call away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Already in a call or ringing.
    Busy,
    /// Booting or updating.
    Unavailable,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// Declined with the hang-up button.
    Declined,
}

/// What the cart must do; the runtime carries these out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Place the configured outgoing call.
    PlaceCall {
        /// The configured URI (SIP or WHIP).
        uri: String,
    },
    /// Answer a ringing call.
    Answer {
        /// Which.
        call: CallId,
    },
    /// Turn a call away.
    Reject {
        /// Which.
        call: CallId,
        /// Why.
        reason: RejectReason,
    },
    /// Hang up the current call (`None`: the outgoing call not yet numbered).
    HangUp {
        /// Which.
        call: Option<CallId>,
    },
    /// Privacy on: camera frames become the slate, the microphone is muted.
    MuteCameraAndMic,
    /// Privacy off: camera and microphone flow again.
    Unmute,
    /// Tell the call layers whether auto-answer is suppressed (it is while privacy is on).
    SuppressAutoAnswer {
        /// Suppressed.
        suppressed: bool,
    },
}

/// What an audit record says happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum AuditAction {
    /// Privacy turned on.
    PrivacyOn,
    /// Privacy turned off.
    PrivacyOff,
    /// The cart placed a call.
    CallPlaced {
        /// To whom.
        uri: String,
    },
    /// The cart answered a call.
    CallAnswered {
        /// Which.
        call: CallId,
        /// From whom.
        caller: String,
    },
    /// The cart turned a call away.
    CallRejected {
        /// Which.
        call: CallId,
        /// From whom.
        caller: String,
        /// Why.
        reason: RejectReason,
    },
    /// The cart hung up.
    CallHungUp {
        /// Which (if numbered yet).
        call: Option<CallId>,
    },
}

/// One audit-trail record: who, what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// When (the `now` passed with the input).
    pub at: Timestamp,
    /// Who or what caused it.
    pub who: Actor,
    /// What happened.
    pub what: AuditAction,
}

/// Something the cart declined to do, for the console and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "notice")]
pub enum Notice {
    /// A button press did nothing because of the state.
    ButtonIgnored {
        /// The state at the time.
        state: CartState,
    },
    /// The call button cannot place a call: offline.
    CannotCallOffline,
    /// The call button cannot place a call: no outgoing URI configured.
    NoOutgoingUri,
    /// A call would have been auto-answered but privacy is on; it rings instead.
    AutoAnswerSuppressed {
        /// Which.
        call: CallId,
    },
}

/// What the machine produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "output")]
pub enum Output {
    /// The LEDs and console must show this.
    Indication(Indication),
    /// Do this.
    Action(Action),
    /// Record this in the audit trail.
    Audit(AuditEvent),
    /// Tell the console and the log.
    Notice(Notice),
}

/// Why the machine wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutReason {
    /// An unanswered call has rung for the ring timeout.
    RingTimeout,
}

/// Policy the machine needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// What the call button dials; `None` makes the button only answer.
    pub outgoing_uri: Option<String>,
    /// How long an unanswered call rings before it is turned away (milliseconds).
    pub ring_timeout_ms: u64,
    /// At or below this charge (and not charging) the battery counts as low.
    pub low_battery_percent: u8,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            outgoing_uri: None,
            ring_timeout_ms: 60_000,
            low_battery_percent: 15,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Idle,
    Ringing {
        call: CallId,
        caller: String,
        since: Timestamp,
    },
    Dialing {
        call: Option<CallId>,
    },
    Active {
        call: CallId,
    },
}

/// The cart's state machine. See the [module docs](self).
#[derive(Debug)]
pub struct CartMachine {
    config: MachineConfig,
    booting: bool,
    network_up: bool,
    privacy: bool,
    syncing: bool,
    updating: bool,
    faults: BTreeSet<String>,
    battery_low: bool,
    call: Call,
    shown: Option<Indication>,
    out: VecDeque<Output>,
}

impl CartMachine {
    /// A machine in `booting`, network down, privacy off. Its first output is the booting indication.
    pub fn new(config: MachineConfig) -> Self {
        let mut m = Self {
            config,
            booting: true,
            network_up: false,
            privacy: false,
            syncing: false,
            updating: false,
            faults: BTreeSet::new(),
            battery_low: false,
            call: Call::Idle,
            shown: None,
            out: VecDeque::new(),
        };
        m.refresh();
        m
    }

    /// The state shown now.
    pub fn state(&self) -> CartState {
        if !self.faults.is_empty() {
            CartState::Fault
        } else if self.updating {
            CartState::Updating
        } else if self.booting {
            CartState::Booting
        } else if matches!(self.call, Call::Ringing { .. }) {
            CartState::Ringing
        } else if self.privacy {
            CartState::Privacy
        } else if matches!(self.call, Call::Dialing { .. } | Call::Active { .. }) {
            CartState::InCall
        } else if !self.network_up {
            CartState::Offline
        } else if self.syncing {
            CartState::Syncing
        } else {
            CartState::Ready
        }
    }

    /// Everything shown now.
    pub fn indication(&self) -> Indication {
        let state = self.state();
        Indication {
            state,
            led: state.led(),
            privacy: self.privacy,
            battery_low: self.battery_low,
        }
    }

    /// Privacy is on.
    pub fn privacy(&self) -> bool {
        self.privacy
    }

    /// Where the call stands, whatever the display state shows over it:
    /// `idle`, `dialing`, `ringing` or `active`.
    pub fn call_phase(&self) -> &'static str {
        match self.call {
            Call::Idle => "idle",
            Call::Dialing { .. } => "dialing",
            Call::Ringing { .. } => "ringing",
            Call::Active { .. } => "active",
        }
    }

    /// Active faults, by name.
    pub fn faults(&self) -> impl Iterator<Item = &str> {
        self.faults.iter().map(String::as_str)
    }

    /// The next output, if any. Worth calling again after every `handle_*`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout), and why; `None`: no timer.
    pub fn poll_timeout(&self) -> Option<(Timestamp, TimeoutReason)> {
        match &self.call {
            Call::Ringing { since, .. } => Some((
                since.plus_ms(self.config.ring_timeout_ms),
                TimeoutReason::RingTimeout,
            )),
            _ => None,
        }
    }

    /// Time passed; acts on every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if let Some((due, TimeoutReason::RingTimeout)) = self.poll_timeout()
            && now >= due
            && let Call::Ringing { call, caller, .. } =
                std::mem::replace(&mut self.call, Call::Idle)
        {
            self.reject(now, call, caller, RejectReason::NoAnswer, Actor::Policy);
        }
        self.refresh();
    }

    /// Feeds one input that happened at `now`.
    pub fn handle_input(&mut self, now: Timestamp, input: Input) {
        match input {
            Input::BootComplete => self.booting = false,
            Input::CallButton {
                press: Press::Short,
            } => self.call_button(now),
            Input::CallButton { press: Press::Long } => self.hang_up(now, Actor::CallButton),
            Input::HangUpButton => self.hang_up(now, Actor::HangUpButton),
            Input::Privacy { on, by } => self.set_privacy(now, on, by),
            Input::NetworkUp => self.network_up = true,
            Input::NetworkDown => self.network_up = false,
            Input::IncomingCall {
                call,
                caller,
                auto_answer,
            } => self.incoming(now, call, caller, auto_answer),
            Input::CallConnected { call } => match &self.call {
                Call::Dialing { call: None } => self.call = Call::Active { call },
                Call::Dialing { call: Some(c) } | Call::Ringing { call: c, .. } if *c == call => {
                    self.call = Call::Active { call }
                }
                _ => {}
            },
            Input::CallEnded { call } => {
                let ours = match &self.call {
                    Call::Idle => false,
                    Call::Dialing { call: None } => true,
                    Call::Dialing { call: Some(c) }
                    | Call::Ringing { call: c, .. }
                    | Call::Active { call: c } => *c == call,
                };
                if ours {
                    self.call = Call::Idle;
                }
            }
            Input::SyncStarted => self.syncing = true,
            Input::SyncFinished => self.syncing = false,
            Input::UpdateStarted => self.updating = true,
            Input::UpdateFinished => self.updating = false,
            Input::FaultRaised { fault } => {
                self.faults.insert(fault);
            }
            Input::FaultCleared { fault } => {
                self.faults.remove(&fault);
            }
            Input::Battery { percent, charging } => {
                self.battery_low = !charging && percent <= self.config.low_battery_percent;
            }
        }
        self.refresh();
    }

    fn call_button(&mut self, now: Timestamp) {
        match std::mem::replace(&mut self.call, Call::Idle) {
            Call::Ringing { call, caller, .. } if !self.booting && !self.updating => {
                self.answer(now, call, caller, Actor::CallButton);
            }
            // A fault does not block calling: a nurse with a broken speaker still needs the
            // specialist, and the fault stays on the LED for the technician.
            Call::Idle if !self.booting && !self.updating => {
                if !self.network_up {
                    self.notice(Notice::CannotCallOffline);
                } else if let Some(uri) = self.config.outgoing_uri.clone() {
                    self.action(Action::PlaceCall { uri: uri.clone() });
                    self.audit(now, Actor::CallButton, AuditAction::CallPlaced { uri });
                    self.call = Call::Dialing { call: None };
                } else {
                    self.notice(Notice::NoOutgoingUri);
                }
            }
            other => {
                self.call = other;
                let state = self.state();
                self.notice(Notice::ButtonIgnored { state });
            }
        }
    }

    fn hang_up(&mut self, now: Timestamp, by: Actor) {
        match std::mem::replace(&mut self.call, Call::Idle) {
            Call::Ringing { call, caller, .. } => {
                self.reject(now, call, caller, RejectReason::Declined, by);
            }
            Call::Dialing { call } => self.hang_up_call(now, call, by),
            Call::Active { call } => self.hang_up_call(now, Some(call), by),
            Call::Idle => {
                let state = self.state();
                self.notice(Notice::ButtonIgnored { state });
            }
        }
    }

    fn hang_up_call(&mut self, now: Timestamp, call: Option<CallId>, by: Actor) {
        self.action(Action::HangUp { call });
        self.audit(now, by, AuditAction::CallHungUp { call });
    }

    fn set_privacy(&mut self, now: Timestamp, on: bool, by: Actor) {
        if on == self.privacy {
            return;
        }
        self.privacy = on;
        if on {
            self.action(Action::MuteCameraAndMic);
        } else {
            self.action(Action::Unmute);
        }
        self.action(Action::SuppressAutoAnswer { suppressed: on });
        let what = if on {
            AuditAction::PrivacyOn
        } else {
            AuditAction::PrivacyOff
        };
        self.audit(now, by, what);
    }

    fn incoming(&mut self, now: Timestamp, call: CallId, caller: String, auto_answer: bool) {
        if self.booting || self.updating {
            self.reject(now, call, caller, RejectReason::Unavailable, Actor::Policy);
            return;
        }
        if self.call != Call::Idle {
            self.reject(now, call, caller, RejectReason::Busy, Actor::Policy);
            return;
        }
        if auto_answer && !self.privacy {
            self.answer(now, call, caller, Actor::Policy);
            return;
        }
        if auto_answer {
            self.notice(Notice::AutoAnswerSuppressed { call });
        }
        self.call = Call::Ringing {
            call,
            caller,
            since: now,
        };
    }

    fn answer(&mut self, now: Timestamp, call: CallId, caller: String, by: Actor) {
        self.action(Action::Answer { call });
        self.audit(now, by, AuditAction::CallAnswered { call, caller });
        self.call = Call::Active { call };
    }

    fn reject(
        &mut self,
        now: Timestamp,
        call: CallId,
        caller: String,
        reason: RejectReason,
        by: Actor,
    ) {
        self.action(Action::Reject { call, reason });
        self.audit(
            now,
            by,
            AuditAction::CallRejected {
                call,
                caller,
                reason,
            },
        );
    }

    fn action(&mut self, a: Action) {
        self.out.push_back(Output::Action(a));
    }

    fn notice(&mut self, n: Notice) {
        self.out.push_back(Output::Notice(n));
    }

    fn audit(&mut self, at: Timestamp, who: Actor, what: AuditAction) {
        self.out
            .push_back(Output::Audit(AuditEvent { at, who, what }));
    }

    fn refresh(&mut self) {
        let now = self.indication();
        if self.shown != Some(now) {
            self.shown = Some(now);
            self.out.push_back(Output::Indication(now));
        }
    }
}

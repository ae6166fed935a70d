//! The cart controller: the board's buttons, privacy switch, LEDs and battery,
//! the cart's state machine, and what the machine's actions touch (privacy
//! gate, calls, audit trail, far-end camera control).
//!
//! One plain thread owns the board, the [`Panel`] and the [`CartMachine`]: it
//! samples the inputs every `board.poll_interval_ms` (the board's timing code
//! runs on embassy-time's std driver here, and on an MCU's driver elsewhere),
//! and wakes at once for events from the console, the call layers and the data
//! channel. Privacy takes effect on the capture threads' next frame: the
//! controller flips the [`PrivacySwitch`] their gates read, so a switch moved
//! mid-frame is on the slate one frame period later at worst (debounce 20 ms,
//! sampling 5 ms).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use telecart_board::battery::BatteryStatus;
use telecart_board::led::Rgb;
use telecart_board::panel::{Board, Panel, battery_input};
use telecart_board::sim::{SimButton, SimEvent, SimHandle};
use telecart_cart::Timestamp;
use telecart_cart::machine::{
    Action, Actor, AuditEvent, CallId, CartMachine, CartState, Indication, Input, Notice, Output,
    Press, RejectReason,
};
use telecart_cart::privacy::PrivacySwitch;
use telecart_cart::ptz::{AxisLimits, PtzController, PtzLimits, PtzPosition};
use telecart_core::config::{BoardConfig, BoardKind};
use telecart_devices::{CameraControl, CameraControls};
use telecart_sip::SipCommand;
use telecart_webrtc::datachannel::Message;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::SessionLog;
use crate::webrtc::call::Calls;

/// Notices kept for the console.
const KEEP_NOTICES: usize = 10;
/// How often the controller checks for a route off the cart.
const NETWORK_PROBE: Duration = Duration::from_secs(5);

/// What the console shows of the cart.
#[derive(Debug, Clone, Serialize)]
pub struct CartView {
    /// Which board.
    pub board: BoardKind,
    /// The board could not be opened and the cart runs on the simulated one; why.
    pub board_error: Option<String>,
    /// The state machine's state (what the LED shows).
    pub state: CartState,
    /// The call under it: `idle`, `dialing`, `ringing` or `active`.
    pub call: &'static str,
    /// What the LEDs and console show.
    pub indication: Indication,
    /// The status LED's colour now.
    pub leds: Rgb,
    /// Privacy on: camera frames are the slate, the microphone is muted.
    pub privacy: bool,
    /// Auto-answer is suppressed (privacy is on).
    pub auto_answer_suppressed: bool,
    /// The battery.
    pub battery: BatteryStatus,
    /// Faults by name.
    pub faults: Vec<String>,
    /// Recent notices (buttons ignored, calls refused), newest last.
    pub notices: VecDeque<String>,
    /// Far-end camera commands refused for flooding.
    pub ptz_dropped: u64,
    /// The last far-end camera command refused, and why.
    pub ptz_error: Option<String>,
}

/// A console or keyboard button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleButton {
    /// The call button.
    Call,
    /// The hang-up button.
    HangUp,
}

enum Event {
    Machine(Input),
    Sim(SimEvent),
    Incoming {
        call: CallId,
        caller: String,
        auto_answer: bool,
        reply: VerdictReply,
    },
    Connected {
        call: CallId,
        console_id: String,
    },
    SipConnected {
        call: CallId,
    },
    Sip(tokio::sync::mpsc::Sender<SipCommand>),
    SipMute(bool),
    SipDtmf(char),
    Ended {
        call: CallId,
    },
    Remote(Message),
    Camera(CameraControls),
}

/// The running controller. See the [module docs](self).
pub struct CartController {
    events: Mutex<Sender<Event>>,
    view: Arc<Mutex<CartView>>,
    privacy: PrivacySwitch,
    simulated: bool,
    /// Call ids for every call layer (console, SIP), so none collide.
    next_call: Arc<AtomicU64>,
    log: Option<Arc<SessionLog>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for CartController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CartController")
            .field("view", &*lock(&self.view))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the controller's actions reach.
pub struct Wiring {
    /// Where answered and hung-up browser calls live.
    pub calls: Arc<Calls>,
    /// The audit trail.
    pub log: Option<Arc<SessionLog>>,
}

impl CartController {
    /// Opens the board `config` names (falling back to the simulated board,
    /// with a fault, when its GPIO cannot be opened) and starts the
    /// controller thread. Privacy is already applied when this returns if the
    /// switch is on at power-up, so no camera frame leaves before it.
    pub fn start(config: &BoardConfig, wiring: Wiring) -> anyhow::Result<Self> {
        let (board, sim, board_error) = match telecart_board::open_board(config) {
            Ok((board, sim)) => (board, sim, None),
            Err(e) => {
                warn!(error = %e, kind = %config.kind, "board unavailable: using the simulated board");
                let fallback = BoardConfig {
                    kind: BoardKind::Simulated,
                    ..config.clone()
                };
                let (board, sim) = telecart_board::open_board(&fallback)?;
                (board, sim, Some(e.to_string()))
            }
        };
        let mut machine = CartMachine::new(telecart_board::config::machine_config(config));
        let privacy = PrivacySwitch::new();
        let (tx, rx) = channel();
        let now = embassy_time::Instant::now();
        let mut board = board;
        let first = board.read_inputs(now).unwrap_or_default();
        let mut panel = Panel::new_at(now, config, &first, &machine.indication());
        let start = now;
        let stamp = move |t: embassy_time::Instant| Timestamp(t.duration_since(start).as_millis());
        for input in panel.initial_inputs() {
            machine.handle_input(stamp(now), input);
        }
        if let Some(e) = &board_error {
            machine.handle_input(
                stamp(now),
                Input::FaultRaised {
                    fault: "board-unavailable".into(),
                },
            );
            warn!(error = %e, "fault: board-unavailable");
        }
        let view = Arc::new(Mutex::new(CartView {
            board: board.kind(),
            board_error,
            state: machine.state(),
            call: machine.call_phase(),
            indication: machine.indication(),
            leds: panel.leds_at(now),
            privacy: machine.privacy(),
            auto_answer_suppressed: false,
            battery: BatteryStatus::NotFitted,
            faults: Vec::new(),
            notices: VecDeque::new(),
            ptz_dropped: 0,
            ptz_error: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let simulated = sim.is_some();
        let next_call = Arc::new(AtomicU64::new(1));
        let log = wiring.log.clone();
        let mut worker = Worker {
            config: config.clone(),
            board,
            panel,
            machine,
            sim,
            privacy: privacy.clone(),
            view: view.clone(),
            wiring,
            start,
            pending: BTreeMap::new(),
            verdicts: Vec::new(),
            console_calls: BTreeMap::new(),
            sip_calls: BTreeSet::new(),
            sip: None,
            ptz: None,
            camera: None,
            last_network: None,
        };
        // Outputs of the initial inputs (privacy on at power-up) before any frame.
        worker.drain(now);
        let thread = std::thread::Builder::new().name("cart".into()).spawn({
            let stop = stop.clone();
            move || worker.run(rx, &stop)
        })?;
        Ok(Self {
            events: Mutex::new(tx),
            view,
            privacy,
            simulated,
            next_call,
            log,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, event: Event) -> bool {
        lock(&self.events).send(event).is_ok()
    }

    /// The switch the pipeline's privacy gates read.
    pub fn privacy(&self) -> PrivacySwitch {
        self.privacy.clone()
    }

    /// A copy of what the console shows.
    pub fn view(&self) -> CartView {
        lock(&self.view).clone()
    }

    /// An input from elsewhere in the daemon (boot complete, sync, faults).
    pub fn input(&self, input: Input) {
        self.send(Event::Machine(input));
    }

    /// A console or keyboard button press (`long`: held past the long-press time).
    pub fn press(&self, button: ConsoleButton, long: bool) {
        if self.simulated {
            let button = match button {
                ConsoleButton::Call => SimButton::Call,
                ConsoleButton::HangUp => SimButton::HangUp,
            };
            let event = if long {
                SimEvent::LongPress { button }
            } else {
                SimEvent::Click { button }
            };
            self.send(Event::Sim(event));
        } else {
            let input = match (button, long) {
                (ConsoleButton::Call, false) => Input::CallButton {
                    press: Press::Short,
                },
                (ConsoleButton::Call, true) => Input::CallButton { press: Press::Long },
                (ConsoleButton::HangUp, _) => Input::HangUpButton,
            };
            self.send(Event::Machine(input));
        }
    }

    /// Privacy from the console or the keyboard. On the simulated board it
    /// moves the simulated switch; on a real one the console can only add to
    /// the physical switch (both are audited with who did it).
    pub fn set_privacy(&self, on: bool, by: Actor) {
        if self.simulated {
            self.send(Event::Sim(SimEvent::Privacy { on, by }));
        } else {
            self.send(Event::Machine(Input::Privacy { on, by }));
        }
    }

    /// A keyboard key of the demo (`c` call, `C` long press, `h` hang up, `p` privacy).
    pub fn key(&self, key: char) -> bool {
        match SimEvent::from_key(key) {
            Some(SimEvent::TogglePrivacy { by }) => {
                let on = !self.privacy.is_on();
                self.set_privacy(on, by);
                true
            }
            Some(SimEvent::Click { button }) | Some(SimEvent::LongPress { button }) => {
                let long = key == 'C';
                let button = match button {
                    SimButton::Call => ConsoleButton::Call,
                    SimButton::HangUp => ConsoleButton::HangUp,
                };
                self.press(button, long);
                true
            }
            _ => false,
        }
    }

    /// A call is coming in from `caller`: resolves when the machine answers
    /// (at once by policy, or when someone presses the call button while it
    /// rings) or turns it away.
    pub async fn ring(&self, caller: &str) -> Result<CallId, RejectReason> {
        // Callers on the console are let in by its access token: answered at
        // once unless privacy is on, when they ring until the call button.
        self.ring_call(caller, true).1.await
    }

    /// A call from another layer (SIP) is coming in: its id now (so it can
    /// be ended while it rings), and the machine's verdict when it comes.
    /// `auto_answer`: the layer's own policy would answer it unattended.
    pub fn ring_call(
        &self,
        caller: &str,
        auto_answer: bool,
    ) -> (
        CallId,
        impl std::future::Future<Output = Result<CallId, RejectReason>> + Send + 'static,
    ) {
        let call = self.new_call_id();
        let (reply, verdict) = oneshot::channel();
        let sent = self.send(Event::Incoming {
            call,
            caller: caller.to_string(),
            auto_answer,
            reply,
        });
        (call, async move {
            if !sent {
                return Err(RejectReason::Unavailable);
            }
            verdict.await.unwrap_or(Err(RejectReason::Unavailable))
        })
    }

    /// The session log calls are recorded in, if the cart has one.
    pub fn session_log(&self) -> Option<Arc<SessionLog>> {
        self.log.clone()
    }

    /// A fresh call id (the cart's own outgoing call, once answered).
    pub fn new_call_id(&self) -> CallId {
        CallId(self.next_call.fetch_add(1, Ordering::Relaxed))
    }

    /// A SIP call is up (answered here, or the far end answered ours): the
    /// hang-up button now ends it through the SIP endpoint.
    pub fn sip_connected(&self, call: CallId) {
        self.send(Event::SipConnected { call });
    }

    /// The running SIP endpoint: the call button dials through it and the
    /// hang-up button ends its calls.
    pub fn attach_sip(&self, commands: tokio::sync::mpsc::Sender<SipCommand>) {
        self.send(Event::Sip(commands));
    }

    /// Mutes or unmutes the microphone in the SIP call (`[sip] mute_on_answer` starts it
    /// muted; the nurse or the console unmutes it).
    pub fn mute_sip_call(&self, muted: bool) {
        self.send(Event::SipMute(muted));
    }

    /// Sends a DTMF key in the SIP call (RFC 4733, or SIP INFO on a WebRTC call).
    pub fn send_sip_dtmf(&self, digit: char) {
        self.send(Event::SipDtmf(digit));
    }

    /// The answered call is up, as console call `console_id`.
    pub fn connected(&self, call: CallId, console_id: &str) {
        self.send(Event::Connected {
            call,
            console_id: console_id.to_string(),
        });
    }

    /// The call ended, from either side, or could not be set up.
    pub fn ended(&self, call: CallId) {
        self.send(Event::Ended { call });
    }

    /// A message from the far end's data channel (camera control).
    pub fn remote(&self, message: Message) {
        self.send(Event::Remote(message));
    }

    /// Gives the controller the camera's controls for far-end PTZ.
    pub fn attach_camera(&self, controls: CameraControls) {
        self.send(Event::Camera(controls));
    }

    /// Stops the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for CartController {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state machine's answer to an incoming call.
type Verdict = Result<CallId, RejectReason>;
type VerdictReply = oneshot::Sender<Verdict>;

struct Worker {
    config: BoardConfig,
    board: Box<dyn Board>,
    panel: Panel,
    machine: CartMachine,
    sim: Option<SimHandle>,
    privacy: PrivacySwitch,
    view: Arc<Mutex<CartView>>,
    wiring: Wiring,
    start: embassy_time::Instant,
    /// Incoming calls waiting for the machine's verdict.
    pending: BTreeMap<CallId, VerdictReply>,
    /// Verdicts to send once the view shows them.
    verdicts: Vec<(VerdictReply, Verdict)>,
    /// Answered calls and their console ids, to hang them up.
    console_calls: BTreeMap<CallId, String>,
    /// Answered SIP calls (one at a time; the endpoint hangs up its current call).
    sip_calls: BTreeSet<CallId>,
    sip: Option<tokio::sync::mpsc::Sender<SipCommand>>,
    ptz: Option<PtzController>,
    camera: Option<CameraControls>,
    last_network: Option<bool>,
}

impl Worker {
    fn stamp(&self, t: embassy_time::Instant) -> Timestamp {
        Timestamp(t.duration_since(self.start).as_millis())
    }

    fn run(&mut self, events: Receiver<Event>, stop: &AtomicBool) {
        let tick = Duration::from_millis(u64::from(self.config.poll_interval_ms.max(1)));
        let battery_every =
            embassy_time::Duration::from_secs(u64::from(self.config.battery_poll_s));
        let network_every = embassy_time::Duration::from_millis(NETWORK_PROBE.as_millis() as u64);
        let mut next_battery = embassy_time::Instant::now();
        let mut next_network = embassy_time::Instant::now();
        let mut inputs_failing = false;
        while !stop.load(Ordering::Relaxed) {
            let now = embassy_time::Instant::now();
            match self.board.read_inputs(now) {
                Ok(raw) => {
                    if inputs_failing {
                        inputs_failing = false;
                        self.fault(now, "board-inputs", false);
                    }
                    for input in self.panel.poll_at(now, &raw) {
                        let ts = self.stamp(now);
                        self.machine.handle_input(ts, input);
                    }
                }
                Err(e) => {
                    if !inputs_failing {
                        warn!(error = %e, "board inputs unreadable");
                        inputs_failing = true;
                        self.fault(now, "board-inputs", true);
                    }
                }
            }
            if now >= next_battery {
                next_battery = now + battery_every;
                let status = self.board.battery();
                if let Some(input) = battery_input(&status) {
                    let ts = self.stamp(now);
                    self.machine.handle_input(ts, input);
                }
                lock(&self.view).battery = status;
            }
            if now >= next_network {
                next_network = now + network_every;
                let up = has_route();
                if self.last_network != Some(up) {
                    self.last_network = Some(up);
                    let ts = self.stamp(now);
                    let input = if up {
                        Input::NetworkUp
                    } else {
                        Input::NetworkDown
                    };
                    self.machine.handle_input(ts, input);
                }
            }
            let ts = self.stamp(now);
            if self
                .machine
                .poll_timeout()
                .is_some_and(|(due, _)| ts >= due)
            {
                self.machine.handle_timeout(ts);
            }
            self.drain(now);
            if let Err(e) = self.board.set_leds(self.panel.leds_at(now)) {
                warn!(error = %e, "LEDs unwritable");
            }
            // Sleep until the next sample, waking at once for an event.
            match events.recv_timeout(tick) {
                Ok(event) => {
                    self.event(event);
                    while let Ok(event) = events.try_recv() {
                        self.event(event);
                    }
                    let now = embassy_time::Instant::now();
                    self.drain(now);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for (_, reply) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(RejectReason::Unavailable));
        }
    }

    fn fault(&mut self, now: embassy_time::Instant, fault: &str, raised: bool) {
        let ts = self.stamp(now);
        let fault = fault.to_string();
        let input = if raised {
            Input::FaultRaised { fault }
        } else {
            Input::FaultCleared { fault }
        };
        self.machine.handle_input(ts, input);
    }

    fn event(&mut self, event: Event) {
        let now = embassy_time::Instant::now();
        let ts = self.stamp(now);
        match event {
            Event::Machine(input) => self.machine.handle_input(ts, input),
            Event::Sim(sim_event) => {
                if let Some(sim) = &self.sim {
                    let _ = sim.send(sim_event);
                }
            }
            Event::Incoming {
                call,
                caller,
                auto_answer,
                reply,
            } => {
                self.pending.insert(call, reply);
                self.machine.handle_input(
                    ts,
                    Input::IncomingCall {
                        call,
                        caller,
                        auto_answer,
                    },
                );
            }
            Event::SipConnected { call } => {
                self.sip_calls.insert(call);
                self.machine.handle_input(ts, Input::CallConnected { call });
            }
            Event::Sip(commands) => self.sip = Some(commands),
            Event::SipMute(muted) => {
                if let Some(sip) = &self.sip {
                    let _ = sip.try_send(SipCommand::Mute(muted));
                }
            }
            Event::SipDtmf(digit) => {
                if let Some(sip) = &self.sip {
                    let _ = sip.try_send(SipCommand::Dtmf(digit));
                }
            }
            Event::Connected { call, console_id } => {
                self.console_calls.insert(call, console_id);
                self.machine.handle_input(ts, Input::CallConnected { call });
            }
            Event::Ended { call } => {
                self.console_calls.remove(&call);
                self.sip_calls.remove(&call);
                // A call that rang and never came up leaves no verdict waiting.
                self.pending.remove(&call);
                self.machine.handle_input(ts, Input::CallEnded { call });
            }
            Event::Remote(message) => self.far_end_camera(ts, &message),
            Event::Camera(controls) => {
                self.camera = Some(controls);
                self.ptz = None;
            }
        }
    }

    fn far_end_camera(&mut self, now: Timestamp, message: &Message) {
        if !matches!(message, Message::PtzMove(_) | Message::PtzPreset { .. }) {
            return;
        }
        if self.ptz.is_none() {
            self.ptz = self
                .camera
                .as_ref()
                .and_then(|camera| ptz_for(camera, &self.config));
        }
        let result = match (&mut self.ptz, &self.camera) {
            (Some(ptz), Some(camera)) => ptz.handle_message(now, message).map(|sets| {
                for set in sets {
                    let control = match set.axis {
                        telecart_cart::ptz::PtzAxis::Pan => CameraControl::Pan,
                        telecart_cart::ptz::PtzAxis::Tilt => CameraControl::Tilt,
                        telecart_cart::ptz::PtzAxis::Zoom => CameraControl::Zoom,
                    };
                    if let Err(e) = camera.set(control, set.value) {
                        warn!(error = %e, ?control, "far-end camera control failed");
                    }
                }
            }),
            _ => Err(telecart_cart::ptz::PtzError::NoPtz),
        };
        let mut v = lock(&self.view);
        v.ptz_dropped = self.ptz.as_ref().map_or(0, |p| p.dropped());
        if let Err(e) = result {
            info!(error = %e, "far-end camera command refused");
            v.ptz_error = Some(e.to_string());
        }
    }

    fn drain(&mut self, now: embassy_time::Instant) {
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Indication(indication) => {
                    self.panel.show_at(now, &indication);
                    self.wiring.calls.broadcast(&indication.status_message());
                    lock(&self.view).indication = indication;
                }
                Output::Action(action) => self.act(action),
                Output::Audit(event) => self.audit(&event),
                Output::Notice(notice) => {
                    let text = notice_text(&notice);
                    info!(notice = %text, "cart");
                    let mut v = lock(&self.view);
                    v.notices.push_back(text);
                    while v.notices.len() > KEEP_NOTICES {
                        v.notices.pop_front();
                    }
                }
            }
        }
        // The view changes with the machine, before anyone is told of a verdict.
        let mut v = lock(&self.view);
        v.leds = self.panel.leds_at(now);
        v.state = self.machine.state();
        v.call = self.machine.call_phase();
        v.privacy = self.machine.privacy();
        v.faults = self.machine.faults().map(str::to_string).collect();
        drop(v);
        for (reply, verdict) in self.verdicts.drain(..) {
            let _ = reply.send(verdict);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::MuteCameraAndMic => {
                self.privacy.set(true);
                info!("privacy on: camera slate, microphone muted");
            }
            Action::Unmute => {
                self.privacy.set(false);
                info!("privacy off");
            }
            Action::SuppressAutoAnswer { suppressed } => {
                lock(&self.view).auto_answer_suppressed = suppressed;
            }
            Action::Answer { call } => {
                if let Some(reply) = self.pending.remove(&call) {
                    self.verdicts.push((reply, Ok(call)));
                }
            }
            Action::Reject { call, reason } => {
                if let Some(reply) = self.pending.remove(&call) {
                    self.verdicts.push((reply, Err(reason)));
                }
            }
            Action::HangUp { call } => {
                let ids: Vec<String> = match call {
                    Some(call) => self.console_calls.remove(&call).into_iter().collect(),
                    None => std::mem::take(&mut self.console_calls)
                        .into_values()
                        .collect(),
                };
                for id in ids {
                    self.wiring.calls.hang_up(&id);
                }
                // `None` is also the outgoing call still dialling, which only SIP places.
                let sip_call = match call {
                    Some(call) => self.sip_calls.remove(&call),
                    None => {
                        self.sip_calls.clear();
                        true
                    }
                };
                if sip_call && let Some(sip) = &self.sip {
                    let _ = sip.try_send(SipCommand::HangUp);
                }
            }
            Action::PlaceCall { uri } => {
                let is_sip = uri.starts_with("sip:") || uri.starts_with("sips:");
                let placed = match &self.sip {
                    Some(sip) if is_sip => sip.try_send(SipCommand::Call(uri.clone())).is_ok(),
                    _ => false,
                };
                if !placed {
                    // Say so rather than blink "dialing" forever.
                    let why = if !is_sip {
                        "only sip: URIs can be called"
                    } else if self.sip.is_none() {
                        "no SIP endpoint is running"
                    } else {
                        "the SIP endpoint is not taking commands"
                    };
                    warn!(%uri, why, "the call button's call was not placed");
                    let now = embassy_time::Instant::now();
                    let ts = self.stamp(now);
                    self.machine
                        .handle_input(ts, Input::CallEnded { call: CallId(0) });
                    let mut v = lock(&self.view);
                    v.notices
                        .push_back(format!("cannot place the call to {uri}: {why}"));
                }
            }
        }
    }

    fn audit(&self, event: &AuditEvent) {
        let who = actor_name(&event.who);
        let (what, detail) = match serde_json::to_value(&event.what) {
            Ok(serde_json::Value::Object(mut map)) => {
                let name = map
                    .remove("event")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "cart".into());
                (
                    format!("cart.{name}"),
                    serde_json::Value::Object(map).to_string(),
                )
            }
            _ => ("cart".to_string(), String::new()),
        };
        info!(actor = %who, event = %what, %detail, "audit");
        if let Some(log) = &self.wiring.log
            && let Err(e) = log.audit(&who, &what, &detail)
        {
            warn!(error = %e, event = %what, "audit record not written");
        }
    }
}

/// Who, as the audit trail names them.
fn actor_name(actor: &Actor) -> String {
    match actor {
        Actor::PrivacySwitch => "privacy-switch".into(),
        Actor::CallButton => "call-button".into(),
        Actor::HangUpButton => "hang-up-button".into(),
        Actor::Console { user } => format!("console:{user}"),
        Actor::Keyboard => "keyboard".into(),
        Actor::Caller { caller } => format!("caller:{caller}"),
        Actor::Policy => "policy".into(),
    }
}

fn notice_text(notice: &Notice) -> String {
    match notice {
        Notice::ButtonIgnored { state } => format!("button ignored while {state}"),
        Notice::CannotCallOffline => "cannot call: the network is down".into(),
        Notice::NoOutgoingUri => "no outgoing call configured (board.outgoing_uri)".into(),
        Notice::AutoAnswerSuppressed { call } => {
            format!("{call} rings instead of auto-answering: privacy is on")
        }
    }
}

/// The PTZ policy for the camera's pan, tilt and zoom controls, if it has any.
fn ptz_for(camera: &CameraControls, config: &BoardConfig) -> Option<PtzController> {
    let axis = |control| {
        camera.get(control).ok().map(|info| {
            (
                AxisLimits {
                    min: info.min,
                    max: info.max,
                    step: info.step,
                },
                info.value,
            )
        })
    };
    let (pan, tilt, zoom) = (
        axis(CameraControl::Pan),
        axis(CameraControl::Tilt),
        axis(CameraControl::Zoom),
    );
    if pan.is_none() && tilt.is_none() && zoom.is_none() {
        return None;
    }
    let limits = PtzLimits {
        pan: pan.map(|a| a.0),
        tilt: tilt.map(|a| a.0),
        zoom: zoom.map(|a| a.0),
    };
    let position = PtzPosition {
        pan: pan.map_or(0, |a| a.1),
        tilt: tilt.map_or(0, |a| a.1),
        zoom: zoom.map_or(0, |a| a.1),
    };
    Some(PtzController::new(
        limits,
        telecart_board::config::ptz_config(config),
        position,
    ))
}

/// Whether a route leaves the cart (a UDP socket can be pointed off-link).
/// Sends nothing: `connect` on UDP only consults the routing table.
fn has_route() -> bool {
    let Ok(probe) = std::net::UdpSocket::bind("0.0.0.0:0") else {
        return false;
    };
    // TEST-NET-3: never reached, only routed.
    probe.connect("203.0.113.1:9").is_ok()
}

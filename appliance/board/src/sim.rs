//! The simulated board: buttons from the console page and the keyboard, LEDs
//! shown on the console, a battery the demo can drain.
//!
//! [`SimulatedBoard::new`] returns the board (owned by the runtime's board
//! loop, like a real one) and a cloneable [`SimHandle`] for the console and
//! keyboard. Events go through a channel; the board plays each one as real
//! contacts would, holding a press long enough to pass the debouncer (and, for
//! a long press, the long-press time) before the next event is played, so a
//! click from a web page is never lost between two samples.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use embassy_time::{Duration, Instant};
use serde::Serialize;
use telecart_cart::machine::Actor;

use crate::battery::{BatteryReading, BatteryStatus};
use crate::config::BoardConfig;
use crate::desc::BoardKind;
use crate::led::Rgb;
use crate::panel::{Board, BoardError, RawInputs};

/// A simulated button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimButton {
    /// The call button.
    Call,
    /// The hang-up button.
    HangUp,
}

/// What the console or keyboard did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum SimEvent {
    /// A short press.
    Click {
        /// Which button.
        button: SimButton,
    },
    /// A press held past the long-press time.
    LongPress {
        /// Which button.
        button: SimButton,
    },
    /// Sets the privacy switch.
    Privacy {
        /// On.
        on: bool,
        /// Who (the console user, or the keyboard).
        by: Actor,
    },
    /// Flips the privacy switch.
    TogglePrivacy {
        /// Who.
        by: Actor,
    },
    /// Sets the simulated battery (`None`: no gauge fitted).
    Battery {
        /// Reading, if any.
        reading: Option<BatteryReading>,
    },
}

impl SimEvent {
    /// The keyboard mapping of the demo: `c` call, `C` long press (hang up), `h` hang up, `p` privacy.
    pub fn from_key(key: char) -> Option<SimEvent> {
        Some(match key {
            'c' => SimEvent::Click {
                button: SimButton::Call,
            },
            'C' => SimEvent::LongPress {
                button: SimButton::Call,
            },
            'h' | 'H' => SimEvent::Click {
                button: SimButton::HangUp,
            },
            'p' | 'P' => SimEvent::TogglePrivacy {
                by: Actor::Keyboard,
            },
            _ => return None,
        })
    }
}

/// What the console shows of the simulated board.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimView {
    /// The status LED now.
    pub leds: Rgb,
    /// The privacy switch position.
    pub privacy: bool,
    /// The battery.
    pub battery: BatteryStatus,
}

#[derive(Debug)]
struct Shared {
    view: SimView,
}

/// The console's and keyboard's side of the simulated board. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SimHandle {
    tx: Sender<SimEvent>,
    shared: Arc<Mutex<Shared>>,
}

/// The simulated board was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the simulated board is gone")]
pub struct SimGone;

impl SimHandle {
    /// Sends an event to the board.
    pub fn send(&self, event: SimEvent) -> Result<(), SimGone> {
        self.tx.send(event).map_err(|_| SimGone)
    }

    /// The LEDs, switch and battery as the board last set them.
    pub fn view(&self) -> SimView {
        self.shared
            .lock()
            .map(|s| s.view.clone())
            .unwrap_or_else(|e| e.into_inner().view.clone())
    }
}

/// A board with no hardware. See the [module docs](self).
#[derive(Debug)]
pub struct SimulatedBoard {
    rx: Receiver<SimEvent>,
    shared: Arc<Mutex<Shared>>,
    queue: VecDeque<SimEvent>,
    levels: RawInputs,
    /// A press being played: release at this instant.
    release_at: Option<Instant>,
    /// No new event before this instant (the level must settle).
    quiet_until: Option<Instant>,
    click: Duration,
    long: Duration,
    settle: Duration,
    battery: BatteryStatus,
}

impl SimulatedBoard {
    /// A board with privacy off, buttons released and a full battery; timings from `config`.
    pub fn new(config: &BoardConfig) -> (SimulatedBoard, SimHandle) {
        let (tx, rx) = channel();
        let battery = BatteryStatus::Reading(BatteryReading {
            percent: 100,
            millivolts: 4150,
            charging: true,
        });
        let shared = Arc::new(Mutex::new(Shared {
            view: SimView {
                leds: Rgb::OFF,
                privacy: false,
                battery: battery.clone(),
            },
        }));
        let settle = Duration::from_millis(u64::from(config.debounce_ms) * 3);
        let board = SimulatedBoard {
            rx,
            shared: shared.clone(),
            queue: VecDeque::new(),
            levels: RawInputs::default(),
            release_at: None,
            quiet_until: None,
            click: Duration::from_millis(120).max(settle),
            long: Duration::from_millis(u64::from(config.long_press_ms) + 200),
            settle,
            battery,
        };
        (board, SimHandle { tx, shared })
    }

    fn update_view(&self) {
        if let Ok(mut s) = self.shared.lock() {
            s.view.privacy = self.levels.privacy;
            s.view.battery = self.battery.clone();
        }
    }

    fn play(&mut self, now: Instant, event: SimEvent) {
        match event {
            SimEvent::Click { button } | SimEvent::LongPress { button } => {
                let hold = if matches!(event, SimEvent::Click { .. }) {
                    self.click
                } else {
                    self.long
                };
                match button {
                    SimButton::Call => self.levels.call = true,
                    SimButton::HangUp => self.levels.hangup = true,
                }
                self.release_at = Some(now + hold);
            }
            SimEvent::Privacy { on, by } => {
                self.levels.privacy = on;
                self.levels.privacy_by = by;
                self.quiet_until = Some(now + self.settle);
            }
            SimEvent::TogglePrivacy { by } => {
                self.levels.privacy = !self.levels.privacy;
                self.levels.privacy_by = by;
                self.quiet_until = Some(now + self.settle);
            }
            SimEvent::Battery { reading } => {
                self.battery = match reading {
                    Some(r) => BatteryStatus::Reading(r),
                    None => BatteryStatus::NotFitted,
                };
            }
        }
        self.update_view();
    }
}

impl Board for SimulatedBoard {
    fn kind(&self) -> BoardKind {
        BoardKind::Simulated
    }

    fn read_inputs(&mut self, now: Instant) -> Result<RawInputs, BoardError> {
        self.queue.extend(self.rx.try_iter());
        if let Some(t) = self.release_at
            && now >= t
        {
            self.levels.call = false;
            self.levels.hangup = false;
            self.release_at = None;
            self.quiet_until = Some(now + self.settle);
        }
        let busy = self.release_at.is_some() || self.quiet_until.is_some_and(|q| now < q);
        if !busy && let Some(event) = self.queue.pop_front() {
            self.play(now, event);
        }
        Ok(self.levels.clone())
    }

    fn set_leds(&mut self, rgb: Rgb) -> Result<(), BoardError> {
        if let Ok(mut s) = self.shared.lock() {
            s.view.leds = rgb;
        }
        Ok(())
    }

    fn battery(&mut self) -> BatteryStatus {
        self.queue.extend(self.rx.try_iter());
        self.battery.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panel::Panel;
    use telecart_cart::machine::{CartState, Input, Press};

    fn indication() -> telecart_cart::machine::Indication {
        telecart_cart::machine::Indication {
            state: CartState::Ready,
            led: CartState::Ready.led(),
            privacy: false,
            battery_low: false,
        }
    }

    /// Runs the board and panel for `ms` milliseconds at 5 ms ticks from `t`.
    fn run(board: &mut SimulatedBoard, panel: &mut Panel, t: &mut u64, ms: u64) -> Vec<Input> {
        let mut out = Vec::new();
        let end = *t + ms;
        while *t < end {
            *t += 5;
            let now = Instant::from_millis(*t);
            let raw = board.read_inputs(now).unwrap();
            out.extend(panel.poll_at(now, &raw));
            board.set_leds(panel.leds_at(now)).unwrap();
        }
        out
    }

    fn setup() -> (SimulatedBoard, SimHandle, Panel, u64) {
        let config = BoardConfig::default();
        let (mut board, handle) = SimulatedBoard::new(&config);
        let first = board.read_inputs(Instant::from_millis(0)).unwrap();
        let panel = Panel::new_at(Instant::from_millis(0), &config, &first, &indication());
        (board, handle, panel, 0)
    }

    #[test]
    fn keyboard_events_become_machine_inputs_in_order() {
        let (mut board, handle, mut panel, mut t) = setup();
        for key in ['c', 'p', 'C', 'h', 'p', 'x'] {
            if let Some(e) = SimEvent::from_key(key) {
                handle.send(e).unwrap();
            }
        }
        let out = run(&mut board, &mut panel, &mut t, 5_000);
        assert_eq!(
            out,
            vec![
                Input::CallButton {
                    press: Press::Short
                },
                Input::Privacy {
                    on: true,
                    by: Actor::Keyboard
                },
                Input::CallButton { press: Press::Long },
                Input::HangUpButton,
                Input::Privacy {
                    on: false,
                    by: Actor::Keyboard
                },
            ]
        );
    }

    #[test]
    fn console_privacy_is_audited_as_the_console_user() {
        let (mut board, handle, mut panel, mut t) = setup();
        let by = Actor::Console {
            user: "nurse.kim".into(),
        };
        handle
            .send(SimEvent::Privacy {
                on: true,
                by: by.clone(),
            })
            .unwrap();
        let out = run(&mut board, &mut panel, &mut t, 200);
        assert_eq!(out, vec![Input::Privacy { on: true, by }]);
        assert!(handle.view().privacy);
    }

    #[test]
    fn leds_are_readable_for_the_console() {
        let (mut board, handle, mut panel, mut t) = setup();
        run(&mut board, &mut panel, &mut t, 20);
        assert_eq!(
            handle.view().leds,
            Rgb::of(telecart_cart::machine::LedColor::Green)
        );
    }

    #[test]
    fn battery_can_be_set_and_removed() {
        let (mut board, handle, _panel, _t) = setup();
        let low = BatteryReading {
            percent: 9,
            millivolts: 3500,
            charging: false,
        };
        handle
            .send(SimEvent::Battery { reading: Some(low) })
            .unwrap();
        board.read_inputs(Instant::from_millis(1)).unwrap();
        assert_eq!(board.battery(), BatteryStatus::Reading(low));
        assert_eq!(
            crate::panel::battery_input(&board.battery()),
            Some(Input::Battery {
                percent: 9,
                charging: false
            })
        );
        handle.send(SimEvent::Battery { reading: None }).unwrap();
        board.read_inputs(Instant::from_millis(2)).unwrap();
        assert_eq!(board.battery(), BatteryStatus::NotFitted);
    }

    #[test]
    fn a_switch_on_at_start_is_reported_once_at_start() {
        let config = BoardConfig::default();
        let first = RawInputs {
            privacy: true,
            ..RawInputs::default()
        };
        let mut panel = Panel::new_at(Instant::from_millis(0), &config, &first, &indication());
        assert_eq!(
            panel.initial_inputs(),
            vec![Input::Privacy {
                on: true,
                by: Actor::PrivacySwitch
            }]
        );
        assert!(panel.initial_inputs().is_empty());
        assert!(panel.poll_at(Instant::from_millis(100), &first).is_empty());
    }

    #[test]
    fn a_dropped_board_is_an_error_for_the_console() {
        let (board, handle, _panel, _t) = setup();
        drop(board);
        assert_eq!(handle.send(SimEvent::from_key('c').unwrap()), Err(SimGone));
    }
}

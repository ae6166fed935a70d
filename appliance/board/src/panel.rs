//! The board behind a trait, and the panel that turns its raw levels into the
//! state machine's inputs and its indications into LED levels.
//!
//! The runtime owns a `Box<dyn Board>` (the [`SimulatedBoard`](crate::sim::SimulatedBoard)
//! or, on a Pi, the [`RppalBoard`](crate::rpi::RppalBoard)) and a [`Panel`];
//! every `poll_interval_ms` it reads the board, feeds the panel and passes the
//! panel's inputs to the `CartMachine`; whenever the machine emits an
//! indication it calls [`Panel::show`], and it writes [`Panel::leds`] to the
//! board on every tick.

use embassy_time::{Duration, Instant};
use serde::Serialize;
use telecart_cart::machine::{Actor, Indication, Input};

use crate::battery::BatteryStatus;
use crate::config::BoardConfig;
use crate::desc::BoardKind;
use crate::input::{Button, Switch};
use crate::led::{LedPlayer, Rgb};

/// The raw (not debounced) levels of the inputs, as "active" (pressed / on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawInputs {
    /// Call button pressed.
    pub call: bool,
    /// Hang-up button pressed (false when the board has none).
    pub hangup: bool,
    /// Privacy switch on.
    pub privacy: bool,
    /// Who moves the privacy switch on this board (the switch itself; the console or keyboard when simulated).
    pub privacy_by: Actor,
}

impl Default for RawInputs {
    fn default() -> Self {
        Self {
            call: false,
            hangup: false,
            privacy: false,
            privacy_by: Actor::PrivacySwitch,
        }
    }
}

/// Why the board hardware cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// No GPIO controller (not a Raspberry Pi, no `/dev/gpiomem`, no permission).
    #[error("no GPIO controller: {0}")]
    NoGpio(String),
    /// A pin could not be claimed or used.
    #[error("GPIO {gpio} ({what}): {message}")]
    Pin {
        /// BCM number.
        gpio: u8,
        /// What it is for.
        what: &'static str,
        /// The error.
        message: String,
    },
    /// The pin map is unusable.
    #[error(transparent)]
    Description(#[from] crate::desc::DescriptionError),
}

/// The cart's hardware controls.
pub trait Board: Send {
    /// Which board.
    fn kind(&self) -> BoardKind;
    /// Samples every input at `now`.
    fn read_inputs(&mut self, now: Instant) -> Result<RawInputs, BoardError>;
    /// Sets the status LED.
    fn set_leds(&mut self, rgb: Rgb) -> Result<(), BoardError>;
    /// Reads the battery (slow on I2C: call it every `battery_poll_s`, not every tick).
    fn battery(&mut self) -> BatteryStatus;
}

/// Debounce, long press and LED pattern for one board. See the [module docs](self).
#[derive(Debug)]
pub struct Panel {
    call: Button,
    hangup: Button,
    privacy: Switch,
    led: LedPlayer,
    initial: Vec<Input>,
}

impl Panel {
    /// A panel whose inputs are at `first` at `now` (the first read of the board).
    ///
    /// A privacy switch already on at power-up is reported by
    /// [`initial_inputs`](Self::initial_inputs): the machine starts with
    /// privacy off and must be told before any frame leaves.
    pub fn new_at(
        now: Instant,
        config: &BoardConfig,
        first: &RawInputs,
        shown: &Indication,
    ) -> Self {
        let settle = Duration::from_millis(u64::from(config.debounce_ms));
        let long = Duration::from_millis(u64::from(config.long_press_ms));
        let initial = if first.privacy {
            vec![Input::Privacy {
                on: true,
                by: first.privacy_by.clone(),
            }]
        } else {
            Vec::new()
        };
        Self {
            call: Button::new(settle, long),
            hangup: Button::new(settle, long),
            privacy: Switch::new(settle, first.privacy),
            led: LedPlayer::new_at(now, shown),
            initial,
        }
    }

    /// Inputs implied by the levels at start-up (privacy switch already on); empty after the first call.
    pub fn initial_inputs(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.initial)
    }

    /// The privacy switch's debounced position.
    pub fn privacy_on(&self) -> bool {
        self.privacy.is_on()
    }

    /// Feeds levels sampled at `now`; returns the machine inputs they make.
    pub fn poll_at(&mut self, now: Instant, raw: &RawInputs) -> Vec<Input> {
        let mut out = Vec::new();
        if let Some(on) = self.privacy.update_at(now, raw.privacy) {
            out.push(Input::Privacy {
                on,
                by: raw.privacy_by.clone(),
            });
        }
        if let Some(press) = self.call.update_at(now, raw.call) {
            out.push(Input::CallButton { press });
        }
        if self.hangup.update_at(now, raw.hangup).is_some() {
            out.push(Input::HangUpButton);
        }
        out
    }

    /// Feeds levels sampled now.
    pub fn poll(&mut self, raw: &RawInputs) -> Vec<Input> {
        self.poll_at(Instant::now(), raw)
    }

    /// Shows a new indication from `now`.
    pub fn show_at(&mut self, now: Instant, indication: &Indication) {
        self.led.set_at(now, indication);
    }

    /// Shows a new indication from now.
    pub fn show(&mut self, indication: &Indication) {
        self.led.set(indication);
    }

    /// The LED level at `now`.
    pub fn leds_at(&self, now: Instant) -> Rgb {
        self.led.output_at(now)
    }

    /// The LED level now.
    pub fn leds(&self) -> Rgb {
        self.led.output()
    }
}

/// The machine input for a battery status, if it is a reading.
pub fn battery_input(status: &BatteryStatus) -> Option<Input> {
    match status {
        BatteryStatus::Reading(r) => Some(Input::Battery {
            percent: r.percent,
            charging: r.charging,
        }),
        _ => None,
    }
}

//! The real board: GPIO and I2C through rppal (Raspberry Pi 4, 5, CM4).
//!
//! Selected by `board.kind` in the configuration; builds everywhere, and off
//! a Pi [`RppalBoard::open`] fails with [`BoardError::NoGpio`] (the runtime
//! raises a fault and keeps running; it never crashes). A fuel gauge that
//! cannot be opened or does not answer only makes the battery
//! [`BatteryStatus::Unavailable`].

use embassy_time::Instant;
use embedded_hal::digital::{OutputPin as _, PinState};
use rppal::gpio::{Gpio, InputPin, OutputPin};
use rppal::i2c::I2c;
use rppal::spi::{Bus, Mode, SlaveSelect, Spi};

use crate::battery::{BatteryStatus, Max17048};
use crate::desc::{BoardDescription, BoardKind, GaugeChip, InputPinDesc, Pull};
use crate::input::read_active;
use crate::led::{Rgb, WS2812_SPI_HZ, ws2812_spi_frame};
use crate::panel::{Board, BoardError, RawInputs};

struct Line {
    pin: InputPin,
    active_low: bool,
}

struct Leds {
    red: OutputPin,
    green: OutputPin,
    blue: OutputPin,
    active_low: bool,
}

struct Ring {
    spi: Spi,
    count: u16,
    brightness: u8,
    shown: Option<Rgb>,
    failed: bool,
}

enum Gauge {
    NotFitted,
    Failed(String),
    Max17048(Max17048<I2c>),
}

/// The cart's controls on a Raspberry Pi. See the [module docs](self).
pub struct RppalBoard {
    kind: BoardKind,
    call: Line,
    hangup: Option<Line>,
    privacy: Line,
    leds: Option<Leds>,
    ring: Option<Ring>,
    gauge: Gauge,
}

impl std::fmt::Debug for RppalBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RppalBoard")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn input(gpio: &Gpio, d: InputPinDesc, what: &'static str) -> Result<Line, BoardError> {
    let pin = gpio.get(d.gpio).map_err(|e| BoardError::Pin {
        gpio: d.gpio,
        what,
        message: e.to_string(),
    })?;
    let pin = match d.pull {
        Pull::Up => pin.into_input_pullup(),
        Pull::Down => pin.into_input_pulldown(),
        Pull::None => pin.into_input(),
    };
    Ok(Line {
        pin,
        active_low: d.active_low,
    })
}

fn output(
    gpio: &Gpio,
    n: u8,
    dark_high: bool,
    what: &'static str,
) -> Result<OutputPin, BoardError> {
    let pin = gpio.get(n).map_err(|e| BoardError::Pin {
        gpio: n,
        what,
        message: e.to_string(),
    })?;
    Ok(if dark_high {
        pin.into_output_high()
    } else {
        pin.into_output_low()
    })
}

impl RppalBoard {
    /// Claims every pin of `desc` (LEDs dark) and opens its fuel gauge.
    pub fn open(kind: BoardKind, desc: &BoardDescription) -> Result<Self, BoardError> {
        let problems = desc.problems();
        if !problems.is_empty() {
            return Err(crate::desc::DescriptionError::Invalid {
                board: desc.board.clone(),
                problems,
            }
            .into());
        }
        let gpio = Gpio::new().map_err(|e| BoardError::NoGpio(e.to_string()))?;
        let missing = |what: &'static str| BoardError::Pin {
            gpio: 0,
            what,
            message: "not in the pin map".into(),
        };
        let call = input(
            &gpio,
            desc.inputs
                .call_button
                .ok_or_else(|| missing("call_button"))?,
            "call_button",
        )?;
        let privacy = input(
            &gpio,
            desc.inputs
                .privacy_switch
                .ok_or_else(|| missing("privacy_switch"))?,
            "privacy_switch",
        )?;
        let hangup = desc
            .inputs
            .hangup_button
            .map(|d| input(&gpio, d, "hangup_button"))
            .transpose()?;
        let leds = desc
            .leds
            .map(|l| -> Result<Leds, BoardError> {
                Ok(Leds {
                    red: output(&gpio, l.red, l.active_low, "leds.red")?,
                    green: output(&gpio, l.green, l.active_low, "leds.green")?,
                    blue: output(&gpio, l.blue, l.active_low, "leds.blue")?,
                    active_low: l.active_low,
                })
            })
            .transpose()?;
        let ring = desc
            .led_ring
            .map(|r| -> Result<Ring, BoardError> {
                let spi = Spi::new(Bus::Spi0, SlaveSelect::Ss0, WS2812_SPI_HZ, Mode::Mode0)
                    .map_err(|e| BoardError::Pin {
                        gpio: 10,
                        what: "led_ring (SPI0)",
                        message: e.to_string(),
                    })?;
                Ok(Ring {
                    spi,
                    count: r.count,
                    brightness: r.brightness,
                    shown: None,
                    failed: false,
                })
            })
            .transpose()?;
        let gauge = match desc.fuel_gauge {
            None => Gauge::NotFitted,
            Some(g) => match (g.chip, I2c::with_bus(g.bus)) {
                (_, Err(e)) => Gauge::Failed(format!("cannot open /dev/i2c-{}: {e}", g.bus)),
                (GaugeChip::Max17048, Ok(bus)) => match u8::try_from(g.address) {
                    Ok(a) => Gauge::Max17048(Max17048::new(bus, a)),
                    Err(_) => Gauge::Failed(format!("address {:#x} is not 7-bit", g.address)),
                },
            },
        };
        Ok(Self {
            kind,
            call,
            hangup,
            privacy,
            leds,
            ring,
            gauge,
        })
    }
}

fn level(line: &mut Line) -> bool {
    // rppal's pins are infallible (`Infallible` error type).
    read_active(&mut line.pin, line.active_low).unwrap_or(false)
}

impl Board for RppalBoard {
    fn kind(&self) -> BoardKind {
        self.kind
    }

    fn read_inputs(&mut self, _now: Instant) -> Result<RawInputs, BoardError> {
        Ok(RawInputs {
            call: level(&mut self.call),
            hangup: self.hangup.as_mut().is_some_and(level),
            privacy: level(&mut self.privacy),
            privacy_by: telecart_cart::machine::Actor::PrivacySwitch,
        })
    }

    fn set_leds(&mut self, rgb: Rgb) -> Result<(), BoardError> {
        if let Some(l) = &mut self.leds {
            let s = |on: bool| PinState::from(on != l.active_low);
            let _ = l.red.set_state(s(rgb.red));
            let _ = l.green.set_state(s(rgb.green));
            let _ = l.blue.set_state(s(rgb.blue));
        }
        if let Some(r) = &mut self.ring
            && r.shown != Some(rgb)
        {
            // Written only on change: the panel sets the LEDs every tick.
            match r.spi.write(&ws2812_spi_frame(rgb, r.brightness, r.count)) {
                Ok(_) => {
                    r.shown = Some(rgb);
                    r.failed = false;
                }
                Err(e) if !r.failed => {
                    r.failed = true;
                    return Err(BoardError::Pin {
                        gpio: 10,
                        what: "led_ring (SPI0)",
                        message: e.to_string(),
                    });
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn battery(&mut self) -> BatteryStatus {
        match &mut self.gauge {
            Gauge::NotFitted => BatteryStatus::NotFitted,
            Gauge::Failed(reason) => BatteryStatus::Unavailable {
                reason: reason.clone(),
            },
            Gauge::Max17048(g) => g.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off a Pi (this machine, CI) opening the board is an error to report, not a crash.
    #[test]
    fn opening_without_a_gpio_controller_is_an_error() {
        if std::path::Path::new("/dev/gpiomem").exists()
            || std::path::Path::new("/dev/gpiomem0").exists()
        {
            return; // a real Pi: covered by the HIL plan instead
        }
        let desc = BoardDescription::builtin(BoardKind::Raspberrypi4).unwrap();
        match RppalBoard::open(BoardKind::Raspberrypi4, &desc) {
            Err(BoardError::NoGpio(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_invalid_description_is_refused_before_touching_pins() {
        let mut desc = BoardDescription::builtin(BoardKind::Raspberrypi4).unwrap();
        desc.inputs.privacy_switch = desc.inputs.call_button;
        assert!(matches!(
            RppalBoard::open(BoardKind::Raspberrypi4, &desc),
            Err(BoardError::Description(_))
        ));
    }
}

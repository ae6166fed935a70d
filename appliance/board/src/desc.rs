//! Board descriptions: the pin map of each supported board, as data.
//!
//! The files live in the repository's top-level `board/<name>/pins.toml`
//! (beside the device-tree overlay for the same pins) and are built into the
//! crate, so the daemon needs no files to find its pins; a file given in the
//! configuration overrides the built-in one (a carrier with different wiring).
//! Every description is validated before any pin is touched: GPIO numbers in
//! range, no pin used twice, no pin the board reserves, the call button and
//! the privacy switch present.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use telecart_core::config::BoardKind;

/// The built-in pin map of a real board (`None` for the simulated one).
pub fn builtin_description(kind: BoardKind) -> Option<&'static str> {
    match kind {
        BoardKind::Simulated => None,
        BoardKind::Raspberrypi4 => Some(include_str!("../../../board/raspberrypi4/pins.toml")),
        BoardKind::Raspberrypi5 => Some(include_str!("../../../board/raspberrypi5/pins.toml")),
        BoardKind::Cm4Carrier => Some(include_str!("../../../board/cm4-carrier/pins.toml")),
    }
}

/// Internal pull resistor of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Pull {
    /// Pull-up (contacts close to ground; use with `active_low`).
    #[default]
    Up,
    /// Pull-down.
    Down,
    /// None (an external resistor is fitted).
    None,
}

/// One input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPinDesc {
    /// BCM GPIO number.
    pub gpio: u8,
    /// Pressed / on reads low.
    #[serde(default)]
    pub active_low: bool,
    /// Internal pull.
    #[serde(default)]
    pub pull: Pull,
}

/// The input lines. Unknown names are refused, so a typo cannot silently drop a button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Call / answer (short press), hang up (long press).
    pub call_button: Option<InputPinDesc>,
    /// Hang up / decline (optional: a long press of the call button does the same).
    pub hangup_button: Option<InputPinDesc>,
    /// Privacy switch.
    pub privacy_switch: Option<InputPinDesc>,
}

/// The status LED: three GPIOs of an RGB LED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedsDesc {
    /// Red channel GPIO.
    pub red: u8,
    /// Green channel GPIO.
    pub green: u8,
    /// Blue channel GPIO.
    pub blue: u8,
    /// A low output lights the LED (common anode).
    #[serde(default)]
    pub active_low: bool,
}

/// A WS2812 ("NeoPixel") LED ring driven from SPI0's MOSI (GPIO 10) at 2.4 MHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedRingDesc {
    /// LEDs on the ring (1 to 256).
    pub count: u16,
    /// Brightness, 1 to 255 (a ring at full white draws 60 mA per LED).
    #[serde(default = "default_brightness")]
    pub brightness: u8,
}

fn default_brightness() -> u8 {
    64
}

/// Fuel-gauge chips the crate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GaugeChip {
    /// Maxim MAX17048/MAX17049 (ModelGauge, I2C address 0x36).
    Max17048,
}

/// A fuel gauge on I2C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FuelGaugeDesc {
    /// Which chip.
    pub chip: GaugeChip,
    /// `/dev/i2c-<bus>`.
    pub bus: u8,
    /// 7-bit address.
    pub address: u16,
}

/// A board's pin map (`board/<name>/pins.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardDescription {
    /// Board name; matches the folder and [`BoardKind::name`].
    pub board: String,
    /// Human-readable model.
    pub model: String,
    /// Highest GPIO number usable on this board.
    pub max_gpio: u8,
    /// The device-tree overlay source beside this file.
    #[serde(default)]
    pub overlay: Option<String>,
    /// Buttons and switch.
    pub inputs: Inputs,
    /// Status LED, if fitted.
    #[serde(default)]
    pub leds: Option<LedsDesc>,
    /// LED ring on SPI0, if fitted (instead of, or as well as, the RGB LED).
    #[serde(default)]
    pub led_ring: Option<LedRingDesc>,
    /// Fuel gauge, if fitted.
    #[serde(default)]
    pub fuel_gauge: Option<FuelGaugeDesc>,
}

/// Why a board description cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptionError {
    /// The file could not be read.
    #[error("cannot read board description {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// Not valid TOML, or keys the schema does not know.
    #[error("board description is not valid: {0}")]
    Parse(String),
    /// Valid TOML that breaks the rules.
    #[error("board description {board:?}: {}", .problems.join("; "))]
    Invalid {
        /// Its `board` key.
        board: String,
        /// Every rule it breaks.
        problems: Vec<String>,
    },
    /// The simulated board has no pin map.
    #[error("the simulated board has no pin map")]
    Simulated,
}

impl BoardDescription {
    /// Parses and validates description text.
    pub fn from_toml(text: &str) -> Result<Self, DescriptionError> {
        let d: BoardDescription =
            toml::from_str(text).map_err(|e| DescriptionError::Parse(e.to_string()))?;
        let problems = d.problems();
        if problems.is_empty() {
            Ok(d)
        } else {
            Err(DescriptionError::Invalid {
                board: d.board,
                problems,
            })
        }
    }

    /// Reads, parses and validates a description file.
    pub fn load(path: &Path) -> Result<Self, DescriptionError> {
        let text = std::fs::read_to_string(path).map_err(|e| DescriptionError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// The built-in description of `kind`.
    pub fn builtin(kind: BoardKind) -> Result<Self, DescriptionError> {
        let text = builtin_description(kind).ok_or(DescriptionError::Simulated)?;
        Self::from_toml(text)
    }

    /// Every GPIO the description uses, with what for.
    pub fn pins(&self) -> Vec<(u8, &'static str)> {
        let mut out = Vec::new();
        let i = &self.inputs;
        for (name, p) in [
            ("call_button", i.call_button),
            ("hangup_button", i.hangup_button),
            ("privacy_switch", i.privacy_switch),
        ] {
            if let Some(p) = p {
                out.push((p.gpio, name));
            }
        }
        if let Some(l) = self.leds {
            out.extend([
                (l.red, "leds.red"),
                (l.green, "leds.green"),
                (l.blue, "leds.blue"),
            ]);
        }
        out
    }

    /// Every rule broken; empty when the description is good.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.board.trim().is_empty() {
            out.push("board must not be empty".to_string());
        }
        if self.inputs.call_button.is_none() {
            out.push("inputs.call_button is required".to_string());
        }
        if self.inputs.privacy_switch.is_none() {
            out.push("inputs.privacy_switch is required".to_string());
        }
        let mut used: BTreeMap<u8, &str> = BTreeMap::new();
        // GPIO 0 and 1 carry the HAT ID EEPROM on every Raspberry Pi header.
        used.insert(0, "the HAT ID EEPROM (ID_SD)");
        used.insert(1, "the HAT ID EEPROM (ID_SC)");
        if let Some(g) = self.fuel_gauge
            && g.bus == 1
        {
            used.insert(2, "I2C1 SDA (fuel gauge)");
            used.insert(3, "I2C1 SCL (fuel gauge)");
        }
        if let Some(r) = self.led_ring {
            used.insert(10, "SPI0 MOSI (LED ring)");
            used.insert(11, "SPI0 SCLK (LED ring)");
            used.insert(8, "SPI0 CE0 (LED ring)");
            if !(1..=256).contains(&r.count) {
                out.push(format!("led_ring.count {} must be 1 to 256", r.count));
            }
            if r.brightness == 0 {
                out.push("led_ring.brightness must be 1 to 255".to_string());
            }
        }
        for (gpio, what) in self.pins() {
            if gpio > self.max_gpio {
                out.push(format!(
                    "{what}: GPIO {gpio} is beyond this board's GPIO {}",
                    self.max_gpio
                ));
            }
            if let Some(other) = used.insert(gpio, what) {
                out.push(format!("{what}: GPIO {gpio} is already used by {other}"));
            }
        }
        for (name, p) in [
            ("call_button", self.inputs.call_button),
            ("hangup_button", self.inputs.hangup_button),
            ("privacy_switch", self.inputs.privacy_switch),
        ] {
            if let Some(p) = p
                && p.active_low
                && p.pull == Pull::Down
            {
                out.push(format!(
                    "inputs.{name}: active_low with a pull-down reads as pressed when nothing is connected"
                ));
            }
        }
        if let Some(g) = self.fuel_gauge
            && !(0x08..=0x77).contains(&g.address)
        {
            out.push(format!(
                "fuel_gauge.address {:#04x} is not a 7-bit I2C device address (0x08 to 0x77)",
                g.address
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: [BoardKind; 3] = [
        BoardKind::Raspberrypi4,
        BoardKind::Raspberrypi5,
        BoardKind::Cm4Carrier,
    ];

    fn board_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board")
    }

    #[test]
    fn every_shipped_description_is_valid_and_names_its_folder() {
        for kind in REAL {
            let d = BoardDescription::builtin(kind).unwrap();
            assert_eq!(d.board, kind.name());
            let from_file =
                BoardDescription::load(&board_dir().join(kind.name()).join("pins.toml")).unwrap();
            assert_eq!(from_file, d);
        }
        assert_eq!(
            BoardDescription::builtin(BoardKind::Simulated),
            Err(DescriptionError::Simulated)
        );
    }

    /// The overlay hogs exactly the pins the description uses, with pull-ups on the inputs.
    #[test]
    fn every_overlay_agrees_with_its_pin_map() {
        for kind in REAL {
            let d = BoardDescription::builtin(kind).unwrap();
            let overlay = d.overlay.clone().unwrap();
            let dts =
                std::fs::read_to_string(board_dir().join(kind.name()).join(&overlay)).unwrap();
            let mut hogged: Vec<(u8, u32)> = dts
                .lines()
                .filter_map(|l| l.trim().strip_prefix("gpios = <"))
                .map(|rest| {
                    let nums: Vec<u32> = rest
                        .trim_end_matches(">;")
                        .split_whitespace()
                        .map(|n| n.parse().unwrap())
                        .collect();
                    (nums[0] as u8, nums[1])
                })
                .collect();
            hogged.sort();
            let mut want: Vec<(u8, u32)> = d
                .pins()
                .into_iter()
                .map(|(g, what)| (g, if what.starts_with("leds") { 0 } else { 16 }))
                .collect();
            want.sort();
            assert_eq!(hogged, want, "{overlay}");
            let leds = d.leds.unwrap();
            let dark = if leds.active_low {
                "output-high;"
            } else {
                "output-low;"
            };
            assert!(dts.contains(dark), "{overlay}: LEDs must start dark");
        }
    }

    fn pi4_with(edit: impl FnOnce(&mut BoardDescription)) -> Vec<String> {
        let mut d = BoardDescription::builtin(BoardKind::Raspberrypi4).unwrap();
        edit(&mut d);
        d.problems()
    }

    #[test]
    fn a_pin_used_twice_is_refused() {
        let p = pi4_with(|d| d.leds.as_mut().unwrap().red = 17);
        assert_eq!(p, ["leds.red: GPIO 17 is already used by call_button"]);
    }

    #[test]
    fn a_pin_beyond_the_board_is_refused() {
        let p = pi4_with(|d| d.inputs.hangup_button.as_mut().unwrap().gpio = 40);
        assert_eq!(p, ["hangup_button: GPIO 40 is beyond this board's GPIO 27"]);
    }

    #[test]
    fn reserved_pins_are_refused() {
        let p = pi4_with(|d| d.inputs.call_button.as_mut().unwrap().gpio = 2);
        assert_eq!(
            p,
            ["call_button: GPIO 2 is already used by I2C1 SDA (fuel gauge)"]
        );
        let p = pi4_with(|d| d.leds.as_mut().unwrap().blue = 0);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("EEPROM"));
    }

    #[test]
    fn the_call_button_and_privacy_switch_are_required() {
        let p = pi4_with(|d| {
            d.inputs.call_button = None;
            d.inputs.privacy_switch = None;
        });
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_bad_gauge_address_is_refused() {
        let p = pi4_with(|d| d.fuel_gauge.as_mut().unwrap().address = 0x80);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("0x80"));
    }

    #[test]
    fn an_unknown_key_is_a_parse_error_naming_it() {
        let text = builtin_description(BoardKind::Raspberrypi4)
            .unwrap()
            .replace("[inputs.hangup_button]", "[inputs.hang_up_button]");
        match BoardDescription::from_toml(&text) {
            Err(DescriptionError::Parse(m)) => assert!(m.contains("hang_up_button"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_led_ring_reserves_spi0() {
        let mut text = builtin_description(BoardKind::Raspberrypi4)
            .unwrap()
            .to_string();
        text.push_str("\n[led_ring]\ncount = 12\n");
        let mut d = BoardDescription::from_toml(&text).unwrap();
        assert_eq!(d.led_ring.unwrap().brightness, 64);
        d.leds.as_mut().unwrap().red = 10;
        assert_eq!(
            d.problems(),
            ["leds.red: GPIO 10 is already used by SPI0 MOSI (LED ring)"]
        );
        d.leds.as_mut().unwrap().red = 5;
        d.led_ring.as_mut().unwrap().count = 0;
        assert_eq!(d.problems(), ["led_ring.count 0 must be 1 to 256"]);
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let e = BoardDescription::load(Path::new("/nonexistent/pins.toml")).unwrap_err();
        assert!(matches!(e, DescriptionError::Read { .. }));
    }

    #[test]
    fn an_invalid_description_reports_every_problem() {
        let text = r#"
board = "custom"
model = "x"
max_gpio = 27
[inputs.call_button]
gpio = 30
[inputs.privacy_switch]
gpio = 30
active_low = true
pull = "down"
"#;
        match BoardDescription::from_toml(text) {
            Err(DescriptionError::Invalid { board, problems }) => {
                assert_eq!(board, "custom");
                assert_eq!(problems.len(), 4, "{problems:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

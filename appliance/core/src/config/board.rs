//! The `[board]` section: which hardware the cart runs on and how its
//! controls behave (see docs/config.md). The board crate turns it into the
//! state machine's and the PTZ policy's configuration.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Most presets a cart keeps (the data channel's `ptz_preset` numbers 1 to this).
pub const MAX_PRESETS: usize = 16;

/// The boards the cart ships on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoardKind {
    /// No hardware: buttons from the console and the keyboard, LEDs on the console.
    Simulated,
    /// Raspberry Pi 4 Model B.
    Raspberrypi4,
    /// Raspberry Pi 5.
    Raspberrypi5,
    /// Compute Module 4 on the cart's carrier board.
    Cm4Carrier,
}

impl BoardKind {
    /// The folder name under `board/` and the `board` key of its description.
    pub fn name(self) -> &'static str {
        match self {
            BoardKind::Simulated => "simulated",
            BoardKind::Raspberrypi4 => "raspberrypi4",
            BoardKind::Raspberrypi5 => "raspberrypi5",
            BoardKind::Cm4Carrier => "cm4-carrier",
        }
    }
}

impl fmt::Display for BoardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A preset as fractions of the ranges: pan and tilt -1..1 (centre 0), zoom 0..1 (widest 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetPosition {
    /// Pan, -1 (left end) to 1 (right end).
    pub pan: f32,
    /// Tilt, -1 (down end) to 1 (up end).
    pub tilt: f32,
    /// Zoom, 0 (widest) to 1 (tightest).
    pub zoom: f32,
}

/// `[board]`: which hardware, and how the controls behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardConfig {
    /// `simulated` (default: console and keyboard), `raspberrypi4`, `raspberrypi5` or `cm4-carrier`.
    pub kind: BoardKind,
    /// A pin map file overriding the built-in one for `kind` (a carrier wired differently).
    pub pins_file: Option<PathBuf>,
    /// What the call button dials (SIP or WHIP URI); unset: the button only answers.
    pub outgoing_uri: Option<String>,
    /// Seconds an unanswered incoming call rings before it is turned away.
    pub ring_timeout_s: u32,
    /// Milliseconds a button or switch level must hold to count (debounce).
    pub debounce_ms: u32,
    /// Milliseconds the call button must be held to hang up.
    pub long_press_ms: u32,
    /// Milliseconds between input samples.
    pub poll_interval_ms: u32,
    /// Battery percentage at or below which the low-battery warning shows.
    pub low_battery_percent: u8,
    /// Seconds between fuel-gauge readings.
    pub battery_poll_s: u32,
    /// Far-end camera control.
    pub ptz: PtzSection,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            kind: BoardKind::Simulated,
            pins_file: None,
            outgoing_uri: None,
            ring_timeout_s: 60,
            debounce_ms: 20,
            long_press_ms: 1500,
            poll_interval_ms: 5,
            low_battery_percent: 15,
            battery_poll_s: 30,
            ptz: PtzSection::default(),
        }
    }
}

/// `[board.ptz]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PtzSection {
    /// Fraction of an axis's range that a full-scale `ptz_move` (1.0) covers.
    pub full_step: f32,
    /// Camera commands per second, sustained.
    pub rate_per_s: f32,
    /// Camera commands allowed back to back.
    pub burst: u32,
    /// Presets 1 to 16, in order.
    pub presets: Vec<PresetPosition>,
}

impl Default for PtzSection {
    fn default() -> Self {
        Self {
            full_step: 0.1,
            rate_per_s: 10.0,
            burst: 5,
            presets: Vec::new(),
        }
    }
}

impl BoardConfig {
    /// Every rule the types cannot express; empty when good.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| out.push((format!("board.{key}"), message));
        if let Some(uri) = &self.outgoing_uri {
            let ok = ["sip:", "sips:", "https://", "http://"]
                .iter()
                .any(|p| uri.starts_with(p) && uri.len() > p.len());
            if !ok {
                bad(
                    "outgoing_uri",
                    format!("{uri:?} is not a sip:, sips: or https:// URI"),
                );
            }
        }
        if !(5..=600).contains(&self.ring_timeout_s) {
            bad("ring_timeout_s", "must be 5 to 600 seconds".into());
        }
        if !(1..=200).contains(&self.debounce_ms) {
            bad("debounce_ms", "must be 1 to 200 ms".into());
        }
        if !(300..=10_000).contains(&self.long_press_ms) {
            bad("long_press_ms", "must be 300 to 10000 ms".into());
        } else if self.long_press_ms <= 2 * self.debounce_ms {
            bad(
                "long_press_ms",
                "must be well over debounce_ms (more than twice)".into(),
            );
        }
        if !(1..=50).contains(&self.poll_interval_ms) {
            bad("poll_interval_ms", "must be 1 to 50 ms".into());
        } else if self.poll_interval_ms > self.debounce_ms {
            bad(
                "poll_interval_ms",
                "must not exceed debounce_ms, or bounce is sampled too rarely to filter".into(),
            );
        }
        if self.low_battery_percent > 50 {
            bad("low_battery_percent", "must be 0 to 50".into());
        }
        if !(1..=3600).contains(&self.battery_poll_s) {
            bad("battery_poll_s", "must be 1 to 3600 seconds".into());
        }
        let p = &self.ptz;
        if !(p.full_step > 0.0 && p.full_step <= 1.0) {
            bad("ptz.full_step", "must be above 0 and at most 1".into());
        }
        if !(p.rate_per_s > 0.0 && p.rate_per_s <= 100.0) {
            bad("ptz.rate_per_s", "must be above 0 and at most 100".into());
        }
        if !(1..=100).contains(&p.burst) {
            bad("ptz.burst", "must be 1 to 100".into());
        }
        if p.presets.len() > MAX_PRESETS {
            bad("ptz.presets", format!("at most {MAX_PRESETS} presets"));
        }
        for (i, pr) in p.presets.iter().enumerate() {
            let in_range = |v: f32, lo: f32| v.is_finite() && (lo..=1.0).contains(&v);
            if !(in_range(pr.pan, -1.0) && in_range(pr.tilt, -1.0) && in_range(pr.zoom, 0.0)) {
                bad(
                    "ptz.presets",
                    format!(
                        "preset {}: pan and tilt must be -1 to 1, zoom 0 to 1",
                        i + 1
                    ),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_simulated() {
        let c = BoardConfig::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.kind, BoardKind::Simulated);
        let parsed: BoardConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn a_full_section_parses() {
        let c: BoardConfig = toml::from_str(
            r#"
kind = "raspberrypi5"
outgoing_uri = "sip:nurse-station@pbx.hospital.example"
long_press_ms = 2000
[ptz]
rate_per_s = 5
presets = [ { pan = 0, tilt = 0, zoom = 0 }, { pan = -0.5, tilt = 0.2, zoom = 0.8 } ]
"#,
        )
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.kind, BoardKind::Raspberrypi5);
        assert_eq!(c.ring_timeout_s, 60);
        assert_eq!(c.ptz.presets.len(), 2);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<BoardConfig>("debounce = 5").is_err());
        assert!(toml::from_str::<BoardConfig>("kind = \"pi4\"").is_err());
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let c = BoardConfig {
            outgoing_uri: Some("nurse".into()),
            debounce_ms: 0,
            long_press_ms: 100,
            poll_interval_ms: 100,
            low_battery_percent: 90,
            ptz: PtzSection {
                full_step: 0.0,
                rate_per_s: f32::NAN,
                burst: 0,
                presets: vec![PresetPosition {
                    pan: 2.0,
                    tilt: 0.0,
                    zoom: -1.0,
                }],
            },
            ..BoardConfig::default()
        };
        let keys: Vec<_> = c.validate().into_iter().map(|(key, _)| key).collect();
        assert_eq!(
            keys,
            [
                "board.outgoing_uri",
                "board.debounce_ms",
                "board.long_press_ms",
                "board.poll_interval_ms",
                "board.low_battery_percent",
                "board.ptz.full_step",
                "board.ptz.rate_per_s",
                "board.ptz.burst",
                "board.ptz.presets",
            ]
        );
    }
}

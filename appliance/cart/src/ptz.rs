//! Far-end camera control: data-channel `ptz_move` and `ptz_preset` messages
//! turned into absolute V4L2 pan/tilt/zoom values, within the camera's limits
//! and at a bounded rate. Pure: the runtime reads the limits from the camera
//! (`ControlInfo` of `telecart-devices`), feeds messages with `now`, and sets
//! each returned [`PtzSet`] through the camera's control handle
//! (`Pan`/`Tilt`/`Zoom` absolute controls).
//!
//! - A move of 1.0 on an axis moves it by [`PtzConfig::full_step`] of that
//!   axis's range; the new position is clamped to the limits and snapped to
//!   the control's step. Reaching an end is not an error.
//! - Values outside -1..1, NaN and infinities are refused with
//!   [`PtzError::OutOfRange`]; the position does not change.
//! - A token bucket ([`PtzConfig::rate_per_s`], [`PtzConfig::burst`]) bounds
//!   how often the camera is driven; commands over it are refused with
//!   [`PtzError::RateLimited`] and counted ([`PtzController::dropped`]).
//! - Presets 1 to 16 are local (from the configuration, or stored from the
//!   current position with [`PtzController::store_preset`]).

use serde::Serialize;
use telecart_webrtc::datachannel::{Message, PtzMove};

use crate::Timestamp;

/// A camera axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PtzAxis {
    /// `V4L2_CID_PAN_ABSOLUTE`.
    Pan,
    /// `V4L2_CID_TILT_ABSOLUTE`.
    Tilt,
    /// `V4L2_CID_ZOOM_ABSOLUTE`.
    Zoom,
}

/// The range of one control, as the camera reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisLimits {
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Values are `min + k * step` (0 is taken as 1).
    pub step: u64,
}

impl AxisLimits {
    fn clamp_snap(&self, v: f64) -> i64 {
        let (min, max) = (self.min.min(self.max), self.max.max(self.min));
        let step = self.step.max(1) as f64;
        let k = ((v - min as f64) / step).round();
        let snapped = min as f64 + k * step;
        (snapped as i64).clamp(min, max)
    }

    fn span(&self) -> f64 {
        (self.max as f64 - self.min as f64).abs()
    }
}

/// Which axes the camera has, and their ranges; `None`: the camera lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PtzLimits {
    /// Pan range.
    pub pan: Option<AxisLimits>,
    /// Tilt range.
    pub tilt: Option<AxisLimits>,
    /// Zoom range.
    pub zoom: Option<AxisLimits>,
}

impl PtzLimits {
    fn get(&self, axis: PtzAxis) -> Option<AxisLimits> {
        match axis {
            PtzAxis::Pan => self.pan,
            PtzAxis::Tilt => self.tilt,
            PtzAxis::Zoom => self.zoom,
        }
    }
}

pub use telecart_core::config::PresetPosition;

/// PTZ policy from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PtzConfig {
    /// Fraction of an axis's range that a move of 1.0 covers (0 < x ≤ 1).
    pub full_step: f32,
    /// Commands per second the camera is driven at, sustained.
    pub rate_per_s: f32,
    /// Commands allowed back to back before the rate applies.
    pub burst: u32,
    /// Configured presets, `presets[0]` is preset 1; at most 16.
    pub presets: Vec<PresetPosition>,
}

impl Default for PtzConfig {
    /// The `[board.ptz]` defaults: one set of numbers, in the configuration.
    fn default() -> Self {
        let section = telecart_core::config::PtzSection::default();
        Self {
            full_step: section.full_step,
            rate_per_s: section.rate_per_s,
            burst: section.burst,
            presets: section.presets,
        }
    }
}

/// One control to set on the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PtzSet {
    /// Which axis.
    pub axis: PtzAxis,
    /// Absolute value within the camera's limits.
    pub value: i64,
}

/// Why a PTZ command was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PtzError {
    /// A value outside -1..1 or not a number.
    #[error("{axis:?} value {value} is outside -1..1")]
    OutOfRange {
        /// Which axis.
        axis: PtzAxis,
        /// The value sent.
        value: f32,
    },
    /// Preset number outside 1..16, or nothing stored under it.
    #[error("preset {0} is not set (presets are 1 to 16)")]
    UnknownPreset(u8),
    /// Too many commands; this one was dropped.
    #[error("PTZ command dropped: over {rate_per_s}/s")]
    RateLimited {
        /// The configured rate.
        rate_per_s: f32,
    },
    /// The camera has none of pan, tilt and zoom.
    #[error("the camera has no pan, tilt or zoom control")]
    NoPtz,
    /// The message is not a PTZ command.
    #[error("not a PTZ message")]
    NotPtz,
}

/// Absolute position in camera units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PtzPosition {
    /// Pan value.
    pub pan: i64,
    /// Tilt value.
    pub tilt: i64,
    /// Zoom value.
    pub zoom: i64,
}

impl PtzPosition {
    fn get(&self, axis: PtzAxis) -> i64 {
        match axis {
            PtzAxis::Pan => self.pan,
            PtzAxis::Tilt => self.tilt,
            PtzAxis::Zoom => self.zoom,
        }
    }

    fn set(&mut self, axis: PtzAxis, v: i64) {
        match axis {
            PtzAxis::Pan => self.pan = v,
            PtzAxis::Tilt => self.tilt = v,
            PtzAxis::Zoom => self.zoom = v,
        }
    }
}

const AXES: [PtzAxis; 3] = [PtzAxis::Pan, PtzAxis::Tilt, PtzAxis::Zoom];

pub use telecart_core::config::MAX_PRESETS;

/// The PTZ policy for one camera. See the [module docs](self).
#[derive(Debug)]
pub struct PtzController {
    limits: PtzLimits,
    config: PtzConfig,
    position: PtzPosition,
    presets: [Option<PtzPosition>; MAX_PRESETS],
    tokens: f64,
    refilled: Option<Timestamp>,
    dropped: u64,
}

impl PtzController {
    /// A controller for a camera with `limits`, now at `position` (read from the camera).
    pub fn new(limits: PtzLimits, config: PtzConfig, position: PtzPosition) -> Self {
        let mut presets = [None; MAX_PRESETS];
        for (slot, p) in presets.iter_mut().zip(&config.presets) {
            *slot = Some(Self::preset_to_position(&limits, p, position));
        }
        Self {
            limits,
            tokens: f64::from(config.burst.max(1)),
            config,
            position,
            presets,
            refilled: None,
            dropped: 0,
        }
    }

    /// Where the camera is (as far as this controller has driven it).
    pub fn position(&self) -> PtzPosition {
        self.position
    }

    /// Commands dropped by the rate limit so far (for metrics).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Handles a data-channel message: `PtzMove` or `PtzPreset`.
    pub fn handle_message(
        &mut self,
        now: Timestamp,
        msg: &Message,
    ) -> Result<Vec<PtzSet>, PtzError> {
        match msg {
            Message::PtzMove(m) => self.move_by(now, *m),
            Message::PtzPreset { preset } => self.go_to_preset(now, *preset),
            _ => Err(PtzError::NotPtz),
        }
    }

    /// A relative move. Returns the controls to set (only those that change).
    pub fn move_by(&mut self, now: Timestamp, m: PtzMove) -> Result<Vec<PtzSet>, PtzError> {
        for (axis, v) in [
            (PtzAxis::Pan, m.pan),
            (PtzAxis::Tilt, m.tilt),
            (PtzAxis::Zoom, m.zoom),
        ] {
            if !v.is_finite() || !(-1.0..=1.0).contains(&v) {
                return Err(PtzError::OutOfRange { axis, value: v });
            }
        }
        self.check_ptz()?;
        self.take_token(now)?;
        let mut target = self.position;
        for (axis, v) in [
            (PtzAxis::Pan, m.pan),
            (PtzAxis::Tilt, m.tilt),
            (PtzAxis::Zoom, m.zoom),
        ] {
            if let Some(l) = self.limits.get(axis)
                && v != 0.0
            {
                let delta = f64::from(v) * f64::from(self.config.full_step) * l.span();
                target.set(axis, l.clamp_snap(self.position.get(axis) as f64 + delta));
            }
        }
        Ok(self.go(target))
    }

    /// Goes to preset `preset` (1 to 16).
    pub fn go_to_preset(&mut self, now: Timestamp, preset: u8) -> Result<Vec<PtzSet>, PtzError> {
        let target = preset
            .checked_sub(1)
            .and_then(|i| self.presets.get(usize::from(i)).copied().flatten())
            .ok_or(PtzError::UnknownPreset(preset))?;
        self.check_ptz()?;
        self.take_token(now)?;
        Ok(self.go(target))
    }

    /// Stores the current position as preset `preset` (1 to 16).
    pub fn store_preset(&mut self, preset: u8) -> Result<(), PtzError> {
        let slot = preset
            .checked_sub(1)
            .and_then(|i| self.presets.get_mut(usize::from(i)))
            .ok_or(PtzError::UnknownPreset(preset))?;
        *slot = Some(self.position);
        Ok(())
    }

    fn check_ptz(&self) -> Result<(), PtzError> {
        if AXES.iter().all(|a| self.limits.get(*a).is_none()) {
            return Err(PtzError::NoPtz);
        }
        Ok(())
    }

    fn take_token(&mut self, now: Timestamp) -> Result<(), PtzError> {
        let burst = f64::from(self.config.burst.max(1));
        if let Some(last) = self.refilled {
            let secs = now.ms_since(last) as f64 / 1000.0;
            self.tokens =
                (self.tokens + secs * f64::from(self.config.rate_per_s.max(0.0))).min(burst);
        }
        self.refilled = Some(now.max(self.refilled.unwrap_or(now)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            self.dropped += 1;
            Err(PtzError::RateLimited {
                rate_per_s: self.config.rate_per_s,
            })
        }
    }

    fn go(&mut self, target: PtzPosition) -> Vec<PtzSet> {
        let mut out = Vec::new();
        for axis in AXES {
            if self.limits.get(axis).is_some() && target.get(axis) != self.position.get(axis) {
                out.push(PtzSet {
                    axis,
                    value: target.get(axis),
                });
            }
        }
        self.position = target;
        out
    }

    fn preset_to_position(
        limits: &PtzLimits,
        p: &PresetPosition,
        current: PtzPosition,
    ) -> PtzPosition {
        let mut pos = current;
        let frac =
            |l: AxisLimits, f: f64| l.clamp_snap(l.min as f64 + f * (l.max as f64 - l.min as f64));
        if let Some(l) = limits.pan {
            pos.pan = frac(l, (f64::from(p.pan).clamp(-1.0, 1.0) + 1.0) / 2.0);
        }
        if let Some(l) = limits.tilt {
            pos.tilt = frac(l, (f64::from(p.tilt).clamp(-1.0, 1.0) + 1.0) / 2.0);
        }
        if let Some(l) = limits.zoom {
            pos.zoom = frac(l, f64::from(p.zoom).clamp(0.0, 1.0));
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typical USB PTZ camera: pan/tilt ±180°/±90° in arc seconds (3600 per degree), zoom 100..500.
    fn limits() -> PtzLimits {
        PtzLimits {
            pan: Some(AxisLimits {
                min: -648_000,
                max: 648_000,
                step: 3600,
            }),
            tilt: Some(AxisLimits {
                min: -324_000,
                max: 324_000,
                step: 3600,
            }),
            zoom: Some(AxisLimits {
                min: 100,
                max: 500,
                step: 1,
            }),
        }
    }

    fn controller() -> PtzController {
        PtzController::new(
            limits(),
            PtzConfig::default(),
            PtzPosition {
                pan: 0,
                tilt: 0,
                zoom: 100,
            },
        )
    }

    fn mv(pan: f32, tilt: f32, zoom: f32) -> PtzMove {
        PtzMove { pan, tilt, zoom }
    }

    #[test]
    fn a_full_move_covers_the_configured_fraction_snapped_to_the_step() {
        let mut c = controller();
        let sets = c.move_by(Timestamp(0), mv(1.0, -0.5, 0.0)).unwrap();
        // 10% of 1_296_000 = 129_600 = 36 steps; half of 10% of 648_000 = 32_400 = 9 steps.
        assert_eq!(
            sets,
            vec![
                PtzSet {
                    axis: PtzAxis::Pan,
                    value: 129_600
                },
                PtzSet {
                    axis: PtzAxis::Tilt,
                    value: -32_400
                },
            ]
        );
    }

    #[test]
    fn moves_stop_at_the_limits() {
        let mut c = controller();
        for i in 0..20 {
            let _ = c.move_by(Timestamp(i * 1000), mv(1.0, 1.0, 1.0));
        }
        assert_eq!(
            c.position(),
            PtzPosition {
                pan: 648_000,
                tilt: 324_000,
                zoom: 500
            }
        );
        let sets = c.move_by(Timestamp(30_000), mv(1.0, 1.0, 1.0)).unwrap();
        assert!(sets.is_empty(), "nothing changes at the end stops");
    }

    #[test]
    fn out_of_range_and_non_finite_values_are_refused_without_moving() {
        let mut c = controller();
        for bad in [
            mv(1.5, 0.0, 0.0),
            mv(0.0, -2.0, 0.0),
            mv(0.0, 0.0, f32::NAN),
            mv(f32::INFINITY, 0.0, 0.0),
        ] {
            assert!(matches!(
                c.move_by(Timestamp(0), bad),
                Err(PtzError::OutOfRange { .. })
            ));
        }
        assert_eq!(
            c.position(),
            PtzPosition {
                pan: 0,
                tilt: 0,
                zoom: 100
            }
        );
        assert_eq!(c.dropped(), 0, "refused values do not use the rate budget");
    }

    #[test]
    fn a_flood_is_rate_limited_and_counted() {
        let mut c = controller();
        let results: Vec<_> = (0..100)
            .map(|_| c.move_by(Timestamp(5_000), mv(0.1, 0.0, 0.0)))
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 5, "the burst");
        assert_eq!(c.dropped(), 95);
        assert!(matches!(results[99], Err(PtzError::RateLimited { .. })));
        // 10/s: after 100 ms one more is allowed, not two.
        assert!(c.move_by(Timestamp(5_100), mv(0.1, 0.0, 0.0)).is_ok());
        assert!(c.move_by(Timestamp(5_100), mv(0.1, 0.0, 0.0)).is_err());
    }

    #[test]
    fn sustained_commands_at_the_rate_all_pass() {
        let mut c = controller();
        for i in 0..100 {
            assert!(
                c.move_by(Timestamp(i * 100), mv(0.01, 0.0, 0.0)).is_ok(),
                "command {i}"
            );
        }
    }

    #[test]
    fn configured_presets_map_fractions_to_the_range() {
        let config = PtzConfig {
            presets: vec![
                PresetPosition {
                    pan: 0.0,
                    tilt: 0.0,
                    zoom: 0.0,
                },
                PresetPosition {
                    pan: -1.0,
                    tilt: 0.5,
                    zoom: 1.0,
                },
            ],
            ..PtzConfig::default()
        };
        let mut c = PtzController::new(
            limits(),
            config,
            PtzPosition {
                pan: 36_000,
                tilt: 0,
                zoom: 300,
            },
        );
        let sets = c
            .handle_message(Timestamp(0), &Message::PtzPreset { preset: 2 })
            .unwrap();
        assert_eq!(
            sets,
            vec![
                PtzSet {
                    axis: PtzAxis::Pan,
                    value: -648_000
                },
                PtzSet {
                    axis: PtzAxis::Tilt,
                    value: 162_000
                },
                PtzSet {
                    axis: PtzAxis::Zoom,
                    value: 500
                },
            ]
        );
        c.go_to_preset(Timestamp(1000), 1).unwrap();
        assert_eq!(
            c.position(),
            PtzPosition {
                pan: 0,
                tilt: 0,
                zoom: 100
            }
        );
    }

    #[test]
    fn unknown_presets_are_refused() {
        let mut c = controller();
        for p in [0, 1, 16, 17, 255] {
            assert_eq!(
                c.go_to_preset(Timestamp(0), p),
                Err(PtzError::UnknownPreset(p))
            );
        }
        assert_eq!(c.store_preset(0), Err(PtzError::UnknownPreset(0)));
        assert_eq!(c.store_preset(17), Err(PtzError::UnknownPreset(17)));
    }

    #[test]
    fn a_stored_preset_returns_to_the_position() {
        let mut c = controller();
        c.move_by(Timestamp(0), mv(0.5, 0.5, 0.5)).unwrap();
        let there = c.position();
        c.store_preset(3).unwrap();
        c.move_by(Timestamp(1000), mv(-1.0, -1.0, -1.0)).unwrap();
        c.go_to_preset(Timestamp(2000), 3).unwrap();
        assert_eq!(c.position(), there);
    }

    #[test]
    fn axes_the_camera_lacks_are_left_alone() {
        let only_zoom = PtzLimits {
            zoom: Some(AxisLimits {
                min: 0,
                max: 10,
                step: 1,
            }),
            ..PtzLimits::default()
        };
        let mut c = PtzController::new(only_zoom, PtzConfig::default(), PtzPosition::default());
        let sets = c.move_by(Timestamp(0), mv(1.0, 1.0, 1.0)).unwrap();
        assert_eq!(
            sets,
            vec![PtzSet {
                axis: PtzAxis::Zoom,
                value: 1
            }]
        );
        let mut none = PtzController::new(
            PtzLimits::default(),
            PtzConfig::default(),
            PtzPosition::default(),
        );
        assert_eq!(
            none.move_by(Timestamp(0), mv(1.0, 0.0, 0.0)),
            Err(PtzError::NoPtz)
        );
    }

    #[test]
    fn other_messages_are_not_ptz() {
        let mut c = controller();
        assert_eq!(
            c.handle_message(Timestamp(0), &Message::Keyframe {}),
            Err(PtzError::NotPtz)
        );
    }

    #[test]
    fn a_reversed_or_zero_step_range_does_not_panic() {
        let odd = PtzLimits {
            pan: Some(AxisLimits {
                min: 10,
                max: -10,
                step: 0,
            }),
            ..PtzLimits::default()
        };
        let mut c = PtzController::new(odd, PtzConfig::default(), PtzPosition::default());
        for _ in 0..5 {
            let _ = c.move_by(Timestamp(0), mv(1.0, 0.0, 0.0));
        }
        assert!((-10..=10).contains(&c.position().pan));
    }
}

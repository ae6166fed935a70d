//! LED patterns on embassy-time and embedded-hal.
//!
//! [`LedPlayer`] turns the state machine's [`Indication`] (a colour, a blink
//! and the low-battery flag) into the RGB level at any instant. The pattern
//! starts over whenever the indication changes, so a new state is visible at
//! once. With the battery low, the last [`BATTERY_WARNING`] of every
//! [`BATTERY_CYCLE`] is replaced by two short red flashes, whatever the state.

use embassy_time::{Duration, Instant};
use embedded_hal::digital::{OutputPin, PinState};
use serde::Serialize;
use telecart_cart::machine::{Blink, Indication, LedColor, LedPattern};

/// Slow blink half period.
pub const SLOW: Duration = Duration::from_millis(1000);
/// Fast blink half period.
pub const FAST: Duration = Duration::from_millis(250);
/// How often the low-battery warning interrupts the pattern.
pub const BATTERY_CYCLE: Duration = Duration::from_millis(4000);
/// How long the low-battery warning lasts: on 100, off 100, on 100, off 100 ms.
pub const BATTERY_WARNING: Duration = Duration::from_millis(400);
const FLASH_MS: u64 = 100;

/// The three LED channels (or one RGB LED, or the colour of the whole ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Rgb {
    /// Red lit.
    pub red: bool,
    /// Green lit.
    pub green: bool,
    /// Blue lit.
    pub blue: bool,
}

impl Rgb {
    /// All off.
    pub const OFF: Rgb = Rgb {
        red: false,
        green: false,
        blue: false,
    };

    /// The channels of a colour.
    pub fn of(color: LedColor) -> Rgb {
        let (red, green, blue) = match color {
            LedColor::Red => (true, false, false),
            LedColor::Green => (false, true, false),
            LedColor::Blue => (false, false, true),
            LedColor::Amber => (true, true, false),
            LedColor::Cyan => (false, true, true),
            LedColor::White => (true, true, true),
        };
        Rgb { red, green, blue }
    }
}

/// Plays the indication's pattern. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LedPlayer {
    pattern: LedPattern,
    battery_low: bool,
    started: Instant,
}

impl LedPlayer {
    /// A player showing `indication` from now.
    pub fn new(indication: &Indication) -> Self {
        Self::new_at(Instant::now(), indication)
    }

    /// A player showing `indication` from `now`.
    pub fn new_at(now: Instant, indication: &Indication) -> Self {
        Self {
            pattern: indication.led,
            battery_low: indication.battery_low,
            started: now,
        }
    }

    /// Shows `indication` from now; restarts the pattern only if it changed.
    pub fn set(&mut self, indication: &Indication) {
        self.set_at(Instant::now(), indication)
    }

    /// Shows `indication` from `now`; restarts the pattern only if it changed.
    pub fn set_at(&mut self, now: Instant, indication: &Indication) {
        if indication.led != self.pattern || indication.battery_low != self.battery_low {
            *self = Self::new_at(now, indication);
        }
    }

    /// The LED level now.
    pub fn output(&self) -> Rgb {
        self.output_at(Instant::now())
    }

    /// The LED level at `now`.
    pub fn output_at(&self, now: Instant) -> Rgb {
        let t = now.saturating_duration_since(self.started).as_millis();
        if self.battery_low {
            let cycle = BATTERY_CYCLE.as_millis();
            let warn_from = cycle - BATTERY_WARNING.as_millis();
            let phase = t % cycle;
            if phase >= warn_from {
                let flash = (phase - warn_from) / FLASH_MS;
                return if flash.is_multiple_of(2) {
                    Rgb::of(LedColor::Red)
                } else {
                    Rgb::OFF
                };
            }
        }
        let lit = match self.pattern.blink {
            Blink::Off => false,
            Blink::Solid => true,
            Blink::Slow => (t / SLOW.as_millis()).is_multiple_of(2),
            Blink::Fast => (t / FAST.as_millis()).is_multiple_of(2),
        };
        if lit {
            Rgb::of(self.pattern.color)
        } else {
            Rgb::OFF
        }
    }

    /// When the level next changes after `now` (`None`: never). An async loop
    /// sleeps until then (`Timer::at`), a polling loop may ignore it.
    pub fn next_change_at(&self, now: Instant) -> Option<Instant> {
        let t = now.saturating_duration_since(self.started).as_millis();
        let mut candidates: Vec<u64> = Vec::new();
        let half = match self.pattern.blink {
            Blink::Slow => Some(SLOW.as_millis()),
            Blink::Fast => Some(FAST.as_millis()),
            Blink::Off | Blink::Solid => None,
        };
        if let Some(h) = half {
            candidates.push((t / h + 1) * h);
        }
        if self.battery_low {
            let cycle = BATTERY_CYCLE.as_millis();
            let warn_from = cycle - BATTERY_WARNING.as_millis();
            let base = t - t % cycle;
            let phase = t % cycle;
            let next = if phase < warn_from {
                base + warn_from
            } else {
                base + warn_from + ((phase - warn_from) / FLASH_MS + 1) * FLASH_MS
            };
            candidates.push(next);
        }
        candidates
            .into_iter()
            .min()
            .map(|ms| self.started + Duration::from_millis(ms))
    }

    /// Drives three output pins (`active_low` for common-anode LEDs) with the level now.
    pub fn drive<R, G, B>(
        &self,
        red: &mut R,
        green: &mut G,
        blue: &mut B,
        active_low: bool,
    ) -> Result<Rgb, DriveError>
    where
        R: OutputPin,
        G: OutputPin,
        B: OutputPin,
    {
        let rgb = self.output();
        let state = |on: bool| PinState::from(on != active_low);
        red.set_state(state(rgb.red)).map_err(|_| DriveError)?;
        green.set_state(state(rgb.green)).map_err(|_| DriveError)?;
        blue.set_state(state(rgb.blue)).map_err(|_| DriveError)?;
        Ok(rgb)
    }
}

/// SPI clock for [`ws2812_spi_frame`]: 2.4 MHz, three SPI bits per WS2812 bit (1.25 µs).
pub const WS2812_SPI_HZ: u32 = 2_400_000;

/// The SPI bytes that show `rgb` (scaled by `brightness`) on `count` WS2812 LEDs.
///
/// Each WS2812 bit becomes three SPI bits (`110` for 1, `100` for 0) at
/// [`WS2812_SPI_HZ`]; colours go green, red, blue, most significant bit first;
/// a leading zero byte keeps MOSI low before the first bit and 15 trailing
/// zero bytes (50 µs) latch the colours.
pub fn ws2812_spi_frame(rgb: Rgb, brightness: u8, count: u16) -> Vec<u8> {
    let level = |on: bool| if on { brightness } else { 0 };
    let grb = [level(rgb.green), level(rgb.red), level(rgb.blue)];
    let mut out = Vec::with_capacity(1 + usize::from(count) * 9 + 15);
    out.push(0);
    for _ in 0..count {
        for byte in grb {
            let mut bits: u32 = 0;
            for i in (0..8).rev() {
                bits = (bits << 3) | if byte >> i & 1 == 1 { 0b110 } else { 0b100 };
            }
            out.extend_from_slice(&bits.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 15]);
    out
}

/// An LED pin could not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an LED output pin could not be set")]
pub struct DriveError;

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_cart::machine::CartState;

    fn ind(state: CartState, battery_low: bool) -> Indication {
        Indication {
            state,
            led: state.led(),
            privacy: false,
            battery_low,
        }
    }

    #[test]
    fn colours_map_to_channels() {
        assert_eq!(
            Rgb::of(LedColor::Amber),
            Rgb {
                red: true,
                green: true,
                blue: false
            }
        );
        assert_eq!(
            Rgb::of(LedColor::White),
            Rgb {
                red: true,
                green: true,
                blue: true
            }
        );
    }

    #[test]
    fn ws2812_frame_encodes_grb_three_spi_bits_per_bit() {
        let f = ws2812_spi_frame(Rgb::of(LedColor::Red), 255, 2);
        assert_eq!(f.len(), 1 + 2 * 9 + 15);
        assert_eq!(f[0], 0);
        let zero = [0x92, 0x49, 0x24]; // 100 x 8
        let full = [0xdb, 0x6d, 0xb6]; // 110 x 8
        for led in 0..2 {
            let b = &f[1 + led * 9..1 + led * 9 + 9];
            assert_eq!(&b[0..3], &zero, "green");
            assert_eq!(&b[3..6], &full, "red");
            assert_eq!(&b[6..9], &zero, "blue");
        }
        assert!(f[19..].iter().all(|&b| b == 0), "latch");
        let dim = ws2812_spi_frame(Rgb::of(LedColor::Green), 0x80, 1);
        assert_eq!(&dim[1..4], &[0xd2, 0x49, 0x24]); // 0x80: 110 then 100 x 7
    }

    #[test]
    fn next_change_follows_the_blink() {
        let t0 = Instant::from_millis(10_000);
        let p = LedPlayer::new_at(t0, &ind(CartState::Ringing, false));
        assert_eq!(
            p.next_change_at(t0 + Duration::from_millis(10)),
            Some(t0 + FAST)
        );
        let solid = LedPlayer::new_at(t0, &ind(CartState::Ready, false));
        assert_eq!(solid.next_change_at(t0), None);
        let low = LedPlayer::new_at(t0, &ind(CartState::Ready, true));
        assert_eq!(
            low.next_change_at(t0),
            Some(t0 + Duration::from_millis(3600))
        );
        assert_eq!(
            low.next_change_at(t0 + Duration::from_millis(3650)),
            Some(t0 + Duration::from_millis(3700))
        );
    }
}

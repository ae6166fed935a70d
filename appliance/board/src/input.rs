//! Debounce and long press, on embassy-time and embedded-hal.
//!
//! Nothing here names a time driver: the daemon links embassy-time's `std`
//! driver, a companion MCU its HAL's driver, and the tests the mock driver.
//! Each detector has a `*_at(now, level)` form (pure, for callers that keep
//! their own time) and a plain form that reads [`Instant::now`].
//!
//! A level counts only after it has held for the settle time, so switch
//! bounce and glitches shorter than that never reach the state machine.

use embassy_time::{Duration, Instant};
use embedded_hal::digital::InputPin;
use telecart_cart::machine::Press;

/// Default settle time: contacts of the buttons fitted bounce for under 10 ms.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(20);
/// Default long-press time (hang up).
pub const DEFAULT_LONG_PRESS: Duration = Duration::from_millis(1500);

/// Reads a pin as "active" (pressed / switch on), honouring active-low wiring.
pub fn read_active<P: InputPin>(pin: &mut P, active_low: bool) -> Result<bool, P::Error> {
    Ok(pin.is_high()? != active_low)
}

/// A debounced level: changes only after the raw level has held for the settle time.
#[derive(Debug, Clone)]
pub struct Debouncer {
    settle: Duration,
    stable: bool,
    candidate: bool,
    since: Option<Instant>,
}

impl Debouncer {
    /// Starts at `initial` (read once at start-up, so a switch already on is not a toggle).
    pub fn new(settle: Duration, initial: bool) -> Self {
        Self {
            settle,
            stable: initial,
            candidate: initial,
            since: None,
        }
    }

    /// The debounced level.
    pub fn level(&self) -> bool {
        self.stable
    }

    /// Feeds a raw sample taken now; returns the new level when it changes.
    pub fn update(&mut self, raw: bool) -> Option<bool> {
        self.update_at(Instant::now(), raw)
    }

    /// Feeds a raw sample taken at `now`; returns the new level when it changes.
    pub fn update_at(&mut self, now: Instant, raw: bool) -> Option<bool> {
        if raw == self.stable {
            self.candidate = raw;
            self.since = None;
            return None;
        }
        if raw != self.candidate || self.since.is_none() {
            self.candidate = raw;
            self.since = Some(now);
        }
        match self.since {
            Some(t) if now.saturating_duration_since(t) >= self.settle => {
                self.stable = raw;
                self.since = None;
                Some(raw)
            }
            _ => None,
        }
    }
}

/// A push button: short press on release, long press as soon as it has been held long enough.
#[derive(Debug, Clone)]
pub struct Button {
    debouncer: Debouncer,
    long: Duration,
    pressed_at: Option<Instant>,
    long_sent: bool,
}

impl Button {
    /// A button released at start (a button held at power-on must be released first).
    pub fn new(settle: Duration, long: Duration) -> Self {
        Self {
            debouncer: Debouncer::new(settle, false),
            long,
            pressed_at: None,
            long_sent: false,
        }
    }

    /// Feeds a raw sample (true: pressed) taken now.
    pub fn update(&mut self, pressed: bool) -> Option<Press> {
        self.update_at(Instant::now(), pressed)
    }

    /// Feeds a raw sample (true: pressed) taken at `now`.
    ///
    /// Returns [`Press::Long`] once, while still held, when the press reaches
    /// the long-press time, and [`Press::Short`] on a release before that.
    pub fn update_at(&mut self, now: Instant, pressed: bool) -> Option<Press> {
        match self.debouncer.update_at(now, pressed) {
            Some(true) => {
                // The press began when the contact first closed, not when it settled.
                self.pressed_at = Some(now.checked_sub(self.debouncer.settle).unwrap_or(now));
                self.long_sent = false;
                None
            }
            Some(false) => {
                let was_long = self.long_sent;
                self.pressed_at = None;
                self.long_sent = false;
                (!was_long).then_some(Press::Short)
            }
            None => match self.pressed_at {
                Some(t)
                    if self.debouncer.level()
                        && !self.long_sent
                        && now.saturating_duration_since(t) >= self.long =>
                {
                    self.long_sent = true;
                    Some(Press::Long)
                }
                _ => None,
            },
        }
    }

    /// Reads `pin` now and feeds it.
    pub fn poll<P: InputPin>(
        &mut self,
        pin: &mut P,
        active_low: bool,
    ) -> Result<Option<Press>, P::Error> {
        let pressed = read_active(pin, active_low)?;
        Ok(self.update(pressed))
    }
}

/// A toggle switch (privacy): reports each debounced change of position.
#[derive(Debug, Clone)]
pub struct Switch {
    debouncer: Debouncer,
}

impl Switch {
    /// A switch whose position at start is `initial`.
    pub fn new(settle: Duration, initial: bool) -> Self {
        Self {
            debouncer: Debouncer::new(settle, initial),
        }
    }

    /// The debounced position.
    pub fn is_on(&self) -> bool {
        self.debouncer.level()
    }

    /// Feeds a raw sample taken now; returns the new position when it changes.
    pub fn update(&mut self, on: bool) -> Option<bool> {
        self.debouncer.update(on)
    }

    /// Feeds a raw sample taken at `now`.
    pub fn update_at(&mut self, now: Instant, on: bool) -> Option<bool> {
        self.debouncer.update_at(now, on)
    }

    /// Reads `pin` now and feeds it.
    pub fn poll<P: InputPin>(
        &mut self,
        pin: &mut P,
        active_low: bool,
    ) -> Result<Option<bool>, P::Error> {
        let on = read_active(pin, active_low)?;
        Ok(self.update(on))
    }
}

#[cfg(test)]
mod tests {
    //! Pure tests with explicit instants; the mock-clock tests are in `tests/mock_clock.rs`.
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn bounce_settles_to_one_change() {
        let mut d = Debouncer::new(Duration::from_millis(20), false);
        let samples = [(0, true), (2, false), (4, true), (5, false), (7, true)];
        for (t, l) in samples {
            assert_eq!(d.update_at(at(t), l), None);
        }
        assert_eq!(d.update_at(at(26), true), None);
        assert_eq!(d.update_at(at(27), true), Some(true));
        assert_eq!(d.update_at(at(40), true), None);
    }

    #[test]
    fn a_glitch_shorter_than_settle_is_ignored() {
        let mut d = Debouncer::new(Duration::from_millis(20), false);
        assert_eq!(d.update_at(at(0), true), None);
        assert_eq!(d.update_at(at(15), false), None);
        assert_eq!(d.update_at(at(100), false), None);
        assert!(!d.level());
    }

    #[test]
    fn short_and_long_presses() {
        let mut b = Button::new(Duration::from_millis(20), Duration::from_millis(1500));
        assert_eq!(b.update_at(at(0), true), None);
        assert_eq!(b.update_at(at(20), true), None);
        assert_eq!(b.update_at(at(300), false), None);
        assert_eq!(b.update_at(at(320), false), Some(Press::Short));

        assert_eq!(b.update_at(at(1000), true), None);
        assert_eq!(b.update_at(at(1020), true), None);
        assert_eq!(b.update_at(at(2499), true), None);
        assert_eq!(b.update_at(at(2500), true), Some(Press::Long));
        assert_eq!(b.update_at(at(4000), true), None, "long is sent once");
        assert_eq!(b.update_at(at(4100), false), None);
        assert_eq!(b.update_at(at(4120), false), None, "no short after a long");
    }
}

//! Captions burned into the outgoing video, for viewers with no data channel (SIP video
//! phones; an SFU's viewers with `burn_in = "always"`). The captioner says what to show, calls
//! say when burning is wanted, and the video encoder thread draws it on the frames it encodes.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use telecart_core::config::BurnIn;
use telecart_transcribe::Caption;

/// How long a finished sentence stays on the picture when nobody speaks after it.
const FINAL_HOLD: Duration = Duration::from_secs(4);
/// How long a partial result stays when no update follows (the speaker stopped mid-word).
const PARTIAL_HOLD: Duration = Duration::from_secs(2);

/// What to burn and whether anyone wants it burned.
#[derive(Debug)]
pub struct CaptionOverlay {
    mode: BurnIn,
    /// Calls now asking for burned captions (SIP video calls).
    wanted_by: AtomicUsize,
    showing: Mutex<Option<(Caption, Instant)>>,
}

/// While held, captions are burned into the video (see [`CaptionOverlay::require`]).
#[derive(Debug)]
pub struct BurnInGuard(Arc<CaptionOverlay>);

impl Drop for BurnInGuard {
    fn drop(&mut self) {
        self.0.wanted_by.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CaptionOverlay {
    /// An overlay following the `[captions] burn_in` mode.
    pub fn new(mode: BurnIn) -> Arc<Self> {
        Arc::new(Self {
            mode,
            wanted_by: AtomicUsize::new(0),
            showing: Mutex::new(None),
        })
    }

    /// Asks for burned captions until the guard is dropped (a SIP video call's lifetime).
    pub fn require(self: &Arc<Self>) -> BurnInGuard {
        self.wanted_by.fetch_add(1, Ordering::Relaxed);
        BurnInGuard(self.clone())
    }

    /// Whether frames get captions now.
    pub fn active(&self) -> bool {
        match self.mode {
            BurnIn::Always => true,
            BurnIn::Sip => self.wanted_by.load(Ordering::Relaxed) > 0,
            BurnIn::Off => false,
        }
    }

    /// Shows `caption` from `now`: it replaces what was shown, a partial result by its own
    /// next version, and stays a little while after the words end.
    pub fn show(&self, caption: &Caption, now: Instant) {
        let hold = if caption.is_final {
            FINAL_HOLD
        } else {
            PARTIAL_HOLD
        };
        *self.lock() = Some((caption.clone(), now + hold));
    }

    /// What to burn into a frame encoded at `now`, if anything.
    pub fn current(&self, now: Instant) -> Option<Caption> {
        if !self.active() {
            return None;
        }
        let mut showing = self.lock();
        match &*showing {
            Some((caption, until)) if now < *until => Some(caption.clone()),
            Some(_) => {
                *showing = None;
                None
            }
            None => None,
        }
    }

    /// Forgets what is shown (privacy turned on: nothing said before stays on the picture).
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Caption, Instant)>> {
        self.showing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_core::CaptureTime;
    use telecart_transcribe::Side;

    fn caption(text: &str, is_final: bool) -> Caption {
        Caption {
            id: 1,
            side: Side::Cart,
            text: text.into(),
            is_final,
            start: CaptureTime(0),
            end: CaptureTime(0),
            start_ms: 0,
            end_ms: 0,
            highlights: Vec::new(),
            decode_time: Duration::ZERO,
        }
    }

    #[test]
    fn sip_mode_burns_only_while_a_call_wants_it() {
        let overlay = CaptionOverlay::new(BurnIn::Sip);
        let t0 = Instant::now();
        overlay.show(&caption("chest pain", true), t0);
        assert!(overlay.current(t0).is_none());
        let guard = overlay.require();
        let second = overlay.require();
        assert_eq!(overlay.current(t0).unwrap().text, "chest pain");
        drop(guard);
        assert!(overlay.active());
        drop(second);
        assert!(overlay.current(t0).is_none());
    }

    #[test]
    fn captions_expire_and_the_latest_replaces_the_last() {
        let overlay = CaptionOverlay::new(BurnIn::Always);
        let t0 = Instant::now();
        overlay.show(&caption("the pat", false), t0);
        assert!(overlay.current(t0 + PARTIAL_HOLD).is_none());
        overlay.show(&caption("the patient", false), t0);
        overlay.show(
            &caption("The patient is stable.", true),
            t0 + Duration::from_secs(1),
        );
        let shown = overlay.current(t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(shown.text, "The patient is stable.");
        assert!(overlay.current(t0 + Duration::from_secs(5)).is_none());
        overlay.show(&caption("again", true), t0);
        overlay.clear();
        assert!(overlay.current(t0).is_none());
        assert!(CaptionOverlay::new(BurnIn::Off).current(t0).is_none());
    }
}

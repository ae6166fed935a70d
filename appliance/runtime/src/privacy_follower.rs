//! The privacy switch alone, for a process that sends the camera without the daemon's cart
//! machine: `cartd publish` with a configuration (a field tech's connectivity check at the
//! bedside). A patient who turned privacy on must not be seen because the tech is testing the
//! network, so the switch gates that pipeline exactly as it gates calls: the first frame after
//! the switch moves is the slate and the microphone is silent.
//!
//! It fails closed: a board that cannot be opened refuses the publish (the daemon falls back
//! to the simulated board and raises a fault; a diagnostic tool has no one to show a fault
//! to), and inputs that stop reading turn privacy on until they read again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use telecart_board::config::BoardConfig;
use telecart_board::panel::{Board, Panel};
use telecart_cart::machine::{CartMachine, Input};
use telecart_cart::privacy::PrivacySwitch;
use tracing::warn;

/// Samples the board's privacy switch (debounced like the daemon's) into a [`PrivacySwitch`]
/// until dropped.
#[derive(Debug)]
pub struct PrivacyFollower {
    privacy: PrivacySwitch,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PrivacyFollower {
    /// Opens the board `config` names and follows its switch. The switch's position at the
    /// first read is in effect before this returns, so no frame leaves before it is known.
    pub fn start(config: &BoardConfig) -> anyhow::Result<Self> {
        let (board, _sim) = telecart_board::open_board(config).map_err(|e| {
            anyhow::anyhow!(
                "the privacy switch cannot be read ({e}); the camera is not sent without it: \
                 is the board in the configuration the one fitted? Without --config the test pattern goes out"
            )
        })?;
        Self::follow(board, config)
    }

    /// Follows `board`'s switch (the simulated board in tests).
    pub fn follow(mut board: Box<dyn Board>, config: &BoardConfig) -> anyhow::Result<Self> {
        let privacy = PrivacySwitch::new();
        let now = embassy_time::Instant::now();
        let first = board.read_inputs(now).map_err(|e| {
            anyhow::anyhow!("the privacy switch cannot be read ({e}); the camera is not sent")
        })?;
        privacy.set(first.privacy);
        if first.privacy {
            warn!(
                "privacy switch on: the slate is sent instead of the camera, the microphone is muted"
            );
        }
        // The LEDs are the daemon's to drive; the panel is here for its debounce.
        let idle = CartMachine::new(telecart_board::config::machine_config(config)).indication();
        let mut panel = Panel::new_at(now, config, &first, &idle);
        panel.initial_inputs();
        let tick = Duration::from_millis(u64::from(config.poll_interval_ms.max(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("privacy".into()).spawn({
            let (privacy, stop) = (privacy.clone(), stop.clone());
            move || {
                let mut unreadable = false;
                while !stop.load(Ordering::Relaxed) {
                    let now = embassy_time::Instant::now();
                    match board.read_inputs(now) {
                        Ok(raw) => {
                            if unreadable {
                                unreadable = false;
                                // The debounced position is the truth again.
                                privacy.set(panel.privacy_on());
                            }
                            for input in panel.poll_at(now, &raw) {
                                if let Input::Privacy { on, .. } = input {
                                    privacy.set(on);
                                    warn!(on, "privacy switch moved");
                                }
                            }
                        }
                        Err(e) => {
                            if !unreadable {
                                unreadable = true;
                                privacy.set(true);
                                warn!(error = %e, "board inputs unreadable: privacy on until they read again");
                            }
                        }
                    }
                    std::thread::sleep(tick);
                }
            }
        })?;
        Ok(Self {
            privacy,
            stop,
            thread: Some(thread),
        })
    }

    /// The switch the pipeline's gates read.
    pub fn privacy(&self) -> PrivacySwitch {
        self.privacy.clone()
    }
}

impl Drop for PrivacyFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_board::sim::{SimEvent, SimulatedBoard};
    use telecart_cart::machine::Actor;

    fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..400 {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("never: {what}");
    }

    #[test]
    fn the_switch_is_followed_both_ways() {
        let config = BoardConfig::default();
        let (board, handle) = SimulatedBoard::new(&config);
        let follower = PrivacyFollower::follow(Box::new(board), &config).unwrap();
        let privacy = follower.privacy();
        assert!(!privacy.is_on());
        handle
            .send(SimEvent::Privacy {
                on: true,
                by: Actor::Keyboard,
            })
            .unwrap();
        eventually("privacy on", || privacy.is_on());
        handle
            .send(SimEvent::Privacy {
                on: false,
                by: Actor::Keyboard,
            })
            .unwrap();
        eventually("privacy off", || !privacy.is_on());
    }

    #[test]
    fn a_switch_already_on_gates_before_start_returns() {
        let config = BoardConfig::default();
        let (board, handle) = SimulatedBoard::new(&config);
        handle
            .send(SimEvent::Privacy {
                on: true,
                by: Actor::Keyboard,
            })
            .unwrap();
        let follower = PrivacyFollower::follow(Box::new(board), &config).unwrap();
        assert!(follower.privacy().is_on());
    }

    #[test]
    fn a_board_that_cannot_be_opened_refuses() {
        let config = BoardConfig {
            kind: telecart_board::desc::BoardKind::Raspberrypi4,
            pins_file: Some("/nonexistent/pins.toml".into()),
            ..BoardConfig::default()
        };
        let err = PrivacyFollower::start(&config).unwrap_err().to_string();
        assert!(err.contains("privacy switch cannot be read"), "{err}");
    }
}

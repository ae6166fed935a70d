//! The cart as a nurse sees it, with no IO and no clock.
//!
//! - [`machine`]: the cart's state machine (booting, ready, ringing, in call,
//!   privacy, offline, syncing, updating, fault). Feed it [`machine::Input`]s
//!   with the current time, drain [`machine::Output`]s (LED pattern, actions,
//!   audit events), and call [`machine::CartMachine::handle_timeout`] when
//!   [`machine::CartMachine::poll_timeout`] says so. It never reads a clock.
//! - [`privacy`]: the gate the media pipeline applies to every frame and audio
//!   block; with privacy on, frames become a slate and audio is silence.
//! - [`ptz`]: data-channel camera control (`ptz_move`, `ptz_preset`) mapped to
//!   absolute pan/tilt/zoom values within the camera's limits, rate limited.
//!
//! The run loop, as the runtime drives it:
//!
//! ```
//! use telecart_cart::Timestamp;
//! use telecart_cart::machine::*;
//!
//! let mut cart = CartMachine::new(MachineConfig {
//!     outgoing_uri: Some("sip:nurse-station@pbx.example".into()),
//!     ..MachineConfig::default()
//! });
//! let now = Timestamp(1_700_000_000_000);
//! cart.handle_input(now, Input::BootComplete);
//! cart.handle_input(now, Input::NetworkUp);
//! cart.handle_input(now, Input::CallButton { press: Press::Short });
//! let mut actions = Vec::new();
//! while let Some(out) = cart.poll_output() {
//!     match out {
//!         Output::Indication(i) => { /* panel.show(&i); send i.status_message() */ }
//!         Output::Action(a) => actions.push(a),
//!         Output::Audit(e) => { /* append to the audit trail */ }
//!         Output::Notice(n) => { /* log, console */ }
//!     }
//! }
//! assert_eq!(actions, [Action::PlaceCall { uri: "sip:nurse-station@pbx.example".into() }]);
//! assert_eq!(cart.state(), CartState::InCall);
//! // Sleep until cart.poll_timeout() (if any), then cart.handle_timeout(now).
//! ```

pub mod machine;
pub mod privacy;
pub mod ptz;

/// Wall-clock time in milliseconds since the UNIX epoch, passed in by the caller.
///
/// The state machine only compares and subtracts these; audit events carry them
/// as the "when".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn ms_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

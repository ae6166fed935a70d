//! TURN client for the telecart appliance.
#![warn(missing_docs)]

pub mod binding;
pub mod client;
pub mod codec;
pub mod error;
mod retransmit;

pub use binding::StunBinding;
pub use client::{TimeoutReason, TurnClient, TurnConfig, TurnEvent, TurnTransport};
pub use error::TurnError;

//! TURN client for the telecart appliance.
#![warn(missing_docs)]

pub mod codec;
pub mod error;
mod retransmit;

pub use error::TurnError;

//! Cameras, microphones and speakers of the telecart appliance.
#![warn(missing_docs, unreachable_pub)]

pub mod convert;
mod error;
pub mod mode;

pub use error::DeviceError;

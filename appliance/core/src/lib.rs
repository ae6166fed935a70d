//! Types shared by every part of the telecart appliance.
//!
//! Nothing here reads a clock, a socket or a device: time arrives as arguments
//! ([`CaptureTime`]) and configuration arrives as text ([`config::Config::from_toml`]).

pub mod config;
pub mod media;

pub use config::{Config, ConfigError, ConfigIssue};
pub use media::{AudioFrame, CaptureTime, EncodedAudio, EncodedVideo, VideoFrame};

//! The cart's hardware: buttons, privacy switch, status LEDs, fuel gauge.
//!
//! - [`input`] and [`led`]: debounce, long press and LED patterns written
//!   against `embassy-time` and `embedded-hal` only, so the same code runs on
//!   a companion MCU; tested with embassy-time's mock driver
//!   (`cargo test -p telecart-board --features mock-clock-tests`).
//!
//! This crate names no embassy-time driver: the binary that uses it links one
//! (the daemon: embassy-time's `std` feature).

pub mod config;
pub mod desc;
pub mod input;
pub mod led;

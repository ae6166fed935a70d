//! The cart's hardware: buttons, privacy switch, status LEDs, fuel gauge.
//!
//! - [`input`] and [`led`]: debounce, long press and LED patterns written
//!   against `embassy-time` and `embedded-hal` only, so the same code runs on
//!   a companion MCU; tested with embassy-time's mock driver
//!   (`cargo test -p telecart-board --features mock-clock-tests`).
//! - [`desc`]: the pin maps of the supported boards (`board/<name>/pins.toml`
//!   in the repository, built in), validated before any pin is touched.
//! - [`panel`]: the [`panel::Board`] trait and the [`panel::Panel`]
//!   that turns raw levels into the cart state machine's inputs.
//! - [`sim`]: the simulated board (console and keyboard); [`rpi`]: the real
//!   one over rppal (feature `rppal`, on by default); [`open_board`] picks
//!   one from the configuration.
//! - [`battery`]: the MAX17048 fuel gauge over `embedded-hal` I2C.
//! - [`config`]: the `[board]` configuration section.
//!
//! This crate names no embassy-time driver: the binary that uses it links one
//! (the daemon: embassy-time's `std` feature).

pub mod battery;
pub mod config;
pub mod desc;
pub mod input;
pub mod led;
pub mod panel;
#[cfg(feature = "rppal")]
pub mod rpi;
pub mod sim;

use config::BoardConfig;
use desc::{BoardDescription, BoardKind};
use panel::{Board, BoardError};
use sim::SimHandle;

/// Opens the board `config` selects: the simulated one (with its handle for
/// the console and keyboard), or a real one through rppal with the pin map
/// from `config.pins_file` or the built-in one.
pub fn open_board(config: &BoardConfig) -> Result<(Box<dyn Board>, Option<SimHandle>), BoardError> {
    if config.kind == BoardKind::Simulated {
        let (board, handle) = sim::SimulatedBoard::new(config);
        return Ok((Box::new(board), Some(handle)));
    }
    let desc = match &config.pins_file {
        Some(path) => BoardDescription::load(path)?,
        None => BoardDescription::builtin(config.kind)?,
    };
    open_real(config.kind, &desc)
}

#[cfg(feature = "rppal")]
fn open_real(
    kind: BoardKind,
    desc: &BoardDescription,
) -> Result<(Box<dyn Board>, Option<SimHandle>), BoardError> {
    Ok((Box::new(rpi::RppalBoard::open(kind, desc)?), None))
}

#[cfg(not(feature = "rppal"))]
fn open_real(
    _kind: BoardKind,
    _desc: &BoardDescription,
) -> Result<(Box<dyn Board>, Option<SimHandle>), BoardError> {
    Err(BoardError::NoGpio(
        "built without the `rppal` feature".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_is_the_default_and_comes_with_a_handle() {
        let (board, handle) = open_board(&BoardConfig::default()).unwrap();
        assert_eq!(board.kind(), BoardKind::Simulated);
        assert!(handle.is_some());
    }

    #[test]
    fn a_missing_pins_file_is_reported() {
        let config = BoardConfig {
            kind: BoardKind::Raspberrypi5,
            pins_file: Some("/nonexistent/pins.toml".into()),
            ..BoardConfig::default()
        };
        assert!(matches!(
            open_board(&config).map(|_| ()),
            Err(BoardError::Description(desc::DescriptionError::Read { .. }))
        ));
    }

    #[test]
    fn a_real_board_without_gpio_is_an_error_not_a_crash() {
        if std::path::Path::new("/dev/gpiomem").exists()
            || std::path::Path::new("/dev/gpiomem0").exists()
        {
            return;
        }
        let config = BoardConfig {
            kind: BoardKind::Raspberrypi4,
            ..BoardConfig::default()
        };
        assert!(matches!(
            open_board(&config).map(|_| ()),
            Err(BoardError::NoGpio(_))
        ));
    }
}

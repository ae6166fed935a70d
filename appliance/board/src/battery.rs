//! Battery level and charging state from a fuel gauge on I2C.
//!
//! Written against `embedded_hal::i2c::I2c` (rppal's `I2c` on the Pi, a fake
//! in tests). A gauge that does not answer is a [`BatteryStatus::Unavailable`]
//! with the reason, reported to the console and metrics; it never stops the cart.

use embedded_hal::i2c::I2c;
use serde::Serialize;

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BatteryReading {
    /// State of charge, 0 to 100.
    pub percent: u8,
    /// Cell voltage in millivolts.
    pub millivolts: u16,
    /// Charging (the charge rate is positive).
    pub charging: bool,
}

/// What the console and metrics show about the battery.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "battery")]
pub enum BatteryStatus {
    /// The board has no fuel gauge (mains-powered cart).
    NotFitted,
    /// The gauge is fitted but did not answer; the reason, for the technician.
    Unavailable {
        /// What went wrong.
        reason: String,
    },
    /// A good reading.
    Reading(BatteryReading),
}

/// Why the gauge could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GaugeError {
    /// The I2C transfer failed (no ACK, bus error).
    #[error("fuel gauge at {address:#04x} did not answer: {message}")]
    NoAnswer {
        /// Device address.
        address: u8,
        /// The bus error.
        message: String,
    },
    /// It answered with something no MAX17048 sends.
    #[error("fuel gauge at {address:#04x} answered version {version:#06x}, not a MAX17048/9")]
    WrongChip {
        /// Device address.
        address: u8,
        /// The VERSION register.
        version: u16,
    },
}

const REG_VCELL: u8 = 0x02;
const REG_SOC: u8 = 0x04;
const REG_VERSION: u8 = 0x08;
const REG_CRATE: u8 = 0x16;

/// Maxim MAX17048/MAX17049 ModelGauge.
#[derive(Debug)]
pub struct Max17048<I> {
    i2c: I,
    address: u8,
    checked: bool,
}

impl<I: I2c> Max17048<I> {
    /// The default address of the chip.
    pub const ADDRESS: u8 = 0x36;

    /// A gauge at `address` on `i2c`. Nothing is read until [`read`](Self::read).
    pub fn new(i2c: I, address: u8) -> Self {
        Self {
            i2c,
            address,
            checked: false,
        }
    }

    fn reg(&mut self, reg: u8) -> Result<[u8; 2], GaugeError> {
        let mut buf = [0u8; 2];
        self.i2c
            .write_read(self.address, &[reg], &mut buf)
            .map_err(|e| GaugeError::NoAnswer {
                address: self.address,
                message: format!("{:?}", embedded_hal::i2c::Error::kind(&e)),
            })?;
        Ok(buf)
    }

    /// Reads level, voltage and charge rate (and, the first time, checks the chip version).
    pub fn read(&mut self) -> Result<BatteryReading, GaugeError> {
        if !self.checked {
            let v = u16::from_be_bytes(self.reg(REG_VERSION)?);
            // MAX17048/9 report 0x001X.
            if v & 0xfff0 != 0x0010 {
                return Err(GaugeError::WrongChip {
                    address: self.address,
                    version: v,
                });
            }
            self.checked = true;
        }
        let vcell = self.reg(REG_VCELL)?;
        let soc = self.reg(REG_SOC)?;
        let crate_ = self.reg(REG_CRATE)?;
        Ok(parse_max17048(soc, vcell, crate_))
    }

    /// Reads, turning a failure into the status to show.
    pub fn status(&mut self) -> BatteryStatus {
        match self.read() {
            Ok(r) => BatteryStatus::Reading(r),
            Err(e) => BatteryStatus::Unavailable {
                reason: e.to_string(),
            },
        }
    }
}

/// Decodes the SOC, VCELL and CRATE registers (big-endian, as read).
pub fn parse_max17048(soc: [u8; 2], vcell: [u8; 2], crate_: [u8; 2]) -> BatteryReading {
    // SOC: 1/256 % per bit; the chip can report over 100 % right after charging.
    let percent = (u16::from_be_bytes(soc) / 256).min(100) as u8;
    // VCELL: 78.125 µV per bit.
    let millivolts = (u32::from(u16::from_be_bytes(vcell)) * 78_125 / 1_000_000) as u16;
    // CRATE: signed, 0.208 %/h per bit; a small dead band keeps noise from flapping "charging".
    let rate = i16::from_be_bytes(crate_);
    BatteryReading {
        percent,
        millivolts,
        charging: rate > 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorKind, ErrorType, NoAcknowledgeSource, Operation};

    /// A fake bus: register file, or no device at all.
    struct FakeBus {
        regs: Option<[(u8, [u8; 2]); 4]>,
    }

    #[derive(Debug)]
    struct Nack;
    impl embedded_hal::i2c::Error for Nack {
        fn kind(&self) -> ErrorKind {
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
        }
    }

    impl ErrorType for FakeBus {
        type Error = Nack;
    }

    impl I2c for FakeBus {
        fn transaction(&mut self, _address: u8, ops: &mut [Operation<'_>]) -> Result<(), Nack> {
            let regs = self.regs.ok_or(Nack)?;
            let mut reg = 0;
            for op in ops {
                match op {
                    Operation::Write(w) => reg = w[0],
                    Operation::Read(r) => {
                        let v = regs
                            .iter()
                            .find(|(a, _)| *a == reg)
                            .map(|x| x.1)
                            .unwrap_or([0, 0]);
                        r.copy_from_slice(&v);
                    }
                }
            }
            Ok(())
        }
    }

    fn bus(version: u16, soc: u16, vcell: u16, rate: i16) -> FakeBus {
        FakeBus {
            regs: Some([
                (REG_VERSION, version.to_be_bytes()),
                (REG_SOC, soc.to_be_bytes()),
                (REG_VCELL, vcell.to_be_bytes()),
                (REG_CRATE, rate.to_be_bytes()),
            ]),
        }
    }

    #[test]
    fn decodes_a_reading() {
        // 57.5 %, 3.9 V (49920 * 78.125 µV), charging at +10 %/h (48 bits)
        let mut g = Max17048::new(bus(0x0012, 57 * 256 + 128, 49_920, 48), 0x36);
        assert_eq!(
            g.read(),
            Ok(BatteryReading {
                percent: 57,
                millivolts: 3900,
                charging: true
            })
        );
    }

    #[test]
    fn discharging_and_over_100_percent() {
        let r = parse_max17048((103u16 * 256).to_be_bytes(), [0, 0], (-20i16).to_be_bytes());
        assert_eq!(r.percent, 100);
        assert!(!r.charging);
    }

    #[test]
    fn a_gauge_that_does_not_answer_is_reported_not_fatal() {
        let mut g = Max17048::new(FakeBus { regs: None }, 0x36);
        match g.status() {
            BatteryStatus::Unavailable { reason } => {
                assert!(
                    reason.contains("0x36") && reason.contains("did not answer"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_chip_at_the_address_is_refused() {
        let mut g = Max17048::new(bus(0x4242, 0, 0, 0), 0x36);
        assert!(matches!(
            g.read(),
            Err(GaugeError::WrongChip {
                version: 0x4242,
                ..
            })
        ));
    }
}

//! SHT4x ambient temperature and humidity (I2C). Written here in a few lines
//! on embedded-hal 1.0 rather than through the `sht4x` crate, so the bus
//! transactions are ours to test.

use coldchain_proto::FaultKind;
use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::crc8;

/// Default I2C address (SHT40-AD1B).
pub const ADDRESS: u8 = 0x44;
/// Measure T and RH with high repeatability (8.3 ms max).
pub const MEASURE_HIGH: u8 = 0xFD;

/// Temperature (m°C) and relative humidity (m%RH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Milli-°C.
    pub temp_milli_c: i32,
    /// Milli-%RH, clamped to 0..100 % as the datasheet advises.
    pub rh_milli: i32,
}

/// Converts the two raw ticks: T = -45 + 175·t/65535, RH = -6 + 125·h/65535.
pub fn convert(t_ticks: u16, rh_ticks: u16) -> Sample {
    let t = -45_000 + (175_000 * i64::from(t_ticks) + 32_767) / 65_535;
    let rh = -6_000 + (125_000 * i64::from(rh_ticks) + 32_767) / 65_535;
    Sample {
        temp_milli_c: t as i32,
        rh_milli: rh.clamp(0, 100_000) as i32,
    }
}

/// An SHT4x.
#[derive(Debug)]
pub struct Sht4x<I> {
    i2c: I,
    address: u8,
}

impl<I: I2c> Sht4x<I> {
    /// A sensor at `address`.
    pub fn new(i2c: I, address: u8) -> Self {
        Sht4x { i2c, address }
    }

    /// One high-repeatability measurement. A bus error is `NoResponse`, a
    /// CRC mismatch is `Crc`.
    pub fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Sample, FaultKind> {
        self.i2c
            .write(self.address, &[MEASURE_HIGH])
            .map_err(|_| FaultKind::NoResponse)?;
        delay.delay_ms(10);
        let mut b = [0u8; 6];
        self.i2c
            .read(self.address, &mut b)
            .map_err(|_| FaultKind::NoResponse)?;
        if crc8::sensirion(&b[0..2]) != b[2] || crc8::sensirion(&b[3..5]) != b[5] {
            return Err(FaultKind::Crc);
        }
        Ok(convert(
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[3], b[4]]),
        ))
    }
}

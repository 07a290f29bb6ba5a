//! MAX31856 thermocouple converter (SPI): types T and K (and the others the
//! chip knows), cold-junction compensation on chip, fault register, 19-bit
//! signed linearised temperature.
//!
//! Type T is the cryogenic thermocouple (ASTM E230: ±1 °C or 1.5 %, so ±2.9 °C
//! at -196 °C); the MAX31856 linearises it down to -200 °C. (The MAX31855 does
//! not, and is unfit for cryogenic type T.)

use coldchain_proto::FaultKind;
use embedded_hal::delay::DelayNs;
use embedded_hal::spi::{Operation, SpiDevice};

const REG_CR0: u8 = 0x00;
const REG_CJTH: u8 = 0x0A;
const REG_LTCBH: u8 = 0x0C;
const WRITE: u8 = 0x80;

/// CR0 bits.
pub mod cr0 {
    /// Automatic conversion mode.
    pub const CMODE_AUTO: u8 = 0x80;
    /// Start a one-shot conversion.
    pub const ONE_SHOT: u8 = 0x40;
    /// Open-circuit detection enabled (OCFAULT = 01: for R_source < 5 kΩ).
    pub const OC_DETECT: u8 = 0x10;
    /// Fault status clear.
    pub const FAULT_CLEAR: u8 = 0x02;
    /// 50 Hz rejection (0 = 60 Hz).
    pub const FILTER_50HZ: u8 = 0x01;
}

/// Fault status register (SR, 0Fh) bits.
pub mod sr {
    /// Cold-junction out of range.
    pub const CJ_RANGE: u8 = 0x80;
    /// Thermocouple out of its type's range.
    pub const TC_RANGE: u8 = 0x40;
    /// Cold junction above its high threshold.
    pub const CJ_HIGH: u8 = 0x20;
    /// Cold junction below its low threshold.
    pub const CJ_LOW: u8 = 0x10;
    /// Thermocouple above its high threshold.
    pub const TC_HIGH: u8 = 0x08;
    /// Thermocouple below its low threshold.
    pub const TC_LOW: u8 = 0x04;
    /// Over- or undervoltage on the inputs.
    pub const OVUV: u8 = 0x02;
    /// Thermocouple open.
    pub const OPEN: u8 = 0x01;
}

/// Thermocouple type (CR1 bits 3:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcType {
    /// Type K, -200..+1372 °C.
    K,
    /// Type T, -200..+400 °C (cryogenic).
    T,
}

impl TcType {
    fn code(self) -> u8 {
        match self {
            TcType::K => 0x03,
            TcType::T => 0x07,
        }
    }
    /// Range the chip linearises, milli-°C.
    pub fn range_milli(self) -> (i32, i32) {
        match self {
            TcType::K => (-200_000, 1_372_000),
            TcType::T => (-200_000, 400_000),
        }
    }
}

/// Decodes the 24-bit linearised thermocouple register (LTCBH:LTCBM:LTCBL):
/// a 19-bit two's complement value in the top bits, LSB 1/128 °C. Milli-°C.
pub fn decode_tc(b: [u8; 3]) -> i32 {
    let v = i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 13;
    // v/128 °C = v·1000/128 m°C = v·125/16; exact to 1/16 m°C, rounded down.
    (v * 125).div_euclid(16)
}

/// Decodes the cold-junction register (CJTH:CJTL): 16 bits / 256 °C. Milli-°C.
pub fn decode_cj(b: [u8; 2]) -> i32 {
    let v = i32::from(i16::from_be_bytes(b));
    (v * 1000).div_euclid(256)
}

/// Maps a non-zero fault status to the wire's fault kind.
pub fn fault_kind(status: u8) -> FaultKind {
    if status & sr::OPEN != 0 {
        FaultKind::OpenCircuit
    } else if status & sr::OVUV != 0 {
        FaultKind::Short
    } else {
        FaultKind::OutOfRange
    }
}

/// Faults that make a reading worthless (threshold flags are only warnings,
/// and are masked at init).
const FATAL: u8 = sr::OPEN | sr::OVUV | sr::TC_RANGE | sr::CJ_RANGE;

/// A MAX31856 on an SPI device (mode 1 or 3).
#[derive(Debug)]
pub struct Max31856<SPI> {
    spi: SPI,
    tc: TcType,
    filter_50hz: bool,
}

impl<SPI: SpiDevice> Max31856<SPI> {
    /// A driver; call [`Max31856::init`] first.
    pub fn new(spi: SPI, tc: TcType, filter_50hz: bool) -> Self {
        Max31856 {
            spi,
            tc,
            filter_50hz,
        }
    }

    fn cr0(&self) -> u8 {
        cr0::OC_DETECT
            | if self.filter_50hz {
                cr0::FILTER_50HZ
            } else {
                0
            }
    }

    fn write(&mut self, reg: u8, data: &[u8]) -> Result<(), SPI::Error> {
        self.spi
            .transaction(&mut [Operation::Write(&[reg | WRITE]), Operation::Write(data)])
    }

    fn read<const N: usize>(&mut self, reg: u8) -> Result<[u8; N], SPI::Error> {
        let mut b = [0u8; N];
        self.spi
            .transaction(&mut [Operation::Write(&[reg]), Operation::Read(&mut b)])?;
        Ok(b)
    }

    /// Writes CR0 (normally off, open detection, filter, fault clear), CR1
    /// (1 sample, the thermocouple type) and MASK (threshold flags masked).
    pub fn init(&mut self) -> Result<(), SPI::Error> {
        let c0 = self.cr0() | cr0::FAULT_CLEAR;
        // CR0, CR1, MASK are consecutive: one burst.
        self.write(REG_CR0, &[c0, self.tc.code(), 0x3C])
    }

    /// The cold-junction temperature, milli-°C.
    pub fn cold_junction_milli_c(&mut self) -> Result<i32, SPI::Error> {
        Ok(decode_cj(self.read::<2>(REG_CJTH)?))
    }

    /// One conversion: milli-°C, or the fault the chip reports.
    pub fn read_milli_c(
        &mut self,
        delay: &mut impl DelayNs,
    ) -> Result<Result<i32, FaultKind>, SPI::Error> {
        let c0 = self.cr0();
        self.write(REG_CR0, &[c0 | cr0::ONE_SHOT])?;
        // One sample with cold-junction conversion: 169 ms (60 Hz) / 185 ms (50 Hz) max.
        delay.delay_ms(if self.filter_50hz { 185 } else { 169 });
        // LTCBH, LTCBM, LTCBL, SR in one burst.
        let [h, m, l, status] = self.read::<4>(REG_LTCBH)?;
        if status & FATAL != 0 {
            self.write(REG_CR0, &[c0 | cr0::FAULT_CLEAR])?;
            return Ok(Err(fault_kind(status)));
        }
        let v = decode_tc([h, m, l]);
        let (lo, hi) = self.tc.range_milli();
        if v < lo || v > hi {
            return Ok(Err(FaultKind::OutOfRange));
        }
        Ok(Ok(v))
    }
}

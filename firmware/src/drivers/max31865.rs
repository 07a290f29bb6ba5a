//! MAX31865 RTD-to-digital converter (SPI), for PT100 and PT1000 probes.
//!
//! One-shot conversions: bias on, settle, convert, read, bias off (the bias
//! current warms the element, and a shipment runs on a battery). An open or
//! shorted RTD is reported as a fault from the chip's fault status, and a
//! code outside the Callendar-Van Dusen range is a fault too: a fault is never
//! a temperature (a -242 °C "reading" passes a <= -150 °C check).

use coldchain_proto::FaultKind;
use embedded_hal::delay::DelayNs;
use embedded_hal::spi::{Operation, SpiDevice};

use super::cvd;

const REG_CONFIG: u8 = 0x00;
const REG_RTD_MSB: u8 = 0x01;
const REG_HIGH_THRESHOLD: u8 = 0x03;
const REG_FAULT_STATUS: u8 = 0x07;
const WRITE: u8 = 0x80;

/// Configuration register bits (datasheet table 2).
pub mod config_bits {
    /// V_BIAS on.
    pub const VBIAS: u8 = 0x80;
    /// Automatic conversion mode.
    pub const AUTO: u8 = 0x40;
    /// Start a one-shot conversion (self-clearing).
    pub const ONE_SHOT: u8 = 0x20;
    /// 3-wire RTD.
    pub const THREE_WIRE: u8 = 0x10;
    /// Fault detection cycle control, bits D3:D2. `100` starts the automatic cycle.
    pub const FAULT_AUTO: u8 = 0x08;
    /// Both fault-detection control bits (read back 00 when the cycle is done).
    pub const FAULT_CYCLE_MASK: u8 = 0x0C;
    /// Fault status clear (self-clearing).
    pub const FAULT_CLEAR: u8 = 0x02;
    /// 50 Hz filter (0 = 60 Hz).
    pub const FILTER_50HZ: u8 = 0x01;
}
use config_bits::*;

/// Fault status register bits (datasheet table 7).
pub mod fault_bits {
    /// RTD high threshold.
    pub const RTD_HIGH: u8 = 0x80;
    /// RTD low threshold.
    pub const RTD_LOW: u8 = 0x40;
    /// REFIN- > 0.85 x V_BIAS.
    pub const REFIN_HIGH: u8 = 0x20;
    /// REFIN- < 0.85 x V_BIAS (FORCE- open).
    pub const REFIN_LOW_FORCE_OPEN: u8 = 0x10;
    /// RTDIN- < 0.85 x V_BIAS (FORCE- open).
    pub const RTDIN_LOW_FORCE_OPEN: u8 = 0x08;
    /// Overvoltage or undervoltage.
    pub const OVER_UNDER_VOLTAGE: u8 = 0x04;
}
use fault_bits::*;

/// Which platinum element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// 100 Ω at 0 °C.
    Pt100,
    /// 1000 Ω at 0 °C.
    Pt1000,
}

impl Element {
    /// R0, ohms.
    pub fn r0(self) -> f64 {
        match self {
            Element::Pt100 => 100.0,
            Element::Pt1000 => 1000.0,
        }
    }
}

/// How the RTD is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wires {
    /// 2-wire.
    Two,
    /// 3-wire.
    Three,
    /// 4-wire.
    Four,
}

/// Mains filter notch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// 50 Hz (conversion 62.5 ms).
    Hz50,
    /// 60 Hz (conversion 52 ms).
    Hz60,
}

/// Converter settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The element.
    pub element: Element,
    /// Wiring.
    pub wires: Wires,
    /// Mains filter.
    pub filter: Filter,
    /// Reference resistor, ohms (430 for PT100, 4300 for PT1000 on common boards).
    pub r_ref: f64,
}

impl Config {
    /// PT100, 4-wire, 50 Hz, 430 Ω reference.
    pub const PT100_430: Config = Config {
        element: Element::Pt100,
        wires: Wires::Four,
        filter: Filter::Hz50,
        r_ref: 430.0,
    };
    /// PT1000, 4-wire, 50 Hz, 4300 Ω reference.
    pub const PT1000_4300: Config = Config {
        element: Element::Pt1000,
        wires: Wires::Four,
        filter: Filter::Hz50,
        r_ref: 4300.0,
    };

    /// The configuration register value with bias off and nothing started.
    pub fn base(&self) -> u8 {
        let mut c = 0;
        if self.wires == Wires::Three {
            c |= THREE_WIRE;
        }
        if self.filter == Filter::Hz50 {
            c |= FILTER_50HZ;
        }
        c
    }

    /// Resistance for a 15-bit code.
    pub fn ohms(&self, code: u16) -> f64 {
        f64::from(code) * self.r_ref / 32768.0
    }

    /// The 15-bit code nearest to `ohms` (saturating).
    pub fn code_for(&self, ohms: f64) -> u16 {
        let c = ohms * 32768.0 / self.r_ref + 0.5;
        if c <= 0.0 {
            0
        } else if c >= 32767.0 {
            32767
        } else {
            c as u16
        }
    }

    fn conversion_ms(&self) -> u32 {
        match self.filter {
            Filter::Hz50 => 63,
            Filter::Hz60 => 53,
        }
    }
}

/// What went wrong talking to the chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The SPI bus failed.
    Bus(E),
    /// The automatic fault-detection cycle did not finish.
    FaultCycleTimeout,
}

/// Maps a non-zero fault status to the wire's fault kind.
///
/// A threshold fault above range or any FORCE-/REFIN- fault is an open element
/// or lead; below range is a short; over/undervoltage means the input is
/// outside what the chip can measure.
pub fn fault_kind(status: u8) -> FaultKind {
    if status & (RTD_HIGH | REFIN_HIGH | REFIN_LOW_FORCE_OPEN | RTDIN_LOW_FORCE_OPEN) != 0 {
        FaultKind::OpenCircuit
    } else if status & RTD_LOW != 0 {
        FaultKind::Short
    } else {
        FaultKind::OutOfRange
    }
}

/// Converts the raw 16-bit RTD register (MSB:LSB) to milli-°C or a fault.
///
/// Bit 0 set means the chip saw a fault: that is always a fault, whatever the
/// code says. A code outside -200..+850 °C is a fault, never a temperature.
pub fn convert(cfg: &Config, raw: u16) -> Result<i32, FaultKind> {
    if raw & 1 != 0 {
        return Err(FaultKind::OutOfRange);
    }
    let code = raw >> 1;
    let ohms = cfg.ohms(code);
    if code == 0 {
        return Err(FaultKind::Short);
    }
    if code >= 32767 {
        return Err(FaultKind::OpenCircuit);
    }
    match cvd::temperature(cfg.element.r0(), ohms) {
        Some(t) => Ok(round_milli(t)),
        None if ohms < cfg.element.r0() => Err(FaultKind::Short),
        None => Err(FaultKind::OpenCircuit),
    }
}

fn round_milli(t: f64) -> i32 {
    let m = t * 1000.0;
    (if m < 0.0 { m - 0.5 } else { m + 0.5 }) as i32
}

/// A MAX31865 on an SPI device (mode 1 or 3, up to 5 MHz).
#[derive(Debug)]
pub struct Max31865<SPI> {
    spi: SPI,
    cfg: Config,
}

impl<SPI: SpiDevice> Max31865<SPI> {
    /// A driver; call [`Max31865::init`] before converting.
    pub fn new(spi: SPI, cfg: Config) -> Self {
        Max31865 { spi, cfg }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Gives the bus back.
    pub fn release(self) -> SPI {
        self.spi
    }

    fn write(&mut self, reg: u8, data: &[u8]) -> Result<(), Error<SPI::Error>> {
        self.spi
            .transaction(&mut [Operation::Write(&[reg | WRITE]), Operation::Write(data)])
            .map_err(Error::Bus)
    }

    fn read<const N: usize>(&mut self, reg: u8) -> Result<[u8; N], Error<SPI::Error>> {
        let mut buf = [0u8; N];
        self.spi
            .transaction(&mut [Operation::Write(&[reg]), Operation::Read(&mut buf)])
            .map_err(Error::Bus)?;
        Ok(buf)
    }

    /// Writes the configuration (bias off), clears faults, and sets the fault
    /// thresholds to the codes of -200 °C and +850 °C, so the chip itself flags
    /// anything the equation cannot turn into a temperature.
    pub fn init(&mut self) -> Result<(), Error<SPI::Error>> {
        let r0 = self.cfg.element.r0();
        let hi = self.cfg.code_for(cvd::resistance(r0, cvd::T_MAX)) << 1;
        let lo = self.cfg.code_for(cvd::resistance(r0, cvd::T_MIN)) << 1;
        let [hh, hl] = hi.to_be_bytes();
        let [lh, ll] = lo.to_be_bytes();
        // Registers 03h..06h are consecutive: one burst write.
        self.write(REG_HIGH_THRESHOLD, &[hh, hl, lh, ll])?;
        let base = self.cfg.base();
        self.write(REG_CONFIG, &[base | FAULT_CLEAR])
    }

    /// Reads the fault status register.
    pub fn fault_status(&mut self) -> Result<u8, Error<SPI::Error>> {
        Ok(self.read::<1>(REG_FAULT_STATUS)?[0])
    }

    /// Clears the fault status.
    pub fn clear_faults(&mut self) -> Result<(), Error<SPI::Error>> {
        let base = self.cfg.base();
        self.write(REG_CONFIG, &[base | FAULT_CLEAR])
    }

    /// One conversion: milli-°C, or the fault the chip or the range check found.
    /// On a fault the status is read and cleared.
    pub fn read_milli_c(
        &mut self,
        delay: &mut impl DelayNs,
    ) -> Result<Result<i32, FaultKind>, Error<SPI::Error>> {
        let base = self.cfg.base();
        self.write(REG_CONFIG, &[base | VBIAS])?;
        // Bias settling: 10.5 time constants of the input filter (datasheet: ~10.5 ms).
        delay.delay_ms(11);
        self.write(REG_CONFIG, &[base | VBIAS | ONE_SHOT])?;
        delay.delay_ms(self.cfg.conversion_ms());
        let [msb, lsb] = self.read::<2>(REG_RTD_MSB)?;
        self.write(REG_CONFIG, &[base])?;
        let raw = u16::from_be_bytes([msb, lsb]);
        if raw & 1 != 0 {
            let status = self.fault_status()?;
            self.clear_faults()?;
            return Ok(Err(fault_kind(status)));
        }
        Ok(convert(&self.cfg, raw))
    }

    /// Runs the chip's automatic fault-detection cycle (datasheet table 3) and
    /// returns the fault status (0: no fault), clearing it afterwards.
    pub fn fault_detection_cycle(
        &mut self,
        delay: &mut impl DelayNs,
    ) -> Result<u8, Error<SPI::Error>> {
        let base = self.cfg.base();
        // 100X010Xb: bias on, automatic fault detection.
        self.write(REG_CONFIG, &[base | VBIAS | FAULT_AUTO])?;
        let mut done = false;
        for _ in 0..10 {
            delay.delay_us(100);
            let c = self.read::<1>(REG_CONFIG)?[0];
            if c & FAULT_CYCLE_MASK == 0 {
                done = true;
                break;
            }
        }
        if !done {
            self.write(REG_CONFIG, &[base])?;
            return Err(Error::FaultCycleTimeout);
        }
        let status = self.fault_status()?;
        self.write(REG_CONFIG, &[base | FAULT_CLEAR])?;
        Ok(status)
    }
}

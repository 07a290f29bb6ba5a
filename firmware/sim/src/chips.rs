//! Simulated chips behind the firmware's real drivers: the simulator reads its
//! sample probe through `drivers::max31865::Max31865`, talking SPI to a
//! register model of the MAX31865 whose RTD is the thermal model's probe.
//!
//! The model follows the datasheet's register map (00h configuration, 01h-02h
//! RTD code with the fault bit in D0, 03h-06h fault thresholds, 07h fault
//! status; the address auto-increments; bit 7 of the address selects a
//! write): a one-shot conversion with the bias on turns the probe's
//! resistance into the 15-bit ratio code against the reference resistor, the
//! chip compares it with the thresholds the driver wrote, and an open element
//! reads full scale with the FORCE-/RTDIN- open and high-threshold bits set.
//! The automatic fault-detection cycle finishes at once. Conversion and
//! settling delays are not waited for (the simulator runs on model time).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use coldchain_firmware::drivers::cvd;
use coldchain_firmware::drivers::max31865::config_bits::{
    FAULT_AUTO, FAULT_CLEAR, FAULT_CYCLE_MASK, ONE_SHOT, VBIAS,
};
use coldchain_firmware::drivers::max31865::fault_bits::{RTD_HIGH, RTD_LOW, RTDIN_LOW_FORCE_OPEN};
use embedded_hal::delay::DelayNs;
use embedded_hal::spi::{ErrorType, Operation, SpiDevice};

/// What is wired to the RTD input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rtd {
    /// A platinum element at this resistance, ohms.
    Ohms(f64),
    /// The element or a lead is disconnected.
    Open,
}

/// The wire to the RTD input: the board sets it from the thermal model, the
/// chip reads it at each conversion.
pub type RtdInput = Arc<Mutex<Rtd>>;

/// A MAX31865 register model on an SPI bus.
#[derive(Debug, Clone)]
pub struct SimMax31865 {
    regs: [u8; 8],
    r_ref: f64,
    rtd: RtdInput,
    /// SPI transactions seen (the driver really talked to the chip).
    pub transactions: u64,
}

impl SimMax31865 {
    /// Power-on state (datasheet: all registers 00h, thresholds FFFFh/0000h)
    /// with reference resistor `r_ref` ohms and the RTD on `rtd`.
    pub fn new(r_ref: f64, rtd: RtdInput) -> Self {
        let mut regs = [0u8; 8];
        regs[3] = 0xFF;
        regs[4] = 0xFF;
        SimMax31865 {
            regs,
            r_ref,
            rtd,
            transactions: 0,
        }
    }

    fn threshold(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.regs[at], self.regs[at + 1]]) >> 1
    }

    /// A conversion: the RTD code and its fault bit, and the fault status.
    fn convert(&mut self) {
        let rtd = *self.rtd.lock().unwrap_or_else(|e| e.into_inner());
        let (code, mut status) = match rtd {
            Rtd::Open => (0x7FFF, RTD_HIGH | RTDIN_LOW_FORCE_OPEN),
            Rtd::Ohms(r) => {
                let c = (r * 32768.0 / self.r_ref).round().clamp(0.0, 32767.0) as u16;
                (c, 0)
            }
        };
        if code >= self.threshold(3) {
            status |= RTD_HIGH;
        }
        if code <= self.threshold(5) {
            status |= RTD_LOW;
        }
        self.regs[7] |= status;
        let raw = (code << 1) | u16::from(self.regs[7] != 0);
        [self.regs[1], self.regs[2]] = raw.to_be_bytes();
    }

    fn write_reg(&mut self, reg: usize, v: u8) {
        match reg {
            0 => {
                if v & FAULT_CLEAR != 0 {
                    self.regs[7] = 0;
                    self.regs[2] &= !1;
                }
                if v & FAULT_CYCLE_MASK == FAULT_AUTO && v & VBIAS != 0 {
                    // Automatic fault detection: done at once.
                    if *self.rtd.lock().unwrap_or_else(|e| e.into_inner()) == Rtd::Open {
                        self.regs[7] |= RTDIN_LOW_FORCE_OPEN;
                    }
                }
                if v & ONE_SHOT != 0 && v & VBIAS != 0 {
                    self.convert();
                }
                // ONE_SHOT, FAULT_CLEAR and the fault cycle bits read back 0.
                self.regs[0] = v & !(ONE_SHOT | FAULT_CLEAR | FAULT_CYCLE_MASK);
            }
            3..=6 => self.regs[reg] = v,
            // 01h, 02h, 07h are read-only.
            _ => {}
        }
    }
}

impl ErrorType for SimMax31865 {
    type Error = Infallible;
}

impl SpiDevice for SimMax31865 {
    fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        self.transactions += 1;
        // The first byte of a transaction is the address; data follows.
        let mut addr: Option<(usize, bool)> = None;
        for op in ops.iter_mut() {
            match op {
                Operation::Write(data) => {
                    for &b in data.iter() {
                        match &mut addr {
                            None => addr = Some((usize::from(b & 0x7F), b & 0x80 != 0)),
                            Some((reg, true)) => {
                                self.write_reg(*reg % 8, b);
                                *reg += 1;
                            }
                            // Bytes written during a read are ignored.
                            Some((_, false)) => {}
                        }
                    }
                }
                Operation::Read(buf) => {
                    for d in buf.iter_mut() {
                        *d = match &mut addr {
                            Some((reg, false)) => {
                                let v = self.regs[*reg % 8];
                                *reg += 1;
                                v
                            }
                            _ => 0xFF,
                        };
                    }
                }
                Operation::Transfer(r, w) => {
                    for (d, &b) in r.iter_mut().zip(w.iter()) {
                        *d = 0xFF;
                        if addr.is_none() {
                            addr = Some((usize::from(b & 0x7F), b & 0x80 != 0));
                        }
                    }
                }
                Operation::TransferInPlace(buf) => {
                    if let Some(&b) = buf.first()
                        && addr.is_none()
                    {
                        addr = Some((usize::from(b & 0x7F), b & 0x80 != 0));
                    }
                    buf.fill(0xFF);
                }
                Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

/// The simulator's delay: model time, nothing to wait for.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWait;

impl DelayNs for NoWait {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// The resistance of a PT100 at `t` °C.
pub fn pt100_ohms(t: f64) -> f64 {
    cvd::resistance(100.0, t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldchain_firmware::drivers::max31865::{Config, Max31865};
    use coldchain_proto::FaultKind;

    fn chip() -> (Max31865<SimMax31865>, RtdInput) {
        let input: RtdInput = Arc::new(Mutex::new(Rtd::Ohms(100.0)));
        let mut d = Max31865::new(SimMax31865::new(430.0, input.clone()), Config::PT100_430);
        d.init().unwrap();
        (d, input)
    }

    fn set(input: &RtdInput, rtd: Rtd) {
        *input.lock().unwrap() = rtd;
    }

    #[test]
    fn the_driver_reads_the_probe_through_the_register_model() {
        let (mut d, input) = chip();
        for t in [-196.0, -150.0, -80.0, 2.0, 8.0, 25.0, 37.0] {
            set(&input, Rtd::Ohms(pt100_ohms(t)));
            let got = d.read_milli_c(&mut NoWait).unwrap().unwrap();
            // One code step of a 430 Ω reference is 0.013 Ω: < 0.04 °C.
            assert!(
                (f64::from(got) / 1000.0 - t).abs() < 0.04,
                "{t} °C read {got} m°C"
            );
        }
        assert!(d.release().transactions > 7 * 3, "the driver used the bus");
    }

    #[test]
    fn an_open_probe_is_a_fault_and_the_status_is_cleared() {
        let (mut d, input) = chip();
        set(&input, Rtd::Open);
        assert_eq!(
            d.read_milli_c(&mut NoWait).unwrap(),
            Err(FaultKind::OpenCircuit)
        );
        assert_eq!(d.fault_status().unwrap(), 0, "the driver cleared it");
        assert_ne!(
            d.fault_detection_cycle(&mut NoWait).unwrap() & RTDIN_LOW_FORCE_OPEN,
            0
        );
        // Reconnected: a temperature again.
        set(&input, Rtd::Ohms(pt100_ohms(-190.0)));
        let v = d.read_milli_c(&mut NoWait).unwrap().unwrap();
        assert!((v + 190_000).abs() < 40, "{v}");
    }

    #[test]
    fn below_the_low_threshold_the_chip_flags_a_short() {
        let (mut d, input) = chip();
        // A shorted element: a few ohms, far below -200 °C (18.5 Ω).
        set(&input, Rtd::Ohms(2.0));
        assert_eq!(d.read_milli_c(&mut NoWait).unwrap(), Err(FaultKind::Short));
    }
}

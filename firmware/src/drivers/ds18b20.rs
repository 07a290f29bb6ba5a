//! DS18B20 digital thermometers on a 1-Wire bus: ROM search, skip and match
//! ROM, conversion, scratchpad read with CRC-8.
//!
//! The bus is behind the small [`OneWire`] trait (reset, bit and byte slots),
//! so the protocol is tested against a simulated bus and a board brings its
//! own bit-banged or UART-based master. (The `onewire` crate targets
//! embedded-hal 0.2, which this crate does not use.)
//!
//! Range -55..+125 °C: an ambient sensor, never the cryogenic probe. The
//! power-on value 0x0550 (+85 °C) read before any conversion completed is
//! suspect: reported as [`FaultKind::NoResponse`] (the sensor did not
//! convert), never as a temperature.

use coldchain_proto::FaultKind;
use embedded_hal::delay::DelayNs;

use super::crc8;

/// A 1-Wire bus master.
pub trait OneWire {
    /// Bus error.
    type Error;
    /// Reset pulse; true if at least one device answered with presence.
    fn reset(&mut self) -> Result<bool, Self::Error>;
    /// One write slot.
    fn write_bit(&mut self, bit: bool) -> Result<(), Self::Error>;
    /// One read slot.
    fn read_bit(&mut self) -> Result<bool, Self::Error>;
    /// Eight write slots, LSB first.
    fn write_byte(&mut self, mut b: u8) -> Result<(), Self::Error> {
        for _ in 0..8 {
            self.write_bit(b & 1 != 0)?;
            b >>= 1;
        }
        Ok(())
    }
    /// Eight read slots, LSB first.
    fn read_byte(&mut self) -> Result<u8, Self::Error> {
        let mut b = 0u8;
        for i in 0..8 {
            if self.read_bit()? {
                b |= 1 << i;
            }
        }
        Ok(b)
    }
}

/// ROM commands and function commands.
pub mod cmd {
    /// Search ROM.
    pub const SEARCH_ROM: u8 = 0xF0;
    /// Match ROM.
    pub const MATCH_ROM: u8 = 0x55;
    /// Skip ROM (single device, or broadcast).
    pub const SKIP_ROM: u8 = 0xCC;
    /// Convert T.
    pub const CONVERT_T: u8 = 0x44;
    /// Read scratchpad.
    pub const READ_SCRATCHPAD: u8 = 0xBE;
}

/// DS18B20 family code.
pub const FAMILY: u8 = 0x28;
/// The power-on value of the temperature register (+85 °C).
pub const POWER_ON_RAW: u16 = 0x0550;

/// A 64-bit ROM code: family, 48-bit serial, CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rom(pub [u8; 8]);

impl Rom {
    /// True if the ROM's own CRC checks.
    pub fn crc_ok(&self) -> bool {
        crc8::onewire(&self.0[..7]) == self.0[7]
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The bus master failed.
    Bus(E),
    /// No presence pulse after reset.
    NoPresence,
    /// The data did not check with its CRC-8.
    Crc,
    /// More devices than the caller's buffer.
    TooManyDevices,
    /// Search bits were inconsistent (1,1 with devices present): noise.
    SearchFailed,
}

impl<E> Error<E> {
    /// The wire fault kind for a failed reading.
    pub fn fault_kind(&self) -> FaultKind {
        match self {
            Error::Crc | Error::SearchFailed => FaultKind::Crc,
            _ => FaultKind::NoResponse,
        }
    }
}

/// Converts the scratchpad temperature register (12-bit resolution):
/// 16-bit two's complement / 16 °C. Milli-°C, exact (1/16 °C = 62.5 m°C, so
/// odd sixteenths round half away from zero).
pub fn decode_temp(raw: u16) -> i32 {
    let v = i32::from(raw as i16) * 1000;
    if v >= 0 { (v + 8) / 16 } else { (v - 8) / 16 }
}

/// Finds every device on the bus (Maxim AN187 search), up to `out.len()`.
/// Returns how many were found; every ROM found passed its CRC.
pub fn search<W: OneWire>(bus: &mut W, out: &mut [Rom]) -> Result<usize, Error<W::Error>> {
    let mut found = 0usize;
    let mut rom = [0u8; 8];
    let mut last_discrepancy: i32 = -1;
    loop {
        if !bus.reset().map_err(Error::Bus)? {
            return if found == 0 {
                Ok(0)
            } else {
                Err(Error::NoPresence)
            };
        }
        bus.write_byte(cmd::SEARCH_ROM).map_err(Error::Bus)?;
        let mut discrepancy: i32 = -1;
        for bit in 0..64i32 {
            let id = bus.read_bit().map_err(Error::Bus)?;
            let cmp = bus.read_bit().map_err(Error::Bus)?;
            let (byte, mask) = ((bit / 8) as usize, 1u8 << (bit % 8));
            let dir = match (id, cmp) {
                (true, true) => return Err(Error::SearchFailed),
                (false, true) => false,
                (true, false) => true,
                (false, false) => {
                    // Devices disagree here.
                    let dir = if bit < last_discrepancy {
                        rom[byte] & mask != 0
                    } else {
                        bit == last_discrepancy
                    };
                    if !dir {
                        discrepancy = bit;
                    }
                    dir
                }
            };
            if dir {
                rom[byte] |= mask;
            } else {
                rom[byte] &= !mask;
            }
            bus.write_bit(dir).map_err(Error::Bus)?;
        }
        let r = Rom(rom);
        if !r.crc_ok() {
            return Err(Error::Crc);
        }
        if found == out.len() {
            return Err(Error::TooManyDevices);
        }
        out[found] = r;
        found += 1;
        last_discrepancy = discrepancy;
        if last_discrepancy < 0 {
            return Ok(found);
        }
    }
}

/// Which device a command addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The only device on the bus (Skip ROM).
    Only,
    /// One device by ROM (Match ROM).
    Rom(Rom),
}

fn select<W: OneWire>(bus: &mut W, target: Target) -> Result<(), Error<W::Error>> {
    if !bus.reset().map_err(Error::Bus)? {
        return Err(Error::NoPresence);
    }
    match target {
        Target::Only => bus.write_byte(cmd::SKIP_ROM).map_err(Error::Bus),
        Target::Rom(r) => {
            bus.write_byte(cmd::MATCH_ROM).map_err(Error::Bus)?;
            for b in r.0 {
                bus.write_byte(b).map_err(Error::Bus)?;
            }
            Ok(())
        }
    }
}

/// One DS18B20 (or all of them with [`Target::Only`] on a one-device bus).
#[derive(Debug, Clone, Copy)]
pub struct Ds18b20 {
    target: Target,
    /// A conversion was started and waited for since power-on.
    converted: bool,
}

impl Ds18b20 {
    /// A sensor at `target`, not yet converted since power-on.
    pub fn new(target: Target) -> Self {
        Ds18b20 {
            target,
            converted: false,
        }
    }

    /// Starts a conversion and waits 750 ms (12-bit resolution).
    pub fn convert<W: OneWire>(
        &mut self,
        bus: &mut W,
        delay: &mut impl DelayNs,
    ) -> Result<(), Error<W::Error>> {
        select(bus, self.target)?;
        bus.write_byte(cmd::CONVERT_T).map_err(Error::Bus)?;
        delay.delay_ms(750);
        self.converted = true;
        Ok(())
    }

    /// Reads the scratchpad and checks its CRC.
    pub fn read_scratchpad<W: OneWire>(&self, bus: &mut W) -> Result<[u8; 9], Error<W::Error>> {
        select(bus, self.target)?;
        bus.write_byte(cmd::READ_SCRATCHPAD).map_err(Error::Bus)?;
        let mut sp = [0u8; 9];
        for b in sp.iter_mut() {
            *b = bus.read_byte().map_err(Error::Bus)?;
        }
        // All ones: nobody drove the bus (device gone after the presence pulse).
        if sp == [0xFF; 9] || crc8::onewire(&sp[..8]) != sp[8] {
            return Err(Error::Crc);
        }
        Ok(sp)
    }

    /// Reads the temperature: milli-°C, or a fault. The power-on value read
    /// before any conversion is a fault, not +85 °C.
    pub fn read_milli_c<W: OneWire>(&mut self, bus: &mut W) -> Result<i32, FaultKind> {
        let sp = self.read_scratchpad(bus).map_err(|e| e.fault_kind())?;
        let raw = u16::from_le_bytes([sp[0], sp[1]]);
        if raw == POWER_ON_RAW && !self.converted {
            return Err(FaultKind::NoResponse);
        }
        let v = decode_temp(raw);
        if !(-55_000..=125_000).contains(&v) {
            return Err(FaultKind::OutOfRange);
        }
        Ok(v)
    }

    /// The sensor lost power (e.g. the bus was cycled): the next 85 °C is suspect again.
    pub fn power_cycled(&mut self) {
        self.converted = false;
    }
}

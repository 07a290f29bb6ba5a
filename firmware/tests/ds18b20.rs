//! DS18B20 over a simulated 1-Wire bus: ROM search, skip/match ROM, scratchpad
//! CRC-8, and the power-on 85 °C value. The simulated bus records the commands
//! it saw; each test checks that log at the end (`done`).

use coldchain_firmware::drivers::crc8;
use coldchain_firmware::drivers::ds18b20::{
    Ds18b20, Error, OneWire, Rom, Target, decode_temp, search,
};
use coldchain_proto::FaultKind;
use embedded_hal_mock::eh1::delay::NoopDelay;

#[derive(Clone)]
struct Dev {
    rom: [u8; 8],
    scratch: [u8; 9],
    /// Temperature register after a conversion.
    converts_to: u16,
}

#[derive(Default)]
struct Bus {
    devs: Vec<Dev>,
    selected: Vec<usize>,
    present: bool,
    // Bytes being written, bit by bit.
    wbits: u8,
    wcount: u8,
    // What the master wrote since the last reset.
    written: Vec<u8>,
    // Queue of bits to read.
    rbits: std::collections::VecDeque<bool>,
    // Search state: bit index and whether we are in the id/cmp/dir cycle.
    search: Option<(usize, u8)>,
    log: Vec<String>,
    corrupt_scratchpad: bool,
}

impl Bus {
    fn new(devs: Vec<Dev>) -> Self {
        Bus {
            devs,
            present: true,
            ..Default::default()
        }
    }
    fn done(self, expected: &[&str]) {
        assert_eq!(self.log, expected, "bus commands differ");
    }
    fn byte_written(&mut self, b: u8) {
        self.written.push(b);
        let w = self.written.clone();
        match w.as_slice() {
            [0xF0] => {
                self.log.push("search".into());
                self.selected = (0..self.devs.len()).collect();
                self.search = Some((0, 0));
            }
            [0xCC] => {
                self.log.push("skip".into());
                self.selected = (0..self.devs.len()).collect();
            }
            [0x55, rom @ ..] if rom.len() == 8 => {
                self.log.push(format!("match {:02x?}", rom));
                self.selected = (0..self.devs.len())
                    .filter(|&i| self.devs[i].rom == rom)
                    .collect();
            }
            [0xCC | 0x55, .., 0x44] => {
                self.log.push("convert".into());
                for &i in &self.selected {
                    let d = &mut self.devs[i];
                    let [l, h] = d.converts_to.to_le_bytes();
                    d.scratch[0] = l;
                    d.scratch[1] = h;
                    d.scratch[8] = crc8::onewire(&d.scratch[..8]);
                }
            }
            [0xCC | 0x55, .., 0xBE] => {
                self.log.push("read scratchpad".into());
                // Wired-AND of all selected devices.
                let mut sp = [0xFFu8; 9];
                for &i in &self.selected {
                    for (k, b) in self.devs[i].scratch.iter().enumerate() {
                        sp[k] &= b;
                    }
                }
                if self.corrupt_scratchpad {
                    sp[3] ^= 0x01;
                }
                for b in sp {
                    for i in 0..8 {
                        self.rbits.push_back(b >> i & 1 == 1);
                    }
                }
            }
            _ => {}
        }
    }
    fn rom_bit(&self, dev: usize, bit: usize) -> bool {
        self.devs[dev].rom[bit / 8] >> (bit % 8) & 1 == 1
    }
}

impl OneWire for Bus {
    type Error = ();
    fn reset(&mut self) -> Result<bool, ()> {
        self.written.clear();
        self.rbits.clear();
        self.search = None;
        self.selected.clear();
        self.wcount = 0;
        Ok(self.present && !self.devs.is_empty())
    }
    fn write_bit(&mut self, bit: bool) -> Result<(), ()> {
        if let Some((i, phase)) = self.search {
            assert_eq!(phase, 2, "direction written before both read slots");
            self.selected
                .retain(|&d| self.devs[d].rom[i / 8] >> (i % 8) & 1 == u8::from(bit));
            self.search = if i + 1 < 64 { Some((i + 1, 0)) } else { None };
            return Ok(());
        }
        self.wbits |= u8::from(bit) << self.wcount;
        self.wcount += 1;
        if self.wcount == 8 {
            let b = self.wbits;
            self.wbits = 0;
            self.wcount = 0;
            self.byte_written(b);
        }
        Ok(())
    }
    fn read_bit(&mut self) -> Result<bool, ()> {
        if let Some((i, phase)) = self.search {
            let v = match phase {
                0 => self.selected.iter().all(|&d| self.rom_bit(d, i)),
                _ => self.selected.iter().all(|&d| !self.rom_bit(d, i)),
            };
            self.search = Some((i, phase + 1));
            return Ok(v);
        }
        // An undriven bus reads 1.
        Ok(self.rbits.pop_front().unwrap_or(true))
    }
}

fn rom(serial: [u8; 6]) -> [u8; 8] {
    let mut r = [0x28, 0, 0, 0, 0, 0, 0, 0];
    r[1..7].copy_from_slice(&serial);
    r[7] = crc8::onewire(&r[..7]);
    r
}

fn dev(serial: [u8; 6], converts_to: u16) -> Dev {
    Dev {
        rom: rom(serial),
        // The power-on scratchpad of docs/domain.md §6: 85 °C, CRC 1C.
        scratch: [0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10, 0x1C],
        converts_to,
    }
}

#[test]
fn datasheet_temperature_vectors() {
    let v = [
        (0x07D0, 125_000),
        (0x0550, 85_000),
        (0x0191, 25_063),
        (0x00A2, 10_125),
        (0x0008, 500),
        (0xFFF8, -500),
        (0xFF5E, -10_125),
        (0xFC90, -55_000),
    ];
    for (raw, milli) in v {
        assert_eq!(decode_temp(raw), milli, "{raw:#06x}");
    }
}

#[test]
fn rom_crc_vector() {
    assert!(Rom([0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00, 0xA2]).crc_ok());
    assert!(!Rom([0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00, 0xA3]).crc_ok());
}

#[test]
fn search_finds_every_device_once() {
    let serials = [
        [0x01, 0, 0, 0, 0, 0],
        [0x03, 0, 0, 0, 0, 0],
        [0x02, 0x80, 0, 0, 0, 0x7F],
        [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    ];
    let mut bus = Bus::new(serials.iter().map(|s| dev(*s, 0x0191)).collect());
    let mut out = [Rom([0; 8]); 8];
    let n = search(&mut bus, &mut out).unwrap();
    assert_eq!(n, 4);
    let mut got: Vec<_> = out[..n].iter().map(|r| r.0).collect();
    got.sort();
    let mut want: Vec<_> = serials.iter().map(|s| rom(*s)).collect();
    want.sort();
    assert_eq!(got, want);
    bus.done(&["search", "search", "search", "search"]);
}

#[test]
fn search_reports_more_devices_than_room() {
    let mut bus = Bus::new(vec![dev([1, 0, 0, 0, 0, 0], 0), dev([2, 0, 0, 0, 0, 0], 0)]);
    let mut out = [Rom([0; 8]); 1];
    assert_eq!(search(&mut bus, &mut out), Err(Error::TooManyDevices));
    bus.done(&["search", "search"]);
}

#[test]
fn power_on_85_before_a_conversion_is_suspect_then_real_after() {
    let mut bus = Bus::new(vec![dev([9, 9, 9, 9, 9, 9], 0x0191)]);
    let mut s = Ds18b20::new(Target::Only);
    assert_eq!(s.read_milli_c(&mut bus), Err(FaultKind::NoResponse));
    s.convert(&mut bus, &mut NoopDelay).unwrap();
    assert_eq!(s.read_milli_c(&mut bus), Ok(25_063));
    bus.done(&[
        "skip",
        "read scratchpad",
        "skip",
        "convert",
        "skip",
        "read scratchpad",
    ]);
}

#[test]
fn a_real_85_after_a_conversion_is_a_reading() {
    let mut bus = Bus::new(vec![dev([9, 9, 9, 9, 9, 9], 0x0550)]);
    let mut s = Ds18b20::new(Target::Only);
    s.convert(&mut bus, &mut NoopDelay).unwrap();
    assert_eq!(s.read_milli_c(&mut bus), Ok(85_000));
    s.power_cycled();
    assert_eq!(s.read_milli_c(&mut bus), Err(FaultKind::NoResponse));
    bus.done(&[
        "skip",
        "convert",
        "skip",
        "read scratchpad",
        "skip",
        "read scratchpad",
    ]);
}

#[test]
fn match_rom_addresses_one_device_among_several() {
    let a = dev([1, 2, 3, 4, 5, 6], 0xFF5E);
    let b = dev([6, 5, 4, 3, 2, 1], 0x07D0);
    let rom_b = b.rom;
    let mut bus = Bus::new(vec![a, b]);
    let mut s = Ds18b20::new(Target::Rom(Rom(rom_b)));
    s.convert(&mut bus, &mut NoopDelay).unwrap();
    assert_eq!(s.read_milli_c(&mut bus), Ok(125_000));
    let m = format!("match {:02x?}", rom_b);
    bus.done(&[&m, "convert", &m, "read scratchpad"]);
}

#[test]
fn corrupted_scratchpad_is_a_crc_fault_and_silence_is_no_response() {
    let mut bus = Bus::new(vec![dev([7; 6], 0x0191)]);
    bus.corrupt_scratchpad = true;
    let mut s = Ds18b20::new(Target::Only);
    s.convert(&mut bus, &mut NoopDelay).unwrap();
    assert_eq!(s.read_milli_c(&mut bus), Err(FaultKind::Crc));
    bus.present = false;
    assert_eq!(s.read_milli_c(&mut bus), Err(FaultKind::NoResponse));
    bus.done(&["skip", "convert", "skip", "read scratchpad"]);
}

#[test]
fn second_scratchpad_vector_reads_23_degrees() {
    let mut d = dev([4; 6], 0);
    d.scratch = [0x70, 0x01, 0x4B, 0x46, 0x7F, 0xFF, 0x10, 0x10, 0xE1];
    let mut bus = Bus::new(vec![d]);
    let s = Ds18b20::new(Target::Only);
    let sp = s.read_scratchpad(&mut bus).unwrap();
    assert_eq!(decode_temp(u16::from_le_bytes([sp[0], sp[1]])), 23_000);
    bus.done(&["skip", "read scratchpad"]);
}

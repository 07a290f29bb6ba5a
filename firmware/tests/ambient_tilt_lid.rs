//! SHT4x, LIS3DH tilt and the lid pin against mocked buses; every mock ends
//! with `.done()`.

use coldchain_firmware::drivers::lid::{Lid, OpenLevel};
use coldchain_firmware::drivers::sht4x::{self, Sht4x, convert};
use coldchain_firmware::drivers::tilt::{self, Lis3dh, angle_from_vertical};
use coldchain_proto::{EventKind, FaultKind};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as P};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I};

#[test]
fn sht4x_extreme_ticks() {
    assert_eq!(convert(0, 0).temp_milli_c, -45_000);
    assert_eq!(convert(65535, 0).temp_milli_c, 130_000);
    assert_eq!(convert(0, 0).rh_milli, 0, "below 0 %RH is clamped");
    assert_eq!(
        convert(0, 65535).rh_milli,
        100_000,
        "above 100 %RH is clamped"
    );
    // 25 °C: (25+45)/175·65535 = 26214 ticks.
    assert_eq!(convert(26214, 0).temp_milli_c, 25_000);
    // 29360 ticks: -6 + 125·29360/65535 = 50.0005 %RH, rounded to 50.001.
    assert_eq!(convert(0, 29360).rh_milli, 50_001);
    assert_eq!(convert(0, 29359).rh_milli, 49_999);
}

#[test]
fn sht4x_measures_with_crc_checked() {
    let hi = [0x66, 0x66, sht4x_crc(&[0x66, 0x66])];
    let rh = [0x72, 0xB0, sht4x_crc(&[0x72, 0xB0])];
    let mut i2c = I2cMock::new(&[
        I::write(0x44, vec![0xFD]),
        I::read(0x44, [hi, rh].concat()),
        I::write(0x44, vec![0xFD]),
        I::read(0x44, vec![0x66, 0x66, hi[2] ^ 1, rh[0], rh[1], rh[2]]),
    ]);
    let mut s = Sht4x::new(i2c.clone(), sht4x::ADDRESS);
    let v = s.measure(&mut NoopDelay).unwrap();
    assert_eq!(v.temp_milli_c, 25_000);
    assert_eq!(v.rh_milli, 50_001);
    assert_eq!(s.measure(&mut NoopDelay), Err(FaultKind::Crc));
    i2c.done();
}

fn sht4x_crc(b: &[u8]) -> u8 {
    coldchain_firmware::drivers::crc8::sensirion(b)
}

#[test]
fn lis3dh_init_and_tipped_over() {
    // x = +1000 mg (on its side): 1000 << 4 = 0x3E80 little-endian.
    let mut i2c = I2cMock::new(&[
        I::write_read(0x18, vec![0x0F], vec![0x33]),
        I::write(0x18, vec![0x20, 0x27]),
        I::write(0x18, vec![0x23, 0x88]),
        I::write_read(0x18, vec![0xA8], vec![0x80, 0x3E, 0x00, 0x00, 0x30, 0x00]),
    ]);
    let mut a = Lis3dh::new(i2c.clone(), tilt::ADDRESS);
    assert!(a.init().unwrap());
    let mg = a.accel_mg().unwrap();
    assert_eq!(mg, [1000, 0, 3]);
    assert_eq!(angle_from_vertical(mg), Some(90));
    i2c.done();
}

#[test]
fn lis3dh_wrong_id_is_refused() {
    let mut i2c = I2cMock::new(&[I::write_read(0x18, vec![0x0F], vec![0x00])]);
    let mut a = Lis3dh::new(i2c.clone(), tilt::ADDRESS);
    assert!(!a.init().unwrap());
    i2c.done();
}

#[test]
fn lid_is_debounced_over_two_reads() {
    let mut pin = PinMock::new(&[
        P::get(State::Low),
        P::get(State::High), // bounce
        P::get(State::Low),
        P::get(State::High),
        P::get(State::High), // open accepted
        P::get(State::Low),
        P::get(State::Low), // closed accepted
    ]);
    let mut lid = Lid::new(pin.clone(), OpenLevel::High, 2);
    let got: Vec<_> = (0..7).map(|_| lid.poll().unwrap()).collect();
    assert_eq!(
        got,
        [
            None,
            None,
            None,
            None,
            Some(EventKind::LidOpened),
            None,
            Some(EventKind::LidClosed)
        ]
    );
    pin.done();
}

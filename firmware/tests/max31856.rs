//! MAX31856: 19-bit decoding (docs/domain.md §6), cold junction, fault register,
//! and the bus transactions. Every mock ends with `.done()`.

use coldchain_firmware::drivers::max31856::{Max31856, TcType, decode_cj, decode_tc, fault_kind};
use coldchain_proto::FaultKind;
use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as D};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as T};

fn txn(ops: Vec<T<u8>>) -> Vec<T<u8>> {
    let mut v = vec![T::transaction_start()];
    v.extend(ops);
    v.push(T::transaction_end());
    v
}

#[test]
fn thermocouple_vectors() {
    assert_eq!(decode_tc([0x01, 0x90, 0x00]), 25_000);
    assert_eq!(decode_tc([0xFF, 0xF0, 0x00]), -1_000);
    assert_eq!(decode_tc([0xFB, 0x00, 0x00]), -80_000);
    assert_eq!(decode_tc([0xF3, 0x80, 0x00]), -200_000);
    // Extremes of the 19-bit field: +2047.9921875 and -2048 °C; the low 5 bits are ignored.
    assert_eq!(decode_tc([0x7F, 0xFF, 0xE0]), 2_047_992);
    assert_eq!(decode_tc([0x80, 0x00, 0x00]), -2_048_000);
    assert_eq!(decode_tc([0x01, 0x90, 0x1F]), 25_000);
    // One LSB = 1/128 °C = 7.8125 m°C.
    assert_eq!(decode_tc([0x00, 0x00, 0x20]), 7);
    assert_eq!(decode_tc([0xFF, 0xFF, 0xE0]), -8);
}

#[test]
fn cold_junction_vectors() {
    assert_eq!(decode_cj([0x19, 0x00]), 25_000);
    assert_eq!(decode_cj([0xEC, 0x00]), -20_000);
    assert_eq!(decode_cj([0x7F, 0xFC]), 127_984);
    assert_eq!(decode_cj([0x80, 0x00]), -128_000);
}

#[test]
fn fault_register_maps_to_kinds() {
    assert_eq!(fault_kind(0x01), FaultKind::OpenCircuit);
    assert_eq!(fault_kind(0x41), FaultKind::OpenCircuit);
    assert_eq!(fault_kind(0x02), FaultKind::Short);
    assert_eq!(fault_kind(0x40), FaultKind::OutOfRange);
    assert_eq!(fault_kind(0x80), FaultKind::OutOfRange);
}

#[test]
fn init_sets_type_t_with_open_detection_and_masks_thresholds() {
    let mut spi = SpiMock::new(&txn(vec![
        T::write_vec(vec![0x80]),
        T::write_vec(vec![0x13, 0x07, 0x3C]),
    ]));
    let mut d = Max31856::new(spi.clone(), TcType::T, true);
    d.init().unwrap();
    spi.done();
}

#[test]
fn one_shot_reads_minus_196_on_type_t() {
    // -196 °C = -25088/128: 0xF3 0xC0 0x00.
    let mut tx = txn(vec![T::write_vec(vec![0x80]), T::write_vec(vec![0x50])]);
    tx.extend(txn(vec![
        T::write_vec(vec![0x0C]),
        T::read_vec(vec![0xF3, 0xC0, 0x00, 0x00]),
    ]));
    let mut spi = SpiMock::new(&tx);
    let mut delay = CheckedDelay::new(&[D::blocking_delay_ms(169)]);
    let mut d = Max31856::new(spi.clone(), TcType::T, false);
    assert_eq!(d.read_milli_c(&mut delay).unwrap(), Ok(-196_000));
    spi.done();
    delay.done();
}

#[test]
fn open_thermocouple_is_a_fault_and_is_cleared() {
    let mut tx = txn(vec![T::write_vec(vec![0x80]), T::write_vec(vec![0x51])]);
    tx.extend(txn(vec![
        T::write_vec(vec![0x0C]),
        T::read_vec(vec![0x7F, 0xFF, 0xE0, 0x01]),
    ]));
    tx.extend(txn(vec![
        T::write_vec(vec![0x80]),
        T::write_vec(vec![0x13]),
    ]));
    let mut spi = SpiMock::new(&tx);
    let mut d = Max31856::new(spi.clone(), TcType::K, true);
    assert_eq!(
        d.read_milli_c(&mut NoopDelay).unwrap(),
        Err(FaultKind::OpenCircuit)
    );
    spi.done();
}

#[test]
fn beyond_the_type_range_is_out_of_range() {
    // 500 °C on type T (max 400): 500·128 = 64000 = 0x0FA00 -> bytes 0x1F 0x40 0x00.
    let mut tx = txn(vec![T::write_vec(vec![0x80]), T::write_vec(vec![0x51])]);
    tx.extend(txn(vec![
        T::write_vec(vec![0x0C]),
        T::read_vec(vec![0x1F, 0x40, 0x00, 0x00]),
    ]));
    let mut spi = SpiMock::new(&tx);
    let mut d = Max31856::new(spi.clone(), TcType::T, true);
    assert_eq!(
        d.read_milli_c(&mut NoopDelay).unwrap(),
        Err(FaultKind::OutOfRange)
    );
    spi.done();
}

#[test]
fn cold_junction_read() {
    let mut spi = SpiMock::new(&txn(vec![
        T::write_vec(vec![0x0A]),
        T::read_vec(vec![0xEC, 0x00]),
    ]));
    let mut d = Max31856::new(spi.clone(), TcType::T, true);
    assert_eq!(d.cold_junction_milli_c().unwrap(), -20_000);
    spi.done();
}

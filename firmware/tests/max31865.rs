//! MAX31865: the bus transactions it must make, the docs/domain.md §6 vectors, and
//! the extreme raw values. Every mock ends with `.done()`.

use coldchain_firmware::drivers::max31865::{self, Config, Filter, Max31865, Wires, convert};
use coldchain_proto::FaultKind;
use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as D};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as T};

/// docs/domain.md §6: (°C, code with R_REF 430 Ω, code with R_REF 400 Ω).
const VECTORS: [(f64, u16, u16); 6] = [
    (-196.0, 1543, 1659),
    (-150.0, 3027, 3254),
    (-80.0, 5207, 5597),
    (0.0, 7620, 8192),
    (8.0, 7858, 8448),
    (25.0, 8362, 8989),
];

fn write(reg: u8, data: &[u8]) -> Vec<T<u8>> {
    vec![
        T::transaction_start(),
        T::write_vec(vec![reg | 0x80]),
        T::write_vec(data.to_vec()),
        T::transaction_end(),
    ]
}

fn read(reg: u8, resp: &[u8]) -> Vec<T<u8>> {
    vec![
        T::transaction_start(),
        T::write_vec(vec![reg]),
        T::read_vec(resp.to_vec()),
        T::transaction_end(),
    ]
}

/// One code's step is R_REF/2^15 ≈ 0.013 Ω ≈ 0.034 °C at -196 °C on a PT100.
fn within_a_code(got_milli: i32, want_c: f64) {
    let want = want_c * 1000.0;
    assert!(
        (f64::from(got_milli) - want).abs() <= 35.0,
        "got {got_milli} m°C, want {want} ± one code"
    );
}

#[test]
fn datasheet_codes_convert_for_pt100_and_pt1000() {
    let pt100_400 = Config {
        r_ref: 400.0,
        ..Config::PT100_430
    };
    for (t, code430, code400) in VECTORS {
        within_a_code(convert(&Config::PT100_430, code430 << 1).unwrap(), t);
        within_a_code(convert(&Config::PT1000_4300, code430 << 1).unwrap(), t);
        within_a_code(convert(&pt100_400, code400 << 1).unwrap(), t);
    }
}

#[test]
fn minus_196_is_exact_to_the_code_not_a_linear_fit() {
    // Code 1543 at 430 Ω is 20.24811 Ω: -195.9963 °C by the full equation
    // (checked independently by bisection on the forward equation).
    assert_eq!(convert(&Config::PT100_430, 1543 << 1), Ok(-195_996));
    // Code 7620 is 99.99390 Ω: -0.0156 °C.
    assert_eq!(convert(&Config::PT100_430, 7620 << 1), Ok(-16));
}

#[test]
fn extreme_raw_values_are_faults_never_temperatures() {
    let c = Config::PT100_430;
    // Code 0: a linear fit says about -242 °C, which passes "<= -150".
    assert_eq!(convert(&c, 0x0000), Err(FaultKind::Short));
    // Below -200 °C (code 1410 < 1411) is outside the equation: shorted element.
    assert_eq!(convert(&c, 1400 << 1), Err(FaultKind::Short));
    // Full scale: open element.
    assert_eq!(convert(&c, 0xFFFE), Err(FaultKind::OpenCircuit));
    // Above +850 °C.
    assert_eq!(convert(&c, 30000 << 1), Err(FaultKind::OpenCircuit));
    // Fault bit set, even with a plausible code.
    assert!(convert(&c, (3027 << 1) | 1).is_err());
    assert_eq!(convert(&c, 0xFFFF), Err(FaultKind::OutOfRange));
}

#[test]
fn fault_status_bits_map_to_fault_kinds() {
    assert_eq!(max31865::fault_kind(0x80), FaultKind::OpenCircuit);
    assert_eq!(max31865::fault_kind(0x20), FaultKind::OpenCircuit);
    assert_eq!(max31865::fault_kind(0x10), FaultKind::OpenCircuit);
    assert_eq!(max31865::fault_kind(0x08), FaultKind::OpenCircuit);
    assert_eq!(max31865::fault_kind(0x40), FaultKind::Short);
    assert_eq!(max31865::fault_kind(0x04), FaultKind::OutOfRange);
}

#[test]
fn init_sets_thresholds_at_minus_200_and_850_and_clears_faults() {
    // +850 °C = 390.481 Ω = code 29756 (0xE878 shifted); -200 °C = 18.520 Ω = code 1411 (0x0B06).
    let mut tx = write(0x03, &[0xE8, 0x78, 0x0B, 0x06]);
    tx.extend(write(0x00, &[0x03])); // 50 Hz filter + fault clear, 4-wire
    let mut spi = SpiMock::new(&tx);
    let mut dev = Max31865::new(spi.clone(), Config::PT100_430);
    dev.init().unwrap();
    spi.done();
}

#[test]
fn one_shot_conversion_biases_waits_reads_and_unbiases() {
    let cfg = Config {
        wires: Wires::Three,
        filter: Filter::Hz60,
        ..Config::PT100_430
    };
    let code = 3027u16 << 1;
    let mut tx = write(0x00, &[0x90]); // bias, 3-wire, 60 Hz
    tx.extend(write(0x00, &[0xB0])); // + one-shot
    tx.extend(read(0x01, &code.to_be_bytes()));
    tx.extend(write(0x00, &[0x10])); // bias off
    let mut spi = SpiMock::new(&tx);
    let mut delay = CheckedDelay::new(&[D::blocking_delay_ms(11), D::blocking_delay_ms(53)]);
    let mut dev = Max31865::new(spi.clone(), cfg);
    let t = dev.read_milli_c(&mut delay).unwrap().unwrap();
    within_a_code(t, -150.0);
    spi.done();
    delay.done();
}

#[test]
fn open_rtd_reads_the_fault_status_clears_it_and_reports_open_circuit() {
    let raw: u16 = 0xFFFF; // full scale with the fault bit
    let mut tx = write(0x00, &[0x81]);
    tx.extend(write(0x00, &[0xA1]));
    tx.extend(read(0x01, &raw.to_be_bytes()));
    tx.extend(write(0x00, &[0x01]));
    tx.extend(read(0x07, &[0x84])); // high threshold + overvoltage
    tx.extend(write(0x00, &[0x03]));
    let mut spi = SpiMock::new(&tx);
    let mut dev = Max31865::new(spi.clone(), Config::PT100_430);
    assert_eq!(
        dev.read_milli_c(&mut NoopDelay).unwrap(),
        Err(FaultKind::OpenCircuit)
    );
    spi.done();
}

#[test]
fn automatic_fault_detection_cycle_polls_until_done() {
    let mut tx = write(0x00, &[0x89]); // bias + automatic fault detection + 50 Hz
    tx.extend(read(0x00, &[0x89])); // still running
    tx.extend(read(0x00, &[0x81])); // D3:D2 back to 00
    tx.extend(read(0x07, &[0x40]));
    tx.extend(write(0x00, &[0x03]));
    let mut spi = SpiMock::new(&tx);
    let mut dev = Max31865::new(spi.clone(), Config::PT100_430);
    assert_eq!(dev.fault_detection_cycle(&mut NoopDelay).unwrap(), 0x40);
    spi.done();
}

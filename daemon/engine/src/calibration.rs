//! Calibration of a probe channel: readings are stored as the device measured
//! them and corrected here, on evaluation, by the channel's certificate, so a
//! corrected certificate changes every figure at the next evaluation and the
//! measured values are never lost.
//!
//! A certificate states an id, its date, when the next calibration is due, a
//! correction (an offset, or a two-point line through two reference points)
//! and the uncertainty it states for corrected values. The platinum
//! element's IEC 60751 tolerance class gives the measurement uncertainty of
//! the element at a temperature `t` (°C):
//!
//! | class | tolerance, °C |
//! | --- | --- |
//! | AA | 0.1 + 0.0017 · \|t\| |
//! | A | 0.15 + 0.002 · \|t\| |
//! | B | 0.3 + 0.005 · \|t\| |
//!
//! (IEC 60751:2022, Table 2; class B at -196 °C: ±1.28 °C.)
//!
//! A certificate is valid up to the end (UTC) of its due date; evaluated data
//! after that is measured with an expired calibration, a data-health warning
//! ([`expired_condition`]).

use coldchain_proto::Measurement;
use serde::{Deserialize, Serialize};

use crate::alarm::{Condition, ConditionKind};
use crate::profile::Severity;

const DAY_MS: i64 = 86_400_000;

/// How measured values are corrected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// corrected = measured + offset (°C).
    Offset(f64),
    /// The line through two (measured, reference) points, °C.
    TwoPoint {
        /// Measured values at the two points.
        measured: [f64; 2],
        /// The reference values there.
        reference: [f64; 2],
    },
}

/// IEC 60751 tolerance class of a platinum resistance element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Class {
    /// Class AA (formerly 1/3 DIN).
    AA,
    /// Class A.
    A,
    /// Class B.
    B,
}

impl Class {
    /// The class tolerance at `t_c` °C, °C.
    pub fn tolerance_c(self, t_c: f64) -> f64 {
        let t = t_c.abs();
        match self {
            Class::AA => 0.1 + 0.0017 * t,
            Class::A => 0.15 + 0.002 * t,
            Class::B => 0.3 + 0.005 * t,
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Class::AA => "AA",
            Class::A => "A",
            Class::B => "B",
        })
    }
}

/// A calibration certificate of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// The certificate's id.
    pub id: String,
    /// Calibration date, ms (midnight UTC).
    pub date_ms: i64,
    /// Next calibration due, ms (midnight UTC of the due date).
    pub due_ms: i64,
    /// The correction.
    pub correction: Correction,
    /// Uncertainty stated for corrected values, °C.
    pub uncertainty_c: f64,
    /// The element's IEC 60751 class, when known.
    pub class: Option<Class>,
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CertificateError {
    /// A date that is not `YYYY-MM-DD`.
    #[error("{0:?}: expected a date YYYY-MM-DD")]
    Date(String),
    /// Due before the calibration.
    #[error("due date before the calibration date")]
    DueBeforeDate,
    /// Two-point correction through the same measured value twice.
    #[error("two_point: the two measured values must differ")]
    SamePoints,
    /// A number that is not finite, or a negative uncertainty.
    #[error("{0}: expected a finite number{1}")]
    Number(&'static str, &'static str),
}

impl Certificate {
    /// Checks the numbers and dates of a certificate.
    pub fn check(&self) -> Result<(), CertificateError> {
        if self.due_ms < self.date_ms {
            return Err(CertificateError::DueBeforeDate);
        }
        if !(self.uncertainty_c.is_finite() && self.uncertainty_c >= 0.0) {
            return Err(CertificateError::Number("uncertainty", " >= 0 (°C)"));
        }
        match &self.correction {
            Correction::Offset(o) if !o.is_finite() => {
                Err(CertificateError::Number("offset", " (°C)"))
            }
            Correction::TwoPoint {
                measured,
                reference,
            } => {
                if measured.iter().chain(reference).any(|v| !v.is_finite()) {
                    return Err(CertificateError::Number("two_point", " (°C)"));
                }
                if measured[0] == measured[1] {
                    return Err(CertificateError::SamePoints);
                }
                Ok(())
            }
            Correction::Offset(_) => Ok(()),
        }
    }

    /// The corrected value of a measured one, °C.
    pub fn correct_c(&self, measured: f64) -> f64 {
        match &self.correction {
            Correction::Offset(o) => measured + o,
            Correction::TwoPoint {
                measured: m,
                reference: r,
            } => r[0] + (measured - m[0]) * (r[1] - r[0]) / (m[1] - m[0]),
        }
    }

    /// The measured value a corrected one came from, °C (the correction is
    /// a line, so it is undone exactly up to rounding).
    pub fn measured_c(&self, corrected: f64) -> f64 {
        match &self.correction {
            Correction::Offset(o) => corrected - o,
            Correction::TwoPoint {
                measured: m,
                reference: r,
            } => m[0] + (corrected - r[0]) * (m[1] - m[0]) / (r[1] - r[0]),
        }
    }

    /// The corrected value of a measured one, milli-°C.
    pub fn correct_milli(&self, measured: i32) -> i32 {
        let c = self.correct_c(f64::from(measured) / 1000.0) * 1000.0;
        c.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
    }

    /// The measured value of a corrected one, milli-°C.
    pub fn measured_milli(&self, corrected: i32) -> i32 {
        let c = self.measured_c(f64::from(corrected) / 1000.0) * 1000.0;
        c.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
    }

    /// The first moment the certificate no longer covers: the end of its
    /// due date, ms.
    pub fn expires_ms(&self) -> i64 {
        self.due_ms + DAY_MS
    }

    /// The correction in words, e.g. `+0.120 °C` or
    /// `two-point: -196.500 -> -196.000, 0.100 -> 0.000 °C`.
    pub fn correction_text(&self) -> String {
        match &self.correction {
            Correction::Offset(o) => format!("offset {o:+.3} °C"),
            Correction::TwoPoint {
                measured: m,
                reference: r,
            } => format!(
                "two-point: measured {:.3} -> {:.3}, {:.3} -> {:.3} °C",
                m[0], r[0], m[1], r[1]
            ),
        }
    }
}

/// A measurement corrected by the certificate, if any; faults pass as they are.
pub fn apply(cert: Option<&Certificate>, m: Measurement) -> Measurement {
    match (cert, m) {
        (Some(c), Measurement::Valid(v)) => Measurement::Valid(c.correct_milli(v)),
        _ => m,
    }
}

/// A data-health warning when `cert` expires before `until_ms` (the end of
/// the data evaluated): from the later of its expiry and `from_ms` (the
/// shipment's start), fired at once, never cleared within the shipment.
pub fn expired_condition(cert: &Certificate, from_ms: i64, until_ms: i64) -> Option<Condition> {
    let start = cert.expires_ms().max(from_ms);
    if start > until_ms {
        return None;
    }
    let mut c = Condition::new(ConditionKind::CalibrationExpired, Severity::Warning, start);
    c.fires_ms = Some(start);
    c.last_ms = until_ms;
    c.beyond_ms = until_ms - start;
    c.excursions = 1;
    Some(c)
}

/// Parses `YYYY-MM-DD` as midnight UTC, ms.
pub fn parse_date(s: &str) -> Result<i64, CertificateError> {
    let bad = || CertificateError::Date(s.to_string());
    let parts: Vec<&str> = s.trim().split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return Err(bad());
    }
    // Days from civil (H. Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(correction: Correction) -> Certificate {
        Certificate {
            id: "CAL-1".into(),
            date_ms: parse_date("2025-06-01").unwrap(),
            due_ms: parse_date("2026-06-01").unwrap(),
            correction,
            uncertainty_c: 0.05,
            class: Some(Class::A),
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        // 2026-01-01 00:00 UTC, the tests' usual T0.
        assert_eq!(parse_date("2026-01-01"), Ok(1_767_225_600_000));
        assert_eq!(parse_date("2024-02-29"), Ok(1_709_164_800_000));
        for bad in [
            "2025-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offset_and_two_point_corrections() {
        let c = cert(Correction::Offset(-0.12));
        assert_eq!(c.correct_milli(-150_000), -150_120);
        assert_eq!(c.measured_milli(-150_120), -150_000);
        // Through (-196.5 -> -196.0) and (0.1 -> 0.0): gain 196/196.6.
        let c = cert(Correction::TwoPoint {
            measured: [-196.5, 0.1],
            reference: [-196.0, 0.0],
        });
        assert_eq!(c.correct_milli(-196_500), -196_000);
        assert_eq!(c.correct_milli(100), 0);
        // Half-way between the points, half-way between the references.
        assert_eq!(c.correct_milli(-98_200), -98_000);
        assert_eq!(c.measured_milli(-98_000), -98_200);
        assert_eq!(
            apply(Some(&c), Measurement::Valid(100)),
            Measurement::Valid(0)
        );
        let f = Measurement::Fault(coldchain_proto::FaultKind::OpenCircuit);
        assert_eq!(apply(Some(&c), f), f, "a fault stays a fault");
        assert_eq!(apply(None, Measurement::Valid(7)), Measurement::Valid(7));
    }

    #[test]
    fn iec_60751_tolerances() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(Class::AA.tolerance_c(0.0), 0.1));
        assert!(close(Class::A.tolerance_c(-150.0), 0.45));
        assert!(close(Class::B.tolerance_c(-196.0), 1.28));
        assert!(close(Class::B.tolerance_c(100.0), 0.8));
    }

    #[test]
    fn expiry_is_the_end_of_the_due_date() {
        let c = cert(Correction::Offset(0.0));
        let due = parse_date("2026-06-01").unwrap();
        assert!(expired_condition(&c, due - DAY_MS, due + DAY_MS - 1).is_none());
        let x = expired_condition(&c, due - DAY_MS, due + 3 * DAY_MS).unwrap();
        assert_eq!(x.id.kind, ConditionKind::CalibrationExpired);
        assert_eq!(x.start_ms(), due + DAY_MS);
        assert_eq!(x.fires_ms, Some(due + DAY_MS));
        assert_eq!(x.severity, Severity::Warning);
        // Expired before the shipment started: from its start.
        let x = expired_condition(&c, due + 10 * DAY_MS, due + 11 * DAY_MS).unwrap();
        assert_eq!(x.start_ms(), due + 10 * DAY_MS);
    }

    #[test]
    fn bad_certificates_are_refused() {
        let mut c = cert(Correction::TwoPoint {
            measured: [0.0, 0.0],
            reference: [0.0, 1.0],
        });
        assert_eq!(c.check(), Err(CertificateError::SamePoints));
        c.correction = Correction::Offset(f64::NAN);
        assert!(c.check().is_err());
        c.correction = Correction::Offset(0.1);
        c.uncertainty_c = -0.1;
        assert!(c.check().is_err());
        c.uncertainty_c = 0.1;
        c.due_ms = c.date_ms - 1;
        assert_eq!(c.check(), Err(CertificateError::DueBeforeDate));
    }
}

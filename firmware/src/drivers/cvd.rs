//! Callendar-Van Dusen (IEC 60751) for platinum RTDs, inverted exactly.
//!
//! `R(t) = R0·[1 + A·t + B·t² + C·(t-100)·t³]`, with `C = 0` at or above 0 °C.
//! The inverse is found by Newton's method on the full polynomial (C term
//! included below 0 °C), so it is exact to far below the converter's
//! resolution over -200..+850 °C: no linear fit, no table. It needs no square
//! root, so it runs in `core` without libm.

/// IEC 60751 coefficient A.
pub const A: f64 = 3.9083e-3;
/// IEC 60751 coefficient B.
pub const B: f64 = -5.775e-7;
/// IEC 60751 coefficient C (below 0 °C only).
pub const C: f64 = -4.183e-12;

/// Lowest temperature the equation is defined for, °C.
pub const T_MIN: f64 = -200.0;
/// Highest temperature the equation is defined for, °C.
pub const T_MAX: f64 = 850.0;

/// Resistance of an RTD with `r0` ohms at 0 °C, at `t` °C.
pub fn resistance(r0: f64, t: f64) -> f64 {
    let c = if t < 0.0 { C } else { 0.0 };
    r0 * (1.0 + A * t + B * t * t + c * (t - 100.0) * t * t * t)
}

/// Temperature in °C of an RTD with `r0` ohms at 0 °C reading `r` ohms, or
/// `None` outside -200..+850 °C (where the equation is not defined: an open
/// or shorted element, not a temperature).
pub fn temperature(r0: f64, r: f64) -> Option<f64> {
    if !(r.is_finite() && r0 > 0.0) {
        return None;
    }
    let ratio = r / r0;
    if ratio < resistance(1.0, T_MIN) - 1e-12 || ratio > resistance(1.0, T_MAX) + 1e-12 {
        return None;
    }
    let y = ratio - 1.0;
    // Start from the linear estimate; the curve is monotonic and gently curved,
    // so Newton converges in a handful of steps from anywhere in range.
    let mut t = y / A;
    for _ in 0..20 {
        let c = if t < 0.0 { C } else { 0.0 };
        let f = A * t + B * t * t + c * (t - 100.0) * t * t * t - y;
        let df = A + 2.0 * B * t + c * (4.0 * t * t * t - 300.0 * t * t);
        let step = f / df;
        t -= step;
        if step.abs() < 1e-10 {
            break;
        }
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/domain.md §6: PT100 resistances (4 decimals) at the listed temperatures.
    const PT100: [(f64, f64); 6] = [
        (-196.0, 20.2465),
        (-150.0, 39.7232),
        (-80.0, 68.3254),
        (0.0, 100.0),
        (8.0, 103.1229),
        (25.0, 109.7347),
    ];

    #[test]
    fn forward_matches_the_table() {
        for (t, r) in PT100 {
            assert!(
                (resistance(100.0, t) - r).abs() < 5e-5,
                "R({t}) = {}",
                resistance(100.0, t)
            );
        }
    }

    #[test]
    fn inverse_recovers_the_table_temperatures() {
        for (t, r) in PT100 {
            // 5e-5 Ω of table rounding is at most ~0.00025 °C at -196 °C.
            let got = temperature(100.0, r).unwrap();
            assert!((got - t).abs() < 3e-4, "{r} Ω -> {got} °C, want {t}");
            let got = temperature(1000.0, r * 10.0).unwrap();
            assert!(
                (got - t).abs() < 3e-4,
                "PT1000 {r}0 Ω -> {got} °C, want {t}"
            );
        }
    }

    #[test]
    fn c_term_matters_below_zero() {
        // Without C the -196 °C point would come out about 2 °C off.
        let no_c = |r: f64| {
            let y = r / 100.0 - 1.0;
            let mut t = y / A;
            for _ in 0..30 {
                t -= (A * t + B * t * t - y) / (A + 2.0 * B * t);
            }
            t
        };
        assert!((no_c(20.2465) + 196.0).abs() > 1.0);
        assert!((temperature(100.0, 20.2465).unwrap() + 196.0).abs() < 3e-4);
    }

    #[test]
    fn round_trip_across_the_whole_range() {
        let mut t = T_MIN;
        while t <= T_MAX {
            let back = temperature(100.0, resistance(100.0, t)).unwrap();
            assert!((back - t).abs() < 1e-6, "{t} -> {back}");
            t += 0.37;
        }
    }

    #[test]
    fn outside_the_equation_is_no_temperature() {
        // 0 Ω (shorted, or an open input read without its fault status) would
        // be about -242 °C by a linear fit: here it is no temperature at all.
        assert_eq!(temperature(100.0, 0.0), None);
        assert_eq!(temperature(100.0, 18.0), None);
        assert_eq!(temperature(100.0, 400.0), None);
        assert_eq!(temperature(100.0, f64::NAN), None);
        assert!(temperature(100.0, resistance(100.0, -199.99)).is_some());
    }
}

//! Human-readable text forms used in configuration: exact decimal temperatures
//! (`"-135.0"`, `"8"`, `"2.25 °C"`), limits (`"> 8.0"`, `">= 30.0"`) and
//! durations (`"30m"`, `"10h"`, `"800h50m"`, `"1d"`).
//!
//! Temperatures are parsed as decimal text straight into milli-°C, never through a
//! float, so `"8.0"` is exactly 8000 and a limit is never off by a rounding step.

/// Parses a decimal temperature in °C into milli-°C. At most three decimals;
/// an optional `°C` or `C` suffix is accepted.
pub(crate) fn parse_milli_c(text: &str) -> Result<i32, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("°C")
        .or_else(|| t.strip_suffix('C'))
        .unwrap_or(t)
        .trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let bad = || format!("{text:?} is not a temperature in °C (e.g. \"8.0\", \"-135.5\")");
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 3 {
        return Err(format!(
            "{text:?} has more than 3 decimals; temperatures are kept in milli-°C"
        ));
    }
    let int_val: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut frac_val: i64 = 0;
    for i in 0..3 {
        frac_val = frac_val * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    let milli = int_val
        .checked_mul(1000)
        .and_then(|v| v.checked_add(frac_val))
        .ok_or_else(bad)?;
    let milli = if neg { -milli } else { milli };
    i32::try_from(milli).map_err(|_| format!("{text:?} is out of range"))
}

/// Formats milli-°C as the shortest exact decimal with at least one decimal:
/// 8000 -> `"8.0"`, -135500 -> `"-135.5"`, 2250 -> `"2.25"`.
pub(crate) fn fmt_milli_c(milli: i32) -> String {
    let sign = if milli < 0 { "-" } else { "" };
    let abs = i64::from(milli).abs();
    let (int, frac) = (abs / 1000, abs % 1000);
    let mut frac_s = format!("{frac:03}");
    while frac_s.len() > 1 && frac_s.ends_with('0') {
        frac_s.pop();
    }
    format!("{sign}{int}.{frac_s}")
}

const UNITS: [(&str, i64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a duration such as `"30m"`, `"10h"`, `"800h50m"`, `"1d12h"`, `"45s"`,
/// `"250ms"` or `"0"` into milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a duration; write e.g. \"30m\", \"10h\", \"800h50m\", \"1d\", \"45s\""
        )
    };
    if t == "0" {
        return Ok(0);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut rest = t;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if n_end == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..u_end].trim();
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(bad)?;
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[u_end..];
    }
    Ok(total)
}

/// Formats milliseconds as a duration string that [`parse_duration_ms`] reads back.
pub(crate) fn fmt_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    if ms < 0 {
        // Never produced by validated profiles; keep it readable anyway.
        return format!("-{}", fmt_duration_ms(-ms));
    }
    let mut rest = ms;
    for (unit, scale) in UNITS {
        if rest >= scale {
            out.push_str(&format!("{}{unit}", rest / scale));
            rest %= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperatures_parse_exactly() {
        assert_eq!(parse_milli_c("8.0"), Ok(8000));
        assert_eq!(parse_milli_c("8"), Ok(8000));
        assert_eq!(parse_milli_c("-135.5"), Ok(-135_500));
        assert_eq!(parse_milli_c("-0.5"), Ok(-500));
        assert_eq!(parse_milli_c(".5"), Ok(500));
        assert_eq!(parse_milli_c("2.25 °C"), Ok(2250));
        assert_eq!(parse_milli_c("29.9"), Ok(29_900));
        assert_eq!(parse_milli_c("-196.001"), Ok(-196_001));
        assert!(parse_milli_c("8.0001").is_err());
        assert!(parse_milli_c("eight").is_err());
        assert!(parse_milli_c("").is_err());
        assert!(parse_milli_c("-").is_err());
        assert!(parse_milli_c("1e3").is_err());
        assert!(parse_milli_c("99999999").is_err());
    }

    #[test]
    fn temperatures_format_round_trip() {
        for m in [
            0,
            8000,
            -135_500,
            2250,
            -500,
            1,
            -1,
            29_900,
            i32::MAX,
            i32::MIN,
        ] {
            assert_eq!(parse_milli_c(&fmt_milli_c(m)), Ok(m), "{m}");
        }
        assert_eq!(fmt_milli_c(8000), "8.0");
        assert_eq!(fmt_milli_c(-500), "-0.5");
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration_ms("30m"), Ok(30 * 60_000));
        assert_eq!(parse_duration_ms("10h"), Ok(36_000_000));
        assert_eq!(
            parse_duration_ms("800h50m"),
            Ok(800 * 3_600_000 + 50 * 60_000)
        );
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("30").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("5 weeks").is_err());
        for ms in [
            0,
            1,
            1000,
            60_000,
            36_000_000,
            800 * 3_600_000 + 50 * 60_000 + 7,
        ] {
            assert_eq!(parse_duration_ms(&fmt_duration_ms(ms)), Ok(ms));
        }
    }
}

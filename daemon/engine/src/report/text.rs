//! Formatting shared by the report and the dashboard: temperatures, durations,
//! UTC times, URL path segments (HTML is escaped by maud). Deterministic: no locale, no local time zone.

/// `5.5 °C` from milli-°C (one decimal).
pub fn fmt_c(milli_c: i32) -> String {
    format!("{:.1} °C", f64::from(milli_c) / 1000.0)
}

/// `5.536` from milli-°C (three decimals, for CSV).
pub fn fmt_c3(milli_c: i32) -> String {
    let sign = if milli_c < 0 { "-" } else { "" };
    let a = milli_c.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

/// `40 min`, `3 h 20 min`, `2 d 4 h`; `0 min` for less than a minute.
pub fn fmt_dur(ms: i64) -> String {
    let neg = ms < 0;
    let m = ms.unsigned_abs() / 60_000;
    let (d, h, mi) = (m / 1440, (m / 60) % 24, m % 60);
    let s = if m < 60 {
        format!("{mi} min")
    } else if m < 48 * 60 {
        let h = m / 60;
        if mi == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {mi} min")
        }
    } else if h == 0 {
        format!("{d} d")
    } else {
        format!("{d} d {h} h")
    };
    if neg { format!("-{s}") } else { s }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-01-31 14:05 UTC`.
pub fn utc(ms: i64) -> String {
    format!("{} UTC", utc_bare(ms))
}

/// `2026-01-31 14:05`.
pub fn utc_bare(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60
    )
}

/// `2026-01-31T14:05:09Z` (for CSV and machine reading).
pub fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Percent-encodes a URL path segment (everything but unreserved characters).
pub fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        // 2024-02-29 12:34:56 UTC
        assert_eq!(iso(1_709_210_096_000), "2024-02-29T12:34:56Z");
        assert_eq!(utc(1_767_225_600_000), "2026-01-01 00:00 UTC");
        assert_eq!(fmt_dur(40 * 60_000), "40 min");
        assert_eq!(fmt_dur(31 * 3_600_000), "31 h");
        assert_eq!(fmt_dur(200 * 60_000), "3 h 20 min");
        assert_eq!(fmt_dur(52 * 3_600_000), "2 d 4 h");
        assert_eq!(fmt_c(9_500), "9.5 °C");
        assert_eq!(fmt_c(-190_050), "-190.1 °C");
        assert_eq!(fmt_c3(-50), "-0.050");
        assert_eq!(fmt_c3(5_536), "5.536");
    }

    #[test]
    fn url_segments() {
        assert_eq!(url_segment("W1234 25/1"), "W1234%2025%2F1");
    }
}

//! The temperature chart as SVG, written out so that it is deterministic:
//! the same report data gives the same bytes (snapshot-tested against
//! `daemon/tests/golden/`).
//!
//! What it shows: the readings as a polyline (broken at faults and gaps),
//! the alarm zones as bands coloured by severity, each excursion as a hatched
//! span with its peak marked, each fault as a purple cross on the time axis
//! (never a temperature), and each gap in the data as a grey span. Times are
//! UTC.
//!
//! The root element carries `data-readings` (valid readings drawn) and
//! `data-faults`; each polyline carries `data-n`, the number of its points,
//! so a test can count what was drawn.

use std::fmt::Write;

use super::text::{fmt_c, fmt_dur, utc_bare};
use super::{ReportData, side_of};
use crate::profile::Side;

const W: f64 = 960.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 84.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

fn band_fill(severity: &str) -> &'static str {
    match severity {
        "critical" => "#fcd4d4",
        "warning" => "#fdecc8",
        _ => "#dbe8fb",
    }
}

/// A gap: consecutive readings further apart than this many times the
/// median interval (and at least 2 min) break the line.
const GAP_FACTOR: i64 = 3;

/// The chart of a report's data.
pub fn svg(d: &ReportData) -> String {
    let rs = &d.readings;
    let valid: Vec<(i64, i32)> = rs.iter().filter_map(|&(t, v)| v.map(|v| (t, v))).collect();
    let faults: Vec<i64> = rs
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(t, _)| *t)
        .collect();

    // Time range: departure (or first reading) to the moment described (or last reading).
    let t0 = d
        .journey
        .departure_ms
        .into_iter()
        .chain(rs.first().map(|r| r.0))
        .min()
        .unwrap_or(d.as_of_ms - 3_600_000);
    let mut t1 = rs.last().map(|r| r.0).unwrap_or(d.as_of_ms).max(d.as_of_ms);
    if t1 <= t0 {
        t1 = t0 + 3_600_000;
    }

    // Temperature range: readings and zone limits, padded.
    let zones = &d.temperature.zones;
    let mut lo = valid.iter().map(|r| r.1).min().unwrap_or(0);
    let mut hi = valid.iter().map(|r| r.1).max().unwrap_or(10_000);
    for z in zones {
        lo = lo.min(z.limit_milli_c);
        hi = hi.max(z.limit_milli_c);
    }
    let pad = ((hi - lo) / 10).max(1_000);
    let (lo, hi) = (f64::from(lo - pad), f64::from(hi + pad));

    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * pw;
    let y = |m: f64| TOP + (hi - m) / (hi - lo) * ph;
    let yc = |m: f64| y(m).clamp(TOP, TOP + ph);

    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="Temperature of shipment {}" data-readings="{}" data-faults="{}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">
<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#c0392b" stroke-width="1.5" stroke-opacity="0.45"/></pattern>
<pattern id="gaphatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#7f8c8d" stroke-width="1" stroke-opacity="0.6"/></pattern></defs>
<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#95a5a6"/>
"##,
        text(&d.identity.shipment),
        valid.len(),
        faults.len(),
    );

    // Zone bands: from each limit outwards to the next limit on the same
    // side. Zones sharing a limit (a single and a cumulative zone) make one
    // band, coloured by the milder severity: the first alarm one meets there.
    let rank = |sev: &str| match sev {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    };
    let mut limits: Vec<(Side, i32, Vec<&super::ZoneEntry>)> = Vec::new();
    for z in zones {
        let side = side_of(z);
        match limits
            .iter_mut()
            .find(|(s, l, _)| *s == side && *l == z.limit_milli_c)
        {
            Some((_, _, v)) => v.push(z),
            None => limits.push((side, z.limit_milli_c, vec![z])),
        }
    }
    let band = |side: Side, limit: i32| -> f64 {
        let next = limits
            .iter()
            .filter(|(s, l, _)| {
                *s == side
                    && if side == Side::High {
                        *l > limit
                    } else {
                        *l < limit
                    }
            })
            .map(|(_, l, _)| f64::from(*l));
        match side {
            Side::High => next.fold(hi, f64::min),
            Side::Low => next.fold(lo, f64::max),
        }
    };
    for (side, limit, zs) in &limits {
        let from = f64::from(*limit);
        let to = band(*side, *limit);
        let (ya, yb) = if *side == Side::High {
            (yc(to), yc(from))
        } else {
            (yc(from), yc(to))
        };
        let mild = zs
            .iter()
            .map(|z| z.severity.as_str())
            .min_by_key(|s| rank(s))
            .unwrap_or("info");
        let names: Vec<String> = zs.iter().map(|z| text(&z.zone)).collect();
        let titles: Vec<String> = zs
            .iter()
            .map(|z| {
                format!(
                    "{} {} °C ({})",
                    text(&z.zone),
                    text(&z.limit),
                    text(&z.severity)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<rect class="zone" data-zone="{}" x="{LEFT}" y="{ya:.1}" width="{pw}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
            names.join(" "),
            (yb - ya).max(0.0),
            band_fill(mild),
            titles.join("; ")
        );
    }

    // Grid and axes.
    let span_c = (hi - lo) / 1000.0;
    let step_c = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0]
        .into_iter()
        .find(|st| span_c / st <= 8.0)
        .unwrap_or(200.0);
    let step_m = step_c * 1000.0;
    let mut v = (lo / step_m).ceil() * step_m;
    while v <= hi {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line class="grid" x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#000" stroke-opacity="0.08"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            fmt_tick_c(v / 1000.0)
        );
        v += step_m;
    }
    const MIN: i64 = 60_000;
    let span = t1 - t0;
    let step_t = [
        15 * MIN,
        30 * MIN,
        60 * MIN,
        120 * MIN,
        180 * MIN,
        360 * MIN,
        720 * MIN,
        1440 * MIN,
        2 * 1440 * MIN,
        7 * 1440 * MIN,
    ]
    .into_iter()
    .find(|st| span / st <= 8)
    .unwrap_or(30 * 1440 * MIN);
    let mut t = t0.div_euclid(step_t) * step_t;
    if t < t0 {
        t += step_t;
    }
    while t <= t1 {
        let xx = x(t);
        let label = utc_bare(t);
        let label = if span <= 1440 * MIN {
            label[11..].to_string()
        } else {
            label[5..].to_string()
        };
        let _ = writeln!(
            s,
            r##"<line class="grid" x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#000" stroke-opacity="0.08"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#333">{label}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
        );
        t += step_t;
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">time (UTC)</text><text x="12" y="{:.1}" fill="#555" transform="rotate(-90 12 {:.1})" text-anchor="middle">°C</text>"##,
        LEFT + pw,
        H - 6.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Zone labels in the right margin, one per limit.
    for (_, limit, zs) in &limits {
        let yy = yc(f64::from(*limit));
        let worst = zs.iter().map(|z| rank(&z.severity)).max().unwrap_or(0);
        let names: Vec<String> = zs.iter().map(|z| text(&z.zone)).collect();
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#333">{} {}</text>"##,
            LEFT + pw,
            if worst == 2 { "#c0392b" } else { "#d68910" },
            LEFT + pw + 4.0,
            yy + 4.0,
            names.join(" "),
            text(&zs[0].limit),
        );
    }

    // Gaps: median interval over all readings; wider steps are gaps.
    let mut dts: Vec<i64> = rs.windows(2).map(|w| w[1].0 - w[0].0).collect();
    dts.sort_unstable();
    let median = dts.get(dts.len() / 2).copied().unwrap_or(0);
    let gap_ms = (median * GAP_FACTOR).max(2 * MIN);
    for w in rs.windows(2) {
        if w[1].0 - w[0].0 > gap_ms {
            let (xa, xb) = (x(w[0].0), x(w[1].0));
            let _ = writeln!(
                s,
                r##"<rect class="gap" x="{xa:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="url(#gaphatch)" stroke="#7f8c8d" stroke-opacity="0.5"><title>no data for {}</title></rect>"##,
                xb - xa,
                fmt_dur(w[1].0 - w[0].0)
            );
        }
    }

    // Excursions: hatched spans, peak marked.
    for e in &d.temperature.excursions {
        let end = e.end_ms.unwrap_or(e.start_ms + e.duration_ms);
        let (xa, xb) = (x(e.start_ms), x(end));
        let fired = if e.fired_ms.is_some() {
            "alarm"
        } else {
            "within delay"
        };
        let _ = writeln!(
            s,
            r##"<rect class="excursion" data-zone="{}" x="{xa:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="url(#hatch)" stroke="#c0392b" stroke-width="1" stroke-dasharray="3 2"><title>{} excursion {} to {}, {} ({fired})</title></rect>"##,
            text(&e.zone),
            (xb - xa).max(1.0),
            text(&e.zone),
            utc_bare(e.start_ms),
            e.end_ms.map_or("ongoing".to_string(), utc_bare),
            fmt_dur(e.duration_ms),
        );
        if let Some(p) = e.peak_milli_c
            && let Some(&(tp, _)) = valid
                .iter()
                .find(|&&(t, v)| v == p && t >= e.start_ms && t <= end)
        {
            let _ = writeln!(
                s,
                r##"<circle class="peak" cx="{:.1}" cy="{:.1}" r="4" fill="#c0392b"><title>peak {}</title></circle><text x="{:.1}" y="{:.1}" fill="#c0392b" font-weight="bold">{}</text>"##,
                x(tp),
                y(f64::from(p)),
                fmt_c(p),
                x(tp) + 6.0,
                (y(f64::from(p)) - 6.0).max(TOP + 10.0),
                fmt_c(p)
            );
        }
    }

    // Readings: polylines broken at faults and gaps.
    let mut runs: Vec<Vec<(i64, i32)>> = vec![Vec::new()];
    let mut prev: Option<i64> = None;
    for &(t, v) in rs {
        let cur = runs.last_mut().map(|r| !r.is_empty()).unwrap_or(false);
        let broken = v.is_none() || prev.is_some_and(|p| t - p > gap_ms);
        if broken && cur {
            runs.push(Vec::new());
        }
        if let Some(v) = v
            && let Some(r) = runs.last_mut()
        {
            r.push((t, v));
        }
        prev = Some(t);
    }
    for r in runs.iter().filter(|r| !r.is_empty()) {
        let pts: Vec<String> = r
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(f64::from(v))))
            .collect();
        if r.len() == 1 {
            let _ = writeln!(
                s,
                r##"<polyline class="readings" data-n="1" points="{}" fill="none" stroke="#1f4e9c" stroke-width="2" stroke-linecap="round"/><circle cx="{}" r="2" fill="#1f4e9c"/>"##,
                pts[0],
                pts[0].replace(',', "\" cy=\""),
            );
        } else {
            let _ = writeln!(
                s,
                r##"<polyline class="readings" data-n="{}" points="{}" fill="none" stroke="#1f4e9c" stroke-width="1.6" stroke-linejoin="round"/>"##,
                r.len(),
                pts.join(" ")
            );
        }
    }

    // Faults: crosses on the time axis.
    let yb = TOP + ph - 6.0;
    for &t in &faults {
        let xx = x(t);
        let _ = writeln!(
            s,
            r##"<path class="fault" d="M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}" stroke="#8e44ad" stroke-width="2"><title>probe fault {}</title></path>"##,
            xx - 4.0,
            yb - 4.0,
            xx + 4.0,
            yb + 4.0,
            xx - 4.0,
            yb + 4.0,
            xx + 4.0,
            yb - 4.0,
            utc_bare(t)
        );
    }

    // Legend.
    let ly = H - 6.0;
    let _ = writeln!(
        s,
        r##"<g class="legend" fill="#333"><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#1f4e9c" stroke-width="2"/><text x="{:.1}" y="{ly:.1}">readings</text><rect x="{:.1}" y="{:.1}" width="14" height="10" fill="url(#hatch)" stroke="#c0392b"/><text x="{:.1}" y="{ly:.1}">excursion</text><path d="M{:.1} {:.1}l8 8m0 -8l-8 8" stroke="#8e44ad" stroke-width="2"/><text x="{:.1}" y="{ly:.1}">probe fault</text><rect x="{:.1}" y="{:.1}" width="14" height="10" fill="url(#gaphatch)" stroke="#7f8c8d"/><text x="{:.1}" y="{ly:.1}">no data</text></g>"##,
        ly - 4.0,
        LEFT + 18.0,
        ly - 4.0,
        LEFT + 22.0,
        LEFT + 90.0,
        ly - 9.0,
        LEFT + 108.0,
        LEFT + 180.0,
        ly - 8.0,
        LEFT + 194.0,
        LEFT + 270.0,
        ly - 9.0,
        LEFT + 288.0,
    );
    s.push_str("</svg>\n");
    s
}

/// Text for the chart's attributes and titles, escaped by maud. The chart's
/// markup itself stays written out: maud closes SVG elements as
/// `<line ...></line>` where the chart has `<line .../>`, which would change
/// the bytes of every report and fail the check of copies saved before.
fn text(s: &str) -> String {
    maud::html! { (s) }.into_string()
}

fn fmt_tick_c(c: f64) -> String {
    if c.abs() < 1e-9 {
        "0".into()
    } else if (c - c.round()).abs() < 1e-9 {
        format!("{c:.0}")
    } else {
        format!("{c:.1}")
    }
}

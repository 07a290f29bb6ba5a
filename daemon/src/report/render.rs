//! The report's three forms. Each is a pure function of [`ReportData`].

use std::fmt::Write;

use super::text::{esc, fmt_c, fmt_c3, fmt_dur, iso, utc};
use super::{FORMAT, ReportData, Stretch, canonical_json, chart, sha256, to_value};

/// Where the HTML form embeds its data (JSON with `<`, `>`, `&` escaped).
pub(crate) const DATA_OPEN: &str = r#"<script type="application/json" id="coldchain-report-data">"#;
/// The HTML form's hash, as a meta element.
pub(crate) const SHA_META_OPEN: &str = r#"<meta name="coldchain-report-sha256" content=""#;

/// The JSON form: `{"coldchain_report": FORMAT, "sha256": ..., "data": ...}`,
/// pretty-printed, keys sorted.
pub fn render_json(d: &ReportData) -> String {
    let data = to_value(d);
    let doc = serde_json::json!({
        "coldchain_report": FORMAT,
        "sha256": sha256(d),
        "data": serde_json::from_str::<serde_json::Value>(&canonical_json(&data)).unwrap_or(data),
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// Quotes a CSV field when needed (RFC 4180); fields starting with `=`, `+`,
/// `-` or `@` followed by a non-digit get a leading `'` so spreadsheets do
/// not run them as formulas.
fn csv_field(s: &str) -> String {
    let risky = s.starts_with(['=', '+', '@'])
        || (s.starts_with('-') && !s[1..].starts_with(|c: char| c.is_ascii_digit()));
    let s = if risky {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Splits one CSV line into fields (quotes honoured; no multi-line fields).
pub(crate) fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn row(s: &mut String, fields: &[&str]) {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    s.push_str(&line.join(","));
    s.push_str("\r\n");
}

fn opt_ms(v: Option<i64>) -> String {
    v.map(iso).unwrap_or_default()
}

fn opt_c3(v: Option<i32>) -> String {
    v.map(fmt_c3).unwrap_or_default()
}

fn minutes(ms: i64) -> String {
    format!("{:.1}", ms as f64 / 60_000.0)
}

/// The CSV form: every row starts with its section; tables have a `*.columns`
/// row. Times ISO 8601 UTC, temperatures °C with three decimals.
pub fn render_csv(d: &ReportData) -> String {
    let mut s = String::new();
    let id = &d.identity;
    row(&mut s, &["section", "key", "value"]);
    row(&mut s, &["report", "format", FORMAT]);
    row(&mut s, &["report", "shipment", &id.shipment]);
    row(&mut s, &["report", "as_of", &iso(d.as_of_ms)]);
    row(&mut s, &["report", "as_of_ms", &d.as_of_ms.to_string()]);
    row(&mut s, &["report", "sha256", &sha256(d)]);
    for f in &d.facts {
        row(&mut s, &["fact", f]);
    }
    row(&mut s, &["identity", "product", &id.product]);
    row(
        &mut s,
        &["identity", "din", id.din.as_deref().unwrap_or("")],
    );
    if let Some(code) = &id.product_code {
        row(&mut s, &["identity", "product_code", code]);
    }
    row(&mut s, &["identity", "profile", &id.profile]);
    row(&mut s, &["identity", "origin", &id.origin]);
    row(&mut s, &["identity", "destination", &id.destination]);
    for p in &id.probes {
        row(&mut s, &["probe", &p.device, &p.channel.to_string()]);
    }
    let j = &d.journey;
    row(&mut s, &["journey", "state", &j.state]);
    row(&mut s, &["journey", "departure", &opt_ms(j.departure_ms)]);
    row(&mut s, &["journey", "eta", &opt_ms(j.eta_ms)]);
    row(&mut s, &["journey", "arrival", &opt_ms(j.arrival_ms)]);
    row(&mut s, &["handoff.columns", "time", "to", "location", "by"]);
    for h in &j.handoffs {
        row(
            &mut s,
            &["handoff", &iso(h.at_ms), &h.to, &h.location, &h.by],
        );
    }
    let t = &d.temperature;
    row(&mut s, &["temperature", "min_c", &opt_c3(t.min_milli_c)]);
    row(&mut s, &["temperature", "max_c", &opt_c3(t.max_milli_c)]);
    row(&mut s, &["temperature", "mean_c", &opt_c3(t.mean_milli_c)]);
    match &t.mkt {
        Some(m) => {
            row(&mut s, &["temperature", "mkt_c", &fmt_c3(m.whole_milli_c)]);
            row(
                &mut s,
                &[
                    "temperature",
                    "mkt_window_h",
                    &(m.window_ms / 3_600_000).to_string(),
                ],
            );
            row(
                &mut s,
                &["temperature", "mkt_window_max_c", &fmt_c3(m.window_milli_c)],
            );
            row(
                &mut s,
                &["temperature", "mkt_window_start", &iso(m.window_start_ms)],
            );
            row(
                &mut s,
                &["temperature", "mkt_window_end", &iso(m.window_end_ms)],
            );
        }
        None => row(
            &mut s,
            &[
                "temperature",
                "mkt_c",
                "",
                t.mkt_note.as_deref().unwrap_or(""),
            ],
        ),
    }
    row(
        &mut s,
        &[
            "zone.columns",
            "zone",
            "limit_c",
            "kind",
            "delay_min",
            "severity",
            "time_beyond_min",
            "entries",
            "alarms",
        ],
    );
    for z in &t.zones {
        row(
            &mut s,
            &[
                "zone",
                &z.zone,
                &z.limit,
                &z.kind,
                &minutes(z.delay_ms),
                &z.severity,
                &minutes(z.time_beyond_ms),
                &z.entries.to_string(),
                &z.fired.to_string(),
            ],
        );
    }
    row(
        &mut s,
        &[
            "excursion.columns",
            "zone",
            "severity",
            "start",
            "end",
            "peak_c",
            "duration_min",
            "beyond_min",
            "alarm_at",
        ],
    );
    for e in &t.excursions {
        row(
            &mut s,
            &[
                "excursion",
                &e.zone,
                &e.severity,
                &iso(e.start_ms),
                &opt_ms(e.end_ms),
                &opt_c3(e.peak_milli_c),
                &minutes(e.duration_ms),
                &minutes(e.beyond_ms),
                &opt_ms(e.fired_ms),
            ],
        );
    }
    let h = &d.data_health;
    row(&mut s, &["health", "readings", &h.readings.to_string()]);
    row(
        &mut s,
        &["health", "fault_readings", &h.fault_readings.to_string()],
    );
    row(
        &mut s,
        &[
            "health",
            "estimated_time_readings",
            &h.estimated_time_readings.to_string(),
        ],
    );
    row(
        &mut s,
        &["stretch.columns", "kind", "start", "end", "duration_min"],
    );
    let stretches = |s: &mut String, kind: &str, v: &[Stretch]| {
        for x in v {
            row(
                s,
                &[
                    "stretch",
                    kind,
                    &iso(x.start_ms),
                    &opt_ms(x.end_ms),
                    &minutes(x.duration_ms),
                ],
            );
        }
    };
    stretches(&mut s, "fault", &h.faults);
    stretches(&mut s, "clock_unsynced", &h.unsynced_clock);
    stretches(&mut s, "silence", &h.silences);
    for o in &h.other {
        stretches(&mut s, &o.kind, std::slice::from_ref(&o.stretch));
    }
    if !d.calibration.is_empty() {
        row(
            &mut s,
            &[
                "calibration.columns",
                "device",
                "channel",
                "certificate",
                "date",
                "due",
                "expired",
                "correction",
                "uncertainty_c",
                "class",
                "tolerance_at_min_c",
                "tolerance_at_max_c",
                "measured_min_c",
                "measured_max_c",
            ],
        );
    }
    for c in &d.calibration {
        let o = |v: Option<i32>| v.map(fmt_c3).unwrap_or_default();
        row(
            &mut s,
            &[
                "calibration",
                &c.device,
                &c.channel.to_string(),
                &c.certificate,
                &iso(c.date_ms)[..10],
                &iso(c.due_ms)[..10],
                &c.expired.to_string(),
                &c.correction,
                &fmt_c3(c.uncertainty_milli_c),
                c.class.as_deref().unwrap_or(""),
                &o(c.tolerance_at_min_milli_c),
                &o(c.tolerance_at_max_milli_c),
                &o(c.measured_min_milli_c),
                &o(c.measured_max_milli_c),
            ],
        );
    }
    row(
        &mut s,
        &["sequence_gap.columns", "device", "boot", "first", "last"],
    );
    for g in &h.sequence_gaps {
        row(
            &mut s,
            &[
                "sequence_gap",
                &g.device,
                &g.boot.to_string(),
                &g.first.to_string(),
                &g.last.to_string(),
            ],
        );
    }
    row(
        &mut s,
        &[
            "device.columns",
            "device",
            "frames_verified",
            "unsigned_accepted",
            "rejected_bad_tag",
            "rejected_device_mismatch",
            "rejected_unsigned",
            "rejected_sequence_reuse",
            "battery_last_mv",
            "battery_min_mv",
            "battery_low_events",
        ],
    );
    for x in &h.devices {
        let o = |v: Option<u16>| v.map(|v| v.to_string()).unwrap_or_default();
        row(
            &mut s,
            &[
                "device",
                &x.device,
                &x.frames_verified.to_string(),
                &x.frames_unsigned_accepted.to_string(),
                &x.rejected_bad_tag.to_string(),
                &x.rejected_device_mismatch.to_string(),
                &x.rejected_unsigned.to_string(),
                &x.rejected_sequence_reuse.to_string(),
                &o(x.battery_last_mv),
                &o(x.battery_min_mv),
                &x.battery_low_events.to_string(),
            ],
        );
    }
    if let Some(h) = &d.viability.hold_time {
        row(&mut s, &["viability", "hold_time", &h.sentence()]);
    }
    if let Some(w) = &d.viability.window {
        row(&mut s, &["viability", "window_start", &iso(w.start_ms)]);
        row(
            &mut s,
            &[
                "viability",
                "nominal_h",
                &format!("{:.1}", w.nominal_ms as f64 / 3.6e6),
            ],
        );
        row(
            &mut s,
            &[
                "viability",
                "consumed_h",
                &format!("{:.1}", w.consumed_ms as f64 / 3.6e6),
            ],
        );
        row(
            &mut s,
            &[
                "viability",
                "remaining_h",
                &format!("{:.1}", w.remaining_ms as f64 / 3.6e6),
            ],
        );
        row(
            &mut s,
            &[
                "viability",
                "unknown_h",
                &format!("{:.1}", w.unknown_ms as f64 / 3.6e6),
            ],
        );
    }
    if let Some(w) = &d.viability.warming {
        row(&mut s, &["warming", "limit_c", &w.limit]);
        row(&mut s, &["warming", "events", &w.events.to_string()]);
        row(
            &mut s,
            &["warming", "time_above_min", &minutes(w.time_above_ms)],
        );
        row(&mut s, &["warming", "peak_c", &opt_c3(w.peak_milli_c)]);
    }
    row(
        &mut s,
        &[
            "alert.columns",
            "id",
            "kind",
            "severity",
            "state",
            "fires",
            "cleared",
            "message",
            "ack_by",
            "ack_comment",
            "ack_at",
            "escalations",
        ],
    );
    for a in &d.alerts {
        row(
            &mut s,
            &[
                "alert",
                &a.id.to_string(),
                &a.kind,
                &a.severity,
                &a.state,
                &iso(a.fires_ms),
                &opt_ms(a.cleared_ms),
                &a.message,
                a.ack_by.as_deref().unwrap_or(""),
                a.ack_comment.as_deref().unwrap_or(""),
                &opt_ms(a.ack_ms),
                &a.escalations.to_string(),
            ],
        );
        for v in &a.revisions {
            row(
                &mut s,
                &[
                    "alert.revised",
                    &a.id.to_string(),
                    &iso(v.at_ms),
                    &iso(v.was_fires_ms),
                    &v.was_message,
                ],
            );
        }
        if let Some(w) = &a.withdrawn {
            row(
                &mut s,
                &[
                    "alert.withdrawn",
                    &a.id.to_string(),
                    &iso(w.at_ms),
                    &w.reason,
                ],
            );
        }
    }
    for a in &d.alerts {
        if let Some(x) = &a.assessment {
            row(
                &mut s,
                &[
                    "alert.assessed",
                    &a.id.to_string(),
                    &x.full_name,
                    &x.user,
                    &iso(x.at_ms),
                    &x.comment,
                ],
            );
        }
    }
    if let Some(x) = &d.disposition {
        row(
            &mut s,
            &["disposition", &x.decision, &x.comment, &x.by, &iso(x.at_ms)],
        );
        if let Some(g) = &x.signature {
            row(
                &mut s,
                &[
                    "signature",
                    &g.full_name,
                    &g.user,
                    &iso(g.signed_ms),
                    &g.meaning,
                    &g.report_sha256,
                ],
            );
        }
    }
    row(
        &mut s,
        &["reading.columns", "time", "temperature_c", "fault"],
    );
    for &(t, v) in &d.readings {
        match v {
            Some(v) => row(&mut s, &["reading", &iso(t), &fmt_c3(v), ""]),
            None => row(&mut s, &["reading", &iso(t), "", "fault"]),
        }
    }
    s
}

fn opt_utc(v: Option<i64>) -> String {
    v.map(utc).unwrap_or_else(|| "—".into())
}

fn opt_temp(v: Option<i32>) -> String {
    v.map(fmt_c).unwrap_or_else(|| "—".into())
}

const CSS: &str = include_str!("report.css");

/// The HTML form: self-contained (no scripts, no external resources), prints
/// on A4.
pub fn render_html(d: &ReportData) -> String {
    let id = &d.identity;
    let sha = sha256(d);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="{FORMAT}">
{SHA_META_OPEN}{sha}">
<title>Arrival report {}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>Arrival report</h1>
<p class="sub"><strong>{}</strong> · {} · as of {}</p>
</header>
<section class="facts"><h2>Facts</h2><ul>
"#,
        esc(&id.shipment),
        esc(&id.shipment),
        esc(&id.product),
        utc(d.as_of_ms),
    );
    for f in &d.facts {
        let _ = writeln!(s, "<li>{}</li>", esc(f));
    }
    s.push_str("</ul><p class=\"note\">This report states facts. The disposition is decided by a person under the receiving lab's procedure.</p></section>\n");

    // Identity and journey.
    let probes: Vec<String> = id
        .probes
        .iter()
        .map(|p| format!("{} ch {}", esc(&p.device), p.channel))
        .collect();
    let j = &d.journey;
    let _ = write!(
        s,
        r#"<section class="two"><div><h2>Identity</h2><table class="kv">
<tr><th>Shipment</th><td>{}</td></tr>
<tr><th>Product</th><td>{}</td></tr>
<tr><th>DIN</th><td>{}</td></tr>{}
<tr><th>Lane (profile)</th><td>{}</td></tr>
<tr><th>Probes</th><td>{}</td></tr>
</table></div>
<div><h2>Journey</h2><table class="kv">
<tr><th>From</th><td>{}</td></tr>
<tr><th>To</th><td>{}</td></tr>
<tr><th>Departure</th><td>{}</td></tr>
<tr><th>ETA</th><td>{}</td></tr>
<tr><th>Arrival</th><td>{}</td></tr>
<tr><th>State</th><td>{}</td></tr>
</table></div></section>
"#,
        esc(&id.shipment),
        esc(&id.product),
        esc(id.din.as_deref().unwrap_or("—")),
        // Only when given: reports made before the field re-render the same.
        id.product_code
            .as_deref()
            .map(|c| format!("\n<tr><th>Product code</th><td>{}</td></tr>", esc(c)))
            .unwrap_or_default(),
        esc(&id.profile),
        probes.join(", "),
        esc(&id.origin),
        esc(&id.destination),
        opt_utc(j.departure_ms),
        opt_utc(j.eta_ms),
        opt_utc(j.arrival_ms),
        esc(&j.state),
    );
    s.push_str("<section><h2>Custody</h2>");
    if j.handoffs.is_empty() {
        s.push_str("<p>No custody hand-off recorded.</p>");
    } else {
        s.push_str("<table><thead><tr><th>Time</th><th>To</th><th>Location</th><th>Recorded by</th></tr></thead><tbody>");
        for h in &j.handoffs {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                utc(h.at_ms),
                esc(&h.to),
                esc(&h.location),
                esc(&h.by)
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>\n");

    // Temperature.
    let t = &d.temperature;
    let _ = write!(
        s,
        r#"<section class="chart-section"><h2>Temperature</h2>
<figure>{}</figure>
<table class="kv"><tr><th>Minimum</th><td>{}</td></tr><tr><th>Maximum</th><td>{}</td></tr><tr><th>Mean (time-weighted)</th><td>{}</td></tr>
"#,
        chart::svg(d),
        opt_temp(t.min_milli_c),
        opt_temp(t.max_milli_c),
        opt_temp(t.mean_milli_c),
    );
    match &t.mkt {
        Some(m) => {
            let _ = write!(
                s,
                "<tr><th>MKT, whole shipment</th><td>{}</td></tr><tr><th>MKT, warmest {} window</th><td>{}, {} to {}{}</td></tr>",
                fmt_c(m.whole_milli_c),
                fmt_dur(m.window_ms),
                fmt_c(m.window_milli_c),
                utc(m.window_start_ms),
                utc(m.window_end_ms),
                if m.window_full {
                    ""
                } else {
                    " (the data is shorter than the window)"
                },
            );
        }
        None => {
            let _ = write!(
                s,
                "<tr><th>MKT</th><td>{}</td></tr>",
                esc(t.mkt_note.as_deref().unwrap_or("—"))
            );
        }
    }
    s.push_str("</table>\n<h3>Alarm zones</h3><table><thead><tr><th>Zone</th><th>Limit</th><th>Kind</th><th>Delay</th><th>Severity</th><th>Time beyond</th><th>Entries</th><th>Alarms</th></tr></thead><tbody>");
    for z in &t.zones {
        let _ = write!(
            s,
            "<tr class=\"sev-{}\"><td>{}</td><td>{} °C</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&z.severity),
            esc(&z.zone),
            esc(&z.limit),
            esc(&z.kind),
            fmt_dur(z.delay_ms),
            esc(&z.severity),
            fmt_dur(z.time_beyond_ms),
            z.entries,
            z.fired
        );
    }
    s.push_str("</tbody></table>\n<h3>Excursions</h3>");
    if t.excursions.is_empty() {
        s.push_str("<p>No excursion.</p>");
    } else {
        s.push_str("<table><thead><tr><th>Zone</th><th>Start</th><th>End</th><th>Peak</th><th>Duration</th><th>Beyond limit</th><th>Alarm</th></tr></thead><tbody>");
        for e in &t.excursions {
            let _ = write!(
                s,
                "<tr class=\"sev-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.severity),
                esc(&e.zone),
                utc(e.start_ms),
                e.end_ms.map(utc).unwrap_or_else(|| "ongoing".into()),
                opt_temp(e.peak_milli_c),
                fmt_dur(e.duration_ms),
                fmt_dur(e.beyond_ms),
                e.fired_ms
                    .map(utc)
                    .unwrap_or_else(|| "none (within delay)".into())
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>\n");

    // Viability.
    s.push_str("<section><h2>Viability</h2>");
    match &d.viability.window {
        Some(w) => {
            let _ = write!(
                s,
                "<table class=\"kv\"><tr><th>Window start</th><td>{}</td><th>Nominal</th><td>{}</td></tr><tr><th>Consumed</th><td>{}</td><th>Remaining</th><td>{}</td></tr><tr><th>Without data</th><td>{}</td><th>Loss (table model)</th><td>{}</td></tr></table>",
                utc(w.start_ms),
                fmt_dur(w.nominal_ms),
                fmt_dur(w.consumed_ms),
                fmt_dur(w.remaining_ms),
                fmt_dur(w.unknown_ms),
                w.loss_centi_pct
                    .map(|c| format!("{}.{:02} %", c / 100, c % 100))
                    .unwrap_or_else(|| "—".into())
            );
        }
        None => s.push_str("<p>No viability window for this product.</p>"),
    }
    if let Some(h) = &d.viability.hold_time {
        let _ = write!(
            s,
            "<p class=\"hold{}\">Hold time at ETA: <strong>{}</strong> (a line through {} readings from {}, {:.1} °C/h{}).</p>",
            if h.warning { " warning" } else { "" },
            esc(&h.sentence()),
            h.points,
            utc(h.fit_from_ms),
            h.rate_mc_per_h as f64 / 1000.0,
            if h.after_tilt { ", since the tilt" } else { "" }
        );
    }
    if let Some(w) = &d.viability.warming {
        let _ = write!(
            s,
            "<table class=\"kv\"><tr><th>Warming limit</th><td>{} °C</td><th>Warming events</th><td>{}</td></tr><tr><th>Time above</th><td>{}</td><th>Warmest above</th><td>{}</td></tr></table>",
            esc(&w.limit),
            w.events,
            fmt_dur(w.time_above_ms),
            opt_temp(w.peak_milli_c)
        );
    }
    s.push_str("</section>\n");

    // Data health.
    let h = &d.data_health;
    let _ = write!(
        s,
        "<section><h2>Data health</h2><table class=\"kv\"><tr><th>Readings</th><td>{}</td><th>Probe faults</th><td>{}</td><th>Estimated time</th><td>{}</td></tr></table>",
        h.readings, h.fault_readings, h.estimated_time_readings
    );
    s.push_str("<table><thead><tr><th>Device</th><th>Frames verified</th><th>Rejected (bad tag / wrong topic / unsigned / reused sequence)</th><th>Battery last / min</th><th>Battery-low events</th></tr></thead><tbody>");
    for x in &h.devices {
        let mv = |v: Option<u16>| v.map(|v| format!("{v} mV")).unwrap_or_else(|| "—".into());
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}{}</td><td>{} / {} / {} / {}</td><td>{} / {}</td><td>{}</td></tr>",
            esc(&x.device),
            x.frames_verified,
            if x.frames_unsigned_accepted > 0 {
                format!(
                    " ({} unsigned, accepted by policy)",
                    x.frames_unsigned_accepted
                )
            } else {
                String::new()
            },
            x.rejected_bad_tag,
            x.rejected_device_mismatch,
            x.rejected_unsigned,
            x.rejected_sequence_reuse,
            mv(x.battery_last_mv),
            mv(x.battery_min_mv),
            x.battery_low_events
        );
    }
    s.push_str("</tbody></table>");
    let mut rows: Vec<(String, &Stretch)> = Vec::new();
    rows.extend(h.faults.iter().map(|x| ("probe fault".to_string(), x)));
    rows.extend(
        h.unsynced_clock
            .iter()
            .map(|x| ("clock not synced".to_string(), x)),
    );
    rows.extend(h.silences.iter().map(|x| ("no data".to_string(), x)));
    rows.extend(
        h.other
            .iter()
            .map(|o| (o.kind.replace('_', " "), &o.stretch)),
    );
    if rows.is_empty() && h.sequence_gaps.is_empty() {
        s.push_str("<p>No fault, gap or unsynced-clock stretch.</p>");
    } else {
        s.push_str("<table><thead><tr><th>What</th><th>Start</th><th>End</th><th>Duration</th></tr></thead><tbody>");
        for (what, x) in rows {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&what),
                utc(x.start_ms),
                x.end_ms.map(utc).unwrap_or_else(|| "ongoing".into()),
                fmt_dur(x.duration_ms)
            );
        }
        for g in &h.sequence_gaps {
            let _ = write!(
                s,
                "<tr><td>frames missing</td><td colspan=\"3\">{} boot {}: seq {} to {}</td></tr>",
                esc(&g.device),
                g.boot,
                g.first,
                g.last
            );
        }
        s.push_str("</tbody></table>");
    }
    if !d.calibration.is_empty() {
        s.push_str("<h3>Calibration</h3><p>Readings are stored as measured; the figures in this report are corrected by these certificates.</p><table><thead><tr><th>Probe</th><th>Certificate</th><th>Calibrated / due</th><th>Correction</th><th>Measured (lowest / highest)</th><th>Measurement uncertainty</th></tr></thead><tbody>");
        for c in &d.calibration {
            let deg = |v: i32| format!("{} °C", fmt_c3(v));
            let measured = match (c.measured_min_milli_c, c.measured_max_milli_c) {
                (Some(a), Some(b)) => format!("{} / {}", deg(a), deg(b)),
                _ => "—".into(),
            };
            let mut unc = format!("certificate ±{}", deg(c.uncertainty_milli_c));
            if let (Some(k), Some(a), Some(b)) = (
                &c.class,
                c.tolerance_at_min_milli_c,
                c.tolerance_at_max_milli_c,
            ) {
                let _ = write!(
                    unc,
                    "; IEC 60751 class {} ±{} at the lowest, ±{} at the highest reading",
                    esc(k),
                    deg(a),
                    deg(b)
                );
            }
            let _ = write!(
                s,
                "<tr><td>{} ch {}</td><td>{}</td><td>{} / {}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.device),
                c.channel,
                esc(&c.certificate),
                &iso(c.date_ms)[..10],
                &iso(c.due_ms)[..10],
                if c.expired {
                    " <strong>(expired)</strong>"
                } else {
                    ""
                },
                esc(&c.correction),
                measured,
                unc
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>\n");

    // Alerts.
    s.push_str("<section><h2>Alerts</h2>");
    if d.alerts.is_empty() {
        s.push_str("<p>No alert.</p>");
    } else {
        s.push_str("<table><thead><tr><th>#</th><th>Alert</th><th>Fired</th><th>State</th><th>Acknowledged</th></tr></thead><tbody>");
        for a in &d.alerts {
            let ack = match (&a.ack_by, &a.ack_comment, a.ack_ms) {
                (Some(by), c, Some(at)) => format!(
                    "{} by {}: “{}”",
                    utc(at),
                    esc(by),
                    esc(c.as_deref().unwrap_or(""))
                ),
                _ => "not acknowledged".into(),
            };
            let ack = match &a.assessment {
                Some(x) => format!(
                    "{ack}<br><small class=\"assessed\">QA assessment {} by {} ({}): “{}”</small>",
                    utc(x.at_ms),
                    esc(&x.full_name),
                    esc(&x.user),
                    esc(&x.comment)
                ),
                // Nothing added without one: reports saved before
                // assessments existed still render to the same bytes.
                None => ack,
            };
            let _ = write!(
                s,
                "<tr class=\"sev-{} state-{}\"><td>{}</td><td>{} · {}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.severity),
                esc(&a.state),
                a.id,
                esc(&a.severity),
                esc(&a.message),
                history_html(a),
                utc(a.fires_ms),
                esc(&a.state),
                ack
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>\n<section><h2>Disposition</h2>");
    match &d.disposition {
        Some(x) => {
            let _ = write!(
                s,
                "<p><strong>{}</strong> by {} at {}: “{}”</p>",
                esc(&x.decision),
                esc(&x.by),
                utc(x.at_ms),
                esc(&x.comment)
            );
            // Recorded before signatures: rendered as it always was.
            if let Some(g) = &x.signature {
                let _ = write!(
                    s,
                    "<div class=\"signature\"><p>Electronically signed by <strong>{}</strong> ({}) on {}.<br>Meaning of this signature: <strong>{}</strong>.<br>The signature covers the report content with SHA-256 <code class=\"signed-sha\">{}</code>{}.</p></div>",
                    esc(&g.full_name),
                    esc(&g.user),
                    utc(g.signed_ms),
                    esc(&g.meaning),
                    esc(&g.report_sha256),
                    if super::content_sha256(d) == g.report_sha256 {
                        " (this report's content hashes to it)"
                    } else {
                        "; THIS REPORT'S CONTENT NO LONGER HASHES TO IT: the record changed after signing"
                    }
                );
            }
        }
        None => s.push_str("<p>Not recorded.</p>"),
    }
    s.push_str("</section>\n");

    let data_json = canonical_json(&to_value(d))
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let _ = write!(
        s,
        r#"<footer><p>{} readings; the full series is in the CSV and JSON forms of this report.</p>
<p>SHA-256 of the report data: <code class="sha">{sha}</code><br>
Check a copy against the daemon: <code>coldchain report --verify FILE</code> (or POST the file to <code>/api/v1/reports/verify</code>).</p></footer>
{DATA_OPEN}{data_json}</script>
</body>
</html>
"#,
        d.readings.len()
    );
    s
}

/// An alert's revisions and withdrawal, for people: nothing it said disappears.
pub(crate) fn history_html(a: &super::AlertEntry) -> String {
    let mut s = String::new();
    for v in &a.revisions {
        let _ = write!(
            s,
            "<br><small class=\"revised\">revised {} by later data; it said: “{}” (fired {})</small>",
            utc(v.at_ms),
            esc(&v.was_message),
            utc(v.was_fires_ms)
        );
    }
    if let Some(w) = &a.withdrawn {
        let _ = write!(
            s,
            "<br><small class=\"withdrawn\">withdrawn {}: {}</small>",
            utc(w.at_ms),
            esc(&w.reason)
        );
    }
    s
}

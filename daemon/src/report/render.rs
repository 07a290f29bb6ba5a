//! The report's three forms. Each is a pure function of [`ReportData`].

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::text::{fmt_c, fmt_c3, fmt_dur, iso, utc};
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
/// on A4. Rendered with maud, which escapes every value it is given; only the
/// style sheet, the chart (itself maud) and the embedded data (JSON with `<`,
/// `>` and `&` escaped) go in as they are. The line breaks are those of the
/// form saved copies hold (`verify` compares a copy with a re-rendering).
pub fn render_html(d: &ReportData) -> String {
    let id = &d.identity;
    let sha = sha256(d);
    let data_json = canonical_json(&to_value(d))
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let page = html! {
        (DOCTYPE) "\n"
        html lang="en" {
            "\n"
            head {
                "\n" meta charset="utf-8";
                "\n" meta name="viewport" content="width=device-width, initial-scale=1";
                "\n" meta name="generator" content=(FORMAT);
                "\n" meta name="coldchain-report-sha256" content=(sha);
                "\n" title { "Arrival report " (id.shipment) }
                "\n" style { (PreEscaped(CSS)) }
                "\n"
            }
            "\n"
            body {
                "\n"
                header {
                    "\n" h1 { "Arrival report" }
                    "\n" p class="sub" { strong { (id.shipment) } " · " (id.product) " · as of " (utc(d.as_of_ms)) }
                    "\n"
                }
                "\n"
                section class="facts" {
                    h2 { "Facts" }
                    ul {
                        "\n"
                        @for f in &d.facts { li { (f) } "\n" }
                    }
                    p class="note" { "This report states facts. The disposition is decided by a person under the receiving lab's procedure." }
                }
                "\n"
                (identity_html(d))
                (custody_html(d))
                (temperature_html(d))
                (viability_html(d))
                (health_html(d))
                (alerts_html(d))
                (disposition_html(d))
                footer {
                    p { (d.readings.len()) " readings; the full series is in the CSV and JSON forms of this report." }
                    "\n"
                    p {
                        "SHA-256 of the report data: " code class="sha" { (sha) } br;
                        "\nCheck a copy against the daemon: " code { "coldchain report --verify FILE" }
                        " (or POST the file to " code { "/api/v1/reports/verify" } ")."
                    }
                }
                "\n"
                script type="application/json" id="coldchain-report-data" { (PreEscaped(data_json)) }
                "\n"
            }
            "\n"
        }
        "\n"
    };
    page.into_string()
}

fn identity_html(d: &ReportData) -> Markup {
    let id = &d.identity;
    let j = &d.journey;
    html! {
        section class="two" {
            div {
                h2 { "Identity" }
                table class="kv" {
                    "\n" tr { th { "Shipment" } td { (id.shipment) } }
                    "\n" tr { th { "Product" } td { (id.product) } }
                    "\n" tr { th { "DIN" } td { (id.din.as_deref().unwrap_or("—")) } }
                    // Only when given: reports made before the field re-render the same.
                    @if let Some(c) = &id.product_code {
                        "\n" tr { th { "Product code" } td { (c) } }
                    }
                    "\n" tr { th { "Lane (profile)" } td { (id.profile) } }
                    "\n" tr { th { "Probes" } td {
                        @for (i, p) in id.probes.iter().enumerate() {
                            @if i > 0 { ", " }
                            (p.device) " ch " (p.channel)
                        }
                    } }
                    "\n"
                }
            }
            "\n"
            div {
                h2 { "Journey" }
                table class="kv" {
                    "\n" tr { th { "From" } td { (id.origin) } }
                    "\n" tr { th { "To" } td { (id.destination) } }
                    "\n" tr { th { "Departure" } td { (opt_utc(j.departure_ms)) } }
                    "\n" tr { th { "ETA" } td { (opt_utc(j.eta_ms)) } }
                    "\n" tr { th { "Arrival" } td { (opt_utc(j.arrival_ms)) } }
                    "\n" tr { th { "State" } td { (j.state) } }
                    "\n"
                }
            }
        }
        "\n"
    }
}

fn custody_html(d: &ReportData) -> Markup {
    let j = &d.journey;
    html! {
        section {
            h2 { "Custody" }
            @if j.handoffs.is_empty() {
                p { "No custody hand-off recorded." }
            } @else {
                table {
                    thead { tr { th { "Time" } th { "To" } th { "Location" } th { "Recorded by" } } }
                    tbody {
                        @for h in &j.handoffs {
                            tr { td { (utc(h.at_ms)) } td { (h.to) } td { (h.location) } td { (h.by) } }
                        }
                    }
                }
            }
        }
        "\n"
    }
}

fn temperature_html(d: &ReportData) -> Markup {
    let t = &d.temperature;
    html! {
        section class="chart-section" {
            h2 { "Temperature" }
            "\n" figure { (PreEscaped(chart::svg(d))) }
            "\n"
            table class="kv" {
                tr { th { "Minimum" } td { (opt_temp(t.min_milli_c)) } }
                tr { th { "Maximum" } td { (opt_temp(t.max_milli_c)) } }
                tr { th { "Mean (time-weighted)" } td { (opt_temp(t.mean_milli_c)) } }
                "\n"
                @match &t.mkt {
                    Some(m) => {
                        tr { th { "MKT, whole shipment" } td { (fmt_c(m.whole_milli_c)) } }
                        tr {
                            th { "MKT, warmest " (fmt_dur(m.window_ms)) " window" }
                            td {
                                (fmt_c(m.window_milli_c)) ", " (utc(m.window_start_ms)) " to " (utc(m.window_end_ms))
                                @if !m.window_full { " (the data is shorter than the window)" }
                            }
                        }
                    }
                    None => {
                        tr { th { "MKT" } td { (t.mkt_note.as_deref().unwrap_or("—")) } }
                    }
                }
            }
            "\n"
            h3 { "Alarm zones" }
            table {
                thead { tr { th { "Zone" } th { "Limit" } th { "Kind" } th { "Delay" } th { "Severity" } th { "Time beyond" } th { "Entries" } th { "Alarms" } } }
                tbody {
                    @for z in &t.zones {
                        tr class={ "sev-" (z.severity) } {
                            td { (z.zone) } td { (z.limit) " °C" } td { (z.kind) }
                            td { (fmt_dur(z.delay_ms)) } td { (z.severity) }
                            td { (fmt_dur(z.time_beyond_ms)) } td { (z.entries) } td { (z.fired) }
                        }
                    }
                }
            }
            "\n"
            h3 { "Excursions" }
            @if t.excursions.is_empty() {
                p { "No excursion." }
            } @else {
                table {
                    thead { tr { th { "Zone" } th { "Start" } th { "End" } th { "Peak" } th { "Duration" } th { "Beyond limit" } th { "Alarm" } } }
                    tbody {
                        @for e in &t.excursions {
                            tr class={ "sev-" (e.severity) } {
                                td { (e.zone) } td { (utc(e.start_ms)) }
                                td { (e.end_ms.map(utc).unwrap_or_else(|| "ongoing".into())) }
                                td { (opt_temp(e.peak_milli_c)) } td { (fmt_dur(e.duration_ms)) }
                                td { (fmt_dur(e.beyond_ms)) }
                                td { (e.fired_ms.map(utc).unwrap_or_else(|| "none (within delay)".into())) }
                            }
                        }
                    }
                }
            }
        }
        "\n"
    }
}

fn viability_html(d: &ReportData) -> Markup {
    html! {
        section {
            h2 { "Viability" }
            @match &d.viability.window {
                Some(w) => {
                    table class="kv" {
                        tr { th { "Window start" } td { (utc(w.start_ms)) } th { "Nominal" } td { (fmt_dur(w.nominal_ms)) } }
                        tr { th { "Consumed" } td { (fmt_dur(w.consumed_ms)) } th { "Remaining" } td { (fmt_dur(w.remaining_ms)) } }
                        tr {
                            th { "Without data" } td { (fmt_dur(w.unknown_ms)) } th { "Loss (table model)" }
                            td { (w.loss_centi_pct.map(|c| format!("{}.{:02} %", c / 100, c % 100)).unwrap_or_else(|| "—".into())) }
                        }
                    }
                }
                None => { p { "No viability window for this product." } }
            }
            @if let Some(h) = &d.viability.hold_time {
                p class={ "hold" @if h.warning { " warning" } } {
                    "Hold time at ETA: " strong { (h.sentence()) }
                    " (a line through " (h.points) " readings from " (utc(h.fit_from_ms)) ", "
                    (format!("{:.1}", h.rate_mc_per_h as f64 / 1000.0)) " °C/h"
                    @if h.after_tilt { ", since the tilt" }
                    ")."
                }
            }
            @if let Some(w) = &d.viability.warming {
                table class="kv" {
                    tr { th { "Warming limit" } td { (w.limit) " °C" } th { "Warming events" } td { (w.events) } }
                    tr { th { "Time above" } td { (fmt_dur(w.time_above_ms)) } th { "Warmest above" } td { (opt_temp(w.peak_milli_c)) } }
                }
            }
        }
        "\n"
    }
}

fn health_html(d: &ReportData) -> Markup {
    let h = &d.data_health;
    let mv = |v: Option<u16>| v.map(|v| format!("{v} mV")).unwrap_or_else(|| "—".into());
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
    let deg = |v: i32| format!("{} °C", fmt_c3(v));
    html! {
        section {
            h2 { "Data health" }
            table class="kv" {
                tr {
                    th { "Readings" } td { (h.readings) }
                    th { "Probe faults" } td { (h.fault_readings) }
                    th { "Estimated time" } td { (h.estimated_time_readings) }
                }
            }
            table {
                thead { tr {
                    th { "Device" } th { "Frames verified" }
                    th { "Rejected (bad tag / wrong topic / unsigned / reused sequence)" }
                    th { "Battery last / min" } th { "Battery-low events" }
                } }
                tbody {
                    @for x in &h.devices {
                        tr {
                            td { (x.device) }
                            td {
                                (x.frames_verified)
                                @if x.frames_unsigned_accepted > 0 {
                                    " (" (x.frames_unsigned_accepted) " unsigned, accepted by policy)"
                                }
                            }
                            td { (x.rejected_bad_tag) " / " (x.rejected_device_mismatch) " / " (x.rejected_unsigned) " / " (x.rejected_sequence_reuse) }
                            td { (mv(x.battery_last_mv)) " / " (mv(x.battery_min_mv)) }
                            td { (x.battery_low_events) }
                        }
                    }
                }
            }
            @if rows.is_empty() && h.sequence_gaps.is_empty() {
                p { "No fault, gap or unsynced-clock stretch." }
            } @else {
                table {
                    thead { tr { th { "What" } th { "Start" } th { "End" } th { "Duration" } } }
                    tbody {
                        @for (what, x) in &rows {
                            tr {
                                td { (what) } td { (utc(x.start_ms)) }
                                td { (x.end_ms.map(utc).unwrap_or_else(|| "ongoing".into())) }
                                td { (fmt_dur(x.duration_ms)) }
                            }
                        }
                        @for g in &h.sequence_gaps {
                            tr {
                                td { "frames missing" }
                                td colspan="3" { (g.device) " boot " (g.boot) ": seq " (g.first) " to " (g.last) }
                            }
                        }
                    }
                }
            }
            @if !d.calibration.is_empty() {
                h3 { "Calibration" }
                p { "Readings are stored as measured; the figures in this report are corrected by these certificates." }
                table {
                    thead { tr {
                        th { "Probe" } th { "Certificate" } th { "Calibrated / due" } th { "Correction" }
                        th { "Measured (lowest / highest)" } th { "Measurement uncertainty" }
                    } }
                    tbody {
                        @for c in &d.calibration {
                            tr {
                                td { (c.device) " ch " (c.channel) }
                                td { (c.certificate) }
                                td {
                                    (&iso(c.date_ms)[..10]) " / " (&iso(c.due_ms)[..10])
                                    @if c.expired { " " strong { "(expired)" } }
                                }
                                td { (c.correction) }
                                td {
                                    @match (c.measured_min_milli_c, c.measured_max_milli_c) {
                                        (Some(a), Some(b)) => { (deg(a)) " / " (deg(b)) }
                                        _ => { "—" }
                                    }
                                }
                                td {
                                    "certificate ±" (deg(c.uncertainty_milli_c))
                                    @if let (Some(k), Some(a), Some(b)) = (&c.class, c.tolerance_at_min_milli_c, c.tolerance_at_max_milli_c) {
                                        "; IEC 60751 class " (k) " ±" (deg(a)) " at the lowest, ±" (deg(b)) " at the highest reading"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        "\n"
    }
}

fn alerts_html(d: &ReportData) -> Markup {
    html! {
        section {
            h2 { "Alerts" }
            @if d.alerts.is_empty() {
                p { "No alert." }
            } @else {
                table {
                    thead { tr { th { "#" } th { "Alert" } th { "Fired" } th { "State" } th { "Acknowledged" } } }
                    tbody {
                        @for a in &d.alerts {
                            tr class={ "sev-" (a.severity) " state-" (a.state) } {
                                td { (a.id) }
                                td { (a.severity) " · " (a.message) (history_html(a)) }
                                td { (utc(a.fires_ms)) }
                                td { (a.state) }
                                td {
                                    @match (&a.ack_by, &a.ack_comment, a.ack_ms) {
                                        (Some(by), c, Some(at)) => {
                                            (utc(at)) " by " (by) ": “" (c.as_deref().unwrap_or("")) "”"
                                        }
                                        _ => { "not acknowledged" }
                                    }
                                    // Nothing added without one: reports saved before
                                    // assessments existed still render to the same bytes.
                                    @if let Some(x) = &a.assessment {
                                        br;
                                        small class="assessed" {
                                            "QA assessment " (utc(x.at_ms)) " by " (x.full_name) " (" (x.user) "): “" (x.comment) "”"
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        "\n"
    }
}

fn disposition_html(d: &ReportData) -> Markup {
    html! {
        section {
            h2 { "Disposition" }
            @match &d.disposition {
                Some(x) => {
                    p { strong { (x.decision) } " by " (x.by) " at " (utc(x.at_ms)) ": “" (x.comment) "”" }
                    // Recorded before signatures: rendered as it always was.
                    @if let Some(g) = &x.signature {
                        div class="signature" {
                            p {
                                "Electronically signed by " strong { (g.full_name) } " (" (g.user) ") on " (utc(g.signed_ms)) "."
                                br;
                                "Meaning of this signature: " strong { (g.meaning) } "."
                                br;
                                "The signature covers the report content with SHA-256 " code class="signed-sha" { (g.report_sha256) }
                                @if super::content_sha256(d) == g.report_sha256 {
                                    " (this report's content hashes to it)"
                                } @else {
                                    "; THIS REPORT'S CONTENT NO LONGER HASHES TO IT: the record changed after signing"
                                }
                                "."
                            }
                        }
                    }
                }
                None => { p { "Not recorded." } }
            }
        }
        "\n"
    }
}

/// An alert's revisions and withdrawal, for people: nothing it said disappears.
pub(crate) fn history_html(a: &super::AlertEntry) -> Markup {
    html! {
        @for v in &a.revisions {
            br;
            small class="revised" {
                "revised " (utc(v.at_ms)) " by later data; it said: “" (v.was_message) "” (fired " (utc(v.was_fires_ms)) ")"
            }
        }
        @if let Some(w) = &a.withdrawn {
            br;
            small class="withdrawn" { "withdrawn " (utc(w.at_ms)) ": " (w.reason) }
        }
    }
}

//! The PDF/A form of the arrival report: what a receiving lab files in its
//! quality system. The same content as the HTML form, on A4, written by
//! krilla as PDF/A-3u (ISO 19005-3, level U: every glyph maps to Unicode, so
//! the text can be searched and copied), with DejaVu Sans embedded (subset)
//! and the chart drawn from the same SVG as the HTML form.
//!
//! # Deterministic
//!
//! The file is a pure function of [`ReportData`]: no clock, no random ID.
//! The document ID in the trailer and XMP derives from the data's SHA-256,
//! the instance ID from the file's content (krilla), and the only date in
//! the file (the document's and the attachment's, which PDF/A requires) is
//! the moment the report describes (`as_of_ms`), never when it was written. The same data
//! gives the same bytes, so a copy can be checked by rendering it again.
//!
//! # The data inside
//!
//! The report's JSON form ([`super::render_json`]: the data and its SHA-256)
//! is attached as an associated file (`/AF`, relationship `Data`), which
//! PDF/A-3 permits, stored uncompressed so it can be read back without a PDF
//! library (and seen with any text tool). `coldchain report --verify` reads
//! it ([`embedded_json`]), checks its hash, renders the PDF from it again and
//! compares the bytes: an edited page or an edited attachment is refused.

use std::sync::Arc;

use krilla::Document;
use krilla::SerializeSettings;
use krilla::color::rgb;
use krilla::configure::{Archival, ConfigurationBuilder};
use krilla::embed::{AssociationKind, EmbeddedFile, MimeType};
use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
use krilla::metadata::{DateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};
use krilla_svg::{SurfaceExt, SvgSettings};

use super::text::{civil, fmt_c, fmt_c3, fmt_dur, iso, utc};
use super::{ReportData, Stretch, chart, content_sha256, file_stem, render_json, sha256};

/// DejaVu Sans 2.37 (Bitstream Vera licence with the Arev additions; see
/// `fonts/LICENSE`): Latin, Greek, Cyrillic and the symbols the report
/// uses (°, ±, µ, –, “ ”, ·).
const REGULAR: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
/// DejaVu Sans Bold 2.37.
const BOLD: &[u8] = include_bytes!("fonts/DejaVuSans-Bold.ttf");

/// Where the attached JSON form starts: its first line and the start of its
/// second (see [`super::render_json`]: keys sorted, pretty-printed).
const JSON_OPEN: &[u8] = b"{\n  \"coldchain_report\": ";

/// A4 in points.
const PAGE_W: f32 = 595.276;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 42.0;
const TOP: f32 = 46.0;
/// Where content ends; the footer is below.
const BOTTOM: f32 = PAGE_H - 60.0;
const WIDTH: f32 = PAGE_W - 2.0 * MARGIN;

const BODY: f32 = 9.0;
const SMALL: f32 = 8.0;
const INK: Rgb = (0x1b, 0x1f, 0x24);
const MUTED: Rgb = (0x55, 0x5b, 0x63);
const RULE: Rgb = (0xb8, 0xbe, 0xc6);
const HEAD_BG: Rgb = (0xec, 0xef, 0xf3);
const WARN_BG: Rgb = (0xfd, 0xf3, 0xd8);
const CRIT_BG: Rgb = (0xfb, 0xe0, 0xe0);
const RED: Rgb = (0xa9, 0x32, 0x26);

type Rgb = (u8, u8, u8);

/// The PDF of a report.
pub fn render_pdf(d: &ReportData) -> Vec<u8> {
    let made = chart_tree(d).and_then(|tree| {
        let m = Metrics::new()?;
        let mut l = Layout::new(&m);
        content(d, &mut l, tree.size().height() / tree.size().width());
        let pages = l.finish(d);
        write(d, &pages, &tree)
    });
    made.unwrap_or_else(|e| {
        // Only a bug can get here (krilla refused its own PDF/A output):
        // a one-page PDF without the archival claim that says so, rather
        // than a panic in the daemon.
        tracing::error!("PDF/A report of {:?}: {e}", d.identity.shipment);
        fallback(&format!("This PDF could not be made as PDF/A: {e}"))
    })
}

/// The report's JSON form attached to a PDF made by [`render_pdf`], if the
/// bytes are one (`None` when there is no readable attachment).
pub(crate) fn embedded_json(pdf: &[u8]) -> Option<String> {
    let start = pdf.windows(JSON_OPEN.len()).position(|w| w == JSON_OPEN)?;
    let rest = &pdf[start..];
    let mut it = serde_json::Deserializer::from_slice(rest).into_iter::<serde::de::IgnoredAny>();
    it.next()?.ok()?;
    let end = it.byte_offset();
    let mut text = std::str::from_utf8(&rest[..end]).ok()?.to_string();
    if rest.get(end) == Some(&b'\n') {
        text.push('\n');
    }
    Some(text)
}

// ---------------------------------------------------------------------------
// Fonts and measuring.

struct Metrics {
    regular: ttf_parser::Face<'static>,
    bold: ttf_parser::Face<'static>,
}

impl Metrics {
    fn new() -> Result<Metrics, String> {
        let face = |data, name| {
            ttf_parser::Face::parse(data, 0).map_err(|e| format!("the embedded {name}: {e}"))
        };
        Ok(Metrics {
            regular: face(REGULAR, "DejaVu Sans")?,
            bold: face(BOLD, "DejaVu Sans Bold")?,
        })
    }

    /// Width of `s` in points (advances; kerning ignored, which only makes
    /// a line look a hair shorter than measured).
    fn width(&self, s: &str, size: f32, bold: bool) -> f32 {
        let f = if bold { &self.bold } else { &self.regular };
        let upem = f32::from(f.units_per_em());
        let units: u32 = s
            .chars()
            .map(|c| {
                let g = f.glyph_index(c).unwrap_or(ttf_parser::GlyphId(0));
                u32::from(f.glyph_hor_advance(g).unwrap_or(0))
            })
            .sum();
        units as f32 * size / upem
    }

    /// `s` broken into lines no wider than `width`: at spaces, and inside a
    /// word only when the word alone is wider. `\n` starts a new line.
    fn wrap(&self, s: &str, size: f32, bold: bool, width: f32) -> Vec<String> {
        let mut out = Vec::new();
        for para in s.split('\n') {
            let mut line = String::new();
            for word in para.split(' ') {
                let candidate = if line.is_empty() {
                    word.to_string()
                } else {
                    format!("{line} {word}")
                };
                if self.width(&candidate, size, bold) <= width {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    out.push(std::mem::take(&mut line));
                }
                // The word on its own line, cut where it must be.
                for c in word.chars() {
                    let mut next = line.clone();
                    next.push(c);
                    if !line.is_empty() && self.width(&next, size, bold) > width {
                        out.push(std::mem::take(&mut line));
                        line.push(c);
                    } else {
                        line = next;
                    }
                }
            }
            out.push(line);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Layout: the report as pages of drawing operations, measured before any
// PDF is written (so the footer can say "page 2 of 3").

enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        color: Rgb,
        text: String,
    },
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Rgb,
    },
    Line {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        width: f32,
        color: Rgb,
    },
    Chart {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
    },
}

/// A run of text in a table cell: its own paragraph.
struct Span {
    text: String,
    bold: bool,
    color: Rgb,
    size: f32,
}

fn span(text: impl Into<String>) -> Span {
    Span {
        text: text.into(),
        bold: false,
        color: INK,
        size: SMALL,
    }
}

fn note(text: impl Into<String>) -> Span {
    Span {
        text: text.into(),
        bold: false,
        color: MUTED,
        size: 7.0,
    }
}

fn strong(text: impl Into<String>) -> Span {
    Span {
        bold: true,
        ..span(text)
    }
}

struct Row {
    cells: Vec<Vec<Span>>,
    tint: Option<Rgb>,
}

fn row(cells: Vec<Vec<Span>>) -> Row {
    Row { cells, tint: None }
}

fn tint(severity: &str) -> Option<Rgb> {
    match severity {
        "critical" => Some(CRIT_BG),
        "warning" => Some(WARN_BG),
        _ => None,
    }
}

struct Layout<'m> {
    m: &'m Metrics,
    pages: Vec<Vec<Op>>,
    y: f32,
}

fn line_height(size: f32) -> f32 {
    size * 1.3
}

impl<'m> Layout<'m> {
    fn new(m: &'m Metrics) -> Layout<'m> {
        Layout {
            m,
            pages: vec![Vec::new()],
            y: TOP,
        }
    }

    fn op(&mut self, op: Op) {
        if let Some(p) = self.pages.last_mut() {
            p.push(op);
        }
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = TOP;
    }

    /// Starts a new page unless `h` more points fit on this one.
    fn need(&mut self, h: f32) {
        if self.y + h > BOTTOM && self.y > TOP {
            self.new_page();
        }
    }

    fn text(&mut self, x: f32, baseline: f32, size: f32, bold: bool, color: Rgb, text: &str) {
        if text.is_empty() {
            return;
        }
        self.op(Op::Text {
            x,
            y: baseline,
            size,
            bold,
            color,
            text: text.to_string(),
        });
    }

    fn title(&mut self, title: &str, sub: &str) {
        self.text(MARGIN, self.y + 18.0, 18.0, true, INK, title);
        self.y += 26.0;
        self.para(sub, 10.0, false, MUTED);
        self.y += 2.0;
        self.rule();
    }

    fn rule(&mut self) {
        let y = self.y + 2.0;
        self.op(Op::Line {
            x1: MARGIN,
            y1: y,
            x2: MARGIN + WIDTH,
            y2: y,
            width: 0.6,
            color: RULE,
        });
        self.y += 6.0;
    }

    /// A section heading, kept with at least `keep` points of what follows.
    fn heading(&mut self, text: &str, keep: f32) {
        self.need(24.0 + keep);
        if self.y > TOP {
            self.y += 8.0;
        }
        self.text(MARGIN, self.y + 12.0, 12.0, true, INK, text);
        self.y += 17.0;
    }

    fn subheading(&mut self, text: &str, keep: f32) {
        self.need(18.0 + keep);
        self.y += 4.0;
        self.text(MARGIN, self.y + 10.0, 10.0, true, INK, text);
        self.y += 14.0;
    }

    fn para(&mut self, text: &str, size: f32, bold: bool, color: Rgb) {
        self.para_at(MARGIN, WIDTH, text, size, bold, color);
    }

    fn para_at(&mut self, x: f32, w: f32, text: &str, size: f32, bold: bool, color: Rgb) {
        let lh = line_height(size);
        for line in self.m.wrap(text, size, bold, w) {
            self.need(lh);
            self.text(x, self.y + size, size, bold, color, &line);
            self.y += lh;
        }
    }

    fn bullets(&mut self, items: &[String]) {
        for it in items {
            let lh = line_height(BODY);
            self.need(lh);
            self.text(MARGIN + 4.0, self.y + BODY, BODY, false, INK, "•");
            self.para_at(MARGIN + 14.0, WIDTH - 14.0, it, BODY, false, INK);
        }
    }

    /// Label and value pairs, the labels in a column of their own.
    fn kv(&mut self, rows: &[(&str, String)]) {
        let lw = 150.0;
        let lh = line_height(BODY);
        for (k, v) in rows {
            let lines = self.m.wrap(v, BODY, false, WIDTH - lw);
            let h = lines.len() as f32 * lh + 2.0;
            self.need(h);
            self.text(MARGIN, self.y + BODY, BODY, true, MUTED, k);
            for (i, line) in lines.iter().enumerate() {
                let y = self.y + BODY + i as f32 * lh;
                self.text(MARGIN + lw, y, BODY, false, INK, line);
            }
            self.y += h;
        }
    }

    /// A table: `widths` are fractions of the text width. The header is
    /// repeated on each page the table continues on.
    fn table(&mut self, headers: &[&str], widths: &[f32], rows: &[Row]) {
        let cols: Vec<(f32, f32)> = {
            let mut x = MARGIN;
            widths
                .iter()
                .map(|f| {
                    let w = f * WIDTH;
                    let c = (x, w);
                    x += w;
                    c
                })
                .collect()
        };
        let pad = 3.0;
        let lh = line_height(SMALL);
        let header: Vec<Vec<String>> = headers
            .iter()
            .zip(&cols)
            .map(|(h, &(_, w))| self.m.wrap(h, SMALL, true, w - 2.0 * pad))
            .collect();
        let header_h = header.iter().map(Vec::len).max().unwrap_or(1) as f32 * lh + 2.0 * pad;
        let draw_header = |l: &mut Layout| {
            l.op(Op::Rect {
                x: MARGIN,
                y: l.y,
                w: WIDTH,
                h: header_h,
                fill: HEAD_BG,
            });
            for (lines, &(x, _)) in header.iter().zip(&cols) {
                for (i, t) in lines.iter().enumerate() {
                    l.text(
                        x + pad,
                        l.y + pad + SMALL + i as f32 * lh,
                        SMALL,
                        true,
                        INK,
                        t,
                    );
                }
            }
            l.y += header_h;
        };
        // Each cell's lines, measured first.
        let laid: Vec<Vec<Vec<(String, &Span)>>> = rows
            .iter()
            .map(|r| {
                r.cells
                    .iter()
                    .zip(&cols)
                    .map(|(spans, &(_, w))| {
                        spans
                            .iter()
                            .flat_map(|s| {
                                self.m
                                    .wrap(&s.text, s.size, s.bold, w - 2.0 * pad)
                                    .into_iter()
                                    .map(move |t| (t, s))
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let height = |cell: &[(String, &Span)]| -> f32 {
            cell.iter().map(|(_, s)| line_height(s.size)).sum::<f32>()
        };
        let first_h = laid
            .first()
            .map(|r| r.iter().map(|c| height(c)).fold(0.0, f32::max) + 2.0 * pad)
            .unwrap_or(0.0);
        self.need(header_h + first_h);
        draw_header(self);
        for (r, cells) in rows.iter().zip(&laid) {
            let h = cells.iter().map(|c| height(c)).fold(0.0, f32::max) + 2.0 * pad;
            if self.y + h > BOTTOM {
                self.new_page();
                draw_header(self);
            }
            if let Some(t) = r.tint {
                self.op(Op::Rect {
                    x: MARGIN,
                    y: self.y,
                    w: WIDTH,
                    h,
                    fill: t,
                });
            }
            for (cell, &(x, _)) in cells.iter().zip(&cols) {
                let mut y = self.y + pad;
                for (t, s) in cell {
                    self.text(x + pad, y + s.size, s.size, s.bold, s.color, t);
                    y += line_height(s.size);
                }
            }
            self.y += h;
            let y = self.y;
            self.op(Op::Line {
                x1: MARGIN,
                y1: y,
                x2: MARGIN + WIDTH,
                y2: y,
                width: 0.4,
                color: RULE,
            });
        }
        self.y += 4.0;
    }

    /// The chart, full width, at the SVG's aspect ratio.
    fn chart(&mut self, aspect: f32) {
        let h = WIDTH * aspect;
        self.need(h + 4.0);
        self.op(Op::Chart {
            x: MARGIN,
            y: self.y,
            w: WIDTH,
            h,
        });
        self.y += h + 6.0;
    }

    /// Every page with its footer: what it is, the hash, page n of N.
    fn finish(mut self, d: &ReportData) -> Vec<Vec<Op>> {
        let n = self.pages.len();
        let sha = sha256(d);
        let left = format!(
            "Arrival report {} · as of {}",
            d.identity.shipment,
            utc(d.as_of_ms)
        );
        let y = PAGE_H - 40.0;
        for (i, p) in self.pages.iter_mut().enumerate() {
            let right = format!("page {} of {n}", i + 1);
            let rw = self.m.width(&right, 7.0, false);
            let left = self
                .m
                .wrap(&left, 7.0, false, WIDTH - rw - 12.0)
                .into_iter()
                .next()
                .unwrap_or_default();
            p.push(Op::Line {
                x1: MARGIN,
                y1: y - 9.0,
                x2: MARGIN + WIDTH,
                y2: y - 9.0,
                width: 0.4,
                color: RULE,
            });
            let texts = [
                (MARGIN, y, left),
                (MARGIN + WIDTH - rw, y, right),
                (
                    MARGIN,
                    y + 9.0,
                    format!("SHA-256 of the report data: {sha}"),
                ),
            ];
            for (x, y, text) in texts {
                p.push(Op::Text {
                    x,
                    y,
                    size: 7.0,
                    bold: false,
                    color: MUTED,
                    text,
                });
            }
        }
        self.pages
    }
}

// ---------------------------------------------------------------------------
// What the report says: the sections of the HTML form, in its order.

fn opt_utc(v: Option<i64>) -> String {
    v.map(utc).unwrap_or_else(|| "—".into())
}

fn opt_temp(v: Option<i32>) -> String {
    v.map(fmt_c).unwrap_or_else(|| "—".into())
}

fn content(d: &ReportData, l: &mut Layout, chart_aspect: f32) {
    let id = &d.identity;
    let j = &d.journey;
    l.title(
        "Arrival report",
        &format!(
            "{} · {} · as of {}",
            id.shipment,
            id.product,
            utc(d.as_of_ms)
        ),
    );

    l.heading("Facts", 30.0);
    l.bullets(&d.facts);
    l.para(
        "This report states facts. The disposition is decided by a person under the receiving lab's procedure.",
        SMALL,
        false,
        MUTED,
    );

    l.heading("Identity", 40.0);
    let probes: Vec<String> = id
        .probes
        .iter()
        .map(|p| format!("{} ch {}", p.device, p.channel))
        .collect();
    let mut rows = vec![
        ("Shipment", id.shipment.clone()),
        ("Product", id.product.clone()),
        (
            "DIN (ISBT 128)",
            id.din.clone().unwrap_or_else(|| "—".into()),
        ),
    ];
    if let Some(c) = &id.product_code {
        rows.push(("Product code (ISBT 128)", c.clone()));
    }
    rows.push(("Lane (profile)", id.profile.clone()));
    rows.push(("Probes", probes.join(", ")));
    l.kv(&rows);

    l.heading("Journey", 40.0);
    l.kv(&[
        ("From", id.origin.clone()),
        ("To", id.destination.clone()),
        ("Departure", opt_utc(j.departure_ms)),
        ("ETA", opt_utc(j.eta_ms)),
        ("Arrival", opt_utc(j.arrival_ms)),
        ("State", j.state.clone()),
    ]);
    l.subheading("Custody", 20.0);
    if j.handoffs.is_empty() {
        l.para("No custody hand-off recorded.", BODY, false, INK);
    } else {
        let rows: Vec<Row> = j
            .handoffs
            .iter()
            .map(|h| {
                row(vec![
                    vec![span(utc(h.at_ms))],
                    vec![span(&h.to)],
                    vec![span(&h.location)],
                    vec![span(&h.by)],
                ])
            })
            .collect();
        l.table(
            &["Time", "To", "Location", "Recorded by"],
            &[0.22, 0.26, 0.26, 0.26],
            &rows,
        );
    }

    temperature(d, l, chart_aspect);
    viability(d, l);
    data_health(d, l);
    alerts(d, l);
    disposition(d, l);

    l.heading("This copy", 40.0);
    l.para(
        &format!(
            "{} readings; the full series is in the report data attached to this PDF (its JSON form) and in the CSV form.",
            d.readings.len()
        ),
        BODY,
        false,
        INK,
    );
    l.para(
        &format!("SHA-256 of the report data: {}", sha256(d)),
        BODY,
        true,
        INK,
    );
    l.para(
        "Check a copy against the daemon: coldchain report --verify FILE (or POST the file to /api/v1/reports/verify).",
        BODY,
        false,
        INK,
    );
}

fn temperature(d: &ReportData, l: &mut Layout, chart_aspect: f32) {
    let t = &d.temperature;
    l.heading("Temperature", WIDTH * chart_aspect);
    l.chart(chart_aspect);
    let mut rows = vec![
        ("Minimum", opt_temp(t.min_milli_c)),
        ("Maximum", opt_temp(t.max_milli_c)),
        ("Mean (time-weighted)", opt_temp(t.mean_milli_c)),
    ];
    let window_label;
    match &t.mkt {
        Some(m) => {
            rows.push(("MKT, whole shipment", fmt_c(m.whole_milli_c)));
            window_label = format!("MKT, warmest {} window", fmt_dur(m.window_ms));
            rows.push((
                &window_label,
                format!(
                    "{}, {} to {}{}",
                    fmt_c(m.window_milli_c),
                    utc(m.window_start_ms),
                    utc(m.window_end_ms),
                    if m.window_full {
                        ""
                    } else {
                        " (the data is shorter than the window)"
                    }
                ),
            ));
        }
        None => rows.push(("MKT", t.mkt_note.clone().unwrap_or_else(|| "—".into()))),
    }
    l.kv(&rows);

    l.subheading("Alarm zones", 30.0);
    let zones: Vec<Row> = t
        .zones
        .iter()
        .map(|z| Row {
            cells: vec![
                vec![strong(&z.zone)],
                vec![span(format!("{} °C", z.limit))],
                vec![span(&z.kind)],
                vec![span(fmt_dur(z.delay_ms))],
                vec![span(&z.severity)],
                vec![span(fmt_dur(z.time_beyond_ms))],
                vec![span(z.entries.to_string())],
                vec![span(z.fired.to_string())],
            ],
            tint: tint(&z.severity),
        })
        .collect();
    l.table(
        &[
            "Zone",
            "Limit",
            "Kind",
            "Delay",
            "Severity",
            "Time beyond",
            "Entries",
            "Alarms",
        ],
        &[0.08, 0.13, 0.14, 0.12, 0.13, 0.16, 0.12, 0.12],
        &zones,
    );

    l.subheading("Excursions", 20.0);
    if t.excursions.is_empty() {
        l.para("No excursion.", BODY, false, INK);
    } else {
        let rows: Vec<Row> = t
            .excursions
            .iter()
            .map(|e| Row {
                cells: vec![
                    vec![strong(&e.zone)],
                    vec![span(utc(e.start_ms))],
                    vec![span(e.end_ms.map(utc).unwrap_or_else(|| "ongoing".into()))],
                    vec![span(opt_temp(e.peak_milli_c))],
                    vec![span(fmt_dur(e.duration_ms))],
                    vec![span(fmt_dur(e.beyond_ms))],
                    vec![span(
                        e.fired_ms
                            .map(utc)
                            .unwrap_or_else(|| "none (within delay)".into()),
                    )],
                ],
                tint: tint(&e.severity),
            })
            .collect();
        l.table(
            &[
                "Zone",
                "Start",
                "End",
                "Peak",
                "Duration",
                "Beyond limit",
                "Alarm",
            ],
            &[0.08, 0.19, 0.19, 0.1, 0.12, 0.13, 0.19],
            &rows,
        );
    }
}

fn viability(d: &ReportData, l: &mut Layout) {
    l.heading("Viability", 30.0);
    match &d.viability.window {
        Some(w) => l.kv(&[
            ("Window start", utc(w.start_ms)),
            ("Nominal", fmt_dur(w.nominal_ms)),
            ("Consumed", fmt_dur(w.consumed_ms)),
            ("Remaining", fmt_dur(w.remaining_ms)),
            ("Without data", fmt_dur(w.unknown_ms)),
            (
                "Loss (table model)",
                w.loss_centi_pct
                    .map(|c| format!("{}.{:02} %", c / 100, c % 100))
                    .unwrap_or_else(|| "—".into()),
            ),
        ]),
        None => l.para("No viability window for this product.", BODY, false, INK),
    }
    if let Some(h) = &d.viability.hold_time {
        l.y += 3.0;
        l.para(
            &format!("Hold time at ETA: {}", h.sentence()),
            BODY,
            true,
            if h.warning { RED } else { INK },
        );
        l.para(
            &format!(
                "A line through {} readings from {}, {:.1} °C/h{}.",
                h.points,
                utc(h.fit_from_ms),
                h.rate_mc_per_h as f64 / 1000.0,
                if h.after_tilt { ", since the tilt" } else { "" }
            ),
            SMALL,
            false,
            MUTED,
        );
    }
    if let Some(w) = &d.viability.warming {
        l.y += 3.0;
        l.kv(&[
            ("Warming limit", format!("{} °C", w.limit)),
            ("Warming events", w.events.to_string()),
            ("Time above", fmt_dur(w.time_above_ms)),
            ("Warmest above", opt_temp(w.peak_milli_c)),
        ]);
    }
}

fn data_health(d: &ReportData, l: &mut Layout) {
    let h = &d.data_health;
    l.heading("Data health", 40.0);
    l.kv(&[
        ("Readings", h.readings.to_string()),
        ("Probe faults", h.fault_readings.to_string()),
        ("Estimated time", h.estimated_time_readings.to_string()),
    ]);
    let mv = |v: Option<u16>| v.map(|v| format!("{v} mV")).unwrap_or_else(|| "—".into());
    let devices: Vec<Row> = h
        .devices
        .iter()
        .map(|x| {
            let mut verified = vec![span(x.frames_verified.to_string())];
            if x.frames_unsigned_accepted > 0 {
                verified.push(note(format!(
                    "{} unsigned, accepted by policy",
                    x.frames_unsigned_accepted
                )));
            }
            row(vec![
                vec![span(&x.device)],
                verified,
                vec![span(format!(
                    "{} / {} / {} / {}",
                    x.rejected_bad_tag,
                    x.rejected_device_mismatch,
                    x.rejected_unsigned,
                    x.rejected_sequence_reuse
                ))],
                vec![span(format!(
                    "{} / {}",
                    mv(x.battery_last_mv),
                    mv(x.battery_min_mv)
                ))],
                vec![span(x.battery_low_events.to_string())],
            ])
        })
        .collect();
    l.y += 3.0;
    l.table(
        &[
            "Device",
            "Frames verified",
            "Rejected: bad tag / wrong topic / unsigned / reused seq.",
            "Battery last / min",
            "Battery low",
        ],
        &[0.18, 0.16, 0.34, 0.2, 0.12],
        &devices,
    );

    let mut stretches: Vec<(String, &Stretch)> = Vec::new();
    stretches.extend(h.faults.iter().map(|x| ("probe fault".to_string(), x)));
    stretches.extend(
        h.unsynced_clock
            .iter()
            .map(|x| ("clock not synced".to_string(), x)),
    );
    stretches.extend(h.silences.iter().map(|x| ("no data".to_string(), x)));
    stretches.extend(
        h.other
            .iter()
            .map(|o| (o.kind.replace('_', " "), &o.stretch)),
    );
    if stretches.is_empty() && h.sequence_gaps.is_empty() {
        l.para("No fault, gap or unsynced-clock stretch.", BODY, false, INK);
    } else {
        let mut rows: Vec<Row> = stretches
            .into_iter()
            .map(|(what, x)| {
                row(vec![
                    vec![span(what)],
                    vec![span(utc(x.start_ms))],
                    vec![span(x.end_ms.map(utc).unwrap_or_else(|| "ongoing".into()))],
                    vec![span(fmt_dur(x.duration_ms))],
                ])
            })
            .collect();
        rows.extend(h.sequence_gaps.iter().map(|g| {
            row(vec![
                vec![span("frames missing")],
                vec![span(format!(
                    "{} boot {}: seq {} to {}",
                    g.device, g.boot, g.first, g.last
                ))],
                vec![],
                vec![],
            ])
        }));
        l.table(
            &["What", "Start", "End", "Duration"],
            &[0.25, 0.3, 0.3, 0.15],
            &rows,
        );
    }

    if !d.calibration.is_empty() {
        l.subheading("Calibration and measurement uncertainty", 40.0);
        l.para(
            "Readings are stored as measured; the figures in this report are corrected by these certificates.",
            SMALL,
            false,
            MUTED,
        );
        let deg = |v: i32| format!("{} °C", fmt_c3(v));
        let rows: Vec<Row> = d
            .calibration
            .iter()
            .map(|c| {
                let mut dates = vec![span(format!(
                    "{} / {}",
                    &iso(c.date_ms)[..10],
                    &iso(c.due_ms)[..10]
                ))];
                if c.expired {
                    dates.push(Span {
                        color: RED,
                        ..strong("expired")
                    });
                }
                let measured = match (c.measured_min_milli_c, c.measured_max_milli_c) {
                    (Some(a), Some(b)) => format!("{} / {}", deg(a), deg(b)),
                    _ => "—".into(),
                };
                let mut unc = vec![span(format!("certificate ±{}", deg(c.uncertainty_milli_c)))];
                if let (Some(k), Some(a), Some(b)) = (
                    &c.class,
                    c.tolerance_at_min_milli_c,
                    c.tolerance_at_max_milli_c,
                ) {
                    unc.push(span(format!(
                        "IEC 60751 class {k} ±{} at the lowest, ±{} at the highest reading",
                        deg(a),
                        deg(b)
                    )));
                }
                Row {
                    cells: vec![
                        vec![span(format!("{} ch {}", c.device, c.channel))],
                        vec![span(&c.certificate)],
                        dates,
                        vec![span(&c.correction)],
                        vec![span(measured)],
                        unc,
                    ],
                    tint: c.expired.then_some(WARN_BG),
                }
            })
            .collect();
        l.table(
            &[
                "Probe",
                "Certificate",
                "Calibrated / due",
                "Correction",
                "Measured (low / high)",
                "Measurement uncertainty",
            ],
            &[0.14, 0.12, 0.17, 0.15, 0.16, 0.26],
            &rows,
        );
    }
}

fn alerts(d: &ReportData, l: &mut Layout) {
    l.heading("Alerts", 30.0);
    if d.alerts.is_empty() {
        l.para("No alert.", BODY, false, INK);
        return;
    }
    let rows: Vec<Row> = d
        .alerts
        .iter()
        .map(|a| {
            let mut what = vec![span(format!("{} · {}", a.severity, a.message))];
            for v in &a.revisions {
                what.push(note(format!(
                    "revised {} by later data; it said: “{}” (fired {})",
                    utc(v.at_ms),
                    v.was_message,
                    utc(v.was_fires_ms)
                )));
            }
            if let Some(w) = &a.withdrawn {
                what.push(Span {
                    color: RED,
                    ..note(format!("withdrawn {}: {}", utc(w.at_ms), w.reason))
                });
            }
            let mut ack = vec![span(match (&a.ack_by, &a.ack_comment, a.ack_ms) {
                (Some(by), c, Some(at)) => {
                    format!("{} by {}: “{}”", utc(at), by, c.as_deref().unwrap_or(""))
                }
                _ => "not acknowledged".into(),
            })];
            if let Some(x) = &a.assessment {
                ack.push(note(format!(
                    "QA assessment {} by {} ({}): “{}”",
                    utc(x.at_ms),
                    x.full_name,
                    x.user,
                    x.comment
                )));
            }
            Row {
                cells: vec![
                    vec![span(a.id.to_string())],
                    what,
                    vec![span(utc(a.fires_ms))],
                    vec![span(&a.state)],
                    ack,
                ],
                tint: if a.state == "withdrawn" {
                    None
                } else {
                    tint(&a.severity)
                },
            }
        })
        .collect();
    l.table(
        &["#", "Alert", "Fired", "State", "Acknowledged"],
        &[0.05, 0.4, 0.16, 0.11, 0.28],
        &rows,
    );
}

fn disposition(d: &ReportData, l: &mut Layout) {
    l.heading("Disposition", 30.0);
    let Some(x) = &d.disposition else {
        l.para("Not recorded.", BODY, false, INK);
        return;
    };
    l.para(
        &format!(
            "{} by {} at {}: “{}”",
            x.decision,
            x.by,
            utc(x.at_ms),
            x.comment
        ),
        BODY,
        false,
        INK,
    );
    let Some(g) = &x.signature else {
        return;
    };
    let covers = if content_sha256(d) == g.report_sha256 {
        " (this report's content hashes to it)"
    } else {
        "; THIS REPORT'S CONTENT NO LONGER HASHES TO IT: the record changed after signing"
    };
    let lines = [
        (
            format!(
                "Electronically signed by {} ({}) on {}.",
                g.full_name,
                g.user,
                utc(g.signed_ms)
            ),
            true,
        ),
        (format!("Meaning of this signature: {}.", g.meaning), true),
        (
            format!(
                "The signature covers the report content with SHA-256 {}{covers}.",
                g.report_sha256
            ),
            false,
        ),
    ];
    // A framed block, kept on one page.
    let inner = WIDTH - 16.0;
    let n: usize = lines
        .iter()
        .map(|(t, b)| l.m.wrap(t, BODY, *b, inner).len())
        .sum();
    let h = n as f32 * line_height(BODY) + 12.0;
    l.y += 4.0;
    l.need(h);
    let top = l.y;
    l.op(Op::Rect {
        x: MARGIN,
        y: top,
        w: WIDTH,
        h,
        fill: HEAD_BG,
    });
    l.op(Op::Rect {
        x: MARGIN,
        y: top,
        w: 3.0,
        h,
        fill: INK,
    });
    l.y += 6.0;
    for (t, b) in &lines {
        l.para_at(MARGIN + 10.0, inner, t, BODY, *b, INK);
    }
    l.y = top + h + 4.0;
}

// ---------------------------------------------------------------------------
// Writing the PDF.

fn paint(c: Rgb) -> krilla::paint::Paint {
    rgb::Color::new(c.0, c.1, c.2).into()
}

fn fill(c: Rgb) -> Fill {
    Fill {
        paint: paint(c),
        opacity: NormalizedF32::ONE,
        rule: Default::default(),
    }
}

fn settings() -> Result<SerializeSettings, String> {
    let configuration = ConfigurationBuilder::new()
        .with_archival_validator(Archival::A3_U)
        .finish()
        .map_err(|e| format!("{e:?}"))?;
    Ok(SerializeSettings {
        configuration,
        enable_tagging: false,
        ..SerializeSettings::default()
    })
}

/// `DateTime` of a moment, UTC, to the second.
fn date_time(ms: i64) -> DateTime {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    DateTime::new(y.clamp(0, 9999) as u16)
        .month(mo as u8)
        .day(d as u8)
        .hour((sod / 3600) as u8)
        .minute(((sod / 60) % 60) as u8)
        .second((sod % 60) as u8)
        .utc_offset_hour(0)
        .utc_offset_minute(0)
}

fn chart_tree(d: &ReportData) -> Result<usvg::Tree, String> {
    let mut db = usvg::fontdb::Database::new();
    db.load_font_data(REGULAR.to_vec());
    db.load_font_data(BOLD.to_vec());
    db.set_sans_serif_family("DejaVu Sans");
    let opts = usvg::Options {
        fontdb: Arc::new(db),
        font_family: "DejaVu Sans".into(),
        ..usvg::Options::default()
    };
    usvg::Tree::from_str(&chart::svg(d), &opts).map_err(|e| format!("the chart's SVG: {e}"))
}

fn write(d: &ReportData, pages: &[Vec<Op>], tree: &usvg::Tree) -> Result<Vec<u8>, String> {
    let regular = Font::new(REGULAR.into(), 0).ok_or("DejaVu Sans does not load")?;
    let bold = Font::new(BOLD.into(), 0).ok_or("DejaVu Sans Bold does not load")?;
    let sha = sha256(d);

    let mut doc = Document::new_with(settings()?);
    for ops in pages {
        let mut page = doc.start_page_with(
            PageSettings::from_wh(PAGE_W, PAGE_H).ok_or("the page size is invalid")?,
        );
        let mut s = page.surface();
        for op in ops {
            draw(&mut s, op, &regular, &bold, tree);
        }
        s.finish();
        page.finish();
    }
    let title = format!("Arrival report {}", d.identity.shipment);
    doc.set_metadata(
        Metadata::new()
            .title(title)
            .description(format!(
                "Coldchain arrival report of shipment {} as of {}; SHA-256 of the report data {sha}",
                d.identity.shipment,
                iso(d.as_of_ms)
            ))
            .keywords(vec![
                super::FORMAT.to_string(),
                format!("sha256:{sha}"),
            ])
            .creator("coldchain".into())
            .language("en".into())
            // PDF/A requires a date; the moment the report describes, so the
            // same data gives the same file whenever it is written.
            .creation_date(date_time(d.as_of_ms))
            .document_id(format!("{}:{sha}", super::FORMAT)),
    );
    doc.embed_file(EmbeddedFile {
        path: format!("report-{}.json", file_stem(&d.identity.shipment)),
        mime_type: MimeType::new("application/json"),
        description: Some(
            "The report's data and its SHA-256 (the report's JSON form): coldchain report --verify checks a copy"
                .into(),
        ),
        association_kind: AssociationKind::Data,
        data: render_json(d).into_bytes().into(),
        modification_date: Some(date_time(d.as_of_ms)),
        compress: Some(false),
        location: None,
    })
    .ok_or("the report data could not be attached")?;
    doc.finish().map_err(|e| format!("{e:?}"))
}

fn draw(s: &mut Surface, op: &Op, regular: &Font, bold: &Font, tree: &usvg::Tree) {
    match op {
        Op::Text {
            x,
            y,
            size,
            bold: b,
            color,
            text,
        } => {
            s.set_stroke(None);
            s.set_fill(Some(fill(*color)));
            s.draw_text(
                Point::from_xy(*x, *y),
                if *b { bold.clone() } else { regular.clone() },
                *size,
                text,
                false,
                TextDirection::Auto,
            );
        }
        Op::Rect {
            x,
            y,
            w,
            h,
            fill: c,
        } => {
            let Some(rect) = Rect::from_xywh(*x, *y, *w, *h) else {
                return;
            };
            let mut pb = PathBuilder::new();
            pb.push_rect(rect);
            if let Some(path) = pb.finish() {
                s.set_stroke(None);
                s.set_fill(Some(fill(*c)));
                s.draw_path(&path);
            }
        }
        Op::Line {
            x1,
            y1,
            x2,
            y2,
            width,
            color,
        } => {
            let mut pb = PathBuilder::new();
            pb.move_to(*x1, *y1);
            pb.line_to(*x2, *y2);
            if let Some(path) = pb.finish() {
                s.set_fill(None);
                s.set_stroke(Some(Stroke {
                    paint: paint(*color),
                    width: *width,
                    ..Stroke::default()
                }));
                s.draw_path(&path);
            }
        }
        Op::Chart { x, y, w, h } => {
            if let Some(size) = Size::from_wh(*w, *h) {
                s.push_transform(&Transform::from_translate(*x, *y));
                s.draw_svg(tree, size, SvgSettings::default());
                s.pop();
            }
        }
    }
}

/// A plain one-page PDF stating a problem (never expected; see [`render_pdf`]).
fn fallback(msg: &str) -> Vec<u8> {
    let mut doc = Document::new();
    if let (Some(font), Some(size)) = (
        Font::new(REGULAR.into(), 0),
        PageSettings::from_wh(PAGE_W, PAGE_H),
    ) {
        let mut page = doc.start_page_with(size);
        let mut s = page.surface();
        s.set_fill(Some(fill(INK)));
        s.draw_text(
            Point::from_xy(MARGIN, TOP + 20.0),
            font,
            10.0,
            msg,
            false,
            TextDirection::Auto,
        );
        s.finish();
        page.finish();
    }
    doc.finish().unwrap_or_default()
}

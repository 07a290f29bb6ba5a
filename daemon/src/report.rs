//! The arrival report: one document that tells a receiving lab what a product
//! went through, in four forms (HTML that prints on A4, CSV, JSON, and PDF/A
//! for the lab's quality records: [`pdf`]), each carrying the SHA-256 of the report's canonical data so a copy can be checked
//! against the daemon later.
//!
//! # The data and its hash
//!
//! [`build`] turns an [`Evaluation`], the shipment's alerts and per-device
//! counters into [`ReportData`]: integers (milli-°C, ms), strings, booleans and
//! nulls only, so its JSON form survives any JSON parser unchanged. The
//! canonical form is that JSON with object keys sorted and no whitespace
//! ([`canonical_json`]); [`sha256`] is the SHA-256 of it, hex.
//!
//! Every rendering is a pure function of the data ([`render`]): the same data
//! gives the same bytes. The data carries the moment it describes
//! (`as_of_ms`: the arrival for an arrived shipment, otherwise when it was
//! made) and nothing else that depends on the clock, so the daemon can rebuild
//! a report later and compare.
//!
//! # Verification
//!
//! [`identify_file`] reads the shipment, `as_of_ms` and the claimed hash from any
//! of the four forms (a PDF's from the JSON form attached to it). The daemon rebuilds the report of that shipment as of
//! that moment and [`verify`] compares: whether the daemon's data still hashes
//! to the claimed value (`data_unchanged`), and whether the file is exactly
//! what the daemon renders from it (`file_intact`), which catches an edited
//! figure in an HTML or CSV copy whose hash line was left alone.
//!
//! The facts in a report are stated, never judged: the disposition is a
//! person's decision (docs/domain.md §4).
//!
//! # Routes
//!
//! Served by the HTTP layer (`http/report.rs`): the forms (html, csv, json,
//! pdf) at `GET /api/v1/shipments/{id}/report`, [`verify`] at
//! `POST /api/v1/reports/verify`.

mod chart;
pub mod pdf;
mod render;
pub(crate) use render::history_html;

use std::collections::BTreeMap;

use coldchain_proto::DeviceId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::evaluate::{Evaluation, Evaluator};
use crate::profile::Side;
use crate::store::{EventBody, EventRecord, FrameRecord, KvStore, SecurityKind};

pub use chart::svg as chart_svg;
pub use pdf::render_pdf;
pub use render::{render_csv, render_html, render_json};

pub use coldchain_engine::report::*;

/// The SHA-256 a signature covers: the arrival report as the signer
/// reviewed it, i.e. the report's data without its disposition and in the
/// state `arrived` (a shipment is signed for when it has arrived; closing
/// changes nothing else), the facts recomputed accordingly. A report
/// carrying a signature can be checked by recomputing this from its own data.
pub fn content_sha256(d: &ReportData) -> String {
    let mut c = d.clone();
    c.disposition = None;
    if c.journey.state == "closed" {
        c.journey.state = "arrived".into();
    }
    c.facts = facts(&c);
    sha256(&c)
}

/// Per-device counters over the shipment's span: frames stored and refused,
/// battery. `lo..=hi` is in device time for frames and events; refused frames
/// are counted by their receive time from `lo` to 24 h after `hi` (a logger
/// dumped at arrival brings its data then).
pub fn device_health(store: &KvStore, ev: &Evaluation) -> anyhow::Result<Vec<DeviceHealth>> {
    let s = &ev.shipment;
    let lo = s.departure_ms.unwrap_or(s.created_ms) - 3_600_000;
    let hi = ev.as_of_ms + 60_000;
    let db = store.db();
    let frames = db.open_tree("frames")?;
    let events = db.open_tree("events")?;
    let mut out: Vec<DeviceHealth> = Vec::new();
    for w in &s.watch {
        if out.iter().any(|d| d.device == w.device) {
            continue;
        }
        let mut h = DeviceHealth {
            device: w.device.clone(),
            ..DeviceHealth::default()
        };
        if let Ok(d) = DeviceId::new(&w.device) {
            let prefix = crate::store::key::device_prefix(&d);
            for v in frames.scan_prefix(&prefix).values() {
                let f: FrameRecord = postcard::from_bytes(&v?)?;
                if (lo..=hi).contains(&f.time_ms) {
                    h.frames_verified += 1;
                    if !f.signed {
                        h.frames_unsigned_accepted += 1;
                    }
                }
            }
            let mut battery: Vec<(i64, u16)> = Vec::new();
            for v in events.scan_prefix(&prefix).values() {
                let e: EventRecord = postcard::from_bytes(&v?)?;
                if !(lo..=hi).contains(&e.time_ms) {
                    continue;
                }
                match e.body {
                    EventBody::Status(st) => battery.push((e.time_ms, st.battery_mv)),
                    EventBody::Event(coldchain_proto::EventKind::BatteryLow { mv }) => {
                        h.battery_low_events += 1;
                        battery.push((e.time_ms, mv));
                    }
                    EventBody::Event(_) => {}
                }
            }
            battery.sort();
            h.battery_last_mv = battery.last().map(|b| b.1);
            h.battery_min_mv = battery.iter().map(|b| b.1).min();
            for r in store.security_in_window(&d, lo, hi)? {
                match r.kind {
                    SecurityKind::BadTag => h.rejected_bad_tag += r.count,
                    SecurityKind::DeviceMismatch => h.rejected_device_mismatch += r.count,
                    SecurityKind::Unsigned => h.rejected_unsigned += r.count,
                    SecurityKind::SequenceReuse => h.rejected_sequence_reuse += r.count,
                }
            }
        }
        out.push(h);
    }
    Ok(out)
}

/// The report of one shipment as of `as_of_ms` (ignored once it has arrived:
/// then it is as of the arrival). `None` if there is no such shipment.
pub fn for_shipment(
    reader: &Evaluator,
    store: &KvStore,
    id: &str,
    as_of_ms: i64,
) -> anyhow::Result<Option<ReportData>> {
    let Some(sh) = reader.shipments.get(id)? else {
        return Ok(None);
    };
    let ev = reader.evaluate(&sh, as_of_ms)?;
    let alerts = reader.alerts.of_shipment(&sh.id)?;
    let devices = device_health(store, &ev)?;
    let mut d = build(&ev, &alerts, devices);
    let assessments = crate::assess::Assessments::open(store.db())?;
    for a in &mut d.alerts {
        a.assessment = assessments.get(a.id)?.map(|x| AssessmentEntry {
            user: x.user,
            full_name: x.full_name,
            comment: x.comment,
            at_ms: x.at_ms,
        });
    }
    d.facts = facts(&d);
    Ok(Some(d))
}

/// A JSON value with every object's keys sorted, written without whitespace.
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let b: BTreeMap<&String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in b {
                    out.insert(k.clone(), v);
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // With serde_json's default map (a BTreeMap) the keys are already sorted;
    // sorting here keeps the form canonical should `preserve_order` be enabled.
    let mut out = String::new();
    write_canonical(&sorted(v), &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The data as a JSON value.
pub fn to_value(d: &ReportData) -> serde_json::Value {
    serde_json::to_value(d).unwrap_or(serde_json::Value::Null)
}

/// SHA-256 of the canonical JSON of a data value, hex.
pub fn sha256_of_value(v: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(canonical_json(v).as_bytes()))
}

/// SHA-256 of the report's canonical data, hex.
pub fn sha256(d: &ReportData) -> String {
    sha256_of_value(&to_value(d))
}

/// A report's forms.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// HTML for screens and A4 paper.
    Html,
    /// CSV with one section per row kind.
    Csv,
    /// JSON: `{"coldchain_report", "sha256", "data"}`.
    Json,
    /// PDF/A-3u for A4, the JSON form attached.
    Pdf,
}

impl Format {
    /// Parses `html`, `csv`, `json`, `pdf`.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "html" => Some(Format::Html),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }
}

/// A report rendered in `format`: the file's bytes.
pub fn render(d: &ReportData, format: Format) -> Vec<u8> {
    match format {
        Format::Html => render_html(d).into_bytes(),
        Format::Csv => render_csv(d).into_bytes(),
        Format::Json => render_json(d).into_bytes(),
        Format::Pdf => render_pdf(d),
    }
}

/// What a report file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileIdentity {
    /// Its form.
    pub format: Format,
    /// Shipment id.
    pub shipment: String,
    /// The moment it describes, ms.
    pub as_of_ms: i64,
    /// The SHA-256 it claims.
    pub sha256: String,
    /// The data it carries, where it carries it (JSON, HTML and PDF).
    #[serde(skip)]
    pub data: Option<serde_json::Value>,
}

/// Why a file could not be read as a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAReport {
    /// Nothing recognisable.
    #[error(
        "not a Coldchain report: no {0} found (expected a report's HTML, CSV, JSON or PDF form)"
    )]
    Missing(&'static str),
}

/// Reads shipment, moment and claimed hash from a report file of any form,
/// PDF included (from the JSON form attached to it).
pub fn identify_file(file: &[u8]) -> Result<FileIdentity, NotAReport> {
    if file.starts_with(b"%PDF-") {
        let json = pdf::embedded_json(file).ok_or(NotAReport::Missing(
            "readable report data attached to the PDF (the report's JSON form, which the \
             daemon stores uncompressed; a copy re-saved by another program may have \
             compressed it)",
        ))?;
        let mut id = identify(&json)?;
        if id.format != Format::Json {
            return Err(NotAReport::Missing(
                "report data attached to the PDF (the report's JSON form)",
            ));
        }
        id.format = Format::Pdf;
        return Ok(id);
    }
    let text = std::str::from_utf8(file)
        .map_err(|_| NotAReport::Missing("text (the file is neither UTF-8 text nor a PDF)"))?;
    identify(text)
}

/// Reads shipment, moment and claimed hash from a report file of a text form
/// (HTML, CSV or JSON; [`identify_file`] reads a PDF as well).
pub fn identify(file_text: &str) -> Result<FileIdentity, NotAReport> {
    let t = file_text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|_| NotAReport::Missing("valid JSON"))?;
        let data = v
            .get("data")
            .cloned()
            .ok_or(NotAReport::Missing("\"data\""))?;
        let sha = v
            .get("sha256")
            .and_then(|x| x.as_str())
            .ok_or(NotAReport::Missing("\"sha256\""))?;
        let shipment = data["identity"]["shipment"]
            .as_str()
            .ok_or(NotAReport::Missing("data.identity.shipment"))?;
        let as_of = data["as_of_ms"]
            .as_i64()
            .ok_or(NotAReport::Missing("data.as_of_ms"))?;
        return Ok(FileIdentity {
            format: Format::Json,
            shipment: shipment.to_string(),
            as_of_ms: as_of,
            sha256: sha.to_string(),
            data: Some(data),
        });
    }
    if t.starts_with("<!DOCTYPE html") || t.starts_with("<html") {
        let data_text = between(t, render::DATA_OPEN, "</script>")
            .ok_or(NotAReport::Missing("embedded report data"))?;
        let data: serde_json::Value = serde_json::from_str(data_text)
            .map_err(|_| NotAReport::Missing("valid embedded report data"))?;
        let sha = between(t, render::SHA_META_OPEN, "\"")
            .ok_or(NotAReport::Missing("the sha256 meta element"))?;
        let shipment = data["identity"]["shipment"]
            .as_str()
            .ok_or(NotAReport::Missing("identity.shipment"))?;
        let as_of = data["as_of_ms"]
            .as_i64()
            .ok_or(NotAReport::Missing("as_of_ms"))?;
        return Ok(FileIdentity {
            format: Format::Html,
            shipment: shipment.to_string(),
            as_of_ms: as_of,
            sha256: sha.to_string(),
            data: Some(data),
        });
    }
    // CSV: `report,<key>,<value>` rows.
    let mut shipment = None;
    let mut as_of = None;
    let mut sha = None;
    for line in t.lines() {
        let fields = render::csv_fields(line);
        if fields.len() >= 3 && fields[0] == "report" {
            match fields[1].as_str() {
                "shipment" => shipment = Some(csv_unguard(&fields[2])),
                "as_of_ms" => as_of = fields[2].parse().ok(),
                "sha256" => sha = Some(fields[2].clone()),
                _ => {}
            }
        }
    }
    Ok(FileIdentity {
        format: Format::Csv,
        shipment: shipment.ok_or(NotAReport::Missing("a report,shipment row"))?,
        as_of_ms: as_of.ok_or(NotAReport::Missing("a report,as_of_ms row"))?,
        sha256: sha.ok_or(NotAReport::Missing("a report,sha256 row"))?,
        data: None,
    })
}

/// Undoes the spreadsheet-formula guard of the CSV form (a leading `'`).
fn csv_unguard(f: &str) -> String {
    match f.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '@', '-']) => rest.to_string(),
        _ => f.to_string(),
    }
}

fn between<'a>(t: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = t.find(open)? + open.len();
    let j = t[i..].find(close)? + i;
    Some(&t[i..j])
}

/// The outcome of [`verify`].
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The copy is intact and the daemon's data for it is unchanged.
    pub ok: bool,
    /// The file's form.
    pub format: Format,
    /// Shipment.
    pub shipment: String,
    /// The moment the file describes, ms.
    pub as_of_ms: i64,
    /// The hash the file claims.
    pub sha256_in_file: String,
    /// The hash of the daemon's data for that shipment and moment now.
    pub sha256_now: String,
    /// The daemon's data still hashes to what the file claims.
    pub data_unchanged: bool,
    /// The file is exactly what the daemon renders from the data it claims
    /// (`None` when that cannot be told: a CSV copy whose data has changed).
    pub file_intact: Option<bool>,
    /// Top-level sections of the data that differ between file and daemon
    /// (JSON and HTML copies).
    pub changed_sections: Vec<String>,
    /// What is wrong, for people.
    pub problems: Vec<String>,
}

fn normalise(t: &str) -> String {
    let t = t.trim_start_matches('\u{feff}').replace("\r\n", "\n");
    t.trim_end().to_string()
}

/// Whether a file is what the daemon renders. HTML copies made before the
/// pages were rendered with maud wrote `'` in text as `&#39;` (maud leaves
/// it as it is: every attribute is in double quotes); such a copy shows the
/// same text and is accepted. The new form never contains `&#39;` (an `&`
/// of the text is `&amp;`, of the embedded data `\u0026`).
fn same_rendering(rendered: &str, file_text: &str, format: Format) -> bool {
    let (r, f) = (normalise(rendered), normalise(file_text));
    r == f || (format == Format::Html && f.contains("&#39;") && r == f.replace("&#39;", "'"))
}

/// Whether `file` is exactly what [`render`] makes of `d` in `format` (text
/// forms up to a byte-order mark, line endings, trailing white space and the
/// older apostrophe escape; a PDF byte for byte).
fn renders_to(d: &ReportData, format: Format, file: &[u8]) -> bool {
    match format {
        Format::Pdf => render_pdf(d) == file,
        text => match std::str::from_utf8(file) {
            Ok(t) => same_rendering(&String::from_utf8_lossy(&render(d, text)), t, text),
            Err(_) => false,
        },
    }
}

/// Checks a report file (the bytes of any form) against the daemon's current
/// data for the same shipment and moment (`current`, from [`for_shipment`]
/// with the file's `as_of_ms`, or the `data` of
/// `GET .../report?format=json&as_of_ms=N`).
pub fn verify(file: impl AsRef<[u8]>, current: &ReportData) -> Result<Verification, NotAReport> {
    let file = file.as_ref();
    let id = identify_file(file)?;
    let now_value = to_value(current);
    let sha_now = sha256_of_value(&now_value);
    let data_unchanged = id.sha256 == sha_now;
    let mut problems = Vec::new();
    if current.identity.shipment != id.shipment || current.as_of_ms != id.as_of_ms {
        problems.push(format!(
            "the daemon's data is for shipment {:?} as of {}, the file for {:?} as of {}",
            current.identity.shipment, current.as_of_ms, id.shipment, id.as_of_ms
        ));
    }
    let file_intact = match &id.data {
        Some(data) => {
            let hash_ok = sha256_of_value(data) == id.sha256;
            let rendered_ok = serde_json::from_value::<ReportData>(data.clone())
                .map(|d| renders_to(&d, id.format, file))
                .unwrap_or(false);
            Some(hash_ok && rendered_ok)
        }
        None if data_unchanged => Some(renders_to(current, id.format, file)),
        None => None,
    };
    let mut changed_sections = Vec::new();
    if let (Some(data), serde_json::Value::Object(now)) = (&id.data, &now_value) {
        let empty = serde_json::Map::new();
        let file = data.as_object().unwrap_or(&empty);
        let mut keys: Vec<&String> = now.keys().chain(file.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if now.get(k) != file.get(k) {
                changed_sections.push(k.clone());
            }
        }
    }
    if !data_unchanged {
        problems.push(if changed_sections.is_empty() {
            "the daemon's data for this shipment and moment differs from the copy's".to_string()
        } else {
            format!(
                "the daemon's data differs from the copy's in: {}",
                changed_sections.join(", ")
            )
        });
    }
    match file_intact {
        Some(false) => problems.push(
            "the file's content does not match the data and hash it carries: it was altered".into(),
        ),
        None => problems.push(
            "whether this CSV copy was altered cannot be told while the daemon's data differs"
                .into(),
        ),
        Some(true) => {}
    }
    Ok(Verification {
        ok: data_unchanged && file_intact == Some(true) && problems.is_empty(),
        format: id.format,
        shipment: id.shipment,
        as_of_ms: id.as_of_ms,
        sha256_in_file: id.sha256,
        sha256_now: sha_now,
        data_unchanged,
        file_intact,
        changed_sections,
        problems,
    })
}

/// A filename fragment from a shipment id: ASCII letters, digits, `-`, `_`, `.`.
pub(crate) fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Which side a zone is on, as the chart needs it.
pub(crate) fn side_of(z: &ZoneEntry) -> Side {
    if z.side == "low" {
        Side::Low
    } else {
        Side::High
    }
}

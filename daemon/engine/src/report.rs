//! The arrival report's data: what a report states about a shipment, built
//! from an [`Evaluation`], its alerts and per-device counters. Integers
//! (milli-°C, ms), strings, booleans and nulls only, so its JSON form
//! survives any JSON parser unchanged. Rendering it (HTML, CSV, JSON, PDF/A),
//! hashing and verifying copies are the daemon's (`daemon/src/report.rs`).
//!
//! The facts in a report are stated, never judged: the disposition is a
//! person's decision (docs/domain.md §4).

pub mod text;

use serde::{Deserialize, Serialize};

use crate::alarm::ConditionKind;
use crate::alert::Alert;
use crate::evaluation::Evaluation;
use crate::mkt::MktOutcome;
use crate::profile::{Severity, ZoneKind};
use crate::viability::ViabilityOutcome;

/// The version tag of the report's data layout.
pub const FORMAT: &str = "coldchain-report/1";

/// Everything a report states. Integers, strings, booleans and nulls only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportData {
    /// [`FORMAT`].
    pub format: String,
    /// The moment described: the arrival, or when the report was made, ms.
    pub as_of_ms: i64,
    /// What travelled and what watched it.
    pub identity: Identity,
    /// Departure, hand-offs, arrival.
    pub journey: Journey,
    /// Temperature figures and excursions.
    pub temperature: Temperature,
    /// Completeness and trustworthiness of the record.
    pub data_health: DataHealth,
    /// Viability window and warming.
    pub viability: Viability,
    /// Alerts with their acknowledgements.
    pub alerts: Vec<AlertEntry>,
    /// The disposition, if a person has recorded it.
    pub disposition: Option<DispositionEntry>,
    /// Plain sentences of fact, e.g. "no excursion", "31 h of window remaining".
    pub facts: Vec<String>,
    /// Every reading used, in time order: `[t_ms, milli-°C or null for a fault]`.
    pub readings: Vec<(i64, Option<i32>)>,
    /// The calibration certificates the readings were corrected by (absent
    /// when no watching channel has one, and from reports made before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<CalibrationEntry>,
}

/// A watching channel's calibration: the certificate, the correction, and
/// the figures as measured beside the corrected ones the report states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationEntry {
    /// Device.
    pub device: String,
    /// Channel.
    pub channel: u8,
    /// Certificate id.
    pub certificate: String,
    /// Calibration date, ms.
    pub date_ms: i64,
    /// Due date, ms (valid to the end of that day).
    pub due_ms: i64,
    /// Whether it had expired by `as_of_ms`.
    pub expired: bool,
    /// The correction in words.
    pub correction: String,
    /// Uncertainty stated by the certificate, milli-°C.
    pub uncertainty_milli_c: i32,
    /// IEC 60751 class of the element, if stated.
    pub class: Option<String>,
    /// The class tolerance at the lowest and highest corrected reading,
    /// milli-°C (the element's measurement uncertainty there).
    pub tolerance_at_min_milli_c: Option<i32>,
    /// See `tolerance_at_min_milli_c`.
    pub tolerance_at_max_milli_c: Option<i32>,
    /// Lowest and highest reading as measured, before correction, milli-°C
    /// (when this is the only watching channel; the report's figures are
    /// corrected).
    pub measured_min_milli_c: Option<i32>,
    /// See `measured_min_milli_c`.
    pub measured_max_milli_c: Option<i32>,
}

/// What travelled and what watched it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Shipment id.
    pub shipment: String,
    /// Product description.
    pub product: String,
    /// ISBT 128 donation identification number.
    pub din: Option<String>,
    /// ISBT 128 product code (absent from reports made before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Profile (lane) name.
    pub profile: String,
    /// Whether the lane is cryogenic.
    pub cryogenic: bool,
    /// Where from.
    pub origin: String,
    /// Where to.
    pub destination: String,
    /// Devices and their probe channels.
    pub probes: Vec<Probe>,
}

/// A probe channel watching the shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Device id.
    pub device: String,
    /// Channel.
    pub channel: u8,
}

/// The journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    /// Lifecycle state when the report was made.
    pub state: String,
    /// Created, ms.
    pub created_ms: i64,
    /// Departure, ms.
    pub departure_ms: Option<i64>,
    /// Latest ETA, ms.
    pub eta_ms: Option<i64>,
    /// Arrival, ms.
    pub arrival_ms: Option<i64>,
    /// Every custody hand-off, in order.
    pub handoffs: Vec<HandoffEntry>,
}

/// A custody hand-off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffEntry {
    /// When, ms.
    pub at_ms: i64,
    /// Who took custody.
    pub to: String,
    /// Where.
    pub location: String,
    /// Who recorded it.
    pub by: String,
}

/// Temperature figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// Valid readings.
    pub valid_readings: u64,
    /// Lowest, milli-°C.
    pub min_milli_c: Option<i32>,
    /// Highest, milli-°C.
    pub max_milli_c: Option<i32>,
    /// Time-weighted mean over known time, milli-°C.
    pub mean_milli_c: Option<i32>,
    /// MKT, where the lane has one.
    pub mkt: Option<MktEntry>,
    /// Why there is no MKT, when there is none.
    pub mkt_note: Option<String>,
    /// Time and count per alarm zone.
    pub zones: Vec<ZoneEntry>,
    /// Every excursion (fired or still within its delay).
    pub excursions: Vec<Excursion>,
}

/// Mean kinetic temperature (USP <1160>).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MktEntry {
    /// Over the whole shipment, milli-°C.
    pub whole_milli_c: i32,
    /// Time with a known temperature, ms.
    pub covered_ms: i64,
    /// The USP window length, ms.
    pub window_ms: i64,
    /// The warmest window: start, ms.
    pub window_start_ms: i64,
    /// The warmest window: end, ms.
    pub window_end_ms: i64,
    /// The warmest window: MKT, milli-°C.
    pub window_milli_c: i32,
    /// False when the data span is shorter than the USP window.
    pub window_full: bool,
}

/// One alarm zone and what happened in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneEntry {
    /// H1..H4, L1..L3.
    pub zone: String,
    /// `"high"` or `"low"`.
    pub side: String,
    /// The limit as configured, e.g. `"> 8.0"`.
    pub limit: String,
    /// The limit, milli-°C.
    pub limit_milli_c: i32,
    /// `"single"` or `"cumulative"`.
    pub kind: String,
    /// Delay before the alarm fires, ms.
    pub delay_ms: i64,
    /// `"info"`, `"warning"` or `"critical"`.
    pub severity: String,
    /// Free text from the profile.
    pub label: Option<String>,
    /// Time beyond the limit, ms.
    pub time_beyond_ms: i64,
    /// Entries beyond the limit.
    pub entries: u32,
    /// Alarms fired.
    pub fired: u32,
}

/// An excursion (a zone condition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excursion {
    /// Zone.
    pub zone: String,
    /// Severity of the zone.
    pub severity: String,
    /// Start, ms.
    pub start_ms: i64,
    /// End (cleared), ms; `None` while it goes on.
    pub end_ms: Option<i64>,
    /// Warmest (high zones) or coldest (low zones) value, milli-°C.
    pub peak_milli_c: Option<i32>,
    /// From start to end (or to the last data), ms.
    pub duration_ms: i64,
    /// Time strictly beyond the limit, ms.
    pub beyond_ms: i64,
    /// Entries beyond the limit (more than one for a cumulative zone).
    pub entries: u32,
    /// When the alarm fired; `None` if it stayed within its delay.
    pub fired_ms: Option<i64>,
}

/// A stretch of time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stretch {
    /// Start, ms.
    pub start_ms: i64,
    /// End, ms; `None` while it goes on.
    pub end_ms: Option<i64>,
    /// Duration, ms.
    pub duration_ms: i64,
}

/// Completeness and trustworthiness of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataHealth {
    /// Readings used.
    pub readings: u64,
    /// Fault readings among them (a fault is never a temperature).
    pub fault_readings: u64,
    /// Stretches of consecutive fault readings.
    pub faults: Vec<Stretch>,
    /// Readings whose time is estimated (device clock not synced).
    pub estimated_time_readings: u64,
    /// Stretches with the device clock not synced.
    pub unsynced_clock: Vec<Stretch>,
    /// Stretches without data (silence).
    pub silences: Vec<Stretch>,
    /// Missing sequence numbers per device and boot.
    pub sequence_gaps: Vec<SequenceGap>,
    /// Per device: frames and battery.
    pub devices: Vec<DeviceHealth>,
    /// Other data-health conditions (lid, tilt, tampering, battery), by kind.
    pub other: Vec<OtherCondition>,
}

/// Missing frames of one boot of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceGap {
    /// Device.
    pub device: String,
    /// Boot counter.
    pub boot: u32,
    /// First missing seq.
    pub first: u32,
    /// Last missing seq.
    pub last: u32,
}

/// Per-device counters for the shipment's time span.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// Device.
    pub device: String,
    /// Frames stored (their tags verified, or accepted unsigned by policy).
    pub frames_verified: u64,
    /// Of those, frames accepted without a tag.
    pub frames_unsigned_accepted: u64,
    /// Frames refused: the tag did not verify.
    pub rejected_bad_tag: u64,
    /// Frames refused: sent on another device's topic.
    pub rejected_device_mismatch: u64,
    /// Frames refused: unsigned from a device that must sign.
    pub rejected_unsigned: u64,
    /// Frames refused: they reused a stored frame's boot and sequence number
    /// with different content (sequence tampering).
    pub rejected_sequence_reuse: u64,
    /// Latest battery voltage reported, mV.
    pub battery_last_mv: Option<u16>,
    /// Lowest battery voltage reported, mV.
    pub battery_min_mv: Option<u16>,
    /// Battery-low events.
    pub battery_low_events: u64,
}

/// A data-health condition other than faults, clock and silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherCondition {
    /// Kind, e.g. `"lid_open"`.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// When.
    pub stretch: Stretch,
    /// Whether it fired.
    pub fired: bool,
}

/// The viability window and warming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Viability {
    /// The window, when the product has one.
    pub window: Option<WindowEntry>,
    /// Warming above the critical limit, on a cryogenic lane.
    pub warming: Option<WarmingEntry>,
    /// A dry shipper warming towards its limit: the predicted crossing and
    /// the ETA (absent without a warming trend, and from older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<crate::holdtime::HoldPrediction>,
}

/// The viability window at `as_of_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEntry {
    /// Start (collection, else departure, else first sample), ms.
    pub start_ms: i64,
    /// Nominal window at the reference temperature, ms.
    pub nominal_ms: i64,
    /// Consumed, reference-equivalent ms.
    pub consumed_ms: i64,
    /// Remaining, ms.
    pub remaining_ms: i64,
    /// Time without a valid reading inside the window, ms.
    pub unknown_ms: i64,
    /// Predicted to remain at ETA, ms (negative: runs out before).
    pub predicted_at_eta_ms: Option<i64>,
    /// Loss so far for a table model, hundredths of a percent.
    pub loss_centi_pct: Option<i64>,
}

/// Warming events of a cryogenic lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmingEntry {
    /// The critical limit, e.g. `"> -135.0"`.
    pub limit: String,
    /// Warming events.
    pub events: u32,
    /// Time above the limit, ms.
    pub time_above_ms: i64,
    /// Warmest value above the limit, milli-°C.
    pub peak_milli_c: Option<i32>,
    /// Start of the first event, ms.
    pub first_ms: Option<i64>,
    /// Whether the latest value is above the limit.
    pub above_now: bool,
}

/// An alert and its acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEntry {
    /// Id.
    pub id: u64,
    /// Condition kind, e.g. `"H1"`, `"probe_fault"`.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// Sentence.
    pub message: String,
    /// `"open"`, `"acknowledged"`, `"resolved"`, `"withdrawn"`.
    pub state: String,
    /// When the condition fired (device time), ms.
    pub fires_ms: i64,
    /// When the daemon raised it, ms.
    pub raised_ms: i64,
    /// When the condition cleared, ms.
    pub cleared_ms: Option<i64>,
    /// Who acknowledged it.
    pub ack_by: Option<String>,
    /// Their comment.
    pub ack_comment: Option<String>,
    /// When, ms.
    pub ack_ms: Option<i64>,
    /// Escalations.
    pub escalations: u32,
    /// Revisions by later data, oldest first (what it said before each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionEntry>,
    /// When later data disproved it, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<WithdrawalEntry>,
    /// QA's assessment (the review before release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment: Option<AssessmentEntry>,
}

/// QA's assessment of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssessmentEntry {
    /// The assessor's user id.
    pub user: String,
    /// Full name.
    pub full_name: String,
    /// The assessment.
    pub comment: String,
    /// When, ms.
    pub at_ms: i64,
}

/// One revision of an alert by later data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionEntry {
    /// When the daemon revised it, ms.
    pub at_ms: i64,
    /// What the alert said until then.
    pub was_message: String,
    /// When it was said to have started, ms.
    pub was_start_ms: i64,
    /// When it was said to have fired, ms.
    pub was_fires_ms: i64,
}

/// An alert's withdrawal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithdrawalEntry {
    /// When, ms.
    pub at_ms: i64,
    /// Why.
    pub reason: String,
}

/// The disposition recorded by a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispositionEntry {
    /// `"accepted"`, `"quarantined"`, `"rejected"`.
    pub decision: String,
    /// Comment.
    pub comment: String,
    /// Who.
    pub by: String,
    /// When, ms.
    pub at_ms: i64,
    /// The electronic signature, if signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureEntry>,
}

/// The manifestation of an electronic signature (21 CFR 11.50).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// The signer's full name.
    pub full_name: String,
    /// The signer's user id.
    pub user: String,
    /// When, ms.
    pub signed_ms: i64,
    /// The meaning, e.g. `released for use`.
    pub meaning: String,
    /// The SHA-256 of the report content it covers ([`content_sha256`]).
    pub report_sha256: String,
}

fn severity(s: Severity) -> String {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
    .into()
}

fn json_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn round_c(c: f64) -> i32 {
    // Temperatures in °C are far inside i32 milli-°C.
    #[allow(clippy::cast_possible_truncation)]
    let m = (c * 1000.0).round() as i32;
    m
}

fn stretch(start_ms: i64, end_ms: Option<i64>, last_ms: i64) -> Stretch {
    Stretch {
        start_ms,
        end_ms,
        duration_ms: end_ms.unwrap_or(last_ms) - start_ms,
    }
}

fn calibration_entries(ev: &Evaluation) -> Vec<CalibrationEntry> {
    let only = ev.calibration.len() == 1 && ev.shipment.watch.len() == 1;
    let milli = |c: f64| (c * 1000.0).round() as i32;
    ev.calibration
        .iter()
        .map(|(device, channel, c)| {
            let tol = |v: Option<i32>| {
                c.class
                    .zip(v)
                    .map(|(k, v)| milli(k.tolerance_c(f64::from(v) / 1000.0)))
            };
            let measured: Vec<i32> = [ev.min_milli_c, ev.max_milli_c]
                .into_iter()
                .flatten()
                .map(|v| c.measured_milli(v))
                .collect();
            CalibrationEntry {
                device: device.clone(),
                channel: *channel,
                certificate: c.id.clone(),
                date_ms: c.date_ms,
                due_ms: c.due_ms,
                expired: ev.as_of_ms >= c.expires_ms(),
                correction: c.correction_text(),
                uncertainty_milli_c: milli(c.uncertainty_c),
                class: c.class.map(|k| k.to_string()),
                tolerance_at_min_milli_c: tol(ev.min_milli_c),
                tolerance_at_max_milli_c: tol(ev.max_milli_c),
                measured_min_milli_c: measured.iter().min().copied().filter(|_| only),
                measured_max_milli_c: measured.iter().max().copied().filter(|_| only),
            }
        })
        .collect()
}

/// The report's data from an evaluation, the shipment's alerts and the
/// per-device counters ([`device_health`]). Pure: the same inputs give the
/// same data.
pub fn build(ev: &Evaluation, alerts: &[Alert], devices: Vec<DeviceHealth>) -> ReportData {
    let s = &ev.shipment;
    let p = &ev.profile;
    let identity = Identity {
        shipment: s.id.clone(),
        product: s.product.clone(),
        din: s.din.clone(),
        product_code: s.product_code.clone(),
        profile: p.name.clone(),
        cryogenic: p.cryogenic,
        origin: s.origin.clone(),
        destination: s.destination.clone(),
        probes: s
            .watch
            .iter()
            .map(|w| Probe {
                device: w.device.clone(),
                channel: w.channel,
            })
            .collect(),
    };
    let journey = Journey {
        state: json_name(&s.state),
        created_ms: s.created_ms,
        departure_ms: s.departure_ms,
        eta_ms: s.eta_ms,
        arrival_ms: s.arrived_ms,
        handoffs: s
            .handoffs
            .iter()
            .map(|h| HandoffEntry {
                at_ms: h.at_ms,
                to: h.to.clone(),
                location: h.location.clone(),
                by: h.by.clone(),
            })
            .collect(),
    };

    let mut excursions = Vec::new();
    let mut zones = Vec::new();
    for z in &p.zones {
        let conds: Vec<_> = ev
            .conditions
            .iter()
            .filter(|c| c.id.kind == ConditionKind::Zone(z.id))
            .collect();
        for c in &conds {
            excursions.push(Excursion {
                zone: z.id.to_string(),
                severity: severity(c.severity),
                start_ms: c.id.start_ms,
                end_ms: c.cleared_ms,
                peak_milli_c: c.peak,
                duration_ms: c.duration_ms(),
                beyond_ms: c.beyond_ms,
                entries: c.excursions,
                fired_ms: c.fires_ms,
            });
        }
        zones.push(ZoneEntry {
            zone: z.id.to_string(),
            side: z.id.side().to_string(),
            limit: z.limit.to_string(),
            limit_milli_c: z.limit.milli_c,
            kind: match z.kind {
                ZoneKind::Single => "single".into(),
                ZoneKind::Cumulative => "cumulative".into(),
            },
            delay_ms: z.delay_ms,
            severity: severity(z.severity),
            label: z.label.clone(),
            time_beyond_ms: conds.iter().map(|c| c.beyond_ms).sum(),
            entries: conds.iter().map(|c| c.excursions).sum(),
            fired: conds.iter().filter(|c| c.has_fired()).count() as u32,
        });
    }
    excursions.sort_by(|a, b| (a.start_ms, &a.zone).cmp(&(b.start_ms, &b.zone)));

    let (mkt, mkt_note) = match &ev.mkt {
        MktOutcome::Computed(m) => (
            Some(MktEntry {
                whole_milli_c: round_c(m.whole_c),
                covered_ms: m.covered_ms,
                window_ms: m.window_ms,
                window_start_ms: m.max_window.start_ms,
                window_end_ms: m.max_window.end_ms,
                window_milli_c: round_c(m.max_window.mkt_c),
                window_full: m.max_window.full,
            }),
            None,
        ),
        MktOutcome::NotApplicable => (
            None,
            Some(if p.cryogenic {
                "MKT does not apply on a cryogenic lane".into()
            } else {
                "the profile has no MKT".into()
            }),
        ),
        MktOutcome::NoData => (None, Some("no time with a known temperature".into())),
    };
    let temperature = Temperature {
        valid_readings: ev.points.iter().filter(|p| p.milli_c.is_some()).count() as u64,
        min_milli_c: ev.min_milli_c,
        max_milli_c: ev.max_milli_c,
        mean_milli_c: ev.mean_milli_c,
        mkt,
        mkt_note,
        zones,
        excursions,
    };

    // Data health.
    let mut faults: Vec<Stretch> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    for pt in &ev.points {
        match (pt.milli_c, run) {
            (None, None) => run = Some((pt.t_ms, pt.t_ms)),
            (None, Some((a, _))) => run = Some((a, pt.t_ms)),
            (Some(_), Some((a, b))) => {
                faults.push(stretch(a, Some(pt.t_ms), b));
                run = None;
            }
            (Some(_), None) => {}
        }
    }
    if let Some((a, b)) = run {
        faults.push(stretch(a, None, b));
    }
    let of_kind = |k: ConditionKind| -> Vec<Stretch> {
        ev.conditions
            .iter()
            .filter(|c| c.id.kind == k)
            .map(|c| stretch(c.id.start_ms, c.cleared_ms, c.last_ms))
            .collect()
    };
    let other = ev
        .conditions
        .iter()
        .filter(|c| {
            matches!(
                c.id.kind,
                ConditionKind::LidOpen
                    | ConditionKind::Tilt
                    | ConditionKind::Tamper
                    | ConditionKind::StorageFull
                    | ConditionKind::BatteryLow
                    | ConditionKind::CalibrationExpired
            )
        })
        .map(|c| OtherCondition {
            kind: c.id.kind.to_string(),
            severity: severity(c.severity),
            stretch: stretch(c.id.start_ms, c.cleared_ms, c.last_ms),
            fired: c.has_fired(),
        })
        .collect();
    let data_health = DataHealth {
        readings: ev.readings as u64,
        fault_readings: ev.faults as u64,
        faults,
        estimated_time_readings: ev.estimated_time as u64,
        unsynced_clock: of_kind(ConditionKind::ClockUnsynced),
        silences: of_kind(ConditionKind::Silent),
        sequence_gaps: ev
            .gaps
            .iter()
            .map(|(device, boot, first, last)| SequenceGap {
                device: device.clone(),
                boot: *boot,
                first: *first,
                last: *last,
            })
            .collect(),
        devices,
        other,
    };

    let window = match &ev.viability {
        ViabilityOutcome::Computed(v) => Some(WindowEntry {
            start_ms: v.window_start_ms,
            nominal_ms: v.nominal_ms,
            consumed_ms: v.consumed_ms,
            remaining_ms: v.remaining_ms,
            unknown_ms: v.unknown_ms,
            predicted_at_eta_ms: v.predicted_at_eta_ms,
            loss_centi_pct: v.loss_pct.map(|l| {
                #[allow(clippy::cast_possible_truncation)]
                let c = (l * 100.0).round() as i64;
                c
            }),
        }),
        ViabilityOutcome::NotApplicable => None,
    };
    let warming = ev.warming.as_ref().map(|w| WarmingEntry {
        limit: w.limit.to_string(),
        events: w.events,
        time_above_ms: w.time_above_ms,
        peak_milli_c: w.peak_milli_c,
        first_ms: w.first_ms,
        above_now: w.above_now,
    });

    let alerts: Vec<AlertEntry> = alerts
        .iter()
        .map(|a| AlertEntry {
            id: a.id,
            kind: a.condition.kind.to_string(),
            severity: severity(a.severity),
            message: a.message.clone(),
            state: json_name(&a.state),
            fires_ms: a.fires_ms,
            raised_ms: a.raised_ms,
            cleared_ms: a.cleared_ms,
            ack_by: a.ack.as_ref().map(|k| k.by.clone()),
            ack_comment: a.ack.as_ref().map(|k| k.comment.clone()),
            ack_ms: a.ack.as_ref().map(|k| k.at_ms),
            escalations: a.escalations,
            revisions: a
                .revisions
                .iter()
                .map(|r| RevisionEntry {
                    at_ms: r.at_ms,
                    was_message: r.was.message.clone(),
                    was_start_ms: r.was.start_ms,
                    was_fires_ms: r.was.fires_ms,
                })
                .collect(),
            withdrawn: a.withdrawn.as_ref().map(|w| WithdrawalEntry {
                at_ms: w.at_ms,
                reason: w.reason.clone(),
            }),
            assessment: None,
        })
        .collect();
    let disposition = s.disposition.as_ref().map(|d| DispositionEntry {
        decision: json_name(&d.decision),
        comment: d.comment.clone(),
        by: d.by.clone(),
        at_ms: d.at_ms,
        signature: d.signature.as_ref().map(|g| SignatureEntry {
            full_name: g.full_name.clone(),
            user: g.user.clone(),
            signed_ms: g.signed_ms,
            meaning: g.meaning.clone(),
            report_sha256: g.report_sha256.clone(),
        }),
    });

    let mut data = ReportData {
        format: FORMAT.into(),
        as_of_ms: ev.as_of_ms,
        identity,
        journey,
        temperature,
        data_health,
        viability: Viability {
            window,
            warming,
            hold_time: ev.hold_time.clone(),
        },
        alerts,
        disposition,
        facts: Vec::new(),
        readings: ev.points.iter().map(|p| (p.t_ms, p.milli_c)).collect(),
        calibration: calibration_entries(ev),
    };
    data.facts = facts(&data);
    data
}

/// Plain sentences of fact. Never a judgement: no "acceptable", no "passed".
pub fn facts(d: &ReportData) -> Vec<String> {
    use text::{fmt_c, fmt_dur};
    let mut out = Vec::new();
    let t = &d.temperature;
    let fired: Vec<&Excursion> = t
        .excursions
        .iter()
        .filter(|e| e.fired_ms.is_some())
        .collect();
    if t.excursions.is_empty() {
        out.push("no excursion".to_string());
    } else if fired.is_empty() {
        out.push(format!(
            "no alarm from a temperature zone; {} excursion(s) shorter than their zone's delay",
            t.excursions.len()
        ));
    } else {
        let mut zones: Vec<&str> = fired.iter().map(|e| e.zone.as_str()).collect();
        zones.dedup();
        let total: i64 = fired.iter().map(|e| e.beyond_ms).sum();
        out.push(format!(
            "{} excursion alarm(s) ({}); {} beyond the limits in total",
            fired.len(),
            zones.join(", "),
            fmt_dur(total)
        ));
    }
    if let (Some(lo), Some(hi)) = (t.min_milli_c, t.max_milli_c) {
        out.push(format!("temperature {} to {}", fmt_c(lo), fmt_c(hi)));
    } else {
        out.push("no valid temperature reading".into());
    }
    if let Some(m) = &t.mkt {
        out.push(format!(
            "MKT {} over the shipment; warmest {} window {}",
            fmt_c(m.whole_milli_c),
            fmt_dur(m.window_ms),
            fmt_c(m.window_milli_c)
        ));
    }
    if let Some(w) = &d.viability.window {
        if w.remaining_ms > 0 {
            out.push(format!("{} of window remaining", fmt_dur(w.remaining_ms)));
        } else {
            out.push("viability window used up".into());
        }
    }
    if let Some(w) = &d.viability.warming {
        out.push(match w.events {
            0 => format!("no warming event ({})", w.limit),
            n => format!(
                "{n} warming event(s) ({}), {} above",
                w.limit,
                fmt_dur(w.time_above_ms)
            ),
        });
    }
    let h = &d.data_health;
    if h.fault_readings > 0 {
        out.push(format!("{} probe-fault reading(s)", h.fault_readings));
    }
    let missing: u64 = h
        .sequence_gaps
        .iter()
        .map(|g| u64::from(g.last - g.first) + 1)
        .sum();
    if !h.silences.is_empty() || missing > 0 {
        out.push(format!(
            "{} silence(s), {} frame(s) missing",
            h.silences.len(),
            missing
        ));
    } else {
        out.push("no data gap".into());
    }
    if h.estimated_time_readings > 0 {
        out.push(format!(
            "{} reading(s) with estimated time (device clock not synced)",
            h.estimated_time_readings
        ));
    }
    let open = d.alerts.iter().filter(|a| a.state == "open").count();
    out.push(format!(
        "{} alert(s), {} not acknowledged",
        d.alerts.len(),
        open
    ));
    out.push(match &d.disposition {
        Some(x) => match &x.signature {
            Some(g) => format!(
                "disposition signed by {} ({}): {}",
                g.full_name, g.user, g.meaning
            ),
            None => format!("disposition recorded by {}: {}", x.by, x.decision),
        },
        None => "disposition not recorded".into(),
    });
    out
}

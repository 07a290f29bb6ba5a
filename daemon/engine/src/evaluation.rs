//! Everything known about a shipment at one moment: what the report, the
//! status and the API state, computed by the daemon's evaluator from the
//! stored data and handed on as plain data.

use serde::Serialize;

use crate::alarm::{self, Condition};
use crate::calibration;
use crate::mkt::MktOutcome;
use crate::profile::Profile;
use crate::shipment::Shipment;
use crate::viability::ViabilityOutcome;

/// One point of a shipment's temperature record (for charts and reports).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Device time, ms.
    pub t_ms: i64,
    /// milli-°C, or `None` for a fault.
    pub milli_c: Option<i32>,
}

/// Everything known about a shipment at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The shipment.
    pub shipment: Shipment,
    /// Its profile.
    pub profile: Profile,
    /// The moment evaluated (arrival for an arrived shipment, else now), ms.
    pub as_of_ms: i64,
    /// Readings used.
    pub readings: usize,
    /// Fault readings among them.
    pub faults: usize,
    /// Readings with an estimated time (device clock not synced).
    pub estimated_time: usize,
    /// Latest valid temperature and its time.
    pub last: Option<Point>,
    /// Lowest valid temperature, milli-°C.
    pub min_milli_c: Option<i32>,
    /// Highest valid temperature, milli-°C.
    pub max_milli_c: Option<i32>,
    /// Time-weighted mean over known time, milli-°C.
    pub mean_milli_c: Option<i32>,
    /// MKT (not on cryogenic lanes).
    pub mkt: MktOutcome,
    /// Viability window.
    pub viability: ViabilityOutcome,
    /// Warming events and time above the critical limit (cryogenic lanes).
    pub warming: Option<alarm::warming::WarmingSummary>,
    /// Every condition found, fired or not (the report's evidence).
    pub conditions: Vec<Condition>,
    /// Sequence gaps of the watching devices: (device, boot, first, last).
    pub gaps: Vec<(String, u32, u32, u32)>,
    /// The record, for charts: every reading used, in time order.
    pub points: Vec<Point>,
    /// The certificates the watching channels' readings were corrected by.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<(String, u8, calibration::Certificate)>,
    /// A dry shipper's predicted crossing of its limit against the ETA.
    pub hold_time: Option<crate::holdtime::HoldPrediction>,
}

impl Evaluation {
    /// A number that sorts shipments by how much they need a person: open
    /// critical alerts first, then warnings, then the least window left.
    pub fn active_conditions(&self) -> impl Iterator<Item = &Condition> {
        self.conditions.iter().filter(|c| c.is_active())
    }
}

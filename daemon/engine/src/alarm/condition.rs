//! Conditions: what evaluation finds, each with a stable identity.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::profile::{Severity, ZoneId};

/// What a condition is about.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    /// A temperature zone of the profile.
    Zone(ZoneId),
    /// The probe reported a fault instead of a temperature.
    ProbeFault,
    /// No sample for N sampling intervals.
    Silent,
    /// Battery below its limit.
    BatteryLow,
    /// The device clock is not synced; its times are estimates.
    ClockUnsynced,
    /// The lid stayed open longer than the limit.
    LidOpen,
    /// The container tilted beyond the limit for longer than the delay.
    Tilt,
    /// Frames with bad tags or sequence anomalies were received.
    Tamper,
    /// The edge daemon's database is over its disk budget: intake is paused.
    StorageFull,
    /// The viability window predicted to remain at ETA is below the margin.
    ViabilityWarning,
    /// The viability window is used up.
    ViabilityGone,
    /// The temperature is rising towards the critical limit fast enough to
    /// cross it within the prediction horizon (an LN2 dry shipper running dry).
    Trend,
    /// A watching channel's calibration certificate expired before or
    /// during the shipment (`calibration`).
    CalibrationExpired,
    /// A dry shipper is predicted to cross its limit before the ETA plus a
    /// margin (`holdtime`).
    HoldTime,
}

impl fmt::Display for ConditionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionKind::Zone(z) => write!(f, "{z}"),
            ConditionKind::ProbeFault => f.write_str("probe_fault"),
            ConditionKind::Silent => f.write_str("silent"),
            ConditionKind::BatteryLow => f.write_str("battery_low"),
            ConditionKind::ClockUnsynced => f.write_str("clock_unsynced"),
            ConditionKind::LidOpen => f.write_str("lid_open"),
            ConditionKind::Tilt => f.write_str("tilt"),
            ConditionKind::Tamper => f.write_str("tamper"),
            ConditionKind::StorageFull => f.write_str("storage_full"),
            ConditionKind::ViabilityWarning => f.write_str("viability_warning"),
            ConditionKind::ViabilityGone => f.write_str("viability_gone"),
            ConditionKind::Trend => f.write_str("trend"),
            ConditionKind::CalibrationExpired => f.write_str("calibration_expired"),
            ConditionKind::HoldTime => f.write_str("hold_time"),
        }
    }
}

/// The identity of a condition: what it is about and when it started, in device
/// time. Evaluating the same samples again (after a restart, on a replay, with
/// the readings in another order) gives the same identity, so a store keyed by it
/// never raises the same alarm twice.
///
/// An identity changes only when the *data* changes what happened: a late batch
/// that shows an excursion began earlier than known moves its start.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConditionId {
    /// What the condition is about.
    pub kind: ConditionKind,
    /// When it started, device unix ms.
    pub start_ms: i64,
}

impl fmt::Display for ConditionId {
    /// `H1@1767225600000`, `probe_fault@1767225600000`: usable as a storage key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.kind, self.start_ms)
    }
}

/// One condition found in the data: a zone excursion or a data-health problem.
///
/// A condition exists from its start; it *fires* (raises an alarm) at
/// [`fires_ms`](Condition::fires_ms), which may be `None` for an excursion that
/// has not lasted its delay (kept: it is evidence for the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// Stable identity.
    pub id: ConditionId,
    /// How urgent.
    pub severity: Severity,
    /// When the alarm fires, device ms; `None` if it has not (yet).
    pub fires_ms: Option<i64>,
    /// When the condition cleared (with hysteresis), device ms; `None` while
    /// active. For a cumulative zone: when the value last came back, `None` while
    /// it is beyond (a cumulative alarm never resets; `cleared_ms` only says the
    /// temperature is back).
    pub cleared_ms: Option<i64>,
    /// Worst value: milli-°C for zones (highest for H, lowest for L), degrees for
    /// tilt, lowest mV for battery; `None` otherwise.
    pub peak: Option<i32>,
    /// Time counted beyond the limit, ms (zones: time strictly beyond, unknown time
    /// excluded; data-health: how long the state lasted).
    pub beyond_ms: i64,
    /// Separate entries beyond the limit within this condition.
    pub excursions: u32,
    /// The last moment the data covers for this condition, device ms.
    pub last_ms: i64,
}

impl Condition {
    /// A condition of `kind` starting at `start_ms`, not fired, nothing counted yet.
    pub fn new(kind: ConditionKind, severity: Severity, start_ms: i64) -> Self {
        Condition {
            id: ConditionId { kind, start_ms },
            severity,
            fires_ms: None,
            cleared_ms: None,
            peak: None,
            beyond_ms: 0,
            excursions: 0,
            last_ms: start_ms,
        }
    }

    /// When it started.
    pub fn start_ms(&self) -> i64 {
        self.id.start_ms
    }

    /// True once the alarm has fired.
    pub fn has_fired(&self) -> bool {
        self.fires_ms.is_some()
    }

    /// Fired and not cleared.
    pub fn is_active(&self) -> bool {
        self.fires_ms.is_some() && self.cleared_ms.is_none()
    }

    /// From start to clearing, or to the last moment covered.
    pub fn duration_ms(&self) -> i64 {
        self.cleared_ms.unwrap_or(self.last_ms) - self.id.start_ms
    }
}

/// Sorts conditions by start, then kind: the order every evaluation returns.
pub(crate) fn sort(conds: &mut [Condition]) {
    conds.sort_by_key(|c| (c.id.start_ms, c.id.kind));
}

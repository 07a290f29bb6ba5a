//! Alerts as data: a fired condition becomes one alert, with a lifecycle
//! `open -> acknowledged (who, comment) -> resolved`; later data revises
//! its facts or withdraws it, in the open (see [`crate::alarm::revision`]).
//!
//! An alert is resolved when a person has acknowledged it *and* its condition
//! has cleared: nobody misses an alarm because the temperature came back.
//! Where alerts are stored, delivered and escalated is the daemon's business.

use serde::{Deserialize, Serialize};

use crate::alarm::{Condition, ConditionId, ConditionKind};
use crate::profile::{Profile, Severity, Side};

/// Lifecycle state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised, not yet acknowledged.
    Open,
    /// A person has acknowledged it; the condition is still active.
    Acknowledged,
    /// Acknowledged and the condition has cleared.
    Resolved,
    /// Later data disproved it (see [`Alert::withdrawn`]). Kept, never deleted.
    Withdrawn,
}

/// The facts an alert shows, as they stood at one moment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertFacts {
    /// When the condition started (device time), ms.
    pub start_ms: i64,
    /// When it fired (device time), ms.
    pub fires_ms: i64,
    /// When it cleared (device time), if it had.
    pub cleared_ms: Option<i64>,
    /// Worst value.
    pub peak: Option<i32>,
    /// Time beyond the limit, ms.
    pub beyond_ms: i64,
    /// The sentence shown.
    pub message: String,
}

/// A revision: when, and the facts shown before it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// When the daemon revised it (its clock), ms.
    pub at_ms: i64,
    /// The facts shown until then.
    pub was: AlertFacts,
}

/// Why and when an alert was withdrawn.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// When (daemon clock), ms.
    pub at_ms: i64,
    /// Why, for people.
    pub reason: String,
}

/// What [`Alert::take_facts`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed.
    None,
    /// The open condition grew (longer, worse, cleared): stored, no event.
    Progress,
    /// Facts already shown changed: a revision event.
    Revised,
}

/// A person's acknowledgement.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who.
    pub by: String,
    /// Their comment.
    pub comment: String,
    /// When, ms.
    pub at_ms: i64,
}

/// An alert.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Numeric id, unique in this daemon.
    pub id: u64,
    /// The shipment.
    pub shipment: String,
    /// The condition's identity (kind and start in device time).
    pub condition: ConditionId,
    /// Severity.
    pub severity: Severity,
    /// A sentence for people.
    pub message: String,
    /// Lifecycle state.
    pub state: AlertState,
    /// When the daemon raised it (its clock), ms.
    pub raised_ms: i64,
    /// When the condition fired (device time), ms.
    pub fires_ms: i64,
    /// When the condition cleared (device time), if it has.
    pub cleared_ms: Option<i64>,
    /// Worst value (see [`Condition::peak`]).
    pub peak: Option<i32>,
    /// Time beyond the limit so far, ms.
    pub beyond_ms: i64,
    /// The acknowledgement.
    pub ack: Option<Acknowledgement>,
    /// When it was resolved (daemon clock), ms.
    pub resolved_ms: Option<i64>,
    /// How many times it was escalated.
    pub escalations: u32,
    /// When it was last escalated (daemon clock), ms.
    pub escalated_ms: Option<i64>,
    /// The last moment the condition's data covered (device time), ms.
    #[serde(default)]
    pub last_ms: i64,
    /// Earlier facts, oldest first: one entry per revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<Revision>,
    /// Set when later data disproved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<Withdrawal>,
}

impl Alert {
    /// The facts it shows now.
    pub fn facts(&self) -> AlertFacts {
        AlertFacts {
            start_ms: self.condition.start_ms,
            fires_ms: self.fires_ms,
            cleared_ms: self.cleared_ms,
            peak: self.peak,
            beyond_ms: self.beyond_ms,
            message: self.message.clone(),
        }
    }

    /// Not resolved and not withdrawn: someone may still need to act.
    pub fn is_open(&self) -> bool {
        matches!(self.state, AlertState::Open | AlertState::Acknowledged)
    }

    /// Takes the current facts of its condition and the sentence describing
    /// them. An open condition growing (more time beyond, a worse peak,
    /// clearing) is progress; any other change is a revision, recorded with
    /// the facts shown before.
    pub fn take_facts(&mut self, c: &Condition, message: String, now_ms: i64) -> Change {
        let before = self.facts();
        let fires_ms = c.fires_ms.unwrap_or(c.id.start_ms);
        let worse_or_same = |old: Option<i32>, new: Option<i32>| match (old, new) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(n)) => match c.id.kind {
                ConditionKind::Zone(z) if z.side() == crate::profile::Side::Low => n <= o,
                ConditionKind::BatteryLow => n <= o,
                _ => n >= o,
            },
        };
        let progress = before.start_ms == c.id.start_ms
            && before.fires_ms == fires_ms
            && before.cleared_ms.is_none()
            && c.beyond_ms >= before.beyond_ms
            && worse_or_same(before.peak, c.peak);
        self.condition = c.id;
        self.severity = c.severity;
        self.fires_ms = fires_ms;
        self.cleared_ms = c.cleared_ms;
        self.peak = c.peak;
        self.beyond_ms = c.beyond_ms;
        self.last_ms = c.last_ms;
        self.message = message;
        if self.state == AlertState::Resolved && self.cleared_ms.is_none() {
            // Later data shows it never cleared: back to acknowledged.
            self.state = AlertState::Acknowledged;
            self.resolved_ms = None;
        }
        let after = self.facts();
        if after == before {
            Change::None
        } else if progress {
            Change::Progress
        } else {
            self.revisions.push(Revision {
                at_ms: now_ms,
                was: before,
            });
            Change::Revised
        }
    }

    /// Withdraws it: later data disproved it.
    pub fn withdraw(&mut self, reason: String, now_ms: i64) {
        self.state = AlertState::Withdrawn;
        self.withdrawn = Some(Withdrawal {
            at_ms: now_ms,
            reason,
        });
    }

    /// Resolves it if acknowledged and cleared; true if that happened now.
    pub fn maybe_resolve(&mut self, now_ms: i64) -> bool {
        if self.state == AlertState::Acknowledged && self.cleared_ms.is_some() {
            self.state = AlertState::Resolved;
            self.resolved_ms = Some(now_ms);
            return true;
        }
        false
    }
}

/// A sentence for people about a condition.
pub fn describe(c: &Condition, profile: &Profile) -> String {
    let t = |m: i32| format!("{:.1} °C", f64::from(m) / 1000.0);
    match c.id.kind {
        ConditionKind::Zone(z) => {
            let zone = profile.zone(z);
            let limit = zone.map(|z| format!("{}", z.limit)).unwrap_or_default();
            let side = if z.side() == Side::High {
                "peak"
            } else {
                "lowest"
            };
            format!(
                "{z}: temperature {limit} for {} min ({side} {})",
                c.beyond_ms / 60_000,
                c.peak.map(t).unwrap_or_else(|| "n/a".into())
            )
        }
        ConditionKind::ProbeFault => {
            "probe fault: the probe reports a fault, not a temperature".into()
        }
        ConditionKind::Silent => "the device has gone silent".into(),
        ConditionKind::BatteryLow => "battery low".into(),
        ConditionKind::ClockUnsynced => "device clock not synced: times are estimated".into(),
        ConditionKind::LidOpen => format!("lid open for {} min", c.beyond_ms / 60_000),
        ConditionKind::Tilt => format!(
            "container tilted beyond its limit for {} min",
            c.beyond_ms / 60_000
        ),
        ConditionKind::Tamper => "frames with bad tags or sequence anomalies".into(),
        ConditionKind::StorageFull => "the edge daemon's storage is over its disk budget: new data is not being stored (the broker keeps it) until space is made".into(),
        ConditionKind::ViabilityWarning => {
            "viability window predicted at ETA is below the margin".into()
        }
        ConditionKind::ViabilityGone => "viability window used up".into(),
        ConditionKind::HoldTime => {
            "hold time: the product is predicted to cross its limit before arrival (see the shipment's hold time at ETA)".into()
        }
        ConditionKind::CalibrationExpired => {
            "a watching probe's calibration certificate has expired: its readings are corrected by an out-of-date certificate".into()
        }
        ConditionKind::Trend => format!(
            "warming trend: the critical limit will be reached within hours (now {})",
            c.peak.map(t).unwrap_or_else(|| "n/a".into())
        ),
    }
}

//! The alarm engine: from a profile, the samples of a shipment in device time and
//! the shipment's facts, the list of conditions (zone excursions and data-health
//! problems), each with a stable identity.
//!
//! Evaluation is a pure function of the *set* of samples: a [`Series`] sorts by
//! device time and merges identical timestamps deterministically, so the same
//! readings arriving in any order, in any batches, with any duplicates, give the
//! same conditions. A caller keeps the alarm state by storing conditions by
//! [`ConditionId`]; re-evaluating after a restart or a replay yields the same ids,
//! so nothing is raised twice, and a condition that began while the daemon was
//! down is found when its data arrives.
//!
//! # Conventions
//!
//! * A limit states its comparison; exactly at the limit obeys it (`>= 30.0`
//!   triggers at 30.0, `> 8.0` does not trigger at 8.0).
//! * Exactly at the delay fires.
//! * A sample's value stands from its time until the next sample, for at most
//!   `max_gap_ms`; the rest of a longer gap is *unknown* time: it is not counted
//!   beyond any limit, and it does not reset a single-event counter either (a
//!   gap proves nothing either way). The silence condition reports the gap.
//! * A fault sample is never a temperature: it starts unknown time and a
//!   probe-fault condition.
//! * The settle period after departure suppresses zones; time in it does not
//!   count. An excursion under way when it ends starts at its end.
//! * Hysteresis governs when a condition *clears*; time beyond and the
//!   single-event counter use the limit itself. See [`Condition`].
#![deny(missing_docs)]

mod condition;
pub mod health;
mod input;
pub mod revision;
pub mod trend;
pub mod warming;
pub(crate) mod zone;

pub use condition::{Condition, ConditionId, ConditionKind};
pub use input::{
    Inserted, LiveArrival, Sample, SampleValue, Segment, SegmentRule, Series, ShipmentFacts,
};

use crate::profile::Profile;

/// Zone conditions of every zone of the profile, plus the probe-fault and
/// record-gap conditions from the samples, sorted by start then kind.
///
/// Not-yet-fired excursions are included (with `fires_ms: None`); alert on
/// [`Condition::has_fired`].
pub fn evaluate(profile: &Profile, series: &Series, facts: &ShipmentFacts) -> Vec<Condition> {
    let segs = series.known_segments(facts.zones_from_ms(), facts.end_ms, facts.max_gap_ms);
    let mut out: Vec<Condition> = profile
        .zones
        .iter()
        .flat_map(|z| zone::evaluate(z, &segs))
        .collect();
    out.extend(health::probe_faults(series, &profile.health, facts));
    out.extend(health::record_gaps(series, &profile.health, facts));
    condition::sort(&mut out);
    out
}

/// [`evaluate`] plus [`health::from_inputs`]: everything, sorted by start then kind.
pub fn evaluate_all(
    profile: &Profile,
    series: &Series,
    inputs: &health::HealthInputs<'_>,
    facts: &ShipmentFacts,
) -> Vec<Condition> {
    let mut out = evaluate(profile, series, facts);
    out.extend(health::from_inputs(inputs, &profile.health, facts));
    condition::sort(&mut out);
    out
}

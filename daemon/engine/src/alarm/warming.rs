//! Cryogenic lanes: warming events above the critical limit, and the time above it.

use serde::{Deserialize, Serialize};

use crate::profile::{Limit, Profile};

use super::input::{Series, ShipmentFacts};

/// Warming summary of a cryogenic shipment. Repeated warming cycles reduce
/// recovery (docs/domain.md §1), so the count matters as well as the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmingSummary {
    /// The critical limit used.
    pub limit: Limit,
    /// Number of warming events: entries beyond the limit, a new one counted only
    /// after the value has cleared the limit by the hysteresis.
    pub events: u32,
    /// Total time strictly beyond the limit, ms (unknown time excluded).
    pub time_above_ms: i64,
    /// Warmest valid reading beyond the limit, milli-°C.
    pub peak_milli_c: Option<i32>,
    /// Start of the first warming event, device ms.
    pub first_ms: Option<i64>,
    /// True when the latest known value is beyond the limit.
    pub above_now: bool,
}

/// The warming summary, for a profile with a warming limit; `None` otherwise.
/// Counted from the end of the settle period, like the zones.
pub fn summary(
    profile: &Profile,
    series: &Series,
    facts: &ShipmentFacts,
) -> Option<WarmingSummary> {
    let spec = profile.warming?;
    let segs = series.known_segments(facts.zones_from_ms(), facts.end_ms, facts.max_gap_ms);
    let mut out = WarmingSummary {
        limit: spec.limit,
        events: 0,
        time_above_ms: 0,
        peak_milli_c: None,
        first_ms: None,
        above_now: false,
    };
    let mut in_event = false;
    for s in &segs {
        let beyond = spec.limit.is_beyond(s.milli_c);
        if beyond {
            if !in_event {
                out.events += 1;
                in_event = true;
                out.first_ms.get_or_insert(s.start_ms);
            }
            out.time_above_ms += s.len_ms();
            out.peak_milli_c = Some(out.peak_milli_c.map_or(s.milli_c, |p| p.max(s.milli_c)));
        } else if spec.limit.is_cleared(s.milli_c, spec.hysteresis.0) {
            in_event = false;
        }
        out.above_now = beyond;
    }
    Some(out)
}

//! Zone evaluation: single-event and cumulative, over known segments.

use crate::profile::{Side, Zone, ZoneKind};

use super::condition::{Condition, ConditionKind};
use super::input::Segment;

fn worse(side: Side, a: Option<i32>, v: i32) -> Option<i32> {
    Some(match (side, a) {
        (_, None) => v,
        (Side::High, Some(p)) => p.max(v),
        (Side::Low, Some(p)) => p.min(v),
    })
}

/// If `counted` ms had been counted before a stretch of `len` ms starting at
/// `start`, when (if in this stretch) does the count reach `delay`? Exactly at the
/// delay fires.
fn reaches(counted: i64, len: i64, start: i64, delay: i64) -> Option<i64> {
    // Callers only ask while the count has not fired, i.e. `counted < delay`, or
    // `counted == 0 == delay` at the very start.
    (counted + len >= delay).then(|| start + (delay - counted))
}

/// Evaluates one zone over `segs` (already clipped to the settle-adjusted range).
pub(crate) fn evaluate(zone: &Zone, segs: &[Segment]) -> Vec<Condition> {
    match zone.kind {
        ZoneKind::Single => single(zone, segs),
        ZoneKind::Cumulative => cumulative(zone, segs),
    }
}

/// Single-event: an episode opens when the value goes beyond the limit and closes
/// when it clears the limit by the hysteresis. Inside an episode, the counter of
/// consecutive time beyond resets whenever the value is back within the limit
/// (strictly, without hysteresis: that is the convention); the episode fires the
/// first time the counter reaches the delay. Hysteresis thus merges a chattering
/// excursion into one condition, one identity, one alarm.
///
/// Unknown time (gaps, faults) neither counts nor resets the counter.
fn single(zone: &Zone, segs: &[Segment]) -> Vec<Condition> {
    let side = zone.id.side();
    let mut out = Vec::new();
    let mut ep: Option<Condition> = None;
    let mut run: i64 = 0;
    let mut in_run = false;
    for s in segs {
        let len = s.len_ms();
        if zone.limit.is_beyond(s.milli_c) {
            let c = ep.get_or_insert_with(|| {
                Condition::new(ConditionKind::Zone(zone.id), zone.severity, s.start_ms)
            });
            if !in_run {
                c.excursions += 1;
                in_run = true;
                run = 0;
            }
            c.peak = worse(side, c.peak, s.milli_c);
            c.beyond_ms += len;
            if c.fires_ms.is_none() {
                c.fires_ms = reaches(run, len, s.start_ms, zone.delay_ms);
            }
            run += len;
            c.last_ms = s.end_ms;
        } else {
            in_run = false;
            run = 0;
            if let Some(c) = ep.as_mut() {
                if zone.limit.is_cleared(s.milli_c, zone.hysteresis.0) {
                    c.cleared_ms = Some(s.start_ms);
                    c.last_ms = s.start_ms;
                    out.extend(ep.take());
                } else {
                    c.last_ms = s.end_ms;
                }
            }
        }
    }
    out.extend(ep);
    out
}

/// Cumulative: one condition per zone per shipment, starting with the first
/// excursion; time beyond the limit is summed and never reset, and the condition
/// fires the moment the sum reaches the delay.
fn cumulative(zone: &Zone, segs: &[Segment]) -> Vec<Condition> {
    let side = zone.id.side();
    let mut cond: Option<Condition> = None;
    let mut in_excursion = false;
    for s in segs {
        let len = s.len_ms();
        if zone.limit.is_beyond(s.milli_c) {
            let c = cond.get_or_insert_with(|| {
                Condition::new(ConditionKind::Zone(zone.id), zone.severity, s.start_ms)
            });
            if !in_excursion {
                c.excursions += 1;
                in_excursion = true;
            }
            c.cleared_ms = None;
            c.peak = worse(side, c.peak, s.milli_c);
            if c.fires_ms.is_none() {
                c.fires_ms = reaches(c.beyond_ms, len, s.start_ms, zone.delay_ms);
            }
            c.beyond_ms += len;
            c.last_ms = s.end_ms;
        } else {
            in_excursion = false;
            if let Some(c) = cond.as_mut() {
                if c.cleared_ms.is_none() && zone.limit.is_cleared(s.milli_c, zone.hysteresis.0) {
                    c.cleared_ms = Some(s.start_ms);
                }
                c.last_ms = s.end_ms;
            }
        }
    }
    cond.into_iter().collect()
}

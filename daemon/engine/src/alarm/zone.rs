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
    let mut f = ZoneFold::new(zone);
    for s in segs {
        f.push(s);
    }
    f.finish()
}

/// One zone's evaluation as a fold over segments in time order: the state can
/// be kept and resumed when later segments arrive (see `crate::tracker`), and
/// [`evaluate`] is the same fold over all segments at once.
#[derive(Debug, Clone)]
pub(crate) enum ZoneFold {
    /// Single-event.
    Single(SingleFold),
    /// Cumulative.
    Cumulative(CumulativeFold),
}

impl ZoneFold {
    pub(crate) fn new(zone: &Zone) -> Self {
        match zone.kind {
            ZoneKind::Single => ZoneFold::Single(SingleFold {
                zone: zone.clone(),
                out: Vec::new(),
                ep: None,
                run: 0,
                in_run: false,
            }),
            ZoneKind::Cumulative => ZoneFold::Cumulative(CumulativeFold {
                zone: zone.clone(),
                cond: None,
                in_excursion: false,
            }),
        }
    }

    pub(crate) fn push(&mut self, s: &Segment) {
        match self {
            ZoneFold::Single(f) => f.push(s),
            ZoneFold::Cumulative(f) => f.push(s),
        }
    }

    pub(crate) fn finish(self) -> Vec<Condition> {
        match self {
            ZoneFold::Single(f) => {
                let mut out = f.out;
                out.extend(f.ep);
                out
            }
            ZoneFold::Cumulative(f) => f.cond.into_iter().collect(),
        }
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
#[derive(Debug, Clone)]
pub(crate) struct SingleFold {
    zone: Zone,
    out: Vec<Condition>,
    ep: Option<Condition>,
    run: i64,
    in_run: bool,
}

impl SingleFold {
    fn push(&mut self, s: &Segment) {
        let zone = &self.zone;
        let side = zone.id.side();
        let len = s.len_ms();
        if zone.limit.is_beyond(s.milli_c) {
            let c = self.ep.get_or_insert_with(|| {
                Condition::new(ConditionKind::Zone(zone.id), zone.severity, s.start_ms)
            });
            if !self.in_run {
                c.excursions += 1;
                self.in_run = true;
                self.run = 0;
            }
            c.peak = worse(side, c.peak, s.milli_c);
            c.beyond_ms += len;
            if c.fires_ms.is_none() {
                c.fires_ms = reaches(self.run, len, s.start_ms, zone.delay_ms);
            }
            self.run += len;
            c.last_ms = s.end_ms;
        } else {
            self.in_run = false;
            self.run = 0;
            if let Some(c) = self.ep.as_mut() {
                if zone.limit.is_cleared(s.milli_c, zone.hysteresis.0) {
                    c.cleared_ms = Some(s.start_ms);
                    c.last_ms = s.start_ms;
                    self.out.extend(self.ep.take());
                } else {
                    c.last_ms = s.end_ms;
                }
            }
        }
    }
}

/// Cumulative: one condition per zone per shipment, starting with the first
/// excursion; time beyond the limit is summed and never reset, and the condition
/// fires the moment the sum reaches the delay.
#[derive(Debug, Clone)]
pub(crate) struct CumulativeFold {
    zone: Zone,
    cond: Option<Condition>,
    in_excursion: bool,
}

impl CumulativeFold {
    fn push(&mut self, s: &Segment) {
        let zone = &self.zone;
        let side = zone.id.side();
        let len = s.len_ms();
        if zone.limit.is_beyond(s.milli_c) {
            let c = self.cond.get_or_insert_with(|| {
                Condition::new(ConditionKind::Zone(zone.id), zone.severity, s.start_ms)
            });
            if !self.in_excursion {
                c.excursions += 1;
                self.in_excursion = true;
            }
            c.cleared_ms = None;
            c.peak = worse(side, c.peak, s.milli_c);
            if c.fires_ms.is_none() {
                c.fires_ms = reaches(c.beyond_ms, len, s.start_ms, zone.delay_ms);
            }
            c.beyond_ms += len;
            c.last_ms = s.end_ms;
        } else {
            self.in_excursion = false;
            if let Some(c) = self.cond.as_mut() {
                if c.cleared_ms.is_none() && zone.limit.is_cleared(s.milli_c, zone.hysteresis.0) {
                    c.cleared_ms = Some(s.start_ms);
                }
                c.last_ms = s.end_ms;
            }
        }
    }
}

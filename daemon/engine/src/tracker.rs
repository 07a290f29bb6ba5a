//! Incremental evaluation of one shipment: the same conditions and figures as
//! evaluating all of its data at once, with work proportional to new data.
//!
//! Every condition of the engine is a fold over its inputs in device-time
//! order (zones over the segments of the evidence rule, probe faults, record
//! gaps and trend over samples, lid, tilt, battery and clock over their
//! observations, viability over segments). A [`Tracker`] keeps those folds'
//! states for everything older than its *watermark*, and the newest inputs
//! (a few dozen samples) in a tail. A view folds copies of the states over the
//! tail and finishes them, so it costs the tail, not the history.
//!
//! A sample's segment depends on the sample after it, so the tail always keeps
//! the newest samples; [`Tracker::commit`] folds in what is older than the
//! newest `keep` samples. Data older than the watermark cannot be folded in
//! (it would change segments already counted): [`Tracker::push_sample`] and
//! the other pushes refuse it with [`Stale`], and the caller builds a new
//! tracker from all the data. A tracker that never commits evaluates
//! everything at its view: that is the one-shot evaluation the report uses, so
//! the live path and the report share one piece of code, and the schedule
//! property test (`daemon/tests/alarm_schedule.rs`) checks that committing
//! never changes an answer.

use crate::alarm::health::{
    self, BatteryFold, BatteryReading, ClockFold, ClockObservation, FaultFold, GapFold,
    IntegrityCounts, StateFold, TimedEvent,
};
use crate::alarm::trend::{TrendFold, TrendSpec};
use crate::alarm::{
    Condition, LiveArrival, Sample, SampleValue, SegmentRule, Series, ShipmentFacts,
};
use crate::profile::{Profile, Severity, Side};
use crate::viability::{ViabilityFold, ViabilityOutcome};

/// How far after the horizon samples still belong to the record (a device
/// clock slightly ahead of the receiver's).
pub const AHEAD_MS: i64 = 60_000;

/// Where the record of a shipment starts before its departure (the product
/// is packed and the probe settles before the shipment departs).
pub const BEFORE_DEPARTURE_MS: i64 = 3_600_000;

/// Input older than the tracker's watermark: build a new tracker from all
/// the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// The input's device time, ms.
    pub t_ms: i64,
    /// The watermark, ms.
    pub watermark_ms: i64,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "input at {} is older than the incremental state ({})",
            self.t_ms, self.watermark_ms
        )
    }
}

/// One reading as counted (not merged: two probes reading the same instant
/// are two readings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    t_ms: i64,
    fault: bool,
    synced: bool,
}

/// The folds, at the watermark.
#[derive(Debug, Clone)]
struct Folds {
    zones: Vec<crate::alarm::zone::ZoneFold>,
    faults: FaultFold,
    gaps: GapFold,
    trend: Option<TrendFold>,
    viability: Option<ViabilityFold>,
    lid: Option<StateFold>,
    tilt: Option<StateFold>,
    battery: Option<BatteryFold>,
    clock: ClockFold,
    /// Time-weighted sum of known temperatures and the time, from departure.
    wsum: f64,
    tsum: f64,
    readings: usize,
    faulted: usize,
    estimated: usize,
    min: Option<i32>,
    max: Option<i32>,
    /// The newest folded sample, and the newest valid one.
    newest: Option<Sample>,
    last_valid: Option<Sample>,
    data_until: Option<i64>,
    /// The valid samples of the last [`RECENT_MS`], on lanes that predict a
    /// dry shipper's hold time.
    recent: Option<std::collections::VecDeque<(i64, i32)>>,
}

/// What a view of a shipment says (the live status and the alarms).
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Every condition found, fired or not, sorted by start then kind (storage
    /// episodes, which come from the daemon, are not among them).
    pub conditions: Vec<Condition>,
    /// Readings counted (every probe's, in the record's range).
    pub readings: usize,
    /// Fault readings among them.
    pub faults: usize,
    /// Readings with an estimated time.
    pub estimated: usize,
    /// The newest valid sample.
    pub last: Option<Sample>,
    /// Lowest and highest valid temperature, milli-°C.
    pub min_milli_c: Option<i32>,
    /// Highest valid temperature, milli-°C.
    pub max_milli_c: Option<i32>,
    /// Time-weighted mean over known time since departure, milli-°C.
    pub mean_milli_c: Option<i32>,
    /// The viability window.
    pub viability: ViabilityOutcome,
    /// The newest moment anything was reported (the evidence rule for states).
    pub data_until_ms: Option<i64>,
    /// Valid samples of the last [`RECENT_MS`] before the newest, in time
    /// order, on cryogenic lanes with a nominal maximum (the hold-time
    /// prediction's input); empty elsewhere.
    pub recent: Vec<(i64, i32)>,
}

/// How much recent history a view carries for the hold-time prediction (its
/// fit looks at most one day back from the newest reading; twice that finds
/// when a shipper that has crossed its limit crossed it).
pub const RECENT_MS: i64 = 48 * 3_600_000;

/// The incremental state of one shipment. See the module documentation.
#[derive(Debug, Clone)]
pub struct Tracker {
    profile: Profile,
    /// The shipment's facts; `end_ms` is its arrival (`None` while live).
    facts: ShipmentFacts,
    /// Samples before this are not part of the record.
    lo_ms: i64,
    folds: Folds,
    watermark: i64,
    /// The latest horizon folded at: a view never looks at an earlier one
    /// (a receiver clock stepped back), since what lies after it is folded.
    horizon: i64,
    tail: Series,
    marks: Vec<Mark>,
    events: Vec<TimedEvent>,
    battery: Vec<BatteryReading>,
}

/// The critical high limit a cryogenic lane's trend predicts towards: its
/// warming limit, else its first critical high zone. Fresh products have
/// their viability window instead.
pub fn trend_limit(p: &Profile) -> Option<crate::profile::Limit> {
    if !p.cryogenic {
        return None;
    }
    p.warming.map(|w| w.limit).or_else(|| {
        p.zones
            .iter()
            .filter(|z| z.id.side() == Side::High && z.severity == Severity::Critical)
            .map(|z| z.limit)
            .next()
    })
}

impl Tracker {
    /// A tracker with no data. `facts.end_ms` is the arrival of an arrived
    /// shipment and `None` for a live one (its horizon is given to each view);
    /// `facts.live` and `facts.data_until_ms` are ignored (views compute them).
    /// `created_ms` bounds the record when the shipment has not departed.
    pub fn new(profile: Profile, facts: ShipmentFacts, created_ms: i64) -> Self {
        let mut facts = facts;
        facts.live = None;
        facts.data_until_ms = None;
        let h = &profile.health;
        let folds = Folds {
            zones: profile
                .zones
                .iter()
                .map(crate::alarm::zone::ZoneFold::new)
                .collect(),
            faults: FaultFold::new(h),
            gaps: GapFold::new(h, &facts),
            trend: trend_limit(&profile).map(|l| TrendFold::new(TrendSpec::for_limit(l))),
            viability: ViabilityFold::new(&profile, &facts),
            lid: h.lid_open_max_ms.map(StateFold::lid),
            tilt: h.tilt.map(StateFold::tilt),
            battery: h.battery_low_mv.map(BatteryFold::new),
            clock: ClockFold::default(),
            wsum: 0.0,
            tsum: 0.0,
            readings: 0,
            faulted: 0,
            estimated: 0,
            min: None,
            max: None,
            newest: None,
            last_valid: None,
            data_until: None,
            recent: (profile.cryogenic && profile.nominal.max.is_some())
                .then(std::collections::VecDeque::new),
        };
        Tracker {
            lo_ms: facts.departure_ms.unwrap_or(created_ms) - BEFORE_DEPARTURE_MS,
            profile,
            facts,
            folds,
            watermark: i64::MIN,
            horizon: i64::MIN,
            tail: Series::new(),
            marks: Vec::new(),
            events: Vec::new(),
            battery: Vec::new(),
        }
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The facts it was built with.
    pub fn facts(&self) -> &ShipmentFacts {
        &self.facts
    }

    /// Inputs older than this are [`Stale`].
    pub fn watermark_ms(&self) -> i64 {
        self.watermark
    }

    /// Samples not yet folded.
    pub fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Whether an input at `t_ms` belongs to the shipment's record (from an
    /// hour before departure to just after arrival).
    pub fn in_record(&self, t_ms: i64) -> bool {
        t_ms >= self.lo_ms
            && self
                .facts
                .end_ms
                .is_none_or(|e| t_ms <= e.saturating_add(AHEAD_MS))
    }

    fn check(&self, t_ms: i64) -> Result<bool, Stale> {
        if !self.in_record(t_ms) {
            return Ok(false);
        }
        if t_ms < self.watermark {
            return Err(Stale {
                t_ms,
                watermark_ms: self.watermark,
            });
        }
        Ok(true)
    }

    /// A reading of a watched channel: its value (a fault is never a
    /// temperature) and whether its time came from a synced clock.
    pub fn push_sample(&mut self, s: Sample, synced: bool) -> Result<(), Stale> {
        if self.check(s.t_ms)? {
            self.tail.insert(s);
            self.marks.push(Mark {
                t_ms: s.t_ms,
                fault: matches!(s.value, SampleValue::Fault(_)),
                synced,
            });
        }
        Ok(())
    }

    /// A device event.
    pub fn push_event(&mut self, e: TimedEvent) -> Result<(), Stale> {
        if self.check(e.t_ms)? {
            self.events.push(e);
        }
        Ok(())
    }

    /// A battery voltage (a status heartbeat).
    pub fn push_battery(&mut self, b: BatteryReading) -> Result<(), Stale> {
        if self.check(b.t_ms)? {
            self.battery.push(b);
        }
        Ok(())
    }

    /// Folds in everything older than the newest `keep` samples that are at
    /// or before `horizon_ms` (the receiver's now, or the arrival), moving the
    /// watermark up to the oldest sample kept.
    pub fn commit(&mut self, keep: usize, horizon_ms: i64) {
        let horizon_ms = horizon_ms.max(self.horizon);
        let horizon_ms = self.facts.end_ms.map_or(horizon_ms, |e| e.min(horizon_ms));
        let eligible: Vec<i64> = self
            .tail
            .range(i64::MIN, horizon_ms)
            .map(|s| s.t_ms)
            .collect();
        if eligible.len() <= keep.max(1) {
            return;
        }
        let w = eligible[eligible.len() - keep.max(1)];
        let mut facts = self.facts;
        facts.end_ms = Some(horizon_ms);
        let head = self.tail.take_before(w);
        let nexts: Vec<Option<i64>> = head
            .iter()
            .skip(1)
            .map(|s| Some(s.t_ms))
            .chain(std::iter::once(Some(w)))
            .collect();
        let hi = horizon_ms.saturating_add(AHEAD_MS);
        fold_samples(&mut self.folds, &facts, &head, &nexts, hi);
        let (marks, rest): (Vec<Mark>, Vec<Mark>) = self.marks.iter().partition(|m| m.t_ms < w);
        self.marks = rest;
        let (events, rest): (Vec<TimedEvent>, Vec<TimedEvent>) =
            self.events.iter().partition(|e| e.t_ms < w);
        self.events = rest;
        let (battery, rest): (Vec<BatteryReading>, Vec<BatteryReading>) =
            self.battery.iter().partition(|b| b.t_ms < w);
        self.battery = rest;
        fold_inputs(&mut self.folds, &facts, &marks, &events, &battery, hi);
        self.watermark = w;
        self.horizon = horizon_ms;
    }

    /// The shipment as of `horizon_ms` (the receiver's now for a live
    /// shipment; an arrived shipment is seen at its arrival), with what the
    /// receiver knows about arrivals (live silence) and the integrity counts.
    pub fn view(
        &self,
        horizon_ms: i64,
        live: Option<LiveArrival>,
        integrity: IntegrityCounts,
    ) -> View {
        let end = self
            .facts
            .end_ms
            .unwrap_or_else(|| horizon_ms.max(self.horizon));
        let hi = end.saturating_add(AHEAD_MS);
        let mut facts = self.facts;
        facts.end_ms = Some(end);
        let mut folds = self.folds.clone();
        let committed_newest = folds.newest;
        let tail: Vec<Sample> = self.tail.range(i64::MIN, hi).collect();
        let nexts: Vec<Option<i64>> = tail
            .iter()
            .skip(1)
            .map(|s| Some(s.t_ms))
            .chain(std::iter::once(None))
            .collect();
        fold_samples(&mut folds, &facts, &tail, &nexts, hi);
        fold_inputs(
            &mut folds,
            &facts,
            &self.marks,
            &self.events,
            &self.battery,
            hi,
        );
        facts.live = live;
        facts.data_until_ms = folds.data_until;
        let mut conditions: Vec<Condition> = Vec::new();
        for z in folds.zones {
            conditions.extend(z.finish());
        }
        conditions.extend(folds.faults.finish());
        conditions.extend(folds.gaps.finish(&facts));
        if let Some(f) = folds.lid {
            conditions.extend(f.finish(&facts));
        }
        if let Some(f) = folds.tilt {
            conditions.extend(f.finish(&facts));
        }
        if let Some(f) = folds.battery {
            conditions.extend(f.finish(&facts));
        }
        conditions.extend(folds.clock.finish(&facts));
        conditions.extend(health::tamper(&integrity, &facts));
        let viability = match folds.viability {
            Some(v) => {
                // The newest sample at or before the horizon.
                let newest = tail
                    .iter()
                    .rev()
                    .find(|s| s.t_ms <= end)
                    .copied()
                    .or(committed_newest);
                v.finish(newest, Some(end))
            }
            None => ViabilityOutcome::NotApplicable,
        };
        if let ViabilityOutcome::Computed(v) = &viability {
            conditions.extend(v.conditions.iter().cloned());
        }
        if let Some(t) = folds.trend {
            conditions.extend(t.finish());
        }
        conditions.sort_by_key(|c| (c.id.start_ms, c.id.kind));
        View {
            conditions,
            readings: folds.readings,
            faults: folds.faulted,
            estimated: folds.estimated,
            last: folds.last_valid,
            min_milli_c: folds.min,
            max_milli_c: folds.max,
            mean_milli_c: (folds.tsum > 0.0).then(|| (folds.wsum / folds.tsum).round() as i32),
            viability,
            data_until_ms: folds.data_until,
            recent: folds.recent.map(Vec::from).unwrap_or_default(),
        }
    }
}

/// Folds samples (in time order, each with the next sample's time) into
/// every sample-driven fold. `hi`: samples after it are not in the record.
fn fold_samples(
    f: &mut Folds,
    facts: &ShipmentFacts,
    samples: &[Sample],
    nexts: &[Option<i64>],
    hi: i64,
) {
    let zones = SegmentRule::new(facts.zones_from_ms(), facts.end_ms, facts.max_gap_ms);
    let mean = SegmentRule::new(facts.from_ms(), facts.end_ms, facts.max_gap_ms);
    for (s, next) in samples.iter().zip(nexts) {
        if s.t_ms > hi {
            continue;
        }
        let next = next.filter(|n| *n <= hi);
        if let Some(seg) = zones.segment(s.t_ms, s.value, next) {
            for z in &mut f.zones {
                z.push(&seg);
            }
        }
        if let Some(seg) = mean.segment(s.t_ms, s.value, next) {
            f.wsum += f64::from(seg.milli_c) * seg.len_ms() as f64;
            f.tsum += seg.len_ms() as f64;
        }
        f.faults.push(s.t_ms, s.value, facts);
        f.gaps.push(s.t_ms, facts);
        if let Some(t) = f.trend.as_mut() {
            t.push(s.t_ms, s.value, facts);
        }
        if let Some(v) = f.viability.as_mut() {
            v.push(s.t_ms, s.value, next, facts.end_ms);
        }
        if let (Some(r), Some(v)) = (f.recent.as_mut(), s.value.milli_c()) {
            r.push_back((s.t_ms, v));
            while r.front().is_some_and(|p| p.0 < s.t_ms - RECENT_MS) {
                r.pop_front();
            }
        }
        if let Some(v) = s.value.milli_c() {
            f.min = Some(f.min.map_or(v, |m| m.min(v)));
            f.max = Some(f.max.map_or(v, |m| m.max(v)));
            f.last_valid = Some(*s);
        }
        f.newest = Some(*s);
        f.data_until = Some(f.data_until.map_or(s.t_ms, |d| d.max(s.t_ms)));
    }
}

/// Folds readings' marks, events and battery readings (any order; sorted
/// here the way the folds take them) into their folds.
fn fold_inputs(
    f: &mut Folds,
    facts: &ShipmentFacts,
    marks: &[Mark],
    events: &[TimedEvent],
    battery: &[BatteryReading],
    hi: i64,
) {
    let mut obs = Vec::with_capacity(marks.len());
    for m in marks.iter().filter(|m| m.t_ms <= hi) {
        f.readings += 1;
        f.faulted += usize::from(m.fault);
        f.estimated += usize::from(!m.synced);
        obs.push(ClockObservation {
            t_ms: m.t_ms,
            synced: m.synced,
        });
    }
    for o in health::clock_inputs(&obs, facts) {
        f.clock.push(o);
    }
    let events: Vec<TimedEvent> = events.iter().copied().filter(|e| e.t_ms <= hi).collect();
    let battery: Vec<BatteryReading> = battery.iter().copied().filter(|b| b.t_ms <= hi).collect();
    for t in events
        .iter()
        .map(|e| e.t_ms)
        .chain(battery.iter().map(|b| b.t_ms))
    {
        f.data_until = Some(f.data_until.map_or(t, |d| d.max(t)));
    }
    let sorted = health::sorted_events(&events, facts);
    for e in &sorted {
        if let Some(l) = f.lid.as_mut() {
            l.push(e);
        }
        if let Some(t) = f.tilt.as_mut() {
            t.push(e);
        }
    }
    if let Some(b) = f.battery.as_mut() {
        for r in health::battery_inputs(&battery, &events, facts) {
            b.push(r);
        }
    }
}

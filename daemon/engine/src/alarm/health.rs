//! Data-health conditions: probe faults, silence, battery, clock, lid, tilt,
//! tampering. Each is a pure function of its inputs in device time.
//!
//! Default severities: probe fault, tampering critical; silence, battery, lid,
//! clock warning; tilt as configured in the profile.

use coldchain_proto::EventKind;
use serde::{Deserialize, Serialize};

use crate::profile::{HealthLimits, Severity, TiltLimit};

use super::condition::{Condition, ConditionKind, sort};
use super::input::{SampleValue, Series, ShipmentFacts};

/// A device event in device time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedEvent {
    /// Device unix ms.
    pub t_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// A battery voltage observation (a status heartbeat or a battery-low event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryReading {
    /// Device unix ms.
    pub t_ms: i64,
    /// Battery voltage, mV.
    pub mv: u16,
}

/// Whether the device clock was synced at a moment (from frame timestamps:
/// wall-clock stamps are synced, uptime stamps are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockObservation {
    /// Device unix ms (estimated when not synced).
    pub t_ms: i64,
    /// True when the stamp came from a synced clock.
    pub synced: bool,
}

/// Integrity counters kept by ingest for one device during a shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IntegrityCounts {
    /// Frames whose tag did not verify.
    pub bad_tags: u64,
    /// Sequence anomalies: a `(boot, seq)` going backwards with different content,
    /// a boot counter going backwards, a reused sequence number.
    pub sequence_anomalies: u64,
    /// Device time (or receive time if unknown) of the first anomaly.
    pub first_ms: Option<i64>,
}

/// All data-health inputs other than the samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthInputs<'a> {
    /// Device events (lid, tilt, battery-low, ...). Any order.
    pub events: &'a [TimedEvent],
    /// Battery readings. Any order.
    pub battery: &'a [BatteryReading],
    /// Clock observations. Any order.
    pub clock: &'a [ClockObservation],
    /// Integrity counters.
    pub integrity: IntegrityCounts,
}

/// A state that holds over a stretch of time and fires after a delay.
#[derive(Debug, Clone)]
struct Episode {
    c: Condition,
}

impl Episode {
    fn open(kind: ConditionKind, severity: Severity, t: i64) -> Self {
        Episode {
            c: Condition::new(kind, severity, t),
        }
    }

    /// Closes (`cleared = true`) or stops at `t`, and fires if it lasted `delay`.
    fn finish(mut self, t: i64, cleared: bool, delay: i64) -> Condition {
        let t = t.max(self.c.id.start_ms);
        if cleared {
            self.c.cleared_ms = Some(t);
        }
        self.c.last_ms = t;
        self.c.beyond_ms = t - self.c.id.start_ms;
        self.c.excursions = 1;
        if self.c.beyond_ms >= delay {
            self.c.fires_ms = Some(self.c.id.start_ms + delay);
        }
        self.c
    }
}

/// Probe faults: from a fault sample to the next valid sample. Fires after the
/// profile's `probe_fault_delay` (at once by default). Not suppressed by the
/// settle period. The evidence rule holds for faults as for temperatures: a
/// fault still open lasts until the newest sample, not until the horizon
/// (what follows is for the next sample to tell, or the silence alarm).
pub fn probe_faults(
    series: &Series,
    limits: &HealthLimits,
    facts: &ShipmentFacts,
) -> Vec<Condition> {
    let mut f = FaultFold::new(limits);
    for smp in series.iter() {
        f.push(smp.t_ms, smp.value, facts);
    }
    f.finish()
}

/// [`probe_faults`] as a fold over samples in time order.
#[derive(Debug, Clone)]
pub struct FaultFold {
    delay_ms: i64,
    out: Vec<Condition>,
    open: Option<Episode>,
    last_t: Option<i64>,
}

impl FaultFold {
    /// Before any sample.
    pub fn new(limits: &HealthLimits) -> Self {
        FaultFold {
            delay_ms: limits.probe_fault_delay_ms,
            out: Vec::new(),
            open: None,
            last_t: None,
        }
    }

    /// The next sample (outside `[from, end]` it is ignored).
    pub fn push(&mut self, t_ms: i64, value: SampleValue, facts: &ShipmentFacts) {
        if !in_range(t_ms, facts) {
            return;
        }
        self.last_t = Some(t_ms);
        match value {
            SampleValue::Fault(_) => {
                self.open.get_or_insert_with(|| {
                    Episode::open(ConditionKind::ProbeFault, Severity::Critical, t_ms)
                });
            }
            SampleValue::Valid(_) => {
                if let Some(e) = self.open.take() {
                    self.out.push(e.finish(t_ms, true, self.delay_ms));
                }
            }
        }
    }

    /// The conditions.
    pub fn finish(self) -> Vec<Condition> {
        let mut out = self.out;
        if let Some(e) = self.open {
            let until = self.last_t.unwrap_or(e.c.id.start_ms);
            out.push(e.finish(until, false, self.delay_ms));
        }
        out
    }
}

/// Inside `[from, end]` of the shipment.
fn in_range(t_ms: i64, facts: &ShipmentFacts) -> bool {
    t_ms >= facts.from_ms() && t_ms <= facts.end_ms.unwrap_or(i64::MAX)
}

/// Silence. Two different facts, kept apart:
///
/// * **Gaps in the record**: no sample (valid or fault) for
///   `silent_after_intervals` sampling intervals between two samples, or
///   between the newest sample and the horizon of an arrived shipment. They
///   are evidence for the report (its data-health silences) and never raise an
///   alarm: they are found after the fact, when the data that ends them has
///   arrived, and an alarm then would tell nobody anything in time.
/// * **Live silence** (`facts.live`, a shipment not yet arrived): nothing
///   newer has *arrived* for N times the longer of the sampling and upload
///   intervals after the newest sample did (see [`silent_now`]). That is the
///   silence alarm: raised while the device is silent, from the last sample.
///   It depends on arrival time by nature, so it is the one condition that is
///   not a function of the data alone; when data arrives again the daemon
///   clears it (it does not withdraw it: it was true when raised).
///
/// Conditions start at the last sample before the silence; a gap's
/// `fires_ms` is `None`, a live silence fires when the silence has lasted the
/// delay. Needs `facts.sample_interval_ms`.
pub fn record_gaps(
    series: &Series,
    limits: &HealthLimits,
    facts: &ShipmentFacts,
) -> Vec<Condition> {
    let mut f = GapFold::new(limits, facts);
    for smp in series.iter() {
        f.push(smp.t_ms, facts);
    }
    f.finish(facts)
}

/// [`record_gaps`] as a fold over sample times in order.
#[derive(Debug, Clone)]
pub struct GapFold {
    /// Sampling interval, ms (`None`: not checked).
    interval: Option<i64>,
    n: u32,
    out: Vec<Condition>,
    prev: Option<i64>,
}

impl GapFold {
    /// Before any sample.
    pub fn new(limits: &HealthLimits, facts: &ShipmentFacts) -> Self {
        GapFold {
            interval: facts.sample_interval_ms.filter(|i| *i > 0),
            n: limits.silent_after_intervals,
            out: Vec::new(),
            prev: None,
        }
    }

    fn threshold(&self, interval: i64) -> i64 {
        interval.saturating_mul(i64::from(self.n))
    }

    fn gap(&self, interval: i64, from: i64, to: i64, cleared: bool) -> Condition {
        let mut c = Episode::open(ConditionKind::Silent, Severity::Warning, from).finish(
            to,
            cleared,
            self.threshold(interval),
        );
        c.fires_ms = None;
        c
    }

    /// The next sample time (outside `[from, end]` it is ignored).
    pub fn push(&mut self, t_ms: i64, facts: &ShipmentFacts) {
        let Some(interval) = self.interval else {
            return;
        };
        if !in_range(t_ms, facts) {
            return;
        }
        if let Some(p) = self.prev
            && t_ms - p >= self.threshold(interval)
        {
            let g = self.gap(interval, p, t_ms, true);
            self.out.push(g);
        }
        self.prev = Some(t_ms);
    }

    /// The conditions, with the silence up to the horizon.
    pub fn finish(self, facts: &ShipmentFacts) -> Vec<Condition> {
        let Some(interval) = self.interval else {
            return Vec::new();
        };
        let mut out = self.out.clone();
        if let (Some(p), Some(end)) = (self.prev, facts.end_ms) {
            match facts.live {
                // Live, a device that batches samples into uploads is not silent
                // between uploads: silent once nothing newer has arrived for N
                // intervals (the longer of sampling and upload) after the newest
                // sample did. The condition still starts at the last sample.
                Some(l) => {
                    let n = i64::from(self.n);
                    let fires = l.newest_sample_received_ms.max(p)
                        + interval.max(l.upload_interval_ms).saturating_mul(n);
                    if end >= fires {
                        out.push(
                            Episode::open(ConditionKind::Silent, Severity::Warning, p).finish(
                                end,
                                false,
                                fires - p,
                            ),
                        );
                    }
                }
                None if end - p >= self.threshold(interval) => {
                    out.push(self.gap(interval, p, end, false))
                }
                None => {}
            }
        }
        out
    }
}

/// True when nothing has been heard from a device for `n` sampling intervals:
/// `now_ms - last_heard_ms >= n × interval_ms`, both by the receiver's clock.
pub fn silent_now(last_heard_ms: i64, now_ms: i64, interval_ms: i64, n: u32) -> bool {
    now_ms.saturating_sub(last_heard_ms) >= interval_ms.saturating_mul(i64::from(n))
}

fn event_rank(k: &EventKind) -> (u8, u64) {
    match *k {
        EventKind::LidOpened => (0, 0),
        EventKind::LidClosed => (1, 0),
        EventKind::Tilt { angle_deg } => (2, u64::from(angle_deg)),
        EventKind::TiltCleared => (3, 0),
        EventKind::Shock { peak_mg } => (4, u64::from(peak_mg)),
        EventKind::BatteryLow { mv } => (5, u64::from(mv)),
        EventKind::Boot => (6, 0),
        EventKind::ClockSynced { unix_ms, .. } => (7, unix_ms),
        EventKind::QueueOverflow { dropped } => (8, u64::from(dropped)),
    }
}

/// Events in `[from, end]`, in the order folds take them: by time, then
/// kind, duplicates removed.
pub fn sorted_events(events: &[TimedEvent], facts: &ShipmentFacts) -> Vec<TimedEvent> {
    let mut v: Vec<TimedEvent> = events
        .iter()
        .copied()
        .filter(|e| in_range(e.t_ms, facts))
        .collect();
    sort_events(&mut v);
    v
}

/// Sorts events the way folds take them (by time, then kind) and removes
/// duplicates.
pub fn sort_events(v: &mut Vec<TimedEvent>) {
    v.sort_by_key(|e| (e.t_ms, event_rank(&e.kind)));
    v.dedup();
}

/// Lid open: from an opening to the next closing; fires after `max_ms`.
pub fn lid_open(events: &[TimedEvent], max_ms: i64, facts: &ShipmentFacts) -> Vec<Condition> {
    let mut f = StateFold::lid(max_ms);
    for e in sorted_events(events, facts) {
        f.push(&e);
    }
    f.finish(facts)
}

/// Tilt beyond the profile's limit: from a tilt event over the limit to a
/// tilt-cleared event (or one within the limit); fires after the limit's delay.
pub fn tilt(events: &[TimedEvent], limit: &TiltLimit, facts: &ShipmentFacts) -> Vec<Condition> {
    let mut f = StateFold::tilt(*limit);
    for e in sorted_events(events, facts) {
        f.push(&e);
    }
    f.finish(facts)
}

/// What a [`StateFold`] watches.
#[derive(Debug, Clone, Copy)]
enum StateKind {
    Lid { max_ms: i64 },
    Tilt(TiltLimit),
}

/// Lid and tilt as folds over events in the order of [`sort_events`]. An
/// open state is known to last until the newest data, not until the horizon.
#[derive(Debug, Clone)]
pub struct StateFold {
    kind: StateKind,
    out: Vec<Condition>,
    open: Option<Episode>,
}

impl StateFold {
    /// The lid state.
    pub fn lid(max_ms: i64) -> Self {
        StateFold {
            kind: StateKind::Lid { max_ms },
            out: Vec::new(),
            open: None,
        }
    }

    /// The tilt state.
    pub fn tilt(limit: TiltLimit) -> Self {
        StateFold {
            kind: StateKind::Tilt(limit),
            out: Vec::new(),
            open: None,
        }
    }

    fn delay(&self) -> i64 {
        match self.kind {
            StateKind::Lid { max_ms } => max_ms,
            StateKind::Tilt(l) => l.delay_ms,
        }
    }

    /// The next event (already in range and in order).
    pub fn push(&mut self, e: &TimedEvent) {
        let delay = self.delay();
        match self.kind {
            StateKind::Lid { .. } => match e.kind {
                EventKind::LidOpened => {
                    self.open.get_or_insert_with(|| {
                        Episode::open(ConditionKind::LidOpen, Severity::Warning, e.t_ms)
                    });
                }
                EventKind::LidClosed => {
                    if let Some(ep) = self.open.take() {
                        self.out.push(ep.finish(e.t_ms, true, delay));
                    }
                }
                _ => {}
            },
            StateKind::Tilt(limit) => {
                let beyond = match e.kind {
                    EventKind::Tilt { angle_deg } => Some((angle_deg > limit.max_deg, angle_deg)),
                    EventKind::TiltCleared => Some((false, 0)),
                    _ => None,
                };
                match beyond {
                    Some((true, angle)) => {
                        let ep = self.open.get_or_insert_with(|| {
                            Episode::open(ConditionKind::Tilt, limit.severity, e.t_ms)
                        });
                        ep.c.peak = Some(ep.c.peak.unwrap_or(0).max(i32::from(angle)));
                    }
                    Some((false, _)) => {
                        if let Some(ep) = self.open.take() {
                            self.out.push(ep.finish(e.t_ms, true, delay));
                        }
                    }
                    None => {}
                }
            }
        }
    }

    /// The conditions as of the facts' horizon.
    pub fn finish(self, facts: &ShipmentFacts) -> Vec<Condition> {
        let delay = self.delay();
        let mut out = self.out;
        if let Some(ep) = self.open {
            let until = facts.evidence_until(ep.c.id.start_ms);
            out.push(ep.finish(until, false, delay));
        }
        out
    }
}

/// Battery readings in `[from, end]`, with battery-low events as readings, in
/// the order [`BatteryFold`] takes them.
pub fn battery_inputs(
    readings: &[BatteryReading],
    events: &[TimedEvent],
    facts: &ShipmentFacts,
) -> Vec<BatteryReading> {
    let mut all: Vec<BatteryReading> = readings
        .iter()
        .copied()
        .chain(events.iter().filter_map(battery_event))
        .filter(|r| in_range(r.t_ms, facts))
        .collect();
    all.sort_by_key(|r| (r.t_ms, r.mv));
    all
}

/// A battery-low event as a battery reading.
pub fn battery_event(e: &TimedEvent) -> Option<BatteryReading> {
    match e.kind {
        EventKind::BatteryLow { mv } => Some(BatteryReading { t_ms: e.t_ms, mv }),
        _ => None,
    }
}

/// Battery low: below `low_mv` until a reading 100 mV above it (hysteresis).
pub fn battery_low(
    readings: &[BatteryReading],
    events: &[TimedEvent],
    low_mv: u16,
    facts: &ShipmentFacts,
) -> Vec<Condition> {
    let mut f = BatteryFold::new(low_mv);
    for r in battery_inputs(readings, events, facts) {
        f.push(r);
    }
    f.finish(facts)
}

/// [`battery_low`] as a fold over readings sorted by (time, mV).
#[derive(Debug, Clone)]
pub struct BatteryFold {
    low_mv: u16,
    out: Vec<Condition>,
    open: Option<Episode>,
}

impl BatteryFold {
    /// Before any reading.
    pub fn new(low_mv: u16) -> Self {
        BatteryFold {
            low_mv,
            out: Vec::new(),
            open: None,
        }
    }

    /// The next reading (already in range and in order).
    pub fn push(&mut self, r: BatteryReading) {
        let clear_mv = u32::from(self.low_mv) + 100;
        if r.mv < self.low_mv {
            let ep = self.open.get_or_insert_with(|| {
                Episode::open(ConditionKind::BatteryLow, Severity::Warning, r.t_ms)
            });
            ep.c.peak = Some(
                ep.c.peak
                    .map_or(i32::from(r.mv), |p| p.min(i32::from(r.mv))),
            );
            ep.c.last_ms = r.t_ms;
        } else if u32::from(r.mv) >= clear_mv
            && let Some(ep) = self.open.take()
        {
            self.out.push(ep.finish(r.t_ms, true, 0));
        }
    }

    /// The conditions as of the facts' horizon.
    pub fn finish(self, facts: &ShipmentFacts) -> Vec<Condition> {
        let mut out = self.out;
        if let Some(ep) = self.open {
            let until = facts.evidence_until(ep.c.last_ms);
            out.push(ep.finish(until, false, 0));
        }
        out
    }
}

/// A device may run unsynced this long (boot, first connection) before the
/// condition fires; its times are marked estimated from the first moment.
pub const CLOCK_UNSYNCED_DELAY_MS: i64 = 10 * 60_000;

/// Clock observations in `[from, end]`, in the order [`ClockFold`] takes
/// them (at one instant, "unsynced" first: the sync ends it).
pub fn clock_inputs(obs: &[ClockObservation], facts: &ShipmentFacts) -> Vec<ClockObservation> {
    let mut all: Vec<ClockObservation> = obs
        .iter()
        .copied()
        .filter(|o| in_range(o.t_ms, facts))
        .collect();
    all.sort_by_key(|o| (o.t_ms, o.synced));
    all
}

/// Clock unsynced: from the first unsynced observation to the next synced one.
/// Fires after [`CLOCK_UNSYNCED_DELAY_MS`]: a device that syncs within minutes
/// of booting pages nobody, and the report still shows the estimated stretch.
pub fn clock_unsynced(obs: &[ClockObservation], facts: &ShipmentFacts) -> Vec<Condition> {
    let mut f = ClockFold::default();
    for o in clock_inputs(obs, facts) {
        f.push(o);
    }
    f.finish(facts)
}

/// [`clock_unsynced`] as a fold over observations in the order of
/// [`clock_inputs`].
#[derive(Debug, Clone, Default)]
pub struct ClockFold {
    out: Vec<Condition>,
    open: Option<Episode>,
    last: Option<i64>,
}

impl ClockFold {
    /// The next observation (already in range and in order).
    pub fn push(&mut self, o: ClockObservation) {
        self.last = Some(o.t_ms);
        if !o.synced {
            self.open.get_or_insert_with(|| {
                Episode::open(ConditionKind::ClockUnsynced, Severity::Warning, o.t_ms)
            });
        } else if let Some(ep) = self.open.take() {
            self.out
                .push(ep.finish(o.t_ms, true, CLOCK_UNSYNCED_DELAY_MS));
        }
    }

    /// The conditions as of the facts' horizon.
    pub fn finish(self, facts: &ShipmentFacts) -> Vec<Condition> {
        let mut out = self.out;
        if let Some(ep) = self.open {
            let until = facts.evidence_until(self.last.unwrap_or(ep.c.id.start_ms));
            out.push(ep.finish(until, false, CLOCK_UNSYNCED_DELAY_MS));
        }
        out
    }
}

/// Bad tags or sequence tampering: one critical condition from the first anomaly,
/// never cleared within the shipment. `excursions` holds the total count
/// (saturated at `u32::MAX`).
pub fn tamper(counts: &IntegrityCounts, facts: &ShipmentFacts) -> Option<Condition> {
    let total = counts.bad_tags.saturating_add(counts.sequence_anomalies);
    if total == 0 {
        return None;
    }
    let start = counts.first_ms.or(facts.departure_ms).unwrap_or(0);
    let mut c = Condition::new(ConditionKind::Tamper, Severity::Critical, start);
    c.fires_ms = Some(start);
    c.excursions = u32::try_from(total).unwrap_or(u32::MAX);
    c.last_ms = facts.end_ms.unwrap_or(start).max(start);
    Some(c)
}

/// The data-health conditions that come from inputs other than samples (lid,
/// tilt, battery, clock, tampering), as the profile asks for them, sorted by start
/// then kind. Probe faults and record gaps come from [`super::evaluate`].
pub fn from_inputs(
    inputs: &HealthInputs<'_>,
    limits: &HealthLimits,
    facts: &ShipmentFacts,
) -> Vec<Condition> {
    let mut out = Vec::new();
    if let Some(max) = limits.lid_open_max_ms {
        out.extend(lid_open(inputs.events, max, facts));
    }
    if let Some(t) = &limits.tilt {
        out.extend(tilt(inputs.events, t, facts));
    }
    if let Some(mv) = limits.battery_low_mv {
        out.extend(battery_low(inputs.battery, inputs.events, mv, facts));
    }
    out.extend(clock_unsynced(inputs.clock, facts));
    out.extend(tamper(&inputs.integrity, facts));
    sort(&mut out);
    out
}

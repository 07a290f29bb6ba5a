//! What evaluation reads: samples in device time, collected into a [`Series`] that
//! depends only on the *set* of samples, and the facts of the shipment.

use std::collections::BTreeMap;

use coldchain_proto::{FaultKind, Measurement};
use serde::{Deserialize, Serialize};

/// The outcome of one sample: a temperature or a fault, never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleValue {
    /// A valid temperature, milli-°C.
    Valid(i32),
    /// The probe was faulted: no temperature. Feeds the probe-fault condition,
    /// never a zone.
    Fault(FaultKind),
}

impl SampleValue {
    /// A total order used to sort and to settle conflicts deterministically:
    /// valid values by temperature, then faults (in the order of [`FaultKind`]).
    fn rank(self) -> (u8, i64) {
        match self {
            SampleValue::Valid(v) => (0, i64::from(v)),
            SampleValue::Fault(k) => (
                1,
                match k {
                    FaultKind::OpenCircuit => 0,
                    FaultKind::Short => 1,
                    FaultKind::OutOfRange => 2,
                    FaultKind::Crc => 3,
                    FaultKind::NoResponse => 4,
                    FaultKind::Stuck => 5,
                },
            ),
        }
    }

    /// The temperature, if the sample is valid.
    pub fn milli_c(self) -> Option<i32> {
        match self {
            SampleValue::Valid(v) => Some(v),
            SampleValue::Fault(_) => None,
        }
    }
}

impl From<Measurement> for SampleValue {
    fn from(m: Measurement) -> Self {
        match m {
            Measurement::Valid(v) => SampleValue::Valid(v),
            Measurement::Fault(k) => SampleValue::Fault(k),
        }
    }
}

/// One temperature sample of the watched channel, in device time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Unix ms by the device's clock (possibly estimated for an unsynced device).
    pub t_ms: i64,
    /// The value or the fault.
    pub value: SampleValue,
}

impl Sample {
    /// A valid sample.
    pub fn valid(t_ms: i64, milli_c: i32) -> Self {
        Sample {
            t_ms,
            value: SampleValue::Valid(milli_c),
        }
    }

    /// A faulted sample.
    pub fn fault(t_ms: i64, kind: FaultKind) -> Self {
        Sample {
            t_ms,
            value: SampleValue::Fault(kind),
        }
    }
}

/// What [`Series::insert`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// First sample at its timestamp.
    New,
    /// The same value was already there (a replay or a duplicate delivery).
    Duplicate,
    /// A different value was already there; see [`Series`] for which one is kept.
    Conflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    value: SampleValue,
    conflicted: bool,
}

/// The samples of one channel, sorted by device time, one per timestamp.
///
/// A `Series` depends only on the set of samples inserted, never on their order:
/// the same readings arriving live, replayed from a firmware queue, or dumped over
/// serial at arrival give the same series and so the same evaluation.
///
/// Identical timestamps are merged deterministically. Identical values are one
/// sample. Different values at the same device time (which a correct device never
/// produces) keep the *greatest* under this order: any fault above any valid value,
/// then the warmer of two temperatures. A fault is never lost, and the warmer
/// reading is the cautious one for the dominant risk, warming. Such timestamps are
/// counted in [`Series::conflicts`] so a report can state them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    map: BTreeMap<i64, Slot>,
}

/// A stretch of time during which one valid temperature stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, device ms (inclusive).
    pub start_ms: i64,
    /// End, device ms (exclusive; equal to `start_ms` for an instantaneous sample).
    pub end_ms: i64,
    /// The temperature, milli-°C.
    pub milli_c: i32,
}

impl Segment {
    /// Length in ms.
    pub fn len_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

impl Series {
    /// An empty series.
    pub fn new() -> Self {
        Series::default()
    }

    /// Adds one sample.
    pub fn insert(&mut self, s: Sample) -> Inserted {
        match self.map.get_mut(&s.t_ms) {
            None => {
                self.map.insert(
                    s.t_ms,
                    Slot {
                        value: s.value,
                        conflicted: false,
                    },
                );
                Inserted::New
            }
            Some(slot) if slot.value == s.value => Inserted::Duplicate,
            Some(slot) => {
                slot.conflicted = true;
                if s.value.rank() > slot.value.rank() {
                    slot.value = s.value;
                }
                Inserted::Conflict
            }
        }
    }

    /// Number of distinct timestamps.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of timestamps at which different values were received.
    pub fn conflicts(&self) -> usize {
        self.map.values().filter(|s| s.conflicted).count()
    }

    /// The samples in device-time order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Sample> + '_ {
        self.map.iter().map(|(&t_ms, slot)| Sample {
            t_ms,
            value: slot.value,
        })
    }

    /// The samples with `lo <= t_ms <= hi`, in order.
    pub fn range(&self, lo: i64, hi: i64) -> impl DoubleEndedIterator<Item = Sample> + '_ {
        (lo <= hi)
            .then(|| self.map.range(lo..=hi))
            .into_iter()
            .flatten()
            .map(|(&t_ms, slot)| Sample {
                t_ms,
                value: slot.value,
            })
    }

    /// The latest sample at or before `t_ms`.
    pub fn at_or_before(&self, t_ms: i64) -> Option<Sample> {
        self.map.range(..=t_ms).next_back().map(|(&t, s)| Sample {
            t_ms: t,
            value: s.value,
        })
    }

    /// The stretches of time with a known temperature inside `[lo, hi]`.
    ///
    /// A valid sample's value stands from its time until the next sample, but for
    /// at most `max_gap_ms`: beyond that the temperature is *unknown*, and unknown
    /// time is not counted as time beyond any limit, nor as time back in range, nor
    /// in MKT. A fault sample starts unknown time too. The newest sample stands
    /// for no time (we know the value at that instant only, whatever the
    /// horizon): time after it is unknown, not assumed. With `Some(hi)` samples
    /// after `hi` are ignored and a value stands at most until `hi`.
    ///
    /// Samples at or after `lo` always give a segment, possibly of zero length (an
    /// instantaneous reading still counts for peaks and zero-delay zones); a
    /// sample before `lo` gives the part of its stretch after `lo`, if any.
    pub fn known_segments(&self, lo: i64, hi: Option<i64>, max_gap_ms: i64) -> Vec<Segment> {
        let rule = SegmentRule::new(lo, hi, max_gap_ms);
        // Start from the last sample before `lo`: its value may stand into the range.
        let first_key = self.map.range(..lo).next_back().map_or(lo, |(t, _)| *t);
        let mut out = Vec::new();
        let mut it = self.map.range(first_key..=rule.upper).peekable();
        while let Some((&t, slot)) = it.next() {
            let next = it.peek().map(|(n, _)| **n);
            out.extend(rule.segment(t, slot.value, next));
        }
        out
    }

    /// The first sample, if any.
    pub fn first(&self) -> Option<Sample> {
        self.map.first_key_value().map(|(&t_ms, s)| Sample {
            t_ms,
            value: s.value,
        })
    }

    /// The newest sample, if any.
    pub fn last(&self) -> Option<Sample> {
        self.map.last_key_value().map(|(&t_ms, s)| Sample {
            t_ms,
            value: s.value,
        })
    }

    /// Removes and returns the samples before `t_ms`, in order.
    pub fn take_before(&mut self, t_ms: i64) -> Vec<Sample> {
        let rest = self.map.split_off(&t_ms);
        let head = std::mem::replace(&mut self.map, rest);
        head.into_iter()
            .map(|(t_ms, s)| Sample {
                t_ms,
                value: s.value,
            })
            .collect()
    }
}

/// The evidence rule for one sample: the stretch of time its value stands
/// for, given the time of the next sample (see [`Series::known_segments`],
/// which applies it to every sample of a series; incremental evaluation
/// applies it one sample at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRule {
    lo: i64,
    upper: i64,
    max_gap_ms: i64,
}

impl SegmentRule {
    /// Segments inside `[lo, hi]` (`None`: no upper bound) of values that
    /// stand at most `max_gap_ms`.
    pub fn new(lo: i64, hi: Option<i64>, max_gap_ms: i64) -> Self {
        SegmentRule {
            lo,
            upper: hi.unwrap_or(i64::MAX),
            max_gap_ms: max_gap_ms.max(0),
        }
    }

    /// The segment of a sample at `t` whose next sample (at or before the
    /// upper bound) is at `next`; `None` for a fault, a sample after the upper
    /// bound, or a stretch wholly before `lo`.
    pub fn segment(&self, t: i64, value: SampleValue, next: Option<i64>) -> Option<Segment> {
        let SampleValue::Valid(v) = value else {
            return None;
        };
        if t > self.upper {
            return None;
        }
        // The evidence rule: a value stands until the next sample and no
        // further. After the newest sample of the series the temperature
        // is unknown, whatever the horizon: what happens there is for the
        // next reading to tell (and for the silence alarm to notice when
        // none comes).
        let stand_until = next.filter(|n| *n <= self.upper).unwrap_or(t);
        let end = stand_until
            .min(t.saturating_add(self.max_gap_ms))
            .min(self.upper);
        let start = t.max(self.lo);
        (t >= self.lo || end > self.lo).then_some(Segment {
            start_ms: start,
            end_ms: end.max(start),
            milli_c: v,
        })
    }
}

impl FromIterator<Sample> for Series {
    fn from_iter<I: IntoIterator<Item = Sample>>(iter: I) -> Self {
        let mut s = Series::new();
        s.extend(iter);
        s
    }
}

impl Extend<Sample> for Series {
    fn extend<I: IntoIterator<Item = Sample>>(&mut self, iter: I) {
        for x in iter {
            self.insert(x);
        }
    }
}

/// The facts of a shipment that evaluation needs, all in device time (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentFacts {
    /// Departure; evaluation starts here. `None`: from the first sample.
    pub departure_ms: Option<i64>,
    /// Settle period after departure during which zones do not count (Controlant
    /// default 10 min). It suppresses temperature alarms only: MKT, viability and
    /// data-health use the readings of the settle period too.
    pub settle_ms: i64,
    /// Evaluation horizon: arrival for a finished shipment, or "now" (device time)
    /// for a live view. Samples after it are ignored. `None`: up to the last sample,
    /// which then stands for no time.
    pub end_ms: Option<i64>,
    /// Estimated time of arrival, for the viability prediction.
    pub eta_ms: Option<i64>,
    /// When the product was collected; the viability window runs from here
    /// (from departure when unknown).
    pub collection_ms: Option<i64>,
    /// Nominal viability window at the decay model's reference temperature, ms.
    /// `None`: no window (a cryopreserved product while it stays cold).
    pub nominal_window_ms: Option<i64>,
    /// A sample's value stands for at most this long; see [`Series::known_segments`].
    pub max_gap_ms: i64,
    /// The device's sampling interval, for the silence condition. `None`: not checked.
    pub sample_interval_ms: Option<i64>,
    /// Live view only (a shipment not yet arrived): what the receiver knows
    /// about arrivals, so a silence running up to "now" is judged by what has
    /// *arrived*, not by sample times alone. `None` for an arrived shipment
    /// (the record alone decides, whatever the order data came in).
    #[serde(default)]
    pub live: Option<LiveArrival>,
    /// The newest moment the shipment's devices reported anything (a sample
    /// or an event), device ms. An open state (lid open, tilted, battery low,
    /// clock unsynced) is known to last until then and no further: the
    /// evidence rule for states. `None`: until the horizon.
    #[serde(default)]
    pub data_until_ms: Option<i64>,
}

/// Arrival facts for the live silence check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveArrival {
    /// When the frame holding the newest sample was received (receiver clock).
    pub newest_sample_received_ms: i64,
    /// How often the device uploads (it batches samples in between), ms.
    pub upload_interval_ms: i64,
}

impl ShipmentFacts {
    /// Facts for a shipment departing at `departure_ms`, with a 10 min settle
    /// period, a 30 min max gap and nothing else known.
    pub fn departing_at(departure_ms: i64) -> Self {
        ShipmentFacts {
            departure_ms: Some(departure_ms),
            settle_ms: 10 * 60_000,
            end_ms: None,
            eta_ms: None,
            collection_ms: None,
            nominal_window_ms: None,
            max_gap_ms: 30 * 60_000,
            sample_interval_ms: None,
            live: None,
            data_until_ms: None,
        }
    }

    /// Until when an open state is known to last: the newest data, but not
    /// past the horizon; `fallback` when neither is known.
    pub fn evidence_until(&self, fallback: i64) -> i64 {
        match (self.end_ms, self.data_until_ms) {
            (Some(e), Some(d)) => e.min(d),
            (Some(e), None) => e,
            (None, Some(d)) => d,
            (None, None) => fallback,
        }
    }

    /// Where zone evaluation starts: departure plus settle period.
    pub fn zones_from_ms(&self) -> i64 {
        self.departure_ms
            .map_or(i64::MIN, |d| d.saturating_add(self.settle_ms.max(0)))
    }

    /// Where evaluation other than zones starts: departure.
    pub fn from_ms(&self) -> i64 {
        self.departure_ms.unwrap_or(i64::MIN)
    }
}

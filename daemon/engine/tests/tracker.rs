//! Incremental evaluation gives the answers of one evaluation of all the data:
//! for any arrival order and batching, with folds committed after every batch
//! and the tracker rebuilt whenever data older than its state arrives, the
//! final view equals the view of a tracker that saw everything at once (which
//! is what the report evaluates). Every fold is exercised: zones (single and
//! cumulative), probe faults, record gaps, trend (cryogenic lane), viability
//! with its warning, lid, tilt, battery and clock, and the statistics.

use coldchain_engine::alarm::health::{BatteryReading, IntegrityCounts, TimedEvent};
use coldchain_engine::alarm::{LiveArrival, Sample, ShipmentFacts};
use coldchain_engine::profile::{Profile, TiltLimit};
use coldchain_engine::tracker::Tracker;
use coldchain_proto::{EventKind, FaultKind};
use proptest::prelude::*;

const M: i64 = 60_000;
const H: i64 = 60 * M;
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
enum Input {
    Sample(Sample, bool),
    Event(TimedEvent),
    Battery(BatteryReading),
}

impl Input {
    fn push(&self, t: &mut Tracker) -> bool {
        match *self {
            Input::Sample(s, synced) => t.push_sample(s, synced).is_ok(),
            Input::Event(e) => t.push_event(e).is_ok(),
            Input::Battery(b) => t.push_battery(b).is_ok(),
        }
    }
}

fn profile(cryo: bool) -> Profile {
    let mut p = Profile::builtin(if cryo { "cryo-ln2" } else { "fridge" }).expect("builtin");
    p.health.lid_open_max_ms = Some(5 * M);
    p.health.battery_low_mv = Some(3300);
    p.health.tilt = p.health.tilt.or(Some(TiltLimit {
        max_deg: 30,
        delay_ms: 2 * M,
        severity: coldchain_engine::profile::Severity::Warning,
    }));
    p
}

fn facts(arrived: Option<i64>) -> ShipmentFacts {
    ShipmentFacts {
        departure_ms: Some(T0),
        settle_ms: 10 * M,
        end_ms: arrived,
        eta_ms: Some(T0 + 5 * H),
        collection_ms: Some(T0 - H),
        nominal_window_ms: Some(8 * H),
        max_gap_ms: 20 * M,
        sample_interval_ms: Some(M),
        live: None,
        data_until_ms: None,
    }
}

/// A temperature walk (milli-°C) around a centre, with excursions, faults,
/// gaps, unsynced stretches, and device events.
fn inputs(cryo: bool) -> impl Strategy<Value = Vec<Input>> {
    let centre = if cryo { -190_000 } else { 5_000 };
    let step = if cryo { 4_000 } else { 1_500 };
    (
        prop::collection::vec((0i32..8, -1i32..=1, 0u8..20, 0u8..30), 20..160),
        prop::collection::vec((0i64..240, 0u8..6, 0u8..60), 0..12),
    )
        .prop_map(move |(walk, events)| {
            let mut out = Vec::new();
            let mut v = centre;
            let mut t = T0 - 30 * M;
            for (dt, dir, fault, sync) in walk {
                // Mostly one minute apart; now and then a gap.
                t += if dt == 7 {
                    25 * M
                } else {
                    M + i64::from(dt) * 1000
                };
                v += dir * step;
                let s = if fault == 0 {
                    Sample::fault(t, FaultKind::OpenCircuit)
                } else {
                    Sample::valid(t, v)
                };
                out.push(Input::Sample(s, sync != 0));
            }
            for (min, kind, x) in events {
                let te = T0 - 30 * M + min * M;
                out.push(match kind {
                    0 => Input::Event(TimedEvent {
                        t_ms: te,
                        kind: EventKind::LidOpened,
                    }),
                    1 => Input::Event(TimedEvent {
                        t_ms: te,
                        kind: EventKind::LidClosed,
                    }),
                    2 => Input::Event(TimedEvent {
                        t_ms: te,
                        kind: EventKind::Tilt { angle_deg: x },
                    }),
                    3 => Input::Event(TimedEvent {
                        t_ms: te,
                        kind: EventKind::TiltCleared,
                    }),
                    _ => Input::Battery(BatteryReading {
                        t_ms: te,
                        mv: 3200 + u16::from(x) * 5,
                    }),
                });
            }
            out
        })
}

fn schedule() -> impl Strategy<Value = (bool, Vec<Input>, Vec<usize>, usize, bool, u64)> {
    any::<bool>().prop_flat_map(|cryo| {
        inputs(cryo).prop_flat_map(move |inp| {
            let n = inp.len();
            (
                Just(cryo),
                Just(inp).prop_shuffle(),
                prop::collection::vec(1usize..12, 1..20),
                1usize..6,
                any::<bool>(),
                0u64..(n as u64),
            )
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn incremental_equals_one_evaluation(
        (cryo, shuffled, batches, keep, arrived, sort_prefix) in schedule()
    ) {
        let p = profile(cryo);
        let end = T0 + 4 * H;
        let f = facts(arrived.then_some(end));
        // Often, most of the data arrives in order (a live stream) and the
        // rest late: sort a prefix.
        let mut order = shuffled.clone();
        let k = (sort_prefix as usize).min(order.len());
        order[..k].sort_by_key(|i| match i {
            Input::Sample(s, _) => s.t_ms,
            Input::Event(e) => e.t_ms,
            Input::Battery(b) => b.t_ms,
        });
        let live = Some(LiveArrival {
            newest_sample_received_ms: end - 2 * M,
            upload_interval_ms: M,
        });
        let integrity = IntegrityCounts::default();

        let mut inc = Tracker::new(p.clone(), f, T0 - 2 * H);
        let mut seen: Vec<Input> = Vec::new();
        let mut rebuilds = 0;
        let mut i = 0;
        let mut b = 0;
        while i < order.len() {
            let n = batches[b % batches.len()];
            b += 1;
            for x in &order[i..(i + n).min(order.len())] {
                seen.push(x.clone());
                if !x.push(&mut inc) {
                    // Older than the incremental state: from all the data.
                    rebuilds += 1;
                    inc = Tracker::new(p.clone(), f, T0 - 2 * H);
                    for y in &seen {
                        prop_assert!(y.push(&mut inc));
                    }
                }
            }
            i += n;
            // A view after every batch, as the daemon does, then fold.
            let _ = inc.view(end, live, integrity);
            inc.commit(keep, end);
        }
        let mut once = Tracker::new(p.clone(), f, T0 - 2 * H);
        for x in &order {
            prop_assert!(x.push(&mut once));
        }
        let want = once.view(end, live, integrity);
        let got = inc.view(end, live, integrity);
        prop_assert_eq!(&got, &want, "rebuilds: {}", rebuilds);
    }
}

/// An in-order stream folds as it goes: the tail stays at `keep` samples and
/// the answers are those of one evaluation.
#[test]
fn an_ordered_stream_keeps_a_short_tail() {
    let p = profile(false);
    let f = facts(None);
    let mut inc = Tracker::new(p.clone(), f, T0 - H);
    let mut once = Tracker::new(p, f, T0 - H);
    for i in 0..(6 * 60) {
        let t = T0 + i * M;
        // Two hours at 9 °C in the middle: an H1 excursion.
        let v = if (120..240).contains(&i) {
            9_000
        } else {
            5_000
        };
        let s = Sample::valid(t, v);
        inc.push_sample(s, true).unwrap();
        once.push_sample(s, true).unwrap();
        inc.commit(4, t);
        assert!(inc.tail_len() <= 5, "tail {} at {i}", inc.tail_len());
    }
    let now = T0 + 6 * H;
    let want = once.view(now, None, IntegrityCounts::default());
    let got = inc.view(now, None, IntegrityCounts::default());
    assert_eq!(got, want);
    assert!(
        got.conditions
            .iter()
            .any(|c| c.has_fired() && c.id.start_ms == T0 + 120 * M),
        "the excursion fired: {:?}",
        got.conditions
    );
    // Data older than the folded state is refused, never folded wrongly.
    assert!(inc.push_sample(Sample::valid(T0 + M, 5_000), true).is_err());
}

/// A receiver clock stepped back: a view never looks at a horizon earlier
/// than one already folded at (what lies after it is folded in), so it
/// equals the view at the latest horizon, not a view that half forgets.
#[test]
fn a_horizon_stepping_back_does_not_unfold_data() {
    let p = profile(false);
    let f = facts(None);
    let mut inc = Tracker::new(p.clone(), f, T0 - H);
    for i in 0..120 {
        let v = if (30..100).contains(&i) { 9_000 } else { 5_000 };
        inc.push_sample(Sample::valid(T0 + i * M, v), true).unwrap();
    }
    let later = T0 + 2 * H;
    inc.commit(4, later);
    let back = T0 + 90 * M;
    assert_eq!(
        inc.view(back, None, IntegrityCounts::default()),
        inc.view(later, None, IntegrityCounts::default())
    );
}

//! The promise of issue "alarms that depend only on the data", checked through
//! the real store and evaluator: for any arrival schedule of the same frames
//! (split into batches, permuted, evaluated after every batch, with daemon
//! restarts in between), once everything has arrived the shipment's alerts
//! that are not withdrawn (kind, start, fire time, peak, time beyond,
//! clearing, text) are exactly those of one evaluation of the complete data.
//!
//! Silence is the one condition judged by arrival rather than by the data
//! (see `alarm::health::record_gaps`); it is left out of the comparison.

use std::sync::Arc;

use coldchain_daemon::alarm::ConditionKind;
use coldchain_daemon::alert::{Alert, AlertState};
use coldchain_daemon::audit::Audit;
use coldchain_daemon::config::Config;
use coldchain_daemon::evaluate::{Clock, Evaluator};
use coldchain_daemon::shipment::{NewShipment, Shipment, Watch};
use coldchain_daemon::store::{
    EventBody, EventRecord, FrameRecord, KvStore, ReadingRecord, Store, TimeSource, Via, WriteSet,
};
use coldchain_proto::{ChannelKind, DeviceId, EventKind, FaultKind, FrameRef, Measurement};
use proptest::prelude::*;

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
/// 2026-01-01 00:00 UTC.
const T0: i64 = 1_767_225_600_000;
const DEV: &str = "sched-1";

/// One frame as a device would send it: readings or events.
#[derive(Debug, Clone)]
enum Body {
    Readings(Vec<(i64, Option<i32>)>),
    Events(Vec<(i64, EventKind)>),
}

#[derive(Debug, Clone)]
struct Frame {
    seq: u32,
    body: Body,
}

/// What a standing alert shows: kind, start, fire time, clearing, peak, time
/// beyond, text.
type Standing = (String, i64, i64, Option<i64>, Option<i32>, i64, String);

struct Daemon {
    dir: tempfile::TempDir,
    store: Arc<KvStore>,
    ev: Evaluator,
    profile: &'static str,
    /// Frames stored since the last evaluation (what ingest tells the
    /// evaluator), so evaluations run incrementally.
    pending: std::cell::RefCell<Vec<FrameRef>>,
}

fn evaluator(dir: &std::path::Path, store: &Arc<KvStore>, profile: &str, now: i64) -> Evaluator {
    let cfg = Config::parse(&format!(
        "[daemon]\nid = \"t\"\ndata_dir = \"{}\"\n[alerts]\nsettle_s = 0\nsample_interval_s = 120\nmax_gap_s = 1800\n",
        dir.display()
    ))
    .unwrap();
    let _ = profile;
    let audit = Arc::new(Audit::open(store.db()).unwrap());
    let forward = coldchain_daemon::forward::Forward::open(store.db(), None).unwrap();
    Evaluator::new(cfg, store.clone(), audit, forward)
        .unwrap()
        .with_clock(Clock::fixed(now))
        // Fold at almost every evaluation, so late frames meet folded state.
        .with_keep(2)
}

impl Daemon {
    fn new(profile: &'static str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(KvStore::open(&dir.path().join("db")).unwrap());
        let ev = evaluator(dir.path(), &store, profile, T0);
        let d = Daemon {
            dir,
            store,
            ev,
            profile,
            pending: Default::default(),
        };
        d.ev.shipments.put(&d.shipment()).unwrap();
        d
    }

    /// A restart: a new evaluator over the same database (nothing in memory
    /// survives).
    fn restart(&mut self, now: i64) {
        self.ev = evaluator(self.dir.path(), &self.store, self.profile, now);
    }

    fn shipment(&self) -> Shipment {
        let (profile, window_h, collection) = match self.profile {
            "fridge" => ("fridge", Some(6.0), Some(T0 - H)),
            p => (p, None, None),
        };
        let mut s = Shipment::create(
            NewShipment {
                id: "S-1".into(),
                product: "product".into(),
                din: None,
                product_code: None,
                profile: profile.into(),
                watch: vec![Watch {
                    device: DEV.into(),
                    channel: 0,
                }],
                origin: "A".into(),
                destination: "B".into(),
                eta_ms: Some(T0 + 5 * H),
                collection_ms: collection,
                window_h,
                departure_ms: Some(T0),
            },
            T0 - H,
        )
        .unwrap();
        s.arrive(T0 + 4 * H).unwrap();
        s
    }

    fn store(&self, f: &Frame) {
        let d = DeviceId::new(DEV).unwrap();
        let r = FrameRef {
            boot: 1,
            seq: f.seq,
        };
        let mut w = WriteSet::default();
        let t0 = match &f.body {
            Body::Readings(rs) => {
                for (i, &(t, v)) in rs.iter().enumerate() {
                    w.reading(
                        &d,
                        r,
                        i as u16,
                        &ReadingRecord {
                            channel: 0,
                            kind: ChannelKind::Rtd,
                            value: match v {
                                Some(m) => Measurement::Valid(m),
                                None => Measurement::Fault(FaultKind::OpenCircuit),
                            },
                            time_ms: t,
                            time_source: TimeSource::Device,
                        },
                    );
                }
                rs[0].0
            }
            Body::Events(es) => {
                for (i, &(t, kind)) in es.iter().enumerate() {
                    w.event(
                        &d,
                        r,
                        i as u16,
                        &EventRecord {
                            time_ms: t,
                            time_source: TimeSource::Device,
                            body: EventBody::Event(kind),
                        },
                    );
                }
                es[0].0
            }
        };
        w.frame(
            &d,
            r,
            &FrameRecord {
                received_ms: t0,
                time_ms: t0,
                time_source: TimeSource::Device,
                via: Via::MqttJson,
                signed: true,
            },
            &[0; 16],
        );
        self.store.apply(w).unwrap();
        self.pending.borrow_mut().push(r);
    }

    /// Evaluates incrementally: the frames stored since the last evaluation.
    fn evaluate(&mut self) {
        let s = self.ev.shipments.get("S-1").unwrap().unwrap();
        let d = DeviceId::new(DEV).unwrap();
        let frames: Vec<_> = self
            .pending
            .borrow_mut()
            .drain(..)
            .map(|r| (d.clone(), r))
            .collect();
        self.ev.run_frames(&s, T0 + 4 * H, &frames).unwrap();
    }

    /// The alerts a person sees as standing, as comparable facts.
    fn standing(&self) -> Vec<Standing> {
        let mut v: Vec<_> = self
            .ev
            .alerts
            .of_shipment("S-1")
            .unwrap()
            .into_iter()
            .filter(|a: &Alert| {
                a.state != AlertState::Withdrawn && a.condition.kind != ConditionKind::Silent
            })
            .map(|a| {
                (
                    a.condition.kind.to_string(),
                    a.condition.start_ms,
                    a.fires_ms,
                    a.cleared_ms,
                    a.peak,
                    a.beyond_ms,
                    a.message,
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// A temperature path of runs (value, number of 2-min readings), with some
/// faults, cut into frames of 1-6 readings; plus lid and tilt events.
fn frames(profile: &'static str) -> impl Strategy<Value = Vec<Frame>> {
    let values: Vec<Option<i32>> = match profile {
        "fridge" => vec![
            Some(5_000),
            Some(8_000),
            Some(9_000),
            Some(12_000),
            Some(16_000),
            Some(1_500),
            Some(-500),
            None,
        ],
        _ => vec![
            Some(-190_000),
            Some(-160_000),
            Some(-148_000),
            Some(-140_000),
            Some(-130_000),
            Some(-210_000),
            None,
        ],
    };
    let run = (prop::sample::select(values), 1usize..25);
    (
        prop::collection::vec(run, 1..12),
        prop::collection::vec(1usize..7, 1..40),
        prop::collection::vec((0i64..200, any::<bool>()), 0..4),
    )
        .prop_map(|(runs, cuts, events)| {
            let mut readings = Vec::new();
            let mut t = T0;
            for (v, n) in runs {
                for _ in 0..n {
                    readings.push((t, v));
                    t += 2 * MIN;
                }
            }
            let mut out = Vec::new();
            let mut seq = 0;
            let mut it = readings.into_iter().peekable();
            let mut cuts = cuts.into_iter().cycle();
            while it.peek().is_some() {
                let n = cuts.next().unwrap_or(1);
                let chunk: Vec<_> = it.by_ref().take(n).collect();
                out.push(Frame {
                    seq,
                    body: Body::Readings(chunk),
                });
                seq += 1;
            }
            for (m, lid) in events {
                let at = T0 + m * MIN;
                let body = if lid {
                    Body::Events(vec![
                        (at, EventKind::LidOpened),
                        (at + 25 * MIN, EventKind::LidClosed),
                    ])
                } else {
                    Body::Events(vec![
                        (at, EventKind::Tilt { angle_deg: 80 }),
                        (at + 40 * MIN, EventKind::TiltCleared),
                    ])
                };
                out.push(Frame { seq, body });
                seq += 1;
            }
            out
        })
}

/// An arrival schedule: a permutation of the frames cut into batches, and
/// after which batches the daemon restarts.
fn schedule(n: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<bool>)> {
    (
        Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        prop::collection::vec(1usize..8, n),
        prop::collection::vec(any::<bool>(), n),
    )
}

fn check(
    profile: &'static str,
    frames: &[Frame],
    order: &[usize],
    sizes: &[usize],
    restarts: &[bool],
) {
    // One evaluation of the complete data.
    let mut once = Daemon::new(profile);
    for f in frames {
        once.store(f);
    }
    once.evaluate();
    let want = once.standing();

    // The same frames by the schedule, evaluated after every batch.
    let mut d = Daemon::new(profile);
    let mut i = 0;
    let mut b = 0;
    while i < order.len() {
        let n = sizes[b % sizes.len()].min(order.len() - i);
        for &k in &order[i..i + n] {
            d.store(&frames[k]);
        }
        i += n;
        if restarts[b % restarts.len()] {
            d.restart(T0 + b as i64);
        }
        d.evaluate();
        b += 1;
    }
    let got = d.standing();
    assert_eq!(got, want, "schedule {order:?} in batches {sizes:?}");
    // Every alert that is not standing was withdrawn in the open, with a reason.
    for a in d.ev.alerts.of_shipment("S-1").unwrap() {
        if a.state == AlertState::Withdrawn {
            assert!(a.withdrawn.as_ref().is_some_and(|w| !w.reason.is_empty()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn fridge_alarms_do_not_depend_on_arrival(
        (frames, sched) in frames("fridge").prop_flat_map(|f| { let n = f.len(); (Just(f), schedule(n)) })
    ) {
        let (order, sizes, restarts) = sched;
        check("fridge", &frames, &order, &sizes, &restarts);
    }

    #[test]
    fn cryo_alarms_do_not_depend_on_arrival(
        (frames, sched) in frames("cryo-ln2").prop_flat_map(|f| { let n = f.len(); (Just(f), schedule(n)) })
    ) {
        let (order, sizes, restarts) = sched;
        check("cryo-ln2", &frames, &order, &sizes, &restarts);
    }
}

/// Issue case 2: a 61-min excursion delivered newest-first, one frame per
/// evaluation: the alert ends with the start and fire time of the complete
/// data (E and E+60), revised in the open on the way.
#[test]
fn newest_first_delivery_revises_to_the_complete_facts() {
    let mut frames = Vec::new();
    let mut seq = 0;
    let mut push = |t: i64, v: i32| {
        frames.push(Frame {
            seq,
            body: Body::Readings(vec![(t, Some(v))]),
        });
        seq += 1;
    };
    let e = T0 + 10 * MIN;
    push(T0, 5_000);
    for m in 0..=61 {
        push(e + m * MIN, 9_000);
    }
    push(e + 62 * MIN, 5_000);
    let mut d = Daemon::new("fridge");
    for f in frames.iter().rev() {
        d.store(f);
        d.evaluate();
    }
    let alerts: Vec<Alert> =
        d.ev.alerts
            .of_shipment("S-1")
            .unwrap()
            .into_iter()
            .filter(|a| a.state != AlertState::Withdrawn && a.condition.kind.to_string() == "H1")
            .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.condition.start_ms, e);
    assert_eq!(a.fires_ms, e + 30 * MIN);
    assert_eq!(a.beyond_ms, 62 * MIN);
    assert!(a.message.contains("for 62 min"), "{}", a.message);
    assert!(!a.revisions.is_empty(), "the earlier facts are kept");
}

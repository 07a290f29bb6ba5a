//! Data-health conditions: silence, probe fault delay, lid, tilt, battery, clock,
//! tampering.

use coldchain_daemon::alarm::health::{
    self, BatteryReading, ClockObservation, HealthInputs, IntegrityCounts, TimedEvent,
};
use coldchain_daemon::alarm::{self, ConditionKind, Sample, Series, ShipmentFacts};
use coldchain_daemon::profile::{HealthLimits, Profile, Severity, TiltLimit};
use coldchain_proto::{EventKind, FaultKind};

const M: i64 = 60_000;

fn facts() -> ShipmentFacts {
    ShipmentFacts {
        settle_ms: 0,
        max_gap_ms: 15 * M,
        sample_interval_ms: Some(5 * M),
        ..ShipmentFacts::departing_at(0)
    }
}

fn ev(t_ms: i64, kind: EventKind) -> TimedEvent {
    TimedEvent { t_ms, kind }
}

/// Gaps in the record are evidence for the report, found after the fact:
/// they never fire. Only a live silence (nothing arriving) raises the alarm.
#[test]
fn record_gaps_are_reported_not_alarmed() {
    let limits = HealthLimits::default(); // 3 intervals
    let s: Series = [0, 5 * M, 20 * M, 34 * M, 39 * M]
        .iter()
        .map(|&t| Sample::valid(t, 5_000))
        .collect();
    let c = health::record_gaps(&s, &limits, &facts());
    assert_eq!(c.len(), 1, "15 min gap counts, 14 min does not: {c:?}");
    assert_eq!(c[0].id.kind, ConditionKind::Silent);
    assert_eq!(c[0].id.start_ms, 5 * M);
    assert_eq!(
        c[0].fires_ms, None,
        "a gap found after the fact is no alarm"
    );
    assert_eq!(c[0].cleared_ms, Some(20 * M));
    assert_eq!(c[0].beyond_ms, 15 * M);
    // An arrived shipment whose record stops 21 min before arrival: a gap up
    // to the horizon, still no alarm.
    let arrived = ShipmentFacts {
        end_ms: Some(60 * M),
        ..facts()
    };
    let c = health::record_gaps(&s, &limits, &arrived);
    let last = c.last().expect("trailing gap");
    assert_eq!((last.id.start_ms, last.last_ms), (39 * M, 60 * M));
    assert!(c.iter().all(|c| !c.has_fired()));
    // Live, with the newest sample received when it was taken: the alarm
    // fires at exactly 3 intervals of nothing arriving, not a moment before.
    use coldchain_daemon::alarm::LiveArrival;
    let live = |end: i64| ShipmentFacts {
        end_ms: Some(end),
        live: Some(LiveArrival {
            newest_sample_received_ms: 39 * M,
            upload_interval_ms: 0,
        }),
        ..facts()
    };
    let c = health::record_gaps(&s, &limits, &live(54 * M - 1));
    assert!(c.iter().all(|c| !c.has_fired()), "{c:?}");
    let c = health::record_gaps(&s, &limits, &live(54 * M));
    let last = c.last().expect("live silence");
    assert_eq!(last.id.start_ms, 39 * M);
    assert_eq!(last.fires_ms, Some(54 * M));
    assert!(last.is_active());
    // Faults are signs of life too.
    let mut s2 = s.clone();
    s2.insert(Sample::fault(12 * M, FaultKind::Crc));
    assert!(health::record_gaps(&s2, &limits, &facts()).is_empty());
    assert!(health::silent_now(0, 15 * M, 5 * M, 3));
    assert!(!health::silent_now(0, 15 * M - 1, 5 * M, 3));
}

/// Live, a device that samples every 5 min but uploads every 30 min is not
/// silent between uploads: the trailing silence is judged from when its
/// newest sample *arrived*, against N upload intervals. Without arrival facts
/// (an arrived shipment) the record alone decides, as before.
#[test]
fn live_silence_is_judged_by_arrival_and_upload_interval() {
    use coldchain_daemon::alarm::LiveArrival;
    let limits = HealthLimits::default(); // 3 intervals
    // Samples 0..=30 min every 5 min, uploaded together at 31 min.
    let s: Series = (0..=6).map(|i| Sample::valid(i * 5 * M, 5_000)).collect();
    let live = |end: i64| ShipmentFacts {
        end_ms: Some(end),
        live: Some(LiveArrival {
            newest_sample_received_ms: 31 * M,
            upload_interval_ms: 30 * M,
        }),
        ..facts()
    };
    // 50 min: 20 min after the last sample (beyond 3 × 5 min) but well
    // within the next upload: not silent.
    assert!(health::record_gaps(&s, &limits, &live(50 * M)).is_empty());
    // By the record alone there is a gap (for the report, not an alarm).
    let by_record = ShipmentFacts {
        end_ms: Some(50 * M),
        ..facts()
    };
    let gaps = health::record_gaps(&s, &limits, &by_record);
    assert_eq!(gaps.len(), 1);
    assert!(!gaps[0].has_fired());
    // Nothing has arrived for 3 upload intervals after 31 min: silent, from
    // the last sample, firing at 31 + 90 min.
    assert!(health::record_gaps(&s, &limits, &live(121 * M - 1)).is_empty());
    let c = health::record_gaps(&s, &limits, &live(121 * M));
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].id.start_ms, 30 * M);
    assert_eq!(c[0].fires_ms, Some(121 * M));
    assert!(c[0].is_active());
}

#[test]
fn probe_fault_with_a_delay_fires_only_if_it_lasts() {
    let limits = HealthLimits {
        probe_fault_delay_ms: 10 * M,
        ..HealthLimits::default()
    };
    let s: Series = [
        Sample::fault(0, FaultKind::OpenCircuit),
        Sample::valid(9 * M, 5_000),
        Sample::fault(20 * M, FaultKind::OpenCircuit),
        Sample::valid(30 * M, 5_000),
    ]
    .into_iter()
    .collect();
    let c = health::probe_faults(&s, &limits, &facts());
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].fires_ms, None, "9 min < 10 min");
    assert_eq!(c[1].fires_ms, Some(30 * M), "exactly at the delay fires");
    assert_eq!(c[1].severity, Severity::Critical);
}

/// The evidence rule for faults: time after the newest sample is unknown,
/// so a fault that is the newest data lasts until that sample, not until the
/// horizon, and a delay is proven only by fault samples that span it.
#[test]
fn an_open_probe_fault_lasts_until_the_newest_sample() {
    let limits = HealthLimits {
        probe_fault_delay_ms: 10 * M,
        ..HealthLimits::default()
    };
    let s: Series = [
        Sample::valid(0, 5_000),
        Sample::fault(10 * M, FaultKind::OpenCircuit),
        Sample::fault(11 * M, FaultKind::OpenCircuit),
    ]
    .into_iter()
    .collect();
    let at = |end: i64| ShipmentFacts {
        end_ms: Some(end),
        ..facts()
    };
    let c = health::probe_faults(&s, &limits, &at(180 * M));
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].beyond_ms, M, "{c:?}");
    assert_eq!(c[0].last_ms, 11 * M, "{c:?}");
    assert_eq!(
        c[0].fires_ms, None,
        "1 min of faults proves no 10-min delay"
    );
    assert_eq!(c[0].cleared_ms, None, "still open: {c:?}");
    // Fault samples spanning the delay prove it.
    let s: Series = [
        Sample::fault(10 * M, FaultKind::OpenCircuit),
        Sample::fault(20 * M, FaultKind::OpenCircuit),
    ]
    .into_iter()
    .collect();
    let c = health::probe_faults(&s, &limits, &at(180 * M));
    assert_eq!(c[0].fires_ms, Some(20 * M), "{c:?}");
}

#[test]
fn lid_open_longer_than_the_limit() {
    let events = [
        ev(0, EventKind::LidOpened),
        ev(2 * M, EventKind::LidClosed), // exactly the limit: fires
        ev(10 * M, EventKind::LidOpened),
        ev(11 * M, EventKind::LidClosed), // short
        ev(20 * M, EventKind::LidOpened), // still open
        ev(21 * M, EventKind::LidOpened), // repeated: same condition
    ];
    // Any order.
    let mut shuffled = events;
    shuffled.reverse();
    let live = ShipmentFacts {
        end_ms: Some(30 * M),
        ..facts()
    };
    let c = health::lid_open(&shuffled, 2 * M, &live);
    assert_eq!(c, health::lid_open(&events, 2 * M, &live));
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(c[0].fires_ms, Some(2 * M));
    assert_eq!(c[1].fires_ms, None);
    assert_eq!(c[2].id.start_ms, 20 * M);
    assert_eq!(c[2].fires_ms, Some(22 * M));
    assert!(c[2].is_active());
}

#[test]
fn tilt_beyond_the_limit_for_longer_than_the_delay() {
    let limit = TiltLimit {
        max_deg: 45,
        delay_ms: 10 * M,
        severity: Severity::Critical,
    };
    let events = [
        ev(0, EventKind::Tilt { angle_deg: 45 }), // at the limit: fine
        ev(M, EventKind::Tilt { angle_deg: 80 }),
        ev(5 * M, EventKind::Tilt { angle_deg: 90 }),
        ev(11 * M, EventKind::TiltCleared),
        ev(20 * M, EventKind::Tilt { angle_deg: 60 }),
        ev(25 * M, EventKind::Tilt { angle_deg: 30 }), // back within
    ];
    let c = health::tilt(&events, &limit, &facts());
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0].id.start_ms, M);
    assert_eq!(c[0].fires_ms, Some(11 * M), "exactly at the delay fires");
    assert_eq!(c[0].peak, Some(90));
    assert_eq!(c[0].severity, Severity::Critical);
    assert_eq!(c[1].fires_ms, None);
    assert_eq!(c[1].cleared_ms, Some(25 * M));
}

#[test]
fn battery_low_from_status_and_events() {
    let readings = [
        BatteryReading { t_ms: 0, mv: 3600 },
        BatteryReading {
            t_ms: 20 * M,
            mv: 3350,
        }, // within hysteresis: still low
        BatteryReading {
            t_ms: 30 * M,
            mv: 3400,
        }, // clears (>= 3300 + 100)
    ];
    let events = [ev(10 * M, EventKind::BatteryLow { mv: 3250 })];
    let c = health::battery_low(&readings, &events, 3300, &facts());
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].id.start_ms, 10 * M);
    assert_eq!(c[0].fires_ms, Some(10 * M));
    assert_eq!(c[0].cleared_ms, Some(30 * M));
    assert_eq!(c[0].peak, Some(3250));
    // Exactly at the limit is not low.
    let at = [BatteryReading { t_ms: 0, mv: 3300 }];
    assert!(health::battery_low(&at, &[], 3300, &facts()).is_empty());
}

#[test]
fn clock_unsynced_and_tamper() {
    let obs = [
        ClockObservation {
            t_ms: 0,
            synced: false,
        },
        ClockObservation {
            t_ms: 5 * M,
            synced: false,
        },
        ClockObservation {
            t_ms: 8 * M,
            synced: true,
        },
    ];
    // 8 minutes unsynced: recorded, but it does not fire (the delay is 10 min).
    let c = health::clock_unsynced(&obs, &facts());
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].fires_ms, c[0].cleared_ms), (None, Some(8 * M)));
    // Exactly at the delay fires.
    let long = [
        ClockObservation {
            t_ms: 0,
            synced: false,
        },
        ClockObservation {
            t_ms: health::CLOCK_UNSYNCED_DELAY_MS,
            synced: true,
        },
    ];
    let c = health::clock_unsynced(&long, &facts());
    assert_eq!(c[0].fires_ms, Some(health::CLOCK_UNSYNCED_DELAY_MS));

    assert_eq!(health::tamper(&IntegrityCounts::default(), &facts()), None);
    let t = health::tamper(
        &IntegrityCounts {
            bad_tags: 2,
            sequence_anomalies: 1,
            first_ms: Some(7 * M),
        },
        &facts(),
    )
    .expect("tamper");
    assert_eq!(t.id.kind, ConditionKind::Tamper);
    assert_eq!(t.fires_ms, Some(7 * M));
    assert_eq!(t.excursions, 3);
    assert_eq!(t.severity, Severity::Critical);
}

#[test]
fn evaluate_all_combines_and_sorts() {
    let p = Profile::builtin("cryo-ln2").expect("ln2");
    let s: Series = (0..10)
        .map(|i| Sample::valid(i * 5 * M, -190_000))
        .collect();
    let events = [
        ev(30 * M, EventKind::Tilt { angle_deg: 90 }),
        ev(3 * M, EventKind::LidOpened),
        ev(9 * M, EventKind::LidClosed),
    ];
    let inputs = HealthInputs {
        events: &events,
        ..HealthInputs::default()
    };
    let live = ShipmentFacts {
        end_ms: Some(45 * M),
        ..facts()
    };
    let all = alarm::evaluate_all(&p, &s, &inputs, &live);
    let kinds: Vec<ConditionKind> = all.iter().map(|c| c.id.kind).collect();
    assert_eq!(
        kinds,
        [ConditionKind::LidOpen, ConditionKind::Tilt],
        "{all:?}"
    );
    assert_eq!(all[0].fires_ms, Some(8 * M), "5 min lid limit on cryo-ln2");
    assert_eq!(all[1].fires_ms, Some(40 * M), "10 min tilt delay");
}

/// The evidence rule for states: a lid whose opening is the newest event is
/// known open only until the newest thing the device reported, not until
/// "now" (a backlog from hours ago must not read "lid open for 170 min").
#[test]
fn an_open_lid_lasts_until_the_newest_data_not_the_horizon() {
    let events = [ev(0, EventKind::LidOpened)];
    let at = |data_until: Option<i64>| ShipmentFacts {
        end_ms: Some(180 * M),
        data_until_ms: data_until,
        ..facts()
    };
    // The device's newest report is 1 min after the opening: not proven 2 min.
    let c = health::lid_open(&events, 2 * M, &at(Some(M)));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].fires_ms, None, "{c:?}");
    assert_eq!(c[0].last_ms, M);
    // Readings keep coming for 5 min with the lid never reported closed.
    let c = health::lid_open(&events, 2 * M, &at(Some(5 * M)));
    assert_eq!(c[0].fires_ms, Some(2 * M));
    assert_eq!(c[0].beyond_ms, 5 * M);
    assert!(c[0].is_active());
}

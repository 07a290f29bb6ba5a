//! Zone conventions: exactly at the limit, exactly at the delay, single-event vs
//! cumulative, settle period, hysteresis, gaps, faults, stable identities.

use coldchain_daemon::alarm::{
    self, Condition, ConditionKind, Sample, Series, ShipmentFacts, warming,
};
use coldchain_daemon::profile::{Profile, ZoneId};
use coldchain_proto::FaultKind;

const M: i64 = 60_000;
const H: i64 = 60 * M;

/// A profile with one zone.
fn one_zone(limit: &str, kind: &str, delay: &str, hysteresis: f64) -> Profile {
    toml::from_str(&format!(
        "name = \"test\"\n[[zones]]\nid = \"{}\"\nlimit = \"{limit}\"\nkind = \"{kind}\"\ndelay = \"{delay}\"\nseverity = \"critical\"\nhysteresis = {hysteresis}\n",
        if limit.starts_with('>') { "H1" } else { "L1" }
    ))
    .expect("test profile")
}

/// No settle, long max gap: nothing but the zone matters.
fn plain() -> ShipmentFacts {
    ShipmentFacts {
        settle_ms: 0,
        max_gap_ms: 24 * H,
        ..ShipmentFacts::departing_at(-H)
    }
}

fn series(points: &[(i64, i32)]) -> Series {
    points.iter().map(|&(t, v)| Sample::valid(t, v)).collect()
}

fn zones(p: &Profile, s: &Series, f: &ShipmentFacts) -> Vec<Condition> {
    alarm::evaluate(p, s, f)
        .into_iter()
        .filter(|c| matches!(c.id.kind, ConditionKind::Zone(_)))
        .collect()
}

#[test]
fn single_event_fires_exactly_at_the_delay() {
    let p = one_zone("> 8.0", "single", "30m", 0.0);
    let c = zones(&p, &series(&[(0, 9_000), (30 * M, 7_000)]), &plain());
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].fires_ms, Some(30 * M), "exactly at the delay fires");
    assert_eq!(c[0].cleared_ms, Some(30 * M));
    assert_eq!(c[0].beyond_ms, 30 * M);
    assert_eq!(c[0].peak, Some(9_000));
    // One millisecond short does not fire.
    let c = zones(&p, &series(&[(0, 9_000), (30 * M - 1, 7_000)]), &plain());
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].fires_ms, None, "{c:?}");
    assert_eq!(c[0].beyond_ms, 30 * M - 1);
}

#[test]
fn fire_moment_lies_between_readings() {
    let p = one_zone("> 8.0", "single", "30m", 0.0);
    let c = zones(&p, &series(&[(0, 9_000), (40 * M, 7_000)]), &plain());
    assert_eq!(
        c[0].fires_ms,
        Some(30 * M),
        "the value stands until the next reading"
    );
}

#[test]
fn exactly_at_the_limit_obeys_the_comparison() {
    // WHO: ">= 30.0" triggers at 30.0, not at 29.9.
    let ge = one_zone(">= 30.0", "single", "0", 0.0);
    let c = zones(&ge, &series(&[(0, 30_000), (M, 20_000)]), &plain());
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].fires_ms, Some(0), "delay 0 fires at once");
    assert!(zones(&ge, &series(&[(0, 29_900), (M, 20_000)]), &plain()).is_empty());
    assert!(zones(&ge, &series(&[(0, 29_999), (M, 20_000)]), &plain()).is_empty());
    // A 2-8 °C label includes 8.0.
    let gt = one_zone("> 8.0", "single", "0", 0.0);
    assert!(zones(&gt, &series(&[(0, 8_000), (M, 8_000)]), &plain()).is_empty());
    assert_eq!(
        zones(&gt, &series(&[(0, 8_001), (M, 8_000)]), &plain()).len(),
        1
    );
    // Low side.
    let le = one_zone("<= -0.5", "single", "0", 0.0);
    assert_eq!(zones(&le, &series(&[(0, -500)]), &plain()).len(), 1);
    assert!(zones(&le, &series(&[(0, -499)]), &plain()).is_empty());
    let lt = one_zone("< 2.0", "single", "0", 0.0);
    assert!(zones(&lt, &series(&[(0, 2_000)]), &plain()).is_empty());
    assert_eq!(
        zones(&lt, &series(&[(0, 1_999)]), &plain())[0].peak,
        Some(1_999)
    );
}

/// 20 min beyond, back, 20 min beyond: single-event never fires, cumulative
/// fires at 30 min of total, inside the second excursion.
#[test]
fn single_event_resets_cumulative_does_not() {
    let s = series(&[
        (0, 9_000),
        (20 * M, 7_000),
        (60 * M, 9_500),
        (80 * M, 7_000),
        (90 * M, 7_000),
    ]);
    let single = zones(&one_zone("> 8.0", "single", "30m", 0.0), &s, &plain());
    assert_eq!(single.len(), 2, "two separate excursions: {single:?}");
    assert!(single.iter().all(|c| c.fires_ms.is_none()), "{single:?}");
    assert_eq!(single[0].id.start_ms, 0);
    assert_eq!(single[1].id.start_ms, 60 * M);

    let cumul = zones(&one_zone("> 8.0", "cumulative", "30m", 0.0), &s, &plain());
    assert_eq!(cumul.len(), 1, "one condition per shipment: {cumul:?}");
    let c = &cumul[0];
    assert_eq!(c.id.start_ms, 0);
    assert_eq!(
        c.fires_ms,
        Some(70 * M),
        "20 min + 10 min of the second excursion"
    );
    assert_eq!(c.beyond_ms, 40 * M);
    assert_eq!(c.excursions, 2);
    assert_eq!(c.peak, Some(9_500));
    assert_eq!(c.cleared_ms, Some(80 * M), "the temperature is back");
    // Cumulative exactly at the delay fires.
    let exact = series(&[
        (0, 9_000),
        (20 * M, 7_000),
        (60 * M, 9_500),
        (70 * M, 7_000),
    ]);
    let c = zones(
        &one_zone("> 8.0", "cumulative", "30m", 0.0),
        &exact,
        &plain(),
    );
    assert_eq!(c[0].fires_ms, Some(70 * M));
    let short = series(&[
        (0, 9_000),
        (20 * M, 7_000),
        (60 * M, 9_500),
        (70 * M - 1, 7_000),
    ]);
    let c = zones(
        &one_zone("> 8.0", "cumulative", "30m", 0.0),
        &short,
        &plain(),
    );
    assert_eq!(c[0].fires_ms, None);
}

#[test]
fn settle_period_suppresses_and_clips() {
    let p = one_zone("> 8.0", "single", "30m", 0.0);
    let facts = ShipmentFacts {
        settle_ms: 10 * M,
        max_gap_ms: H,
        ..ShipmentFacts::departing_at(0)
    };
    // Warm only while settling: nothing.
    let s = series(&[
        (0, 20_000),
        (5 * M, 15_000),
        (10 * M, 5_000),
        (20 * M, 5_000),
    ]);
    assert!(zones(&p, &s, &facts).is_empty());
    // Warm from 5 min to 45 min: counted from the end of the settle period.
    let s = series(&[(0, 5_000), (5 * M, 9_000), (45 * M, 5_000)]);
    let c = zones(&p, &s, &facts);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].id.start_ms, 10 * M, "starts when settling ends");
    assert_eq!(c[0].fires_ms, Some(40 * M));
    assert_eq!(c[0].beyond_ms, 35 * M);
    // Without a settle period it would have fired at 35 min.
    let c = zones(
        &p,
        &s,
        &ShipmentFacts {
            settle_ms: 0,
            ..facts
        },
    );
    assert_eq!(c[0].fires_ms, Some(35 * M));
}

/// A value chattering around the limit inside the hysteresis band is one
/// condition (one identity, one alarm), not one per crossing.
#[test]
fn hysteresis_merges_chatter_and_delays_clearing() {
    let s = series(&[
        (0, 9_000),
        (10 * M, 7_800), // back within the limit, not cleared (needs <= 7.5)
        (20 * M, 9_000),
        (60 * M, 7_600),
        (70 * M, 7_500), // cleared
        (80 * M, 7_000),
    ]);
    let with = zones(&one_zone("> 8.0", "single", "30m", 0.5), &s, &plain());
    assert_eq!(with.len(), 1, "{with:?}");
    let c = &with[0];
    assert_eq!(c.id.start_ms, 0);
    assert_eq!(c.excursions, 2);
    assert_eq!(c.fires_ms, Some(50 * M), "the counter restarted at 20 min");
    assert_eq!(
        c.cleared_ms,
        Some(70 * M),
        "clears at 7.5, not at 7.8 or 7.6"
    );
    assert_eq!(c.beyond_ms, 50 * M);

    let without = zones(&one_zone("> 8.0", "single", "30m", 0.0), &s, &plain());
    assert_eq!(without.len(), 2, "{without:?}");
    assert_eq!(without[0].cleared_ms, Some(10 * M));
}

/// Two readings a millisecond apart, or the same reading twice, make one alarm.
#[test]
fn near_simultaneous_readings_make_one_alarm() {
    let p = one_zone("> 8.0", "single", "0", 0.0);
    let mut s = series(&[
        (0, 5_000),
        (10 * M, 9_000),
        (10 * M + 1, 9_100),
        (20 * M, 5_000),
    ]);
    s.insert(Sample::valid(10 * M, 9_000));
    let c = zones(&p, &s, &plain());
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].fires_ms, Some(10 * M));
}

/// Time beyond max gap is unknown: not counted beyond the limit, and it does not
/// reset the single-event counter either.
#[test]
fn a_long_gap_is_not_counted_as_time_beyond() {
    let p = one_zone("> 8.0", "single", "30m", 0.0);
    let s = series(&[(0, 9_000), (2 * H, 9_000), (2 * H + 10 * M, 7_000)]);
    let gap15 = ShipmentFacts {
        max_gap_ms: 15 * M,
        ..plain()
    };
    let c = zones(&p, &s, &gap15);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].beyond_ms,
        25 * M,
        "15 min before the gap + 10 min after"
    );
    assert_eq!(c[0].fires_ms, None);
    // With a 20 min max gap: 20 + 10 = 30 min, fires at the end, after the gap.
    let gap20 = ShipmentFacts {
        max_gap_ms: 20 * M,
        ..plain()
    };
    let c = zones(&p, &s, &gap20);
    assert_eq!(c[0].fires_ms, Some(2 * H + 10 * M), "{c:?}");
    // Trusting the gap fully, it fires 30 min after the start.
    let c = zones(&p, &s, &plain());
    assert_eq!(c[0].fires_ms, Some(30 * M));
}

/// The evidence rule: time after the newest reading is unknown, not assumed,
/// whatever the horizon. A zone fires when readings prove the condition for
/// its delay; no reading, no proof (silence is the silence alarm's job).
#[test]
fn time_after_the_newest_reading_is_unknown() {
    let p = one_zone("> 8.0", "single", "30m", 0.0);
    let s = series(&[(0, 5_000), (10 * M, 9_000)]);
    let c = zones(&p, &s, &plain());
    assert_eq!(c[0].fires_ms, None, "the last reading is an instant");
    let live = ShipmentFacts {
        end_ms: Some(40 * M),
        ..plain()
    };
    let c = zones(&p, &s, &live);
    assert_eq!(
        c[0].fires_ms, None,
        "a horizon 30 min after the excursion began proves nothing by itself"
    );
    assert_eq!(c[0].beyond_ms, 0);
    // A reading at 40 min, still beyond, proves the 30 min: it fires then.
    let proven = series(&[(0, 5_000), (10 * M, 9_000), (40 * M, 9_000)]);
    let c = zones(&p, &proven, &live);
    assert_eq!(c[0].fires_ms, Some(40 * M));
    assert!(c[0].is_active());
    // Readings after the horizon are ignored.
    let late = series(&[
        (0, 5_000),
        (10 * M, 9_000),
        (40 * M, 9_000),
        (50 * M, 5_000),
    ]);
    assert_eq!(zones(&p, &late, &live), c);
}

/// A disconnected RTD is a fault, never a temperature: -242 °C must not pass a
/// "<= -150" lane nor trip a low zone; it raises a probe fault.
#[test]
fn a_fault_feeds_no_zone_and_raises_a_probe_fault() {
    let p = Profile::builtin("cryo-ln2").expect("ln2");
    let facts = ShipmentFacts {
        settle_ms: 0,
        max_gap_ms: H,
        ..ShipmentFacts::departing_at(0)
    };
    let s: Series = [
        Sample::valid(0, -190_000),
        Sample::fault(10 * M, FaultKind::OpenCircuit),
        Sample::fault(20 * M, FaultKind::OpenCircuit),
        Sample::valid(30 * M, -189_000),
    ]
    .into_iter()
    .collect();
    let all = alarm::evaluate(&p, &s, &facts);
    assert_eq!(all.len(), 1, "{all:?}");
    let c = &all[0];
    assert_eq!(c.id.kind, ConditionKind::ProbeFault);
    assert_eq!(c.id.start_ms, 10 * M);
    assert_eq!(c.fires_ms, Some(10 * M));
    assert_eq!(c.cleared_ms, Some(30 * M));
    // Faults interrupt time beyond: 9 °C, fault, 9 °C counts only the valid stretches.
    let fridge = one_zone("> 8.0", "single", "30m", 0.0);
    let s: Series = [
        Sample::valid(0, 9_000),
        Sample::fault(20 * M, FaultKind::Short),
        Sample::valid(40 * M, 9_000),
        Sample::valid(45 * M, 5_000),
    ]
    .into_iter()
    .collect();
    let c = zones(&fridge, &s, &plain());
    assert_eq!(c[0].beyond_ms, 25 * M);
    assert_eq!(c[0].fires_ms, None);
}

/// Identities are stable: evaluating again with more data keeps the id of a
/// condition already raised, and its display form is a usable key.
#[test]
fn identity_survives_more_data_and_restarts() {
    let p = Profile::builtin("fridge").expect("fridge");
    let facts = ShipmentFacts {
        max_gap_ms: H,
        ..ShipmentFacts::departing_at(0)
    };
    let mut s = series(&[
        (0, 5_000),
        (20 * M, 5_000),
        (30 * M, 9_000),
        (70 * M, 9_000),
    ]);
    let before = alarm::evaluate(&p, &s, &facts);
    let h1 = ZoneId::high(1).expect("H1");
    let active = before
        .iter()
        .find(|c| c.id.kind == ConditionKind::Zone(h1))
        .expect("H1 excursion")
        .clone();
    assert_eq!(active.fires_ms, Some(60 * M));
    assert!(active.is_active());
    assert_eq!(active.id.to_string(), format!("H1@{}", 30 * M));
    // "Restart": evaluate again from the same data: identical.
    assert_eq!(alarm::evaluate(&p, &s, &facts), before);
    // More data arrives; the same condition clears (7.0 <= 8.0 - 0.5), same identity.
    s.extend([Sample::valid(80 * M, 7_000), Sample::valid(90 * M, 5_000)]);
    let after = alarm::evaluate(&p, &s, &facts);
    let same = after.iter().find(|c| c.id == active.id).expect("same id");
    assert_eq!(same.fires_ms, Some(60 * M));
    assert_eq!(same.cleared_ms, Some(80 * M));
    assert_eq!(
        after
            .iter()
            .filter(|c| c.id.kind == ConditionKind::Zone(h1))
            .count(),
        1
    );
}

#[test]
fn cryogenic_warming_events_and_time_above() {
    let p = Profile::builtin("cryo-ln2").expect("ln2");
    let facts = ShipmentFacts {
        settle_ms: 0,
        max_gap_ms: H,
        ..ShipmentFacts::departing_at(0)
    };
    let s = series(&[
        (0, -190_000),
        (10 * M, -130_000), // event 1
        (15 * M, -140_000), // cleared (<= -137 with 2.0 hysteresis)
        (20 * M, -120_000), // event 2
        (25 * M, -134_000), // still beyond
        (30 * M, -136_000), // within the limit, not cleared
        (35 * M, -125_000), // same event 2
        (40 * M, -190_000),
    ]);
    let w = warming::summary(&p, &s, &facts).expect("cryo lane");
    assert_eq!(w.events, 2, "{w:?}");
    assert_eq!(w.time_above_ms, 5 * M + 10 * M + 5 * M);
    assert_eq!(w.peak_milli_c, Some(-120_000));
    assert_eq!(w.first_ms, Some(10 * M));
    assert!(!w.above_now);
    assert_eq!(
        warming::summary(&Profile::builtin("fridge").expect("f"), &s, &facts),
        None
    );
}

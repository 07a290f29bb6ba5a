use super::*;
use crate::alarm::Sample;

const H: i64 = 3_600_000;

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[test]
fn equal_weight_vectors_of_domain_md() {
    for (input, want) in [
        (&[25.0, 25.0, 25.0][..], 25.0000),
        (&[20.0, 30.0][..], 26.2599),
        (&[2.0, 8.0][..], 5.5364),
        (&[20.0, 22.0, 24.0, 26.0, 28.0, 30.0][..], 25.6067),
    ] {
        let got = mkt_equal(input).expect("non-empty");
        assert_eq!(round4(got), want, "{input:?} -> {got}");
    }
}

#[test]
fn weighted_vectors_of_domain_md() {
    let a = mkt_weighted(&[(23.0, 25.0), (1.0, 40.0)]).expect("weights");
    assert_eq!(round4(a), 26.3721, "{a}");
    let b = mkt_weighted(&[(20.0, 5.0), (4.0, 15.0)]).expect("weights");
    assert_eq!(round4(b), 7.7046, "{b}");
    assert!(b <= 8.0, "passes <= 8");
}

#[test]
fn rate_factors_of_domain_md() {
    for (t, want) in [
        (8.0, 1.4676),
        (15.0, 3.4822),
        (25.0, 11.1525),
        (37.0, 40.8277),
    ] {
        let f = rate_factor(t, 5.0, DELTA_H_OVER_R_K);
        assert_eq!(round4(f), want, "{t} °C -> {f}");
    }
    assert_eq!(rate_factor(5.0, 5.0, DELTA_H_OVER_R_K), 1.0);
}

#[test]
fn degenerate_weights_give_none() {
    assert_eq!(mkt_equal(&[]), None);
    assert_eq!(mkt_weighted(&[(0.0, 20.0)]), None);
    assert_eq!(mkt_weighted(&[(-1.0, 20.0), (2.0, 20.0)]), None);
}

fn facts_until(end: i64) -> ShipmentFacts {
    ShipmentFacts {
        end_ms: Some(end),
        max_gap_ms: 48 * H,
        ..ShipmentFacts::departing_at(0)
    }
}

/// Irregular intervals: each reading weighs the time it stands for.
#[test]
fn series_is_time_weighted() {
    let p = Profile::builtin("ambient").expect("builtin");
    // 23 h at 25 °C then 1 h at 40 °C, as three readings (the last one
    // closes the hour: time after the newest reading is unknown).
    let s: Series = [
        Sample::valid(0, 25_000),
        Sample::valid(23 * H, 40_000),
        Sample::valid(24 * H, 40_000),
    ]
    .into_iter()
    .collect();
    let MktOutcome::Computed(r) = evaluate(&p, &s, &facts_until(24 * H)) else {
        panic!("computed")
    };
    assert_eq!(round4(r.whole_c), 26.3721, "{r:?}");
    assert_eq!(r.covered_ms, 24 * H);
    // Same with 24 hourly readings: the result must not depend on spacing.
    let s2: Series = (0..=24)
        .map(|h| Sample::valid(h * H, if h >= 23 { 40_000 } else { 25_000 }))
        .collect();
    let MktOutcome::Computed(r2) = evaluate(&p, &s2, &facts_until(24 * H)) else {
        panic!("computed")
    };
    assert!((r.whole_c - r2.whole_c).abs() < 1e-9);
}

#[test]
fn unknown_time_carries_no_weight() {
    let p = Profile::builtin("fridge").expect("builtin");
    // 20 h at 5, then silence (max gap 1 h) for 10 h, then 4 h at 15.
    let s: Series = [
        Sample::valid(0, 5_000),
        Sample::valid(20 * H, 15_000),
        Sample::valid(24 * H, 15_000),
    ]
    .into_iter()
    .collect();
    let facts = ShipmentFacts {
        end_ms: Some(24 * H),
        max_gap_ms: 20 * H,
        ..ShipmentFacts::departing_at(0)
    };
    let MktOutcome::Computed(r) = evaluate(&p, &s, &facts) else {
        panic!()
    };
    assert_eq!(round4(r.whole_c), 7.7046);
    let short_gap = ShipmentFacts {
        max_gap_ms: 10 * H,
        ..facts
    };
    let MktOutcome::Computed(r) = evaluate(&p, &s, &short_gap) else {
        panic!()
    };
    // 10 h at 5 and 4 h at 15: the 10 unknown hours are not spread at 5 °C.
    let want = mkt_weighted(&[(10.0, 5.0), (4.0, 15.0)]).expect("w");
    assert!((r.whole_c - want).abs() < 1e-9, "{} vs {want}", r.whole_c);
    assert_eq!(r.covered_ms, 14 * H);
}

#[test]
fn cryogenic_lanes_are_not_applicable() {
    let s: Series = [Sample::valid(0, -190_000), Sample::valid(H, -190_000)]
        .into_iter()
        .collect();
    for name in ["cryo-ln2", "cryo-80"] {
        let p = Profile::builtin(name).expect("builtin");
        assert_eq!(
            evaluate(&p, &s, &facts_until(2 * H)),
            MktOutcome::NotApplicable
        );
    }
    let p = Profile::builtin("fridge").expect("builtin");
    assert_eq!(
        evaluate(&p, &Series::new(), &facts_until(2 * H)),
        MktOutcome::NoData
    );
}

/// The sliding window finds the warmest 24 h, exactly: compare with a brute force
/// over every minute-aligned start.
#[test]
fn warmest_window_matches_brute_force() {
    let p = Profile::builtin("fridge").expect("builtin");
    let m = 60_000;
    // Three days of irregular readings with a warm afternoon on day 2.
    let mut samples = Vec::new();
    let mut t = 0;
    let mut i = 0i64;
    while t < 72 * H {
        let warm = (30 * H..36 * H).contains(&t);
        let v = if warm {
            12_000
        } else {
            4_000 + (i * 37 % 3_000) as i32
        };
        samples.push(Sample::valid(t, v));
        t += [7 * m, 13 * m, 5 * m, 21 * m][(i % 4) as usize];
        i += 1;
    }
    let s: Series = samples.into_iter().collect();
    let facts = ShipmentFacts {
        end_ms: Some(72 * H),
        max_gap_ms: H,
        ..ShipmentFacts::departing_at(0)
    };
    let MktOutcome::Computed(r) = evaluate(&p, &s, &facts) else {
        panic!()
    };
    let segs = s.known_segments(0, Some(72 * H), H);
    let mut best = f64::MIN;
    let mut start = 0;
    while start + 24 * H <= 72 * H {
        let pts: Vec<(f64, f64)> = segs
            .iter()
            .filter_map(|sg| {
                let a = sg.start_ms.max(start);
                let b = sg.end_ms.min(start + 24 * H);
                (b > a).then(|| ((b - a) as f64, f64::from(sg.milli_c) / 1000.0))
            })
            .collect();
        best = best.max(mkt_weighted(&pts).expect("covered"));
        start += m;
    }
    assert!(r.max_window.full);
    assert_eq!(r.max_window.end_ms - r.max_window.start_ms, 24 * H);
    assert!(
        r.max_window.mkt_c >= best - 1e-9,
        "{} < {best}",
        r.max_window.mkt_c
    );
    assert!(
        r.max_window.mkt_c <= best + 1e-6,
        "{} > {best}",
        r.max_window.mkt_c
    );
    assert!(r.max_window.mkt_c > r.whole_c);
    assert!(r.max_window.start_ms <= 30 * H && r.max_window.end_ms >= 36 * H);
}

#[test]
fn short_shipment_window_is_the_whole_span() {
    let p = Profile::builtin("fridge").expect("builtin");
    let s: Series = [
        Sample::valid(0, 2_000),
        Sample::valid(H, 8_000),
        Sample::valid(2 * H, 8_000),
    ]
    .into_iter()
    .collect();
    let MktOutcome::Computed(r) = evaluate(&p, &s, &facts_until(2 * H)) else {
        panic!()
    };
    assert_eq!(round4(r.whole_c), 5.5364);
    assert!(!r.max_window.full);
    assert_eq!(r.max_window.mkt_c, r.whole_c);
    assert_eq!(r.window_ms, 24 * H);
}

//! Order independence: evaluation depends on the set of readings, not on the order
//! or batching in which they arrive, nor on duplicates.

use coldchain_daemon::alarm::{self, Sample, SampleValue, Series, ShipmentFacts, warming};
use coldchain_daemon::profile::Profile;
use coldchain_daemon::{mkt, viability};
use coldchain_proto::FaultKind;
use proptest::prelude::*;

const M: i64 = 60_000;

fn value() -> impl Strategy<Value = SampleValue> {
    prop_oneof![
        // Around the fridge limits and the cryogenic warming limit, including
        // the exact limit values.
        8 => prop::sample::select(vec![
            -190_000, -136_000, -135_000, -134_000, -500, 0, 1_999, 2_000, 5_000, 7_500,
            8_000, 8_001, 9_000, 15_000, 30_000,
        ])
        .prop_map(SampleValue::Valid),
        8 => (-200_000i32..40_000).prop_map(SampleValue::Valid),
        1 => prop::sample::select(vec![FaultKind::OpenCircuit, FaultKind::Short, FaultKind::Crc])
            .prop_map(SampleValue::Fault),
    ]
}

/// Samples on a coarse grid so that timestamps collide (duplicates and
/// conflicting values at one instant both happen).
fn samples() -> impl Strategy<Value = Vec<Sample>> {
    prop::collection::vec(
        ((0i64..400).prop_map(|k| k * 3 * M), value())
            .prop_map(|(t_ms, value)| Sample { t_ms, value }),
        0..120,
    )
}

/// Everything evaluation produces, for comparison.
#[derive(Debug, PartialEq)]
struct Everything {
    alarms: Vec<alarm::Condition>,
    fridge_mkt: mkt::MktOutcome,
    viability: viability::ViabilityOutcome,
    cryo_alarms: Vec<alarm::Condition>,
    warming: Option<warming::WarmingSummary>,
}

fn evaluate_all(s: &Series) -> Everything {
    let fridge = Profile::builtin("fridge").expect("fridge");
    let ln2 = Profile::builtin("cryo-ln2").expect("ln2");
    let facts = ShipmentFacts {
        departure_ms: Some(30 * M),
        settle_ms: 10 * M,
        end_ms: Some(1_100 * M),
        eta_ms: Some(1_400 * M),
        collection_ms: Some(0),
        nominal_window_ms: Some(20 * 60 * M),
        max_gap_ms: 20 * M,
        sample_interval_ms: Some(3 * M),
        // The order property is about the record (an arrived shipment).
        live: None,
        data_until_ms: None,
    };
    Everything {
        alarms: alarm::evaluate(&fridge, s, &facts),
        fridge_mkt: mkt::evaluate(&fridge, s, &facts),
        viability: viability::evaluate(&fridge, s, &facts),
        cryo_alarms: alarm::evaluate(&ln2, s, &facts),
        warming: warming::summary(&ln2, s, &facts),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Shuffled, duplicated, split into batches that arrive in another order:
    /// the same series and the same alarms, MKT, viability and warming summary.
    #[test]
    fn any_arrival_order_gives_the_same_result(
        base in samples(),
        dup_picks in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        seed_perm in any::<u64>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let reference: Series = base.iter().copied().collect();
        let want = evaluate_all(&reference);

        // Add duplicates of existing readings.
        let mut arriving = base.clone();
        if !base.is_empty() {
            for i in &dup_picks {
                arriving.push(*i.get(&base));
            }
        }
        // Deterministic shuffle from the seed (Fisher-Yates with an LCG).
        let mut x = seed_perm | 1;
        for i in (1..arriving.len()).rev() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let j = (x >> 33) as usize % (i + 1);
            arriving.swap(i, j);
        }
        // Split into batches and deliver the batches last-first.
        let mut bounds: Vec<usize> = if arriving.is_empty() {
            Vec::new()
        } else {
            cuts.iter().map(|c| c.index(arriving.len())).collect()
        };
        bounds.push(0);
        bounds.push(arriving.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut live = Series::new();
        for w in bounds.windows(2).rev() {
            live.extend(arriving[w[0]..w[1]].iter().copied());
        }

        prop_assert_eq!(&live, &reference);
        prop_assert_eq!(live.conflicts(), reference.conflicts());
        prop_assert_eq!(evaluate_all(&live), want);
    }
}

/// Conflicting values at one instant (which only a faulty device produces) are
/// merged by a rule that does not depend on arrival order: a fault wins, else
/// the warmer reading. A last-writer-wins merge fails this test and the property.
#[test]
fn conflicting_values_at_one_instant_resolve_the_same_way_in_any_order() {
    let a = Sample::valid(0, 5_000);
    let b = Sample::valid(0, 9_000);
    let f = Sample::fault(0, FaultKind::OpenCircuit);
    let orders = [[a, b, f], [f, b, a], [b, a, f], [b, f, a]];
    let series: Vec<Series> = orders.iter().map(|o| o.iter().copied().collect()).collect();
    for s in &series {
        assert_eq!(s, &series[0]);
        assert_eq!(s.conflicts(), 1);
        assert_eq!(
            s.iter().next().map(|x| x.value),
            Some(f.value),
            "a fault wins"
        );
    }
    let warm: Series = [b, a].into_iter().collect();
    assert_eq!(
        warm.iter().next().map(|x| x.value),
        Some(b.value),
        "the warmer reading wins"
    );
}

use super::*;
use crate::alarm::Sample;
use crate::profile::{DecayModel, MilliC, Profile};

const M: i64 = 60_000;
const H: i64 = 60 * M;

fn arrhenius_profile() -> Profile {
    let mut p = Profile::builtin("fridge").expect("fridge");
    p.decay = Some(DecayModel::Arrhenius {
        activation_k: 10_000.0,
        reference: MilliC(5_000),
    });
    p
}

fn facts(window_h: i64, end: i64, eta: Option<i64>) -> ShipmentFacts {
    ShipmentFacts {
        collection_ms: Some(0),
        nominal_window_ms: Some(window_h * H),
        end_ms: Some(end),
        eta_ms: eta,
        max_gap_ms: 2 * H,
        ..ShipmentFacts::departing_at(0)
    }
}

fn report(p: &Profile, s: &Series, f: &ShipmentFacts) -> ViabilityReport {
    match evaluate(p, s, f) {
        ViabilityOutcome::Computed(r) => r,
        ViabilityOutcome::NotApplicable => panic!("not applicable"),
    }
}

/// One hour at 25 °C uses 11.1525 h of a window defined at 5 °C (Arrhenius,
/// Ea/R = 10 000 K, docs/domain.md §3 rate factors); an hour at 5 °C uses one hour.
#[test]
fn arrhenius_consumption_matches_the_rate_factors() {
    let p = arrhenius_profile();
    for (c, factor) in [
        (5.0, 1.0),
        (8.0, 1.4676),
        (15.0, 3.4822),
        (25.0, 11.1525),
        (37.0, 40.8277),
    ] {
        let milli = (c * 1000.0) as i32;
        let s: Series = [Sample::valid(0, milli), Sample::valid(H, milli)]
            .into_iter()
            .collect();
        let r = report(&p, &s, &facts(48, H, None));
        let used_h = r.consumed_ms as f64 / H as f64;
        assert!(
            (used_h - factor).abs() < 5e-5,
            "{c} °C: {used_h} vs {factor}"
        );
        assert_eq!(r.remaining_ms, 48 * H - r.consumed_ms);
        assert_eq!(r.unknown_ms, 0);
        assert_eq!(r.loss_pct, None);
    }
}

/// Antonenas figures as a table: 24 h at room temperature (22 °C) loses
/// 24 × 0.60 = 14.4 % and uses 24 × 0.60 / 0.39 h of a window defined at 5 °C.
#[test]
fn table_consumption_and_loss() {
    let p = Profile::builtin("fridge").expect("fridge");
    let s: Series = (0..=24).map(|h| Sample::valid(h * H, 22_000)).collect();
    let r = report(&p, &s, &facts(72, 24 * H, None));
    let want = 24.0 * 0.60 / 0.39;
    assert!(
        (r.consumed_ms as f64 / H as f64 - want).abs() < 1e-6,
        "{r:?}"
    );
    let loss = r.loss_pct.expect("table model");
    assert!((loss - 14.4).abs() < 1e-9, "{loss}");
    // 72 h at 5 °C: 28.1 % (Antonenas: 28.0 %), exactly the window.
    let s: Series = (0..72).map(|h| Sample::valid(h * H, 5_000)).collect();
    let r = report(&p, &s, &facts(72, 72 * H, None));
    assert!((r.loss_pct.expect("table") - 28.08).abs() < 1e-9);
    assert_eq!(r.remaining_ms, 0);
}

/// The window is gone exactly when consumption reaches it, inside a stretch.
#[test]
fn gone_fires_at_the_exact_moment() {
    let p = arrhenius_profile();
    let s: Series = (0..=12).map(|h| Sample::valid(h * H, 5_000)).collect();
    let r = report(&p, &s, &facts(10, 12 * H, None));
    let gone = r
        .conditions
        .iter()
        .find(|c| c.id.kind == ConditionKind::ViabilityGone)
        .expect("gone");
    assert_eq!(gone.fires_ms, Some(10 * H));
    assert_eq!(
        gone.id.start_ms, 0,
        "one per shipment: identity at the window start"
    );
    assert_eq!(gone.severity, Severity::Critical);
    assert_eq!(r.remaining_ms, 0);
    // Not yet gone one millisecond earlier.
    let r = report(&p, &s, &facts(10, 10 * H - 1, None));
    assert!(
        r.conditions
            .iter()
            .all(|c| c.id.kind != ConditionKind::ViabilityGone)
    );
    assert_eq!(r.remaining_ms, 1);
}

/// If the current temperature persists, how much is left at ETA?
#[test]
fn prediction_at_eta_uses_the_current_temperature() {
    let p = arrhenius_profile();
    // 2 h at 5 °C, then 25 °C from 2 h; now is 3 h (read at 3 h); ETA at 5 h.
    let s: Series = [
        Sample::valid(0, 5_000),
        Sample::valid(2 * H, 25_000),
        Sample::valid(3 * H, 25_000),
    ]
    .into_iter()
    .collect();
    let r = report(&p, &s, &facts(48, 3 * H, Some(5 * H)));
    let f25 = crate::mkt::rate_factor(25.0, 5.0, 10_000.0);
    let remaining = 48.0 - 2.0 - f25;
    let predicted = remaining - 2.0 * f25;
    assert!((r.remaining_ms as f64 / H as f64 - remaining).abs() < 1e-6);
    let got = r.predicted_at_eta_ms.expect("eta") as f64 / H as f64;
    assert!((got - predicted).abs() < 1e-6, "{got} vs {predicted}");
    assert_eq!(r.current_milli_c, Some(25_000));
    let runs_out = r.runs_out_ms.expect("positive rate");
    assert!(((runs_out - 3 * H) as f64 / H as f64 - remaining / f25).abs() < 1e-6);
}

/// The warning comes *before* the window runs out: at the first reading where
/// the window predicted at ETA is at or below the margin.
#[test]
fn warning_precedes_the_crossing() {
    let p = arrhenius_profile(); // margin 4 h
    // 48 h window, ETA at 40 h. Cold until 10 h, then 15 °C (factor 3.48).
    let mut samples: Vec<Sample> = (0..10).map(|h| Sample::valid(h * H, 5_000)).collect();
    samples.extend((10..=20).map(|h| Sample::valid(h * H, 15_000)));
    let s: Series = samples.into_iter().collect();
    let r = report(&p, &s, &facts(48, 20 * H, Some(40 * H)));
    let warn = r
        .conditions
        .iter()
        .find(|c| c.id.kind == ConditionKind::ViabilityWarning)
        .expect("warning");
    // At 10 h: remaining 38 h; predicted at ETA = 38 - 30 × 3.48 < 4: warns at once.
    assert_eq!(warn.fires_ms, Some(10 * H));
    assert_eq!(warn.id.start_ms, 0);
    assert!(warn.is_active());
    let gone = r
        .conditions
        .iter()
        .find(|c| c.id.kind == ConditionKind::ViabilityGone);
    assert!(gone.is_none(), "warned while window remains: {r:?}");
    assert!(r.remaining_ms > 0);

    // One hour at 8 °C: *if it persisted* 30 h to ETA, 30 × 1.47 h would be used
    // and less than the margin left, so it warns at that reading and clears at the
    // next one, back at 5 °C.
    let blip: Series = (0..=20)
        .map(|h| Sample::valid(h * H, if h == 10 { 8_000 } else { 5_000 }))
        .collect();
    let r = report(&p, &blip, &facts(48, 20 * H, Some(40 * H)));
    assert_eq!(r.conditions.len(), 1, "{r:?}");
    assert_eq!(r.conditions[0].fires_ms, Some(10 * H));
    assert_eq!(r.conditions[0].cleared_ms, Some(11 * H));
    // Cold throughout: 48 - 40 = 8 h at ETA > 4 h margin: no warning.
    let cold: Series = (0..=20).map(|h| Sample::valid(h * H, 5_000)).collect();
    let r = report(&p, &cold, &facts(48, 20 * H, Some(40 * H)));
    assert!(r.conditions.is_empty(), "{r:?}");
    assert_eq!(r.predicted_at_eta_ms, Some(8 * H));
}

#[test]
fn warning_exactly_at_the_margin_fires() {
    let mut p = arrhenius_profile();
    p.viability.margin_ms = 8 * H;
    // 5 °C throughout, 48 h window, ETA 40 h: predicted at ETA is exactly 8 h.
    let s: Series = [Sample::valid(0, 5_000)].into_iter().collect();
    let r = report(&p, &s, &facts(48, H, Some(40 * H)));
    assert_eq!(r.predicted_at_eta_ms, Some(8 * H));
    assert_eq!(r.conditions.len(), 1, "{r:?}");
    assert_eq!(r.conditions[0].fires_ms, Some(0));
    p.viability.margin_ms = 8 * H - 1;
    let r = report(&p, &s, &facts(48, H, Some(40 * H)));
    assert!(r.conditions.is_empty());
}

#[test]
fn unknown_time_uses_the_unknown_factor() {
    let mut p = arrhenius_profile();
    p.viability.unknown_rate_factor = 2.0;
    // Collected at 0, readings at 1 h and 3 h, then nothing, horizon at 6 h:
    // 1 h unknown before, 2 h known at 5 °C, 3 h unknown after the newest
    // reading (which is more than the 2 h max gap old: it no longer stands).
    let s: Series = [Sample::valid(H, 5_000), Sample::valid(3 * H, 5_000)]
        .into_iter()
        .collect();
    let r = report(&p, &s, &facts(48, 6 * H, Some(7 * H)));
    assert_eq!(r.unknown_ms, 4 * H);
    assert_eq!(r.consumed_ms, 2 * H + 4 * 2 * H);
    assert_eq!(r.current_milli_c, None, "the last reading no longer stands");
    assert_eq!(r.current_rate_factor, 2.0);
}

#[test]
fn not_applicable_without_window_or_decay_model() {
    let s: Series = [Sample::valid(0, -190_000)].into_iter().collect();
    let ln2 = Profile::builtin("cryo-ln2").expect("ln2");
    assert_eq!(
        evaluate(&ln2, &s, &facts(48, H, None)),
        ViabilityOutcome::NotApplicable
    );
    let fridge = Profile::builtin("fridge").expect("fridge");
    let no_window = ShipmentFacts {
        nominal_window_ms: None,
        ..facts(48, H, None)
    };
    assert_eq!(
        evaluate(&fridge, &s, &no_window),
        ViabilityOutcome::NotApplicable
    );
}

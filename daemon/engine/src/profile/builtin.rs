//! The built-in profiles. Numbers are defaults from `docs/domain.md`; every one
//! of them can be replaced by a profile of the same name in configuration.

use super::{
    Comparison, DecayModel, DecayPoint, HealthLimits, Limit, MilliC, MktSettings, Nominal, Profile,
    Severity, TiltLimit, ViabilitySettings, WarmingSpec, Zone, ZoneKind,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn zone(
    id: &str,
    limit: &str,
    kind: ZoneKind,
    delay_ms: i64,
    severity: Severity,
    hysteresis_milli: i32,
    label: &str,
) -> Zone {
    Zone {
        id: id
            .parse()
            .unwrap_or_else(|()| unreachable!("built-in zone id {id}")),
        limit: limit
            .parse()
            .unwrap_or_else(|e| unreachable!("built-in limit {limit}: {e}")),
        kind,
        delay_ms,
        severity,
        hysteresis: MilliC(hysteresis_milli),
        label: Some(label.to_owned()),
    }
}

/// Loss of viable CD34+ cells in fresh PBSC (Antonenas et al., docs/domain.md §2),
/// turned into a plausible per-hour table: 2-8 °C 28.0 % / 72 h = 0.39 %/h;
/// room temperature 43.3 % / 72 h = 0.60 %/h; 37 °C, none left after 24 h, so at
/// least 100 % / 24 h = 4.17 %/h. Clamped below 5 °C and above 37 °C.
pub(crate) fn antonenas_points() -> Vec<DecayPoint> {
    vec![
        DecayPoint(MilliC(5_000), 0.39),
        DecayPoint(MilliC(22_000), 0.60),
        DecayPoint(MilliC(37_000), 4.17),
    ]
}

fn cryo_health() -> HealthLimits {
    HealthLimits {
        silent_after_intervals: 3,
        probe_fault_delay_ms: 0,
        lid_open_max_ms: Some(5 * MIN),
        // A dry shipper on its side loses its hold time in hours (docs/domain.md §1).
        tilt: Some(TiltLimit {
            max_deg: 45,
            delay_ms: 10 * MIN,
            severity: Severity::Critical,
        }),
        battery_low_mv: Some(3300),
    }
}

pub(crate) fn cryo_ln2() -> Profile {
    use Severity::*;
    use ZoneKind::*;
    Profile {
        name: "cryo-ln2".into(),
        cryogenic: true,
        nominal: Nominal {
            min: None,
            max: Some(MilliC(-150_000)),
        },
        zones: vec![
            zone(
                "H1",
                "> -150.0",
                Single,
                10 * MIN,
                Warning,
                2_000,
                "above nominal (<= -150 °C)",
            ),
            zone(
                "H2",
                "> -135.0",
                Single,
                0,
                Critical,
                2_000,
                "glass-transition risk",
            ),
            zone(
                "L1",
                "< -205.0",
                Single,
                0,
                Warning,
                2_000,
                "below LN2 boiling point: suspect the probe",
            ),
        ],
        decay: None,
        mkt: None,
        viability: ViabilitySettings::default(),
        warming: Some(WarmingSpec {
            limit: Limit::new(Comparison::Above, -135_000),
            hysteresis: MilliC(2_000),
        }),
        health: cryo_health(),
        settle_ms: None,
    }
}

pub(crate) fn cryo_80() -> Profile {
    use Severity::*;
    use ZoneKind::*;
    Profile {
        name: "cryo-80".into(),
        cryogenic: true,
        nominal: Nominal {
            min: None,
            max: Some(MilliC(-70_000)),
        },
        zones: vec![
            zone(
                "H1",
                ">= -70.0",
                Single,
                30 * MIN,
                Warning,
                2_000,
                "above -70 °C",
            ),
            // LogTag -80 °C example (docs/domain.md §4).
            zone(
                "H2",
                ">= -70.0",
                Cumulative,
                10 * HOUR,
                Critical,
                2_000,
                "10 h in total above -70 °C",
            ),
            zone(
                "H3",
                "> -60.0",
                Single,
                0,
                Critical,
                2_000,
                "well above -70 °C",
            ),
        ],
        decay: None,
        mkt: None,
        viability: ViabilitySettings::default(),
        warming: Some(WarmingSpec {
            limit: Limit::new(Comparison::AtOrAbove, -70_000),
            hysteresis: MilliC(2_000),
        }),
        health: cryo_health(),
        settle_ms: None,
    }
}

pub(crate) fn fridge() -> Profile {
    use Severity::*;
    use ZoneKind::*;
    Profile {
        name: "fridge".into(),
        cryogenic: false,
        nominal: Nominal {
            min: Some(MilliC(2_000)),
            max: Some(MilliC(8_000)),
        },
        zones: vec![
            // A 2-8 °C label includes 8.0: the upper zone is "> 8.0" (docs/domain.md §4).
            zone("H1", "> 8.0", Single, 30 * MIN, Warning, 500, "above 8 °C"),
            zone(
                "H2",
                "> 8.0",
                Cumulative,
                2 * HOUR,
                Critical,
                500,
                "2 h in total above 8 °C",
            ),
            zone(
                "H3",
                ">= 15.0",
                Single,
                10 * MIN,
                Critical,
                500,
                "at or above 15 °C",
            ),
            zone("L1", "< 2.0", Single, 30 * MIN, Warning, 500, "below 2 °C"),
            zone(
                "L2",
                "<= 0.0",
                Single,
                10 * MIN,
                Critical,
                500,
                "freezing risk",
            ),
        ],
        decay: Some(DecayModel::Table {
            reference: MilliC(5_000),
            points: antonenas_points(),
        }),
        mkt: Some(MktSettings { window_ms: DAY }),
        viability: ViabilitySettings::default(),
        warming: None,
        health: HealthLimits {
            silent_after_intervals: 3,
            probe_fault_delay_ms: 0,
            lid_open_max_ms: Some(2 * MIN),
            tilt: None,
            battery_low_mv: Some(3300),
        },
        settle_ms: None,
    }
}

pub(crate) fn ambient() -> Profile {
    use Severity::*;
    use ZoneKind::*;
    Profile {
        name: "ambient".into(),
        cryogenic: false,
        nominal: Nominal {
            min: Some(MilliC(15_000)),
            max: Some(MilliC(25_000)),
        },
        zones: vec![
            zone(
                "H1",
                "> 25.0",
                Single,
                30 * MIN,
                Warning,
                500,
                "above 25 °C",
            ),
            // WHO PQS E006 Type 1: >= 30 °C cumulative 10 h (docs/domain.md §4).
            zone(
                "H2",
                ">= 30.0",
                Cumulative,
                10 * HOUR,
                Critical,
                500,
                "10 h in total at or above 30 °C",
            ),
            zone(
                "H3",
                ">= 37.0",
                Single,
                15 * MIN,
                Critical,
                500,
                "body temperature or above",
            ),
            zone(
                "L1",
                "< 15.0",
                Single,
                30 * MIN,
                Warning,
                500,
                "below 15 °C",
            ),
            zone(
                "L2",
                "< 10.0",
                Single,
                30 * MIN,
                Critical,
                500,
                "well below 15 °C",
            ),
        ],
        decay: Some(DecayModel::Table {
            reference: MilliC(22_000),
            points: antonenas_points(),
        }),
        mkt: Some(MktSettings {
            window_ms: 30 * DAY,
        }),
        viability: ViabilitySettings::default(),
        warming: None,
        health: HealthLimits {
            silent_after_intervals: 3,
            probe_fault_delay_ms: 0,
            lid_open_max_ms: Some(5 * MIN),
            tilt: None,
            battery_low_mv: Some(3300),
        },
        settle_ms: None,
    }
}

use super::*;

fn parse(toml_text: &str) -> Result<Profile, String> {
    toml::from_str::<Profile>(toml_text).map_err(|e| e.to_string())
}

const FRIDGE_48H: &str = r#"
name = "fridge-48h"
nominal = { min = 2.0, max = 8.0 }
mkt = { window = "24h" }
viability = { margin = "4h" }
decay = { model = "arrhenius", activation_k = 10000.0, reference = 5.0 }
health = { silent_after_intervals = 4, lid_open_max = "2m", battery_low_mv = 3300 }

[[zones]]
id = "H1"
limit = "> 8.0"
kind = "single"
delay = "30m"
severity = "warning"
hysteresis = 0.5

[[zones]]
id = "L1"
limit = "<= -0.5"
kind = "single"
delay = "1h"
severity = "critical"

[[zones]]
id = "H2"
limit = ">= 30.0"
kind = "cumulative"
delay = "10h"
severity = "critical"
"#;

#[test]
fn builtins_exist_and_validate() {
    for name in BUILTIN_NAMES {
        let p = Profile::builtin(name).expect(name);
        assert_eq!(p.name, name);
        p.validate().expect(name);
    }
    assert!(matches!(
        Profile::builtin("fridge2"),
        Err(ProfileError::UnknownBuiltin(n)) if n == "fridge2"
    ));
    let ln2 = Profile::builtin("cryo-ln2").expect("ln2");
    assert!(ln2.cryogenic && ln2.mkt.is_none() && ln2.decay.is_none());
    assert_eq!(
        ln2.warming.map(|w| w.limit),
        Some(Limit::new(Comparison::Above, -135_000))
    );
    let fridge = Profile::builtin("fridge").expect("fridge");
    let h1 = fridge
        .zone(ZoneId::high(1).expect("H1"))
        .expect("fridge H1");
    assert_eq!(h1.limit.to_string(), "> 8.0");
    assert_eq!(fridge.mkt.map(|m| m.window_ms), Some(24 * 3_600_000));
    let ambient = Profile::builtin("ambient").expect("ambient");
    assert_eq!(ambient.mkt.map(|m| m.window_ms), Some(30 * 24 * 3_600_000));
}

#[test]
fn parses_from_toml_with_exact_limits_and_durations() {
    let p = parse(FRIDGE_48H).expect("valid");
    assert_eq!(p.name, "fridge-48h");
    // Sorted by id: H1, H2, L1.
    let ids: Vec<String> = p.zones.iter().map(|z| z.id.to_string()).collect();
    assert_eq!(ids, ["H1", "H2", "L1"]);
    assert_eq!(p.zones[0].limit, Limit::new(Comparison::Above, 8_000));
    assert_eq!(p.zones[0].delay_ms, 30 * 60_000);
    assert_eq!(p.zones[0].hysteresis, MilliC(500));
    assert_eq!(p.zones[1].kind, ZoneKind::Cumulative);
    assert_eq!(p.zones[1].limit, Limit::new(Comparison::AtOrAbove, 30_000));
    assert_eq!(p.zones[2].limit, Limit::new(Comparison::AtOrBelow, -500));
    assert_eq!(p.zones[2].hysteresis, MilliC(0));
    assert_eq!(p.health.silent_after_intervals, 4);
    assert_eq!(p.health.lid_open_max_ms, Some(120_000));
    assert_eq!(p.viability.margin_ms, 4 * 3_600_000);
    assert!(!p.cryogenic);
}

#[test]
fn serde_round_trip_of_every_builtin() {
    for name in BUILTIN_NAMES {
        let p = Profile::builtin(name).expect(name);
        let json = serde_json::to_string(&p).expect("serialise");
        let back: Profile = serde_json::from_str(&json).expect(&json);
        assert_eq!(back, p, "{json}");
        let toml_text = toml::to_string(&p).expect("toml");
        let back: Profile = toml::from_str(&toml_text).expect(&toml_text);
        assert_eq!(back, p, "{toml_text}");
    }
}

fn with_zone(id: &str, limit: &str) -> String {
    format!(
        "name = \"lane-x\"\n[[zones]]\nid = \"{id}\"\nlimit = \"{limit}\"\nkind = \"single\"\ndelay = \"1h\"\nseverity = \"info\"\n"
    )
}

#[test]
fn a_fifth_high_or_fourth_low_zone_is_refused_naming_profile_and_zone() {
    let e = parse(&with_zone("H5", "> 40.0")).expect_err("H5");
    assert!(
        e.contains("lane-x") && e.contains("H5") && e.contains("at most 4 high"),
        "{e}"
    );
    let e = parse(&with_zone("L4", "< 0.0")).expect_err("L4");
    assert!(
        e.contains("lane-x") && e.contains("L4") && e.contains("3 low"),
        "{e}"
    );
    let e = parse(&with_zone("X1", "> 0.0")).expect_err("X1");
    assert!(e.contains("X1"), "{e}");
    // The limits of what is allowed are accepted.
    parse(&with_zone("H4", "> 40.0")).expect("H4");
    parse(&with_zone("L3", "< 0.0")).expect("L3");
}

#[test]
fn hand_built_profile_with_too_many_zones_is_refused() {
    let mut p = Profile::builtin("fridge").expect("fridge");
    let z = p.zones[0].clone();
    p.zones = (0..5).map(|_| z.clone()).collect();
    let e = p.validate().expect_err("5 high zones");
    assert!(
        matches!(
            &e,
            ProfileError::TooManyZones {
                count: 5,
                max: 4,
                side: Side::High,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("fridge"), "{e}");
}

#[test]
fn duplicate_zone_wrong_side_and_bad_values_are_refused() {
    let second = with_zone("H1", "> 9.0");
    let dup = format!(
        "{}{}",
        with_zone("H1", "> 8.0"),
        second.split_once('\n').expect("name line").1
    );
    let e = parse(&dup).expect_err("dup");
    assert!(
        e.contains("lane-x") && e.contains("H1") && e.contains("twice"),
        "{e}"
    );
    let e = parse(&with_zone("H1", "< 2.0")).expect_err("wrong side");
    assert!(
        e.contains("H1") && e.contains("< 2.0") && e.contains("high"),
        "{e}"
    );
    let e = parse(&with_zone("L1", ">= 2.0")).expect_err("wrong side");
    assert!(e.contains("L1"), "{e}");
    let e = parse(&with_zone("H1", "8.0")).expect_err("no comparison");
    assert!(e.contains("comparison"), "{e}");
    let e = parse(&with_zone("H1", "> 8.0001")).expect_err("too precise");
    assert!(e.contains("3 decimals"), "{e}");
    let e = parse(&format!("{}extra = 1\n", with_zone("H1", "> 8.0"))).expect_err("unknown");
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn mkt_on_a_cryogenic_lane_and_bad_decay_tables_are_refused() {
    let e = parse("name = \"c\"\ncryogenic = true\nmkt = { window = \"24h\" }\n").expect_err("mkt");
    assert!(e.contains("\"c\"") && e.contains("cryogenic"), "{e}");
    let e = parse(
        "name = \"t\"\ndecay = { model = \"table\", reference = 5.0, points = [[22.0, 0.6], [5.0, 0.39]] }\n",
    )
    .expect_err("unsorted");
    assert!(e.contains("increase"), "{e}");
    let e = parse(
        "name = \"t\"\ndecay = { model = \"table\", reference = 5.0, points = [[5.0, 0.0], [22.0, 0.6]] }\n",
    )
    .expect_err("zero at reference");
    assert!(e.contains("reference"), "{e}");
    let e = parse(
        "name = \"t\"\ndecay = { model = \"arrhenius\", activation_k = -1.0, reference = 5.0 }\n",
    )
    .expect_err("negative Ea");
    assert!(e.contains("activation_k"), "{e}");
}

#[test]
fn comparisons_obey_the_limit_exactly() {
    let ge30: Limit = ">= 30.0".parse().expect("limit");
    assert!(ge30.is_beyond(30_000), "WHO: 30.0 triggers >= 30.0");
    assert!(!ge30.is_beyond(29_900), "29.9 does not");
    assert!(!ge30.is_beyond(29_999));
    let gt8: Limit = "> 8.0".parse().expect("limit");
    assert!(!gt8.is_beyond(8_000), "a 2-8 °C label includes 8.0");
    assert!(gt8.is_beyond(8_001));
    let lt2: Limit = "< 2.0".parse().expect("limit");
    assert!(!lt2.is_beyond(2_000) && lt2.is_beyond(1_999));
    let le: Limit = "<= -0.5".parse().expect("limit");
    assert!(le.is_beyond(-500) && !le.is_beyond(-499));
    assert_eq!(le.to_string(), "<= -0.5");
}

#[test]
fn hysteresis_moves_the_clearing_point_towards_the_range() {
    let gt8: Limit = "> 8.0".parse().expect("limit");
    assert!(!gt8.is_cleared(7_600, 500));
    assert!(gt8.is_cleared(7_500, 500), "> 8.0 with 0.5 clears at 7.5");
    assert!(
        gt8.is_cleared(8_000, 0),
        "no hysteresis: back within the limit clears"
    );
    let ge30: Limit = ">= 30.0".parse().expect("limit");
    assert!(!ge30.is_cleared(29_000, 1_000));
    assert!(ge30.is_cleared(28_999, 1_000));
    let lt2: Limit = "< 2.0".parse().expect("limit");
    assert!(!lt2.is_cleared(2_400, 500));
    assert!(lt2.is_cleared(2_500, 500));
}

#[test]
fn decay_table_interpolates_and_clamps() {
    let DecayModel::Table { .. } = Profile::builtin("fridge").expect("f").decay.expect("decay")
    else {
        panic!("fridge uses a table")
    };
    let m = Profile::builtin("fridge").expect("f").decay.expect("decay");
    assert_eq!(m.loss_pct_per_hour(5_000), Some(0.39));
    assert_eq!(m.loss_pct_per_hour(-10_000), Some(0.39), "clamped below");
    assert_eq!(m.loss_pct_per_hour(50_000), Some(4.17), "clamped above");
    let mid = m.loss_pct_per_hour(13_500).expect("table");
    assert!((mid - (0.39 + 0.21 / 2.0)).abs() < 1e-12, "{mid}");
    assert_eq!(m.rate_factor(5_000), 1.0);
    assert!((m.rate_factor(22_000) - 0.60 / 0.39).abs() < 1e-12);
}

/// The example in the module documentation is exactly what `coldchain.toml`
/// takes (`[[profiles]]` and `[[profiles.zones]]`), and a profile can set its
/// own settle period.
#[test]
fn the_documented_example_parses_as_configuration_with_its_settle_period() {
    #[derive(serde::Deserialize)]
    struct Top {
        profiles: Vec<Profile>,
    }
    let doc = include_str!("../profile.rs");
    let start = doc.find("//! ```toml\n").expect("example") + "//! ```toml\n".len();
    let end = start + doc[start..].find("//! ```\n").expect("end of example");
    let text: String = doc[start..end]
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start_matches(' '))
        .collect::<Vec<_>>()
        .join("\n");
    let top: Top = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p = &top.profiles[0];
    assert_eq!(p.name, "fridge-48h");
    assert_eq!(p.settle_ms, Some(15 * 60_000));
    assert_eq!(p.zones.len(), 1);
    // Without `settle`, the daemon's alerts.settle_s applies.
    assert_eq!(parse(FRIDGE_48H).unwrap().settle_ms, None);
}

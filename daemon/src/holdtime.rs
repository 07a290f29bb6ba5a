//! The dry shipper's hold time at ETA in a shipment's status: the engine's
//! prediction ([`coldchain_engine::holdtime`]) from an evaluation's record.
//!
//! On a cryogenic lane with a nominal maximum (`cryo-ln2`: -150 °C), from the
//! valid readings, the latest tilt condition's start and the shipment's ETA
//! (so a new ETA gives a new comparison at the next evaluation).

use coldchain_engine::holdtime::{self, HoldPrediction, HoldSpec};

use crate::alarm::{Condition, ConditionKind};
use crate::evaluate::Evaluator;
use crate::profile::Profile;

/// Shipments of a shipper's history that set its baseline.
pub const BASELINE_SHIPMENTS: usize = 3;

/// The prediction as the status document carries it (`hold_time`): the
/// engine's fields and `sentence`, or `None` without a warming trend.
pub fn status(p: Option<&HoldPrediction>) -> Option<serde_json::Value> {
    let p = p?;
    let mut v = serde_json::to_value(p).ok()?;
    v["sentence"] = p.sentence().into();
    Some(v)
}

/// The prediction with the configured margin from the recent valid readings
/// (`tracker::View::recent`, the last two days), the conditions (the latest
/// tilt) and the ETA, or `None` (not a cryogenic lane with a nominal
/// maximum, or no warming trend).
pub fn prediction(
    profile: &Profile,
    recent: &[(i64, i32)],
    conditions: &[Condition],
    eta_ms: Option<i64>,
    margin_ms: i64,
) -> Option<HoldPrediction> {
    if !profile.cryogenic {
        return None;
    }
    let limit = profile.nominal.max?.0;
    let mut points = recent.to_vec();
    // Already beyond the limit: the prediction as it stood at the last
    // reading before, and when the readings crossed.
    let mut crossed_ms = None;
    if points.last().is_some_and(|p| p.1 > limit) {
        let k = points.iter().rposition(|p| p.1 <= limit)?;
        crossed_ms = Some(points[k + 1].0);
        points.truncate(k + 1);
    }
    let tilt = conditions
        .iter()
        .filter(|c| c.id.kind == ConditionKind::Tilt)
        .map(|c| c.start_ms())
        .max();
    let mut p = holdtime::predict(
        &HoldSpec {
            margin_ms,
            ..HoldSpec::for_limit(limit)
        },
        &points,
        tilt,
        eta_ms,
    )?;
    p.crossed_ms = crossed_ms;
    Some(p)
}

/// The history of the device `id` as the route returns it (blocking: it
/// evaluates every shipment the device watched).
pub fn history_json(reader: &Evaluator, id: &str) -> anyhow::Result<serde_json::Value> {
    let now = crate::ingest::now_ms();
    let mut rates = Vec::new();
    for sh in reader.shipments.all()? {
        if !sh.watch.iter().any(|w| w.device == id) {
            continue;
        }
        let ev = reader.evaluate(&sh, now)?;
        if let Some(p) = &ev.hold_time {
            rates.push((sh.id.clone(), p.fit_from_ms, p.rate_mc_per_h));
        }
    }
    let factor = reader.config().alerts.shipper_rate_factor;
    Ok(serde_json::json!({
        "device": id,
        "baseline_shipments": BASELINE_SHIPMENTS,
        "factor": factor,
        "shipments": holdtime::shipper_history(rates, BASELINE_SHIPMENTS, factor),
    }))
}

//! The dry shipper's hold time at ETA in a shipment's status: the engine's
//! prediction ([`coldchain_engine::holdtime`]) from an evaluation's record.
//!
//! On a cryogenic lane with a nominal maximum (`cryo-ln2`: -150 °C), from the
//! valid readings, the latest tilt condition's start and the shipment's ETA
//! (so a new ETA gives a new comparison at the next evaluation).

use coldchain_engine::holdtime::{self, HoldPrediction, HoldSpec};

use crate::alarm::ConditionKind;
use crate::evaluate::Evaluation;

/// The prediction as the status document carries it (`hold_time`): the
/// engine's fields and `sentence`, or `None` without a warming trend.
pub fn status(ev: &Evaluation) -> Option<serde_json::Value> {
    let p = ev.hold_time.as_ref()?;
    let mut v = serde_json::to_value(p).ok()?;
    v["sentence"] = p.sentence().into();
    Some(v)
}

/// The prediction of an evaluation with the configured margin, or `None`
/// (not a cryogenic lane with a nominal maximum, or no warming trend).
pub fn prediction(ev: &Evaluation, margin_ms: i64) -> Option<HoldPrediction> {
    if !ev.profile.cryogenic {
        return None;
    }
    let limit = ev.profile.nominal.max?.0;
    let mut points: Vec<(i64, i32)> = ev
        .points
        .iter()
        .filter_map(|p| p.milli_c.map(|v| (p.t_ms, v)))
        .collect();
    // Already beyond the limit: the prediction as it stood at the last
    // reading before, and when the readings crossed.
    let mut crossed_ms = None;
    if points.last().is_some_and(|p| p.1 > limit) {
        let k = points.iter().rposition(|p| p.1 <= limit)?;
        crossed_ms = Some(points[k + 1].0);
        points.truncate(k + 1);
    }
    let tilt = ev
        .conditions
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
        ev.shipment.eta_ms,
    )?;
    p.crossed_ms = crossed_ms;
    Some(p)
}

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
    let p = prediction(ev)?;
    let mut v = serde_json::to_value(&p).ok()?;
    v["sentence"] = p.sentence().into();
    Some(v)
}

/// The prediction of an evaluation, or `None` (not a cryogenic lane with a
/// nominal maximum, or no warming trend).
pub fn prediction(ev: &Evaluation) -> Option<HoldPrediction> {
    if !ev.profile.cryogenic {
        return None;
    }
    let limit = ev.profile.nominal.max?.0;
    let points: Vec<(i64, i32)> = ev
        .points
        .iter()
        .filter_map(|p| p.milli_c.map(|v| (p.t_ms, v)))
        .collect();
    let tilt = ev
        .conditions
        .iter()
        .filter(|c| c.id.kind == ConditionKind::Tilt)
        .map(|c| c.start_ms())
        .max();
    holdtime::predict(
        &HoldSpec::for_limit(limit),
        &points,
        tilt,
        ev.shipment.eta_ms,
    )
}

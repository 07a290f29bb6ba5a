//! A dry shipper's warming history across its shipments (the device page):
//! the engine's predictions ([`coldchain_engine::holdtime`]) of each
//! shipment it watched, against the baseline of its first ones.

use coldchain_engine::holdtime;

use crate::evaluate::Evaluator;

/// Shipments of a shipper's history that set its baseline.
pub const BASELINE_SHIPMENTS: usize = 3;

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

//! A dry shipper's warming history across its shipments (the device page):
//! the engine's predictions ([`coldchain_engine::holdtime`]) of each
//! shipment it watched, against the baseline of its first ones.

use coldchain_engine::holdtime;

use crate::evaluate::Evaluator;

/// Shipments of a shipper's history that set its baseline.
pub const BASELINE_SHIPMENTS: usize = 3;

/// A shipper's warming history as the API answers it
/// (`GET /api/v1/devices/{id}/warming`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ShipperHistory {
    /// The device (the dry shipper's logger).
    pub device: String,
    /// Its first shipments that set the baseline.
    pub baseline_shipments: usize,
    /// `alerts.shipper_rate_factor`: a later shipment warming faster than
    /// this times the baseline's mean is flagged.
    pub factor: f64,
    /// Each cryogenic shipment it watched with a warming trend, in time order.
    pub shipments: Vec<holdtime::ShipperRate>,
}

/// The history of the device `id` (blocking: it evaluates every shipment the
/// device watched).
pub fn history(reader: &Evaluator, id: &str) -> anyhow::Result<ShipperHistory> {
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
    Ok(ShipperHistory {
        device: id.to_string(),
        baseline_shipments: BASELINE_SHIPMENTS,
        factor,
        shipments: holdtime::shipper_history(rates, BASELINE_SHIPMENTS, factor),
    })
}

/// [`history`] as JSON (the device page reads it).
pub fn history_json(reader: &Evaluator, id: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(history(reader, id)?)?)
}

//! Alerts: a fired condition becomes one alert, with a lifecycle
//! `open -> acknowledged (who, comment) -> resolved`, escalation when nobody
//! acknowledges it in time, and persistence so a restart never raises it again.
//!
//! An alert is resolved when a person has acknowledged it *and* its condition
//! has cleared: nobody misses an alarm because the temperature came back.
//!
//! An alert always shows the current facts of its condition. When later data
//! changes them other than by an open condition growing, the alert is
//! *revised* (the facts it showed before are kept in [`Alert::revisions`]);
//! when later data disproves it, it is *withdrawn* with the reason
//! ([`AlertState::Withdrawn`]). See `alarm::revision`.

pub use coldchain_engine::alert::{
    Acknowledgement, Alert, AlertFacts, AlertState, Change, Revision, Withdrawal, describe,
};

/// The `alerts` tree (id -> JSON) and its index (shipment ‖ 0 ‖ id -> id).
///
/// The index names each alert once, by its id: a condition's identity is not
/// a key, since a withdrawn alert and a later one for the same condition are
/// two alerts and both stay on the shipment's record. (Databases written
/// before this keyed it by condition; those entries still name their
/// alerts and are read the same way.)
#[derive(Debug, Clone)]
pub struct Alerts {
    db: crate::kv::Db,
    tree: crate::kv::Tree,
    index: crate::kv::Tree,
}

fn index_key(shipment: &str, id: u64) -> Vec<u8> {
    let mut k = shipment.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl Alerts {
    /// Opens the trees.
    pub fn open(db: &crate::kv::Db) -> crate::kv::Result<Self> {
        Ok(Alerts {
            db: db.clone(),
            tree: db.open_tree("alerts")?,
            index: db.open_tree("alert_index")?,
        })
    }

    /// A fresh id.
    pub fn next_id(&self) -> anyhow::Result<u64> {
        Ok(self.db.generate_id()? + 1)
    }

    /// One alert.
    pub fn get(&self, id: u64) -> anyhow::Result<Option<Alert>> {
        match self.tree.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Stores an alert and indexes it under its shipment.
    pub fn put(&self, a: &Alert) -> anyhow::Result<()> {
        self.tree
            .insert(a.id.to_be_bytes(), serde_json::to_vec(a)?)?;
        self.index
            .insert(index_key(&a.shipment, a.id), &a.id.to_be_bytes())?;
        Ok(())
    }

    /// All alerts, oldest first.
    pub fn all(&self) -> anyhow::Result<Vec<Alert>> {
        self.tree
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// Alerts of one shipment, oldest first: through the index (every alert
    /// is indexed under its shipment), not a scan of every alert.
    pub fn of_shipment(&self, shipment: &str) -> anyhow::Result<Vec<Alert>> {
        let mut prefix = shipment.as_bytes().to_vec();
        prefix.push(0);
        let mut ids = std::collections::BTreeSet::new();
        for v in self.index.scan_prefix(&prefix).values() {
            ids.insert(u64::from_be_bytes(v?.as_ref().try_into()?));
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // Older databases name an alert under each condition identity
            // it had (the set keeps one of each).
            if let Some(a) = self.get(id)?
                && a.shipment == shipment
            {
                out.push(a);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::{ConditionId, ConditionKind};
    use crate::profile::{Severity, ZoneId};

    fn alert(id: u64, state: AlertState) -> Alert {
        Alert {
            id,
            shipment: "S-1".into(),
            condition: ConditionId {
                kind: ConditionKind::Zone(ZoneId::high(1).unwrap()),
                start_ms: 1_000,
            },
            severity: Severity::Warning,
            message: "H1".into(),
            state,
            raised_ms: 2_000,
            fires_ms: 1_500,
            cleared_ms: None,
            peak: None,
            beyond_ms: 500,
            ack: None,
            resolved_ms: None,
            escalations: 0,
            escalated_ms: None,
            last_ms: 1_500,
            revisions: Vec::new(),
            withdrawn: None,
        }
    }

    /// A withdrawn alert and a later one for the same condition are two
    /// alerts: both stay on the shipment's record.
    #[test]
    fn a_withdrawn_alert_stays_on_the_record_beside_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let db: crate::kv::Db = sled::open(dir.path()).unwrap().into();
        let alerts = Alerts::open(&db).unwrap();
        let mut first = alert(1, AlertState::Open);
        alerts.put(&first).unwrap();
        first.withdraw("later data shows otherwise".into(), 3_000);
        alerts.put(&first).unwrap();
        alerts.put(&alert(2, AlertState::Open)).unwrap();
        let got: Vec<(u64, AlertState)> = alerts
            .of_shipment("S-1")
            .unwrap()
            .iter()
            .map(|a| (a.id, a.state))
            .collect();
        assert_eq!(got, vec![(1, AlertState::Withdrawn), (2, AlertState::Open)]);
    }
}

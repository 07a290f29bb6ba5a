//! Alerts: a fired condition becomes one alert, with a lifecycle
//! `open -> acknowledged (who, comment) -> resolved`, escalation when nobody
//! acknowledges it in time, and persistence so a restart never raises it again.
//!
//! An alert is resolved when a person has acknowledged it *and* its condition
//! has cleared: nobody misses an alarm because the temperature came back.

use serde::{Deserialize, Serialize};

use crate::alarm::{Condition, ConditionId};
use crate::profile::Severity;

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised, not yet acknowledged.
    Open,
    /// A person has acknowledged it; the condition is still active.
    Acknowledged,
    /// Acknowledged and the condition has cleared.
    Resolved,
}

/// A person's acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who.
    pub by: String,
    /// Their comment.
    pub comment: String,
    /// When, ms.
    pub at_ms: i64,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Numeric id, unique in this daemon.
    pub id: u64,
    /// The shipment.
    pub shipment: String,
    /// The condition's identity (kind and start in device time).
    pub condition: ConditionId,
    /// Severity.
    pub severity: Severity,
    /// A sentence for people.
    pub message: String,
    /// Lifecycle state.
    pub state: AlertState,
    /// When the daemon raised it (its clock), ms.
    pub raised_ms: i64,
    /// When the condition fired (device time), ms.
    pub fires_ms: i64,
    /// When the condition cleared (device time), if it has.
    pub cleared_ms: Option<i64>,
    /// Worst value (see [`Condition::peak`]).
    pub peak: Option<i32>,
    /// Time beyond the limit so far, ms.
    pub beyond_ms: i64,
    /// The acknowledgement.
    pub ack: Option<Acknowledgement>,
    /// When it was resolved (daemon clock), ms.
    pub resolved_ms: Option<i64>,
    /// How many times it was escalated.
    pub escalations: u32,
    /// When it was last escalated (daemon clock), ms.
    pub escalated_ms: Option<i64>,
}

impl Alert {
    /// Whether the condition's values changed in a way worth recording.
    pub fn update_from(&mut self, c: &Condition) -> bool {
        let before = (self.cleared_ms, self.peak, self.beyond_ms);
        self.cleared_ms = c.cleared_ms;
        self.peak = c.peak;
        self.beyond_ms = c.beyond_ms;
        before != (self.cleared_ms, self.peak, self.beyond_ms)
    }

    /// Resolves it if acknowledged and cleared; true if that happened now.
    pub fn maybe_resolve(&mut self, now_ms: i64) -> bool {
        if self.state == AlertState::Acknowledged && self.cleared_ms.is_some() {
            self.state = AlertState::Resolved;
            self.resolved_ms = Some(now_ms);
            return true;
        }
        false
    }
}

/// The `alerts` tree (id -> JSON) and its index (shipment ‖ 0 ‖ condition -> id).
#[derive(Debug, Clone)]
pub struct Alerts {
    db: sled::Db,
    tree: sled::Tree,
    index: sled::Tree,
}

fn index_key(shipment: &str, c: &ConditionId) -> Vec<u8> {
    let mut k = shipment.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(c.to_string().as_bytes());
    k
}

impl Alerts {
    /// Opens the trees.
    pub fn open(db: &sled::Db) -> sled::Result<Self> {
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

    /// The alert for (shipment, condition), if raised.
    pub fn find(&self, shipment: &str, c: &ConditionId) -> anyhow::Result<Option<Alert>> {
        match self.index.get(index_key(shipment, c))? {
            Some(id) => {
                let id = u64::from_be_bytes(id.as_ref().try_into()?);
                self.get(id)
            }
            None => Ok(None),
        }
    }

    /// One alert.
    pub fn get(&self, id: u64) -> anyhow::Result<Option<Alert>> {
        match self.tree.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Stores an alert and indexes it under its condition (and `also`, when late
    /// data moved the condition's start and the alert is recognised as the same).
    pub fn put(&self, a: &Alert, also: Option<&ConditionId>) -> anyhow::Result<()> {
        self.tree
            .insert(a.id.to_be_bytes(), serde_json::to_vec(a)?)?;
        self.index
            .insert(index_key(&a.shipment, &a.condition), &a.id.to_be_bytes())?;
        if let Some(c) = also {
            self.index
                .insert(index_key(&a.shipment, c), &a.id.to_be_bytes())?;
        }
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

    /// Alerts of one shipment, oldest first.
    pub fn of_shipment(&self, shipment: &str) -> anyhow::Result<Vec<Alert>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|a| a.shipment == shipment)
            .collect())
    }
}

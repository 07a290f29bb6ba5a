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

use serde::{Deserialize, Serialize};

use crate::alarm::{Condition, ConditionId, ConditionKind};
use crate::profile::Severity;

/// Lifecycle state.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised, not yet acknowledged.
    Open,
    /// A person has acknowledged it; the condition is still active.
    Acknowledged,
    /// Acknowledged and the condition has cleared.
    Resolved,
    /// Later data disproved it (see [`Alert::withdrawn`]). Kept, never deleted.
    Withdrawn,
}

/// The facts an alert shows, as they stood at one moment.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertFacts {
    /// When the condition started (device time), ms.
    pub start_ms: i64,
    /// When it fired (device time), ms.
    pub fires_ms: i64,
    /// When it cleared (device time), if it had.
    pub cleared_ms: Option<i64>,
    /// Worst value.
    pub peak: Option<i32>,
    /// Time beyond the limit, ms.
    pub beyond_ms: i64,
    /// The sentence shown.
    pub message: String,
}

/// A revision: when, and the facts shown before it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// When the daemon revised it (its clock), ms.
    pub at_ms: i64,
    /// The facts shown until then.
    pub was: AlertFacts,
}

/// Why and when an alert was withdrawn.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// When (daemon clock), ms.
    pub at_ms: i64,
    /// Why, for people.
    pub reason: String,
}

/// What [`Alert::take_facts`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed.
    None,
    /// The open condition grew (longer, worse, cleared): stored, no event.
    Progress,
    /// Facts already shown changed: a revision event.
    Revised,
}

/// A person's acknowledgement.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who.
    pub by: String,
    /// Their comment.
    pub comment: String,
    /// When, ms.
    pub at_ms: i64,
}

/// An alert.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The last moment the condition's data covered (device time), ms.
    #[serde(default)]
    pub last_ms: i64,
    /// Earlier facts, oldest first: one entry per revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<Revision>,
    /// Set when later data disproved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<Withdrawal>,
}

impl Alert {
    /// The facts it shows now.
    pub fn facts(&self) -> AlertFacts {
        AlertFacts {
            start_ms: self.condition.start_ms,
            fires_ms: self.fires_ms,
            cleared_ms: self.cleared_ms,
            peak: self.peak,
            beyond_ms: self.beyond_ms,
            message: self.message.clone(),
        }
    }

    /// Not resolved and not withdrawn: someone may still need to act.
    pub fn is_open(&self) -> bool {
        matches!(self.state, AlertState::Open | AlertState::Acknowledged)
    }

    /// Takes the current facts of its condition and the sentence describing
    /// them. An open condition growing (more time beyond, a worse peak,
    /// clearing) is progress; any other change is a revision, recorded with
    /// the facts shown before.
    pub fn take_facts(&mut self, c: &Condition, message: String, now_ms: i64) -> Change {
        let before = self.facts();
        let fires_ms = c.fires_ms.unwrap_or(c.id.start_ms);
        let worse_or_same = |old: Option<i32>, new: Option<i32>| match (old, new) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(n)) => match c.id.kind {
                ConditionKind::Zone(z) if z.side() == crate::profile::Side::Low => n <= o,
                ConditionKind::BatteryLow => n <= o,
                _ => n >= o,
            },
        };
        let progress = before.start_ms == c.id.start_ms
            && before.fires_ms == fires_ms
            && before.cleared_ms.is_none()
            && c.beyond_ms >= before.beyond_ms
            && worse_or_same(before.peak, c.peak);
        self.condition = c.id;
        self.severity = c.severity;
        self.fires_ms = fires_ms;
        self.cleared_ms = c.cleared_ms;
        self.peak = c.peak;
        self.beyond_ms = c.beyond_ms;
        self.last_ms = c.last_ms;
        self.message = message;
        if self.state == AlertState::Resolved && self.cleared_ms.is_none() {
            // Later data shows it never cleared: back to acknowledged.
            self.state = AlertState::Acknowledged;
            self.resolved_ms = None;
        }
        let after = self.facts();
        if after == before {
            Change::None
        } else if progress {
            Change::Progress
        } else {
            self.revisions.push(Revision {
                at_ms: now_ms,
                was: before,
            });
            Change::Revised
        }
    }

    /// Withdraws it: later data disproved it.
    pub fn withdraw(&mut self, reason: String, now_ms: i64) {
        self.state = AlertState::Withdrawn;
        self.withdrawn = Some(Withdrawal {
            at_ms: now_ms,
            reason,
        });
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
    use crate::profile::ZoneId;

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

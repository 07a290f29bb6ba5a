//! Which daemon evaluates a shipment, when several share one database (a
//! centre on PostgreSQL): the holder of the shipment's lease. Only the
//! holder raises, revises, withdraws and escalates its alerts, so two
//! instances never raise the same alarm twice; when the holder dies, its
//! leases run out after [`TTL_MS`] and another instance takes them over,
//! rebuilding the shipment's evaluation from the shared store (the alerts
//! already stored are kept and revised, not raised again: their identity is
//! in the data, see `alarm::revision`).
//!
//! A lease is a key of the `leases` tree, `{owner, until_ms}`, taken and
//! renewed with compare-and-swap, which is atomic across instances on
//! PostgreSQL. On sled (one daemon owns its database) every lease is held
//! without touching the store.

use serde::{Deserialize, Serialize};

use crate::kv::{Db, Tree};

/// How long a lease lasts without renewal, ms. A dead holder's shipments
/// wait at most this long for another instance.
pub const TTL_MS: i64 = 30_000;

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lease {
    owner: String,
    until_ms: i64,
}

/// This daemon's leases.
#[derive(Debug, Clone)]
pub struct Leases {
    /// `None` on sled: everything is ours.
    tree: Option<Tree>,
    owner: String,
}

impl Leases {
    /// Leases in `db` for the instance `owner` (unique per running process).
    pub fn open(db: &Db, owner: String) -> crate::kv::Result<Leases> {
        let tree = match db {
            Db::Sled(_) => None,
            Db::Pg(_) => Some(db.open_tree("leases")?),
        };
        Ok(Leases { tree, owner })
    }

    /// This instance's name in the leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether this instance may evaluate `shipment` now: it holds the lease
    /// (renewed when half of it has run), or took it because it was free or
    /// ran out. A storage error counts as not held (another instance may
    /// hold it; evaluating twice is the failure to avoid).
    pub fn hold(&self, shipment: &str, now: i64) -> bool {
        let Some(tree) = &self.tree else {
            return true;
        };
        match self.try_hold(tree, shipment, now) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(shipment, "cannot take the evaluation lease: {e}");
                false
            }
        }
    }

    fn try_hold(&self, tree: &Tree, shipment: &str, now: i64) -> anyhow::Result<bool> {
        let cur = tree.get(shipment)?;
        let lease: Option<Lease> = cur.as_ref().and_then(|v| serde_json::from_slice(v).ok());
        match &lease {
            Some(l) if l.owner == self.owner && l.until_ms - now > TTL_MS / 2 => return Ok(true),
            Some(l) if l.owner != self.owner && l.until_ms > now => return Ok(false),
            _ => {}
        }
        let new = serde_json::to_vec(&Lease {
            owner: self.owner.clone(),
            until_ms: now + TTL_MS,
        })?;
        Ok(tree.compare_and_swap(shipment, cur, Some(new))?.is_ok())
    }

    /// Gives every lease this instance holds back (a clean stop), so another
    /// instance takes its shipments at once instead of after [`TTL_MS`].
    pub fn release_all(&self) {
        let Some(tree) = &self.tree else { return };
        for kv in tree.iter() {
            let Ok((k, v)) = kv else { return };
            if serde_json::from_slice::<Lease>(&v).is_ok_and(|l| l.owner == self.owner) {
                let _ = tree.compare_and_swap(&k, Some(&v), None::<Vec<u8>>);
            }
        }
    }
}

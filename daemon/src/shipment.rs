//! Shipments as the daemon keeps them: the lifecycle is the engine's
//! ([`coldchain_engine::shipment`], re-exported here); this module stores
//! them in the `shipments` tree.

pub use coldchain_engine::shipment::*;

/// The shipments tree: id -> JSON.
#[derive(Debug, Clone)]
pub struct Shipments {
    tree: crate::kv::Tree,
}

impl Shipments {
    /// Opens the `shipments` tree.
    pub fn open(db: &crate::kv::Db) -> crate::kv::Result<Self> {
        Ok(Shipments {
            tree: db.open_tree("shipments")?,
        })
    }

    /// One shipment.
    pub fn get(&self, id: &str) -> anyhow::Result<Option<Shipment>> {
        match self.tree.get(id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Stores a shipment (not yet durable: the caller syncs).
    pub fn put(&self, s: &Shipment) -> anyhow::Result<()> {
        self.tree.insert(s.id.as_bytes(), serde_json::to_vec(s)?)?;
        Ok(())
    }

    /// Inserts a new shipment; false if the id exists.
    pub fn insert_new(&self, s: &Shipment) -> anyhow::Result<bool> {
        let r = self.tree.compare_and_swap(
            s.id.as_bytes(),
            None as Option<&[u8]>,
            Some(serde_json::to_vec(s)?),
        )?;
        Ok(r.is_ok())
    }

    /// All shipments, by id.
    pub fn all(&self) -> anyhow::Result<Vec<Shipment>> {
        self.tree
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }
}

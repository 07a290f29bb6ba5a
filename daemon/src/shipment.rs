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

    /// Changes one shipment atomically (compare-and-swap: across daemon
    /// instances on PostgreSQL too): `f` is given the stored record (`None`:
    /// absent) and returns the new one with a value of its own, or `None` to
    /// leave the record as it is. When another writer changed the record
    /// between the read and the swap, `f` runs again on what it wrote, so
    /// no change is lost. Returns the record `f` was last given, the new
    /// record and `f`'s value; `None` when `f` left it. Not yet durable: the
    /// caller syncs.
    pub fn update<T>(
        &self,
        id: &str,
        mut f: impl FnMut(Option<&Shipment>) -> anyhow::Result<Option<(Shipment, T)>>,
    ) -> anyhow::Result<Option<(Option<Shipment>, Shipment, T)>> {
        loop {
            let cur = self.tree.get(id.as_bytes())?;
            let old: Option<Shipment> = cur
                .as_ref()
                .map(|v| serde_json::from_slice(v))
                .transpose()?;
            let Some((new, t)) = f(old.as_ref())? else {
                return Ok(None);
            };
            let r = self.tree.compare_and_swap(
                id.as_bytes(),
                cur.as_deref(),
                Some(serde_json::to_vec(&new)?),
            )?;
            if r.is_ok() {
                return Ok(Some((old, new, t)));
            }
        }
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

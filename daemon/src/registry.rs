//! The devices allowed to send data, with their keys and policies.
//!
//! Devices come from the config file and from `coldchain device add` (through
//! the API), which are kept in the database's `registry` tree and survive
//! restarts. A device defined in the config file cannot be redefined through
//! the API: the file stays the authority for what it lists.
//!
//! It also keeps each device's **enrollments** (tree `enrollments`): a person
//! re-enrolls a device whose flash was wiped, or a unit replaced under the
//! same id, and the device's boots from then on are stored after everything
//! stored before (see `daemon/DESIGN.md`, "Re-enrollment").

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use coldchain_proto::{DeviceId, DeviceKey};
use serde::{Deserialize, Serialize};

use crate::config::Device;

/// Registered devices, keyed by id. Cheap to clone; shared between tasks.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    devices: Arc<RwLock<HashMap<DeviceId, Arc<Device>>>>,
    from_config: Arc<Vec<DeviceId>>,
    tree: Option<crate::kv::Tree>,
    enrollments: Arc<RwLock<HashMap<DeviceId, Vec<Enrollment>>>>,
    enrollment_tree: Option<crate::kv::Tree>,
}

/// One re-enrollment of a device, as stored (JSON) under `device ‖ 0 ‖ n`
/// (n = 1, 2, … big-endian) in the `enrollments` tree. Enrollment 0, the
/// first, is implicit: boot offset 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Enrollment {
    /// Its number: 1 for the first re-enrollment.
    pub number: u32,
    /// Added to the device's own boot counter to form the stored boot of its
    /// frames from this enrollment on: one more than the highest boot stored
    /// before, so the new history sorts after the old and never meets it.
    pub boot_offset: u32,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Fingerprint of the key in force from then on.
    pub key_fingerprint: String,
}

/// A device added through the API, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    key: String,
    allow_unsigned_json: bool,
    added_ms: i64,
    by: String,
}

/// Why a device could not be added.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The id is in the config file.
    #[error("device {0} is defined in the config file; change it there")]
    InConfig(String),
    /// Storage failed.
    #[error("registry: {0}")]
    Store(#[from] crate::kv::Error),
    /// The device is not registered.
    #[error("device {0} is not registered (add it with `coldchain device add`)")]
    Unknown(String),
}

impl Registry {
    /// A registry of these devices (config only, nothing persisted).
    pub fn new(devices: impl IntoIterator<Item = Device>) -> Self {
        let devices: HashMap<_, _> = devices
            .into_iter()
            .map(|d| (d.id.clone(), Arc::new(d)))
            .collect();
        Registry {
            from_config: Arc::new(devices.keys().cloned().collect()),
            devices: Arc::new(RwLock::new(devices)),
            tree: None,
            enrollments: Arc::default(),
            enrollment_tree: None,
        }
    }

    /// Config devices plus those added through the API and kept in `db`.
    pub fn open(
        config: impl IntoIterator<Item = Device>,
        db: &crate::kv::Db,
    ) -> anyhow::Result<Self> {
        let mut r = Registry::new(config);
        let tree = db.open_tree("registry")?;
        {
            let mut map = r.devices.write().unwrap_or_else(|p| p.into_inner());
            for kv in tree.iter() {
                let (k, v) = kv?;
                let id = DeviceId::new(&String::from_utf8_lossy(&k))
                    .map_err(|e| anyhow::anyhow!("registry tree: bad device id: {e}"))?;
                let s: Stored = serde_json::from_slice(&v)?;
                let key = DeviceKey::from_hex(&s.key)
                    .map_err(|e| anyhow::anyhow!("registry tree: device {id}: {e}"))?;
                if !r.from_config.contains(&id) {
                    map.insert(
                        id.clone(),
                        Arc::new(Device {
                            id,
                            key,
                            allow_unsigned_json: s.allow_unsigned_json,
                            settings: None,
                        }),
                    );
                }
            }
        }
        r.tree = Some(tree);
        let etree = db.open_tree("enrollments")?;
        {
            let mut map = r.enrollments.write().unwrap_or_else(|p| p.into_inner());
            for kv in etree.iter() {
                let (k, v) = kv?;
                let z = k.iter().position(|&b| b == 0).unwrap_or(k.len());
                let id = DeviceId::new(&String::from_utf8_lossy(&k[..z]))
                    .map_err(|e| anyhow::anyhow!("enrollments tree: bad device id: {e}"))?;
                let e: Enrollment = serde_json::from_slice(&v)
                    .map_err(|e| anyhow::anyhow!("enrollments tree: device {id}: {e}"))?;
                // Keys sort by device, then number: each list comes out in order.
                map.entry(id).or_default().push(e);
            }
        }
        r.enrollment_tree = Some(etree);
        Ok(r)
    }

    /// The boot offsets of a device's enrollments, oldest first: `[0]` for a
    /// device never re-enrolled. The last one is in force.
    pub fn boot_offsets(&self, id: &DeviceId) -> Vec<u32> {
        let mut v = vec![0];
        if let Some(es) = self
            .enrollments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            v.extend(es.iter().map(|e| e.boot_offset));
        }
        v
    }

    /// The device's re-enrollments, oldest first (empty: never re-enrolled).
    pub fn enrollments(&self, id: &DeviceId) -> Vec<Enrollment> {
        self.enrollments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Starts a new enrollment of a registered device whose frames will be
    /// stored from boot `offset + device boot` on (`offset`: one more than
    /// the highest boot stored for it, from the caller). Persisted, not yet
    /// synced: the caller syncs the store.
    pub fn reenroll(
        &self,
        id: &DeviceId,
        offset: u32,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Enrollment, RegistryError> {
        let dev = self
            .get(id)
            .ok_or_else(|| RegistryError::Unknown(id.to_string()))?;
        let mut map = self.enrollments.write().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(id.clone()).or_default();
        let prev = list.last().map_or(0, |e| e.boot_offset);
        let e = Enrollment {
            number: list.len() as u32 + 1,
            boot_offset: offset.max(prev),
            at_ms: now_ms,
            by: by.to_string(),
            reason: reason.to_string(),
            key_fingerprint: fingerprint(&dev.key),
        };
        if let Some(tree) = &self.enrollment_tree {
            let mut k = id.as_str().as_bytes().to_vec();
            k.push(0);
            k.extend_from_slice(&e.number.to_be_bytes());
            tree.insert(k, serde_json::to_vec(&e).unwrap_or_default())?;
        }
        list.push(e.clone());
        Ok(e)
    }

    /// A device's entry.
    pub fn get(&self, id: &DeviceId) -> Option<Arc<Device>> {
        self.devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// All registered device ids, sorted.
    pub fn ids(&self) -> Vec<DeviceId> {
        let mut v: Vec<_> = self
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Whether the device comes from the config file.
    pub fn in_config(&self, id: &DeviceId) -> bool {
        self.from_config.contains(id)
    }

    /// Adds (or re-keys) a device through the API; persisted (not yet synced:
    /// the caller syncs the store). Returns true when it replaced a key.
    pub fn add(
        &self,
        id: DeviceId,
        key: DeviceKey,
        allow_unsigned_json: bool,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, RegistryError> {
        if self.in_config(&id) {
            return Err(RegistryError::InConfig(id.to_string()));
        }
        if let Some(tree) = &self.tree {
            let s = Stored {
                key: hex::encode(key.as_bytes()),
                allow_unsigned_json,
                added_ms: now_ms,
                by: by.to_string(),
            };
            tree.insert(id.as_str(), serde_json::to_vec(&s).unwrap_or_default())?;
        }
        let dev = Arc::new(Device {
            id: id.clone(),
            key,
            allow_unsigned_json,
            settings: None,
        });
        Ok(self
            .devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, dev)
            .is_some())
    }
}

/// A short fingerprint of a key for logs and the audit trail (never the key).
pub fn fingerprint(key: &DeviceKey) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8])
}

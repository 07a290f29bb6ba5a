//! The devices allowed to send data, with their keys and policies.
//!
//! Devices come from the config file and from `coldchain device add` (through
//! the API), which are kept in the database's `registry` tree and survive
//! restarts. A device defined in the config file cannot be redefined through
//! the API: the file stays the authority for what it lists.

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
    tree: Option<sled::Tree>,
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
    Store(#[from] sled::Error),
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
        }
    }

    /// Config devices plus those added through the API and kept in `db`.
    pub fn open(config: impl IntoIterator<Item = Device>, db: &sled::Db) -> anyhow::Result<Self> {
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
        Ok(r)
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

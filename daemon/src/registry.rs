//! The devices allowed to send data, with their keys and policies.

use std::collections::HashMap;
use std::sync::Arc;

use coldchain_proto::DeviceId;

use crate::config::Device;

/// Registered devices, keyed by id. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    devices: Arc<HashMap<DeviceId, Device>>,
}

impl Registry {
    /// A registry of these devices.
    pub fn new(devices: impl IntoIterator<Item = Device>) -> Self {
        Registry {
            devices: Arc::new(devices.into_iter().map(|d| (d.id.clone(), d)).collect()),
        }
    }

    /// A device's entry.
    pub fn get(&self, id: &DeviceId) -> Option<&Device> {
        self.devices.get(id)
    }

    /// All registered device ids, sorted.
    pub fn ids(&self) -> Vec<DeviceId> {
        let mut v: Vec<_> = self.devices.keys().cloned().collect();
        v.sort();
        v
    }
}

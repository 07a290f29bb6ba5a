//! The topics sites speak on the central broker, and what crosses between
//! the MQTT tasks and the evaluator: a leaf the ingest, forwarding and
//! cross-site modules share (see [`super`] for the whole picture).

use coldchain_proto::topic::{self, Uplink};

use crate::config::Centre;

/// Topic root of the shipment records a centre publishes (retained):
/// `coldchain/v1/fleet/ship/{id}`.
pub const FLEET_SHIPMENTS: &str = "coldchain/v1/fleet/ship";
/// How often a centre says it is subscribed ([`ready_topic`]).
pub const READY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a centre's instances say, not retained, that their subscriptions
/// are in place on this broker: a gateway with `upstream.centre_group`
/// forwards only after it heard this on its current connection.
pub fn ready_topic(group: &str) -> String {
    format!("coldchain/v1/fleet/centre/{group}/ready")
}

/// The filter gateways subscribe to for the centre's shipment records.
pub fn fleet_filter() -> String {
    format!("{FLEET_SHIPMENTS}/+")
}

/// A topic of a centre's subscriptions that a gateway forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// A device's frame (`{edges}/{gateway}/dev/{device}/up[/json]`).
    Uplink {
        /// The gateway.
        gateway: String,
        /// The device and encoding.
        uplink: Uplink,
    },
    /// A shipment record (`{edges}/{gateway}/ship/{id}/record`).
    Record {
        /// The gateway.
        gateway: String,
    },
}

/// The subscriptions of a centre: devices' own topics and what gateways
/// forward, each shared by the group.
pub fn centre_filters(c: &Centre) -> Vec<String> {
    let g = &c.group;
    let e = &c.edges;
    vec![
        format!("$share/{g}/{}", topic::ALL_DEVICES_UP),
        format!("$share/{g}/{}", topic::ALL_DEVICES_UP_JSON),
        format!("$share/{g}/{e}/+/dev/+/up"),
        format!("$share/{g}/{e}/+/dev/+/up/json"),
        format!("$share/{g}/{e}/+/ship/+/record"),
    ]
}

/// Parses a topic gateways forward under `c.edges`; `None` for anything else.
pub fn parse_forwarded(c: &Centre, t: &str) -> Option<Forwarded> {
    let rest = t.strip_prefix(c.edges.as_str())?.strip_prefix('/')?;
    let (gateway, tail) = rest.split_once('/')?;
    if gateway.is_empty() {
        return None;
    }
    if let Some(ship) = tail.strip_prefix("ship/") {
        let (id, end) = ship.split_once('/')?;
        return (end == "record" && !id.is_empty()).then(|| Forwarded::Record {
            gateway: gateway.to_string(),
        });
    }
    let uplink = topic::parse_uplink(&format!("{}/{tail}", topic::PREFIX))?;
    Some(Forwarded::Uplink {
        gateway: gateway.to_string(),
        uplink,
    })
}

/// A shipment record that arrived from another site, and how to
/// acknowledge it once merged and durable.
#[derive(Debug)]
pub struct Incoming {
    /// Who sent it: the gateway's id, or `centre`.
    pub from: String,
    /// The record, JSON.
    pub payload: Vec<u8>,
    /// The MQTT message to PUBACK afterwards (manual acks: the centre's
    /// session), if any.
    pub ack: Option<(rumqttc::AsyncClient, rumqttc::Publish)>,
}

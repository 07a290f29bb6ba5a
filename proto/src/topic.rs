//! The MQTT topic scheme, a public contract.
//!
//! | topic | direction | payload |
//! | --- | --- | --- |
//! | `coldchain/v1/dev/{device}/up` | device → daemon | signed postcard [`crate::Frame`] |
//! | `coldchain/v1/dev/{device}/up/json` | device → daemon | JSON envelope (see `proto/README.md`) |
//! | `coldchain/v1/dev/{device}/down` | daemon → device, retained | signed postcard [`crate::Downlink`] |
//! | `coldchain/v1/dev/{device}/online` | device → anyone, retained | `online` after connecting, last will `offline` |
//! | `coldchain/v1/ship/{shipment}/status` | daemon → anyone, retained | JSON shipment status |
//! | `coldchain/v1/ship/{shipment}/alert` | daemon → anyone | JSON alert event |
//! | `coldchain/v1/daemon/{id}/online` | daemon → anyone, retained | `online`, last will `offline` |

use core::fmt::Write;

use crate::frame::DeviceId;

/// Every topic starts with this.
pub const PREFIX: &str = "coldchain/v1";
/// Longest topic this module builds.
pub const TOPIC_MAX: usize = 128;
/// Subscription filter for all binary device uplinks.
pub const ALL_DEVICES_UP: &str = "coldchain/v1/dev/+/up";
/// Subscription filter for all JSON device uplinks.
pub const ALL_DEVICES_UP_JSON: &str = "coldchain/v1/dev/+/up/json";
/// Subscription filter for every device's online status.
pub const ALL_DEVICES_ONLINE: &str = "coldchain/v1/dev/+/online";
/// Payload of an online topic (daemon or device) while it is connected.
pub const ONLINE: &str = "online";
/// Payload of an online topic's last will.
pub const OFFLINE: &str = "offline";

/// Largest MQTT uplink payload (`up` or `up/json`) a receiver accepts, bytes.
///
/// A signed binary frame is at most [`crate::codec::MAX_SIGNED_LEN`] (656)
/// bytes and a 32-reading JSON envelope a few KiB even pretty-printed; the
/// rest is headroom. A receiver refuses a larger payload without parsing it
/// (the daemon counts it as `too_large`) and acknowledges it.
pub const MAX_UPLINK_PAYLOAD: usize = 64 * 1024;

/// The `max_packet_size` a broker for Coldchain is configured with, bytes:
/// [`MAX_UPLINK_PAYLOAD`] plus 1 KiB for the PUBLISH packet's fixed header
/// (at most 5 bytes), topic (2 + at most [`TOPIC_MAX`]) and packet id (2).
/// Every payload a receiver accepts passes such a broker; larger ones never
/// reach the receiver.
pub const BROKER_MAX_PACKET_SIZE: usize = MAX_UPLINK_PAYLOAD + 1024;

const _: () = assert!(BROKER_MAX_PACKET_SIZE >= MAX_UPLINK_PAYLOAD + 5 + 2 + TOPIC_MAX + 2);
const _: () = assert!(MAX_UPLINK_PAYLOAD > crate::codec::MAX_SIGNED_LEN);

/// A topic string.
pub type TopicBuf = heapless::String<TOPIC_MAX>;

/// Why a topic could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// A segment is empty, too long, or contains `/`, `+`, `#` or a NUL.
    BadSegment,
}

impl core::fmt::Display for TopicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("topic segment is empty, too long, or contains '/', '+', '#' or NUL")
    }
}

fn check_segment(s: &str) -> Result<(), TopicError> {
    if s.is_empty() || s.len() > 64 || s.contains(['/', '+', '#', '\0']) {
        Err(TopicError::BadSegment)
    } else {
        Ok(())
    }
}

fn build(kind: &str, id: &str, tail: &str) -> Result<TopicBuf, TopicError> {
    check_segment(id)?;
    let mut t = TopicBuf::new();
    write!(t, "{PREFIX}/{kind}/{id}/{tail}").map_err(|_| TopicError::BadSegment)?;
    Ok(t)
}

fn device(id: &DeviceId, tail: &str) -> TopicBuf {
    // A DeviceId is at most 32 safe characters: this always fits.
    build("dev", id.as_str(), tail).unwrap_or_default()
}

/// `coldchain/v1/dev/{device}/up`
pub fn device_up(id: &DeviceId) -> TopicBuf {
    device(id, "up")
}
/// `coldchain/v1/dev/{device}/up/json`
pub fn device_up_json(id: &DeviceId) -> TopicBuf {
    device(id, "up/json")
}
/// `coldchain/v1/dev/{device}/down`
pub fn device_down(id: &DeviceId) -> TopicBuf {
    device(id, "down")
}
/// `coldchain/v1/dev/{device}/online`: retained `online`/`offline` (last will).
pub fn device_online(id: &DeviceId) -> TopicBuf {
    device(id, "online")
}
/// The device of a `coldchain/v1/dev/{device}/online` topic.
pub fn parse_device_online(topic: &str) -> Option<DeviceId> {
    let id = topic
        .strip_prefix(PREFIX)?
        .strip_prefix("/dev/")?
        .strip_suffix("/online")?;
    DeviceId::new(id).ok()
}
/// `coldchain/v1/ship/{shipment}/status`
pub fn shipment_status(shipment: &str) -> Result<TopicBuf, TopicError> {
    build("ship", shipment, "status")
}
/// `coldchain/v1/ship/{shipment}/alert`
pub fn shipment_alert(shipment: &str) -> Result<TopicBuf, TopicError> {
    build("ship", shipment, "alert")
}
/// `coldchain/v1/daemon/{id}/online`
pub fn daemon_online(daemon: &str) -> Result<TopicBuf, TopicError> {
    build("daemon", daemon, "online")
}

/// An uplink topic, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// `…/dev/{device}/up`: signed postcard.
    Binary(DeviceId),
    /// `…/dev/{device}/up/json`: JSON envelope.
    Json(DeviceId),
}

/// Parses a device uplink topic; `None` for anything else (including a device
/// id that is not a valid [`DeviceId`]).
pub fn parse_uplink(topic: &str) -> Option<Uplink> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix("/dev/")?;
    let (dev, tail) = rest.split_once('/')?;
    let id = DeviceId::new(dev).ok()?;
    match tail {
        "up" => Some(Uplink::Binary(id)),
        "up/json" => Some(Uplink::Json(id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_match_the_published_scheme() {
        let d = DeviceId::new("shipper-07").unwrap();
        assert_eq!(device_up(&d), "coldchain/v1/dev/shipper-07/up");
        assert_eq!(device_up_json(&d), "coldchain/v1/dev/shipper-07/up/json");
        assert_eq!(device_down(&d), "coldchain/v1/dev/shipper-07/down");
        assert_eq!(
            shipment_status("W1234 25 123456").unwrap(),
            "coldchain/v1/ship/W1234 25 123456/status"
        );
        assert_eq!(
            shipment_alert("S-1").unwrap(),
            "coldchain/v1/ship/S-1/alert"
        );
        assert_eq!(
            daemon_online("edge-1").unwrap(),
            "coldchain/v1/daemon/edge-1/online"
        );
        assert_eq!(shipment_status("a/b"), Err(TopicError::BadSegment));
        assert_eq!(shipment_status("a+"), Err(TopicError::BadSegment));
    }

    #[test]
    fn uplink_topics_parse_back() {
        let d = DeviceId::new("x1").unwrap();
        assert_eq!(
            parse_uplink(&device_up(&d)),
            Some(Uplink::Binary(d.clone()))
        );
        assert_eq!(
            parse_uplink(&device_up_json(&d)),
            Some(Uplink::Json(d.clone()))
        );
        assert_eq!(parse_uplink(&device_down(&d)), None);
        assert_eq!(parse_uplink("coldchain/v1/dev/a#b/up"), None);
        assert_eq!(parse_uplink("other/v1/dev/x1/up"), None);
    }

    #[test]
    fn device_online_topic_parses_back() {
        let d = DeviceId::new("x1").unwrap();
        assert_eq!(device_online(&d), "coldchain/v1/dev/x1/online");
        assert_eq!(parse_device_online(&device_online(&d)), Some(d.clone()));
        assert_eq!(parse_device_online(&device_up(&d)), None);
        assert_eq!(parse_device_online("coldchain/v1/daemon/x1/online"), None);
        assert_eq!(parse_device_online("coldchain/v1/dev/a/b/online"), None);
    }
}

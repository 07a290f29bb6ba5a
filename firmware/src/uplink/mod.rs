//! Uplinks: how frames leave the flash queue. Both remove a frame from the
//! queue only when the other side has acknowledged it, and both hand a
//! verified `Downlink::Sync` to the caller, who applies it with
//! [`crate::sync::apply_sync`].
//!
//! * [`serial`]: COBS frames over `embedded-io-async`, signed ack/nack back.
//! * [`mqtt`]: MQTT 3.1.1 QoS 1 over `embedded-io-async`, PUBACK-gated.

pub mod mqtt;
pub mod serial;

//! # coldchain-proto: the wire contract between Coldchain devices and the edge daemon
//!
//! `#![no_std]` and allocation-free, so the same definitions compile into the
//! firmware and into the daemon.
//!
//! * [`frame`]: what a device sends ([`Frame`]: readings, events, status) and
//!   what it receives ([`Downlink`]: time and settings, serial acks).
//! * [`codec`]: postcard (binary, what firmware sends) and the signed wire form
//!   `postcard(message) ‖ tag`. The JSON form of the same types is documented in
//!   `proto/README.md`.
//! * [`auth`]: HMAC-SHA256 truncated to 16 bytes, per-device 32-byte keys,
//!   constant-time verification.
//! * [`serial`]: COBS framing with CRC-32 for the serial link, and a streaming
//!   decoder that resynchronises after garbage.
//! * [`topic`]: the MQTT topic scheme.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod codec;
pub mod frame;
pub mod serial;
pub mod topic;

pub use auth::{DeviceKey, TAG_LEN, Tag};
pub use frame::*;

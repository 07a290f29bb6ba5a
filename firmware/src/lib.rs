//! # coldchain-firmware: what runs inside the shipping container
//!
//! `#![no_std]`, no allocator. Data flows one way:
//! sensors ([`drivers`]) -> [`sampler`] -> [`batch`] (frames, sequence numbers,
//! signing) -> [`queue`] (flash store-and-forward) -> [`uplink`] (MQTT or serial).
//!
//! Time comes from [`clock`]: uptime always, wall-clock only once the daemon
//! has sent it on the device's down topic.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod fmt;

pub mod batch;
pub mod bootcount;
pub mod clock;

pub use batch::{Batch, FrameBuilder};
pub use clock::{Clock, TimeBase};
pub mod drivers;
pub mod queue;
pub mod record;
pub mod sampler;
pub mod sync;
pub mod uplink;

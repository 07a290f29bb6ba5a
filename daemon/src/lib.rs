//! Coldchain edge daemon.
//!
//! Data flows one way: frame -> verify -> store -> evaluate -> alert -> deliver.

pub mod alarm;
pub mod mkt;
pub mod profile;
pub mod viability;

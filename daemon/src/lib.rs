//! Coldchain edge daemon.
//!
//! Data flows one way: frame -> verify -> store -> evaluate -> alert -> deliver.

pub mod alarm;
pub mod api;
pub mod config;
pub mod ingest;
pub mod mkt;
pub mod profile;
pub mod registry;
pub mod run;
pub mod store;
pub mod viability;

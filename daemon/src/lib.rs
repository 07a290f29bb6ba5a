//! Coldchain edge daemon.
//!
//! Data flows one way: frame -> verify -> store -> evaluate -> alert -> deliver.

pub mod alarm;
pub mod alert;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod evaluate;
pub mod forward;
pub mod ingest;
pub mod metrics;
pub mod mkt;
pub mod openapi;
pub mod outbox;
pub mod profile;
pub mod registry;
pub mod report;
pub mod retention;
pub mod run;
pub mod shipment;
pub mod store;
pub mod viability;
